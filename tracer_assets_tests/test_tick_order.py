"""The scheduled trading tick on a moving replay clock computes its signals from the candles it
just fetched, also when it leaves the already-created market/ohlcv view out of its selection
(the view was the only path from market/candles to features/indicators, so the steps could run
as indicators -> candles -> signals -> resampled, one tick behind); the first tick after
midnight also fetches the day before's last candles; a day outside the partitions is skipped."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg
import duckdb
from conftest import evaluate_tick
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from tracer_assets.definitions import TICK_JOB, build_definitions
from tracer_assets.settings import load_settings

QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
DAY_START = datetime(2024, 9, 5, tzinfo=UTC)
OHLCV = dg.AssetKey(["market", "ohlcv"])


def newest(database: str, sql: str) -> dict[tuple[str, str], datetime]:
    with duckdb.connect(database, read_only=True) as connection:
        return {(symbol, tf): ts for symbol, tf, ts in connection.execute(sql).fetchall()}


def test_a_scheduled_tick_on_a_moving_clock_signals_the_candles_it_just_fetched(tracer_env, monkeypatch):
    database = tracer_env["TRACER_DUCKDB_PATH"]

    def clock_at(at: datetime) -> dg.Definitions:
        monkeypatch.setenv("TRACER_REPLAY_START", DAY_START.isoformat())
        monkeypatch.setenv("TRACER_REPLAY_ANCHOR", (datetime.now(UTC) - (at - DAY_START)).isoformat())
        return build_definitions(load_settings())

    defs = clock_at(DAY_START + timedelta(minutes=30))
    with dg.DagsterInstance.get() as instance:
        history = defs.resolve_job_def(TICK_JOB).execute_in_process(
            instance=instance,
            run_config=QUIET,
            tags={ASSET_PARTITION_RANGE_START_TAG: "2024-07-23", ASSET_PARTITION_RANGE_END_TAG: "2024-09-04"},
        )
        assert history.success
        # The clock moves on by 5, then 65 minutes: each scheduled tick brings new 5m candles
        # (and, at 01:35, the first complete 1h candle of the day).
        for minutes in (35, 100):
            defs = clock_at(DAY_START + timedelta(minutes=minutes))
            request = evaluate_tick(defs, instance).run_requests[0]
            assert OHLCV not in request.asset_selection  # the view stands: the case that ran out of order
            tick = defs.resolve_job_def(TICK_JOB).execute_in_process(
                instance=instance,
                run_config=QUIET,
                partition_key=request.partition_key,
                asset_selection=request.asset_selection,
                tags=request.tags,
            )
            assert tick.success
            candles = newest(database, "SELECT symbol, timeframe, max(ts) FROM market.ohlcv GROUP BY ALL")
            signals = newest(database, "SELECT symbol, timeframe, ts FROM signals.signals")
            assert set(signals) == set(candles) and len(signals) == 2 * 4
            assert signals == candles, f"at +{minutes} min: signals {signals} behind candles {candles}"
            assert candles[("BTC/USDT", "5m")] == DAY_START + timedelta(minutes=minutes - 5)


def test_the_first_tick_after_midnight_also_fetches_the_last_candles_of_the_day_before(tracer_env, monkeypatch):
    database = tracer_env["TRACER_DUCKDB_PATH"]
    candles_newest = "SELECT symbol, timeframe, max(ts) FROM market.candles GROUP BY ALL"

    def clock_at(at: datetime) -> dg.Definitions:
        monkeypatch.setenv("TRACER_REPLAY_START", at.isoformat())
        monkeypatch.setenv("TRACER_REPLAY_ANCHOR", datetime.now(UTC).isoformat())
        return build_definitions(load_settings())

    def scheduled_tick(instance: dg.DagsterInstance, at: datetime) -> dg.RunRequest:
        """The schedule's request at `at`, run as the daemon would (its candles: what decides the next request)."""
        defs = clock_at(at)
        [request] = evaluate_tick(defs, instance).run_requests
        run = defs.resolve_job_def(TICK_JOB).execute_in_process(
            instance=instance,
            run_config=QUIET,
            partition_key=request.partition_key,
            asset_selection=[dg.AssetKey(["market", "candles"])],
            tags=request.tags,
        )
        assert run.success
        return request

    def days(request: dg.RunRequest) -> tuple[str, str]:
        if request.partition_key:
            return request.partition_key, request.partition_key
        return request.tags[ASSET_PARTITION_RANGE_START_TAG], request.tags[ASSET_PARTITION_RANGE_END_TAG]

    with dg.DagsterInstance.get() as instance:
        # 23:58: an ordinary tick, today only; the 23:55 candle has not closed yet.
        assert days(scheduled_tick(instance, DAY_START - timedelta(minutes=2))) == ("2024-09-04", "2024-09-04")
        assert newest(database, candles_newest)[("BTC/USDT", "5m")] == DAY_START - timedelta(minutes=10)
        # 00:02: the 23:58 tick missed the 23:55 candle (closed at 00:00), so yesterday comes too.
        assert days(scheduled_tick(instance, DAY_START + timedelta(minutes=2))) == ("2024-09-04", "2024-09-05")
        assert newest(database, candles_newest) == {
            (symbol, "5m"): DAY_START - timedelta(minutes=5) for symbol in ("BTC/USDT", "ETH/USDT")
        }
        # 00:08: yesterday was fetched after midnight; today only again.
        assert days(scheduled_tick(instance, DAY_START + timedelta(minutes=8))) == ("2024-09-05", "2024-09-05")
        assert newest(database, candles_newest)[("BTC/USDT", "5m")] == DAY_START  # 00:00, closed at 00:05


def test_the_tick_skips_a_day_outside_the_partitions(tracer_env, monkeypatch):
    monkeypatch.setenv("TRACER_END_DATE", "2024-09-04")
    monkeypatch.setenv("TRACER_REPLAY_START", (DAY_START + timedelta(minutes=2)).isoformat())
    monkeypatch.setenv("TRACER_REPLAY_ANCHOR", datetime.now(UTC).isoformat())
    defs = build_definitions(load_settings())
    result = evaluate_tick(defs, dg.DagsterInstance.get())
    assert result.run_requests == []
    assert result.skip_message == "the exchange's day 2024-09-05 is outside the candle partitions"
