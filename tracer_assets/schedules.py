"""The trading tick: every TRACER_TICK_CRON, today's candles, resampled timeframes,
indicators and signals, where "today" is the exchange's today (the replay clock's on replay)."""

from datetime import datetime, timezone

import dagster as dg

from tracer_assets.resources.exchange import ExchangeResource
from tracer_assets.settings import Settings

TICK_JOB = "trading_tick_job"


def build_tick(settings: Settings, partitions: dg.PartitionsDefinition):
    tick_job = dg.define_asset_job(
        TICK_JOB,
        selection=dg.AssetSelection.groups("market", "features", "signals"),
        description="One trading tick: the exchange's current day of candles, resampled, indicators, signals.",
    )

    @dg.schedule(
        name="trading_tick",
        cron_schedule=settings.tick_cron,
        job=tick_job,
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Refresh today's market data and signals; the signal sensor reacts to the new signals.",
    )
    def trading_tick(context: dg.ScheduleEvaluationContext, exchange: ExchangeResource):
        now_ms = exchange.client().milliseconds()
        today = datetime.fromtimestamp(now_ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d")
        if not partitions.has_partition_key(today):
            return dg.SkipReason(f"the exchange's day {today} is outside the candle partitions")
        return dg.RunRequest(partition_key=today, tags={"tracer/exchange_now": str(now_ms)})

    return tick_job, trading_tick
