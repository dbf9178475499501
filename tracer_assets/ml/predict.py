"""Scoring the newest candles with the best kept ensemble of each timeframe, and the models'
expiry (docs/ml.md). Pure Python, no Dagster.

Models are LightGBM's own text format and stackers are numbers: loading either executes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from tracer_assets.ml.ensembles import combine
from tracer_assets.ml.keys import ENSEMBLES_TABLE
from tracer_assets.ml.train import PROBABILITY_COLUMNS
from tracer_assets.ranking.keys import ENSEMBLE_RANKING_KEY, ENSEMBLE_RANKING_TABLE
from tracer_assets.ranking.retention import KEPT
from tracer_assets.tables import table_exists
from tracer_assets.vocabulary import CLASS_LABELS

if TYPE_CHECKING:
    import lightgbm as lgb

PREDICTION_COLUMNS = (
    "symbol",
    "timeframe",
    "ts",
    "label",
    *PROBABILITY_COLUMNS,
    "confidence",
    "ensemble_id",
    "ensemble_hash",
    "model_ids",
    "trained_at",
)


@dataclass(frozen=True)
class LoadedModel:
    model_id: str
    features: list[str]
    booster: lgb.Booster


def load_models(rows: Sequence[Mapping]) -> dict[str, LoadedModel]:
    """ml.models rows (model_id, features JSON, model_text) as boosters."""
    # imported here: lightgbm (with scikit-learn) costs ~2 s to import, and every run process imports the definitions
    import lightgbm as lgb

    return {
        row["model_id"]: LoadedModel(
            row["model_id"], json.loads(row["features"]), lgb.Booster(model_str=row["model_text"])
        )
        for row in rows
    }


def best_ensembles(ensembles: pl.DataFrame) -> dict[str, dict]:
    """Per timeframe, the ensemble with the best out-of-sample F1 macro (then accuracy, then id).
    Not accuracy first: a stacker reaches the majority baseline's accuracy by calling nearly
    every candle `other`, a vote that tells the signals nothing."""
    ranked = ensembles.sort(
        ["timeframe", "f1_macro", "accuracy", "ensemble_id"], descending=[False, True, True, False], nulls_last=True
    )
    return {row["timeframe"]: row for row in ranked.group_by("timeframe", maintain_order=True).first().to_dicts()}


def archived_reason(timeframe: str) -> str:
    return f"every ensemble of {timeframe} archived by {ENSEMBLE_RANKING_KEY.to_user_string()}"


def eligible_ensembles(ensembles: pl.DataFrame, statuses: Mapping[str, str] | None) -> pl.DataFrame:
    """The ensembles that may predict: those ranking/ensembles keeps (`statuses`: ensemble id to its
    status in ranking.ensembles; None when there is no ranking yet), and those it has not ranked
    yet (no ranking at all, or trained after the last one), so the first run has a predictor."""
    if statuses is None:
        return ensembles
    allowed = [i for i in ensembles["ensemble_id"].to_list() if statuses.get(i, KEPT) == KEPT]
    return ensembles.filter(pl.col("ensemble_id").is_in(allowed))


def archived_timeframes(ensembles: pl.DataFrame, statuses: Mapping[str, str] | None) -> dict[str, str]:
    """Per timeframe with ensembles but none of them eligible (every one archived by the ranking),
    why it gets no ML vote. `ensembles` needs the ensemble_id and timeframe columns."""
    present = set(ensembles["timeframe"].to_list())
    eligible = set(eligible_ensembles(ensembles, statuses)["timeframe"].to_list())
    return {tf: archived_reason(tf) for tf in sorted(present - eligible)}


def select_ensembles(
    ensembles: pl.DataFrame, statuses: Mapping[str, str] | None
) -> tuple[dict[str, dict], dict[str, str]]:
    """Per timeframe, the ensemble that predicts (best_ensembles among the eligible ones), and
    per timeframe left without one, why."""
    return best_ensembles(eligible_ensembles(ensembles, statuses)), archived_timeframes(ensembles, statuses)


def ranking_statuses(connection) -> dict[str, str] | None:
    """Ensemble id to its status in ranking.ensembles (kept, archived); None before the first ranking."""
    if not table_exists(connection, ENSEMBLE_RANKING_TABLE):
        return None
    return dict(connection.execute(f"SELECT item_id, status FROM {ENSEMBLE_RANKING_TABLE}").fetchall())


def newest_rows(features: pl.DataFrame) -> pl.DataFrame:
    """Each series' newest feature row."""
    return features.sort("symbol", "timeframe", "ts").group_by(["symbol", "timeframe"], maintain_order=True).last()


def score(rows: pl.DataFrame, ensemble: Mapping, models: Mapping[str, LoadedModel]) -> pl.DataFrame:
    """The ensemble's label, class probabilities and confidence (its top probability) for `rows`
    (feature rows of the ensemble's timeframe), in PREDICTION_COLUMNS."""
    members = json.loads(ensemble["members"])
    probabilities = [
        models[m].booster.predict(rows.select(models[m].features).to_numpy().astype(np.float64)) for m in members
    ]
    stacker = json.loads(ensemble["stacker"]) if ensemble["stacker"] else None
    predicted, proba = combine(ensemble["method"], probabilities, stacker)
    return rows.select("symbol", "timeframe", "ts").with_columns(
        pl.Series("label", [CLASS_LABELS[i] for i in predicted], dtype=pl.String),
        *(pl.Series(column, proba[:, i]) for i, column in enumerate(PROBABILITY_COLUMNS)),
        pl.Series("confidence", proba.max(axis=1)),
        pl.lit(ensemble["ensemble_id"]).alias("ensemble_id"),
        pl.lit(ensemble["content_hash"]).alias("ensemble_hash"),
        pl.lit(ensemble["members"]).alias("model_ids"),
        pl.lit(ensemble["trained_at"]).alias("trained_at"),
    )


def expiry_reason(trained_at: datetime, now: datetime, max_age_hours: float) -> str | None:
    """Why a prediction may not be used (its model is too old), or None."""
    age = (now - trained_at).total_seconds() / 3600
    if age > max_age_hours:
        return f"model trained {age:.1f} h ago, older than TRACER_MODEL_MAX_AGE_HOURS={max_age_hours:g}"
    return None


def ml_votes(
    connection,
    table: str,
    newest: Mapping[tuple[str, str], datetime],
    model_timeframes: Sequence[str],
    now: datetime,
    max_age_hours: float,
) -> tuple[dict[tuple[str, str], dict], dict[tuple[str, str], str]]:
    """The ML vote for each series' newest candle (label, confidence, ensemble), and for each
    series without one, why: no model for its timeframe, every ensemble of its timeframe archived
    by the ranking, none trained yet, no prediction of that candle, or a model past its age (the
    signals record the reason)."""
    reasons: dict[tuple[str, str], str] = {}
    wanted = {key: ts for key, ts in newest.items() if key[1] in model_timeframes}
    for key in newest:
        if key not in wanted:
            reasons[key] = f"no model for {key[1]} (TRACER_ML_TIMEFRAMES)"
    if wanted and table_exists(connection, ENSEMBLES_TABLE):
        # An earlier prediction of the candle by an ensemble archived since does not vote either.
        stored = connection.sql(f"SELECT ensemble_id, timeframe FROM {ENSEMBLES_TABLE}").pl()
        archived = archived_timeframes(stored, ranking_statuses(connection))
        for key in [key for key in wanted if key[1] in archived]:
            reasons[key] = archived[key[1]]
            del wanted[key]
    if not wanted:
        return {}, reasons
    if not table_exists(connection, table):
        return {}, {**reasons, **{key: f"no model trained yet ({table} missing)" for key in wanted}}
    keys = pl.DataFrame(
        [(s, tf, ts) for (s, tf), ts in wanted.items()], schema=["symbol", "timeframe", "ts"], orient="row"
    )
    connection.register("wanted_candles", keys.to_arrow())
    rows = connection.sql(
        f"""SELECT p.symbol, p.timeframe, p.label, p.confidence, p.ensemble_id, p.trained_at
            FROM {table} AS p JOIN wanted_candles AS w
              ON p.symbol = w.symbol AND p.timeframe = w.timeframe AND p.ts = w.ts
            QUALIFY row_number() OVER (PARTITION BY p.symbol, p.timeframe ORDER BY p.predicted_at DESC) = 1"""
    ).fetchall()
    connection.unregister("wanted_candles")
    votes = {}
    for symbol, timeframe, label, confidence, ensemble_id, trained_at in rows:
        expired = expiry_reason(trained_at, now, max_age_hours)
        if expired:
            reasons[(symbol, timeframe)] = f"{ensemble_id}: {expired}"
        else:
            votes[(symbol, timeframe)] = {"label": label, "confidence": confidence, "ensemble_id": ensemble_id}
    for key in wanted:
        if key not in votes and key not in reasons:
            reasons[key] = "no prediction of the newest candle (ml/predictions did not score it)"
    return votes, reasons
