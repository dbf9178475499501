"""The decision job with the strategy decider (the default) on a real DuckDB file and Dagster
instance: the kept strategy with the best out-of-sample score of the selected timeframe is read at
the newest candle, its BUY carries the spec's exits as fractions, and the paper broker sets them
from the fill; held, the strategy that bought it decides the exit."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal

import duckdb
from test_trading_assets import (
    CLOCK_START,
    TICK_JOB,
    decide,
    make_btc_1h_strongly_bullish,
    newest_signal_event,
    query,
    replay_clock,  # noqa: F401 (a fixture)
    run,
    signal_event_of,
)

from tracer_assets.research.spec import load_spec


def spec(name: str, entry_op: str) -> str:
    """Enters whenever close `entry_op` 0 holds (always for ">", never for "<"); never exits."""
    return load_spec(
        {
            "name": name,
            "description": "A test strategy whose entry is decided by its comparison with zero.",
            "timeframe": "1h",
            "entry": {"compare": {"left": "close", "op": entry_op, "right": 0}},
            "exit": {"compare": {"left": "close", "op": "<", "right": 0}},
            "stop_loss": 0.02,
            "take_profit": 0.05,
            "trailing_stop": 0.03,
        }
    ).canonical_json()


def stage_research(database: str) -> None:
    """s1 (kept, always enters) and s2 (archived by the ranking, a better score, never enters)
    on BTC/USDT 1h."""
    with duckdb.connect(database) as connection:
        connection.execute(
            "CREATE TABLE research.strategies (strategy_id VARCHAR, name VARCHAR, version INTEGER, spec VARCHAR, "
            "status VARCHAR)"
        )
        connection.execute(
            "INSERT INTO research.strategies VALUES ('s1', 'always_in', 1, ?, 'active'), "
            "('s2', 'never_in', 1, ?, 'active')",
            [spec("always_in", ">"), spec("never_in", "<")],
        )
        connection.execute("ALTER TABLE research.backtests ADD COLUMN parameters VARCHAR DEFAULT ''")
        connection.execute(
            "INSERT INTO research.backtests VALUES "
            "('s2', 'never_in', 'BTC/USDT', '1h', 'out_of_sample', 900, 0.7, 20, 0.1, 2.0, 5.0, '')"
        )
        connection.execute("UPDATE research.backtests SET profit_factor = 2.0")
        connection.execute("CREATE SCHEMA ranking")
        connection.execute("CREATE TABLE ranking.strategies (item_id VARCHAR, status VARCHAR)")
        connection.execute("INSERT INTO ranking.strategies VALUES ('s1', 'kept'), ('s2', 'archived')")


def test_the_decision_job_trades_the_best_kept_strategy_with_the_specs_exits(tracer_env, replay_clock):  # noqa: F811
    database = tracer_env["TRACER_DUCKDB_PATH"]
    storage_id = newest_signal_event()
    make_btc_1h_strongly_bullish(database, storage_id)  # the macro selection picks 1h for BTC/USDT
    stage_research(database)
    decide(storage_id)

    decisions = query(database, "SELECT * FROM trading.decisions ORDER BY symbol")
    btc = decisions.row(0, named=True)
    assert (btc["source"], btc["action"], btc["timeframe"], btc["strategy_id"]) == ("strategy", "BUY", "1h", "s1")
    assert btc["reason"] == "1h s1 always_in(): entry rule true at the close"
    assert (btc["stop_fraction"], btc["target_fraction"], btc["trailing_stop"]) == (
        Decimal("0.02"),
        Decimal("0.05"),
        Decimal("0.03"),
    )
    assert btc["stop_loss"] is None and btc["take_profit"] is None  # levels come from the fill
    # Kelly from s1's out-of-sample edge: W 0.6, PF 2, R = 2 x 0.4 / 0.6, f* = 0.3, used at half.
    assert (btc["win_rate"], round(btc["payoff_ratio"], 9)) == (0.6, round(4 / 3, 9))
    other = decisions.row(1, named=True)
    assert other["action"] == "HOLD" and other["reason"].startswith("no timeframe selected")
    [order] = query(database, "SELECT * FROM trading.orders").iter_rows(named=True)
    assert (order["side"], order["status"]) == ("buy", "pending")
    checks = {check["name"]: check for check in json.loads(order["risk_checks"])}
    assert checks["strategy_edge"]["detail"].startswith("Kelly f* 0.30000000000000")
    # 15% of the 100 USDT ORDER_AMOUNT (confidence 1), cut down to the 1e-8 step.
    assert Decimal("14.99") < order["amount"] * btc["price"] <= Decimal(15)

    # The next tick brings the candle after the decision: the buy fills at its open, and the
    # position's stop, target and trailing stop are set from that fill.
    replay_clock(CLOCK_START + timedelta(minutes=30))
    assert run(TICK_JOB, partition_key="2024-09-05").success
    second = newest_signal_event()
    with duckdb.connect(database) as connection:  # bull is enough for the strategy decider's selection
        connection.execute(
            "UPDATE signals.signal_history SET ensemble_label = 'bull' WHERE run_id = ? AND symbol = 'BTC/USDT' "
            "AND timeframe = '1h'",
            [signal_event_of(second).run_id],
        )
    decide(second)
    # Flat still (the buy fills after this event's decisions): the 1h candle s1 bought on is the
    # newest 1h candle again, and its entry is not taken twice.
    again = query(database, "SELECT * FROM trading.decisions WHERE symbol = 'BTC/USDT' ORDER BY decided_at")
    assert (again["action"][-1], again["reason"][-1]) == (
        "HOLD",
        "1h s1 always_in(): flat, no new candle since the previous read",
    )
    filled = query(database, "SELECT * FROM trading.orders WHERE side = 'buy'").row(0, named=True)
    assert filled["status"] == "filled"
    [position] = query(database, "SELECT * FROM trading.positions WHERE closed_at IS NULL").iter_rows(named=True)
    fill = filled["price"]
    assert position["entry_price"] == fill
    assert position["stop_loss"] == (fill * Decimal("0.98")).quantize(Decimal("1e-18"))
    assert position["take_profit"] == (fill * Decimal("1.05")).quantize(Decimal("1e-18"))
    assert position["trailing_stop"] == Decimal("0.03") and position["peak"] >= fill
    # Held (the decisions come before the fills of their run: held from the next event on), the
    # strategy that bought it (s1, whose exit never fires) decides, whatever the selection says.
    replay_clock(CLOCK_START + timedelta(minutes=40))
    assert run(TICK_JOB, partition_key="2024-09-05").success
    decide(newest_signal_event())
    newest = query(database, "SELECT * FROM trading.decisions WHERE symbol = 'BTC/USDT' ORDER BY decided_at")
    assert newest["action"].to_list()[-1] == "HOLD" and "held, exit rule false" in newest["reason"].to_list()[-1]
    assert query(database, "SELECT count(*) AS n FROM trading.orders")["n"][0] == 1
