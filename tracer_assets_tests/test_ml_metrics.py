"""Classification metrics and the baselines, checked against values worked out by hand: a perfect
prediction, a small confusion matrix and its F1, the baselines' smoothed probabilities, and the IC."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from tracer_assets.ml.metrics import (
    SCORES,
    classification_metrics,
    expected_score,
    last_return_baseline,
    majority_baseline,
)
from tracer_assets.vocabulary import CLASS_LABELS

STRONG_BEAR, BEAR, OTHER, BULL, STRONG_BULL = range(5)


def one_hot(classes: list[int]) -> np.ndarray:
    return np.eye(5)[classes]


def test_class_scores_follow_the_vocabulary():
    assert CLASS_LABELS == ("strong_bear", "bear", "other", "bull", "strong_bull")
    assert SCORES.tolist() == [-2, -1, 0, 1, 2]
    assert expected_score(np.array([[0.5, 0, 0, 0, 0.5], [0, 0.25, 0, 0.75, 0], [0, 0, 0, 0, 1]])).tolist() == [
        0.0,
        0.5,
        2.0,
    ]


def test_perfect_prediction():
    y_true = np.array([STRONG_BEAR, BEAR, OTHER, BULL, STRONG_BULL, BULL])
    # The realized return is a monotone function of the class (both bull rows 1%): the ranks agree exactly.
    forward_return = np.array([-0.04, -0.01, 0.0, 0.01, 0.05, 0.01])
    metrics = classification_metrics(y_true, one_hot(y_true.tolist()), forward_return)

    assert metrics["rows"] == 6
    assert metrics["f1_macro"] == 1.0
    assert metrics["accuracy"] == 1.0
    assert metrics["balanced_accuracy"] == 1.0
    assert metrics["ic"] == pytest.approx(1.0)
    assert metrics["log_loss"] == pytest.approx(0.0, abs=1e-12)  # clipped at eps, not log(0)
    for label in CLASS_LABELS:
        assert metrics[f"precision_{label}"] == 1.0
        assert metrics[f"recall_{label}"] == 1.0
    assert metrics["confusion"] == [
        [1, 0, 0, 0, 0],
        [0, 1, 0, 0, 0],
        [0, 0, 1, 0, 0],
        [0, 0, 0, 2, 0],
        [0, 0, 0, 0, 1],
    ]
    assert [metrics[f"class_share_{label}"] for label in CLASS_LABELS] == [1 / 6, 1 / 6, 1 / 6, 2 / 6, 1 / 6]


def test_hand_computed_confusion_and_f1():
    y_true = np.array([0, 0, 1, 2, 2, 3, 4, 4])
    predicted = np.array([0, 1, 1, 2, 3, 3, 4, 0])
    uniform = np.full((8, 5), 0.2)
    metrics = classification_metrics(y_true, uniform, np.linspace(-1, 1, 8), predicted=predicted)

    assert metrics["confusion"] == [
        [1, 1, 0, 0, 0],
        [0, 1, 0, 0, 0],
        [0, 0, 1, 1, 0],
        [0, 0, 0, 1, 0],
        [1, 0, 0, 0, 1],
    ]
    # One hit per class; predicted counts (column sums) 2, 2, 1, 2, 1; true counts (row sums) 2, 1, 2, 1, 2.
    precision = [1 / 2, 1 / 2, 1, 1 / 2, 1]
    recall = [1 / 2, 1, 1 / 2, 1, 1 / 2]
    assert [metrics[f"precision_{label}"] for label in CLASS_LABELS] == pytest.approx(precision)
    assert [metrics[f"recall_{label}"] for label in CLASS_LABELS] == pytest.approx(recall)
    # F1 = 2PR / (P + R): 1/2 for strong_bear, 2/3 for the other four; macro = (1/2 + 4 * 2/3) / 5 = 19/30.
    assert metrics["f1_macro"] == pytest.approx(19 / 30)
    assert metrics["accuracy"] == pytest.approx(5 / 8)
    assert metrics["balanced_accuracy"] == pytest.approx((1 / 2 + 1 + 1 / 2 + 1 + 1 / 2) / 5)
    assert metrics["log_loss"] == pytest.approx(math.log(5))  # uniform over five classes
    assert metrics["ic"] is None  # a uniform proba gives every row the same expected score
    assert [metrics[f"class_share_{label}"] for label in CLASS_LABELS] == [2 / 8, 1 / 8, 2 / 8, 1 / 8, 2 / 8]


def test_f1_macro_counts_absent_classes_as_zero():
    """Perfect on the two classes present, 0 for the three absent: 2/5, not 1."""
    y_true = np.array([BEAR, BEAR, BULL, BULL])
    metrics = classification_metrics(y_true, one_hot(y_true.tolist()), np.array([-0.02, -0.01, 0.01, 0.02]))
    assert metrics["f1_macro"] == pytest.approx(2 / 5)
    assert metrics["accuracy"] == 1.0
    assert metrics["balanced_accuracy"] == 1.0  # sklearn's: over the classes present in y_true
    assert metrics["precision_strong_bull"] == 0.0
    assert metrics["recall_strong_bull"] == 0.0


def test_predicted_defaults_to_argmax_of_proba():
    proba = np.array(
        [
            [0.1, 0.6, 0.1, 0.1, 0.1],
            [0.0, 0.1, 0.2, 0.3, 0.4],
            [0.3, 0.3, 0.2, 0.1, 0.1],  # tie: the lower index, strong_bear
        ]
    )
    metrics = classification_metrics(np.array([BEAR, STRONG_BULL, BEAR]), proba, np.array([-0.01, 0.03, 0.0]))
    assert metrics["confusion"][BEAR] == [1, 1, 0, 0, 0]
    assert metrics["confusion"][STRONG_BULL] == [0, 0, 0, 0, 1]
    assert metrics["accuracy"] == pytest.approx(2 / 3)
    # log loss = -(ln 0.6 + ln 0.4 + ln 0.3) / 3
    assert metrics["log_loss"] == pytest.approx(-(math.log(0.6) + math.log(0.4) + math.log(0.3)) / 3)


def test_ic_is_the_rank_correlation_of_the_expected_score():
    proba = np.array(
        [
            [0, 0, 0, 0, 1],  # expected score 2
            [0, 0, 0, 1, 0],  # 1
            [0, 0, 1, 0, 0],  # 0
            [0, 1, 0, 0, 0],  # -1
        ],
        dtype=float,
    )
    y_true = np.array([STRONG_BULL, BULL, OTHER, BEAR])
    reversed_returns = np.array([-0.03, -0.01, 0.01, 0.02])
    assert classification_metrics(y_true, proba, reversed_returns)["ic"] == pytest.approx(-1.0)
    # Ranks of the score 4, 3, 2, 1 against returns ranked 3, 4, 1, 2: d^2 = 1 + 1 + 1 + 1 = 4,
    # rho = 1 - 6 * 4 / (4 * (16 - 1)) = 0.6.
    assert classification_metrics(y_true, proba, np.array([0.02, 0.03, -0.01, 0.0]))["ic"] == pytest.approx(0.6)


def test_ic_is_none_where_undefined():
    y_true = np.array([OTHER, BULL, BEAR, OTHER])
    constant_proba = np.tile([0.1, 0.2, 0.4, 0.2, 0.1], (4, 1))
    assert classification_metrics(y_true, constant_proba, np.array([0.01, 0.02, -0.01, 0.0]))["ic"] is None
    varying_proba = one_hot([OTHER, BULL, BEAR, OTHER])
    assert classification_metrics(y_true, varying_proba, np.zeros(4))["ic"] is None  # constant returns
    assert classification_metrics(y_true[:2], varying_proba[:2], np.array([0.0, 0.01]))["ic"] is None  # 2 rows


def test_metrics_are_json_serializable_plain_values():
    y_true = np.array([0, 1, 2, 3, 4])
    metrics = classification_metrics(y_true, one_hot([0, 1, 2, 4, 4]), np.arange(5, dtype=float))
    assert json.loads(json.dumps(metrics)) == metrics
    assert list(metrics)[:6] == ["rows", "f1_macro", "accuracy", "balanced_accuracy", "log_loss", "ic"]
    assert set(metrics) == (
        {"rows", "f1_macro", "accuracy", "balanced_accuracy", "log_loss", "ic", "confusion"}
        | {f"{kind}_{label}" for kind in ("precision", "recall", "class_share") for label in CLASS_LABELS}
    )
    assert all(type(value) in (int, float, list) for value in metrics.values())


@pytest.mark.parametrize(
    ("y_true", "proba", "forward_return", "message"),
    [
        ([], np.zeros((0, 5)), [], "needs at least one row"),
        ([0, 5], np.full((2, 5), 0.2), [0.0, 1.0], r"y_true must hold class indices 0..4, got 0..5"),
        ([0, 1], np.full((2, 4), 0.25), [0.0, 1.0], r"proba must have shape \(2, 5\), got \(2, 4\)"),
        ([0, 1], np.full((2, 5), 0.2), [0.0], r"forward_return must have 2 values"),
        ([0, 1], np.full((2, 5), 0.2), [0.0, np.nan], "forward_return must be finite"),
    ],
)
def test_bad_metric_inputs_raise(y_true, proba, forward_return, message):
    with pytest.raises(ValueError, match=message):
        classification_metrics(np.array(y_true, dtype=np.int64), proba, np.array(forward_return))


# ---------------------------------------------------------------------------------------------
# Baselines
# ---------------------------------------------------------------------------------------------


def test_majority_baseline_predicts_the_training_mode_with_laplace_frequencies():
    # Counts per class 0, 1, 3, 2, 0 over 6 rows: mode "other"; smoothed (count + 1) / (6 + 5).
    predicted, proba = majority_baseline(np.array([OTHER, OTHER, BULL, BEAR, OTHER, BULL]), n_test=3)
    assert predicted.tolist() == [OTHER] * 3
    assert proba.shape == (3, 5)
    for row in proba:
        assert row.tolist() == pytest.approx([1 / 11, 2 / 11, 4 / 11, 3 / 11, 1 / 11])


def test_majority_baseline_tie_goes_to_the_lower_index():
    predicted, _ = majority_baseline(np.array([BULL, BEAR, BULL, BEAR]), n_test=2)
    assert predicted.tolist() == [BEAR, BEAR]


def test_majority_baseline_log_loss_is_finite_for_a_class_the_window_lacks():
    predicted, proba = majority_baseline(np.array([OTHER, OTHER, BULL, BEAR, OTHER, BULL]), n_test=1)
    metrics = classification_metrics(np.array([STRONG_BULL]), proba, np.array([0.05]), predicted=predicted)
    assert metrics["log_loss"] == pytest.approx(math.log(11))  # -ln(1/11)
    assert metrics["accuracy"] == 0.0


def test_last_return_baseline_predicts_the_sign_and_uses_same_sign_training_frequencies():
    y_train = np.array([BULL, BULL, OTHER, BEAR, STRONG_BEAR, OTHER])
    last_return_train = np.array([0.01, 0.02, 0.03, -0.01, -0.02, 0.0])
    predicted, proba = last_return_baseline(y_train, last_return_train, np.array([0.5, -0.1, 0.0, 0.2]))

    assert predicted.tolist() == [BULL, BEAR, OTHER, BULL]
    up = [1 / 8, 1 / 8, 2 / 8, 3 / 8, 1 / 8]  # rising rows: other 1, bull 2 of 3
    down = [2 / 7, 2 / 7, 1 / 7, 1 / 7, 1 / 7]  # falling rows: strong_bear 1, bear 1 of 2
    flat = [1 / 6, 1 / 6, 2 / 6, 1 / 6, 1 / 6]  # flat row: other 1 of 1
    assert proba.tolist() == [pytest.approx(up), pytest.approx(down), pytest.approx(flat), pytest.approx(up)]


def test_last_return_baseline_is_uniform_for_a_sign_the_window_lacks_and_log_loss_is_finite():
    y_train = np.array([BULL, BEAR])
    predicted, proba = last_return_baseline(y_train, np.array([0.01, -0.01]), np.array([0.0, 0.0, 0.0]))
    assert predicted.tolist() == [OTHER] * 3
    assert proba.tolist() == [pytest.approx([0.2] * 5)] * 3
    metrics = classification_metrics(
        np.array([STRONG_BEAR, OTHER, STRONG_BULL]), proba, np.array([-0.1, 0.0, 0.1]), predicted
    )
    assert metrics["log_loss"] == pytest.approx(math.log(5))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: majority_baseline(np.array([], dtype=np.int64), 3), "non-empty training window"),
        (lambda: last_return_baseline(np.array([1]), np.array([0.1, 0.2]), np.array([0.1])), "one value per"),
        (lambda: last_return_baseline(np.array([1]), np.array([0.1]), np.array([np.nan])), "must be finite"),
    ],
)
def test_bad_baseline_inputs_raise(call, message):
    with pytest.raises(ValueError, match=message):
        call()
