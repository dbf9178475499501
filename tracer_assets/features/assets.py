"""features/indicators: TA-Lib-exact indicators for every symbol and timeframe in market.ohlcv.

Daily partitions like the candles. A partition is computed from its own candles plus the
WARMUP_BARS before them, so a tick's work is bounded by symbols x timeframes x lookback, not
by stored history; a backfill of a range (one run) recomputes the range the same way.
"""

from datetime import UTC

import dagster as dg
import polars as pl

from tracer_assets.checks import check_result
from tracer_assets.features.indicators import INDICATOR_COLUMNS, WARMUP_BARS, compute_indicators
from tracer_assets.features.keys import INDICATORS_KEY, INDICATORS_TABLE
from tracer_assets.features.store import read_with_warmup
from tracer_assets.guards import guard_outcome, warmup_mismatches
from tracer_assets.market.keys import CANDLES_KEY, CANDLES_RESAMPLED_KEY, OHLCV_KEY
from tracer_assets.policies import DUCKDB_POOL, SINGLE_RUN_BACKFILL
from tracer_assets.resources.warehouse import TracerDuckDB
from tracer_assets.settings import Settings
from tracer_assets.tables import replace_window

# The tables behind the market.ohlcv view, which the view reads when indicators query it. Declared
# too because a run that leaves the already-created view out of its selection (the trading tick
# does) would otherwise have no dependency between candles and indicators, and Dagster could run
# the indicators first, on the previous tick's candles.
OHLCV_SOURCE_KEYS = (CANDLES_KEY, CANDLES_RESAMPLED_KEY)


def _turn(run_id: str, count: int) -> int:
    return int(run_id.replace("-", ""), 16) % count


def build_indicators_asset(settings: Settings, partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    timeframes = settings.market.all_timeframes
    exchange_symbols = list(settings.market.symbols)

    @dg.asset(
        key=INDICATORS_KEY,
        deps=[OHLCV_KEY, *OHLCV_SOURCE_KEYS],
        description=(
            "EMA 12/26/50/200, MACD 12/26/9, RSI 14, ATR 14 (TA-Lib's definitions), log return, "
            f"volume z-score and realized volatility for every symbol and timeframe ({', '.join(timeframes)}). "
            f"Each partition is computed from its candles plus {WARMUP_BARS} bars of warm-up."
        ),
        partitions_def=partitions,
        backfill_policy=SINGLE_RUN_BACKFILL,
        pool=DUCKDB_POOL,
        group_name="features",
        kinds={"duckdb", "polars"},
        check_specs=[
            dg.AssetCheckSpec(
                "warmup_is_enough",
                asset=INDICATORS_KEY,
                blocking=True,
                description=(
                    "Recursive guard: the newest values are unchanged (1e-9 relative) "
                    f"when the {WARMUP_BARS}-bar warm-up is doubled."
                ),
            )
        ],
    )
    def indicators(context: dg.AssetExecutionContext, duckdb: TracerDuckDB):
        window = context.partition_time_window
        start, end = window.start.astimezone(UTC), window.end.astimezone(UTC)
        with duckdb.get_connection() as connection:
            candles = read_with_warmup(connection, timeframes, start, end, WARMUP_BARS)
            computed = compute_indicators(candles).filter(pl.col("ts") >= start)
            symbols = computed["symbol"].unique().sort().to_list()
            if computed.is_empty():
                context.log.warning("no candles in this window: nothing to compute")
            else:
                replace_window(connection, [(INDICATORS_TABLE, computed, "ts", symbols)], start, end)
            # The guard reads what the next tick will read, the newest 2 x WARMUP_BARS bars, of
            # one symbol per run, picked from the run id (over many ticks, every symbol).
            guarded = [exchange_symbols[_turn(context.run.run_id, len(exchange_symbols))]]
            newest = read_with_warmup(connection, timeframes, end, end, 2 * WARMUP_BARS, guarded)
        mismatches = warmup_mismatches(newest, compute_indicators, WARMUP_BARS, INDICATOR_COLUMNS)
        per_timeframe = dict(computed.group_by("timeframe").len().rows()) if computed.height else {}
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": computed.height,
                "rows_per_timeframe": per_timeframe,
                "symbols": symbols,
                "warmup_bars": WARMUP_BARS,
                "candles_read": candles.height,
            },
            check_results=[
                check_result(guard_outcome("warmup_is_enough", mismatches, symbol=guarded[0]), INDICATORS_KEY)
            ],
        )

    return indicators
