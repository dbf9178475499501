"""`make demo`: materialize the market data, indicators and signals of the configured
exchange (by default the bundled real Binance candles, offline) into DuckDB, in one run on
the persistent Dagster instance, and print what was built and the newest signals.

    python -m tracer_assets.demo [--start 2024-01-01] [--end 2024-09-06]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

import duckdb
from dagster import BetaWarning, DagsterInstance

# The demo speaks for itself; Dagster's notes on beta parameters are for developers.
warnings.filterwarnings("ignore", category=BetaWarning)
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from tracer_assets.definitions import TICK_JOB, defs
from tracer_assets.market.timeframes import timeframe_seconds
from tracer_assets.settings import load_settings


def market_summary(database: str) -> str:
    """Tables, rows, date range and gaps, as a person wants to read them after a run."""
    with duckdb.connect(database, read_only=True) as connection:
        per_table = connection.execute(
            """SELECT 'market.ohlcv' AS table_name, timeframe, count(*) AS rows,
                      count(DISTINCT symbol) AS symbols, min(ts) AS first, max(ts) AS last
               FROM market.ohlcv GROUP BY timeframe"""
        ).fetchall()
        per_table.sort(key=lambda row: timeframe_seconds(row[1]))
        gaps = connection.execute(
            "SELECT symbol, timeframe, gap_start, gap_end, missing_candles FROM market.gaps ORDER BY gap_start, symbol"
        ).fetchall()
        tables = connection.execute(
            """SELECT table_schema || '.' || table_name, table_type FROM information_schema.tables
               WHERE table_schema NOT IN ('information_schema', 'pg_catalog') ORDER BY 1"""
        ).fetchall()
    lines = [f"DuckDB file: {database}", "", "tables:"]
    lines += [f"  {name:<28} {'view' if kind == 'VIEW' else 'table'}" for name, kind in tables]
    lines += ["", f"  {'timeframe':<10}{'rows':>10}{'symbols':>9}  {'first candle (UTC)':<20} {'last candle (UTC)':<20}"]
    for _, timeframe, rows, symbols, first, last in per_table:
        lines.append(f"  {timeframe:<10}{rows:>10,}{symbols:>9}  {first:%Y-%m-%d %H:%M}     {last:%Y-%m-%d %H:%M}")
    lines += ["", f"gaps found: {len(gaps)}"]
    for symbol, timeframe, start, end, missing in gaps[:20]:
        lines.append(f"  {symbol} {timeframe}: {start:%Y-%m-%d %H:%M} -> {end:%Y-%m-%d %H:%M} ({missing} candles)")
    if len(gaps) > 20:
        lines.append(f"  ... {len(gaps) - 20} more in market.gaps")
    return "\n".join(lines)


def signals_summary(database: str) -> str:
    """The newest signal per symbol and timeframe, as a table."""
    with duckdb.connect(database, read_only=True) as connection:
        rows = connection.execute(
            """SELECT symbol, timeframe, ts, close, signal_quality, regime, regime_volatile, regime_confidence,
                      conviction, ensemble_label, ensemble_confidence
               FROM signals.signals"""
        ).fetchall()
    rows.sort(key=lambda r: (r[0], timeframe_seconds(r[1])))
    header = f"  {'symbol':<10}{'tf':<5}{'candle (UTC)':<18}{'close':>12}{'quality':>9}  {'regime':<14}{'conf':>5}{'conviction':>11}  {'ensemble':<12}{'conf':>5}"
    lines = ["newest signals:", header]
    for symbol, tf, ts, close, quality, regime, volatile, rconf, conviction, label, lconf in rows:
        regime_text = regime + (" volatile" if volatile else "")
        lines.append(
            f"  {symbol:<10}{tf:<5}{ts:%Y-%m-%d %H:%M}  {close:>12.6g}{quality:>9.2f}  {regime_text:<14}{rconf:>5.2f}{conviction:>11.2f}  {label:<12}{lconf:>5.2f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    settings = load_settings()
    job = defs.resolve_job_def(TICK_JOB)
    partitions = job.partitions_def
    keys = partitions.get_partition_keys()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--start", default=keys[0], help=f"first day (default {keys[0]})")
    parser.add_argument("--end", default=keys[-1], help=f"last day, inclusive (default {keys[-1]})")
    args = parser.parse_args(argv)
    for day in (args.start, args.end):
        if day not in keys:
            parser.error(f"{day} is not a partition of market/candles ({keys[0]} .. {keys[-1]})")

    if not os.environ.get("DAGSTER_HOME"):
        parser.error("DAGSTER_HOME is not set: run `make demo`, or export DAGSTER_HOME=$PWD/.dagster")
    print(
        f"Materializing {TICK_JOB}: {len(settings.symbols)} symbols ({', '.join(settings.symbols)}), "
        f"{settings.base_timeframe} from {settings.exchange}, resampled to {', '.join(settings.timeframes)}, "
        f"indicators and signals, days {args.start} .. {args.end} in one run",
        flush=True,
    )
    began = time.perf_counter()
    with DagsterInstance.get() as instance:
        result = job.execute_in_process(
            instance=instance,
            tags={ASSET_PARTITION_RANGE_START_TAG: args.start, ASSET_PARTITION_RANGE_END_TAG: args.end},
            raise_on_error=False,
            # Progress and problems, not every engine event (those are in the UI).
            run_config={"loggers": {"console": {"config": {"log_level": "INFO"}}}},
        )
    if not result.success:
        print(f"\nThe run {result.run_id} failed; its events are in the UI (make dev) and above.", file=sys.stderr)
        return 1
    print(f"\nRun {result.run_id} succeeded in {time.perf_counter() - began:.1f}s.\n")
    print(market_summary(str(settings.duckdb_path)))
    print("\n" + signals_summary(str(settings.duckdb_path)))
    print(
        "\nOpen the UI on this instance with `make dev`, then http://127.0.0.1:3000 "
        "(Assets > market for lineage and checks, Runs for this run)."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
