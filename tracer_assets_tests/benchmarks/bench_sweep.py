"""Benchmark: an EMA-crossover parameter sweep, 20 fast x 20 slow windows (400 combinations),
over every bundled BTC/USDT 5m candle (~72k bars), fee 0.1%, one thread.

Signals: long while EMA(fast) > EMA(slow), entering on the cross up and leaving on the cross
down (EMAs seeded with the first close, polars `ewm_mean(adjust=False)`); fast 5..24, slow
30..125 step 5. The engine is run once to compile (numba caches the machine code on disk, so
that first call is faster on later runs), then timed 3 times; the figure is the median.
Two signal layouts are timed: bar-major (n_bars, n_combos) C order, the general case, and
combo-major (the same matrix in Fortran order, each combination contiguous). Five combinations,
spread over the grid, are checked trade for trade against the plain-Python reference
(tracer_assets_tests/backtest_reference.py). Target on the 2-core reference machine: at least
10 million bar-combinations per second warm on one core.

Also timed (best of 3): the same 20 x 20 EMA-cross grid's signals the way research/backtests
computes them, `research.rules.evaluate` of an EMA-cross spec, whose TA-Lib EMAs (seeded with a
simple mean, from `features.indicators`) are computed once per window and shared by the grid.

    .venv/bin/python tracer_assets_tests/benchmarks/bench_sweep.py
"""

from __future__ import annotations

import os

os.environ.setdefault("NUMBA_NUM_THREADS", "1")  # one core, whatever the machine has

import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # backtest_reference beside the tests

from backtest_reference import reference_backtest  # noqa: E402

from tracer_assets.data import BUNDLED_REPLAY_DIR  # noqa: E402
from tracer_assets.research.engine import EXIT_REASON_NAMES, FillRules, simulate  # noqa: E402
from tracer_assets.research.metrics import metrics  # noqa: E402
from tracer_assets.research.rules import evaluate, param_grid  # noqa: E402
from tracer_assets.research.spec import load_spec  # noqa: E402

FAST = tuple(range(5, 25))
SLOW = tuple(range(30, 130, 5))
RUNS = 3
REFERENCE_COMBOS = 5
TARGET = 10_000_000  # bar-combinations per second, warm, one core


def load() -> dict[str, np.ndarray]:
    frame = pl.read_parquet(BUNDLED_REPLAY_DIR / "BTC_USDT-5m.parquet")
    return {name: frame[name].to_numpy() for name in ("open", "high", "low", "close", "volume")}


def signals(close: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(entries, exits) bar-major C-ordered, and the same combo-major (Fortran-ordered)."""
    series = pl.Series("close", close)
    fast = np.stack([series.ewm_mean(span=s, adjust=False).to_numpy() for s in FAST])  # (20, n)
    slow = np.stack([series.ewm_mean(span=s, adjust=False).to_numpy() for s in SLOW])  # (20, n)
    above = (fast[:, None, :] > slow[None, :, :]).reshape(len(FAST) * len(SLOW), -1)  # (400, n)
    before = np.concatenate([above[:, :1], above[:, :-1]], axis=1)
    entries_by_combo, exits_by_combo = above & ~before, ~above & before
    # combo c = fast index * 20 + slow index in both layouts
    return (
        np.ascontiguousarray(entries_by_combo.T),
        np.ascontiguousarray(exits_by_combo.T),
        entries_by_combo.T,
        exits_by_combo.T,
    )


def rules_signals(prices: dict[str, np.ndarray]):
    """The same grid through the strategy rules: `evaluate` of an EMA-cross spec (TA-Lib EMAs)."""
    ema = {s: {"indicator": "ema", "params": {"window": f"${s}"}} for s in ("fast", "slow")}
    spec = load_spec(
        {
            "name": "bench_ema_cross",
            "description": "EMA cross over the benchmark's grid",
            "timeframe": "5m",
            "parameters": {
                "fast": {"default": FAST[0], "low": FAST[0], "high": FAST[-1], "step": FAST[1] - FAST[0]},
                "slow": {"default": SLOW[0], "low": SLOW[0], "high": SLOW[-1], "step": SLOW[1] - SLOW[0]},
            },
            "entry": {"cross_above": {"a": ema["fast"], "b": ema["slow"]}},
            "exit": {"cross_below": {"a": ema["fast"], "b": ema["slow"]}},
        }
    )
    grid = param_grid(spec)
    assert [(c["fast"], c["slow"]) for c in grid] == [(f, s) for f in FAST for s in SLOW]
    return evaluate(spec, prices, grid)


def timed(call, runs: int = RUNS) -> tuple[list[float], list[float], object]:
    walls, cpus, out = [], [], None
    for _ in range(runs):
        began, began_cpu = time.perf_counter(), time.process_time()
        out = call()
        walls.append(time.perf_counter() - began)
        cpus.append(time.process_time() - began_cpu)
    return walls, cpus, out


def main() -> int:
    prices = load()
    ohlc = (prices["open"], prices["high"], prices["low"], prices["close"])
    n_bars = len(prices["close"])
    rules = FillRules(fee=0.001)
    signal_walls, _, built = timed(lambda: signals(prices["close"]), runs=1)
    entries, exits, entries_f, exits_f = built
    assert entries.flags.c_contiguous and entries_f.flags.f_contiguous
    n_combos = entries.shape[1]
    bar_combinations = n_bars * n_combos

    began = time.perf_counter()
    simulate(*ohlc, entries, exits, rules=rules)  # compile, or load numba's on-disk cache
    first_call = time.perf_counter() - began

    walls, cpus, result = timed(lambda: simulate(*ohlc, entries, exits, rules=rules))
    walls_f, cpus_f, result_f = timed(lambda: simulate(*ohlc, entries_f, exits_f, rules=rules))
    median, median_f = statistics.median(walls), statistics.median(walls_f)
    for field in ("combo", "entry_idx", "exit_idx", "exit_reason", "pnl"):
        assert np.array_equal(getattr(result, field), getattr(result_f, field)), field
    metric_walls, _, table = timed(lambda: metrics(result, "5m"))
    rules_signals(prices)  # compile the indicator kernels, or load numba's on-disk cache
    rules_walls, _, from_rules = timed(lambda: rules_signals(prices))
    assert from_rules.entries.shape == (n_bars, n_combos)

    # Trade for trade against the plain-Python reference on a spread of combinations.
    sample = np.linspace(0, n_combos - 1, REFERENCE_COMBOS).round().astype(int).tolist()
    lists = [a.tolist() for a in ohlc]
    reference_seconds, identical, max_return_gap = 0.0, True, 0.0
    for combo in sample:
        began = time.perf_counter()
        trades, _ = reference_backtest(*lists, entries[:, combo].tolist(), exits[:, combo].tolist(), fee=rules.fee)
        reference_seconds += time.perf_counter() - began
        part = result.combo_trades(combo)
        engine = list(
            zip(
                result.entry_idx[part].tolist(),
                result.exit_idx[part].tolist(),
                [EXIT_REASON_NAMES[r] for r in result.exit_reason[part]],
            )
        )
        identical &= engine == [(t.entry_idx, t.exit_idx, t.exit_reason) for t in trades]
        if trades and len(trades) == part.stop - part.start:
            gap = np.max(np.abs(result.return_[part] - np.array([t.return_ for t in trades])))
            max_return_gap = max(max_return_gap, float(gap))
    identical &= max_return_gap <= 1e-9

    rate, rate_f = bar_combinations / median, bar_combinations / median_f
    best = table.sort("score", descending=True).row(0, named=True)
    fast, slow = FAST[best["combo"] // len(SLOW)], SLOW[best["combo"] % len(SLOW)]
    load_average = os.getloadavg()[0]
    print(
        f"EMA-crossover sweep: {len(FAST)} fast x {len(SLOW)} slow = {n_combos} combinations x {n_bars} "
        f"BTC/USDT 5m bars = {bar_combinations:,} bar-combinations, fee {rules.fee:.1%}, "
        f"NUMBA_NUM_THREADS={os.environ['NUMBA_NUM_THREADS']}"
    )
    print(
        f"signals (40 EMAs, crossings, both layouts) {signal_walls[0]:.3f} s; first call (compile or cache load) "
        f"{first_call:.2f} s; metrics {min(metric_walls) * 1000:.1f} ms; the grid's signals through "
        f"research.rules.evaluate (TA-Lib EMAs) {min(rules_walls):.3f} s"
    )
    print(
        f"bar-major (n_bars, n_combos) C order: runs {', '.join(f'{w:.3f}' for w in walls)} s "
        f"(CPU {', '.join(f'{c:.3f}' for c in cpus)} s); median {median:.3f} s = {rate / 1e6:.1f} M bar-combinations/s"
    )
    print(
        f"combo-major (Fortran order): runs {', '.join(f'{w:.3f}' for w in walls_f)} s "
        f"(CPU {', '.join(f'{c:.3f}' for c in cpus_f)} s); "
        f"median {median_f:.3f} s = {rate_f / 1e6:.1f} M bar-combinations/s"
    )
    print(
        f"{result.n_trades:,} trades; best by score: fast {fast} / slow {slow}: total return "
        f"{best['total_return']:+.2%}, sharpe {best['sharpe']:.2f}, {best['trades']} trades; "
        f"reference check on combos {sample}: {'identical' if identical else 'DIFFERENT'} "
        f"(max return gap {max_return_gap:.1e}, reference {reference_seconds / len(sample):.2f} s per combination); "
        f"target >= {TARGET / 1e6:.0f} M/s; load average {load_average:.2f}"
    )
    print(
        json.dumps(
            {
                "benchmark": "sweep",
                "combinations": n_combos,
                "bars": n_bars,
                "bar_combinations": bar_combinations,
                "seconds_median": round(median, 4),
                "seconds_runs": [round(w, 4) for w in walls],
                "cpu_seconds_runs": [round(c, 4) for c in cpus],
                "bar_combinations_per_second": round(rate),
                # CPU time is what this process used: steadier than wall time when other work shares the cores.
                "cpu_bar_combinations_per_second": round(bar_combinations / statistics.median(cpus)),
                "combo_major_seconds_median": round(median_f, 4),
                "combo_major_bar_combinations_per_second": round(rate_f),
                "first_call_seconds": round(first_call, 3),
                "signals_seconds": round(signal_walls[0], 4),
                "rules_evaluate_seconds": round(min(rules_walls), 4),
                "metrics_seconds": round(min(metric_walls), 4),
                "trades": result.n_trades,
                "reference_combos_checked": len(sample),
                "reference_identical": bool(identical),
                "numba_threads": int(os.environ["NUMBA_NUM_THREADS"]),
                "load_average_1m": round(load_average, 2),
                "target_bar_combinations_per_second": TARGET,
                "within_target": rate >= TARGET,
            }
        )
    )
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
