"""market/candles: the exchange's base-timeframe candles, one daily partition at a time.
Thin: fetch (download.py), validate and find gaps (candles.py), write atomically
(tables.py), check what landed (checks.py).
"""

from datetime import UTC, datetime, timedelta

import dagster as dg
import polars as pl

from tracer_assets.checks import check_result
from tracer_assets.market.candles import (
    CandleValidationError,
    closed_window_end,
    find_gaps,
    validate_candles,
)
from tracer_assets.market.checks import CHECK_DESCRIPTIONS, candle_checks, last_candle_not_stale, no_price_jump
from tracer_assets.market.download import fetch_candles_for_symbols
from tracer_assets.market.keys import CANDLES_KEY, CANDLES_TABLE, GAPS_TABLE
from tracer_assets.policies import DUCKDB_POOL, SINGLE_RUN_BACKFILL, loop_freshness, tick_interval
from tracer_assets.resources.exchange import ExchangeResource
from tracer_assets.resources.warehouse import TracerDuckDB
from tracer_assets.settings import Settings
from tracer_assets.tables import replace_window
from tracer_assets.ui_tables import COLUMN_SCHEMA, column_schema

# market.candles, every column: name, DuckDB type, description.
CANDLES_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("symbol", "VARCHAR", "Spot symbol, e.g. BTC/USDT"),
    ("timeframe", "VARCHAR", "The base timeframe (TRACER_BASE_TIMEFRAME)"),
    ("ts", "TIMESTAMP WITH TIME ZONE", "The candle's open time (UTC)"),
    ("open", "DOUBLE", "First trade price"),
    ("high", "DOUBLE", "Highest trade price"),
    ("low", "DOUBLE", "Lowest trade price"),
    ("close", "DOUBLE", "Last trade price"),
    ("volume", "DOUBLE", "Traded volume, in base units"),
)


def build_candles_asset(settings: Settings, partitions: dg.DailyPartitionsDefinition) -> dg.AssetsDefinition:
    tolerance = 2 * tick_interval(settings)
    check_names = ("no_duplicate_keys", "monotonic_time", "sane_ohlc", "last_candle_not_stale")

    @dg.asset(
        key=CANDLES_KEY,
        description=(
            f"Closed {settings.market.base_timeframe} candles of every configured symbol from the exchange "
            f"({settings.market.exchange}), one UTC day per partition. Validated before anything is written; "
            "gaps are recorded in market.gaps, never filled in. Columns: symbol, timeframe, ts "
            "(open time, UTC), open, high, low, close, volume."
        ),
        partitions_def=partitions,
        backfill_policy=SINGLE_RUN_BACKFILL,
        pool=DUCKDB_POOL,
        freshness_policy=loop_freshness(settings),
        group_name="market",
        kinds={"duckdb", "polars"},
        metadata={COLUMN_SCHEMA: column_schema(CANDLES_COLUMNS)},
        check_specs=[
            dg.AssetCheckSpec(name, asset=CANDLES_KEY, blocking=True, description=CHECK_DESCRIPTIONS[name])
            for name in check_names
        ]
        + [
            dg.AssetCheckSpec(
                "all_symbols_fetched",
                asset=CANDLES_KEY,
                description="Every configured symbol downloaded (a symbol that failed keeps its old rows).",
            ),
            # A warning, not a gate: a real crash must not stop the loop, a bad tick must be seen.
            dg.AssetCheckSpec("no_price_jump", asset=CANDLES_KEY, description=CHECK_DESCRIPTIONS["no_price_jump"]),
        ],
    )
    def candles(context: dg.AssetExecutionContext, exchange: ExchangeResource, duckdb: TracerDuckDB):
        window = context.partition_time_window
        start, end = window.start.astimezone(UTC), window.end.astimezone(UTC)
        client = exchange.client()
        # Progress per symbol on long windows (backfills); one line on a tick, where every log
        # line is another event the instance has to store.
        long_window = end - start > timedelta(days=1)
        if long_window:
            context.log.info(
                f"fetching {settings.market.base_timeframe} candles of {len(exchange.symbols)} symbols from "
                f"{exchange.exchange} for {start:%Y-%m-%d} .. {end - timedelta(seconds=1):%Y-%m-%d}"
            )
        download = fetch_candles_for_symbols(
            client,
            exchange.symbols,
            exchange.base_timeframe,
            start,
            end,
            page_limit=exchange.page_limit,
            policy=exchange.retry_policy(),
            progress=context.log.info if long_window else None,
        )
        fetched = [s for s in exchange.symbols if s not in download.failures]
        if not long_window:
            counts = ", ".join(f"{symbol} {rows}" for symbol, rows in download.pages_rows.items())
            context.log.info(
                f"{settings.market.base_timeframe} candles from {exchange.exchange} for {start:%Y-%m-%d}: {counts}"
            )
        if not fetched:
            raise dg.Failure(
                "no symbol could be downloaded; nothing was written",
                metadata={"failures": download.failures},
            )
        try:
            validate_candles(download.candles)
        except CandleValidationError as exc:
            raise dg.Failure(str(exc), metadata={"violations": [str(v) for v in exc.violations[:50]]}) from exc

        now_ms = client.milliseconds()
        now = datetime.fromtimestamp(now_ms / 1000, tz=UTC)
        expected_end = closed_window_end(end, now_ms, exchange.base_timeframe)
        gaps = find_gaps(download.candles, fetched, exchange.base_timeframe, start, expected_end)
        candles_frame = download.candles.sort("symbol", "timeframe", "ts")

        with duckdb.get_connection() as connection:
            replace_window(
                connection,
                [(CANDLES_TABLE, candles_frame, "ts", fetched), (GAPS_TABLE, gaps, "gap_start", fetched)],
                start,
                end,
            )
            outcomes = candle_checks(connection, CANDLES_TABLE, start, end, now)
            outcomes.append(
                last_candle_not_stale(
                    connection, CANDLES_TABLE, fetched, exchange.base_timeframe, start, expected_end, tolerance
                )
            )
            jumps = no_price_jump(connection, CANDLES_TABLE, start, end)
            table_rows = connection.execute(f"SELECT count(*) FROM {CANDLES_TABLE}").fetchall()[0][0]

        if download.failures:
            context.log.warning(f"skipped symbols that kept failing: {download.failures}")
        span = candles_frame.select(pl.col("ts").min().alias("first"), pl.col("ts").max().alias("last"))
        first, last = span.row(0)
        per_symbol = candles_frame.group_by("symbol").len().sort("symbol").rows() if candles_frame.height else []
        results = [check_result(o, CANDLES_KEY) for o in outcomes]
        results.append(
            dg.AssetCheckResult(
                asset_key=CANDLES_KEY,
                check_name="all_symbols_fetched",
                passed=not download.failures,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={"failures": download.failures},
            )
        )
        results.append(
            dg.AssetCheckResult(
                asset_key=CANDLES_KEY,
                check_name=jumps.name,
                passed=jumps.passed,
                severity=dg.AssetCheckSeverity.WARN,
                metadata=jumps.metadata,
            )
        )
        if not jumps.passed:
            context.log.warning(f"price jumps in {CANDLES_TABLE}: " + "; ".join(jumps.metadata["examples"]))
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": candles_frame.height,
                "table": CANDLES_TABLE,
                "table_rows_total": table_rows,
                "first_candle": first.isoformat() if first else "none",
                "last_candle": last.isoformat() if last else "none",
                "rows_per_symbol": dict(per_symbol),
                "gaps_found": gaps.height,
                "missing_candles": int(gaps["missing_candles"].sum()) if gaps.height else 0,
                "gaps": dg.MetadataValue.md(_gaps_markdown(gaps)) if gaps.height else "none",
                "failed_symbols": download.failures,
                "exchange_now": now.isoformat(),
            },
            check_results=results,
        )

    return candles


def _gaps_markdown(gaps: pl.DataFrame, limit: int = 50) -> str:
    lines = ["| symbol | gap_start | gap_end | missing candles |", "|---|---|---|---|"]
    for symbol, _, gap_start, gap_end, missing in gaps.head(limit).iter_rows():
        lines.append(f"| {symbol} | {gap_start:%Y-%m-%d %H:%M} | {gap_end:%Y-%m-%d %H:%M} | {missing} |")
    if gaps.height > limit:
        lines.append(f"| ... {gaps.height - limit} more | | | |")
    return "\n".join(lines)
