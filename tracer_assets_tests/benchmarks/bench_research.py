"""Benchmark: the full backtest of the built-in library (every built-in strategy x 6 symbols x
4 timeframes, full run + rolling walk-forward each) over the bundled candles, the work the
research/backtests asset does. Target on the 2-core reference machine: 30 s or less.

    .venv/bin/python tracer_assets_tests/benchmarks/bench_research.py
"""

from __future__ import annotations

import json
import time

import polars as pl

from tracer_assets.data import BUNDLED_REPLAY_DIR
from tracer_assets.research.backtest import backtest_strategy
from tracer_assets.research.engine import FillRules
from tracer_assets.research.spec import builtin_specs
from tracer_assets.resources.replay_exchange import read_candle_file
from tracer_assets.settings import DEFAULT_SYMBOLS

TIMEFRAMES = ("5m", "15m", "1h", "4h")
TARGET_SECONDS = 30.0


def series(symbol: str) -> dict[str, pl.DataFrame]:
    base = read_candle_file(BUNDLED_REPLAY_DIR / f"{symbol.replace('/', '_')}-5m.parquet")
    base = base.with_columns(ts=pl.from_epoch("ms", time_unit="ms").dt.replace_time_zone("UTC")).sort("ts")
    frames = {"5m": base}
    for tf in TIMEFRAMES[1:]:
        frames[tf] = base.group_by_dynamic("ts", every=tf).agg(
            pl.col("open").first(),
            pl.col("high").max(),
            pl.col("low").min(),
            pl.col("close").last(),
            pl.col("volume").sum(),
        )
    return frames


def main() -> int:
    specs = builtin_specs()
    rules = FillRules(fee=0.001, slippage_bps=5)
    candles = {symbol: series(symbol) for symbol in DEFAULT_SYMBOLS}
    backtest_strategy(specs[0], candles[DEFAULT_SYMBOLS[0]]["1h"], "1h", rules)  # compile (numba cache) first
    began = time.perf_counter()
    bars = runs = 0
    for frames in candles.values():
        for tf, frame in frames.items():
            for spec in specs:
                backtest_strategy(spec, frame, tf, rules)
                runs += 1
                bars += frame.height
    seconds = time.perf_counter() - began
    print(
        f"{len(specs)} strategies x {len(candles)} symbols x {len(TIMEFRAMES)} timeframes = {runs} backtests "
        f"(full + walk-forward over each strategy's grid), {bars:,} bars: "
        f"{seconds:.1f} s (target <= {TARGET_SECONDS:.0f} s)"
    )
    print(
        json.dumps(
            {
                "benchmark": "research_library",
                "backtests": runs,
                "seconds": round(seconds, 2),
                "target_seconds": TARGET_SECONDS,
                "within_target": seconds <= TARGET_SECONDS,
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
