"""Purged walk-forward splits: cross-validation that does not leak the future into training.

A row's label is computed from prices after its features (a forward return), so the row really
spans the interval [feature_time, label_end]. Two leaks follow (de Prado, *Advances in Financial
Machine Learning*, ch. 7):

- Purging: a training row whose interval overlaps the test block's shares price moves with the
  test labels; the model would be scored on outcomes it partly trained on. Such rows are dropped.
- Embargo: a training row that starts right after the test block's labels end is still serially
  correlated with them (volatility, momentum). When training also uses rows after the test block
  (purged k-fold), rows starting within `embargo_seconds` after the last test label are dropped too.

Rows are pooled across symbols, and purging is by time across all of them, not per symbol: crypto
pairs move together, so an ETH label that overlaps a BTC test label leaks that move as surely as
a BTC one does. The blocks are therefore cut on the distinct feature times, and every row of a time
(whatever its symbol) lands in the same block.

Pure numpy: no Dagster, no polars.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class Fold:
    """One split: row indices into the pooled arrays, read-only; the test block's span in epoch seconds.

    `eq=False`: numpy fields make field-wise equality ambiguous, so folds compare by identity.
    """

    number: int  # 1-based
    train: np.ndarray  # rows used for training (sorted int64)
    test: np.ndarray  # rows of the test block (sorted int64)
    purged: np.ndarray  # training candidates dropped: their label interval overlaps the test block's
    embargoed: np.ndarray  # training candidates dropped by the embargo after the test block (not already purged)
    test_start: int  # first feature_time in the test block (epoch s)
    test_end: int  # last feature_time in the test block (epoch s)
    test_label_end: int  # max label_end over the test rows (epoch s)


def purged_walk_forward(
    feature_time: np.ndarray,
    label_end: np.ndarray,
    n_folds: int,
    embargo_seconds: int,
    *,
    train_after_test: bool = False,
) -> list[Fold]:
    """Split pooled rows into `n_folds` test blocks in time order, purging and embargoing training rows.

    The sorted distinct feature times are cut into `n_folds + 1` contiguous blocks of as near equal
    numbers of times as possible (`np.array_split`; earlier blocks get the extra time). Fold k tests
    block k; block 0 is only ever training, so every fold has a past to learn from.

    Training candidates are the rows of the blocks before the test block (walk-forward, the default),
    or, with `train_after_test=True` (purged k-fold), every row outside the test block. A candidate is
    purged when its closed interval [feature_time, label_end] overlaps [test_start, test_label_end],
    and embargoed (if not purged) when its feature_time is in (test_label_end, test_label_end +
    embargo_seconds]. In walk-forward mode every candidate precedes the test block, so the embargo
    removes nothing there; it only matters with `train_after_test=True`.

    `feature_time` and `label_end` are integer epoch seconds, one per row, in any row order; `Fold`
    holds indices into them. Raises ValueError on bad arguments and when a fold's training set comes
    out empty (the label horizon is too long for the blocks).
    """
    feature_time = _epoch_seconds("feature_time", feature_time)
    label_end = _epoch_seconds("label_end", label_end)
    if n_folds < 1:
        raise ValueError(f"n_folds must be at least 1, got {n_folds}")
    if embargo_seconds < 0:
        raise ValueError(f"embargo_seconds must be >= 0, got {embargo_seconds}")
    if feature_time.shape != label_end.shape:
        raise ValueError(
            f"feature_time and label_end must have the same length, got {feature_time.size} and {label_end.size}"
        )
    early = np.flatnonzero(label_end < feature_time)
    if early.size:
        raise ValueError(
            f"label_end must be >= feature_time; {early.size} of {label_end.size} rows end before their "
            f"feature time (first: row {early[0]})"
        )
    distinct_times = np.unique(feature_time)
    n_blocks = n_folds + 1
    if distinct_times.size < n_blocks:
        raise ValueError(
            f"{n_folds} folds need at least {n_blocks} distinct feature times (one block each), "
            f"got {distinct_times.size}"
        )

    blocks = np.array_split(distinct_times, n_blocks)
    block_starts = np.array([block[0] for block in blocks], dtype=np.int64)
    block_of_row = np.searchsorted(block_starts, feature_time, side="right") - 1

    folds = []
    for number in range(1, n_blocks):
        in_test = block_of_row == number
        test_start = int(blocks[number][0])
        test_end = int(blocks[number][-1])
        test_label_end = int(label_end[in_test].max())

        candidate = ~in_test if train_after_test else block_of_row < number
        overlaps_test = (feature_time <= test_label_end) & (label_end >= test_start)
        purged = candidate & overlaps_test
        embargoed = (
            candidate
            & ~overlaps_test
            & (feature_time > test_label_end)
            & (feature_time <= test_label_end + embargo_seconds)
        )
        train = candidate & ~purged & ~embargoed
        if not train.any():
            raise ValueError(
                f"fold {number}: the training set is empty after purging {int(purged.sum())} and embargoing "
                f"{int(embargoed.sum())} of {int(candidate.sum())} candidate rows; "
                "use fewer folds, a shorter label horizon or a shorter embargo"
            )
        folds.append(
            Fold(
                number=number,
                train=_row_indices(train),
                test=_row_indices(in_test),
                purged=_row_indices(purged),
                embargoed=_row_indices(embargoed),
                test_start=test_start,
                test_end=test_end,
                test_label_end=test_label_end,
            )
        )
    return folds


def _epoch_seconds(name: str, values: np.ndarray) -> np.ndarray:
    """A 1-D int64 copy; floats are refused rather than silently truncated to whole seconds."""
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
    if array.size and array.dtype.kind not in "iu":
        raise ValueError(f"{name} must hold integer epoch seconds, got dtype {array.dtype}")
    return array.astype(np.int64)


def _row_indices(mask: np.ndarray) -> np.ndarray:
    """Sorted int64 row indices of a mask, read-only so a frozen Fold stays what it was built as."""
    indices = np.flatnonzero(mask).astype(np.int64)
    indices.flags.writeable = False
    return indices
