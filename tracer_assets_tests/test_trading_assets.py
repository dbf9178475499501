"""The decision job in-process on replay data: decisions with their reasons, a risk-sized paper
order filled at the next candle's open, exactly once per signal event, and the audit trail."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import ROUND_CEILING, Decimal

import dagster as dg
import duckdb
import polars as pl
import pytest
from conftest import bundled_frame
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from tracer_assets.definitions import DECISION_JOB, TICK_JOB, build_definitions
from tracer_assets.settings import load_settings
from tracer_assets.signals.keys import SIGNALS_KEY
from tracer_assets.trading.decide import SignalEvent, decision_id
from tracer_assets.trading.keys import SIGNAL_STORAGE_TAG
from tracer_assets.trading.orders import client_order_id

QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
CLOCK_START = datetime(2024, 9, 5, 12, 0, tzinfo=UTC)


# The scenes here are staged for the rules decider.
pytestmark = pytest.mark.usefixtures("rules_decider")


def run(job: str, **kwargs):
    defs = build_definitions(load_settings())
    with dg.DagsterInstance.get() as instance:
        return defs.resolve_job_def(job).execute_in_process(instance=instance, run_config=QUIET, **kwargs)


def newest_signal_event() -> int:
    with dg.DagsterInstance.get() as instance:
        return instance.fetch_materializations(SIGNALS_KEY, limit=1).records[0].storage_id


def signal_event_of(storage_id: int) -> SignalEvent:
    with dg.DagsterInstance.get() as instance:
        record = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=SIGNALS_KEY, storage_ids=[storage_id]), limit=1
        ).records[0]
    return SignalEvent(record.storage_id, record.run_id)


def expected_cid(storage_id: int, symbol: str, side: str) -> str:
    """The client order id of the order the signal event `storage_id` leads to in `symbol`."""
    return client_order_id(decision_id(signal_event_of(storage_id), symbol), side)


def decide(storage_id: int):
    result = run(DECISION_JOB, tags={SIGNAL_STORAGE_TAG: str(storage_id)})
    assert result.success
    return result


def query(database: str, sql: str, params=None) -> pl.DataFrame:
    with duckdb.connect(database) as connection:
        return connection.sql(sql, params=params).pl()


def make_btc_1h_strongly_bullish(database: str, storage_id: int, symbols: tuple[str, ...] = ("BTC/USDT",)) -> None:
    """Out-of-sample stats that read as a Bull regime, and a strong_bull signal on 1h of each of
    `symbols` (BTC/USDT by default): the state in which the macro selection picks 1h and the rules
    decider buys. (Signals and backtests are computed and tested elsewhere; here they are set so
    the execution path runs.)"""
    run_id = signal_event_of(storage_id).run_id
    with duckdb.connect(database) as connection:
        connection.execute("CREATE SCHEMA IF NOT EXISTS research")
        connection.execute(
            """CREATE TABLE IF NOT EXISTS research.backtests (strategy_id VARCHAR, name VARCHAR, symbol VARCHAR,
               timeframe VARCHAR, "window" VARCHAR, pnl DOUBLE, win_rate DOUBLE, trades BIGINT,
               max_drawdown DOUBLE, profit_factor DOUBLE, score DOUBLE)"""
        )
        for symbol in symbols:
            connection.execute(
                "INSERT INTO research.backtests "
                "VALUES ('s1', 'ema_cross', ?, '1h', 'out_of_sample', 500, 0.6, 20, 0.1, NULL, 1.0)",
                [symbol],
            )
            connection.execute(
                """UPDATE signals.signal_history SET ensemble_label = 'strong_bull', signal_quality = 9, conviction = 9
                   WHERE run_id = ? AND symbol = ? AND timeframe = '1h'""",
                [run_id, symbol],
            )


@pytest.fixture
def replay_clock(tracer_env, monkeypatch, tmp_path):
    """A running replay clock at 2024-09-05 12:00 UTC (speed 1), 45 days of history stored."""

    def set_clock(at: datetime) -> None:
        anchor = datetime.now(UTC) - (at - CLOCK_START)
        monkeypatch.setenv("TRACER_REPLAY_START", CLOCK_START.isoformat())
        monkeypatch.setenv("TRACER_REPLAY_ANCHOR", anchor.isoformat())

    monkeypatch.setenv("TRACER_LOG_DIR", str(tmp_path / "logs"))
    set_clock(CLOCK_START)
    store_history()
    return set_clock


def store_history() -> None:
    """45 days of candles, indicators and signals up to the replay clock, as ticks store them."""
    history = run(
        TICK_JOB, tags={ASSET_PARTITION_RANGE_START_TAG: "2024-07-22", ASSET_PARTITION_RANGE_END_TAG: "2024-09-04"}
    )
    assert history.success
    assert run(TICK_JOB, partition_key="2024-09-05").success


def test_without_backtest_stats_every_symbol_holds_and_says_why(tracer_env, replay_clock):
    storage_id = newest_signal_event()
    result = decide(storage_id)
    decisions = query(tracer_env["TRACER_DUCKDB_PATH"], "SELECT * FROM trading.decisions ORDER BY symbol")
    assert decisions["action"].to_list() == ["HOLD", "HOLD"]
    assert decisions["signal_storage_id"].to_list() == [storage_id] * 2
    assert set(decisions["run_id"]) == {result.run_id}
    assert set(decisions["mode"]) == {"DRY"}
    for reason in decisions["reason"]:
        assert all(f"{tf}: no backtest stats" in reason for tf in ("5m", "15m", "1h", "4h"))
    assert query(tracer_env["TRACER_DUCKDB_PATH"], "SELECT * FROM trading.orders").is_empty()
    portfolio = query(tracer_env["TRACER_DUCKDB_PATH"], "SELECT * FROM trading.portfolio")
    assert portfolio["equity"].to_list() == [Decimal(10000)]


def test_a_buy_is_sized_by_the_risk_manager_filled_at_the_next_open_and_placed_once(tracer_env, replay_clock):
    database = tracer_env["TRACER_DUCKDB_PATH"]
    storage_id = newest_signal_event()
    make_btc_1h_strongly_bullish(database, storage_id)
    decide(storage_id)

    decisions = query(database, "SELECT * FROM trading.decisions ORDER BY symbol")
    btc = decisions.row(0, named=True)
    assert (btc["symbol"], btc["action"], btc["timeframe"], btc["source"]) == ("BTC/USDT", "BUY", "1h", "rules")
    assert "selected" in btc["reason"] and btc["stop_loss"] < btc["price"] < btc["take_profit"]
    assert decisions.row(1, named=True)["action"] == "HOLD"

    orders = query(database, "SELECT * FROM trading.orders")
    assert orders.height == 1
    order = orders.row(0, named=True)
    assert order["client_order_id"] == expected_cid(storage_id, "BTC/USDT", "buy")
    assert (order["status"], order["mode"], order["side"], order["signal_storage_id"]) == (
        "pending",
        "DRY",
        "buy",
        storage_id,
    )
    assert order["decision_id"] == btc["decision_id"]
    # ORDER_AMOUNT (100 USDT) caps the size; confidence 0.9 (exact) takes 0.2 + 0.8 x 0.9 = 92% of it.
    assert btc["confidence"] == Decimal("0.9")
    assert Decimal("91.99") <= order["amount"] * order["price"] <= Decimal("92")
    checks = json.loads(order["risk_checks"])
    assert checks and all(check["passed"] for check in checks)

    # The same signal event again (a retried run, a second sensor request): nothing new.
    decide(storage_id)
    assert query(database, "SELECT count(*) AS n FROM trading.orders")["n"][0] == 1
    assert query(database, "SELECT count(*) AS n FROM trading.decisions")["n"][0] == 2

    # Half an hour later the next tick brings the candles after the decision: the order fills
    # at the open of the first candle that opened after it, plus 5 bps of slippage, fee 0.1%.
    submitted = order["ts"]
    replay_clock(CLOCK_START + timedelta(minutes=30))
    assert run(TICK_JOB, partition_key="2024-09-05").success
    decide(newest_signal_event())
    filled = query(database, "SELECT * FROM trading.orders WHERE client_order_id = ?", [order["client_order_id"]]).row(
        0, named=True
    )
    assert filled["status"] == "filled"
    candles = (
        bundled_frame("BTC/USDT")
        .filter(pl.col("date") >= pl.lit(submitted).cast(pl.Datetime("ns")).dt.replace_time_zone("UTC"))
        .sort("date")
    )
    next_open = Decimal(repr(candles["open"][0]))
    assert filled["price"] == next_open * Decimal("1.0005")
    # The fee is rounded up to the 18 places stored, against the account.
    assert filled["fee"] == (filled["price"] * order["amount"] * Decimal("0.001")).quantize(
        Decimal("1e-18"), rounding=ROUND_CEILING
    )
    positions = query(database, "SELECT * FROM trading.positions WHERE closed_at IS NULL")
    assert positions["symbol"].to_list() == ["BTC/USDT"] and positions["amount"][0] == order["amount"]
    portfolio = query(database, "SELECT * FROM trading.portfolio ORDER BY ts")
    assert portfolio["open_positions"].to_list()[-1] == 1

    # The seed's audit files: a TSV line per decision (HOLD included) and per order, the same as
    # JSON lines, each exactly once; a diagnostics snapshot with the last decision.
    logs = load_settings().trading.log_dir
    tsv = [line.split("\t") for line in (logs / "macro_ccxt_orders.log").read_text().splitlines()[1:]]
    decided = query(database, "SELECT decision_id, action FROM trading.decisions ORDER BY decided_at, symbol")
    assert sorted((row[8], row[3]) for row in tsv if row[6] == "decision") == sorted(decided.rows())
    assert [row[7] for row in tsv if row[6] != "decision"] == [order["client_order_id"]]
    audit = [json.loads(line) for line in (logs / "macro_ccxt_orders_audit.jsonl").read_text().splitlines()]
    assert [entry["client_order_id"] for entry in audit if entry["type"] == "order"] == [order["client_order_id"]]
    assert sorted(entry["decision_id"] for entry in audit if entry["type"] == "decision") == sorted(
        decided["decision_id"]
    )
    diagnostics = json.loads((logs / "macro_diagnostics.json").read_text())
    assert diagnostics["cycles"] == 3
    # The paper broker's state: its newest snapshot only, not one more per run.
    assert query(database, "SELECT count(*) AS n FROM trading.paper_state")["n"][0] == 1
    assert diagnostics["last_decision"]["decision_id"] in set(decided["decision_id"])


def test_a_signal_whose_lookahead_guard_failed_is_answered_with_hold(tracer_env, replay_clock):
    """The same strongly bullish state that buys above holds when the signals run's blocking
    no_lookahead check failed (recorded in that run's event log as the check step records it:
    Dagster refuses to run the signals without their check, and the guard's own failure is
    tested in test_signals.py)."""
    from dagster._core.events import DagsterEvent, DagsterEventType
    from dagster._core.events.log import EventLogEntry

    storage_id = newest_signal_event()
    make_btc_1h_strongly_bullish(tracer_env["TRACER_DUCKDB_PATH"], storage_id)
    with dg.DagsterInstance.get() as instance:
        record = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=SIGNALS_KEY, storage_ids=[storage_id]), limit=1
        ).records[0]
        evaluation = dg.AssetCheckEvaluation(
            asset_key=SIGNALS_KEY,
            check_name="no_lookahead",
            passed=False,
            description="BTC/USDT 1h at 2024-09-05T10:00:00Z differs when recomputed from the candles cut there",
        )
        event = DagsterEvent(
            DagsterEventType.ASSET_CHECK_EVALUATION.value, job_name=TICK_JOB, event_specific_data=evaluation
        )
        instance.store_event(
            EventLogEntry(
                error_info=None,
                level="INFO",
                user_message="",
                run_id=record.run_id,
                timestamp=record.timestamp,
                step_key="signals",
                job_name=TICK_JOB,
                dagster_event=event,
            )
        )
    decide(storage_id)
    decisions = query(tracer_env["TRACER_DUCKDB_PATH"], "SELECT * FROM trading.decisions ORDER BY symbol")
    assert decisions["action"].to_list() == ["HOLD", "HOLD"]
    for reason in decisions["reason"]:
        assert reason == (
            "signals/signals not trusted: no_lookahead failed: BTC/USDT 1h at 2024-09-05T10:00:00Z "
            "differs when recomputed from the candles cut there"
        ), reason
    assert query(tracer_env["TRACER_DUCKDB_PATH"], "SELECT * FROM trading.orders").is_empty()


def test_a_short_or_blank_secret_that_is_not_used_never_stops_a_paper_run(tracer_env, replay_clock, monkeypatch):
    """The rules decider never uses the Anthropic key, paper trading never uses the exchange keys."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", "short")
    monkeypatch.setenv("TRACER_EXCHANGE_API_KEY", "   ")
    monkeypatch.setenv("TRACER_EXCHANGE_SECRET", "x")
    database = tracer_env["TRACER_DUCKDB_PATH"]
    storage_id = newest_signal_event()
    make_btc_1h_strongly_bullish(database, storage_id)
    decide(storage_id)
    order = query(database, "SELECT mode, status FROM trading.orders").row(0, named=True)
    assert (order["mode"], order["status"]) == ("DRY", "pending")


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"TRACER_DECIDER": "llm", "ANTHROPIC_API_KEY": "k3y9z"}, "ANTHROPIC_API_KEY"),
        ({"TRACER_DECIDER": "llm", "ANTHROPIC_API_KEY": " sk-ant-0123456789 "}, "ANTHROPIC_API_KEY"),
        (
            {
                "ENABLE_LIVE": "1",
                "IS_LIVE": "1",
                "DRY_RUN": "0",
                "TRACER_EXCHANGE": "binance",
                "TRACER_EXCHANGE_API_KEY": "   ",
                "TRACER_EXCHANGE_SECRET": "s" * 64,
            },
            "TRACER_EXCHANGE_API_KEY",
        ),
        ({"DISCORD_WEBHOOK_URL": "hook"}, "DISCORD_WEBHOOK_URL"),
    ],
)
def test_a_malformed_secret_in_use_stops_the_load_naming_the_variable_not_the_value(
    tracer_env, monkeypatch, env, variable
):
    from tracer_assets.settings import SettingsError

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as error:
        build_definitions(load_settings())
    assert str(error.value).startswith(f"{variable}: ")
    secret = env[variable].strip()
    assert not secret or secret not in str(error.value)


def test_a_paper_decision_on_a_signal_past_its_age_holds_and_says_why(tracer_env, replay_clock):
    """Two base candles (10 minutes) after the signal's candle closed, a run that only now answers
    it (a sensor catching up after downtime) holds, in paper mode as in live."""
    database = tracer_env["TRACER_DUCKDB_PATH"]
    storage_id = newest_signal_event()
    make_btc_1h_strongly_bullish(database, storage_id)
    replay_clock(CLOCK_START + timedelta(minutes=11))
    decide(storage_id)
    decisions = query(database, "SELECT action, reason, valid_until FROM trading.decisions ORDER BY symbol")
    assert decisions["action"].to_list() == ["HOLD", "HOLD"]
    assert all(reason.startswith("signal too old to trade") for reason in decisions["reason"])
    # Its newest candle (5m, opened 11:55) closed at 12:00; valid for two base candles after.
    assert set(decisions["valid_until"]) == {CLOCK_START + timedelta(minutes=10)}
    assert query(database, "SELECT * FROM trading.orders").is_empty()


def test_a_buy_is_kelly_sized_from_the_selected_strategys_out_of_sample_edge(tracer_env, replay_clock, monkeypatch):
    """Win rate 0.6 and profit factor 2 out of sample: payoff R = 2 x 0.4 / 0.6 = 4/3, full Kelly
    f* = 0.6 - 0.4 / (4/3) = 0.3, used at TRACER_KELLY_FRACTION 0.5: 15% of the confidence-sized
    order (100 USDT x 92%), so 13.8 USDT."""
    monkeypatch.setenv("ORDER_AMOUNT", "100")
    database = tracer_env["TRACER_DUCKDB_PATH"]
    storage_id = newest_signal_event()
    make_btc_1h_strongly_bullish(database, storage_id)
    with duckdb.connect(database) as connection:
        connection.execute("UPDATE research.backtests SET profit_factor = 2.0")
    decide(storage_id)
    btc = query(database, "SELECT win_rate, payoff_ratio FROM trading.decisions WHERE symbol = 'BTC/USDT'").row(0)
    assert btc[0] == 0.6 and btc[1] == pytest.approx(4 / 3)
    order = query(database, "SELECT amount, price, risk_checks FROM trading.orders").row(0, named=True)
    assert Decimal("13.79") <= order["amount"] * order["price"] <= Decimal("13.8")
    edge = next(c for c in json.loads(order["risk_checks"]) if c["name"] == "strategy_edge")
    assert edge["passed"] and "Kelly f* 0.3" in edge["detail"]


def test_payoff_ratio_and_kelly_inputs_are_both_or_neither():
    from tracer_assets.trading.decide import kelly_inputs, payoff_ratio

    assert payoff_ratio(0.5, 1.5) == pytest.approx(1.5)
    assert payoff_ratio(0.25, 1.0) == pytest.approx(3.0)
    for win_rate, profit_factor in [(None, 2.0), (0.5, None), (0.0, 2.0), (1.0, 2.0), (0.5, 0.0), (0.5, float("inf"))]:
        assert payoff_ratio(win_rate, profit_factor) is None
    assert kelly_inputs({"winRate": 0.6, "payoff": 1.2}) == {"win_rate": 0.6, "payoff_ratio": 1.2}
    assert kelly_inputs({"winRate": 0.6, "payoff": None}) == {"win_rate": None, "payoff_ratio": None}
    assert kelly_inputs(None) == {"win_rate": None, "payoff_ratio": None}
