"""The ml domain's asset keys and tables."""

import dagster as dg

DATASET_KEY = dg.AssetKey(["ml", "dataset"])
DATASET_TABLE = "ml.dataset"
MODELS_KEY = dg.AssetKey(["ml", "models"])
MODELS_TABLE = "ml.models"
MODEL_RESULTS_KEY = dg.AssetKey(["ml", "model_results"])
MODEL_RESULTS_TABLE = "ml.model_results"
# The seed project's names, kept as views in main (tables.create_alias_view).
MODEL_RESULTS_SEED_VIEW = "ml_model_results"
OOF_KEY = dg.AssetKey(["ml", "oof_predictions"])
OOF_TABLE = "ml.oof_predictions"
ENSEMBLES_KEY = dg.AssetKey(["ml", "ensembles"])
ENSEMBLES_TABLE = "ml.ensembles"
ENSEMBLES_SEED_VIEW = "ml_ensembles"
PREDICTIONS_KEY = dg.AssetKey(["ml", "predictions"])
PREDICTIONS_TABLE = "ml.predictions"
