"""Live safety with ccxt's real `binance` client against a local server speaking Binance's signed
spot order endpoints (fake_binance.py, which checks the HMAC signature of every signed request):
no request at all unless every live condition holds; with them, one order per signal event,
whether the signal is processed twice, the reply is lost, or the process dies before recording."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal as D

import ccxt
import pytest
from fake_binance import BUNDLED_DATA, DATA_END_MS, FakeBinance

from tracer_assets.market.download import RetryPolicy
from tracer_assets.resources.ccxt_exchange import make_ccxt_exchange
from tracer_assets.resources.replay_exchange import read_candle_file
from tracer_assets.settings import load_settings
from tracer_assets.trading.live import (
    LiveBroker,
    LiveTradingRefused,
    OrderStateUnknown,
    RecordedOrder,
    live_allowed,
)
from tracer_assets.trading.orders import OrderTicket, client_order_id

KEY, SECRET = "test-api-key", "test-api-secret"
LIVE_ENV = {"ENABLE_LIVE": "1", "IS_LIVE": "1", "FORCE_DRY": "0", "DRY_RUN": "0"}
ORDER = "/api/v3/order"
FAST = RetryPolicy(retries=2, backoff_seconds=0.01)


def last_close(symbol: str) -> D:
    """The close of the newest 5m candle up to the server's clock: what a market order gets."""
    frame = read_candle_file(BUNDLED_DATA / f"{symbol.replace('/', '_')}-5m.parquet")
    closes = frame.filter(frame["ms"] <= DATA_END_MS).sort("ms")["close"]
    return D(f"{closes[-1]:.8f}")


BTC_PRICE = last_close("BTC/USDT")


@pytest.fixture
def server():
    with FakeBinance(balances={"USDT": "10000", "BTC": "0.5"}, api_keys={KEY: SECRET}) as fake:
        yield fake


def client(server: FakeBinance, key: str | None = KEY, secret: str | None = SECRET, sandbox: bool = False):
    """A fresh ccxt client, as a restarted process would build it."""
    exchange = make_ccxt_exchange("binance", api_urls={"*": server.url}, sandbox=sandbox)
    exchange.timeout = 2000  # ms: a request that escaped to the internet fails fast
    exchange.apiKey, exchange.secret = key, secret
    return exchange


def broker(exchange, env: dict[str, str] = LIVE_ENV, allowed: bool | None = None) -> LiveBroker:
    """What the lead's resource does: the settings' verdict plus the keys, passed as `allowed`."""
    settings = load_settings(env)
    if allowed is None:
        allowed = settings.trading.live_flags_on and bool(exchange.apiKey) and bool(exchange.secret)
    return LiveBroker(exchange, settings.trading, allowed=allowed, policy=FAST)


def ticket(storage_id: int, side: str = "buy", amount: str = "0.001", symbol: str = "BTC/USDT") -> OrderTicket:
    return OrderTicket(
        client_order_id(f"decision-{storage_id}", side),
        symbol,
        side,
        D(amount),
        BTC_PRICE,
        None,
        None,
        f"decision-{storage_id}",
        storage_id,
    )


def posts(server: FakeBinance) -> list:
    return [r for r in server.requests(ORDER) if r.method == "POST"]


# --- no order without every live condition --------------------------------------------------

MISSING = {
    "ENABLE_LIVE=0": ({**LIVE_ENV, "ENABLE_LIVE": "0"}, KEY, SECRET, "ENABLE_LIVE is 0"),
    "ENABLE_LIVE unset": ({k: v for k, v in LIVE_ENV.items() if k != "ENABLE_LIVE"}, KEY, SECRET, "ENABLE_LIVE is 0"),
    "IS_LIVE=0": ({**LIVE_ENV, "IS_LIVE": "0"}, KEY, SECRET, "IS_LIVE is 0"),
    "FORCE_DRY=1": ({**LIVE_ENV, "FORCE_DRY": "1"}, KEY, SECRET, "FORCE_DRY is 1"),
    "DRY_RUN=1": ({**LIVE_ENV, "DRY_RUN": "1"}, KEY, SECRET, "DRY_RUN is 1"),
    "DRY_RUN unset": ({k: v for k, v in LIVE_ENV.items() if k != "DRY_RUN"}, KEY, SECRET, "DRY_RUN is 1"),
    "no key": (LIVE_ENV, None, SECRET, "no exchange API key"),
    "blank key": (LIVE_ENV, "  ", SECRET, "no exchange API key"),
    "no secret": (LIVE_ENV, KEY, None, "no exchange API secret"),
}


@pytest.mark.parametrize("case", list(MISSING))
def test_any_missing_live_condition_refuses_before_a_single_request(server, case):
    env, key, secret, reason = MISSING[case]
    exchange = client(server, key, secret)
    # Even a caller that wrongly says "allowed" cannot get past the broker's own check.
    with pytest.raises(LiveTradingRefused, match=reason):
        broker(exchange, env, allowed=True)
    with pytest.raises(LiveTradingRefused):
        broker(exchange, env)
    assert server.requests() == [] and server.orders() == []


def test_a_caller_that_does_not_allow_live_trading_is_obeyed_even_with_every_flag_set(server):
    with pytest.raises(LiveTradingRefused, match="allowed=False"):
        broker(client(server), LIVE_ENV, allowed=False)
    assert server.requests() == []


def test_live_allowed_lists_every_missing_condition_and_distrusts_non_bools():
    settings = load_settings({"FORCE_DRY": "1"})
    ok, reason = live_allowed(settings.trading, "", None)
    assert not ok
    assert reason == (
        "ENABLE_LIVE is 0, live trading needs 1; IS_LIVE is 0, live trading needs 1; "
        "FORCE_DRY is 1, live trading needs 0; DRY_RUN is 1, live trading needs 0; "
        "no exchange API key; no exchange API secret"
    )
    assert live_allowed(load_settings(LIVE_ENV).trading, KEY, SECRET) == (True, "")

    class StringFlags:  # "0" is truthy: a flag that is not a bool must never read as live
        enable_live, is_live, force_dry, dry_run = True, True, "0", False

    assert live_allowed(StringFlags(), KEY, SECRET) == (False, "FORCE_DRY is unknown (force_dry='0', expected a bool)")


# --- one order per signal event ------------------------------------------------------------


def test_with_every_condition_one_market_order_fills_with_its_fee(server):
    live = broker(client(server))
    order = live.submit(ticket(101))

    [stored] = server.orders()
    assert len(posts(server)) == 1 and stored.client_order_id == client_order_id("decision-101", "buy")
    assert (order.status, order.exchange_order_id, order.filled, order.average_price) == (
        "filled",
        "1",
        D("0.001"),
        BTC_PRICE,
    )
    # Binance takes a buy's fee in the asset received: 0.1% of 0.001 BTC.
    assert (order.fee, order.fee_currency) == (D("0.000001"), "BTC")
    assert order.cost == D("0.001") * BTC_PRICE
    assert server.balances() == {
        "USDT": D("10000") - D("0.001") * BTC_PRICE,
        "BTC": D("0.5") + D("0.001") - D("0.000001"),
    }
    fill = order.to_fill("entry")
    assert (fill.amount, fill.price, fill.fee, fill.reason) == (D("0.001"), BTC_PRICE, D("0.000001"), "entry")
    assert fill.ts == datetime.fromtimestamp(DATA_END_MS / 1000, UTC)


def test_the_same_signal_processed_twice_or_after_a_restart_sends_one_order(server):
    first = broker(client(server)).submit(ticket(102))
    again = broker(client(server)).submit(ticket(102))  # a retried job, a fresh process and client
    live = broker(client(server))
    third = live.submit(ticket(102))

    assert len(posts(server)) == 1 and len(server.orders()) == 1
    assert first.exchange_order_id == again.exchange_order_id == third.exchange_order_id
    assert again.status == "filled" and again.fee == first.fee  # the fee read back from the order's trades
    # Another side or symbol of the same signal event is its own order.
    live.submit(ticket(102, side="sell"))
    assert len(server.orders()) == 2


def test_binance_accepts_a_filled_orders_client_id_again_so_the_lookup_is_what_prevents_doubling(server):
    """The fake is as lenient as Binance: the id must only be unique among OPEN orders."""
    exchange = client(server)
    cid = client_order_id("decision-103", "buy")
    for _ in range(2):
        exchange.create_order("BTC/USDT", "market", "buy", "0.001", None, {"clientOrderId": cid})
    assert [o.client_order_id for o in server.orders()] == [cid, cid]
    # A resting limit order's id is refused while it is open, as on Binance.
    exchange.create_order("BTC/USDT", "limit", "buy", "0.001", 10000, {"clientOrderId": "tracer-104-x"})
    with pytest.raises(ccxt.InvalidOrder, match="Duplicate order sent"):
        exchange.create_order("BTC/USDT", "limit", "buy", "0.001", 10000, {"clientOrderId": "tracer-104-x"})


def test_a_lost_reply_is_resolved_by_looking_the_order_up_not_by_sending_again(server):
    server.crash_after_accepting(ORDER, mode="drop")
    order = broker(client(server)).submit(ticket(105))

    assert order.status == "filled" and order.fee == D("0.000001")
    assert [r.status for r in posts(server)] == [0]  # one POST, its reply dropped
    assert len(server.orders()) == 1


def test_a_crash_between_sending_and_recording_then_a_retry_finds_the_order_and_sends_none(server):
    # The order is accepted, the reply is lost, and the exchange stays unreachable while the
    # broker tries to find out: the job fails without knowing, and without re-sending.
    server.crash_after_accepting(ORDER, mode="503", outage_after=FAST.retries + 1)
    with pytest.raises(OrderStateUnknown, match="nothing was re-sent"):
        broker(client(server)).submit(ticket(106))
    assert len(posts(server)) == 1 and len(server.orders()) == 1

    # The job is retried in a new process: it finds the order by its client id.
    order = broker(client(server)).submit(ticket(106))
    assert order.status == "filled" and order.exchange_order_id == str(server.orders()[0].order_id)
    assert len(posts(server)) == 1 and len(server.orders()) == 1


def test_when_the_exchange_cannot_be_asked_nothing_is_sent(server):
    server.fail_next("BTC/USDT", status=503, times=FAST.retries + 1)
    live = broker(client(server))
    live.exchange.load_markets()
    with pytest.raises(OrderStateUnknown, match="nothing was sent"):
        live.submit(ticket(107))
    assert posts(server) == [] and server.orders() == []


# --- refusals -------------------------------------------------------------------------------


def test_below_the_market_minimum_notional_is_refused_without_sending(server):
    order = broker(client(server)).submit(ticket(108, amount="0.00005"))  # about 2.8 USDT < 5
    assert order.status == "rejected" and "below the market minimum 5" in order.reason
    assert posts(server) == []


def test_the_amount_is_cut_to_the_markets_step_never_rounded_up(server):
    order = broker(client(server)).submit(ticket(109, amount="0.0012399"))
    assert order.amount == D("0.00123") and server.orders()[0].orig_qty == D("0.00123")


def test_an_exchange_rejection_comes_back_rejected_with_the_exchanges_reason(server):
    order = broker(client(server)).submit(ticket(110, amount="1"))  # about 56,000 USDT, 10,000 held
    assert order.status == "rejected" and "insufficient balance" in order.reason
    assert [r.status for r in posts(server)] == [400] and server.orders() == []


def test_a_ticket_with_an_id_not_derived_from_its_signal_is_refused(server):
    free_form = OrderTicket("tracer-999-abc", "BTC/USDT", "buy", D("0.001"), BTC_PRICE, None, None, "d", 111)
    with pytest.raises(ValueError, match="derived from the signal event"):
        broker(client(server)).submit(free_form)
    assert server.requests() == []


def test_a_refusal_by_the_exchange_is_a_rejected_order_with_its_message_not_a_crash(server):
    """Binance's -1013 filter failures arrive from ccxt as BadRequest (not InvalidOrder): the
    exchange answered and took nothing, so the order is rejected with the exchange's words."""
    server.fail_next(ORDER, status=400, body={"code": -1013, "msg": "Filter failure: NOTIONAL"}, method="POST")
    order = broker(client(server)).submit(ticket(108))
    assert (order.status, order.exchange_order_id, order.filled) == ("rejected", None, D(0))
    assert "BadRequest" in order.reason and "Filter failure: NOTIONAL" in order.reason
    assert server.orders() == [] and len(posts(server)) == 1  # sent once, refused, not retried


# --- reconciliation and sandbox -------------------------------------------------------------


def test_reconcile_finds_what_the_local_record_lacks_or_has_stale(server):
    live = broker(client(server))
    recorded_filled = live.submit(ticket(201))
    unrecorded = live.submit(ticket(202))  # the process died before recording this one
    recorded_pending = live.submit(ticket(203))  # recorded as pending, then the process died
    # Another deployment's order under the same prefix: not derived from this one's decisions.
    elsewhere = live.submit(ticket(205))
    live.exchange.create_order("BTC/USDT", "limit", "buy", "0.001", 10000, {"clientOrderId": "manual-1"})  # not ours
    never_arrived = client_order_id("decision-204", "buy")

    ours = {client_order_id(f"decision-{n}", side) for n in (201, 202, 203, 204) for side in ("buy", "sell")}

    report = broker(client(server)).reconcile(
        ["BTC/USDT", "ETH/USDT"],
        [
            RecordedOrder(recorded_filled.client_order_id, "BTC/USDT", "filled"),
            RecordedOrder(recorded_pending.client_order_id, "BTC/USDT", "pending"),
            RecordedOrder(never_arrived, "BTC/USDT", "pending"),
        ],
        ours=ours.__contains__,
    )

    assert [o.client_order_id for o in report.unrecorded] == [unrecorded.client_order_id]
    assert report.foreign == [elsewhere.client_order_id]  # listed, never adopted
    assert report.unrecorded[0].status == "filled" and report.unrecorded[0].fee == D("0.000001")
    assert [(o.client_order_id, o.status) for o in report.changed] == [(recorded_pending.client_order_id, "filled")]
    assert report.missing == [never_arrived]
    held = server.balances()
    assert report.balances == {"USDT": held["USDT"] + D("0.001") * D("10000"), "BTC": held["BTC"]}  # locked included
    assert posts(server)[-1].query["newClientOrderId"] == "manual-1"  # reconcile itself sent nothing


def test_sandbox_mode_trades_the_same_way(server):
    exchange = client(server, sandbox=True)
    assert exchange.isSandboxModeEnabled
    order = broker(exchange).submit(ticket(301))
    assert order.status == "filled" and len(server.orders()) == 1
    assert not [r for r in server.requests() if r.path.startswith("/sapi/")]  # no wallet calls on a testnet


def test_cancel_by_client_id_cancels_a_resting_order_and_answers_none_for_an_unknown_one(server):
    live = broker(client(server))
    live.exchange.create_order("BTC/USDT", "limit", "buy", "0.001", 10000, {"clientOrderId": "tracer-401-x"})
    assert live.fetch("BTC/USDT", "tracer-401-x").status == "pending"
    assert server.balances()["USDT"] == D("10000") - D("10")  # locked by the resting order

    assert live.cancel("BTC/USDT", "tracer-401-x").status == "canceled"
    assert server.orders()[0].status == "CANCELED" and server.balances()["USDT"] == D("10000")
    assert live.cancel("BTC/USDT", "tracer-401-x").status == "canceled"  # again: unchanged, no error
    assert live.cancel("BTC/USDT", "tracer-402-x") is None
    assert len([r for r in server.requests(ORDER) if r.method == "DELETE"]) == 1
