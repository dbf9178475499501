"""Per-combination backtest metrics from a `SimResult`, one row per combination.

Definitions (also in docs/backtesting.md). Equity starts at 1.0; r_i is the close-to-close
return of marked-to-market equity on bar i (i = 1..n-1, N = n-1 returns; a trade's exit counts
on its exit bar), B = bars per year of the timeframe over 365 days (5m: 105,120).

total_return   final_equity - 1.
pnl            initial_capital x total_return (quote currency; default capital 10,000).
trades         number of closed trades (every position is closed by the end).
win_rate       trades with pnl > 0 / trades; null without trades.
expectancy     mean trade return (after fees); null without trades.
profit_factor  sum of winning pnl / -sum of losing pnl; null when there is no losing trade
               (it would be infinite, or 0/0 without trades).
sharpe         mean(r) / std(r, ddof=1) x sqrt(B); 0.0 when std is 0 (e.g. no trade) or N < 2.
sortino        mean(r) / sqrt(sum(min(r, 0)^2) / N) x sqrt(B); null when no return is negative.
max_drawdown   largest fall of the close-marked equity from its running peak, a positive
               fraction (0.25 = 25%); intrabar lows are not marked.
exposure       bars on which a position was held / n_bars: entry bar to exit bar, both included,
               except that a signal exit (at the exit bar's open) does not count its exit bar.
score          sharpe x min(1, trades / SCORE_FULL_TRADES) - SCORE_DRAWDOWN_WEIGHT x max_drawdown.
               The ranking figure: risk-adjusted return, shrunk toward 0 when there are too few
               trades to trust it (a combination that never trades scores 0), minus a penalty for
               the deepest loss an investor would have sat through.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from tracer_assets.market.timeframes import timeframe_seconds
from tracer_assets.research.engine import ExitReason, SimResult

YEAR_SECONDS = 365 * 86_400
SCORE_FULL_TRADES = 30  # trades at which the Sharpe ratio counts in full in the score
SCORE_DRAWDOWN_WEIGHT = 2.0  # score points lost per unit (100%) of maximum drawdown
DEFAULT_INITIAL_CAPITAL = 10_000.0

METRIC_COLUMNS: tuple[str, ...] = (
    "total_return",
    "pnl",
    "win_rate",
    "trades",
    "sharpe",
    "sortino",
    "max_drawdown",
    "profit_factor",
    "exposure",
    "expectancy",
    "score",
)
# Metrics where a smaller value is the better one (for selecting by them).
LOWER_IS_BETTER = frozenset({"max_drawdown"})


def bars_per_year(timeframe: str) -> float:
    """Bars of `timeframe` in 365 days (5m -> 105,120; 1h -> 8,760)."""
    return YEAR_SECONDS / timeframe_seconds(timeframe)


def bar_return_stats(equity: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(sum, sum of squares, downside sum of squares of the bar returns, max drawdown) per column
    of an equity curve (n_bars,) or (n_bars, n_combos) starting from 1.0 before bar 0: what the
    engine accumulates inside its kernel, for curves built outside it (e.g. chained windows)."""
    curve = np.asarray(equity, dtype=np.float64)
    if curve.ndim == 1:
        curve = curve[:, None]
    returns = curve[1:] / curve[:-1] - 1.0
    downside = np.minimum(returns, 0.0)
    running_peak = np.maximum.accumulate(np.vstack([np.ones((1, curve.shape[1])), curve]), axis=0)[1:]
    drawdown = (1.0 - curve / running_peak).max(axis=0, initial=0.0)
    return returns.sum(axis=0), (returns**2).sum(axis=0), (downside**2).sum(axis=0), drawdown


def metrics(result: SimResult, timeframe: str, initial_capital: float = DEFAULT_INITIAL_CAPITAL) -> pl.DataFrame:
    """One row per combination: `combo` and the METRIC_COLUMNS defined in this module's docstring."""
    if (
        isinstance(initial_capital, bool)
        or not isinstance(initial_capital, (int, float))
        or not (math.isfinite(initial_capital) and initial_capital > 0)
    ):
        raise ValueError(f"initial_capital={initial_capital!r}: must be a positive finite number")
    annual = math.sqrt(bars_per_year(timeframe))
    m = result.n_combos
    combo = result.combo.astype(np.int64)

    trades = np.bincount(combo, minlength=m).astype(np.int64)
    wins = np.bincount(combo, weights=(result.pnl > 0).astype(np.float64), minlength=m)
    gross_profit = np.bincount(combo, weights=np.where(result.pnl > 0, result.pnl, 0.0), minlength=m)
    gross_loss = -np.bincount(combo, weights=np.where(result.pnl < 0, result.pnl, 0.0), minlength=m)
    return_total = np.bincount(combo, weights=result.return_, minlength=m)
    # A signal exit fills at its bar's open, so that bar is not held; every other exit is inside
    # or at the close of its bar.
    held = result.exit_idx - result.entry_idx + (result.exit_reason != ExitReason.SIGNAL)
    bars_held = np.bincount(combo, weights=held.astype(np.float64), minlength=m)
    has_trades = trades > 0

    with np.errstate(divide="ignore", invalid="ignore"):
        win_rate = np.where(has_trades, wins / trades, np.nan)
        expectancy = np.where(has_trades, return_total / trades, np.nan)
        profit_factor = np.where(gross_loss > 0, gross_profit / gross_loss, np.nan)

        n = result.n_returns
        mean = result.bar_return_sum / n if n else np.zeros(m)
        if n >= 2:
            variance = (result.bar_return_sumsq - n * mean * mean) / (n - 1)
            std = np.sqrt(np.maximum(variance, 0.0))
        else:
            std = np.zeros(m)
        sharpe = np.where(std > 0, mean / std * annual, 0.0)
        downside_dev = np.sqrt(result.bar_downside_sumsq / n) if n else np.zeros(m)
        sortino = np.where(downside_dev > 0, mean / downside_dev * annual, np.nan)

    total_return = result.final_equity - 1.0
    score = sharpe * np.minimum(1.0, trades / SCORE_FULL_TRADES) - SCORE_DRAWDOWN_WEIGHT * result.max_drawdown
    return pl.DataFrame(
        {
            "combo": np.arange(m, dtype=np.int64),
            "total_return": total_return,
            "pnl": total_return * float(initial_capital),
            "win_rate": win_rate,
            "trades": trades,
            "sharpe": sharpe,
            "sortino": sortino,
            "max_drawdown": result.max_drawdown,
            "profit_factor": profit_factor,
            "exposure": bars_held / result.n_bars,
            "expectancy": expectancy,
            "score": score,
        }
    ).fill_nan(None)
