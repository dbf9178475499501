"""Classification metrics for the five-label classifiers, and the two baselines a model must beat.

Class index i is `CLASS_LABELS[i]` with score i - 2 (strong_bear -2 .. strong_bull +2). Besides
the usual classification scores, the metrics report the information coefficient (IC): the Spearman
rank correlation of the expected score under the predicted probabilities with the realized forward
return, which says whether the model ranks rows by what actually happened, even when its argmax
class is wrong.

The baselines are fitted on the training window only, like the model, so a model that does not
beat them on the same test block has learned nothing the label distribution or the last bar's
direction did not already say.

Pure numpy, scikit-learn and scipy: no Dagster.
"""

from __future__ import annotations

import warnings

import numpy as np

from tracer_assets.vocabulary import CLASS_LABELS

N_CLASSES = len(CLASS_LABELS)
CLASS_INDICES = list(range(N_CLASSES))
SCORES = np.arange(-2, 3)  # class scores: class index i has score i - 2
BEAR = CLASS_LABELS.index("bear")
OTHER = CLASS_LABELS.index("other")
BULL = CLASS_LABELS.index("bull")
MIN_IC_ROWS = 3  # a rank correlation of two points is always +-1: meaningless


def expected_score(proba: np.ndarray) -> np.ndarray:
    """The probability-weighted class score per row, in [-2, 2]: what the IC ranks."""
    return np.asarray(proba, dtype=np.float64) @ SCORES


def classification_metrics(
    y_true: np.ndarray,
    proba: np.ndarray,
    forward_return: np.ndarray,
    predicted: np.ndarray | None = None,
) -> dict:
    """Scores of one test block as a flat JSON-serializable dict (plain floats, ints and lists).

    `y_true` holds class indices 0..4, `proba` the (n, 5) class probabilities, `forward_return` the
    realized forward return per row; `predicted` defaults to the argmax of `proba`. F1, accuracy,
    precision, recall and the confusion matrix use `predicted`; log loss and IC use `proba`.

    - `f1_macro` averages F1 over all five labels whatever is present: a class absent from both
      truth and prediction counts as 0 (zero_division=0), so a block missing the strong classes
      scores lower than one that has and predicts them. Comparable across blocks, not flattering.
    - `balanced_accuracy` is sklearn's: the mean recall over the classes present in `y_true`.
    - `log_loss` is over labels 0..4, probabilities clipped to [eps, 1 - eps] as sklearn does.
    - `ic` is None when fewer than 3 rows or either side is constant (a rank correlation is undefined).
    - `confusion` is 5x5, rows = true class, columns = predicted class, in CLASS_LABELS order.
    """
    y_true = _class_indices("y_true", y_true)
    n_rows = y_true.size
    if n_rows == 0:
        raise ValueError("classification_metrics needs at least one row")
    proba = np.asarray(proba, dtype=np.float64)
    if proba.shape != (n_rows, N_CLASSES):
        raise ValueError(f"proba must have shape ({n_rows}, {N_CLASSES}), got {proba.shape}")
    forward_return = np.asarray(forward_return, dtype=np.float64)
    if forward_return.shape != (n_rows,):
        raise ValueError(f"forward_return must have {n_rows} values, got shape {forward_return.shape}")
    if not np.isfinite(forward_return).all():
        raise ValueError("forward_return must be finite: a labelled row has a realized forward return")
    if predicted is None:
        predicted = proba.argmax(axis=1)
    predicted = _class_indices("predicted", predicted)
    if predicted.size != n_rows:
        raise ValueError(f"predicted must have {n_rows} values, got {predicted.size}")

    # imported here: scikit-learn costs ~1 s to import, and every run process imports the definitions
    from sklearn.metrics import (
        accuracy_score,
        confusion_matrix,
        f1_score,
        log_loss,
        precision_recall_fscore_support,
    )

    precision, recall, _, _ = precision_recall_fscore_support(y_true, predicted, labels=CLASS_INDICES, zero_division=0)
    class_share = np.bincount(y_true, minlength=N_CLASSES) / n_rows
    metrics: dict = {
        "rows": int(n_rows),
        "f1_macro": float(f1_score(y_true, predicted, labels=CLASS_INDICES, average="macro", zero_division=0)),
        "accuracy": float(accuracy_score(y_true, predicted)),
        "balanced_accuracy": _balanced_accuracy(y_true, predicted),
        "log_loss": float(log_loss(y_true, proba, labels=CLASS_INDICES)),
        "ic": information_coefficient(expected_score(proba), forward_return),
    }
    for index, label in enumerate(CLASS_LABELS):
        metrics[f"precision_{label}"] = float(precision[index])
    for index, label in enumerate(CLASS_LABELS):
        metrics[f"recall_{label}"] = float(recall[index])
    for index, label in enumerate(CLASS_LABELS):
        metrics[f"class_share_{label}"] = float(class_share[index])
    metrics["confusion"] = confusion_matrix(y_true, predicted, labels=CLASS_INDICES).tolist()
    return metrics


def information_coefficient(score: np.ndarray, forward_return: np.ndarray) -> float | None:
    """Spearman rank correlation of a score with the forward return; None where it is undefined."""
    score = np.asarray(score, dtype=np.float64)
    forward_return = np.asarray(forward_return, dtype=np.float64)
    if score.size < MIN_IC_ROWS or np.ptp(score) == 0 or np.ptp(forward_return) == 0:
        return None
    # imported here: scipy.stats costs ~0.5 s to import, and every run process imports the definitions
    from scipy.stats import spearmanr

    correlation = float(spearmanr(score, forward_return).statistic)
    return correlation if np.isfinite(correlation) else None


def majority_baseline(y_train: np.ndarray, n_test: int) -> tuple[np.ndarray, np.ndarray]:
    """Predict the training window's most frequent class everywhere (ties: the lower index).

    Returns (predicted, proba): proba is the training class frequencies, Laplace-smoothed (+1 per
    class), the same for every test row; smoothing keeps log loss finite for classes the window lacks.
    """
    y_train = _class_indices("y_train", y_train)
    if y_train.size == 0:
        raise ValueError("majority_baseline needs a non-empty training window")
    if n_test < 0:
        raise ValueError(f"n_test must be >= 0, got {n_test}")
    counts = np.bincount(y_train, minlength=N_CLASSES)
    predicted = np.full(n_test, int(counts.argmax()), dtype=np.int64)
    proba = np.tile(_laplace_frequencies(counts), (n_test, 1))
    return predicted, proba


def last_return_baseline(
    y_train: np.ndarray,
    last_return_train: np.ndarray,
    last_return_test: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Momentum of one bar: predict bull where the last return is up, bear where down, other where flat.

    Returns (predicted, proba): a test row's proba is the training window's class frequencies among
    the training rows whose last return has the same sign, Laplace-smoothed (+1 per class; uniform
    when the window has no row of that sign), so log loss is finite and nothing is fitted on the test.
    """
    y_train = _class_indices("y_train", y_train)
    if y_train.size == 0:
        raise ValueError("last_return_baseline needs a non-empty training window")
    last_return_train = _finite_returns("last_return_train", last_return_train)
    last_return_test = _finite_returns("last_return_test", last_return_test)
    if last_return_train.size != y_train.size:
        raise ValueError(
            f"last_return_train must have one value per training row ({y_train.size}), got {last_return_train.size}"
        )

    sign_train = np.sign(last_return_train)
    sign_test = np.sign(last_return_test)
    predicted = np.select([sign_test > 0, sign_test < 0], [BULL, BEAR], default=OTHER).astype(np.int64)
    proba = np.empty((sign_test.size, N_CLASSES), dtype=np.float64)
    for sign in (-1.0, 0.0, 1.0):
        counts = np.bincount(y_train[sign_train == sign], minlength=N_CLASSES)
        proba[sign_test == sign] = _laplace_frequencies(counts)
    return predicted, proba


def _laplace_frequencies(counts: np.ndarray) -> np.ndarray:
    """Class frequencies with one pseudo-count per class: no class gets probability 0."""
    return (counts + 1) / (counts.sum() + N_CLASSES)


def _balanced_accuracy(y_true: np.ndarray, predicted: np.ndarray) -> float:
    """sklearn's balanced accuracy; its warning about predicted classes absent from y_true is expected here."""
    # imported here: scikit-learn costs ~1 s to import, and every run process imports the definitions
    from sklearn.metrics import balanced_accuracy_score

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        return float(balanced_accuracy_score(y_true, predicted))


def _class_indices(name: str, values: np.ndarray) -> np.ndarray:
    """A 1-D int64 array of class indices, checked to lie in 0..4."""
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
    if array.size and array.dtype.kind not in "iu":
        raise ValueError(f"{name} must hold integer class indices, got dtype {array.dtype}")
    array = array.astype(np.int64)
    if array.size and (array.min() < 0 or array.max() >= N_CLASSES):
        raise ValueError(f"{name} must hold class indices 0..{N_CLASSES - 1}, got {array.min()}..{array.max()}")
    return array


def _finite_returns(name: str, values: np.ndarray) -> np.ndarray:
    """A 1-D float64 array, refused if any value is NaN or infinite (a missing last return has no sign)."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} must be finite; drop rows without a last return first")
    return array
