"""The live broker: market orders through a real ccxt client, never doubled, never lost.

Three guarantees, each enforced here and not left to the caller:
- No order without every live condition (docs/architecture.md): ENABLE_LIVE=1, IS_LIVE=1, FORCE_DRY
  unset or 0, DRY_RUN=0, and exchange keys. `LiveBroker` checks them itself when it is built
  (`live_allowed`) and refuses with `LiveTradingRefused`, before any request is made.
- One signal event, one order: the client order id derives from the signal event
  (`client_order_id`), and `submit` asks the exchange for that id BEFORE sending; an order it
  finds is returned instead of being sent again. (Binance only rejects a reused id while the
  first order is still open: a filled market order's id is accepted again, so the look-up,
  not the exchange, is what stops a retry from doubling a market order.)
- A lost reply is resolved, not guessed: when sending fails with a network error the order
  may or may not exist, so `submit` looks the id up again (with retries) and never re-sends
  in the same call; if the exchange cannot tell, `OrderStateUnknown` is raised and the next
  attempt (a job retry, a restart) starts with the look-up again. `reconcile` finds orders
  the exchange has that the local record lacks or has stale.

Numbers from ccxt arrive as floats parsed from the exchange's decimal strings; they are
turned into Decimal through their shortest repr, which gives back those strings exactly.
Amounts go out as strings cut to the market's step (`amount_to_precision`, never rounded up);
an amount or notional below the market's minimums is refused, not raised.

Only what the lead verified against ccxt's real `binance` client (a local server speaking its
spot REST API, tests/test_live_broker.py) is claimed: other exchanges need `fetchOrder` by
client id (`params={"clientOrderId": ...}`), which ccxt supports unevenly.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal

import ccxt

from tracer_assets.market.download import RetryPolicy, call_with_retries
from tracer_assets.money import to_decimal
from tracer_assets.trading.orders import (
    CLIENT_ORDER_ID_PATTERN,
    ORDER_STATUSES,
    Fill,
    OrderStatus,
    OrderTicket,
    client_order_id,
)

log = logging.getLogger(__name__)

# ccxt's unified order status -> ours. A canceled or expired order may still be partly filled.
_STATUS = {"open": "pending", "closed": "filled", "canceled": "canceled", "expired": "canceled", "rejected": "rejected"}


class LiveTradingRefused(RuntimeError):
    """A live condition does not hold; the message lists every one that is missing."""


class OrderStateUnknown(RuntimeError):
    """Sending failed in a way that leaves open whether the exchange holds the order. Nothing
    was re-sent; retry later: `submit` looks the client order id up before sending again."""


def live_allowed(flags: object, api_key: str | None, secret: str | None) -> tuple[bool, str]:
    """The live conditions: (True, "") only when ENABLE_LIVE=1, IS_LIVE=1, FORCE_DRY is
    unset or 0, DRY_RUN=0 and both exchange keys are there; else (False, every reason).

    `flags` is `tracer_assets.trading.settings.TradingSettings` or anything with the four boolean attributes
    `enable_live`, `is_live`, `force_dry`, `dry_run`. Anything but a real bool counts as unsafe.
    """
    reasons = []
    wanted = (
        ("enable_live", "ENABLE_LIVE", True),
        ("is_live", "IS_LIVE", True),
        ("force_dry", "FORCE_DRY", False),
        ("dry_run", "DRY_RUN", False),
    )
    for attribute, name, live_value in wanted:
        value = getattr(flags, attribute, None)
        if not isinstance(value, bool):
            reasons.append(f"{name} is unknown ({attribute}={value!r}, expected a bool)")
        elif value is not live_value:
            reasons.append(f"{name} is {int(value)}, live trading needs {int(live_value)}")
    if not isinstance(api_key, str) or not api_key.strip():
        reasons.append("no exchange API key")
    if not isinstance(secret, str) or not secret.strip():
        reasons.append("no exchange API secret")
    return (not reasons, "; ".join(reasons))


@dataclass(frozen=True)
class ExchangeOrder:
    """An order as the exchange reports it (or a local refusal, with `exchange_order_id` None)."""

    client_order_id: str
    exchange_order_id: str | None
    symbol: str
    side: str
    status: str  # OrderStatus
    amount: Decimal  # as sent (cut to the market's step)
    filled: Decimal
    average_price: Decimal | None
    cost: Decimal | None  # quote currency
    fee: Decimal | None
    fee_currency: str | None
    ts: datetime | None
    reason: str | None = None  # why it was refused or rejected

    def to_fill(self, reason: str) -> Fill:
        """The execution as a `Fill` (reason "entry"/"signal"/"stop"/"target"), like the paper broker's."""
        if self.filled <= 0 or self.average_price is None or self.ts is None:
            raise ValueError(f"{self.client_order_id}: status {self.status}, nothing filled to record")
        return Fill(
            self.client_order_id,
            self.symbol,
            self.side,
            self.filled,
            self.average_price,
            self.fee if self.fee is not None else Decimal(0),
            self.fee_currency or "",
            self.ts,
            reason,
        )


@dataclass(frozen=True)
class RecordedOrder:
    """What the local record (DuckDB) holds for an order, as `reconcile` needs it."""

    client_order_id: str
    symbol: str
    status: str  # OrderStatus


@dataclass
class Reconciliation:
    """What the exchange knows that the local record does not, found on start."""

    unrecorded: list[ExchangeOrder] = field(default_factory=list)  # sent (our prefix) but never recorded
    changed: list[ExchangeOrder] = field(default_factory=list)  # recorded pending, now filled/canceled/rejected
    missing: list[str] = field(default_factory=list)  # recorded pending, unknown to the exchange
    foreign: list[str] = field(default_factory=list)  # our prefix, but not derived from our decisions
    balances: dict[str, Decimal] = field(default_factory=dict)  # total per currency, zero left out
    free: dict[str, Decimal] = field(default_factory=dict)  # free (not locked by open orders) per currency


class LiveBroker:
    """Market orders on a real exchange through a ccxt client that carries the keys.

    `allowed` is the caller's verdict (settings.trading.live_flags_on and keys present); the broker
    also checks `flags` and the client's keys itself and raises `LiveTradingRefused` unless
    both agree, so no code path reaches `create_order` without every live condition.
    """

    def __init__(
        self,
        exchange,
        flags: object,
        *,
        allowed: bool,
        prefix: str = "tracer",
        policy: RetryPolicy = RetryPolicy(retries=4, backoff_seconds=0.5),
    ):
        if allowed is not True:
            raise LiveTradingRefused(f"live trading refused: the caller did not allow it (allowed={allowed!r})")
        ok, reason = live_allowed(flags, getattr(exchange, "apiKey", None), getattr(exchange, "secret", None))
        if not ok:
            raise LiveTradingRefused(f"live trading refused: {reason}")
        for capability in ("createOrder", "fetchOrder", "fetchOpenOrders", "fetchBalance"):
            if not exchange.has.get(capability):
                raise LiveTradingRefused(f"live trading refused: ccxt {exchange.id} has no {capability}")
        client_order_id("check", "buy", prefix)  # checks the prefix
        self.exchange = exchange
        self.prefix = prefix
        self.policy = policy

    # --- orders ---------------------------------------------------------------------------

    def submit(self, ticket: OrderTicket) -> ExchangeOrder:
        """Place the ticket's market order once: the order already at the exchange under its
        client id is returned instead of sending again; a refusal (below the market's minimums,
        rejected by the exchange) comes back with status "rejected" and the reason."""
        self._check_ticket(ticket)
        self._load_markets()
        found = self._lookup(ticket.symbol, ticket.client_order_id)
        if found is not None:
            log.info(
                "order %s already at %s (%s): not sent again", ticket.client_order_id, self.exchange.id, found.status
            )
            return found
        amount, refusal = self._amount_to_send(ticket)
        if refusal is not None:
            return self._refused(ticket, ticket.amount, refusal)
        try:
            raw = self.exchange.create_order(
                ticket.symbol, "market", ticket.side, str(amount), None, {"clientOrderId": ticket.client_order_id}
            )
        except ccxt.NetworkError as exc:
            # The request may have reached the exchange and the reply got lost: ask, never re-send.
            log.warning("order %s: %s after sending; looking it up", ticket.client_order_id, type(exc).__name__)
            try:
                found = self._lookup(ticket.symbol, ticket.client_order_id)
            except OrderStateUnknown as lookup_failed:
                raise OrderStateUnknown(
                    f"order {ticket.client_order_id}: sent, but the reply was lost ({type(exc).__name__}) and the "
                    f"look-up failed too ({lookup_failed.__cause__!r}); nothing was re-sent, retry later"
                ) from exc
            if found is not None:
                return found
            raise OrderStateUnknown(
                f"order {ticket.client_order_id}: sending failed ({type(exc).__name__}: {exc}) and the exchange does "
                "not show it (yet); nothing was re-sent, retry later and the look-up runs first"
            ) from exc
        except ccxt.InvalidOrder as exc:
            if "Duplicate order" in str(exc):  # a concurrent submit of the same id got there first
                found = self._lookup(ticket.symbol, ticket.client_order_id)
                if found is not None:
                    return found
            return self._refused(ticket, amount, f"rejected by {self.exchange.id}: {exc}")
        except ccxt.ExchangeError as exc:
            # Any refusal (BadRequest for Binance's -1013 filter failures, InsufficientFunds,
            # AuthenticationError, ...): the exchange answered and took nothing. Network errors
            # are not ExchangeErrors in ccxt; they are handled above.
            return self._refused(ticket, amount, f"rejected by {self.exchange.id}: {type(exc).__name__}: {exc}")
        return self._complete(self._order(raw, ticket.symbol))

    def cancel(self, symbol: str, client_order_id_: str) -> ExchangeOrder | None:
        """Cancel an open order by client id; returns its state, None when the exchange has no such order."""
        self._load_markets()
        found = self._lookup(symbol, client_order_id_)
        if found is None or found.status != "pending":
            return found
        try:
            raw = self.exchange.cancel_order(found.exchange_order_id, symbol)
        except ccxt.OrderNotFound:
            pass  # filled or canceled meanwhile: report what it is now
        else:
            if raw.get("status") is not None:
                return self._order(raw, symbol)
        return self._lookup(symbol, client_order_id_)

    def fetch(self, symbol: str, client_order_id_: str) -> ExchangeOrder | None:
        """The exchange's view of one order by client id (None: it does not exist)."""
        self._load_markets()
        return self._lookup(symbol, client_order_id_)

    def now(self) -> datetime:
        """The exchange's clock (its time endpoint): what its order times and windows are in.
        The local clock where ccxt has no fetchTime for the exchange."""
        if not self.exchange.has.get("fetchTime"):
            return datetime.now(UTC)
        return datetime.fromtimestamp(self._call(self.exchange.fetch_time) / 1000, UTC)

    def last_price(self, symbol: str) -> tuple[Decimal | None, str | None]:
        """The ticker's last traded price now, or (None, why there is none)."""
        try:
            ticker = self._call(self.exchange.fetch_ticker, symbol)
        except (ccxt.NetworkError, ccxt.ExchangeError) as exc:
            return None, f"{self.exchange.id} fetch_ticker failed: {type(exc).__name__}: {exc}"
        last = to_decimal(ticker.get("last"), "ticker last")
        return (last, None) if last is not None and last > 0 else (None, f"the {symbol} ticker has no last price")

    def balances(self) -> dict[str, Decimal]:
        """Total balance per currency (free plus locked), zero balances left out."""
        return _amounts(self._call(self.exchange.fetch_balance), "total")

    # --- start-up -------------------------------------------------------------------------

    def reconcile(
        self,
        symbols: Iterable[str],
        recorded: Iterable[RecordedOrder],
        since: datetime | None = None,
        ours: Callable[[str], bool] = lambda cid: False,
    ) -> Reconciliation:
        """Compare the exchange with the local record, for a restart after a crash.

        Reads every symbol's open orders and its orders since `since` (the exchange's default
        window when None), and the balances. Returns the orders the record lacks whose client id
        `ours` recognises as one this deployment derived from its own decisions (sent, then the
        process died before recording them); an order with our prefix that `ours` does not
        recognise was sent by someone else (another instance, another machine) and is only
        listed in `foreign`, never adopted. Also returns those recorded as
        pending that the exchange has filled, canceled or rejected, and the pending ones the
        exchange does not know (never arrived: safe to send again from the same signal).
        """
        self._load_markets()
        recorded = {r.client_order_id: r for r in recorded}
        for r in recorded.values():
            if r.status not in ORDER_STATUSES:
                raise ValueError(
                    f"recorded order {r.client_order_id}: status={r.status!r}, expected one of {ORDER_STATUSES}"
                )
        since_ms = None if since is None else int(since.timestamp() * 1000)
        result = Reconciliation()
        seen: set[str] = set()
        for symbol in dict.fromkeys(symbols):
            raw_orders = self._call(self.exchange.fetch_open_orders, symbol)
            if self.exchange.has.get("fetchOrders"):
                raw_orders += self._call(self.exchange.fetch_orders, symbol, since_ms)
            elif self.exchange.has.get("fetchClosedOrders"):
                raw_orders += self._call(self.exchange.fetch_closed_orders, symbol, since_ms)
            for raw in raw_orders:
                order = self._order(raw, symbol)
                if not order.client_order_id.startswith(self.prefix + "-") or order.client_order_id in seen:
                    continue
                seen.add(order.client_order_id)
                local = recorded.get(order.client_order_id)
                if local is None:
                    if ours(order.client_order_id):
                        result.unrecorded.append(self._complete(order))
                    else:
                        result.foreign.append(order.client_order_id)
                elif local.status == "pending" and order.status != "pending":
                    result.changed.append(self._complete(order))
        for cid, local in recorded.items():
            if local.status == "pending" and cid not in seen:
                order = self._lookup(local.symbol, cid)  # older than the window, or never arrived
                if order is None:
                    result.missing.append(cid)
                elif order.status != "pending":
                    result.changed.append(self._complete(order))
        balance = self._call(self.exchange.fetch_balance)
        result.balances, result.free = _amounts(balance, "total"), _amounts(balance, "free")
        return result

    # --- internals ------------------------------------------------------------------------

    def _check_ticket(self, ticket: OrderTicket) -> None:
        if not isinstance(ticket, OrderTicket):
            raise TypeError(f"ticket: expected an OrderTicket, got {type(ticket).__name__}")
        expected = client_order_id(ticket.decision_id, ticket.side, self.prefix)
        if ticket.client_order_id != expected:
            # A free-form id would defeat the look-up that stops a retry from doubling the order.
            raise ValueError(
                f"ticket client_order_id={ticket.client_order_id!r}: live orders must use the id derived "
                f"from the signal event, {expected!r}"
            )

    def _load_markets(self) -> None:
        self._call(self.exchange.load_markets)

    def _call(self, fn: Callable, *args, **kwargs):
        """A read-only call, retried on network errors (never used for create_order)."""
        return call_with_retries(fn, *args, policy=self.policy, what=f"{self.exchange.id} {fn.__name__}", **kwargs)

    def _lookup(self, symbol: str, cid: str) -> ExchangeOrder | None:
        """The order with client id `cid`, None when the exchange says it does not exist;
        OrderStateUnknown when the exchange cannot be asked."""
        try:
            raw = self._call(self.exchange.fetch_order, None, symbol, {"clientOrderId": cid})
        except ccxt.OrderNotFound:
            return None
        except (ccxt.NetworkError, ccxt.OperationFailed) as exc:
            raise OrderStateUnknown(
                f"order {cid}: cannot tell whether {self.exchange.id} holds it "
                f"({type(exc).__name__}: {exc}); nothing was sent"
            ) from exc
        return self._complete(self._order(raw, symbol))

    def _amount_to_send(self, ticket: OrderTicket) -> tuple[Decimal | None, str | None]:
        """The amount cut to the market's step, or why the order cannot go out."""
        market = self.exchange.market(ticket.symbol)
        if not market.get("spot"):
            return None, f"{ticket.symbol} is not a spot market on {self.exchange.id}"
        if ticket.price is None:
            return None, "live orders need the expected price to check the market's minimum notional"
        try:
            amount = Decimal(self.exchange.amount_to_precision(ticket.symbol, str(ticket.amount)))
        except ccxt.InvalidOrder as exc:
            return None, f"amount {ticket.amount} {ticket.base} is below the market's step: {exc}"
        limits = market.get("limits") or {}
        min_amount = to_decimal((limits.get("amount") or {}).get("min"), "limits.amount.min")
        max_amount = to_decimal((limits.get("amount") or {}).get("max"), "limits.amount.max")
        min_cost = to_decimal((limits.get("cost") or {}).get("min"), "limits.cost.min")
        if min_amount is not None and amount < min_amount:
            return None, f"amount {amount} {ticket.base} is below the market minimum {min_amount}"
        if max_amount is not None and amount > max_amount:
            return None, f"amount {amount} {ticket.base} is above the market maximum {max_amount}"
        if min_cost is not None and amount * ticket.price < min_cost:
            return None, (
                f"notional {amount * ticket.price} {ticket.quote} ({amount} at {ticket.price}) is below "
                f"the market minimum {min_cost}"
            )
        return amount, None

    def _refused(self, ticket: OrderTicket, amount: Decimal, reason: str) -> ExchangeOrder:
        log.warning("order %s refused: %s", ticket.client_order_id, reason)
        return ExchangeOrder(
            ticket.client_order_id,
            None,
            ticket.symbol,
            ticket.side,
            "rejected",
            amount,
            Decimal(0),
            None,
            None,
            None,
            None,
            datetime.now(UTC),
            reason,
        )

    def _order(self, raw: Mapping, symbol: str) -> ExchangeOrder:
        cid = raw.get("clientOrderId")
        if not isinstance(cid, str) or not CLIENT_ORDER_ID_PATTERN.match(cid):
            cid = str(cid)  # someone else's order: kept, reconcile skips it by prefix
        status = _STATUS.get(raw.get("status"))
        if status is None:
            raise ValueError(f"order {cid} on {self.exchange.id}: unknown status {raw.get('status')!r}")
        fee, fee_currency = _fee(raw)
        timestamp = raw.get("lastTradeTimestamp") or raw.get("timestamp")
        return ExchangeOrder(
            client_order_id=cid,
            exchange_order_id=None if raw.get("id") is None else str(raw["id"]),
            symbol=raw.get("symbol") or symbol,
            side=raw.get("side"),
            status=status,
            amount=to_decimal(raw.get("amount"), "amount") or Decimal(0),
            filled=to_decimal(raw.get("filled"), "filled") or Decimal(0),
            average_price=to_decimal(raw.get("average"), "average"),
            cost=to_decimal(raw.get("cost"), "cost"),
            fee=fee,
            fee_currency=fee_currency,
            ts=None if timestamp is None else datetime.fromtimestamp(timestamp / 1000, UTC),
        )

    def _complete(self, order: ExchangeOrder) -> ExchangeOrder:
        """Add the fee from the order's trades when the order's own answer lacks it (a query, not a fill)."""
        if order.fee is not None or order.filled <= 0 or not self.exchange.has.get("fetchOrderTrades"):
            return order
        try:
            trades = self._call(self.exchange.fetch_order_trades, order.exchange_order_id, order.symbol)
        except (ccxt.NetworkError, ccxt.OperationFailed) as exc:
            log.warning("order %s: fee unknown, its trades could not be read: %s", order.client_order_id, exc)
            return order  # the order's state matters more than its fee: never fail on this
        fees: dict[str, Decimal] = {}
        for trade in trades:
            for entry in trade.get("fees") or ([trade["fee"]] if trade.get("fee") else []):
                if entry and entry.get("cost") is not None:
                    fees[entry["currency"]] = fees.get(entry["currency"], Decimal(0)) + to_decimal(entry["cost"], "fee")
        if len(fees) != 1:
            return order  # none, or in several currencies: left unknown rather than added up wrongly
        [(currency, cost)] = fees.items()
        return replace(order, fee=cost, fee_currency=currency)


def _fee(raw: Mapping) -> tuple[Decimal | None, str | None]:
    entries = [
        f for f in (raw.get("fees") or ([raw["fee"]] if raw.get("fee") else [])) if f and f.get("cost") is not None
    ]
    currencies = {f.get("currency") for f in entries}
    if len(currencies) != 1:
        return None, None
    return sum((to_decimal(f["cost"], "fee") for f in entries), Decimal(0)), currencies.pop()


def _amounts(balance: Mapping, kind: str) -> dict[str, Decimal]:
    """ccxt's fetch_balance()[kind] ("total", "free") per currency, zero balances left out."""
    return {c: to_decimal(v, f"{kind} balance {c}") for c, v in (balance.get(kind) or {}).items() if v}


__all__ = [
    "ExchangeOrder",
    "LiveBroker",
    "LiveTradingRefused",
    "OrderStateUnknown",
    "OrderStatus",
    "OrderTicket",
    "Reconciliation",
    "RecordedOrder",
    "client_order_id",
    "live_allowed",
]
