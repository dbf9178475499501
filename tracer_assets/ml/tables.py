"""The ml tables as frames, and the stored rows turned back into what training produced. No Dagster.

ml.models, ml.model_results, ml.oof_predictions and ml.ensembles hold the newest training
(replaced together); ml.predictions is append-only. Columns in docs/ml.md.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np
import polars as pl

from tracer_assets.ml.ensembles import Ensemble
from tracer_assets.ml.train import PROBABILITY_COLUMNS, ModelSpec, Target, TrainedModel


def _instant(seconds: int | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, tz=UTC)


def overall(results: Sequence[dict], predictor: str) -> dict:
    return next(r for r in results if r["fold"] == "overall" and r["predictor"] == predictor)


def models_frame(models: Sequence[TrainedModel], trained_at: datetime, run_id: str, code_version: str) -> pl.DataFrame:
    rows = []
    for model in models:
        best, majority = overall(model.results, "model"), overall(model.results, "majority")
        rows.append(
            {
                "model_id": model.spec.model_id,
                "target": model.spec.target,
                "timeframe": model.spec.timeframe,
                "horizon": model.spec.horizon,
                "feature_set": model.spec.feature_set,
                "f1_macro": best["f1_macro"],
                "accuracy": best["accuracy"],
                "log_loss": best["log_loss"],
                "ic": best["ic"],
                "majority_f1_macro": majority["f1_macro"],
                "majority_accuracy": majority["accuracy"],
                "features": json.dumps(model.features),
                "parameters": json.dumps(model.parameters, sort_keys=True),
                "train_start": model.train_start,
                "train_end": model.train_end,
                "train_rows": model.train_rows,
                "data_fingerprint": model.data_fingerprint,
                "code_version": code_version,
                "content_hash": model.content_hash,
                "trained_at": trained_at,
                "run_id": run_id,
                "model_text": model.model_text,
            }
        )
    return pl.DataFrame(rows, infer_schema_length=None)


def results_frame(models: Sequence[TrainedModel], trained_at: datetime, run_id: str) -> pl.DataFrame:
    rows = [
        {
            **row,
            "test_start": _instant(row.get("test_start")),
            "test_end": _instant(row.get("test_end")),
            "trained_at": trained_at,
            "run_id": run_id,
        }
        for model in models
        for row in model.results
    ]
    return pl.DataFrame(rows, infer_schema_length=None)


def oof_frame(target: Target, models: Sequence[TrainedModel]) -> pl.DataFrame:
    """The out-of-fold probabilities of the target's models, on the rows each fold tested."""
    fold = target.fold_of_row()
    tested = fold >= 1
    keys = target.rows.select("symbol", "timeframe", "ts").filter(pl.Series(tested))
    frames = [
        keys.with_columns(
            pl.lit(model.spec.model_id).alias("model_id"),
            pl.Series("fold", fold[tested]),
            *(pl.Series(column, model.oof[tested, i]) for i, column in enumerate(PROBABILITY_COLUMNS)),
        )
        for model in models
    ]
    return pl.concat(frames)


def stored_models(target: Target, models: pl.DataFrame, results: pl.DataFrame, oof: pl.DataFrame) -> list[TrainedModel]:
    """The target's models as training left them (results, out-of-fold probabilities aligned to
    the target's rows), read back from ml.models, ml.model_results and ml.oof_predictions."""
    keys = target.rows.select("symbol", "timeframe", "ts").with_row_index("row")
    expected = int((target.fold_of_row() >= 1).sum())  # rows tested out of fold, the same for every model
    trained = []
    for row in models.filter(pl.col("target") == target.name).iter_rows(named=True):
        spec = ModelSpec(row["timeframe"], row["horizon"], row["feature_set"])
        mine = oof.filter(pl.col("model_id") == spec.model_id).join(keys, on=["symbol", "timeframe", "ts"])
        probabilities = np.full((target.rows.height, len(PROBABILITY_COLUMNS)), np.nan)
        probabilities[mine["row"].to_numpy()] = mine.select(PROBABILITY_COLUMNS).to_numpy()
        if mine.height != expected:
            raise ValueError(
                f"{spec.model_id}: {mine.height} out-of-fold rows stored, {expected} expected from ml.dataset; "
                "the dataset changed since training: materialize ml/models again"
            )
        trained.append(
            TrainedModel(
                spec=spec,
                features=json.loads(row["features"]),
                parameters=json.loads(row["parameters"]),
                model_text="",
                content_hash=row["content_hash"],
                train_start=row["train_start"],
                train_end=row["train_end"],
                train_rows=row["train_rows"],
                data_fingerprint=row["data_fingerprint"],
                results=results.filter(pl.col("model_id") == spec.model_id).to_dicts(),
                oof=probabilities,
            )
        )
    return trained


def ensembles_frame(
    ensembles: Sequence[Ensemble], models_trained_at: dict[str, datetime], fitted_at: datetime, run_id: str
) -> pl.DataFrame:
    """trained_at is the oldest member's training time: an ensemble is as old as its oldest model."""
    rows = []
    for ensemble in ensembles:
        mine = overall(ensemble.results, "ensemble")
        majority, last = overall(ensemble.results, "majority"), overall(ensemble.results, "last_return")
        rows.append(
            {
                "ensemble_id": ensemble.ensemble_id,
                "timeframe": ensemble.timeframe,
                "horizon": ensemble.horizon,
                "method": ensemble.method,
                "members": json.dumps(ensemble.members),
                "member_hashes": json.dumps(ensemble.member_hashes),
                "stacker": json.dumps(ensemble.stacker) if ensemble.stacker else None,
                "content_hash": ensemble.content_hash,
                **{
                    name: mine[name] for name in ("rows", "f1_macro", "accuracy", "balanced_accuracy", "log_loss", "ic")
                },
                "majority_f1_macro": majority["f1_macro"],
                "majority_accuracy": majority["accuracy"],
                "last_return_f1_macro": last["f1_macro"],
                "last_return_accuracy": last["accuracy"],
                "results": json.dumps(ensemble.results),
                "trained_at": min(models_trained_at[m] for m in ensemble.members),
                "fitted_at": fitted_at,
                "run_id": run_id,
            }
        )
    return pl.DataFrame(rows, infer_schema_length=None)
