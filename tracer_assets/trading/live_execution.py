"""The `execution` step in LIVE mode: reconcile with the exchange, watch stops and targets,
send this signal event's orders through `LiveBroker`, record each one as soon as it is sent.

Exactly once, whatever crashes where:
- every order's client id derives from the signal event (`client_order_id`), and `LiveBroker`
  asks the exchange for that id before sending, so a retried run finds the order instead of
  sending a second one;
- each order is recorded in its own transaction right after the exchange answered, so a crash
  loses at most the record of the order in flight, never the knowledge that it was sent;
- on start, `LiveBroker.reconcile` finds what the record lacks (an order sent by a run that died
  before recording it) or has stale (pending, since filled or canceled), and records it first;
- an order whose fate the exchange cannot tell (`OrderStateUnknown`) stops the step: nothing
  more is sent, and the next run starts with the look-up again.

Positions are rebuilt from the recorded executions (`live_book.book_positions`); balances are
the exchange's. No DuckDB connection is held while a request is in flight.
"""

import json
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import dagster as dg

from tracer_assets.resources.warehouse import transaction
from tracer_assets.trading.decide import decimal_or_none, decision_id
from tracer_assets.trading.live import ExchangeOrder, LiveBroker, LiveTradingRefused, OrderStateUnknown, RecordedOrder
from tracer_assets.trading.live_book import Book, Execution, book_positions, exit_trigger
from tracer_assets.trading.paper import OrderTicket, client_order_id
from tracer_assets.trading.risk import MarketRules, OrderRequest, RiskLimits, RiskState, assess, capped
from tracer_assets.trading.tables import QUOTE, create_trading_tables, insert_rows, portfolio_row

MODE = "LIVE"
# How far back reconcile reads each symbol's orders; older pending records are looked up by id.
RECONCILE_WINDOW = timedelta(days=7)


@dataclass
class LiveOutcome:
    """What one live execution did, for the step's metadata and the audit files."""

    rows: list[dict]  # orders recorded by this run: found on reconcile, then placed or refused
    book: Book
    portfolio: dict
    reconciled: int  # orders recorded or updated from the exchange's side
    orders_total: int


def live_execution(context, duckdb, live_exchange, settings, storage_id: int, config_hash: str) -> LiveOutcome:
    try:
        broker = LiveBroker(live_exchange.client(), settings, allowed=True)
    except LiveTradingRefused as exc:
        raise dg.Failure(f"{exc}; nothing was sent") from exc
    exchange = broker.exchange
    run_id = context.run.run_id
    now = broker.now()  # the exchange's clock: its order times and the reconcile window are in it
    with duckdb.get_connection() as connection:
        create_trading_tables(connection)
        recorded = connection.execute(
            "SELECT client_order_id, symbol, status FROM trading.orders WHERE mode = ?", [MODE]
        ).fetchall()
        known = {row[0] for row in connection.execute("SELECT client_order_id FROM trading.orders").fetchall()}
        decisions_now = connection.sql(
            "SELECT * FROM trading.decisions WHERE signal_storage_id = ? AND action <> 'HOLD' ORDER BY symbol",
            params=[storage_id],
        ).pl()

    try:
        found = broker.reconcile(settings.symbols, [RecordedOrder(*row) for row in recorded], since=now - RECONCILE_WINDOW)
    except OrderStateUnknown as exc:
        raise dg.Failure(f"reconciling with {exchange.id} failed, nothing was sent: {exc}") from exc
    reconciled = []
    for order in found.unrecorded:
        sent_for = _signal_of(order.client_order_id)
        row = _order_row(order, decision_id(sent_for, order.symbol), sent_for, run_id, now, config_hash,
                         f"found at {exchange.id} on reconcile: sent by a run that stopped before recording it")
        _record(duckdb, [row])
        reconciled.append(row)
        known.add(order.client_order_id)
    for order in found.changed:
        _update(duckdb, order, now, None)
    for cid in found.missing:
        _update_missing(duckdb, cid, now, f"unknown to {exchange.id} on reconcile: it never arrived")
    if found.unrecorded or found.changed or found.missing:
        context.log.warning(
            f"reconcile with {exchange.id}: {len(found.unrecorded)} order(s) recorded that were sent but not recorded, "
            f"{len(found.changed)} updated, {len(found.missing)} unknown to the exchange"
        )

    markets = {symbol: MarketRules.from_ccxt_market(exchange.market(symbol), exchange.precisionMode)
               for symbol in settings.symbols}
    dust = {s: rules.min_amount or rules.amount_step or Decimal(0) for s, rules in markets.items()}
    book = _book(duckdb, dust)
    free_quote = found.free.get(QUOTE, Decimal(0))
    limits = RiskLimits.from_settings(settings)

    # Exits first: a position whose stop or target was touched is sold before anything new is bought.
    intents = []
    with duckdb.get_connection() as connection:
        closes = _last_closes(connection, settings.symbols)
        for symbol, position in book.open_positions.items():
            candles = connection.execute(
                "SELECT ts, high, low FROM market.candles WHERE symbol = ? AND ts >= ? ORDER BY ts",
                [symbol, position.opened_at],
            ).fetchall()
            trigger = exit_trigger(position, [(ts, decimal_or_none(h), decimal_or_none(low)) for ts, h, low in candles])
            if trigger is not None:
                reason, at = trigger
                intents.append(dict(symbol=symbol, side="sell", decision_id=decision_id(storage_id, symbol), confidence=1.0,
                                    price=closes.get(symbol), stop=None, target=None, size=None,
                                    why=f"{reason} touched by the candle at {at.isoformat()}: market sell"))
    for decision in decisions_now.iter_rows(named=True):
        side = "buy" if decision["action"] == "BUY" else "sell"
        intents.append(dict(symbol=decision["symbol"], side=side, decision_id=decision["decision_id"],
                            confidence=decision["confidence"],
                            price=decimal_or_none(decision["price"]) or closes.get(decision["symbol"]),
                            stop=decimal_or_none(decision["stop_loss"]) if side == "buy" else None,
                            target=decimal_or_none(decision["take_profit"]) if side == "buy" else None,
                            size=decimal_or_none(decision["size_quote"]), why=None))

    placed = []
    for intent in intents:
        cid = client_order_id(storage_id, intent["symbol"], intent["side"])
        if cid in known:  # this signal's order exists (recorded, or found on reconcile): never a second one
            continue
        known.add(cid)
        if intent["price"] is None:
            verdict = None
        else:
            verdict = assess(
                OrderRequest(intent["symbol"], intent["side"], intent["price"], confidence=intent["confidence"]),
                RiskState.from_history(book.positions, now, free_quote), capped(limits, intent["size"]),
                markets[intent["symbol"]],
            )
        row = {
            "client_order_id": cid, "decision_id": intent["decision_id"], "signal_storage_id": storage_id,
            "run_id": run_id, "mode": MODE, "symbol": intent["symbol"], "side": intent["side"],
            "amount": verdict.amount if verdict else None, "price": verdict.price if verdict else None,
            "status": "rejected", "fee": None, "ts": now, "updated_at": now,
            "reason": verdict.reason if verdict else f"no price known for {intent['symbol']}: nothing to size with",
            "risk_checks": _checks_json(verdict),
            "config_hash": config_hash, "exchange_order_id": None, "filled": Decimal(0), "fee_currency": None,
        }
        if verdict is not None and verdict.approved:
            ticket = OrderTicket(cid, intent["symbol"], intent["side"], verdict.amount, verdict.price,
                                 intent["stop"], intent["target"], intent["decision_id"], storage_id)
            try:
                order = broker.submit(ticket)
            except OrderStateUnknown as exc:
                raise dg.Failure(
                    f"{exc}. Recorded before it: {len(placed)} order(s) of this run; nothing more was sent."
                ) from exc
            row = _order_row(order, intent["decision_id"], storage_id, run_id, now, config_hash,
                             " / ".join(filter(None, [intent["why"], order.reason or verdict.reason])),
                             risk_checks=_checks_json(verdict))
        elif intent["why"]:
            row["reason"] = f"{intent['why']}; refused: {row['reason']}"
        _record(duckdb, [row])  # at once: a crash after this line cannot lose the order
        placed.append(row)
        if row["filled"]:
            book = _book(duckdb, dust)  # the next order's risk sees this one's position
            if row["side"] == "buy":  # and the cash it took (a sale's proceeds are not counted on: conservative)
                free_quote -= row["filled"] * row["price"] + (row["fee"] if row["fee_currency"] == QUOTE else 0)

    quote_total = broker.balances().get(QUOTE, Decimal(0))
    portfolio = portfolio_row(book.positions, quote_total, closes, now, run_id, storage_id, MODE)
    with duckdb.get_connection() as connection:
        with transaction(connection):
            connection.execute("DELETE FROM trading.positions WHERE mode = ?", [MODE])
            insert_rows(connection, "trading.positions", [
                {**asdict(p), "mode": MODE} for p in book.positions
            ])
            insert_rows(connection, "trading.portfolio", [portfolio])
        orders_total = connection.execute("SELECT count(*) FROM trading.orders").fetchall()[0][0]
    for note in book.notes:
        context.log.warning(note)
    return LiveOutcome([*reconciled, *placed], book, portfolio,
                       len(found.unrecorded) + len(found.changed) + len(found.missing), orders_total)


def _signal_of(cid: str) -> int:
    """The signal storage id inside a client order id `<prefix>-<storage id>-<hash>`."""
    return int(cid.split("-")[1])


def _checks_json(verdict) -> str:
    return json.dumps(verdict.as_record()["checks"] if verdict is not None else [])


def _order_row(order: ExchangeOrder, decision: str, storage_id: int, run_id: str, now: datetime, config_hash: str,
               reason: str | None, risk_checks: str = "[]") -> dict:
    """An order as the exchange reported it, in trading.orders' shape: `amount` what was asked
    for, `filled` what executed, `price` the average fill price."""
    return {
        "client_order_id": order.client_order_id, "decision_id": decision, "signal_storage_id": storage_id,
        "run_id": run_id, "mode": MODE, "symbol": order.symbol, "side": order.side, "amount": order.amount,
        "price": order.average_price, "status": order.status, "fee": order.fee, "ts": order.ts or now,
        "updated_at": now, "reason": reason, "risk_checks": risk_checks, "config_hash": config_hash,
        "exchange_order_id": order.exchange_order_id, "filled": order.filled, "fee_currency": order.fee_currency,
    }


def _record(duckdb, rows: list[dict]) -> None:
    with duckdb.get_connection() as connection:
        with transaction(connection):
            insert_rows(connection, "trading.orders", rows)


def _update(duckdb, order: ExchangeOrder, now: datetime, reason: str | None) -> None:
    with duckdb.get_connection() as connection:
        connection.execute(
            """UPDATE trading.orders SET status = ?, filled = ?, price = coalesce(?, price), fee = coalesce(?, fee),
               fee_currency = coalesce(?, fee_currency), exchange_order_id = coalesce(?, exchange_order_id),
               updated_at = ?, reason = coalesce(?, reason) WHERE client_order_id = ?""",
            [order.status, order.filled, order.average_price, order.fee, order.fee_currency, order.exchange_order_id,
             now, reason, order.client_order_id],
        )


def _update_missing(duckdb, cid: str, now: datetime, reason: str) -> None:
    with duckdb.get_connection() as connection:
        connection.execute(
            "UPDATE trading.orders SET status = 'canceled', updated_at = ?, reason = ? WHERE client_order_id = ?",
            [now, reason, cid],
        )


def _book(duckdb, dust: dict) -> Book:
    """The live positions, replayed from every recorded live execution (stop/target from the buy's decision)."""
    with duckdb.get_connection() as connection:
        rows = connection.execute(
            """SELECT o.client_order_id, o.symbol, o.side, o.filled, o.price, o.fee, o.fee_currency, o.ts,
                      d.stop_loss, d.take_profit
               FROM trading.orders o LEFT JOIN trading.decisions d ON d.decision_id = o.decision_id AND o.side = 'buy'
               WHERE o.mode = ? AND o.filled > 0 AND o.price IS NOT NULL""",
            [MODE],
        ).fetchall()
    return book_positions(
        [Execution(cid, symbol, side, filled, price, fee, fee_currency, ts.astimezone(timezone.utc),
                   decimal_or_none(stop), decimal_or_none(target))
         for cid, symbol, side, filled, price, fee, fee_currency, ts, stop, target in rows],
        dust,
    )


def _last_closes(connection, symbols) -> dict[str, Decimal]:
    rows = connection.execute(
        """SELECT symbol, arg_max(close, ts) FROM market.candles WHERE symbol IN (SELECT unnest(?)) GROUP BY symbol""",
        [list(symbols)],
    ).fetchall()
    return {symbol: decimal_or_none(close) for symbol, close in rows}
