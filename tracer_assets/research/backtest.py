"""One strategy on one candle series: the full-history run at the default parameters, and a
rolling walk-forward whose parameters are chosen in sample and measured out of sample.

Pure (no Dagster). Windows: WALK_FORWARD_FOLDS test windows, each TEST_FRACTION of the
series, each preceded by a training window of TRAIN_TESTS test lengths; the test windows
tile the end of the series without overlapping each other or their own training data.

Rows (research.backtests):
- `full`: the default parameters over every bar;
- `in_sample`: the mean, over the windows, of the chosen combination's in-sample metrics
  (how good the choice looked where it was made);
- `out_of_sample`: the chosen combinations' test windows chained into one account
  (what the choice earned on data it never saw). The ranking score is this row's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from tracer_assets.research.engine import FillRules, SimResult, simulate
from tracer_assets.research.metrics import METRIC_COLUMNS, metrics
from tracer_assets.research.rules import Signals, evaluate, param_grid
from tracer_assets.research.spec import StrategySpec
from tracer_assets.research.walkforward import rolling_windows, walk_forward

WALK_FORWARD_FOLDS = 4
TRAIN_TESTS = 2  # training window = 2 test windows
MIN_BARS = 200  # fewer bars than this: no walk-forward, too little to choose on
EQUITY_POINTS = 500  # equity curves are stored at most this many points per run


@dataclass(frozen=True)
class StrategyBacktest:
    rows: pl.DataFrame  # window, combo parameters (JSON), METRIC_COLUMNS
    equity: pl.DataFrame  # bar, ts, equity (full run, default parameters, thinned)
    # Bar returns of the chained test windows (what the deflated Sharpe ratio is computed
    # from); empty when the series is too short for a walk-forward.
    oos_returns: np.ndarray


def research_window_stop(n_bars: int) -> int:
    """The first bar of the first test window: bars before it are never out of sample, so
    research (designing and tuning strategies) may look at them and at nothing later."""
    return TRAIN_TESTS * (n_bars // (WALK_FORWARD_FOLDS + TRAIN_TESTS))


def candle_arrays(candles: pl.DataFrame) -> dict[str, np.ndarray]:
    return {c: candles[c].cast(pl.Float64).to_numpy() for c in ("open", "high", "low", "close", "volume")}


def simulate_signals(arrays: dict[str, np.ndarray], signals: Signals, rules: FillRules) -> SimResult:
    """Every combination of `signals` over the candles of `arrays` (candle_arrays), no equity kept."""
    prices = (arrays[c] for c in ("open", "high", "low", "close"))
    levels = (signals.stop_loss, signals.take_profit, signals.trailing_stop)
    return simulate(*prices, signals.entries, signals.exits, *levels, rules=rules)


def default_combo(spec: StrategySpec) -> dict:
    return {name: p.default for name, p in spec.parameters.items()}


def backtest_strategy(spec: StrategySpec, candles: pl.DataFrame, timeframe: str, rules: FillRules) -> StrategyBacktest:
    """`candles`: one symbol's candles of `timeframe`, oldest first (ts, open, high, low, close, volume)."""
    arrays = candle_arrays(candles)
    prices = [arrays[c] for c in ("open", "high", "low", "close")]
    grid = param_grid(spec)
    defaults = default_combo(spec)
    if defaults not in grid:
        grid = [defaults, *grid]
    signals = evaluate(spec, arrays, grid)
    d = grid.index(defaults)
    levels = (signals.stop_loss, signals.take_profit, signals.trailing_stop)
    full = simulate(
        *prices,
        signals.entries[:, d],
        signals.exits[:, d],
        *(x[d : d + 1] for x in levels),
        rules=rules,
        record_equity=True,
    )
    frames = [
        metrics(full, timeframe).with_columns(
            pl.lit("full").alias("window"), pl.lit(format_combo(defaults)).alias("parameters")
        )
    ]
    n = candles.height
    oos_returns = np.empty(0)
    if n >= MIN_BARS:
        test = n // (WALK_FORWARD_FOLDS + TRAIN_TESTS)
        windows = rolling_windows(n, research_window_stop(n), test)
        result = walk_forward(
            *prices, signals.entries, signals.exits, *levels, rules=rules, windows=windows, timeframe=timeframe
        )
        chained = result.out_of_sample_trades.equity[:, 0]
        oos_returns = np.diff(chained) / chained[:-1]
        chosen = [format_combo(grid[c]) for c in result.in_sample["combo"].to_list()]
        frames.append(
            result.in_sample.select(METRIC_COLUMNS)
            .mean()
            .with_columns(pl.lit("in_sample").alias("window"), pl.lit("; ".join(chosen)).alias("parameters"))
        )
        frames.append(
            result.aggregate.select(METRIC_COLUMNS).with_columns(
                pl.lit("out_of_sample").alias("window"), pl.lit("; ".join(chosen)).alias("parameters")
            )
        )
    # Trades are whole except the in-sample mean over windows, which is rounded.
    columns = [
        pl.col(c).round().cast(pl.Int64) if c == "trades" else pl.col(c).cast(pl.Float64) for c in METRIC_COLUMNS
    ]
    rows = pl.concat([f.select("window", "parameters", *columns) for f in frames])
    equity = full.equity[:, 0]
    keep = np.unique(np.linspace(0, n - 1, min(n, EQUITY_POINTS)).astype(np.int64))
    curve = pl.DataFrame({"bar": keep, "ts": candles["ts"].gather(keep), "equity": equity[keep]})
    return StrategyBacktest(rows=rows, equity=curve, oos_returns=oos_returns)


def format_combo(combo: dict) -> str:
    """A combination as research.backtests stores it: 'fast=10,slow=40' (strategy_call.parse_combo reads it)."""
    return ",".join(f"{k}={v}" for k, v in combo.items())
