"""A plain-Python backtest written straight from the fill rules of docs/backtesting.md.

One combination at a time, one bar at a time, Python floats and lists: no numba, no numpy, no
vectorization. It is slow on purpose and exists to check `tracer_assets.research.engine` (and
the metric definitions of `tracer_assets.research.metrics`) against an independent reading of
the rules.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ReferenceTrade:
    entry_idx: int
    exit_idx: int
    entry_price: float
    exit_price: float
    size: float
    pnl: float
    return_: float
    exit_reason: str  # signal, stop, target, trailing, end_of_data


@dataclass
class _Position:
    entry_idx: int
    entry_price: float
    size: float
    committed: float
    peak: float  # entry price and the highs of the bars already completed since entry


def reference_backtest(
    open_: Sequence[float],
    high: Sequence[float],
    low: Sequence[float],
    close: Sequence[float],
    entries: Sequence[bool],
    exits: Sequence[bool],
    stop_loss: float | None = None,
    take_profit: float | None = None,
    trailing_stop: float | None = None,
    fee: float = 0.001,
    slippage_bps: float = 0.0,
    position_fraction: float = 1.0,
) -> tuple[list[ReferenceTrade], list[float]]:
    """Trades of one combination and its equity marked at every close (starting equity 1.0)."""
    slip = slippage_bps / 10_000.0
    n = len(close)
    cash = 1.0
    position: _Position | None = None
    trades: list[ReferenceTrade] = []
    equity: list[float] = []
    wants_entry = False  # decided at the previous close, while flat (rule 7)
    wants_exit = False  # decided at the previous close, while in a position (rule 7)

    def sell(i: int, raw_price: float, reason: str) -> None:
        nonlocal cash, position
        assert position is not None
        fill = raw_price * (1.0 - slip)  # rule 5: sells fill lower
        proceeds = position.size * fill * (1.0 - fee)  # rule 5: fee on the sale's notional
        cash += proceeds
        trades.append(
            ReferenceTrade(
                entry_idx=position.entry_idx,
                exit_idx=i,
                entry_price=position.entry_price,
                exit_price=fill,
                size=position.size,
                pnl=proceeds - position.committed,
                return_=proceeds / position.committed - 1.0,
                exit_reason=reason,
            )
        )
        position = None

    for i in range(n):
        # Rule 1: the previous close's signal acts at this open.
        exited_at_open = False
        if position is None and wants_entry:
            fill = open_[i] * (1.0 + slip)  # rule 5: buys fill higher
            committed = cash * position_fraction  # rule 7: a fraction of current equity (all cash when flat)
            size = committed / (fill * (1.0 + fee))  # the fee comes out of the committed amount
            cash -= committed
            position = _Position(i, fill, size, committed, peak=fill)
        elif position is not None and wants_exit:
            sell(i, open_[i], "signal")
            exited_at_open = True

        # Rules 2-4: the stop, target and trailing stop of an open position, from the entry bar on.
        if position is not None and not exited_at_open:
            candidates = []  # (level, reason) of the protective stops
            if stop_loss is not None:
                candidates.append((position.entry_price * (1.0 - stop_loss), "stop"))
            if trailing_stop is not None:
                candidates.append((position.peak * (1.0 - trailing_stop), "trailing"))
            # The tighter (higher) stop binds; on a tie the fixed stop is named.
            stop = max(candidates, key=lambda c: (c[0], c[1] == "stop")) if candidates else None
            target = position.entry_price * (1.0 + take_profit) if take_profit is not None else None
            if target is not None and open_[i] >= target:
                sell(i, open_[i], "target")  # opened beyond the target: the open is the first price
            elif stop is not None and open_[i] <= stop[0]:
                sell(i, open_[i], stop[1])  # opened beyond the stop
            elif stop is not None and low[i] <= stop[0]:
                sell(i, stop[0], stop[1])  # stop and target both inside: the stop first (rule 3)
            elif target is not None and high[i] >= target:
                sell(i, target, "target")
            else:
                # Only now may this bar's high raise the trailing peak, for the next bar.
                position.peak = max(position.peak, high[i])

        # Rule 6: nothing stays open after the last bar.
        if i == n - 1 and position is not None:
            sell(i, close[i], "end_of_data")

        # Rule 7: at the close, flat listens to entries, in a position to exits; nothing after the data.
        wants_entry = position is None and i < n - 1 and bool(entries[i])
        wants_exit = position is not None and i < n - 1 and bool(exits[i])

        equity.append(cash + (position.size * close[i] if position is not None else 0.0))
    return trades, equity


def reference_metrics(
    trades: list[ReferenceTrade],
    equity: list[float],
    bars_per_year: float,
    initial_capital: float = 10_000.0,
    full_trades: int = 30,
    drawdown_weight: float = 2.0,
) -> dict[str, float | int | None]:
    """The metric definitions of docs/backtesting.md, computed the long way (two-pass std)."""
    n_bars = len(equity)
    returns = [equity[i] / equity[i - 1] - 1.0 for i in range(1, n_bars)]
    count = len(returns)
    mean = sum(returns) / count if count else 0.0
    if count >= 2:
        std = math.sqrt(sum((r - mean) ** 2 for r in returns) / (count - 1))
    else:
        std = 0.0
    sharpe = mean / std * math.sqrt(bars_per_year) if std > 0 else 0.0
    downside = math.sqrt(sum(min(r, 0.0) ** 2 for r in returns) / count) if count else 0.0
    sortino = mean / downside * math.sqrt(bars_per_year) if downside > 0 else None
    peak, max_drawdown = 1.0, 0.0
    for value in equity:
        peak = max(peak, value)
        max_drawdown = max(max_drawdown, 1.0 - value / peak)
    wins = [t for t in trades if t.pnl > 0]
    gross_profit = sum(t.pnl for t in wins)
    gross_loss = -sum(t.pnl for t in trades if t.pnl < 0)
    held = sum(t.exit_idx - t.entry_idx + (0 if t.exit_reason == "signal" else 1) for t in trades)
    total_return = equity[-1] - 1.0
    return {
        "total_return": total_return,
        "pnl": total_return * initial_capital,
        "win_rate": len(wins) / len(trades) if trades else None,
        "trades": len(trades),
        "sharpe": sharpe,
        "sortino": sortino,
        "max_drawdown": max_drawdown,
        "profit_factor": gross_profit / gross_loss if gross_loss > 0 else None,
        "exposure": held / n_bars,
        "expectancy": sum(t.return_ for t in trades) / len(trades) if trades else None,
        "score": sharpe * min(1.0, len(trades) / full_trades) - drawdown_weight * max_drawdown,
    }
