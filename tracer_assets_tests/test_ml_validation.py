"""Purged walk-forward splits: on a hand-built pooled index of two symbols, the exact rows each fold
purges and embargoes, no leak from train into the test block, and a clear error for every bad input."""

from __future__ import annotations

import numpy as np
import pytest

from tracer_assets.ml.validation import Fold, purged_walk_forward

T0 = 1_700_000_000
BAR = 300  # 5-minute bars
N_BARS = 20
HORIZON_BARS = 3


def two_symbol_index() -> tuple[np.ndarray, np.ndarray]:
    """20 bars of 300 s for two symbols, pooled: rows 0-19 are symbol A's bars 0-19, rows 20-39
    symbol B's bars 0-19. A row's label is known 3 bars after its features."""
    one_symbol = T0 + BAR * np.arange(N_BARS, dtype=np.int64)
    feature_time = np.concatenate([one_symbol, one_symbol])
    return feature_time, feature_time + HORIZON_BARS * BAR


def rows(*bar_numbers: int) -> list[int]:
    """The pooled rows of these bars, for both symbols, sorted."""
    return sorted(list(bar_numbers) + [N_BARS + bar for bar in bar_numbers])


def bar_range(first: int, last: int) -> list[int]:
    """The pooled rows of bars first..last (inclusive), for both symbols."""
    return rows(*range(first, last + 1))


def assert_no_leak(fold: Fold, feature_time: np.ndarray, label_end: np.ndarray) -> None:
    """Train and test are disjoint, and no train row's [feature_time, label_end] meets the test block's span."""
    assert np.intersect1d(fold.train, fold.test).size == 0
    overlaps = (feature_time[fold.train] <= fold.test_label_end) & (label_end[fold.train] >= fold.test_start)
    assert not overlaps.any()


# ---------------------------------------------------------------------------------------------
# Walk-forward
# ---------------------------------------------------------------------------------------------


def test_walk_forward_blocks_and_purged_rows_for_both_symbols():
    feature_time, label_end = two_symbol_index()
    folds = purged_walk_forward(feature_time, label_end, n_folds=3, embargo_seconds=0)

    # 20 distinct times in 4 blocks of 5 bars: 0-4 (training only), 5-9, 10-14, 15-19.
    assert [fold.number for fold in folds] == [1, 2, 3]
    assert [fold.test.tolist() for fold in folds] == [bar_range(5, 9), bar_range(10, 14), bar_range(15, 19)]
    assert [(fold.test_start, fold.test_end, fold.test_label_end) for fold in folds] == [
        (T0 + 5 * BAR, T0 + 9 * BAR, T0 + 12 * BAR),
        (T0 + 10 * BAR, T0 + 14 * BAR, T0 + 17 * BAR),
        (T0 + 15 * BAR, T0 + 19 * BAR, T0 + 22 * BAR),
    ]
    # The last 3 bars before each test block have labels reaching into it: purged, for A and B alike.
    assert [fold.purged.tolist() for fold in folds] == [
        [2, 3, 4, 22, 23, 24],
        [7, 8, 9, 27, 28, 29],
        [12, 13, 14, 32, 33, 34],
    ]
    assert [fold.train.tolist() for fold in folds] == [[0, 1, 20, 21], bar_range(0, 6), bar_range(0, 11)]
    for fold in folds:
        assert fold.embargoed.tolist() == []
        assert_no_leak(fold, feature_time, label_end)
        for indices in (fold.train, fold.test, fold.purged, fold.embargoed):
            assert indices.dtype == np.int64
            assert (np.diff(indices) > 0).all()


def test_walk_forward_embargo_removes_nothing():
    """Every walk-forward candidate precedes the test block, so no embargo can reach one."""
    feature_time, label_end = two_symbol_index()
    without = purged_walk_forward(feature_time, label_end, n_folds=3, embargo_seconds=0)
    with_long_embargo = purged_walk_forward(feature_time, label_end, n_folds=3, embargo_seconds=100 * BAR)
    for plain, embargoed in zip(without, with_long_embargo):
        assert embargoed.embargoed.size == 0
        assert embargoed.train.tolist() == plain.train.tolist()


def test_purge_is_by_time_across_symbols():
    """A label of symbol B that overlaps the test block is purged even if symbol A has no row there."""
    # Symbol A: bars 0-9. Symbol B: only bars 0-4 with a long label (6 bars), e.g. a slower horizon.
    a_time = T0 + BAR * np.arange(10, dtype=np.int64)
    b_time = T0 + BAR * np.arange(5, dtype=np.int64)
    feature_time = np.concatenate([a_time, b_time])
    label_end = np.concatenate([a_time + BAR, b_time + 6 * BAR])
    (fold,) = purged_walk_forward(feature_time, label_end, n_folds=1, embargo_seconds=0)

    assert fold.test.tolist() == [5, 6, 7, 8, 9]  # A's bars 5-9
    # A's bar 4 ends at bar 5 (touches the test start); every B row ends at bar 6 or later.
    assert fold.purged.tolist() == [4, 10, 11, 12, 13, 14]
    assert fold.train.tolist() == [0, 1, 2, 3]
    assert_no_leak(fold, feature_time, label_end)


def test_uneven_blocks_follow_array_split_and_keep_a_time_in_one_block():
    # 7 distinct times, symbol B missing bar 3: blocks of 3, 2, 2 times (array_split gives the extra to the first).
    a_time = T0 + BAR * np.arange(7, dtype=np.int64)
    b_time = T0 + BAR * np.array([0, 1, 2, 4, 5, 6], dtype=np.int64)
    feature_time = np.concatenate([a_time, b_time])
    folds = purged_walk_forward(feature_time, feature_time, n_folds=2, embargo_seconds=0)

    assert [(fold.test_start, fold.test_end) for fold in folds] == [
        (T0 + 3 * BAR, T0 + 4 * BAR),
        (T0 + 5 * BAR, T0 + 6 * BAR),
    ]
    assert folds[0].test.tolist() == [3, 4, 10]  # A's bars 3-4, B's bar 4
    assert folds[1].test.tolist() == [5, 6, 11, 12]
    # Labels known at the feature time overlap nothing before the block: nothing purged.
    assert folds[0].train.tolist() == [0, 1, 2, 7, 8, 9]
    assert folds[1].train.tolist() == [0, 1, 2, 3, 4, 7, 8, 9, 10]
    assert all(fold.purged.size == 0 for fold in folds)


def test_row_order_does_not_matter():
    feature_time, label_end = two_symbol_index()
    permutation = np.random.default_rng(3).permutation(feature_time.size)
    sorted_folds = purged_walk_forward(feature_time, label_end, n_folds=3, embargo_seconds=0)
    shuffled_folds = purged_walk_forward(feature_time[permutation], label_end[permutation], 3, 0)
    for plain, shuffled in zip(sorted_folds, shuffled_folds):
        for name in ("train", "test", "purged", "embargoed"):
            assert sorted(permutation[getattr(shuffled, name)].tolist()) == getattr(plain, name).tolist()
        assert (shuffled.test_start, shuffled.test_end, shuffled.test_label_end) == (
            plain.test_start,
            plain.test_end,
            plain.test_label_end,
        )


def test_fold_indices_are_read_only():
    feature_time, label_end = two_symbol_index()
    fold = purged_walk_forward(feature_time, label_end, n_folds=3, embargo_seconds=0)[0]
    with pytest.raises(ValueError, match="read-only"):
        fold.train[0] = 5


# ---------------------------------------------------------------------------------------------
# Purged k-fold (train_after_test=True) and the embargo
# ---------------------------------------------------------------------------------------------


def test_train_after_test_purges_both_sides_and_embargoes_two_bars_after_the_labels():
    feature_time, label_end = two_symbol_index()
    folds = purged_walk_forward(feature_time, label_end, n_folds=3, embargo_seconds=2 * BAR, train_after_test=True)

    # Fold 1 tests bars 5-9, labels known by bar 12. Purged: bars 2-4 (labels reach bar 5 or later)
    # and bars 10-12 (features inside the test labels' span). Embargoed: bars 13-14, in (bar 12, bar 14].
    # Fold 2 tests bars 10-14, labels known by bar 17: purged 7-9 and 15-17, embargoed 18-19.
    # Fold 3 tests bars 15-19, labels known by bar 22: purged 12-14, nothing after the block to embargo.
    assert [fold.purged.tolist() for fold in folds] == [
        rows(2, 3, 4, 10, 11, 12),
        rows(7, 8, 9, 15, 16, 17),
        rows(12, 13, 14),
    ]
    assert [fold.embargoed.tolist() for fold in folds] == [[13, 14, 33, 34], [18, 19, 38, 39], []]
    assert [fold.train.tolist() for fold in folds] == [
        rows(0, 1, 15, 16, 17, 18, 19),
        bar_range(0, 6),
        bar_range(0, 11),
    ]
    for fold in folds:
        assert_no_leak(fold, feature_time, label_end)
        assert np.intersect1d(fold.purged, fold.embargoed).size == 0
        # train, test, purged and embargoed partition the rows.
        every_row = np.concatenate([fold.train, fold.test, fold.purged, fold.embargoed])
        assert sorted(every_row.tolist()) == list(range(feature_time.size))


def test_embargo_boundary_is_inclusive_at_label_end_plus_embargo():
    feature_time, label_end = two_symbol_index()
    # One second short of two bars: bar 14 (exactly 2 bars after the test labels end) stays in training.
    folds = purged_walk_forward(feature_time, label_end, n_folds=3, embargo_seconds=2 * BAR - 1, train_after_test=True)
    assert folds[0].embargoed.tolist() == rows(13)


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("feature_time", "label_end", "n_folds", "embargo_seconds", "message"),
    [
        ([0, 1, 2], [0, 1, 2], 0, 0, r"n_folds must be at least 1, got 0"),
        ([0, 1, 2], [0, 1, 2], 1, -1, r"embargo_seconds must be >= 0, got -1"),
        ([0, 1, 2], [0, 1], 1, 0, r"feature_time and label_end must have the same length, got 3 and 2"),
        (
            [0, 1, 2],
            [0, 0, 2],
            1,
            0,
            r"label_end must be >= feature_time; 1 of 3 rows end before their feature time \(first: row 1\)",
        ),
        ([0, 0, 1, 1], [0, 0, 1, 1], 2, 0, r"2 folds need at least 3 distinct feature times \(one block each\), got 2"),
        ([0.0, 1.5, 2.0], [0, 1, 2], 1, 0, r"feature_time must hold integer epoch seconds, got dtype float64"),
        ([[0, 1]], [[0, 1]], 1, 0, r"feature_time must be one-dimensional, got shape \(1, 2\)"),
    ],
)
def test_bad_arguments_raise(feature_time, label_end, n_folds, embargo_seconds, message):
    with pytest.raises(ValueError, match=message):
        purged_walk_forward(np.array(feature_time), np.array(label_end), n_folds, embargo_seconds)


def test_empty_training_set_names_the_fold():
    # 6 bars in 3 blocks of 2; labels 10 bars long reach past every block: fold 1's 2 candidates are purged.
    feature_time = T0 + BAR * np.arange(6, dtype=np.int64)
    with pytest.raises(ValueError, match=r"fold 1: the training set is empty after purging 2 and embargoing 0 of 2"):
        purged_walk_forward(feature_time, feature_time + 10 * BAR, n_folds=2, embargo_seconds=0)


def test_empty_training_set_by_embargo_names_the_fold():
    # Purged k-fold, 6 bars in blocks 0-1, 2-3, 4-5. Fold 1 tests bars 2-3 (labels known at once, so by
    # bar 3); bars 0-1 have 2-bar labels reaching bar 2: purged; bars 4-5 fall in the 2-bar embargo.
    feature_time = T0 + BAR * np.arange(6, dtype=np.int64)
    label_end = feature_time + BAR * np.array([2, 2, 0, 0, 0, 0])
    with pytest.raises(ValueError, match=r"fold 1: the training set is empty after purging 2 and embargoing 2 of 4"):
        purged_walk_forward(feature_time, label_end, n_folds=2, embargo_seconds=2 * BAR, train_after_test=True)
