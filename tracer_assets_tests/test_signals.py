"""Signals: the trading tick end to end on replay data, the lookahead and warm-up guards,
external predictions in the ensemble, and the schedule picking the exchange's day."""

from __future__ import annotations

import json
import os
import threading
from datetime import UTC, datetime, timedelta

import dagster as dg
import duckdb
import polars as pl
import pytest
from conftest import bundled_frame, evaluate_tick
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from tracer_assets.definitions import TICK_JOB, build_definitions
from tracer_assets.features.indicators import INDICATOR_COLUMNS, WARMUP_BARS, compute_indicators
from tracer_assets.guards import lookahead_mismatches, warmup_mismatches
from tracer_assets.market.candles import candles_from_rows
from tracer_assets.settings import load_settings
from tracer_assets.signals.assets import GUARDED_COLUMNS, signal_pipeline
from tracer_assets.signals.scoring import SIGNAL_HISTORY_BARS, ensemble, history_shortfalls, not_converged, score_latest
from tracer_assets.vocabulary import LABELS

QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
TIMEFRAMES = ("5m", "15m", "1h", "4h")


def run_tick(**kwargs):
    defs = build_definitions(load_settings())
    with dg.DagsterInstance.get() as instance:
        return defs.resolve_job_def(TICK_JOB).execute_in_process(instance=instance, run_config=QUIET, **kwargs)


def backfill_then_tick():
    """45 days of history (enough for EMA 200 on 4h), then the tick on the last day."""
    history = run_tick(
        tags={ASSET_PARTITION_RANGE_START_TAG: "2024-07-23", ASSET_PARTITION_RANGE_END_TAG: "2024-09-05"}
    )
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
    assert {tf: ts.strftime("%H:%M") for tf, ts in newest.items()} == {
        "5m": "04:40",
        "15m": "04:30",
        "1h": "03:00",
        "4h": "00:00",
    }
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


def test_external_predictions_join_the_ensemble_and_a_damaged_log_never_breaks_the_tick(
    tracer_env, tmp_path, monkeypatch
):
    log = tmp_path / "macro_signal.log"
    lines = [
        json.dumps(
            {"pair": "BTCUSDT", "tf": "1H", "signal": "STRONG_BEAR", "confidence": 1.0, "ts": "2024-09-06T03:00:00Z"}
        ),
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


def signals_metadata(tick) -> dict:
    return {key: value.value for key, value in tick.asset_materializations_for_node("signals")[0].metadata.items()}


def test_future_stale_and_unconfigured_predictions_never_steer_a_signal(tracer_env, tmp_path, monkeypatch):
    """A line dated 2099 once overrode a newer line and pinned BTC 5m to strong_bull."""
    log = tmp_path / "macro_signal.log"
    lines = [
        {"symbol": "BTC/USDT", "timeframe": "5m", "label": "bear", "confidence": 1.0, "ts": "2024-09-06T04:35:00Z"},
        {
            "symbol": "BTC/USDT",
            "timeframe": "5m",
            "label": "strong_bull",
            "confidence": 1.0,
            "ts": "2099-01-01T00:00:00Z",
        },
        # 04:45 is the candle still open at the tick: after the newest closed one (04:40).
        {
            "symbol": "BTC/USDT",
            "timeframe": "5m",
            "label": "strong_bull",
            "confidence": 1.0,
            "ts": "2024-09-06T04:45:00Z",
        },
        # Four 1h candles before the newest (03:00): stale.
        {
            "symbol": "ETH/USDT",
            "timeframe": "1h",
            "label": "strong_bull",
            "confidence": 1.0,
            "ts": "2024-09-05T23:00:00Z",
        },
        {
            "symbol": "SOL/USDT",
            "timeframe": "5m",
            "label": "strong_bull",
            "confidence": 1.0,
            "ts": "2024-09-06T04:40:00Z",
        },
        {
            "symbol": "BTC/USDT",
            "timeframe": "2h",
            "label": "strong_bull",
            "confidence": 1.0,
            "ts": "2024-09-06T02:00:00Z",
        },
    ]
    log.write_text("".join(json.dumps(line) + "\n" for line in lines) + "not json at all\n")
    monkeypatch.setenv("TRACER_SIGNAL_LOG", str(log))
    tick = backfill_then_tick()
    assert tick.success
    signals = signals_table(tracer_env["TRACER_DUCKDB_PATH"])
    rows = {(r["symbol"], r["timeframe"]): r for r in signals.iter_rows(named=True)}
    btc = rows[("BTC/USDT", "5m")]
    assert btc["predictions_used"] == 2  # the rules and the 04:35 bear line, nothing else
    assert (btc["ensemble_label"], btc["ensemble_confidence"]) == ensemble([(btc["rule_label"], 1.0), ("bear", 1.0)])[
        :2
    ]
    assert all(row["predictions_used"] == 1 for key, row in rows.items() if key != ("BTC/USDT", "5m"))
    metadata = signals_metadata(tick)
    assert {
        key: metadata[key]
        for key in (
            "external_predictions",
            "external_predictions_rejected_future",
            "external_predictions_rejected_unconfigured",
            "external_predictions_ignored_stale",
            "external_predictions_superseded",
            "signal_log_rejected_lines",
        )
    } == {
        "external_predictions": 1,
        "external_predictions_rejected_future": 2,
        "external_predictions_rejected_unconfigured": 2,
        "external_predictions_ignored_stale": 1,
        "external_predictions_superseded": 0,
        "signal_log_rejected_lines": 1,
    }
    assert metadata["signal_log_warning"] == "" and metadata["withheld_symbols"] == []


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_signal_log_that_is_a_fifo_or_a_directory_is_a_warning_never_a_hang(tracer_env, tmp_path, monkeypatch):
    """A FIFO as TRACER_SIGNAL_LOG hung the step forever while it held the DuckDB pool."""
    assert backfill_then_tick().success
    fifo = tmp_path / "fifo.log"
    os.mkfifo(fifo)

    def unblock():  # should the reader ever block on the FIFO, a writer end lets it go (and the test fails)
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass

    watchdog = threading.Timer(60, unblock)
    watchdog.start()
    try:
        for path, kind in ((fifo, "a FIFO (named pipe)"), (tmp_path, "a directory")):
            monkeypatch.setenv("TRACER_SIGNAL_LOG", str(path))
            tick = run_tick(partition_key="2024-09-06")
            assert tick.success
            metadata = signals_metadata(tick)
            assert metadata["signal_log_warning"] == f"not a regular file: {kind}; not opened"
            assert metadata["external_predictions"] == 0
    finally:
        watchdog.cancel()


def step_failure(result, step_key: str = "signals"):
    (failure,) = [e.event_specific_data for e in result.all_events if e.is_step_failure and e.step_key == step_key]
    return failure


def signal_tables(database: str) -> list[str]:
    with duckdb.connect(database, read_only=True) as connection:
        return [
            name
            for (name,) in connection.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'signals'"
            ).fetchall()
        ]


def test_one_day_on_a_new_instance_fails_naming_the_history_needed_and_the_backfill(tracer_env):
    """It crashed with TypeError: unsupported operand type(s) for +: 'NoneType' and 'datetime.timedelta'."""
    tick = run_tick(partition_key="2024-09-06", raise_on_error=False)
    assert not tick.success
    assert [e.step_key for e in tick.all_events if e.is_step_failure] == ["signals"]  # the market data landed
    failure = step_failure(tick)
    assert failure.error.cls_name == "Failure"
    message = failure.user_failure_data.description
    assert SIGNAL_HISTORY_BARS == 200
    assert "which takes 200 candles of each symbol and timeframe" in message
    assert (
        "Short: BTC/USDT 5m 57 of 200 candles, 15m 19 of 200 candles, 1h 4 of 200 candles, 4h 1 of 200 candles; "
        "ETH/USDT 5m 57" in message
    )
    assert "No signal was published" in message
    # 200 4h candles up to 2024-09-06 00:00 start on 2024-08-03.
    command = (
        "dagster job execute -m tracer_assets.definitions -j trading_tick_job --tags "
        '\'{"dagster/asset_partition_range_start": "2024-08-03", "dagster/asset_partition_range_end": "2024-09-06"}\''
    )
    assert command in message
    assert signal_tables(tracer_env["TRACER_DUCKDB_PATH"]) == []  # nothing written, not even empty tables

    # The command the message gives, as a run: then the tick publishes every signal.
    history = run_tick(
        tags={ASSET_PARTITION_RANGE_START_TAG: "2024-08-03", ASSET_PARTITION_RANGE_END_TAG: "2024-09-06"}
    )
    assert history.success
    assert signals_table(tracer_env["TRACER_DUCKDB_PATH"]).height == 8


def test_a_day_with_enough_base_candles_but_short_higher_timeframes_publishes_nothing(tracer_env):
    """2024-01-01 alone: 288 5m candles are enough, the 15m, 1h and 4h ones are not. Before, the 5m signals
    were published alone (their conviction missing its confirmation across timeframes)."""
    tick = run_tick(partition_key="2024-01-01", raise_on_error=False)
    assert not tick.success
    message = step_failure(tick).user_failure_data.description
    assert (
        "Short: BTC/USDT 15m 96 of 200 candles, 1h 24 of 200 candles, 4h 6 of 200 candles; ETH/USDT 15m 96" in message
    )
    assert " 5m " not in message.split("Short:")[1].split(".")[0]
    # The bundled candles begin that day: the backfill can only start there.
    assert (
        "The candles begin on 2024-01-01: 2024-01-01 cannot have that history; the first day that can is 2024-02-03."
        in message
    )
    assert (
        '"dagster/asset_partition_range_start": "2024-01-01", "dagster/asset_partition_range_end": "2024-02-03"'
        in message
    )
    assert signal_tables(tracer_env["TRACER_DUCKDB_PATH"]) == []


def test_a_symbol_without_the_history_is_withheld_and_the_others_published(tracer_env, tmp_path, monkeypatch):
    monkeypatch.setenv("TRACER_SYMBOLS", "BTC/USDT")
    assert run_tick(
        tags={ASSET_PARTITION_RANGE_START_TAG: "2024-08-03", ASSET_PARTITION_RANGE_END_TAG: "2024-09-05"}
    ).success
    monkeypatch.setenv("TRACER_SYMBOLS", "BTC/USDT,ETH/USDT")  # ETH added without its history
    log = tmp_path / "macro_signal.log"
    log.write_text(
        json.dumps({"symbol": "ETH/USDT", "timeframe": "5m", "label": "strong_bull", "ts": "2024-09-06T04:40:00Z"})
    )
    monkeypatch.setenv("TRACER_SIGNAL_LOG", str(log))
    tick = run_tick(partition_key="2024-09-06")
    assert tick.success
    signals = signals_table(tracer_env["TRACER_DUCKDB_PATH"])
    assert sorted(zip(signals["symbol"], signals["timeframe"])) == sorted(("BTC/USDT", tf) for tf in TIMEFRAMES)
    metadata = signals_metadata(tick)
    assert metadata["withheld_symbols"] == ["ETH/USDT"]
    assert metadata["external_predictions"] == 0 and metadata["external_predictions_rejected_no_signal"] == 1
    assert metadata["history_bars_min"] >= SIGNAL_HISTORY_BARS


def test_a_signal_exists_from_exactly_the_history_bars_on():
    enough = _series_of("BTC/USDT", SIGNAL_HISTORY_BARS)
    latest = score_latest(compute_indicators(enough))
    assert latest["ts"].to_list() == [enough["ts"].max()]
    assert score_latest(compute_indicators(enough.tail(SIGNAL_HISTORY_BARS - 1))).is_empty()


def test_history_shortfalls_name_every_short_or_unscored_series():
    bars = {("BTC/USDT", "5m"): 3000, ("BTC/USDT", "1h"): 199, ("ETH/USDT", "5m"): 250}
    scored = [("BTC/USDT", "5m"), ("BTC/USDT", "1h"), ("SOL/USDT", "5m")]
    shortfalls = history_shortfalls(bars, scored, ["BTC/USDT", "ETH/USDT"], ["5m", "1h"])
    assert [str(s) for s in shortfalls] == [
        "BTC/USDT 1h: 199 of 200 candles",
        "ETH/USDT 5m: 250 candles but no indicators at the newest one (features/indicators not materialized for it)",
        "ETH/USDT 1h: 0 of 200 candles",
    ]
    assert history_shortfalls(bars, scored, ["BTC/USDT"], ["5m"]) == []
    assert not_converged(bars) == [("BTC/USDT", "1h"), ("ETH/USDT", "5m")]  # fewer than 2,733


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
    external = {
        ("BTC/USDT", "5m"): {"label": "strong_bear", "confidence": 1.0},
        ("ETH/USDT", "5m"): {"label": "strong_bull"},
    }
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
    request = evaluate_tick(defs, dg.DagsterInstance.get()).run_requests[0]
    assert request.partition_key == "2024-09-06"  # the stopped replay clock: the end of the data

    # A running replay clock: started an hour ago at 2024-06-01 00:00, at 60x: 2024-06-03 12:00.
    anchor = datetime.now(UTC) - timedelta(hours=1)
    monkeypatch.setenv("TRACER_REPLAY_START", "2024-06-01T00:00:00Z")
    monkeypatch.setenv("TRACER_REPLAY_SPEED", "60")
    monkeypatch.setenv("TRACER_REPLAY_ANCHOR", anchor.isoformat())
    defs = build_definitions(load_settings())
    request = evaluate_tick(defs, dg.DagsterInstance.get()).run_requests[0]
    assert request.partition_key == "2024-06-03"


def test_a_tick_leaves_existing_views_be_and_recreates_missing_ones(tracer_env):
    defs = build_definitions(load_settings())
    ohlcv = dg.AssetKey(["market", "ohlcv"])

    with dg.DagsterInstance.get() as instance:
        first = evaluate_tick(defs, instance).run_requests[0]
        assert ohlcv in first.asset_selection  # never created: the tick creates it
        assert backfill_then_tick().success
        request = evaluate_tick(defs, instance).run_requests[0]
        assert ohlcv not in request.asset_selection
        assert {k.to_user_string() for k in request.asset_selection} == {
            "market/candles",
            "market/candles_resampled",
            "features/indicators",
            "ml/predictions",
            "signals/signals",
            "signals/signal_history",
        }
        tick = defs.resolve_job_def(TICK_JOB).execute_in_process(
            instance=instance,
            run_config=QUIET,
            partition_key=request.partition_key,
            asset_selection=request.asset_selection,
        )
    assert tick.success
    materialized = {event.asset_key.to_user_string() for event in tick.get_asset_materialization_events()}
    assert materialized == {k.to_user_string() for k in request.asset_selection}
