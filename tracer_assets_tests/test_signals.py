"""Signals: the trading tick end to end on replay data, the lookahead and warm-up guards,
external predictions in the ensemble, and the schedule picking the exchange's day."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import dagster as dg
import duckdb
import polars as pl
import pytest
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from conftest import bundled_frame
from tracer_assets.definitions import TICK_JOB, build_definitions
from tracer_assets.features.indicators import INDICATOR_COLUMNS, WARMUP_BARS, compute_indicators
from tracer_assets.market.candles import candles_from_rows
from tracer_assets.settings import load_settings
from tracer_assets.signals.assets import GUARDED_COLUMNS, signal_pipeline
from tracer_assets.signals.guards import lookahead_mismatches, warmup_mismatches
from tracer_assets.signals.predictions import LABELS
from tracer_assets.signals.scoring import ensemble, score_latest

QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
TIMEFRAMES = ("5m", "15m", "1h", "4h")


def run_tick(**kwargs):
    defs = build_definitions(load_settings())
    with dg.DagsterInstance.get() as instance:
        return defs.resolve_job_def(TICK_JOB).execute_in_process(instance=instance, run_config=QUIET, **kwargs)


def backfill_then_tick():
    """45 days of history (enough for EMA 200 on 4h), then the tick on the last day."""
    history = run_tick(tags={ASSET_PARTITION_RANGE_START_TAG: "2024-07-23", ASSET_PARTITION_RANGE_END_TAG: "2024-09-05"})
    assert history.success
    return run_tick(partition_key="2024-09-06")


def signals_table(database: str) -> pl.DataFrame:
    with duckdb.connect(database, read_only=True) as connection:
        return connection.sql("SELECT * FROM signals.signals ORDER BY symbol, timeframe").pl()


def test_the_tick_produces_one_signal_per_symbol_and_timeframe(tracer_env):
    tick = backfill_then_tick()
    assert tick.success
    signals = signals_table(tracer_env["TRACER_DUCKDB_PATH"])
    assert sorted(zip(signals["symbol"], signals["timeframe"])) == sorted(
        (s, tf) for s in ("BTC/USDT", "ETH/USDT") for tf in TIMEFRAMES
    )
    newest = {tf: ts for tf, ts in signals.group_by("timeframe").agg(pl.col("ts").max()).rows()}
    # The newest closed candle of each timeframe on the last bundled day (04:45 is "now").
    assert {tf: ts.strftime("%H:%M") for tf, ts in newest.items()} == {"5m": "04:40", "15m": "04:30", "1h": "03:00", "4h": "00:00"}
    assert signals["signal_quality"].is_between(0, 10).all()
    assert signals["conviction"].is_between(0, 10).all()
    assert signals["regime_confidence"].is_between(0, 1).all()
    assert signals["ensemble_confidence"].is_between(0, 1).all()
    assert set(signals["regime"]) <= {"Bull", "Bear", "Flat"}
    assert set(signals["ensemble_label"]) <= set(LABELS)
    checks = {(e.asset_key.to_user_string(), e.check_name): e.passed for e in tick.get_asset_check_evaluations()}
    assert checks[("features/indicators", "warmup_is_enough")]
    assert checks[("signals/signals", "no_lookahead")]

    # Append-only history: both runs' signals are there, tagged with their run.
    with duckdb.connect(tracer_env["TRACER_DUCKDB_PATH"], read_only=True) as connection:
        runs = connection.execute("SELECT run_id, count(*) FROM signals.signal_history GROUP BY 1").fetchall()
    assert len(runs) == 2 and all(count == 8 for _, count in runs)


def test_indicators_of_the_tick_equal_a_full_history_recompute(tracer_env):
    """The tick computes over a bounded window; a full recompute gives the same values."""
    assert backfill_then_tick().success
    with duckdb.connect(tracer_env["TRACER_DUCKDB_PATH"], read_only=True) as connection:
        stored = connection.sql(
            "SELECT * FROM features.indicators WHERE ts >= '2024-09-06' ORDER BY symbol, timeframe, ts"
        ).pl()
        candles = connection.sql("SELECT * FROM market.ohlcv").pl()
    full = compute_indicators(candles.with_columns(pl.col("ts").dt.convert_time_zone("UTC")))
    joined = stored.with_columns(pl.col("ts").dt.convert_time_zone("UTC")).join(
        full, on=["symbol", "timeframe", "ts"], suffix="_full"
    )
    assert joined.height == stored.height > 0
    for column in INDICATOR_COLUMNS:
        a, b = joined[column], joined[f"{column}_full"]
        assert (a.is_null() == b.is_null()).all(), column
        relative = ((a - b).abs() / b.abs().clip(lower_bound=1e-12)).max()
        assert relative is None or relative < 1e-9, (column, relative)


def test_external_predictions_join_the_ensemble_and_a_damaged_log_never_breaks_the_tick(tracer_env, tmp_path, monkeypatch):
    log = tmp_path / "macro_signal.log"
    lines = [
        json.dumps({"pair": "BTCUSDT", "tf": "1H", "signal": "STRONG_BEAR", "confidence": 1.0, "ts": "2024-09-06T03:00:00Z"}),
        "\x00\x01 binary garbage \xff",
        json.dumps({"symbol": "ETH/USDT", "timeframe": "4h", "label": 2, "confidence": 0.9, "ts": 1725580800000}),
        '{"symbol": "BTC/USDT", "timeframe": "5m", "label": "bull", "ts": "2024-09-06T04:',  # cut mid-write
    ]
    log.write_text("\n".join(lines))
    monkeypatch.setenv("TRACER_SIGNAL_LOG", str(log))
    tick = backfill_then_tick()
    assert tick.success
    metadata = tick.asset_materializations_for_node("signals")[0].metadata
    assert metadata["external_predictions"].value == 2
    assert metadata["signal_log_rejected_lines"].value == 2
    signals = signals_table(tracer_env["TRACER_DUCKDB_PATH"])
    used = {(s, tf): n for s, tf, n in signals.select("symbol", "timeframe", "predictions_used").rows()}
    assert used[("BTC/USDT", "1h")] == 2 and used[("ETH/USDT", "4h")] == 2 and used[("BTC/USDT", "5m")] == 1


def _two_series() -> pl.DataFrame:
    return pl.concat([_series_of(symbol, 3200) for symbol in ("BTC/USDT", "ETH/USDT")])


def test_lookahead_guard_catches_a_leaking_indicator():
    candles = _two_series()
    newest = candles["ts"].max()
    samples = [(s, "5m", newest - timedelta(minutes=5 * k)) for s in ("BTC/USDT", "ETH/USDT") for k in (1, 25)]
    assert lookahead_mismatches(candles, signal_pipeline, samples, GUARDED_COLUMNS) == []

    def leaking(frame: pl.DataFrame) -> pl.DataFrame:
        # An "EMA" that peeks one candle ahead, as a centred window or shift(-1) would.
        out = signal_pipeline(frame)
        return out.with_columns(pl.col("ema_12").shift(-1).over("symbol", "timeframe"))

    caught = lookahead_mismatches(candles, leaking, samples, GUARDED_COLUMNS)
    assert {(m.symbol, m.column) for m in caught} == {("BTC/USDT", "ema_12"), ("ETH/USDT", "ema_12")}
    assert len(caught) == len(samples)


def test_warmup_guard_catches_too_short_a_window():
    candles = _two_series()
    assert warmup_mismatches(candles, compute_indicators, 1000, INDICATOR_COLUMNS) != []  # EMA 200 not converged
    long_history = _series_of("BTC/USDT", 2 * WARMUP_BARS + 10)
    assert warmup_mismatches(long_history, compute_indicators, WARMUP_BARS, INDICATOR_COLUMNS) == []


def _series_of(symbol: str, bars: int) -> pl.DataFrame:
    raw = bundled_frame(symbol).tail(bars)
    rows = raw.select(pl.col("date").dt.epoch("ms"), "open", "high", "low", "close", "volume").rows()
    return candles_from_rows([list(r) for r in rows], symbol, "5m")


@pytest.mark.parametrize(
    ("predictions", "label", "confidence"),
    [
        ([("strong_bull", 1.0)], "strong_bull", 1.0),
        ([("bull", 1.0), ("strong_bull", 1.0)], "strong_bull", 1.0),  # mean 1.5
        ([("bull", 1.0), ("bear", 1.0)], "other", 0.0),
        ([("strong_bear", 1.0), ("bull", 0.5)], "bear", 0.6667),  # mean -1.0
        ([("other", 1.0), ("bull", 1.0)], "bull", 0.5),  # mean 0.5
        ([("bull", 0.0)], "other", 0.0),  # no weight at all
    ],
)
def test_ensemble_table(predictions, label, confidence):
    got_label, got_confidence, count = ensemble(predictions)
    assert (got_label, got_confidence, count) == (label, confidence, len(predictions))


def test_an_external_prediction_moves_the_label():
    indicators = compute_indicators(_two_series())
    alone = score_latest(indicators)
    assert alone["predictions_used"].to_list() == [1, 1]
    external = {("BTC/USDT", "5m"): {"label": "strong_bear", "confidence": 1.0}, ("ETH/USDT", "5m"): {"label": "strong_bull"}}
    combined = score_latest(indicators, external)
    assert combined["predictions_used"].to_list() == [2, 2]
    for symbol, rule_label in zip(alone["symbol"], alone["rule_label"]):
        prediction = external[(symbol, "5m")]
        expected = ensemble([(rule_label, 1.0), (prediction["label"], prediction.get("confidence", 0.5))])
        row = combined.filter(pl.col("symbol") == symbol).row(0, named=True)
        assert (row["ensemble_label"], row["ensemble_confidence"]) == expected[:2]


def test_the_tick_schedule_asks_for_the_exchanges_day(tracer_env, monkeypatch):
    defs = build_definitions(load_settings())
    schedule = defs.resolve_schedule_def("trading_tick")
    assert schedule.cron_schedule == "*/3 * * * *"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    with dg.build_schedule_context(
        instance=dg.DagsterInstance.get(), resources={"exchange": defs.resources["exchange"]}, repository_def=defs.get_repository_def()
    ) as context:
        request = schedule.evaluate_tick(context).run_requests[0]
    assert request.partition_key == "2024-09-06"  # the stopped replay clock: the end of the data

    # A running replay clock: started an hour ago at 2024-06-01 00:00, at 60x: 2024-06-03 12:00.
    anchor = datetime.now(timezone.utc) - timedelta(hours=1)
    monkeypatch.setenv("TRACER_REPLAY_START", "2024-06-01T00:00:00Z")
    monkeypatch.setenv("TRACER_REPLAY_SPEED", "60")
    monkeypatch.setenv("TRACER_REPLAY_ANCHOR", anchor.isoformat())
    defs = build_definitions(load_settings())
    with dg.build_schedule_context(
        instance=dg.DagsterInstance.get(), resources={"exchange": defs.resources["exchange"]}, repository_def=defs.get_repository_def()
    ) as context:
        request = defs.resolve_schedule_def("trading_tick").evaluate_tick(context).run_requests[0]
    assert request.partition_key == "2024-06-03"


def test_a_tick_leaves_existing_views_be_and_recreates_missing_ones(tracer_env):
    defs = build_definitions(load_settings())
    schedule = defs.resolve_schedule_def("trading_tick")
    ohlcv = dg.AssetKey(["market", "ohlcv"])

    def requested(instance):
        with dg.build_schedule_context(
            instance=instance, resources={"exchange": defs.resources["exchange"]}, repository_def=defs.get_repository_def()
        ) as context:
            return schedule.evaluate_tick(context).run_requests[0]

    with dg.DagsterInstance.get() as instance:
        first = requested(instance)
        assert ohlcv in first.asset_selection  # never created: the tick creates it
        assert backfill_then_tick().success
        request = requested(instance)
        assert ohlcv not in request.asset_selection
        assert {k.to_user_string() for k in request.asset_selection} == {
            "market/candles", "market/candles_resampled", "features/indicators", "signals/signals", "signals/signal_history"
        }
        tick = defs.resolve_job_def(TICK_JOB).execute_in_process(
            instance=instance, run_config=QUIET, partition_key=request.partition_key, asset_selection=request.asset_selection
        )
    assert tick.success
    materialized = {event.asset_key.to_user_string() for event in tick.get_asset_materialization_events()}
    assert materialized == {k.to_user_string() for k in request.asset_selection}
