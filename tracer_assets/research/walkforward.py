"""Walk-forward evaluation: choose a combination on a training window, judge it on the next one.

`rolling_windows` cuts a series into (in-sample, out-of-sample) pairs of bar ranges: each test
window starts where its training window ends, and successive test windows never overlap.
`walk_forward` simulates every combination on each training window, picks the best by a metric,
and simulates only that one on the test window. Each window is simulated on its own: it starts
flat, and a position still open at its end is closed at its last close (rules 1 and 6 of
docs/backtesting.md applied to the window). Signals may come from indicators computed on the
whole series, as those only look back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from tracer_assets.research.engine import FillRules, SimResult, simulate
from tracer_assets.research.metrics import (
    DEFAULT_INITIAL_CAPITAL,
    LOWER_IS_BETTER,
    METRIC_COLUMNS,
    bar_return_stats,
    metrics,
)

# An entry needs a signal bar and a later bar to fill on.
MIN_WINDOW_BARS = 2


@dataclass(frozen=True)
class Window:
    """Bar ranges (slices with step 1) of one walk-forward step."""

    in_sample: slice
    out_of_sample: slice


def _whole_number(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name}={value!r}: must be a whole number of bars")
    return int(value)


def rolling_windows(n_bars: int, train_bars: int, test_bars: int, step_bars: int | None = None) -> list[Window]:
    """Windows [s, s+train) in sample and [s+train, s+train+test) out of sample, s = 0, step, 2 step...

    step_bars defaults to test_bars (test windows tile the series end to end); it may be larger
    (gaps between test windows) but not smaller (test windows would overlap). Only whole windows
    are returned: bars after the last whole test window are left out.
    """
    n_bars = _whole_number("n_bars", n_bars)
    train_bars = _whole_number("train_bars", train_bars)
    test_bars = _whole_number("test_bars", test_bars)
    step_bars = test_bars if step_bars is None else _whole_number("step_bars", step_bars)
    if train_bars < MIN_WINDOW_BARS:
        raise ValueError(f"train_bars={train_bars}: must be at least {MIN_WINDOW_BARS} bars")
    if test_bars < MIN_WINDOW_BARS:
        raise ValueError(f"test_bars={test_bars}: must be at least {MIN_WINDOW_BARS} bars")
    if step_bars < test_bars:
        raise ValueError(
            f"step_bars={step_bars}: must be at least test_bars={test_bars}, or successive test windows overlap"
        )
    if train_bars + test_bars > n_bars:
        raise ValueError(
            f"train_bars={train_bars} + test_bars={test_bars} = {train_bars + test_bars} exceeds n_bars={n_bars}: "
            "not even one window fits"
        )
    windows = []
    start = 0
    while start + train_bars + test_bars <= n_bars:
        split = start + train_bars
        windows.append(Window(slice(start, split), slice(split, split + test_bars)))
        start += step_bars
    return windows


def check_windows(windows: Sequence[Window], n_bars: int) -> None:
    """Refuse windows that leak: a test window overlapping its own training data or an earlier
    test window, ranges outside the series, or fewer than MIN_WINDOW_BARS bars."""
    if not windows:
        raise ValueError("windows: empty; make some with rolling_windows(...)")
    previous_test_stop = 0
    for k, window in enumerate(windows):
        for name, part in (("in_sample", window.in_sample), ("out_of_sample", window.out_of_sample)):
            if not isinstance(part, slice) or part.step not in (None, 1):
                raise ValueError(f"windows[{k}].{name}={part!r}: must be a slice with step 1")
            start, stop = part.start or 0, part.stop
            if stop is None or not 0 <= start < stop <= n_bars or stop - start < MIN_WINDOW_BARS:
                raise ValueError(
                    f"windows[{k}].{name}={part!r}: must lie within [0, {n_bars}) "
                    f"and hold at least {MIN_WINDOW_BARS} bars"
                )
        is_start, is_stop = window.in_sample.start or 0, window.in_sample.stop
        oos_start, oos_stop = window.out_of_sample.start or 0, window.out_of_sample.stop
        if oos_start < is_stop and is_start < oos_stop:
            raise ValueError(
                f"windows[{k}]: out_of_sample {window.out_of_sample} overlaps its in_sample {window.in_sample}"
            )
        if oos_start < is_stop:
            raise ValueError(
                f"windows[{k}]: out_of_sample {window.out_of_sample} precedes its in_sample {window.in_sample}"
            )
        if oos_start < previous_test_stop:
            raise ValueError(f"windows[{k}]: out_of_sample {window.out_of_sample} overlaps the previous test window")
        previous_test_stop = oos_stop


@dataclass(frozen=True)
class WalkForwardResult:
    """Per window: the chosen combination's in-sample and out-of-sample metrics; and the
    out-of-sample windows chained into one account (`aggregate`, `out_of_sample_trades`)."""

    windows: list[Window]
    in_sample: pl.DataFrame  # window, is_start, is_stop, oos_start, oos_stop, combo, METRIC_COLUMNS
    out_of_sample: pl.DataFrame  # same columns, measured on the test window
    aggregate: pl.DataFrame  # one row: METRIC_COLUMNS of the chained test windows
    out_of_sample_trades: SimResult  # the chained test trades, bar indices of the whole series


def _pick(table: pl.DataFrame, select_by: str) -> int:
    """Best combination by `select_by` (ties: the lowest combo number; nulls never chosen unless all are)."""
    descending = select_by not in LOWER_IS_BETTER
    ranked = table.sort([select_by, "combo"], descending=[descending, False], nulls_last=True)
    return int(ranked["combo"][0])


def _window_row(k: int, window: Window, combo: int, table: pl.DataFrame, row: int) -> pl.DataFrame:
    """One row: the window's bounds, the chosen combination, and row `row` of a metrics table."""
    bounds = pl.DataFrame(
        {
            "window": [k],
            "is_start": [window.in_sample.start or 0],
            "is_stop": [window.in_sample.stop],
            "oos_start": [window.out_of_sample.start or 0],
            "oos_stop": [window.out_of_sample.stop],
            "combo": [combo],
        },
        schema_overrides={"combo": pl.Int64},
    )
    return bounds.hstack(table.slice(row, 1).drop("combo"))


def _chain(parts: list[tuple[int, SimResult]], n_oos_bars: int) -> SimResult:
    """The test windows as one account: window k starts with the equity window k-1 ended with;
    trade indices shifted to the whole series, amounts scaled to that starting equity."""
    curves, fields = (
        [],
        {
            name: []
            for name in ("entry_idx", "exit_idx", "entry_price", "exit_price", "size", "pnl", "return_", "exit_reason")
        },
    )
    start_equity = 1.0
    for offset, part in parts:
        assert part.equity is not None
        curves.append(start_equity * part.equity[:, 0])
        fields["entry_idx"].append(part.entry_idx + offset)
        fields["exit_idx"].append(part.exit_idx + offset)
        fields["entry_price"].append(part.entry_price)
        fields["exit_price"].append(part.exit_price)
        fields["size"].append(part.size * start_equity)
        fields["pnl"].append(part.pnl * start_equity)
        fields["return_"].append(part.return_)
        fields["exit_reason"].append(part.exit_reason)
        start_equity *= float(part.final_equity[0])
    curve = np.concatenate(curves)
    r_sum, r_sumsq, d_sumsq, max_dd = bar_return_stats(curve)
    joined = {name: np.concatenate(values) for name, values in fields.items()}
    return SimResult(
        combo=np.zeros(joined["entry_idx"].shape[0], dtype=np.int64),
        **joined,
        final_equity=np.array([start_equity]),
        bar_return_sum=r_sum,
        bar_return_sumsq=r_sumsq,
        bar_downside_sumsq=d_sumsq,
        max_drawdown=max_dd,
        n_bars=n_oos_bars,
        equity=curve[:, None],
    )


def walk_forward(
    open: object,  # noqa: A002 - the candle field's name
    high: object,
    low: object,
    close: object,
    entries: object,
    exits: object,
    stop_loss: object,
    take_profit: object,
    trailing_stop: object,
    rules: FillRules,
    windows: Sequence[Window],
    timeframe: str,
    select_by: str = "score",
    initial_capital: float = DEFAULT_INITIAL_CAPITAL,
) -> WalkForwardResult:
    """For each window: simulate every combination in sample, choose the best by `select_by`
    (higher is better, except max_drawdown), simulate that one out of sample. Arguments as for
    `engine.simulate`, over the whole series; the windows cut it."""
    if select_by not in METRIC_COLUMNS:
        raise ValueError(f"select_by={select_by!r}: must be one of {', '.join(METRIC_COLUMNS)}")
    prices = [np.asarray(a, dtype=np.float64) for a in (open, high, low, close)]
    n_bars = prices[0].shape[0]
    check_windows(windows, n_bars)
    entries_ = np.asarray(entries)
    exits_ = np.asarray(exits)
    if entries_.ndim == 1:
        entries_, exits_ = entries_[:, None], exits_[:, None]
    if entries_.ndim != 2 or entries_.shape[0] != n_bars:
        raise ValueError(f"entries: must have shape (n_bars={n_bars}, n_combos), got {entries_.shape}")
    n_combos = entries_.shape[1]
    levels = []
    for values in (stop_loss, take_profit, trailing_stop):
        array = np.full(n_combos, np.nan) if values is None else np.asarray(values, dtype=np.float64)
        levels.append(np.full(n_combos, float(array)) if array.ndim == 0 else array)
    if any(level.shape != (n_combos,) for level in levels):
        raise ValueError(f"stop_loss/take_profit/trailing_stop: must have shape (n_combos={n_combos},)")

    in_rows, out_rows, parts = [], [], []
    for k, window in enumerate(windows):
        train, test = window.in_sample, window.out_of_sample
        trained = simulate(*(p[train] for p in prices), entries_[train], exits_[train], *levels, rules=rules)
        table = metrics(trained, timeframe, initial_capital)
        best = _pick(table, select_by)
        tested = simulate(
            *(p[test] for p in prices),
            entries_[test, best],
            exits_[test, best],
            *(level[best] for level in levels),
            rules=rules,
            record_equity=True,
        )
        in_rows.append(_window_row(k, window, best, table, best))
        out_rows.append(_window_row(k, window, best, metrics(tested, timeframe, initial_capital), 0))
        parts.append((test.start or 0, tested))

    chained = _chain(parts, sum(w.out_of_sample.stop - (w.out_of_sample.start or 0) for w in windows))
    aggregate = metrics(chained, timeframe, initial_capital).drop("combo")
    return WalkForwardResult(
        windows=list(windows),
        in_sample=pl.concat(in_rows),
        out_of_sample=pl.concat(out_rows),
        aggregate=aggregate,
        out_of_sample_trades=chained,
    )
