"""The daily partitions every partitioned asset shares: one UTC day of candles each."""

from datetime import UTC, datetime, timedelta

import dagster as dg

from tracer_assets.settings import Settings

FIRST_BUNDLED_DAY = "2024-01-01"


def candle_partitions(settings: Settings) -> dg.DailyPartitionsDefinition:
    """Daily partitions from TRACER_START_DATE; on replay they end with the data."""
    if settings.market.is_replay:
        from tracer_assets.resources.replay_exchange import ReplayExchange

        replay = ReplayExchange(settings.market.replay_dir, settings.market.symbols, settings.market.base_timeframe)
        first = datetime.fromtimestamp(replay.data_start_ms / 1000, tz=UTC).strftime("%Y-%m-%d")
        last = datetime.fromtimestamp((replay.data_end_ms - 1) / 1000, tz=UTC)
        end = settings.market.end_date or last.strftime("%Y-%m-%d")
        end_exclusive = (datetime.strptime(end, "%Y-%m-%d") + timedelta(days=1)).strftime("%Y-%m-%d")
        return dg.DailyPartitionsDefinition(start_date=settings.market.start_date or first, end_date=end_exclusive)
    if settings.market.end_date:
        end_exclusive = (datetime.strptime(settings.market.end_date, "%Y-%m-%d") + timedelta(days=1)).strftime(
            "%Y-%m-%d"
        )
        return dg.DailyPartitionsDefinition(
            start_date=settings.market.start_date or FIRST_BUNDLED_DAY, end_date=end_exclusive
        )
    # end_offset=1: today's (still growing) partition exists, so the tick can refresh it.
    return dg.DailyPartitionsDefinition(start_date=settings.market.start_date or FIRST_BUNDLED_DAY, end_offset=1)
