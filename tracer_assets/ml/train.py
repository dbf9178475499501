"""Training the model grid: LightGBM multiclass classifiers, pooled across symbols, validated
walk-forward with purging (docs/ml.md). Pure Python, no Dagster.

One target is a timeframe and a horizon: its rows (every symbol, the features complete, the
label known) and its folds are shared by the target's models (one per feature set) and by the
two baselines, so every figure of a target is measured on the same rows in the same folds.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from tracer_assets.market.timeframes import timeframe_seconds
from tracer_assets.ml.dataset import BASE_FEATURES, feature_columns, label_columns
from tracer_assets.ml.metrics import classification_metrics, last_return_baseline, majority_baseline
from tracer_assets.ml.settings import MlSettings
from tracer_assets.ml.validation import Fold, purged_walk_forward
from tracer_assets.vocabulary import CLASS_LABELS

if TYPE_CHECKING:
    import lightgbm as lgb

PROBABILITY_COLUMNS = tuple(f"p_{label}" for label in CLASS_LABELS)
BASELINES = ("majority", "last_return")
HEADLINE_METRICS = ("f1_macro", "accuracy", "balanced_accuracy", "log_loss", "ic")


def code_version() -> str:
    """A hash of the sources that decide what a model learns: a change there is a new version."""
    here = Path(__file__).parent
    digest = hashlib.sha256()
    for name in ("dataset.py", "train.py", "validation.py"):
        digest.update((here / name).read_bytes())
    return digest.hexdigest()[:12]


@dataclass(frozen=True)
class ModelSpec:
    timeframe: str
    horizon: int
    feature_set: str

    @property
    def target(self) -> str:
        return f"{self.timeframe}-h{self.horizon}"

    @property
    def model_id(self) -> str:
        return f"{self.target}-{self.feature_set}"


def model_grid(settings: MlSettings) -> list[ModelSpec]:
    return [
        ModelSpec(tf, h, fs) for tf in settings.timeframes for h in settings.horizons for fs in settings.feature_sets
    ]


def lightgbm_parameters(settings: MlSettings) -> dict:
    """Fixed seed, fixed threads, LightGBM's deterministic mode: the same data and settings give
    the same model text, bit for bit."""
    return {
        "objective": "multiclass",
        "num_class": len(CLASS_LABELS),
        "learning_rate": 0.06,
        "num_leaves": 15,
        "min_data_in_leaf": 200,
        "feature_fraction": 0.8,
        "bagging_fraction": 0.7,
        "bagging_freq": 1,
        "lambda_l2": 1.0,
        "max_bin": 63,
        "seed": settings.seed,
        "num_threads": settings.threads,
        "deterministic": True,
        "force_row_wise": True,
        "verbosity": -1,
    }


@dataclass
class Target:
    """The rows of one timeframe x horizon, in (symbol, ts) order, and their folds."""

    timeframe: str
    horizon: int
    rows: pl.DataFrame  # symbol, timeframe, ts, feature_time, label_end, label, forward_return, log_return, features
    folds: list[Fold]

    @property
    def name(self) -> str:
        return f"{self.timeframe}-h{self.horizon}"

    @property
    def y(self) -> np.ndarray:
        return self.rows["label"].to_numpy().astype(np.int64)

    @property
    def forward_return(self) -> np.ndarray:
        return self.rows["forward_return"].to_numpy()

    def matrix(self, columns: Sequence[str]) -> np.ndarray:
        return self.rows.select(columns).to_numpy().astype(np.float64)

    def fold_of_row(self) -> np.ndarray:
        """The fold whose test block holds each row; 0 for rows only ever trained on."""
        fold = np.zeros(self.rows.height, dtype=np.int64)
        for f in self.folds:
            fold[f.test] = f.number
        return fold


def epoch_seconds(column: pl.Series) -> np.ndarray:
    return column.dt.epoch("s").to_numpy().astype(np.int64)


def prepare_target(dataset: pl.DataFrame, timeframe: str, horizon: int, settings: MlSettings) -> Target:
    """The target's rows: past the features' warm-up (every base feature present) with a known
    label; its purged walk-forward folds, with an embargo of the label horizon plus a bar."""
    forward, label, label_end = label_columns(horizon)
    rows = (
        dataset.filter(pl.col("timeframe") == timeframe)
        .drop_nulls([*BASE_FEATURES, label])
        .rename({label: "label", forward: "forward_return", label_end: "label_end"})
        .sort("symbol", "ts")
    )
    if rows.is_empty():
        raise ValueError(f"no labelled {timeframe} rows for horizon {horizon}: the dataset is empty or too short")
    embargo = (horizon + 1) * timeframe_seconds(timeframe)
    folds = purged_walk_forward(
        epoch_seconds(rows["feature_time"]), epoch_seconds(rows["label_end"]), settings.folds, embargo
    )
    return Target(timeframe, horizon, rows, folds)


@dataclass
class TrainedModel:
    spec: ModelSpec
    features: list[str]
    parameters: dict
    model_text: str
    content_hash: str
    train_start: object
    train_end: object
    train_rows: int
    data_fingerprint: str
    results: list[dict] = field(default_factory=list)  # per fold and overall, model and baselines
    oof: np.ndarray | None = None  # (rows, 5) out-of-fold probabilities; NaN on rows never tested


def data_fingerprint(x: np.ndarray, y: np.ndarray) -> str:
    digest = hashlib.sha256(np.ascontiguousarray(x).tobytes())
    digest.update(np.ascontiguousarray(y).tobytes())
    return digest.hexdigest()[:16]


def _fit(x: np.ndarray, y: np.ndarray, columns: Sequence[str], settings: MlSettings) -> lgb.Booster:
    # imported here: lightgbm (with scikit-learn) costs ~2 s to import, and every run process imports the definitions
    import lightgbm as lgb

    parameters = lightgbm_parameters(settings)
    data = lgb.Dataset(x, label=y, feature_name=list(columns), params=parameters)
    return lgb.train(parameters, data, num_boost_round=settings.rounds)


def result_row(spec: ModelSpec, predictor: str, fold: str, metrics: dict, **extra) -> dict:
    return {
        "model_id": spec.model_id,
        "target": spec.target,
        "timeframe": spec.timeframe,
        "horizon": spec.horizon,
        "feature_set": spec.feature_set,
        "predictor": predictor,
        "fold": fold,
        **{name: metrics.get(name) for name in ("rows", *HEADLINE_METRICS)},
        "metrics": json.dumps(metrics),
        **extra,
    }


def baseline_predictions(target: Target, fold: Fold) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The two baselines' (predicted, proba) on the fold's test rows, fitted on its training rows."""
    y = target.y
    last = target.rows["log_return"].fill_null(0.0).to_numpy()
    return {
        "majority": majority_baseline(y[fold.train], len(fold.test)),
        "last_return": last_return_baseline(y[fold.train], last[fold.train], last[fold.test]),
    }


def train_model(
    target: Target, spec: ModelSpec, all_timeframes: Sequence[str], settings: MlSettings, log: Callable[[str], None]
) -> TrainedModel:
    """Each fold: fit on its (purged) training rows, predict its test block; then the deployed
    model on every row. Metrics per fold and over all out-of-fold rows, beside the baselines'."""
    columns = feature_columns(spec.timeframe, spec.feature_set, all_timeframes)
    x, y, forward = target.matrix(columns), target.y, target.forward_return
    oof = np.full((len(y), len(CLASS_LABELS)), np.nan)
    oof_baselines: dict[str, tuple[np.ndarray, np.ndarray]] = {
        name: (np.full(len(y), -1), np.full((len(y), len(CLASS_LABELS)), np.nan)) for name in BASELINES
    }
    results = []
    for fold in target.folds:
        booster = _fit(x[fold.train], y[fold.train], columns, settings)
        oof[fold.test] = booster.predict(x[fold.test])
        extra = {
            "train_rows": len(fold.train),
            "purged_rows": len(fold.purged),
            "embargoed_rows": len(fold.embargoed),
            "test_start": fold.test_start,
            "test_end": fold.test_end,
        }
        metrics = classification_metrics(y[fold.test], oof[fold.test], forward[fold.test])
        results.append(result_row(spec, "model", str(fold.number), metrics, **extra))
        for name, (predicted, proba) in baseline_predictions(target, fold).items():
            oof_baselines[name][0][fold.test] = predicted
            oof_baselines[name][1][fold.test] = proba
            metrics = classification_metrics(y[fold.test], proba, forward[fold.test], predicted)
            results.append(result_row(spec, name, str(fold.number), metrics, **extra))
        log(f"{spec.model_id} fold {fold.number}/{len(target.folds)}: f1 {results[-3]['f1_macro']:.3f}")
    tested = ~np.isnan(oof[:, 0])
    results.append(
        result_row(spec, "model", "overall", classification_metrics(y[tested], oof[tested], forward[tested]))
    )
    for name, (predicted, proba) in oof_baselines.items():
        metrics = classification_metrics(y[tested], proba[tested], forward[tested], predicted[tested])
        results.append(result_row(spec, name, "overall", metrics))
    booster = _fit(x, y, columns, settings)
    text = booster.model_to_string()
    times = target.rows["ts"]
    return TrainedModel(
        spec=spec,
        features=columns,
        parameters={**lightgbm_parameters(settings), "num_boost_round": settings.rounds},
        model_text=text,
        content_hash=hashlib.sha256(text.encode()).hexdigest(),
        train_start=times.min(),
        train_end=times.max(),
        train_rows=len(y),
        data_fingerprint=data_fingerprint(x, y),
        results=results,
        oof=oof,
    )
