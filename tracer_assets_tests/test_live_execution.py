"""The decision job in LIVE mode, with ccxt's real binance client against fake_binance.py (a local
server speaking Binance's signed spot order endpoints): no request at all unless every live
condition holds; with them, one order per signal event, whether the signal is processed twice
or the run is killed after the exchange took the order and before it was recorded."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, timedelta
from decimal import Decimal

import dagster as dg
import duckdb
import pytest
from fake_binance import DEFAULT_PERPETUALS, FakeBinance
from test_trading_assets import (  # noqa: F401  (replay_clock is a fixture)
    CLOCK_START,
    decide,
    expected_cid,
    make_btc_1h_strongly_bullish,
    newest_signal_event,
    query,
    replay_clock,
    run,
    store_history,
)

from tracer_assets.definitions import DECISION_JOB, TICK_JOB
from tracer_assets.trading.keys import SIGNAL_STORAGE_TAG

KEY, SECRET = "live-test-key", "live-test-secret"
LIVE_ENV = {
    "ENABLE_LIVE": "1",
    "IS_LIVE": "1",
    "FORCE_DRY": "0",
    "DRY_RUN": "0",
    "TRACER_EXCHANGE": "binance",
    "TRACER_EXCHANGE_API_KEY": KEY,
    "TRACER_EXCHANGE_SECRET": SECRET,
}
ORDER = "/api/v3/order"
# The fake exchange's clock stands where the replay clock stands: its market orders fill at the
# close of the newest candle up to then, the candle the decision saw.
CLOCK_MS = int(CLOCK_START.timestamp() * 1000)


# The scenes here are staged for the rules decider.
pytestmark = pytest.mark.usefixtures("rules_decider")


@pytest.fixture
def live(replay_clock, tracer_env, monkeypatch):  # noqa: F811
    """History and a strongly bullish BTC signal stored on replay, then every live condition set
    and the exchange switched to ccxt's binance client pointed at a fake Binance on 127.0.0.1."""
    storage_id = newest_signal_event()
    make_btc_1h_strongly_bullish(tracer_env["TRACER_DUCKDB_PATH"], storage_id)
    with FakeBinance(now_ms=CLOCK_MS, balances={"USDT": "1000"}, api_keys={KEY: SECRET}) as server:
        monkeypatch.setenv("TRACER_EXCHANGE_URLS", json.dumps({"*": server.url}))
        for name, value in LIVE_ENV.items():
            monkeypatch.setenv(name, value)
        yield server, storage_id


def posts(server: FakeBinance) -> list:
    return [r for r in server.requests(ORDER) if r.method == "POST"]


def forget_trading(database: str) -> None:
    """Back to before the first decision (so each case below decides the same signal afresh)."""
    with duckdb.connect(database) as connection:
        connection.execute("DROP SCHEMA IF EXISTS trading CASCADE")


MISSING = {
    "ENABLE_LIVE=0": {"ENABLE_LIVE": "0"},
    "IS_LIVE=0": {"IS_LIVE": "0"},
    "FORCE_DRY=1": {"FORCE_DRY": "1"},
    "DRY_RUN=1": {"DRY_RUN": "1"},
    "DRY_RUN unset": {"DRY_RUN": None},
    "no API key": {"TRACER_EXCHANGE_API_KEY": None},
    "no API secret": {"TRACER_EXCHANGE_SECRET": ""},
    "replay exchange": {"TRACER_EXCHANGE": "replay"},
}


def test_no_request_reaches_the_exchange_unless_every_live_condition_holds(live, tracer_env, monkeypatch):
    server, storage_id = live
    database = tracer_env["TRACER_DUCKDB_PATH"]
    cid = expected_cid(storage_id, "BTC/USDT", "buy")
    for case, change in MISSING.items():
        with monkeypatch.context() as patch:
            # Paper trading on a real exchange measures a signal's age on the local clock (it asks
            # the exchange nothing); this exchange's clock and candles are in 2024.
            patch.setenv("TRACER_MAX_SIGNAL_AGE_SECONDS", str(10 * 365 * 86400))
            for name, value in change.items():
                patch.delenv(name) if value is None else patch.setenv(name, value)
            forget_trading(database)
            decide(storage_id)
        order = query(database, "SELECT * FROM trading.orders").row(0, named=True)
        # The BUY went to the paper broker instead. The exchange saw no order, no signed or keyed
        # request: on a real exchange, paper orders are sized against its public market rules
        # (exchangeInfo), and on replay it is not asked at all.
        assert (order["client_order_id"], order["mode"]) == (cid, "DRY"), case
        seen = server.requests()
        assert all(r.method == "GET" and r.path.endswith("/exchangeInfo") for r in seen), (case, seen)
        assert not any("signature" in r.query for r in seen), case
        if case == "replay exchange":
            assert seen == [], case
        else:  # sized to Binance's BTC/USDT lot step (0.00001), as the exchange would take it
            assert order["amount"] % Decimal("0.00001") == 0 and order["amount"] > 0, (case, order["amount"])
        server.clear_requests()

    forget_trading(database)
    decide(storage_id)
    assert len(posts(server)) == 1 and len(server.orders()) == 1
    sent = server.orders()[0]
    order = query(database, "SELECT * FROM trading.orders").row(0, named=True)
    assert (order["client_order_id"], order["mode"], order["status"], order["side"]) == (cid, "LIVE", "filled", "buy")
    assert sent.client_order_id == cid and order["exchange_order_id"] == str(sent.order_id)
    # What is recorded is what the exchange reported, exactly.
    fill = sent.fills[0]
    assert order["filled"] == sent.executed_qty == order["amount"]
    assert order["price"] == Decimal(fill["price"])
    assert (order["fee"], order["fee_currency"]) == (Decimal(fill["commission"]), "BTC")
    # ORDER_AMOUNT (100 USDT) caps the size; confidence 0.9 takes 92% of it (92 USDT at the decision's
    # price), cut down to the market's 0.00001 BTC step: never rounded up past what was sized.
    assert order["filled"] % Decimal("0.00001") == 0
    decided = query(database, "SELECT price FROM trading.decisions WHERE action = 'BUY'")["price"][0]
    assert order["filled"] == (Decimal("92") / decided).quantize(Decimal("0.00001"), "ROUND_DOWN")
    assert all(check["passed"] for check in json.loads(order["risk_checks"]))
    decisions = query(database, "SELECT mode FROM trading.decisions")
    assert set(decisions["mode"]) == {"LIVE"}

    position = query(database, "SELECT * FROM trading.positions").row(0, named=True)
    # Binance took the fee in BTC: the position holds what arrived, at the cost paid.
    assert (position["mode"], position["symbol"]) == ("LIVE", "BTC/USDT") and position["closed_at"] is None
    assert position["amount"] == sent.executed_qty - Decimal(fill["commission"])
    assert position["cost_basis"] == sent.cummulative_quote_qty
    portfolio = query(database, "SELECT * FROM trading.portfolio").row(0, named=True)
    assert portfolio["quote_balance"] == server.balances()["USDT"] == Decimal(1000) - sent.cummulative_quote_qty


def test_the_same_signal_twice_sends_one_order(live, tracer_env):
    server, storage_id = live
    decide(storage_id)
    decide(storage_id)
    assert len(posts(server)) == 1 and len(server.orders()) == 1
    orders = query(tracer_env["TRACER_DUCKDB_PATH"], "SELECT mode, status FROM trading.orders")
    assert orders.rows() == [("LIVE", "filled")]


SEND_AND_DIE = """
import sys
import dagster as dg
from tracer_assets.definitions import DECISION_JOB, build_definitions
from tracer_assets.settings import load_settings
with dg.DagsterInstance.get() as instance:
    job = build_definitions(load_settings()).resolve_job_def(DECISION_JOB)
    job.execute_in_process(instance=instance, tags={sys.argv[1]: sys.argv[2]})
"""


def test_a_run_killed_after_the_exchange_took_the_order_is_retried_without_a_second_order(live, tracer_env):
    server, storage_id = live
    database = tracer_env["TRACER_DUCKDB_PATH"]
    cid = expected_cid(storage_id, "BTC/USDT", "buy")
    server.crash_after_accepting(ORDER, mode="hang")  # the order is stored, the reply never comes
    process = subprocess.Popen(
        [sys.executable, "-c", SEND_AND_DIE, SIGNAL_STORAGE_TAG, str(storage_id)],
        env=os.environ.copy(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while not server.orders() and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.1)
        assert server.orders(), (
            "the run never sent its order: "
            f"{process.stderr.read().decode()[-2000:] if process.poll() is not None else ''}"
        )
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    # Killed between the exchange taking the order and the record: the record does not have it.
    assert query(database, "SELECT * FROM trading.orders WHERE client_order_id = ?", [cid]).is_empty()
    # The dead run still holds the "duckdb" pool slot. Ending it is the operator's Terminate in the UI
    # (the default run launcher cannot see a worker die); the daemon then frees its slot
    # (run_monitoring.free_slots_after_run_end_seconds in .dagster/dagster.yaml). Both, done here:
    with dg.DagsterInstance.get() as instance:
        for record in instance.get_run_records(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])):
            instance.report_run_failed(record.dagster_run)
            instance.event_log_storage.free_concurrency_slots_for_run(record.dagster_run.run_id)
        # (Asserted, or the retry below would wait for the slot forever.)
        assert instance.event_log_storage.get_concurrency_info("duckdb").active_slot_count == 0

    decide(storage_id)  # the retry
    assert len(posts(server)) == 1 and len(server.orders()) == 1
    order = query(database, "SELECT * FROM trading.orders WHERE client_order_id = ?", [cid]).row(0, named=True)
    assert (order["mode"], order["status"], order["exchange_order_id"]) == (
        "LIVE",
        "filled",
        str(server.orders()[0].order_id),
    )
    assert "found at binance on reconcile" in order["reason"]
    assert order["filled"] == server.orders()[0].executed_qty


def test_a_touched_stop_sells_the_live_position_at_market_on_the_next_run(live, tracer_env, monkeypatch, replay_clock):  # noqa: F811
    server, storage_id = live
    database = tracer_env["TRACER_DUCKDB_PATH"]
    decide(storage_id)
    bought = server.orders()[0]
    # A stop at the lowest low of the next half hour: that candle touches it (the rules would put
    # it at 2 ATR; set here so the watch has something to find).
    with duckdb.connect(database) as connection:
        stop = connection.execute(
            "SELECT min(low) FROM market.candles WHERE symbol = 'BTC/USDT' AND ts >= ?::TIMESTAMPTZ",
            [CLOCK_START],
        ).fetchall()
    assert stop == [(None,)]  # not yet stored: the tick below brings them
    # Half an hour on, the next tick (the candles come from replay) and its decision run.
    with monkeypatch.context() as patch:
        patch.setenv("TRACER_EXCHANGE", "replay")
        replay_clock(CLOCK_START + timedelta(minutes=30))
        assert run(TICK_JOB, partition_key="2024-09-05").success
    server.now_ms = CLOCK_MS + 30 * 60 * 1000
    with duckdb.connect(database) as connection:
        candles = connection.execute(
            "SELECT ts, low FROM market.candles WHERE symbol = 'BTC/USDT' AND ts >= ?::TIMESTAMPTZ ORDER BY ts",
            [CLOCK_START],
        ).fetchall()
        # Just above the half hour's lowest low: the first candle whose low reaches it touches it.
        stop = Decimal(str(min(low for _, low in candles))) * Decimal("1.00001")
        touched_at = next(ts for ts, low in candles if Decimal(str(low)) <= stop)
        connection.execute(
            "UPDATE trading.decisions SET stop_loss = ? WHERE symbol = 'BTC/USDT' AND action = 'BUY'", [stop]
        )
    next_event = newest_signal_event()
    decide(next_event)

    orders = server.orders()
    assert [o.side for o in orders] == ["BUY", "SELL"], query(database, "SELECT * FROM trading.orders").to_dicts()
    sold = orders[1]
    assert sold.client_order_id == expected_cid(next_event, "BTC/USDT", "sell")
    position = query(database, "SELECT * FROM trading.positions WHERE mode = 'LIVE'").row(0, named=True)
    assert position["closed_at"] is not None
    recorded = query(database, "SELECT * FROM trading.orders WHERE side = 'sell'").row(0, named=True)
    assert f"stop touched by the candle at {touched_at.astimezone(UTC).isoformat()}" in recorded["reason"]
    assert recorded["status"] == "filled"
    # Exact PnL: quote received (less the fee, in USDT) minus the quote paid for what was held.
    received = sold.cummulative_quote_qty - Decimal(sold.fills[0]["commission"])
    assert position["realized_pnl"] == received - bought.cummulative_quote_qty
    assert sold.orig_qty == (bought.executed_qty - Decimal(bought.fills[0]["commission"])).quantize(
        Decimal("1e-5"), "ROUND_DOWN"
    )


def test_a_second_fresh_instance_sends_its_own_order_and_adopts_none_of_the_first(
    live, tracer_env, tmp_path, monkeypatch
):
    """Two deployments, each with a new Dagster instance and DuckDB file, trade on one account.
    Storage ids restart at 1 in every instance, so both answer "signal event 5"; the client ids
    differ (they carry the signals run's id) and the second reconcile adopts nothing."""
    server, first_event = live
    decide(first_event)
    [first] = server.orders()

    home = tmp_path / "second_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((tmp_path / "dagster_home" / "dagster.yaml").read_text())
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("TRACER_DUCKDB_PATH", str(tmp_path / "second.duckdb"))
    with monkeypatch.context() as patch:
        patch.setenv("TRACER_EXCHANGE", "replay")
        store_history()
    second_event = newest_signal_event()
    assert second_event == first_event  # the same storage id, another instance
    make_btc_1h_strongly_bullish(str(tmp_path / "second.duckdb"), second_event)
    decide(second_event)

    assert len(posts(server)) == 2
    sent = [order.client_order_id for order in server.orders()]
    assert len(set(sent)) == 2 and sent[0] == first.client_order_id
    mine = query(str(tmp_path / "second.duckdb"), "SELECT client_order_id, reason FROM trading.orders")
    assert mine["client_order_id"].to_list() == [sent[1]]  # its own, not the first instance's
    assert not any("reconcile" in (reason or "") for reason in mine["reason"])


def test_a_signal_three_days_old_on_the_exchanges_clock_sends_nothing(live, tracer_env):
    server, storage_id = live
    database = tracer_env["TRACER_DUCKDB_PATH"]
    server.now_ms = CLOCK_MS + 3 * 86_400_000
    decide(storage_id)
    assert posts(server) == []
    btc = query(database, "SELECT action, reason FROM trading.decisions WHERE symbol = 'BTC/USDT'").row(0, named=True)
    assert btc["action"] == "HOLD" and "signal too old to trade" in btc["reason"]
    assert "TRACER_MAX_SIGNAL_AGE_SECONDS" in btc["reason"]
    assert query(database, "SELECT * FROM trading.orders").is_empty()


def test_a_buy_decided_in_time_but_executed_too_late_is_refused_unsent(live, tracer_env):
    """The decision step ran on a fresh signal; the execution step ran three days later (a run
    queued through downtime): the order is recorded as refused, nothing reaches the exchange."""
    server, storage_id = live
    database = tracer_env["TRACER_DUCKDB_PATH"]
    decisions_only = run(
        DECISION_JOB,
        tags={SIGNAL_STORAGE_TAG: str(storage_id)},
        asset_selection=[dg.AssetKey(["trading", "decisions"])],
    )
    assert decisions_only.success
    assert query(database, "SELECT action FROM trading.decisions WHERE symbol = 'BTC/USDT'")["action"][0] == "BUY"
    server.now_ms = CLOCK_MS + 3 * 86_400_000
    decide(storage_id)
    assert posts(server) == []
    order = query(database, "SELECT status, reason FROM trading.orders").row(0, named=True)
    assert order["status"] == "rejected" and "signal too old at execution" in order["reason"]


def test_an_exchange_refusal_is_recorded_as_rejected_and_the_other_symbols_go_on(live, tracer_env):
    server, storage_id = live
    database = tracer_env["TRACER_DUCKDB_PATH"]
    make_btc_1h_strongly_bullish(database, storage_id, symbols=("ETH/USDT",))  # BTC already is
    # Binance's answer for an order below its minimum notional; ccxt raises BadRequest for it.
    server.fail_next(ORDER, status=400, body={"code": -1013, "msg": "Filter failure: NOTIONAL"}, method="POST")
    decide(storage_id)
    orders = query(database, "SELECT symbol, status, reason, exchange_order_id FROM trading.orders ORDER BY symbol")
    btc, eth = orders.rows(named=True)
    assert (btc["symbol"], btc["status"], btc["exchange_order_id"]) == ("BTC/USDT", "rejected", None)
    assert "Filter failure: NOTIONAL" in btc["reason"]
    assert (eth["symbol"], eth["status"]) == ("ETH/USDT", "filled")
    assert len(posts(server)) == 2 and [o.symbol for o in server.orders()] == ["ETHUSDT"]


def test_a_price_far_from_the_fresh_ticker_is_refused_unsent(live, tracer_env):
    server, storage_id = live
    database = tracer_env["TRACER_DUCKDB_PATH"]
    server.ticker_prices["BTCUSDT"] = Decimal("28000")  # half the candles' price: one of the two is wrong
    decide(storage_id)
    decided = query(database, "SELECT price FROM trading.decisions WHERE symbol = 'BTC/USDT'")["price"][0]
    assert posts(server) == []
    order = query(database, "SELECT status, reason FROM trading.orders").row(0, named=True)
    assert order["status"] == "rejected"
    assert f"the decision's price {decided}" in order["reason"] and "ticker's last price 28000" in order["reason"]


def test_the_llm_prompt_carries_open_interest_and_funding_of_the_pairs_perpetual(live, tracer_env, monkeypatch):
    """Paper trading on Binance with the LLM decider: the prompt holds the BTC perpetual's open
    interest and funding rate as the exchange served them (none on replay)."""
    from fake_anthropic import FakeAnthropic

    server, storage_id = live
    btc = DEFAULT_PERPETUALS[0]
    hold = {"action": "HOLD", "symbol": None, "confidence": 0.5, "position_size_quote": None, "stop_loss": None,
            "take_profit": None, "reasoning": "nothing clear"}  # fmt: skip
    with FakeAnthropic(api_key="sk-ant-test-0123456789abcdef") as llm:
        llm.reply_text(json.dumps(hold))
        for name, value in {
            "ENABLE_LIVE": "0", "TRACER_DECIDER": "llm", "TRACER_ANTHROPIC_BASE_URL": llm.url,
            "ANTHROPIC_API_KEY": "sk-ant-test-0123456789abcdef", "TRACER_ANTHROPIC_MODEL": "claude-test",
            # Paper trading on a real exchange measures signal ages on the local clock; these are from 2024.
            "TRACER_MAX_SIGNAL_AGE_SECONDS": str(10 * 365 * 86400),
        }.items():  # fmt: skip
            monkeypatch.setenv(name, value)
        decide(storage_id)
        [asked] = llm.requests
    user = asked.body["messages"][0]["content"]
    data = json.JSONDecoder().raw_decode(user[user.index("{") :])[0]
    market = data["markets"]["BTC/USDT"]
    assert market["open_interest"] == pytest.approx(float(btc.open_interest), rel=1e-5)
    assert market["funding_rate"] == pytest.approx(float(btc.last_funding_rate))
    assert posts(server) == []
