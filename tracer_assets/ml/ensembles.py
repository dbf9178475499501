"""Ensembles over the best models of a target (docs/ml.md): the mean of their probabilities, a
majority vote, and a stacked one (a multinomial logistic regression on their probabilities).
Pure Python, no Dagster.

The stacker is fitted on out-of-fold predictions only: row r's member probabilities come from
the fold model that never trained on r. It is evaluated walk-forward over those folds: for
test fold k it is fitted on the out-of-fold rows of folds before k whose labels ended before
fold k began (the purge), so every ensemble is measured on folds 2..n, where all three methods
and both baselines are scored on the same rows. The deployed stacker is fitted on every
out-of-fold row. Its parameters are stored as numbers (JSON) and applied with numpy: nothing
is unpickled.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from threadpoolctl import threadpool_limits

from tracer_assets.ml.metrics import classification_metrics
from tracer_assets.ml.train import (
    BASELINES,
    HEADLINE_METRICS,
    Target,
    TrainedModel,
    baseline_predictions,
    epoch_seconds,
)
from tracer_assets.vocabulary import CLASS_LABELS

METHODS = ("mean", "vote", "stacked")
N_CLASSES = len(CLASS_LABELS)


@dataclass
class Ensemble:
    ensemble_id: str
    timeframe: str
    horizon: int
    method: str
    members: list[str]
    member_hashes: list[str]
    stacker: dict | None
    results: list[dict] = field(default_factory=list)
    stacker_rows: dict[int, np.ndarray] = field(default_factory=dict)  # test fold -> rows the stacker saw

    @property
    def content_hash(self) -> str:
        payload = json.dumps([self.method, self.member_hashes, self.stacker], sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()

    def overall(self, predictor: str = "ensemble") -> dict:
        return next(r for r in self.results if r["fold"] == "overall" and r["predictor"] == predictor)


def fit_stacker(x: np.ndarray, y: np.ndarray) -> dict:
    """A multinomial logistic regression on the members' probabilities, as numbers."""
    if len(y) == 0:
        raise ValueError("the stacker has no out-of-fold rows to learn from: too little data for the folds")
    classes = np.unique(y)
    if len(classes) == 1:  # one label in every row: it predicts that label (sklearn refuses to fit)
        return {"classes": classes.tolist(), "coef": [[0.0] * x.shape[1]], "intercept": [0.0]}
    # imported here: scikit-learn costs ~1 s to import, and every run process imports the definitions
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(max_iter=300)
    # One BLAS thread: the same coefficients on any machine, and on 2 cores twice as fast (1.4 s
    # against 3.1 s on 114k rows) as letting two threads contend.
    with threadpool_limits(limits=1):
        model.fit(x, y)
    return {"classes": model.classes_.tolist(), "coef": model.coef_.tolist(), "intercept": model.intercept_.tolist()}


def stacked_probabilities(x: np.ndarray, stacker: dict) -> np.ndarray:
    """sklearn's multinomial predict_proba (softmax of x @ coef.T + intercept), onto all five
    classes (a class absent from the stacker's training rows gets 0)."""
    coef, intercept = np.asarray(stacker["coef"]), np.asarray(stacker["intercept"])
    logits = x @ coef.T + intercept
    if len(stacker["classes"]) == 2:  # sklearn's binary case: one row of coefficients
        logits = np.hstack([-logits, logits]) / 2
    logits -= logits.max(axis=1, keepdims=True)
    weights = np.exp(logits)
    proba = np.zeros((len(x), N_CLASSES))
    proba[:, stacker["classes"]] = weights / weights.sum(axis=1, keepdims=True)
    return proba


def combine(method: str, members: Sequence[np.ndarray], stacker: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(predicted class, probabilities) of an ensemble from its members' probabilities."""
    mean = np.mean(members, axis=0)
    if method == "mean":
        return mean.argmax(axis=1), mean
    if method == "vote":
        votes = np.zeros_like(mean)
        for proba in members:
            votes[np.arange(len(mean)), proba.argmax(axis=1)] += 1
        # The most votes; a tie goes to the tied class with the higher mean probability.
        return (votes + mean / (len(members) + 1)).argmax(axis=1), mean
    if method == "stacked":
        if stacker is None:
            raise ValueError("a stacked ensemble needs its stacker")
        proba = stacked_probabilities(np.hstack(members), stacker)
        return proba.argmax(axis=1), proba
    raise ValueError(f"unknown ensemble method {method!r}")


def stacker_training_rows(target: Target, fold_number: int, fold_of_row: np.ndarray) -> np.ndarray:
    """Out-of-fold rows the stacker for test fold `fold_number` may learn from: tested in an
    earlier fold, and with their label known before this fold's first bar closed."""
    fold = next(f for f in target.folds if f.number == fold_number)
    label_end = epoch_seconds(target.rows["label_end"])
    earlier = (fold_of_row >= 1) & (fold_of_row < fold_number)
    return np.flatnonzero(earlier & (label_end < fold.test_start))


def build_ensembles(target: Target, models: Sequence[TrainedModel], max_members: int) -> list[Ensemble]:
    """The target's ensembles over its best models by out-of-fold F1, evaluated on folds 2..n."""

    def overall_f1(model: TrainedModel) -> float:
        row = next(r for r in model.results if r["fold"] == "overall" and r["predictor"] == "model")
        return row["f1_macro"]

    ranked = sorted(models, key=lambda m: (-overall_f1(m), m.spec.model_id))[:max_members]
    if not ranked or len(target.folds) < 2:
        return []
    members = [m.spec.model_id for m in ranked]
    oof = [m.oof for m in ranked]
    y, forward = target.y, target.forward_return
    fold_of_row = target.fold_of_row()
    ensembles = {
        method: Ensemble(
            f"{target.name}-{method}",
            target.timeframe,
            target.horizon,
            method,
            members,
            [m.content_hash for m in ranked],
            None,
        )  # fmt: skip
        for method in METHODS
    }
    collected: dict[str, tuple[list, list, list]] = {name: ([], [], []) for name in (*METHODS, *BASELINES)}
    for fold in target.folds[1:]:
        test = np.flatnonzero(fold_of_row == fold.number)
        rows = stacker_training_rows(target, fold.number, fold_of_row)
        stacker = fit_stacker(np.hstack([o[rows] for o in oof]), y[rows])
        ensembles["stacked"].stacker_rows[fold.number] = rows
        predictions = {m: combine(m, [o[test] for o in oof], stacker) for m in METHODS}
        baselines = baseline_predictions(target, fold)
        for name, (predicted, proba) in {**predictions, **baselines}.items():
            collected[name][0].append(test)
            collected[name][1].append(predicted)
            collected[name][2].append(proba)
            metrics = classification_metrics(y[test], proba, forward[test], predicted)
            for ensemble in ensembles.values() if name in BASELINES else [ensembles[name]]:
                ensemble.results.append(_row(ensemble, name, str(fold.number), metrics))
    for name, (tests, predicted, proba) in collected.items():
        test = np.concatenate(tests)
        metrics = classification_metrics(y[test], np.vstack(proba), forward[test], np.concatenate(predicted))
        for ensemble in ensembles.values() if name in BASELINES else [ensembles[name]]:
            ensemble.results.append(_row(ensemble, name, "overall", metrics))
    every_oof = np.flatnonzero(fold_of_row >= 1)
    ensembles["stacked"].stacker = fit_stacker(np.hstack([o[every_oof] for o in oof]), y[every_oof])
    return list(ensembles.values())


def _row(ensemble: Ensemble, predictor: str, fold: str, metrics: dict) -> dict:
    return {
        "predictor": "ensemble" if predictor in METHODS else predictor,
        "fold": fold,
        **{name: metrics.get(name) for name in ("rows", *HEADLINE_METRICS)},
        "metrics": metrics,
    }
