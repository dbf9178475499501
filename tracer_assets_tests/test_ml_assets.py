"""The ml domain as a user meets it: the models' vote in the signals' ensemble label, models past
TRACER_MODEL_MAX_AGE_HOURS left out with the reason recorded, the predictions' ensembles limited to
those ranking/ensembles keeps, training followed by a tick that carries the vote (and the seed's
table names as views), and a tick that runs while a training does (training holds no DuckDB pool
slot).

The end-to-end tests share one prepared history (75 days of the bundled candles through the
trading tick, enough for the 4h features' warm-up of FEATURE_WARMUP_BARS bars), copied per test.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pytest
from conftest import MODEL_TIMEFRAMES, QUIET, REPO, SMALL_ML, TEST_SYMBOLS, node_metadata

from tracer_assets.definitions import RESEARCH_JOB, TICK_JOB, build_definitions
from tracer_assets.ml.keys import (
    DATASET_KEY,
    ENSEMBLES_KEY,
    ENSEMBLES_SEED_VIEW,
    ENSEMBLES_TABLE,
    MODEL_RESULTS_KEY,
    MODEL_RESULTS_SEED_VIEW,
    MODEL_RESULTS_TABLE,
    MODELS_KEY,
    OOF_KEY,
    PREDICTIONS_TABLE,
)
from tracer_assets.ml.predict import PREDICTION_COLUMNS, expiry_reason, ml_votes, select_ensembles
from tracer_assets.ml.train import PROBABILITY_COLUMNS
from tracer_assets.policies import DUCKDB_POOL
from tracer_assets.pool import holders
from tracer_assets.ranking.keys import ENSEMBLE_RANKING_KEY, ENSEMBLE_RANKING_TABLE
from tracer_assets.settings import load_settings
from tracer_assets.signals.scoring import ensemble, with_predictions

DAGSTER = str(Path(sys.executable).with_name("dagster"))
SYMBOLS = TEST_SYMBOLS.split(",")
TICK_DAY = "2024-07-15"  # the next day's tick, after the training
OTHER_TIMEFRAMES = ("5m", "15m")
# A training long enough (~15 s of one core's CPU) for a tick to start, run and end inside it.
# One LightGBM thread: with two on a two-core machine that is busy elsewhere (the tick, other
# processes) OpenMP's threads wait on each other and the same fit took 14 times as long.
SLOW_ML = {
    **SMALL_ML,
    "TRACER_ML_ROUNDS": "500",
    "TRACER_ML_THREADS": "1",
    "TRACER_ML_HORIZONS": "4,12",
    "TRACER_ML_FEATURE_SETS": "full,no_context,price",
}
TRAINING_KEYS = [DATASET_KEY, MODELS_KEY, MODEL_RESULTS_KEY, OOF_KEY, ENSEMBLES_KEY]
# ml/models is a graph multi-asset that cannot be subset: its three outputs are selected together.
MODELS_SELECTION = "ml/models,ml/model_results,ml/oof_predictions"
# One training step per model timeframe; the first to start is the first timeframe's.
TRAIN_STEPS = tuple(f"models.ml_train_models_{tf}" for tf in MODEL_TIMEFRAMES)
READ_STEP, WRITE_STEP = "models.ml_read_dataset", "models.ml_write_models"


# --- the vote in the ensemble label (pure) --------------------------------------------------


def _one_signal(weight: float = 1.0, **ml_vote) -> dict:
    """A rule `bull` on BTC/USDT 1h through the ensemble, with `ml_vote` (label, confidence) if given."""
    latest = pl.DataFrame({"symbol": ["BTC/USDT"], "timeframe": ["1h"], "rule_label": ["bull"]})
    votes = {("BTC/USDT", "1h"): ml_vote} if ml_vote else None
    return with_predictions(latest, None, votes, weight).row(0, named=True)


def test_signals_ensemble_label_with_and_without_the_ml_vote():
    # The rules alone: their label, all the weight agrees, one predictor, no ML columns.
    alone = _one_signal()
    assert alone["ensemble_label"] == "bull"
    assert alone["ensemble_confidence"] == 1.0
    assert alone["predictions_used"] == 1
    assert alone["ml_label"] is None and alone["ml_confidence"] is None

    # An ML strong_bear at confidence 0.9, weight 1: mean (1 x 1 + 0.9 x -2) / 1.9 = -0.421, above
    # -0.5 so `other`; its confidence is the weight of the neutral predictions (none) over all: 0.
    against = _one_signal(label="strong_bear", confidence=0.9, ensemble_id="1h-h4-mean")
    mean = (1 * 1 + 0.9 * -2) / 1.9
    assert mean == pytest.approx(-0.421, abs=1e-3) and -0.5 < mean < 0.5
    assert against["ensemble_label"] == "other"
    assert against["ensemble_confidence"] == 0.0
    assert against["predictions_used"] == 2
    assert against["ml_label"] == "strong_bear" and against["ml_confidence"] == pytest.approx(0.9)

    # TRACER_ML_VOTE_WEIGHT=2: the same vote weighs 1.8; (1 - 3.6) / 2.8 = -0.929 -> bear, and the
    # agreeing weight is the vote's: 1.8 / 2.8.
    heavier = _one_signal(label="strong_bear", confidence=0.9, ensemble_id="1h-h4-mean", weight=2.0)
    assert heavier["ensemble_label"] == "bear"
    assert heavier["ensemble_confidence"] == pytest.approx(1.8 / 2.8, abs=1e-4)

    # A vote that agrees: bull + bull at 0.6 -> bull, all of the 1.6 of weight agrees.
    agreeing = _one_signal(label="bull", confidence=0.6, ensemble_id="1h-h4-mean")
    assert (agreeing["ensemble_label"], agreeing["ensemble_confidence"], agreeing["predictions_used"]) == (
        "bull",
        1.0,
        2,
    )
    assert agreeing["ml_label"] == "bull" and agreeing["ml_confidence"] == pytest.approx(0.6)


# --- expiry and the reasons for no vote (a real DuckDB file) ---------------------------------


def _prediction(symbol, timeframe, ts, label, confidence, ensemble_id, trained_at, predicted_at) -> dict:
    rest = (1 - confidence) / (len(PROBABILITY_COLUMNS) - 1)
    values = {
        "symbol": symbol,
        "timeframe": timeframe,
        "ts": ts,
        "label": label,
        **{column: confidence if column == f"p_{label}" else rest for column in PROBABILITY_COLUMNS},
        "confidence": confidence,
        "ensemble_id": ensemble_id,
        "ensemble_hash": f"hash-{ensemble_id}-{trained_at:%H%M}",
        "model_ids": json.dumps([f"{timeframe}-h4-full"]),
        "trained_at": trained_at,
        "run_id": f"run-{predicted_at:%H%M%S}",
        "predicted_at": predicted_at,
    }
    return {column: values[column] for column in (*PREDICTION_COLUMNS, "run_id", "predicted_at")}


def test_expired_models_are_not_used_and_the_reason_is_recorded(tmp_path):
    now = datetime(2024, 7, 16, 0, 5, tzinfo=UTC)
    hour_ts, four_hour_ts, five_minute_ts = (
        datetime(2024, 7, 15, 23, tzinfo=UTC),
        datetime(2024, 7, 15, 20, tzinfo=UTC),
        datetime(2024, 7, 15, 23, 55, tzinfo=UTC),
    )
    newest = {
        ("BTC/USDT", "1h"): hour_ts,
        ("ETH/USDT", "1h"): hour_ts,
        ("BTC/USDT", "4h"): four_hour_ts,
        ("BTC/USDT", "5m"): five_minute_ts,
    }
    fresh, old = now - timedelta(hours=2), now - timedelta(hours=30)
    rows = [
        # BTC 1h: an earlier tick's prediction of the same candle by an older ensemble, then this
        # tick's by the fresh one (the newest prediction of the candle is the one that counts),
        # and a prediction of the candle before (not the newest: ignored).
        _prediction("BTC/USDT", "1h", hour_ts, "bear", 0.6, "1h-h4-stacked", old, now - timedelta(minutes=50)),
        _prediction("BTC/USDT", "1h", hour_ts, "bull", 0.7, "1h-h4-mean", fresh, now - timedelta(minutes=4)),
        _prediction("BTC/USDT", "1h", hour_ts - timedelta(hours=1), "strong_bear", 0.9, "1h-h4-mean", fresh, now),
        # ETH 1h: its newest candle predicted by a model trained 30 h ago.
        _prediction("ETH/USDT", "1h", hour_ts, "strong_bull", 0.8, "1h-h4-stacked", old, now - timedelta(minutes=4)),
        # BTC 4h: only an older candle was predicted.
        _prediction("BTC/USDT", "4h", four_hour_ts - timedelta(hours=4), "bull", 0.5, "4h-h4-mean", fresh, now),
    ]
    database = tmp_path / "votes.duckdb"
    with duckdb.connect(str(database)) as connection:
        connection.execute("CREATE SCHEMA ml")
        frame = pl.DataFrame(rows)
        connection.register("rows", frame.to_arrow())
        connection.execute(f"CREATE TABLE {PREDICTIONS_TABLE} AS SELECT * FROM rows")
        connection.unregister("rows")

    with duckdb.connect(str(database)) as connection:
        votes, reasons = ml_votes(connection, PREDICTIONS_TABLE, newest, MODEL_TIMEFRAMES, now, 26)
    assert votes == {("BTC/USDT", "1h"): {"label": "bull", "confidence": 0.7, "ensemble_id": "1h-h4-mean"}}
    assert set(reasons) == {("ETH/USDT", "1h"), ("BTC/USDT", "4h"), ("BTC/USDT", "5m")}
    expired = reasons[("ETH/USDT", "1h")]
    assert expired.startswith("1h-h4-stacked: ")
    assert "30.0 h ago" in expired and "TRACER_MODEL_MAX_AGE_HOURS=26" in expired
    assert reasons[("BTC/USDT", "4h")].startswith("no prediction of the newest candle")
    assert reasons[("BTC/USDT", "5m")] == "no model for 5m (TRACER_ML_TIMEFRAMES)"

    # The same votes steer the signal: BTC 1h gets the vote, ETH 1h keeps the rules' label alone.
    latest = pl.DataFrame(
        {"symbol": ["BTC/USDT", "ETH/USDT"], "timeframe": ["1h", "1h"], "rule_label": ["strong_bear", "bear"]}
    )
    signals = {row["symbol"]: row for row in with_predictions(latest, None, votes).iter_rows(named=True)}
    assert (signals["BTC/USDT"]["ml_label"], signals["BTC/USDT"]["predictions_used"]) == ("bull", 2)
    assert signals["BTC/USDT"]["ensemble_label"] == "bear"  # (-2 + 0.7) / 1.7 = -0.76
    assert (signals["ETH/USDT"]["ml_label"], signals["ETH/USDT"]["predictions_used"]) == (None, 1)

    # The boundary: a model just under the age votes, one just over does not.
    assert expiry_reason(now - timedelta(hours=25.9), now, 26) is None
    assert "26.1 h ago" in expiry_reason(now - timedelta(hours=26.1), now, 26)

    # No ml.predictions table at all (nothing trained yet).
    with duckdb.connect(str(tmp_path / "empty.duckdb")) as connection:
        votes, reasons = ml_votes(connection, PREDICTIONS_TABLE, newest, MODEL_TIMEFRAMES, now, 26)
    assert votes == {}
    assert reasons == {
        ("BTC/USDT", "1h"): "no model trained yet (ml.predictions missing)",
        ("ETH/USDT", "1h"): "no model trained yet (ml.predictions missing)",
        ("BTC/USDT", "4h"): "no model trained yet (ml.predictions missing)",
        ("BTC/USDT", "5m"): "no model for 5m (TRACER_ML_TIMEFRAMES)",
    }


# --- the ensembles the ranking keeps (pure, then a real DuckDB file) ---------------------------


def _ensembles(*rows: tuple[str, str, float, float]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=["ensemble_id", "timeframe", "f1_macro", "accuracy"], orient="row")


def test_predictions_use_only_the_ensembles_the_ranking_keeps_or_has_not_ranked():
    ensembles = _ensembles(
        # 1h: the two best by F1 archived; the best kept one predicts.
        ("1h-h4-stacked", "1h", 0.25, 0.45),
        ("1h-h4-vote", "1h", 0.22, 0.40),
        ("1h-h4-mean", "1h", 0.21, 0.42),
        ("1h-h12-mean", "1h", 0.20, 0.44),
        # 4h: every one archived: no predictor, and why.
        ("4h-h4-mean", "4h", 0.20, 0.40),
        ("4h-h4-vote", "4h", 0.19, 0.41),
        # 15m: the best by F1 trained after the last ranking (absent from it): eligible, and predicts.
        ("15m-h12-mean", "15m", 0.23, 0.41),
        ("15m-h4-mean", "15m", 0.19, 0.42),
    )
    statuses = {
        "1h-h4-stacked": "archived",
        "1h-h4-vote": "archived",
        "1h-h4-mean": "kept",
        "1h-h12-mean": "kept",
        "4h-h4-mean": "archived",
        "4h-h4-vote": "archived",
        "15m-h4-mean": "kept",
    }
    best, archived = select_ensembles(ensembles, statuses)
    assert {tf: row["ensemble_id"] for tf, row in best.items()} == {"1h": "1h-h4-mean", "15m": "15m-h12-mean"}
    assert archived == {"4h": "every ensemble of 4h archived by ranking/ensembles"}
    assert best["1h"]["f1_macro"] == 0.21
    # Before the first ranking (no ranking.ensembles): every ensemble is eligible, best by F1.
    best, archived = select_ensembles(ensembles, None)
    assert {tf: row["ensemble_id"] for tf, row in best.items()} == {
        "1h": "1h-h4-stacked",
        "4h": "4h-h4-mean",
        "15m": "15m-h12-mean",
    }
    assert archived == {}
    # A ranking that ranked none of them (all trained since): all eligible too.
    assert {tf: r["ensemble_id"] for tf, r in select_ensembles(ensembles, {"old": "archived"})[0].items()} == {
        "1h": "1h-h4-stacked",
        "4h": "4h-h4-mean",
        "15m": "15m-h12-mean",
    }


def test_a_timeframe_whose_ensembles_are_all_archived_gets_no_vote_and_says_why(tmp_path):
    now = datetime(2024, 7, 16, 0, 5, tzinfo=UTC)
    hour_ts, four_hour_ts = datetime(2024, 7, 15, 23, tzinfo=UTC), datetime(2024, 7, 15, 20, tzinfo=UTC)
    newest = {("BTC/USDT", "1h"): hour_ts, ("BTC/USDT", "4h"): four_hour_ts}
    fresh = now - timedelta(hours=2)
    rows = [
        _prediction("BTC/USDT", "1h", hour_ts, "bull", 0.7, "1h-h4-mean", fresh, now - timedelta(minutes=4)),
        # 4h's newest candle was scored before the ranking archived every 4h ensemble: not used.
        _prediction("BTC/USDT", "4h", four_hour_ts, "bear", 0.6, "4h-h4-mean", fresh, now - timedelta(minutes=4)),
    ]
    database = str(tmp_path / "votes.duckdb")
    with duckdb.connect(database) as connection:
        connection.execute("CREATE SCHEMA ml")
        connection.register("rows", pl.DataFrame(rows).to_arrow())
        connection.execute(f"CREATE TABLE {PREDICTIONS_TABLE} AS SELECT * FROM rows")
        connection.execute(f"CREATE TABLE {ENSEMBLES_TABLE} (ensemble_id VARCHAR, timeframe VARCHAR)")
        connection.execute(
            f"INSERT INTO {ENSEMBLES_TABLE} VALUES ('1h-h4-mean', '1h'), ('4h-h4-mean', '4h'), ('4h-h4-vote', '4h')"
        )
        # No ranking yet: both vote.
        votes, reasons = ml_votes(connection, PREDICTIONS_TABLE, newest, MODEL_TIMEFRAMES, now, 26)
        assert set(votes) == set(newest) and reasons == {}
        connection.execute("CREATE SCHEMA ranking")
        connection.execute(f"CREATE TABLE {ENSEMBLE_RANKING_TABLE} (item_id VARCHAR, status VARCHAR)")
        connection.execute(
            f"INSERT INTO {ENSEMBLE_RANKING_TABLE} VALUES ('4h-h4-mean', 'archived'), ('4h-h4-vote', 'archived')"
        )
        votes, reasons = ml_votes(connection, PREDICTIONS_TABLE, newest, MODEL_TIMEFRAMES, now, 26)
    assert votes == {("BTC/USDT", "1h"): {"label": "bull", "confidence": 0.7, "ensemble_id": "1h-h4-mean"}}
    assert reasons == {("BTC/USDT", "4h"): "every ensemble of 4h archived by ranking/ensembles"}


# --- end to end on Dagster --------------------------------------------------------------------


def read_table(database: str, query: str) -> pl.DataFrame:
    with duckdb.connect(database, read_only=True) as connection:
        return connection.sql(query).pl()


@pytest.mark.slow
def test_training_then_a_tick_carries_the_ml_vote(tracer_env, history, monkeypatch):
    database = tracer_env["TRACER_DUCKDB_PATH"]
    shutil.copy(history.database, database)
    for name, value in SMALL_ML.items():
        monkeypatch.setenv(name, value)
    every_series = {f"{s} {tf}" for s in SYMBOLS for tf in (*OTHER_TIMEFRAMES, *MODEL_TIMEFRAMES)}
    # Before any training, the history's tick said why there was no vote.
    assert set(history.signals_metadata["ml_not_used"]) == every_series
    for series, reason in history.signals_metadata["ml_not_used"].items():
        expected = "no model for" if series.split()[1] in OTHER_TIMEFRAMES else "no model trained yet"
        assert reason.startswith(expected), (series, reason)

    defs = build_definitions(load_settings())
    with dg.DagsterInstance.get() as instance:
        research = defs.resolve_job_def(RESEARCH_JOB).execute_in_process(
            instance=instance, run_config=QUIET, asset_selection=TRAINING_KEYS
        )
        assert research.success
        [guard] = [e for e in research.get_asset_check_evaluations() if e.asset_key == DATASET_KEY]
        assert guard.check_name == "no_lookahead" and guard.passed
        tick = defs.resolve_job_def(TICK_JOB).execute_in_process(
            instance=instance, run_config=QUIET, partition_key=TICK_DAY
        )
        assert tick.success

    signals = read_table(database, "SELECT * FROM signals.signals ORDER BY symbol, timeframe")
    predictions = read_table(database, f"SELECT * FROM {PREDICTIONS_TABLE}")
    models = read_table(database, "SELECT model_id, trained_at FROM ml.models")
    # One prediction per symbol and model timeframe, of the newest candle its signal is about.
    newest = {(s, tf): ts for s, tf, ts in signals.select("symbol", "timeframe", "ts").rows()}
    assert sorted(predictions.select("symbol", "timeframe").rows()) == sorted(
        (s, tf) for s in SYMBOLS for tf in MODEL_TIMEFRAMES
    )
    for row in predictions.iter_rows(named=True):
        assert row["ts"] == newest[(row["symbol"], row["timeframe"])], row
        assert row["run_id"] == tick.run_id
        assert row["trained_at"] in set(models["trained_at"])
    assert {tf: f"{newest[('BTC/USDT', tf)]:%H:%M}" for tf in MODEL_TIMEFRAMES} == {"1h": "23:00", "4h": "20:00"}
    assert node_metadata(tick, "ml__predictions")["predicted"] == 4
    # The seed's table names answer, as views of the tables the training wrote.
    with duckdb.connect(database, read_only=True) as connection:
        for view, table in ((MODEL_RESULTS_SEED_VIEW, MODEL_RESULTS_TABLE), (ENSEMBLES_SEED_VIEW, ENSEMBLES_TABLE)):
            differ = connection.execute(
                f"""SELECT (SELECT count(*) FROM (FROM main.{view} EXCEPT ALL FROM {table}))
                         + (SELECT count(*) FROM (FROM {table} EXCEPT ALL FROM main.{view})),
                           (SELECT count(*) FROM main.{view})"""
            ).fetchall()
            assert differ[0][0] == 0 and differ[0][1] > 0, (view, differ)
            assert connection.execute(f"DESCRIBE main.{view}").fetchall() == (
                connection.execute(f"DESCRIBE {table}").fetchall()
            )

    # The signals of 1h and 4h carry the vote, and their label is the documented weighted mean.
    by_series = {(r["symbol"], r["timeframe"]): r for r in signals.iter_rows(named=True)}
    voted = {(r["symbol"], r["timeframe"]): r for r in predictions.iter_rows(named=True)}
    for key, row in by_series.items():
        if key[1] in OTHER_TIMEFRAMES:
            assert row["ml_label"] is None and row["ml_confidence"] is None and row["predictions_used"] == 1, row
            assert (row["ensemble_label"], row["ensemble_confidence"]) == (row["rule_label"], 1.0), row
            continue
        vote = voted[key]
        assert row["ml_label"] == vote["label"] and row["ml_confidence"] == pytest.approx(vote["confidence"])
        assert row["predictions_used"] == 2
        label, confidence, _ = ensemble([(row["rule_label"], 1.0), (vote["label"], vote["confidence"])])
        assert (row["ensemble_label"], row["ensemble_confidence"]) == (label, pytest.approx(confidence)), row
    metadata = node_metadata(tick, "signals")
    assert metadata["predictors"] == {"rules": 8, "ml": 4, "external": 0}
    assert metadata["ml_votes"] == 4
    assert set(metadata["ml_not_used"]) == {f"{s} {tf}" for s in SYMBOLS for tf in OTHER_TIMEFRAMES}
    for series, reason in metadata["ml_not_used"].items():
        assert reason == f"no model for {series.split()[1]} (TRACER_ML_TIMEFRAMES)"

    # Models older than TRACER_MODEL_MAX_AGE_HOURS (0.0001 h = 0.36 s): the next tick predicts
    # again (nothing new to append) but the signals leave the vote out and say why.
    monkeypatch.setenv("TRACER_MODEL_MAX_AGE_HOURS", "0.0001")
    defs = build_definitions(load_settings())
    with dg.DagsterInstance.get() as instance:
        expired = defs.resolve_job_def(TICK_JOB).execute_in_process(
            instance=instance, run_config=QUIET, partition_key=TICK_DAY
        )
        assert expired.success
    assert node_metadata(expired, "ml__predictions")["appended"] == 0
    assert read_table(database, f"SELECT count(*) AS n FROM {PREDICTIONS_TABLE}")["n"][0] == 4
    metadata = node_metadata(expired, "signals")
    assert metadata["predictors"] == {"rules": 8, "ml": 0, "external": 0}
    assert set(metadata["ml_not_used"]) == every_series
    for (symbol, timeframe), vote in voted.items():
        reason = metadata["ml_not_used"][f"{symbol} {timeframe}"]
        pattern = rf"{re.escape(vote['ensemble_id'])}: model trained \d+\.\d h ago, older than "
        assert re.fullmatch(pattern + r"TRACER_MODEL_MAX_AGE_HOURS=0\.0001", reason), reason
    after = read_table(database, "SELECT * FROM signals.signals ORDER BY symbol, timeframe")
    assert after["ml_label"].null_count() == after.height
    assert after["predictions_used"].to_list() == [1] * after.height
    for row in after.iter_rows(named=True):
        assert (row["ensemble_label"], row["ensemble_confidence"]) == (row["rule_label"], 1.0), row
        before = by_series[(row["symbol"], row["timeframe"])]
        assert row["predictions_used"] == before["predictions_used"] - (row["timeframe"] in MODEL_TIMEFRAMES)

    # The ranking keeps 3 ensembles per timeframe (all of them here). Archive every 4h one and 1h's
    # best by F1, as a ranking could: the next tick scores 1h with its best kept ensemble, not 4h,
    # and 4h's earlier prediction of the same candle does not vote.
    monkeypatch.delenv("TRACER_MODEL_MAX_AGE_HOURS")
    defs = build_definitions(load_settings())
    with dg.DagsterInstance.get() as instance:
        ranked = defs.resolve_job_def(RESEARCH_JOB).execute_in_process(
            instance=instance, run_config=QUIET, asset_selection=[ENSEMBLE_RANKING_KEY]
        )
        assert ranked.success
        ranking = read_table(database, f"SELECT ranked_within, item_id, status FROM {ENSEMBLE_RANKING_TABLE}")
        assert sorted(set(ranking["ranked_within"])) == list(MODEL_TIMEFRAMES)
        assert set(ranking["status"]) == {"kept"}
        ensembles = read_table(database, f"SELECT * FROM {ENSEMBLES_TABLE}")
        hour = ensembles.filter(pl.col("timeframe") == "1h").sort(
            ["f1_macro", "accuracy", "ensemble_id"], descending=[True, True, False]
        )
        archived = [hour["ensemble_id"][0], *ensembles.filter(pl.col("timeframe") == "4h")["ensemble_id"]]
        with duckdb.connect(database) as connection:
            connection.execute(
                f"UPDATE {ENSEMBLE_RANKING_TABLE} SET status = 'archived' WHERE list_contains(?, item_id)", [archived]
            )
        kept_tick = defs.resolve_job_def(TICK_JOB).execute_in_process(
            instance=instance, run_config=QUIET, partition_key=TICK_DAY
        )
        assert kept_tick.success
    predicted = node_metadata(kept_tick, "ml__predictions")
    assert predicted["ensembles"] == {"1h": hour["ensemble_id"][1]}
    assert predicted["not_predicting"] == {"4h": "every ensemble of 4h archived by ranking/ensembles"}
    metadata = node_metadata(kept_tick, "signals")
    assert metadata["predictors"] == {"rules": 8, "ml": 2, "external": 0}
    for symbol in SYMBOLS:
        assert metadata["ml_not_used"][f"{symbol} 4h"] == "every ensemble of 4h archived by ranking/ensembles"
        assert f"{symbol} 1h" not in metadata["ml_not_used"]
    used = read_table(database, "SELECT symbol, timeframe, ml_label FROM signals.signals WHERE timeframe = '1h'")
    newest_1h = read_table(
        database, f"SELECT symbol, label, ensemble_id FROM {PREDICTIONS_TABLE} WHERE run_id = '{kept_tick.run_id}'"
    )
    assert newest_1h["ensemble_id"].to_list() == [hour["ensemble_id"][1]] * len(SYMBOLS)
    assert sorted(used.select("symbol", "ml_label").rows()) == sorted(newest_1h.select("symbol", "label").rows())


def dagster_cli(*args: str, env: dict[str, str], wait: bool = True):
    command = [DAGSTER, *args]
    if not wait:
        return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def step_intervals(instance: dg.DagsterInstance, run_id: str) -> dict[str, tuple[float, float]]:
    """(start, end) of each step of a run, from its STEP_START and STEP_SUCCESS/FAILURE events."""
    started, ended = {}, {}
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        if event is None:
            continue
        if event.event_type == dg.DagsterEventType.STEP_START:
            started[event.step_key] = record.timestamp
        elif event.event_type in (dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE):
            ended[event.step_key] = record.timestamp
    return {key: (started[key], ended[key]) for key in started if key in ended}


def overlaps(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def wait_for_step_start(instance, process, known_runs: set[str], step_key: str, timeout: float = 90) -> str:
    """The id of the new run once `step_key` has started in it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = process.stdout.read()[-4000:]
            pytest.fail(f"the training exited ({process.returncode}) before {step_key} started:\n{output}")
        for run in instance.get_runs():
            if run.run_id in known_runs:
                continue
            started = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_START)
            if any(record.dagster_event.step_key == step_key for record in started):
                return run.run_id
        time.sleep(0.2)
    pytest.fail(f"{step_key} did not start within {timeout:.0f} s")


@pytest.mark.slow
def test_a_tick_started_while_training_runs_finishes_before_training_does(tracer_env, history, monkeypatch):
    shutil.copy(history.database, tracer_env["TRACER_DUCKDB_PATH"])
    for name, value in SLOW_ML.items():
        monkeypatch.setenv(name, value)
    env = dict(os.environ)
    done = dagster_cli("instance", "concurrency", "set", "duckdb", "1", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    defs = build_definitions(load_settings())
    with dg.DagsterInstance.get() as instance:
        dataset = defs.resolve_job_def(RESEARCH_JOB).execute_in_process(
            instance=instance, run_config=QUIET, asset_selection=[DATASET_KEY]
        )
        assert dataset.success

        training = dagster_cli(
            "asset", "materialize", "-m", "tracer_assets.definitions", "--select", MODELS_SELECTION, env=env, wait=False
        )
        try:
            training_run = wait_for_step_start(instance, training, {dataset.run_id}, TRAIN_STEPS[0])
            # While it fits, the training holds none of the pool's one slot (`tracer pool` shows holders).
            assert instance.event_log_storage.get_concurrency_info(DUCKDB_POOL).slot_count == 1
            assert [h for h in holders(instance) if h.run_id == training_run] == []
            # The tick, as its schedule would start it, from this process while the fit runs in the other.
            tick = defs.resolve_job_def(TICK_JOB).execute_in_process(
                instance=instance, run_config=QUIET, partition_key=TICK_DAY, raise_on_error=False
            )
            assert tick.success
            training_output = training.communicate(timeout=300)[0]
        except BaseException:
            if training.poll() is None:
                training.kill()
            print(training.communicate()[0][-4000:])
            raise
        assert training.returncode == 0, training_output[-4000:]

        tick_record = instance.get_run_record_by_id(tick.run_id)
        training_record = instance.get_run_record_by_id(training_run)
        assert tick_record.dagster_run.is_success and training_record.dagster_run.is_success
        tick_steps = step_intervals(instance, tick.run_id)
        training_steps = step_intervals(instance, training_run)

    read, write = (training_steps[key] for key in (READ_STEP, WRITE_STEP))
    # The fit: from the first timeframe's training step to the last one's (they run one after
    # another in this asset job's process).
    train = (min(training_steps[k][0] for k in TRAIN_STEPS), max(training_steps[k][1] for k in TRAIN_STEPS))
    tick_start, tick_end = tick_record.start_time, tick_record.end_time
    figures = {
        "tick run (s)": tick_end - tick_start,
        "ml_read_dataset (s)": read[1] - read[0],
        "ml_train_models_* (s)": train[1] - train[0],
        "ml_write_models (s)": write[1] - write[0],
        "training run (s)": training_record.end_time - training_record.start_time,
        "tick ended before the training step (s)": train[1] - tick_end,
    }
    print("\n" + "\n".join(f"  {name:<42}{value:8.1f}" for name, value in figures.items()))

    # The tick started after the training had begun its fit, and ended before the fit did.
    assert train[0] < tick_start and tick_end < train[1] < training_record.end_time
    assert {"signals", "ml__predictions"} <= set(tick_steps)
    for step, interval in tick_steps.items():
        # One writer at a time: no tick step ran while the training held the pool ...
        assert not overlaps(interval, read) and not overlaps(interval, write), (step, interval, read, write)
    # ... and the training held none during its fit, which the tick's steps ran inside of.
    assert all(overlaps(interval, train) for interval in tick_steps.values())
    assert read[1] <= min(start for start, _ in tick_steps.values())
    assert write[0] >= max(end for _, end in tick_steps.values())
