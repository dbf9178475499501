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

from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import dagster as dg
import polars as pl

from tracer_assets.money import decimal_or_none
from tracer_assets.resources.warehouse import transaction
from tracer_assets.trading.decide import (
    SignalEvent,
    decision_id,
    order_request,
    stale_at_execution,
)
from tracer_assets.trading.live import ExchangeOrder, LiveBroker, LiveTradingRefused, OrderStateUnknown, RecordedOrder
from tracer_assets.trading.live_book import Book, Execution, book_positions, exit_trigger
from tracer_assets.trading.orders import Action, Mode, OrderTicket, client_order_id
from tracer_assets.trading.risk import MarketRules, RiskLimits, RiskState, assess, capped
from tracer_assets.trading.tables import (
    QUOTE,
    create_trading_tables,
    insert_rows,
    order_row,
    portfolio_row,
    stored_decisions,
)

MODE = Mode.LIVE
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


def live_execution(context, duckdb, live_exchange, settings, event: SignalEvent, config_hash: str) -> LiveOutcome:
    try:
        broker = LiveBroker(live_exchange.client(), settings, allowed=True)
    except LiveTradingRefused as exc:
        raise dg.Failure(f"{exc}; nothing was sent") from exc
    exchange = broker.exchange
    run_id = context.run.run_id
    now = broker.now()  # the exchange's clock: its order times, the reconcile window and signal ages are in it
    with duckdb.get_connection() as connection:
        create_trading_tables(connection)
        recorded = connection.execute(
            "SELECT client_order_id, symbol, status FROM trading.orders WHERE mode = ?", [MODE]
        ).fetchall()
        known = {row[0] for row in connection.execute("SELECT client_order_id FROM trading.orders").fetchall()}
        decisions_now = stored_decisions(connection, event, settings.symbols).filter(pl.col("action") != Action.HOLD)
        ours = _intents_decided(connection)

    try:
        found = broker.reconcile(
            settings.symbols,
            [RecordedOrder(*row) for row in recorded],
            since=now - RECONCILE_WINDOW,
            ours=ours.__contains__,
        )
    except OrderStateUnknown as exc:
        raise dg.Failure(f"reconciling with {exchange.id} failed, nothing was sent: {exc}") from exc
    reconciled = []
    for order in found.unrecorded:
        decided, sent_for = ours[order.client_order_id]
        row = _order_row(
            order,
            decided,
            sent_for,
            run_id,
            now,
            config_hash,
            f"found at {exchange.id} on reconcile: sent by a run that stopped before recording it",
        )
        _record(duckdb, [row])
        reconciled.append(row)
        known.add(order.client_order_id)
    for order in found.changed:
        _update(duckdb, order, now, None)
    for cid in found.missing:
        _update_missing(duckdb, cid, now, f"unknown to {exchange.id} on reconcile: it never arrived")
    if found.foreign:
        context.log.warning(
            f"reconcile with {exchange.id}: {len(found.foreign)} order(s) carry this prefix "
            "but derive from no decision of this deployment (another instance or machine sent them); "
            f"not adopted: {', '.join(found.foreign[:5])}"
        )
    if found.unrecorded or found.changed or found.missing:
        context.log.warning(
            f"reconcile with {exchange.id}: {len(found.unrecorded)} order(s) recorded that were sent but not recorded, "
            f"{len(found.changed)} updated, {len(found.missing)} unknown to the exchange"
        )

    markets = {
        symbol: MarketRules.from_ccxt_market(exchange.market(symbol), exchange.precisionMode)
        for symbol in settings.symbols
    }
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
                intents.append(
                    dict(
                        decision={"decision_id": decision_id(event, symbol), "symbol": symbol},
                        side="sell",
                        price=closes.get(symbol),
                        stop=None,
                        target=None,
                        size=None,
                        exit=f"{reason} touched by the candle at {at.isoformat()}: market sell",
                    )
                )
    for decision in decisions_now.iter_rows(named=True):
        side = Action(decision["action"]).side
        intents.append(
            dict(
                decision=decision,
                side=side,
                price=decimal_or_none(decision["price"]) or closes.get(decision["symbol"]),
                stop=decimal_or_none(decision["stop_loss"]) if side == "buy" else None,
                target=decimal_or_none(decision["take_profit"]) if side == "buy" else None,
                size=decimal_or_none(decision["size_quote"]),
                exit=None,
            )
        )

    placed = []
    for intent in intents:
        decision, symbol, side = intent["decision"], intent["decision"]["symbol"], intent["side"]
        cid = client_order_id(decision["decision_id"], side)
        if cid in known:  # this signal's order exists (recorded, or found on reconcile): never a second one
            continue
        known.add(cid)
        # A stop or target exit reduces risk and goes whatever the signal's age or the ticker say.
        refusal = (
            None
            if intent["exit"]
            else (stale_at_execution(decision, now) or _price_refusal(broker, symbol, intent["price"], settings))
        )
        verdict = None
        if intent["price"] is not None and refusal is None:
            verdict = assess(
                order_request(decision, side, intent["price"]),
                RiskState.from_history(book.positions, now, free_quote),
                capped(limits, intent["size"]),
                markets[symbol],
            )
        row = {
            **order_row(cid, decision, event, run_id, MODE, side, now, config_hash, verdict),
            "exchange_order_id": None,
            "filled": Decimal(0),
            "fee_currency": None,
        }
        if refusal is not None:
            row["reason"] = refusal
        elif verdict is not None and verdict.approved:
            ticket = OrderTicket(
                cid,
                symbol,
                side,
                verdict.amount,
                verdict.price,
                intent["stop"],
                intent["target"],
                decision["decision_id"],
                event.storage_id,
            )
            try:
                order = broker.submit(ticket)
            except OrderStateUnknown as exc:
                raise dg.Failure(
                    f"{exc}. Recorded before it: {len(placed)} order(s) of this run; nothing more was sent."
                ) from exc
            row = _order_row(
                order,
                decision["decision_id"],
                event,
                run_id,
                now,
                config_hash,
                " / ".join(filter(None, [intent["exit"], order.reason or verdict.reason])),
                risk_checks=row["risk_checks"],
            )
        elif intent["exit"]:
            row["reason"] = f"{intent['exit']}; refused: {row['reason']}"
        _record(duckdb, [row])  # at once: a crash after this line cannot lose the order
        placed.append(row)
        if row["filled"]:
            book = _book(duckdb, dust)  # the next order's risk sees this one's position
            if row["side"] == "buy":  # and the cash it took (a sale's proceeds are not counted on: conservative)
                free_quote -= row["filled"] * row["price"] + (row["fee"] if row["fee_currency"] == QUOTE else 0)

    quote_total = broker.balances().get(QUOTE, Decimal(0))
    portfolio = portfolio_row(book.positions, quote_total, closes, now, run_id, event.storage_id, MODE)
    with duckdb.get_connection() as connection:
        with transaction(connection):
            connection.execute("DELETE FROM trading.positions WHERE mode = ?", [MODE])
            insert_rows(connection, "trading.positions", [{**asdict(p), "mode": MODE} for p in book.positions])
            insert_rows(connection, "trading.portfolio", [portfolio])
        orders_total = connection.execute("SELECT count(*) FROM trading.orders").fetchall()[0][0]
    for note in book.notes:
        context.log.warning(note)
    return LiveOutcome(
        [*reconciled, *placed],
        book,
        portfolio,
        len(found.unrecorded) + len(found.changed) + len(found.missing),
        orders_total,
    )


def _intents_decided(connection) -> dict[str, tuple[str, SignalEvent]]:
    """Every client order id this deployment could have sent, from its recorded decisions (one
    per side: a stop or target exit sells under the decision id of the event that saw it), with
    the decision and signal event behind it. Reconcile adopts an unrecorded order only from here."""
    rows = connection.execute(
        "SELECT decision_id, signal_storage_id, signal_run_id FROM trading.decisions WHERE signal_run_id IS NOT NULL"
    ).fetchall()
    return {
        client_order_id(did, side): (did, SignalEvent(storage_id, run_id))
        for did, storage_id, run_id in rows
        for side in ("buy", "sell")
    }


def _price_refusal(broker: LiveBroker, symbol: str, price: Decimal | None, settings) -> str | None:
    """Why the decision's price cannot be sized with: too far from the exchange's last traded
    price right now (a bad candle, a stale price), or no ticker to compare it with."""
    if price is None:
        return None  # refused later for having no price at all
    last, why_none = broker.last_price(symbol)
    if last is None:
        return f"no fresh ticker to check the decision's price {price} against ({why_none}): not sent"
    deviation = abs(price - last) / last
    if deviation > settings.max_price_deviation:
        return (
            f"the decision's price {price} is {deviation:.2%} away from the ticker's last price {last} "
            f"(limit {settings.max_price_deviation:.2%}, TRACER_MAX_PRICE_DEVIATION): not sent"
        )
    return None


def _order_row(
    order: ExchangeOrder,
    decision: str,
    event: SignalEvent,
    run_id: str,
    now: datetime,
    config_hash: str,
    reason: str | None,
    risk_checks: str = "[]",
) -> dict:
    """An order as the exchange reported it, in trading.orders' shape: `amount` what was asked
    for, `filled` what executed, `price` the average fill price."""
    return {
        "client_order_id": order.client_order_id,
        "decision_id": decision,
        "signal_storage_id": event.storage_id,
        "signal_run_id": event.run_id,
        "run_id": run_id,
        "mode": MODE,
        "symbol": order.symbol,
        "side": order.side,
        "amount": order.amount,
        "price": order.average_price,
        "status": order.status,
        "fee": order.fee,
        "ts": order.ts or now,
        "updated_at": now,
        "reason": reason,
        "risk_checks": risk_checks,
        "config_hash": config_hash,
        "exchange_order_id": order.exchange_order_id,
        "filled": order.filled,
        "fee_currency": order.fee_currency,
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
            [
                order.status,
                order.filled,
                order.average_price,
                order.fee,
                order.fee_currency,
                order.exchange_order_id,
                now,
                reason,
                order.client_order_id,
            ],
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
        [
            Execution(
                cid,
                symbol,
                side,
                filled,
                price,
                fee,
                fee_currency,
                ts.astimezone(UTC),
                decimal_or_none(stop),
                decimal_or_none(target),
            )
            for cid, symbol, side, filled, price, fee, fee_currency, ts, stop, target in rows
        ],
        dust,
    )


def _last_closes(connection, symbols) -> dict[str, Decimal]:
    rows = connection.execute(
        """SELECT symbol, arg_max(close, ts) FROM market.candles WHERE symbol IN (SELECT unnest(?)) GROUP BY symbol""",
        [list(symbols)],
    ).fetchall()
    return {symbol: decimal_or_none(close) for symbol, close in rows}
