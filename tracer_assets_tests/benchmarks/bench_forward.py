"""Benchmark: the forward test's throughput, a month (30 days) of 5m candles for the 6 bundled
symbols (51,840 candle x symbol steps), each symbol traded by a different built-in at its default
parameters, through the strategy decider, the risk manager (limits that do not bind) and the paper
broker, then compared trade by trade with the backtest engine. Target on the 2-core reference
machine: 60 s or less for the month (at least 864 candles x symbols per second). Best of 3.

    .venv/bin/python tracer_assets_tests/benchmarks/bench_forward.py
"""

from __future__ import annotations

import json
import time
from datetime import timedelta
from decimal import Decimal

import polars as pl

from tracer_assets.data import BUNDLED_REPLAY_DIR
from tracer_assets.research.engine import FillRules
from tracer_assets.research.spec import builtin_spec
from tracer_assets.trading.accounts import REPLAY_MARKET
from tracer_assets.trading.forward import OPEN_LIMITS, ForwardSeries, compare_with_backtest, forward_test
from tracer_assets.trading.paper import PaperBroker
from tracer_assets.trading.risk import MarketRules
from tracer_assets.trading.strategy_call import PickedStrategy

SYMBOLS = ["BTC/USDT", "ETH/USDT", "SOL/USDT", "XRP/USDT", "DOGE/USDT", "LINK/USDT"]
STRATEGIES = ["ema_cross", "rsi_mean_reversion", "macd_cross", "bollinger_breakout", "macd_hist_trend", "sma_cross"]
WARM_UP_BARS = 1000


def main() -> None:
    frames = {
        s: pl.read_parquet(BUNDLED_REPLAY_DIR / f"{s.replace('/', '_')}-5m.parquet").rename({"date": "ts"})
        for s in SYMBOLS
    }
    end = min(frame["ts"].max() for frame in frames.values())
    start = end - timedelta(days=30)
    series = []
    for symbol, name in zip(SYMBOLS, STRATEGIES, strict=True):
        spec = builtin_spec(name)
        combo = {n: p.default for n, p in spec.parameters.items()}
        frame = frames[symbol].filter(pl.col("ts") < end)
        frame = frame.filter(pl.col("ts") >= start).vstack(frame.filter(pl.col("ts") < start).tail(WARM_UP_BARS))
        series.append(ForwardSeries(symbol, "5m", PickedStrategy(name, spec, combo, None), frame.sort("ts")))
    timings = []
    for _ in range(3):
        broker = PaperBroker("USDT", Decimal(10_000), None, Decimal("0.001"), Decimal(5))
        began = time.perf_counter()
        run = forward_test(
            series, start, end, broker, OPEN_LIMITS, lambda s: MarketRules(symbol=s, **REPLAY_MARKET), Decimal(100)
        )
        timings.append(time.perf_counter() - began)
    began = time.perf_counter()
    parity = compare_with_backtest(series, run, FillRules(fee=0.001, slippage_bps=5.0))
    compare_seconds = time.perf_counter() - began
    best = min(timings)
    print(f"forward test, {start:%Y-%m-%d} -> {end:%Y-%m-%d}, 5m x {len(SYMBOLS)} symbols: {run.candles:,} candles")
    print(f"  replay: best {best:.2f} s of {', '.join(f'{t:.2f}' for t in timings)} s")
    print(f"  throughput: {run.candles / best:,.0f} candles x symbols per second (target >= 864: a month in 60 s)")
    print(
        f"  orders {len(run.orders)}, fills {len(run.broker.fills)}, comparison with the engine {compare_seconds:.2f} s"
    )
    print(f"  parity: {parity.matched} of {parity.compared} closed trades identical")
    figures = {
        "benchmark": "forward",
        "candles": run.candles,
        "seconds": round(best, 3),
        "candles_per_second": round(run.candles / best),
        "target_seconds": 60,
        "parity_identical": parity.matched,
        "parity_compared": parity.compared,
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
