"""The ranking domain's asset keys and tables."""

import dagster as dg

STRATEGY_RANKING_KEY = dg.AssetKey(["ranking", "strategies"])
STRATEGY_RANKING_TABLE = "ranking.strategies"
MODEL_RANKING_KEY = dg.AssetKey(["ranking", "models"])
MODEL_RANKING_TABLE = "ranking.models"
ENSEMBLE_RANKING_KEY = dg.AssetKey(["ranking", "ensembles"])
ENSEMBLE_RANKING_TABLE = "ranking.ensembles"
# Append-only: every verdict of every ranking run, written with each ranking's own table.
HISTORY_TABLE = "ranking.ranking_history"
# The seed project's name for it, kept as a view main.ranking_history (tables.create_alias_view).
HISTORY_SEED_VIEW = "ranking_history"
