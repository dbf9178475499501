"""The paper broker: fills at the next candle's open with slippage and fee (exact Decimal
arithmetic written out), stops and targets against each candle's low/high, refusals, and a
restart from a snapshot stored in DuckDB that resumes exactly where it stopped."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

import duckdb
import pytest

from tracer_assets.data import BUNDLED_REPLAY_DIR
from tracer_assets.resources.replay_exchange import read_candle_file
from tracer_assets.settings import load_settings
from tracer_assets.trading.orders import OrderTicket, client_order_id
from tracer_assets.trading.paper import PaperBroker

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
FIVE_MIN = timedelta(minutes=5)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def ticket(
    storage_id: int,
    side: str,
    amount: str,
    price: str | None = None,
    stop: str | None = None,
    target: str | None = None,
    symbol: str = "BTC/USDT",
) -> OrderTicket:
    return OrderTicket(
        client_order_id=client_order_id(f"decision-{storage_id}-{symbol}", side),
        symbol=symbol,
        side=side,
        amount=D(amount),
        price=None if price is None else D(price),
        stop_loss=None if stop is None else D(stop),
        take_profit=None if target is None else D(target),
        decision_id=f"decision-{storage_id}-{symbol}",
        signal_storage_id=storage_id,
    )


def long_position(broker: PaperBroker, stop: str | None, target: str | None) -> None:
    """Buy 0.01 BTC at 60,000 (no slippage, fee 0.1%): cost 600.6 USDT."""
    broker.submit(ticket(1, "buy", "0.01", "60000", stop, target), at(0))
    [fill] = broker.on_candle("BTC/USDT", at(0), "60000", "60010", "59990", "60000")
    assert (fill.price, fill.reason) == (D("60000"), "entry")


# --- client order ids -----------------------------------------------------------------------


def test_client_order_id_is_deterministic_short_and_in_binances_charset():
    cid = client_order_id("5b0c8e9e-7f0e-5d0a-9c51-8b8e1e7c3a10", "buy")
    assert cid == client_order_id("5b0c8e9e-7f0e-5d0a-9c51-8b8e1e7c3a10", "buy")
    assert cid.startswith("tracer-") and len(cid) == 35
    # The other side of the same decision, or another decision, is a different order.
    assert (
        len({cid, client_order_id("5b0c8e9e-7f0e-5d0a-9c51-8b8e1e7c3a10", "sell"), client_order_id("other", "buy")})
        == 3
    )
    # The longest: a 7-character prefix.
    assert len(client_order_id("d", "sell", prefix="tracer2")) == 36
    with pytest.raises(ValueError, match="prefix='tracer-x'"):
        client_order_id("d", "buy", prefix="tracer-x")
    with pytest.raises(ValueError, match="decision_id"):
        client_order_id(" ", "buy")
    with pytest.raises(ValueError, match="side='hold'"):
        client_order_id("d", "hold")


def test_client_order_ids_differ_across_dagster_instances_for_the_same_storage_id():
    """Storage ids restart at 1 in every Dagster instance; the signals run's id does not repeat."""
    from tracer_assets.trading.decide import SignalEvent, decision_id

    first = SignalEvent(5, "0b5e6a4c-1111-4c5e-9d1e-3c2f1a0b9e01")
    second = SignalEvent(5, "7d3f2e1a-2222-4b6c-8a9f-0e1d2c3b4a59")
    assert client_order_id(decision_id(first, "BTC/USDT"), "buy") != client_order_id(
        decision_id(second, "BTC/USDT"), "buy"
    )
    assert client_order_id(decision_id(first, "BTC/USDT"), "buy") == client_order_id(
        decision_id(first, "BTC/USDT"), "buy"
    )


def test_tickets_refuse_floats_and_inconsistent_stops_naming_the_field():
    with pytest.raises(TypeError, match="amount=0.01"):
        OrderTicket("tracer-1-x", "BTC/USDT", "buy", 0.01, None, None, None, "d", 1)
    with pytest.raises(ValueError, match="stop_loss=61000 must be below the expected price=60000"):
        ticket(1, "buy", "0.01", "60000", stop="61000")
    with pytest.raises(ValueError, match="amount=0"):
        ticket(1, "buy", "0")
    with pytest.raises(ValueError, match="18 decimal places"):
        ticket(1, "buy", "0.0000000000000000001")


def test_a_candle_that_contradicts_itself_is_refused_naming_symbol_time_and_values():
    broker = PaperBroker("USDT", D("1000"))
    with pytest.raises(ValueError, match=r"BTC/USDT candle at 2024-03-01T12:00:00\+00:00: open/close outside"):
        broker.on_candle("BTC/USDT", at(0), "60000", "59000", "58000", "58500")
    with pytest.raises(
        ValueError, match=r"BTC/USDT candle at 2024-03-01T12:00:00\+00:00 low=-1: must be greater than 0"
    ):
        broker.on_candle("BTC/USDT", at(0), "60000", "61000", "-1", "60500")
    with pytest.raises(ValueError, match="timezone-aware"):
        broker.on_candle("BTC/USDT", datetime(2024, 3, 1), "1", "1", "1", "1")


# --- balances and fills ---------------------------------------------------------------------


def test_balances_start_from_the_sim_balances_of_the_settings():
    settings = load_settings({"SIM_QUOTE_BALANCE": "2500.5", "SIM_BASE_BALANCE": "0.25"})
    broker = PaperBroker("USDT", settings.trading.sim_quote_balance, {"BTC": settings.trading.sim_base_balance})

    assert broker.balances == {"USDT": D("2500.5"), "BTC": D("0.25")}
    assert broker.equity({"BTC/USDT": D("60000")}) == D("2500.5") + D("0.25") * 60000
    assert broker.equity({"BTC/USDT": 60000.1}) == D("17500.525")  # a DOUBLE from DuckDB, read as 60000.1
    with pytest.raises(ValueError, match="no price for BTC/USDT"):
        broker.equity({})
    # The starting base balance can be sold: no position, so no realized PnL is attributed.
    broker.submit(ticket(7, "sell", "0.25", "60000"), at(0))
    [fill] = broker.on_candle("BTC/USDT", at(5), "60000", "60000", "60000", "60000")
    assert fill.reason == "signal" and broker.balances["BTC"] == 0
    assert broker.balances["USDT"] == D("2500.5") + D("15000") - D("15")  # 0.25 × 60,000 − 0.1% fee


def test_a_buy_fills_at_the_next_candles_open_with_adverse_slippage_and_the_fee_in_quote():
    broker = PaperBroker("USDT", D("1000"), fee_rate=D("0.001"), slippage_bps=D("10"))
    order = broker.submit(ticket(1, "buy", "0.01", "60000"), at(0.5))  # decided 30 s into the 12:00 candle
    assert order.status == "pending"

    # The 12:00 candle opened before the decision: its open is in the past, no fill.
    assert broker.on_candle("BTC/USDT", at(0), "59000", "60500", "58900", "60050") == []
    [fill] = broker.on_candle("BTC/USDT", at(5), "60100", "60300", "60000", "60200")

    price = D("60100") * (1 + D("10") / D("10000"))  # 60,160.1
    notional = D("0.01") * price  # 601.601
    fee = notional * D("0.001")  # 0.601601
    assert (price, notional, fee) == (D("60160.1"), D("601.601"), D("0.601601"))
    assert (fill.price, fill.fee, fill.fee_currency, fill.ts, fill.reason) == (price, fee, "USDT", at(5), "entry")
    assert broker.balances == {"USDT": D("1000") - notional - fee, "BTC": D("0.01")}
    assert broker.balances["USDT"] == D("397.797399")
    [position] = broker.positions.values()
    assert (position.amount, position.entry_price, position.cost_basis) == (D("0.01"), price, D("602.202601"))
    assert broker.order(fill.client_order_id).status == "filled"
    # Marked at the close: 0.01 × 60,200 − 602.202601.
    assert position.unrealized_pnl(D("60200")) == D("-0.202601")


def test_a_sell_fills_at_the_open_minus_slippage_and_realizes_pnl_net_of_both_fees():
    broker = PaperBroker("USDT", D("1000"), fee_rate=D("0.001"), slippage_bps=D("10"))
    broker.submit(ticket(1, "buy", "0.01", "60000"), at(0))
    broker.on_candle("BTC/USDT", at(0), "60000", "60000", "60000", "60000")  # buy at 60,060, cost 601.2006
    broker.submit(ticket(2, "sell", "0.01", "61000"), at(5))
    [fill] = broker.on_candle("BTC/USDT", at(5), "61000", "61000", "61000", "61000")

    assert fill.price == D("61000") * (1 - D("0.001")) == D("60939")
    proceeds = D("0.01") * D("60939") * (1 - D("0.001"))  # 609.39 − 0.60939
    assert (fill.reason, fill.fee, proceeds) == ("signal", D("0.60939"), D("608.78061"))
    assert broker.positions == {}
    [closed] = broker.position_history
    assert closed.realized_pnl == proceeds - D("601.2006") == D("7.58001")
    assert closed.closed_at == at(5) and broker.realized_pnl() == D("7.58001")
    assert broker.balances == {"USDT": D("1000") - D("601.2006") + proceeds, "BTC": D("0")}


def test_a_candle_opening_exactly_at_the_decision_fills_but_never_one_before_it():
    broker = PaperBroker("USDT", D("1000"), fee_rate=D("0"))
    broker.submit(ticket(1, "buy", "0.01", "60000"), at(5))
    # Late candles from before the decision, in time order: none fills.
    assert broker.on_candle("BTC/USDT", at(-5), "50000", "50000", "50000", "50000") == []
    assert broker.on_candle("BTC/USDT", at(0), "55000", "55000", "55000", "55000") == []
    # The candle opening at the decision instant: its open is the price at that instant.
    [fill] = broker.on_candle("BTC/USDT", at(5), "60000", "60000", "60000", "60000")
    assert fill.price == D("60000")
    # Another symbol's candles never fill it.
    broker.submit(ticket(2, "buy", "0.001", "60000"), at(10))
    assert broker.on_candle("ETH/USDT", at(10), "3000", "3000", "3000", "3000") == []
    assert broker.order(client_order_id("decision-2-BTC/USDT", "buy")).status == "pending"


def test_a_candle_seen_before_is_ignored_so_replaying_after_a_restart_changes_nothing():
    broker = PaperBroker("USDT", D("1000"), fee_rate=D("0"))
    long_position(broker, stop="59000", target=None)
    before = broker.snapshot()
    # The same candle again, and an older one with a low through the stop: nothing happens.
    assert broker.on_candle("BTC/USDT", at(0), "60000", "60010", "50000", "60000") == []
    assert broker.on_candle("BTC/USDT", at(-5), "60000", "60010", "50000", "60000") == []
    assert broker.snapshot() == before


# --- stops and targets ----------------------------------------------------------------------


def test_stop_loss_inside_a_candle_fills_at_the_stop_with_slippage():
    broker = PaperBroker("USDT", D("1000"), fee_rate=D("0.001"), slippage_bps=D("5"))
    broker.submit(ticket(1, "buy", "0.01", "60000", stop="59000", target="62000"), at(0))
    [entry] = broker.on_candle("BTC/USDT", at(0), "60000", "60100", "59500", "59800")  # low above the stop
    assert entry.price == D("60030")  # 60,000 × 1.0005
    [exit_] = broker.on_candle("BTC/USDT", at(5), "59800", "59900", "58900", "59100")

    assert (exit_.reason, exit_.price) == ("stop", D("59000") * (1 - D("0.0005")))  # 58,970.5
    cost = D("0.01") * D("60030") * D("1.001")  # 600.90030
    proceeds = D("0.01") * D("58970.5") * D("0.999")  # 589.115295
    assert broker.position_history[0].realized_pnl == proceeds - cost == D("-11.785005")
    assert broker.balances["BTC"] == 0 and broker.positions == {}


def test_take_profit_inside_a_candle_fills_at_the_target():
    broker = PaperBroker("USDT", D("1000"), fee_rate=D("0.001"))
    long_position(broker, stop="59000", target="62000")
    assert broker.on_candle("BTC/USDT", at(5), "60000", "61999.99", "59000.01", "61000") == []  # touches neither
    [exit_] = broker.on_candle("BTC/USDT", at(10), "61000", "62100", "60900", "62050")

    assert (exit_.reason, exit_.price, exit_.ts) == ("target", D("62000"), at(10))
    # Sold 0.01 × 62,000 = 620, fee 0.62; bought for 600 + 0.6.
    assert broker.position_history[0].realized_pnl == D("620") - D("0.62") - D("600.6") == D("18.78")


def test_slippage_applies_to_every_fill_exits_included_as_in_the_backtester():
    broker = PaperBroker("USDT", D("1000"), fee_rate=D("0"), slippage_bps=D("20"))
    broker.submit(ticket(1, "buy", "0.01", "60000", stop="59000", target="62000"), at(0))
    [entry] = broker.on_candle("BTC/USDT", at(0), "60000", "60000", "60000", "60000")
    [exit_] = broker.on_candle("BTC/USDT", at(5), "61000", "62100", "60900", "62050")
    assert (entry.price, exit_.price) == (D("60000") * D("1.002"), D("62000") * D("0.998"))  # 60,120 and 61,876
    assert broker.realized_pnl() == D("618.76") - D("601.2") == D("17.56")


def test_a_gap_through_the_stop_fills_at_the_open_not_the_stop():
    broker = PaperBroker("USDT", D("1000"), fee_rate=D("0.001"))
    long_position(broker, stop="59000", target="62000")
    [exit_] = broker.on_candle("BTC/USDT", at(5), "58000", "58500", "57500", "58200")

    assert (exit_.reason, exit_.price) == ("stop", D("58000"))
    assert broker.position_history[0].realized_pnl == D("580") - D("0.58") - D("600.6") == D("-21.18")


def test_a_gap_over_the_target_fills_at_the_better_open():
    broker = PaperBroker("USDT", D("1000"), fee_rate=D("0"))
    long_position(broker, stop="59000", target="62000")
    [exit_] = broker.on_candle("BTC/USDT", at(5), "63000", "63500", "58000", "63100")
    assert (exit_.reason, exit_.price) == ("target", D("63000"))


def test_stop_first_when_a_candle_reaches_both_stop_and_target():
    broker = PaperBroker("USDT", D("1000"), fee_rate=D("0"))
    long_position(broker, stop="59000", target="62000")
    [exit_] = broker.on_candle("BTC/USDT", at(5), "60000", "62500", "58500", "61000")
    assert (exit_.reason, exit_.price) == ("stop", D("59000"))
    assert broker.realized_pnl() == D("590") - D("600") == D("-10")
    # The position is closed: later candles do nothing.
    assert broker.on_candle("BTC/USDT", at(10), "50000", "70000", "40000", "60000") == []


def test_the_entry_candle_itself_is_checked_after_the_fill_at_its_open():
    broker = PaperBroker("USDT", D("1000"), fee_rate=D("0"))
    broker.submit(ticket(1, "buy", "0.01", "60000", stop="59000"), at(0))
    fills = broker.on_candle("BTC/USDT", at(0), "60000", "60100", "58800", "59100")
    assert [(f.reason, f.price) for f in fills] == [("entry", D("60000")), ("stop", D("59000"))]


# --- refusals -------------------------------------------------------------------------------


def test_the_same_client_order_id_twice_is_one_order_and_one_fill():
    broker = PaperBroker("USDT", D("1000"), fee_rate=D("0"))
    first = broker.submit(ticket(1, "buy", "0.01", "60000"), at(0))
    again = broker.submit(ticket(1, "buy", "0.01", "60000"), at(1))
    assert again is first and len(broker.orders) == 1
    broker.on_candle("BTC/USDT", at(5), "60000", "60000", "60000", "60000")
    # Re-processing the signal after the fill: still the one order, filled.
    assert broker.submit(ticket(1, "buy", "0.01", "60000"), at(6)).status == "filled"
    broker.on_candle("BTC/USDT", at(10), "60000", "60000", "60000", "60000")
    assert len(broker.fills) == 1 and broker.balances["BTC"] == D("0.01")


def test_a_buy_beyond_the_free_quote_balance_is_refused_with_the_reason():
    broker = PaperBroker("USDT", D("1000"), fee_rate=D("0.001"))
    ok = broker.submit(ticket(1, "buy", "0.01", "60000"), at(0))  # reserves 600.6
    refused = broker.submit(ticket(2, "buy", "0.0067", "60000"), at(0))  # 402 + 0.402 > 399.4 free

    assert ok.status == "pending" and refused.status == "rejected"
    assert "insufficient USDT" in refused.reason and "402.402" in refused.reason and "399.4" in refused.reason
    broker.on_candle("BTC/USDT", at(0), "60000", "60000", "60000", "60000")
    assert [f.client_order_id for f in broker.fills] == [ok.client_order_id]
    assert broker.balances == {"USDT": D("399.4"), "BTC": D("0.01")}


def test_a_buy_without_any_known_price_is_refused_rather_than_guessed():
    broker = PaperBroker("USDT", D("1000"))
    refused = broker.submit(ticket(1, "buy", "0.01"), at(0))
    assert refused.status == "rejected" and "no price known for BTC/USDT" in refused.reason


def test_selling_more_than_is_held_is_refused():
    broker = PaperBroker("USDT", D("1000"), {"BTC": D("0.05")}, fee_rate=D("0"))
    pending = broker.submit(ticket(1, "sell", "0.03"), at(0))
    refused = broker.submit(ticket(2, "sell", "0.03"), at(0))  # only 0.02 left unreserved
    assert pending.status == "pending" and refused.status == "rejected"
    assert refused.reason == "insufficient BTC: selling 0.03 but 0.02 is held and not reserved by pending sells"
    assert broker.submit(ticket(3, "sell", "1", symbol="ETH/USDT"), at(0)).status == "rejected"


def test_a_pending_sell_is_rejected_at_fill_when_a_stop_already_sold_the_position():
    broker = PaperBroker("USDT", D("1000"), fee_rate=D("0"))
    long_position(broker, stop="59000", target=None)
    broker.submit(ticket(2, "sell", "0.01"), at(1))
    # The stop fires on the 12:05 candle: the 12:05 open fills the sell first, at 60,000.
    fills = broker.on_candle("BTC/USDT", at(5), "60000", "60000", "58000", "58500")
    assert [f.reason for f in fills] == ["signal"]
    broker.submit(ticket(3, "buy", "0.01", "58500", stop="58000"), at(6))
    broker.submit(ticket(4, "sell", "0.01"), at(6))  # refused: the buy is not filled yet
    assert broker.order(client_order_id("decision-4-BTC/USDT", "sell")).status == "rejected"


# --- restart --------------------------------------------------------------------------------


def real_candles(symbol: str, start: datetime, count: int) -> list[tuple]:
    frame = read_candle_file(BUNDLED_REPLAY_DIR / f"{symbol.replace('/', '_')}-5m.parquet")
    start_ms = int(start.timestamp() * 1000)
    rows = frame.filter(frame["ms"] >= start_ms).head(count).iter_rows()
    return [(datetime.fromtimestamp(ms / 1000, UTC), o, h, low, c) for ms, o, h, low, c, _ in rows]


def decide(broker: PaperBroker, symbol: str, index: int, ts: datetime, close: float) -> OrderTicket | None:
    """A fixed rule so two runs can be compared: buy every 40 candles with a 1% stop and a 1.5%
    target (every other time as fractions of the fill, with a 0.4% trailing stop), sell half of
    what is held 20 candles later."""
    price = D(str(close))
    if index % 80 == 40:
        amount = D("0.02") if symbol == "BTC/USDT" else D("0.3")
        fractions = dict(stop_fraction=D("0.01"), target_fraction=D("0.015"), trailing_stop=D("0.004"))
        return replace(ticket(index, "buy", str(amount), str(price), symbol=symbol), **fractions)
    if index % 40 == 0:
        amount = D("0.02") if symbol == "BTC/USDT" else D("0.3")
        return ticket(
            index,
            "buy",
            str(amount),
            str(price),
            str((price * D("0.99")).quantize(D("0.01"))),
            str((price * D("1.015")).quantize(D("0.01"))),
            symbol=symbol,
        )
    held = broker.available(symbol.split("/")[0])
    if index % 40 == 20 and held > 0:
        return ticket(index, "sell", str(held / 2), symbol=symbol)
    return None


def run(broker: PaperBroker, candles: dict[str, list[tuple]], indices: range) -> None:
    for index in indices:
        for symbol, series in candles.items():
            ts, o, h, low, c = series[index]
            broker.on_candle(symbol, ts, o, h, low, c)
            order = decide(broker, symbol, index, ts, c)
            if order is not None:
                # Decided just after the candle closed: it fills at the next candle's open.
                broker.submit(order, ts + FIVE_MIN + timedelta(seconds=7))


def through_duckdb(rows: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """Store every table as the lead would (DECIMAL(38, 18), TIMESTAMPTZ) and read it back."""
    con = duckdb.connect()
    kinds = {D: "DECIMAL(38, 18)", datetime: "TIMESTAMPTZ", int: "BIGINT", str: "VARCHAR"}
    back = {}
    for table, table_rows in rows.items():
        columns = list(table_rows[0])
        types = []
        for column in columns:
            values = [r[column] for r in table_rows if r[column] is not None]
            types.append(kinds[type(values[0])] if values else "VARCHAR")
        con.execute(f"CREATE TABLE {table} ({', '.join(f'{c} {t}' for c, t in zip(columns, types))})")
        con.executemany(
            f"INSERT INTO {table} VALUES ({', '.join('?' for _ in columns)})",
            [[r[c] for c in columns] for r in table_rows],
        )
        # Read back in reverse: a table has no row order, so restore must not rely on one.
        back[table] = [dict(zip(columns, r)) for r in reversed(con.execute(f"SELECT * FROM {table}").fetchall())]
    return back


def test_a_restart_from_a_snapshot_stored_in_duckdb_resumes_exactly_as_never_stopping():
    candles = {s: real_candles(s, datetime(2024, 3, 4, tzinfo=UTC), 400) for s in ("BTC/USDT", "ETH/USDT")}
    settings = dict(
        quote_currency="USDT",
        quote_balance=D("10000"),
        base_balances={"BTC": D("0"), "ETH": D("0")},
        fee_rate=D("0.001"),
        slippage_bps=D("5"),
    )

    uninterrupted = PaperBroker(**settings)
    run(uninterrupted, candles, range(400))

    # Two restarts: one holding a position with a trailing stop and its peak, one holding a
    # pending order and a position with its stop; each snapshot goes through DuckDB.
    broker = PaperBroker(**settings)
    run(broker, candles, range(45))
    stored = broker.snapshot()
    assert any(p["closed_at"] is None and p["peak"] is not None for p in stored["positions"])
    broker = PaperBroker.restore(through_duckdb(stored))
    assert broker.snapshot() == stored
    run(broker, candles, range(45, 261))
    stored = broker.snapshot()
    assert any(o["status"] == "pending" for o in stored["orders"])
    assert any(p["closed_at"] is None and p["stop_loss"] is not None for p in stored["positions"])
    resumed = PaperBroker.restore(through_duckdb(stored))
    assert resumed.snapshot() == stored
    run(resumed, candles, range(261, 400))

    assert resumed.snapshot() == uninterrupted.snapshot()
    reasons = {f.reason for f in uninterrupted.fills}
    assert reasons == {"entry", "signal", "stop", "target", "trailing"}, reasons  # every path exercised
    assert resumed.realized_pnl() == uninterrupted.realized_pnl() != 0


def test_restore_names_what_is_missing():
    rows = PaperBroker("USDT", D("1")).snapshot()
    del rows["positions"]
    with pytest.raises(ValueError, match="'positions'"):
        PaperBroker.restore(rows)
