"""Policies applied centrally: freshness, backfill and the DuckDB pool, in one place."""

from __future__ import annotations

from datetime import timedelta
from functools import cache
from itertools import islice

from dagster import BackfillPolicy, FreshnessPolicy
from dagster._utils.schedules import cron_string_iterator, is_valid_cron_string

from tracer_assets.settings import Settings, SettingsError

# DuckDB has one writer: every asset that writes runs in this pool (limit 1 in dagster.yaml).
DUCKDB_POOL = "duckdb"

# The IO manager that carries values between the steps of one graph asset (read in the pool,
# compute outside it, write in it); see resources/step_values.py.
STEP_VALUES_IO = "step_values"

# A backfill of a range of days is one run (one fetch, one transaction), not one per day.
SINGLE_RUN_BACKFILL = BackfillPolicy.single_run()


def tick_interval(settings: Settings) -> timedelta:
    """The longest wait between two trading ticks of TRACER_TICK_CRON, over one day."""
    return _longest_wait(settings.market.tick_cron)


@cache  # walking a day of cron ticks takes ~60 ms, and every process loading the definitions asks
def _longest_wait(cron: str) -> timedelta:
    if not is_valid_cron_string(cron):
        raise SettingsError(f"TRACER_TICK_CRON={cron!r} is not a cron string like '*/3 * * * *'")
    ticks = list(islice(cron_string_iterator(0.0, cron, "UTC"), 1441))
    return max(b - a for a, b in zip(ticks, ticks[1:]))


def loop_freshness(settings: Settings) -> FreshnessPolicy:
    """Fresh within two ticks of the trading loop (candles, signals)."""
    return FreshnessPolicy.time_window(fail_window=2 * tick_interval(settings))


# Research outputs (strategies, backtests, models, rankings, reports): the daily pipeline
# runs at 00:00 UTC, so anything older than a day and two hours missed a run.
DAILY_FRESHNESS = FreshnessPolicy.time_window(fail_window=timedelta(hours=26))
