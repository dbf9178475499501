"""Benchmark: one trading tick (6 symbols x 4 timeframes: today's candles, resampled
timeframes, indicators, signals, history) in-process, after 1 month and after 8 months of
stored history.

Targets on the 2-core reference machine: a tick in 1.5 s or less; the 8-month tick no
more than 1.3 x the 1-month tick (the work is bounded by symbols x lookback, not by what
is stored). Two figures per tick: the whole `execute_in_process` call on a SQLite Dagster
instance (what the schedule pays), and the time inside the assets (our code, from the
steps' durations), since Dagster's own event bookkeeping is a fixed cost per step.

    .venv/bin/python tracer_assets_tests/benchmarks/bench_tick.py
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TICKS = 5
TARGET_TICK_SECONDS = 1.5
TARGET_RATIO = 1.3
LAST_DAY = "2024-09-06"
# The shortest history a 4h signal can have: 200 candles (33.3 days) before the last day.
HISTORIES = {"5_weeks": "2024-08-01", "8_months": "2024-01-01"}
QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}


def measure(history_start: str, scratch: Path, in_memory: bool = False) -> dict:
    """Median tick and time inside the assets, on the project's SQLite instance config, or
    (in_memory) on an in-memory Dagster instance: the job's own cost, without the SQLite
    event log's (~15-19 ms per event, ~66 events a tick)."""
    import dagster as dg
    from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG
    from run_figures import seconds_inside_steps

    from tracer_assets.definitions import TICK_JOB, build_definitions, tick_inputs
    from tracer_assets.schedules import tick_asset_selection
    from tracer_assets.settings import load_settings

    if not in_memory:
        home = scratch / "dagster_home"
        home.mkdir()
        shutil.copy(REPO / ".dagster" / "dagster.yaml", home / "dagster.yaml")
        os.environ["DAGSTER_HOME"] = str(home)
    os.environ["TRACER_DUCKDB_PATH"] = str(scratch / "tracer.duckdb")
    defs = build_definitions(load_settings())
    job = defs.resolve_job_def(TICK_JOB)
    tick_keys, views = tick_inputs(defs.assets)
    with dg.DagsterInstance.ephemeral() if in_memory else dg.DagsterInstance.get() as instance:
        history = job.execute_in_process(
            instance=instance,
            run_config=QUIET,
            tags={ASSET_PARTITION_RANGE_START_TAG: history_start, ASSET_PARTITION_RANGE_END_TAG: "2024-09-05"},
        )
        assert history.success
        walls, insides = [], []
        for _ in range(TICKS + 1):  # the first tick warms caches and is not counted
            began = time.perf_counter()
            # What the schedule asks for: the views already exist, so a tick leaves them be.
            selection = tick_asset_selection(instance, tick_keys, views)
            tick = job.execute_in_process(
                instance=instance, run_config=QUIET, partition_key=LAST_DAY, asset_selection=selection
            )
            walls.append(time.perf_counter() - began)
            assert tick.success
            insides.append(seconds_inside_steps(instance, tick.run_id))
    return {"tick_seconds": statistics.median(walls[1:]), "assets_seconds": statistics.median(insides[1:])}


def main() -> int:
    warnings.filterwarnings("ignore")
    for name in list(os.environ):
        if name.startswith("TRACER_"):
            del os.environ[name]
    figures = {}
    for name, start in HISTORIES.items():
        with tempfile.TemporaryDirectory(prefix="tracer-bench-tick-") as scratch:
            figures[name] = measure(start, Path(scratch))
        print(
            f"{name:>9} of history: tick {figures[name]['tick_seconds']:.2f} s whole, "
            f"{figures[name]['assets_seconds']:.2f} s inside the assets (median of {TICKS})"
        )
    with tempfile.TemporaryDirectory(prefix="tracer-bench-tick-") as scratch:
        in_memory = measure(HISTORIES["5_weeks"], Path(scratch), in_memory=True)["tick_seconds"]
    print(f"  5_weeks of history, in-memory Dagster instance: tick {in_memory:.2f} s whole (median of {TICKS})")
    ratio = figures["8_months"]["tick_seconds"] / figures["5_weeks"]["tick_seconds"]
    ratio_assets = figures["8_months"]["assets_seconds"] / figures["5_weeks"]["assets_seconds"]
    tick = figures["5_weeks"]["tick_seconds"]
    print(f"8 months / 5 weeks: {ratio:.2f} whole, {ratio_assets:.2f} inside the assets (target <= {TARGET_RATIO})")
    print(
        json.dumps(
            {
                "benchmark": "trading_tick_6x4",
                "symbols": 6,
                "timeframes": 4,
                "tick_seconds_5_weeks": round(tick, 3),
                "assets_seconds_5_weeks": round(figures["5_weeks"]["assets_seconds"], 3),
                "tick_seconds_8_months": round(figures["8_months"]["tick_seconds"], 3),
                "assets_seconds_8_months": round(figures["8_months"]["assets_seconds"], 3),
                "ratio_8m_over_5w": round(ratio, 3),
                "ratio_assets_8m_over_5w": round(ratio_assets, 3),
                "target_tick_seconds": TARGET_TICK_SECONDS,
                "target_ratio": TARGET_RATIO,
                "tick_seconds_in_memory_instance": round(in_memory, 3),
                "tick_within_target": tick <= TARGET_TICK_SECONDS,
                "in_memory_tick_within_target": in_memory <= TARGET_TICK_SECONDS,
                "ratio_within_target": ratio <= TARGET_RATIO,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
