"""Backtest engine: long-only spot fills for many parameter combinations over one candle series.

`simulate(open, high, low, close, entries, exits, stop_loss, take_profit, trailing_stop, rules)`
runs every combination (a column of `entries`/`exits` plus its stop, target and trailing stop)
through one numba kernel and returns the trades as a struct of arrays (`SimResult`). The fill
rules are written out, numbered, in docs/backtesting.md; the short version:

1. A signal on bar i's close fills at bar i+1's open; a signal on the last bar does nothing.
2. A stop/target inside a bar fills at its level; a bar that opens beyond it fills at the open.
3. Stop and target both inside one bar: the stop is assumed first.
4. Stops, targets and the trailing stop are live from the entry bar; the trailing peak is the
   entry price and the highs of the bars strictly before the bar checked.
5. Fee (fraction of notional) on every fill; slippage in bps, adverse, on every fill.
6. A position still open when the data ends is sold at the last close (end_of_data).
7. Size = position_fraction x current equity (fee included); no pyramiding. While flat only
   entry signals matter, while in a position only exits and stops do.
8. Long only.

Amounts are in units of the starting equity (1.0): `pnl` and `final_equity` are fractions of
the initial capital, `size` is base units bought per 1 quote of initial capital. Multiply by
the capital for quote amounts (`metrics` does). This is float research arithmetic; order
amounts for real trading are Decimal and live elsewhere.

The kernel runs one combination at a time (they are independent) with its state in locals, bar
by bar over a contiguous row of its signals: Fortran-ordered signals are read in place, C-ordered
ones are first copied 64 combinations at a time. It never stores an equity matrix unless asked
(`record_equity=True`); it accumulates what the metrics need (sum, sum of squares and downside
sum of squares of the per-bar returns, maximum drawdown) as it goes. Single-threaded by design:
one core does 85-120 M bar-combinations per second (tracer_assets_tests/benchmarks/bench_sweep.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum

import numpy as np
import polars as pl
from numba import njit


class ExitReason(IntEnum):
    """Why a trade closed (the `exit_reason` codes of `SimResult`)."""

    SIGNAL = 0
    STOP = 1
    TARGET = 2
    TRAILING = 3
    END_OF_DATA = 4


EXIT_REASON_NAMES: tuple[str, ...] = tuple(reason.name.lower() for reason in ExitReason)


def _plain_number(name: str, value: object) -> float:
    """A real number (not a bool, not NaN/inf), or a ValueError naming the field."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name}={value!r}: must be a number")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name}={value!r}: must be finite")
    return number


@dataclass(frozen=True)
class FillRules:
    """How orders fill. Validated on construction; see docs/backtesting.md for the arithmetic."""

    fee: float = 0.001  # taker fee on every fill, fraction of notional
    slippage_bps: float = 0.0  # adverse: buys fill higher, sells lower, by bps of price
    position_fraction: float = 1.0  # fraction of current equity committed per entry (fee included)
    pyramiding: bool = False  # adding to an open position is not supported

    def __post_init__(self) -> None:
        fee = _plain_number("fee", self.fee)
        if not 0.0 <= fee < 1.0:
            raise ValueError(f"fee={self.fee!r}: must lie in [0, 1) (a fraction of notional, 0.001 = 0.1%)")
        slippage = _plain_number("slippage_bps", self.slippage_bps)
        if not 0.0 <= slippage < 10_000.0:
            raise ValueError(f"slippage_bps={self.slippage_bps!r}: must lie in [0, 10000) basis points")
        fraction = _plain_number("position_fraction", self.position_fraction)
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"position_fraction={self.position_fraction!r}: must lie in (0, 1] (spot: no leverage)")
        if self.pyramiding is not False:
            raise ValueError(
                f"pyramiding={self.pyramiding!r}: only pyramiding=False is supported; an entry "
                "signal while in a position is ignored"
            )

    @property
    def slippage(self) -> float:
        """Slippage as a fraction of price (bps / 10_000)."""
        return self.slippage_bps / 10_000.0


@dataclass(frozen=True)
class SimResult:
    """Trades of every combination (struct of arrays, ordered by combo then time) and per-combo totals."""

    # one entry per trade
    combo: np.ndarray  # int64, column of entries/exits the trade belongs to
    entry_idx: np.ndarray  # int64, bar whose open the entry filled at
    exit_idx: np.ndarray  # int64, bar whose open (signal) or range/close (others) the exit filled in
    entry_price: np.ndarray  # float64, fill price including slippage
    exit_price: np.ndarray  # float64, fill price including slippage
    size: np.ndarray  # float64, base units per 1 quote of initial capital
    pnl: np.ndarray  # float64, after both fees, fraction of initial capital
    return_: np.ndarray  # float64, pnl / quote committed at entry (entry fee included)
    exit_reason: np.ndarray  # int8, ExitReason codes
    # one entry per combination
    final_equity: np.ndarray  # float64, starting equity 1.0
    bar_return_sum: np.ndarray  # float64, sum of close-to-close equity returns, bars 1..n-1
    bar_return_sumsq: np.ndarray  # float64, sum of their squares
    bar_downside_sumsq: np.ndarray  # float64, sum of squares of the negative ones
    max_drawdown: np.ndarray  # float64, largest fall of close-marked equity from its peak, fraction
    n_bars: int
    equity: np.ndarray | None = None  # float64 (n_bars, n_combos) if record_equity

    @property
    def n_combos(self) -> int:
        return int(self.final_equity.shape[0])

    @property
    def n_trades(self) -> int:
        return int(self.combo.shape[0])

    @property
    def n_returns(self) -> int:
        """How many per-bar returns the bar statistics cover (bars 1..n-1)."""
        return max(self.n_bars - 1, 0)

    def trades_frame(self) -> pl.DataFrame:
        """The trades as a polars frame, exit reasons by name."""
        names = np.array(EXIT_REASON_NAMES)
        return pl.DataFrame(
            {
                "combo": self.combo,
                "entry_idx": self.entry_idx,
                "exit_idx": self.exit_idx,
                "entry_price": self.entry_price,
                "exit_price": self.exit_price,
                "size": self.size,
                "pnl": self.pnl,
                "return": self.return_,
                "exit_reason": names[self.exit_reason.astype(np.int64)] if self.n_trades else np.array([], dtype=str),
            }
        )

    def combo_trades(self, combo: int) -> slice:
        """The slice of the trade arrays belonging to one combination (trades are grouped by combo)."""
        start = int(np.searchsorted(self.combo, combo, side="left"))
        stop = int(np.searchsorted(self.combo, combo, side="right"))
        return slice(start, stop)


# --- input checks -------------------------------------------------------------------------------


def _price_array(name: str, values: object) -> np.ndarray:
    array = np.ascontiguousarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name}: must be one-dimensional (n_bars,), got shape {array.shape}")
    bad = np.flatnonzero(~np.isfinite(array) | (array <= 0.0))
    if bad.size:
        raise ValueError(f"{name}[{bad[0]}]={float(array[bad[0]])!r}: prices must be finite and positive")
    return array


def _check_candles(open_: np.ndarray, high: np.ndarray, low: np.ndarray, close: np.ndarray) -> None:
    n = open_.shape[0]
    for name, array in (("high", high), ("low", low), ("close", close)):
        if array.shape[0] != n:
            raise ValueError(f"{name}: has {array.shape[0]} bars but open has {n}")
    if n == 0:
        raise ValueError("open: no bars to simulate")
    checks = (
        (high < low, "high < low"),
        ((open_ < low) | (open_ > high), "open outside [low, high]"),
        ((close < low) | (close > high), "close outside [low, high]"),
    )
    for mask, rule in checks:
        bad = np.flatnonzero(mask)
        if bad.size:
            i = int(bad[0])
            raise ValueError(
                f"candle {i}: {rule} (open={float(open_[i])!r}, high={float(high[i])!r}, "
                f"low={float(low[i])!r}, close={float(close[i])!r})"
            )


def _signal_matrix(name: str, values: object, n_bars: int) -> np.ndarray:
    """A boolean (n_bars, n_combos) matrix; a (n_bars,) vector is one combination. Not copied."""
    array = np.asarray(values)
    if array.dtype != np.bool_:
        raise ValueError(f"{name}: must be a boolean array, got dtype {array.dtype}")
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2 or array.shape[0] != n_bars:
        raise ValueError(f"{name}: must have shape (n_bars={n_bars}, n_combos), got {np.shape(values)}")
    return array


def _kernel_layout(entries: np.ndarray, exits: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """C-contiguous signal matrices for the kernel, and whether they are combo-major.

    Fortran-ordered (n_bars, n_combos) input (e.g. built as (n_combos, n_bars) and transposed)
    already holds each combination contiguously: its transpose is passed without a copy.
    Anything else is made C-contiguous (bar-major) and regrouped by the kernel in blocks.
    """
    if entries.flags.f_contiguous and exits.flags.f_contiguous and entries.shape[1] > 1:
        return entries.T, exits.T, True
    return np.ascontiguousarray(entries), np.ascontiguousarray(exits), False


def _level_array(name: str, values: object, n_combos: int, upper: float | None) -> np.ndarray:
    """Per-combo fractions (NaN = none); a scalar or None applies to every combination."""
    if values is None:
        return np.full(n_combos, np.nan)
    array = np.asarray(values, dtype=np.float64)
    if array.ndim == 0:
        array = np.full(n_combos, float(array))
    if array.shape != (n_combos,):
        raise ValueError(f"{name}: must have shape (n_combos={n_combos},), got {array.shape}")
    set_ = ~np.isnan(array)
    bad = set_ & ~((array > 0.0) & (array < (upper if upper is not None else np.inf)))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        limit = f"(0, {upper:g})" if upper is not None else "(0, inf)"
        raise ValueError(
            f"{name}[{i}]={float(array[i])!r}: must lie in {limit} as a fraction of the entry price, or NaN for none"
        )
    return np.ascontiguousarray(array)


# --- the kernel ---------------------------------------------------------------------------------


@njit(cache=True)
def _simulate_combo(
    c,
    open_,
    high,
    low,
    close,
    entry_signal,
    exit_signal,
    stop_loss,
    take_profit,
    trailing_stop,
    fee,
    slippage,
    fraction,
    record_equity,
    equity,
    trade_ints,
    trade_floats,
    first_slot,
):
    """One combination over all bars; writes its trades from row `first_slot` of the buffers.

    entry_signal/exit_signal are this combination's columns, contiguous (n_bars,).

    Returns (slots used, or -1 when the buffers are too small; final equity; sum, sum of squares
    and downside sum of squares of the per-bar returns; maximum drawdown). The buffers are
    never reassigned here, which keeps numba's loop free of reference counting.
    """
    n_bars = open_.shape[0]
    capacity = trade_ints.shape[0]
    last = n_bars - 1
    buy_factor = 1.0 + slippage
    sell_factor = 1.0 - slippage
    buy_cost = 1.0 + fee  # quote paid per quote of notional bought
    sell_keep = 1.0 - fee  # quote kept per quote of notional sold
    has_stop = not np.isnan(stop_loss)
    has_target = not np.isnan(take_profit)
    has_trailing = not np.isnan(trailing_stop)
    trailing_keep = 1.0 - trailing_stop if has_trailing else 0.0

    in_position = False
    pending_entry = False
    pending_exit = False
    cash = 1.0
    size = 0.0
    committed = 0.0  # quote spent on the entry, fee included
    entry_price = 0.0
    entry_idx = 0
    stop_price = -np.inf
    target_price = np.inf
    peak = 0.0  # the entry price and the highs of the bars before the one being checked

    previous_equity = 1.0
    peak_equity = 1.0
    worst_drawdown = 0.0
    r_sum = 0.0
    r_sumsq = 0.0
    d_sumsq = 0.0
    slot = first_slot

    for i in range(n_bars):
        exit_fill = 0.0
        exit_reason = -1
        # Rule 1: act at this open on the signal of the previous close.
        if pending_entry:
            pending_entry = False
            entry_price = open_[i] * buy_factor
            committed = cash * fraction
            size = committed / (entry_price * buy_cost)
            cash -= committed
            entry_idx = i
            in_position = True
            stop_price = entry_price * (1.0 - stop_loss) if has_stop else -np.inf
            target_price = entry_price * (1.0 + take_profit) if has_target else np.inf
            peak = entry_price
        elif pending_exit:
            pending_exit = False
            exit_fill = open_[i] * sell_factor
            exit_reason = 0

        # Rules 2-4 and 6: stop, target and trailing stop from the entry bar on; end of data.
        if in_position and exit_reason < 0:
            level = stop_price
            level_reason = 1
            if has_trailing:
                trailing_level = peak * trailing_keep
                if trailing_level > level:
                    level = trailing_level
                    level_reason = 3
            bar_open = open_[i]
            if bar_open >= target_price:  # gapped through the target: the open comes first
                exit_fill = bar_open * sell_factor
                exit_reason = 2
            elif bar_open <= level:  # gapped through the stop
                exit_fill = bar_open * sell_factor
                exit_reason = level_reason
            elif low[i] <= level:  # stop inside the bar: assumed to come before any target
                exit_fill = level * sell_factor
                exit_reason = level_reason
            elif high[i] >= target_price:
                exit_fill = target_price * sell_factor
                exit_reason = 2
            elif i == last:  # nothing stays open past the data
                exit_fill = close[i] * sell_factor
                exit_reason = 4
            elif high[i] > peak:
                peak = high[i]

        if exit_reason >= 0:
            if slot == capacity:
                return -1, 0.0, 0.0, 0.0, 0.0, 0.0
            proceeds = size * exit_fill * sell_keep
            cash += proceeds
            trade_ints[slot, 0] = c
            trade_ints[slot, 1] = entry_idx
            trade_ints[slot, 2] = i
            trade_ints[slot, 3] = exit_reason
            trade_floats[slot, 0] = entry_price
            trade_floats[slot, 1] = exit_fill
            trade_floats[slot, 2] = size
            trade_floats[slot, 3] = proceeds - committed
            trade_floats[slot, 4] = proceeds / committed - 1.0
            slot += 1
            in_position = False
            size = 0.0

        # Rule 7: at the close a flat book listens to entries, an open one to exits.
        if i < last:
            if in_position:
                pending_exit = exit_signal[i]
            else:
                pending_entry = entry_signal[i]

        equity_now = cash + size * close[i] if in_position else cash
        if equity_now != previous_equity:
            bar_return = equity_now / previous_equity - 1.0
            r_sum += bar_return
            r_sumsq += bar_return * bar_return
            if bar_return < 0.0:
                d_sumsq += bar_return * bar_return
            if equity_now > peak_equity:
                peak_equity = equity_now
            elif equity_now < peak_equity * (1.0 - worst_drawdown):  # a deeper fall: divide only then
                worst_drawdown = 1.0 - equity_now / peak_equity
            previous_equity = equity_now
        if record_equity:
            equity[i, c] = equity_now

    return slot - first_slot, previous_equity, r_sum, r_sumsq, d_sumsq, worst_drawdown


# Combinations copied at a time into contiguous rows when the signals are bar-major: enough to
# fill whole cache lines of a C-ordered (n_bars, n_combos) matrix, small enough to stay in cache.
_BLOCK = 64


@njit(cache=True)
def _simulate_kernel(
    open_,
    high,
    low,
    close,
    entries,
    exits,
    combo_major,
    stop_loss,
    take_profit,
    trailing_stop,
    fee,
    slippage,
    fraction,
    record_equity,
    equity,
):
    """Every combination, one after the other (they are independent); trades come out grouped
    by combination, each in time order.

    `entries`/`exits` are C-contiguous, either (n_combos, n_bars) when `combo_major` (each
    combination's signals already one contiguous row, read in place) or (n_bars, n_combos), in
    which case a block of combinations at a time is copied into contiguous rows, so the bar loop
    always reads sequentially. The trade buffers double when a combination overflows them,
    and that combination is run again.
    """
    n_bars = open_.shape[0]
    n_combos = entries.shape[0] if combo_major else entries.shape[1]
    final_equity = np.ones(n_combos)
    return_sum = np.zeros(n_combos)
    return_sumsq = np.zeros(n_combos)
    downside_sumsq = np.zeros(n_combos)
    max_drawdown = np.zeros(n_combos)
    capacity = max(1024, 16 * n_combos)
    trade_ints = np.empty((capacity, 4), dtype=np.int64)  # combo, entry_idx, exit_idx, reason
    trade_floats = np.empty((capacity, 5))  # entry_price, exit_price, size, pnl, return
    n_trades = 0
    block = 1 if combo_major else _BLOCK
    block_entries = np.empty((block, n_bars), dtype=np.bool_)
    block_exits = np.empty((block, n_bars), dtype=np.bool_)
    for block_start in range(0, n_combos, block):
        block_size = min(block, n_combos - block_start)
        if not combo_major:
            for i in range(n_bars):
                for j in range(block_size):
                    block_entries[j, i] = entries[i, block_start + j]
                    block_exits[j, i] = exits[i, block_start + j]
        j = 0
        while j < block_size:
            c = block_start + j
            entry_signal = entries[c] if combo_major else block_entries[j]
            exit_signal = exits[c] if combo_major else block_exits[j]
            used, final, r_sum, r_sumsq, d_sumsq, worst = _simulate_combo(
                c,
                open_,
                high,
                low,
                close,
                entry_signal,
                exit_signal,
                stop_loss[c],
                take_profit[c],
                trailing_stop[c],
                fee,
                slippage,
                fraction,
                record_equity,
                equity,
                trade_ints,
                trade_floats,
                n_trades,
            )
            if used < 0:
                bigger_ints = np.empty((trade_ints.shape[0] * 2, 4), dtype=np.int64)
                bigger_ints[:n_trades] = trade_ints[:n_trades]
                bigger_floats = np.empty((trade_floats.shape[0] * 2, 5))
                bigger_floats[:n_trades] = trade_floats[:n_trades]
                trade_ints = bigger_ints
                trade_floats = bigger_floats
                continue
            n_trades += used
            final_equity[c] = final
            return_sum[c] = r_sum
            return_sumsq[c] = r_sumsq
            downside_sumsq[c] = d_sumsq
            max_drawdown[c] = worst
            j += 1
    return (
        trade_ints[:n_trades],
        trade_floats[:n_trades],
        final_equity,
        return_sum,
        return_sumsq,
        downside_sumsq,
        max_drawdown,
    )


def simulate(
    open: object,  # noqa: A002 - the candle field's name
    high: object,
    low: object,
    close: object,
    entries: object,
    exits: object,
    stop_loss: object = None,
    take_profit: object = None,
    trailing_stop: object = None,
    rules: FillRules | None = None,
    record_equity: bool = False,
) -> SimResult:
    """Simulate every combination (column of entries/exits) over one candle series.

    open/high/low/close: float64 (n_bars,). entries/exits: bool (n_bars, n_combos) (or (n_bars,)
    for one combination); entries[i] means the rule is true at the close of bar i.
    stop_loss/take_profit/trailing_stop: (n_combos,) fractions of the entry price, NaN = none
    (a scalar or None applies to every combination). Equity starts at 1.0.
    """
    rules = FillRules() if rules is None else rules
    if not isinstance(rules, FillRules):
        raise ValueError(f"rules={rules!r}: must be a FillRules")
    open_ = _price_array("open", open)
    high_ = _price_array("high", high)
    low_ = _price_array("low", low)
    close_ = _price_array("close", close)
    _check_candles(open_, high_, low_, close_)
    n_bars = open_.shape[0]
    entries_ = _signal_matrix("entries", entries, n_bars)
    exits_ = _signal_matrix("exits", exits, n_bars)
    if exits_.shape != entries_.shape:
        raise ValueError(f"exits: shape {exits_.shape} differs from entries' {entries_.shape}")
    n_combos = entries_.shape[1]
    if n_combos == 0:
        raise ValueError("entries: no combinations (n_combos = 0)")
    stops = _level_array("stop_loss", stop_loss, n_combos, upper=1.0)
    targets = _level_array("take_profit", take_profit, n_combos, upper=None)
    trailing = _level_array("trailing_stop", trailing_stop, n_combos, upper=1.0)
    equity = np.empty((n_bars, n_combos) if record_equity else (0, 0))
    kernel_entries, kernel_exits, combo_major = _kernel_layout(entries_, exits_)
    ints, floats, final, r_sum, r_sumsq, d_sumsq, max_dd = _simulate_kernel(
        open_,
        high_,
        low_,
        close_,
        kernel_entries,
        kernel_exits,
        combo_major,
        stops,
        targets,
        trailing,
        float(rules.fee),
        rules.slippage,
        float(rules.position_fraction),
        bool(record_equity),
        equity,
    )
    return SimResult(
        combo=ints[:, 0].copy(),
        entry_idx=ints[:, 1].copy(),
        exit_idx=ints[:, 2].copy(),
        entry_price=floats[:, 0].copy(),
        exit_price=floats[:, 1].copy(),
        size=floats[:, 2].copy(),
        pnl=floats[:, 3].copy(),
        return_=floats[:, 4].copy(),
        exit_reason=ints[:, 3].astype(np.int8),
        final_equity=final,
        bar_return_sum=r_sum,
        bar_return_sumsq=r_sumsq,
        bar_downside_sumsq=d_sumsq,
        max_drawdown=max_dd,
        n_bars=n_bars,
        equity=equity if record_equity else None,
    )
