"""Benchmark: backfill the whole bundled range (about 250 days x 6 symbols) in one run.

Runs the market data job (candles, resampled timeframes, the ohlcv view) over every
partition in a child process, on a fresh DuckDB file and a fresh Dagster instance built
from the project's dagster.yaml, and reports wall time and the child's peak RSS.
Targets on the 2-core reference machine: 30 s or less, 1 GiB or less.

    .venv/bin/python tracer_assets_tests/benchmarks/bench_backfill.py
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TARGET_SECONDS = 30.0
TARGET_RSS_MIB = 1024.0

CHILD = """
import sys
from dagster import DagsterInstance
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG
from tracer_assets.definitions import MARKET_DATA_JOB, defs
job = defs.resolve_job_def(MARKET_DATA_JOB)
keys = job.partitions_def.get_partition_keys()
with DagsterInstance.get() as instance:
    result = job.execute_in_process(instance=instance, raise_on_error=False, tags={
        ASSET_PARTITION_RANGE_START_TAG: keys[0], ASSET_PARTITION_RANGE_END_TAG: keys[-1]})
print(len(keys), keys[0], keys[-1])
sys.exit(0 if result.success else 1)
"""


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="tracer-bench-") as scratch:
        home = Path(scratch) / "dagster_home"
        home.mkdir()
        shutil.copy(REPO / ".dagster" / "dagster.yaml", home / "dagster.yaml")
        database = Path(scratch) / "tracer.duckdb"
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("TRACER_")},
            "DAGSTER_HOME": str(home),
            "TRACER_DUCKDB_PATH": str(database),
            "PYTHONWARNINGS": "ignore",
        }
        began = time.perf_counter()
        child = subprocess.run([sys.executable, "-c", CHILD], cwd=REPO, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - began
        peak_rss_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KiB on Linux
        if child.returncode != 0:
            print(child.stdout[-3000:], child.stderr[-6000:], file=sys.stderr)
            print("the backfill run failed", file=sys.stderr)
            return 1
        days, first, last = child.stdout.split()[-3:]

        import duckdb

        with duckdb.connect(str(database), read_only=True) as connection:
            per_timeframe = dict(
                connection.execute("SELECT timeframe, count(*) FROM market.ohlcv GROUP BY 1").fetchall()
            )
            symbols = connection.execute("SELECT count(DISTINCT symbol) FROM market.candles").fetchall()[0][0]
        database_mib = database.stat().st_size / 2**20

    print(f"backfill of {days} days ({first} .. {last}) x {symbols} symbols in one run")
    print(f"rows: {per_timeframe}")
    print(
        f"wall time {seconds:.1f} s (target <= {TARGET_SECONDS:.0f} s), "
        f"peak RSS {peak_rss_mib:.0f} MiB (target <= {TARGET_RSS_MIB:.0f} MiB), DuckDB file {database_mib:.0f} MiB"
    )
    print(
        json.dumps(
            {
                "benchmark": "backfill_bundled_range",
                "days": int(days),
                "symbols": symbols,
                "base_candles": per_timeframe.get("5m", 0),
                "all_rows": sum(per_timeframe.values()),
                "wall_seconds": round(seconds, 2),
                "peak_rss_mib": round(peak_rss_mib, 1),
                "duckdb_mib": round(database_mib, 1),
                "target_seconds": TARGET_SECONDS,
                "target_rss_mib": TARGET_RSS_MIB,
                "within_targets": seconds <= TARGET_SECONDS and peak_rss_mib <= TARGET_RSS_MIB,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
