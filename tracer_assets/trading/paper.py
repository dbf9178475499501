"""The paper broker: a pure, exact (Decimal) state machine of spot orders, fills and positions.

The types both brokers share are in `trading/orders.py` (client order ids, tickets, fills)
and `trading/positions.py` (positions and their arithmetic).

Fill rules (the same as the backtester's, written out in docs/trading.md):
- A pending market order fills at the OPEN of the first candle of its symbol whose open time
  is at or after the order's submission: the next price that exists after the decision.
  A candle that opened before the order cannot fill it (no lookahead).
- Slippage is adverse: buys fill at open × (1 + bps/10,000), sells at open × (1 − bps/10,000).
- The fee is `fee_rate` × notional, taken in the QUOTE currency on both sides, so a position
  holds exactly the amount bought (Binance takes a buy's fee in the base asset unless paid in
  BNB; quote on both sides keeps stop and target exits selling exactly what was bought).
- After the candle's pending orders, the open long position of the symbol is checked against
  that candle by the backtester's rules 2-4 (`positions.exit_on_candle`): an open beyond the
  target or the stop fills at the open; else the stop when low <= stop, at its level, before a
  target inside the same candle (the path inside a candle is unknown); else the target when
  high >= target. A trailing stop's peak is the fill price and the highs of the candles before
  the one checked. Levels given as fractions are set from the fill price. Slippage applies to
  every fill, exits included (the backtester's rule 5).
- Spot, long only: a buy opens or adds to the symbol's position; a sell reduces it (first
  the position, then any other holding of the base currency); selling more than is held,
  or buying with more than the free quote balance, is refused.

Every amount is a Decimal with at most 18 decimal places and 20 integer digits, so the
snapshot fits DECIMAL(38, 18). Where arithmetic needs more places (a price × amount, a
division), the result is rounded to 18 places against the account: costs and fees up,
proceeds down.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import MISSING, asdict, dataclass, fields, replace
from datetime import datetime
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal, InvalidOperation, localcontext

from tracer_assets.money import BPS, EXACT, exact, to_decimal, to_scale
from tracer_assets.trading.orders import Fill, OrderTicket, check_symbol
from tracer_assets.trading.positions import (
    Position,
    bought_into,
    exit_on_candle,
    levels_from_fill,
    sold_from,
    watched,
)


class PaperStateError(ValueError):
    """A snapshot to restore from is incomplete or inconsistent; the message names the row."""


# --- paper-only state ----------------------------------------------------------------------


@dataclass(frozen=True)
class PaperOrder:
    """An order as the paper broker holds it."""

    client_order_id: str
    symbol: str
    side: str
    amount: Decimal
    expected_price: Decimal | None  # the ticket's price, else the last close seen at submission
    stop_loss: Decimal | None
    take_profit: Decimal | None
    decision_id: str
    signal_storage_id: int
    status: str  # OrderStatus
    submitted_at: datetime
    updated_at: datetime
    reason: str | None = None  # why it was rejected or canceled
    fill_price: Decimal | None = None
    fee: Decimal | None = None
    stop_fraction: Decimal | None = None  # exits as fractions of the fill price (OrderTicket)
    target_fraction: Decimal | None = None
    trailing_stop: Decimal | None = None


class PaperBroker:
    """Paper trading: orders fill on the next candle's open with slippage and fees, stops and
    targets are watched on every candle. Pure state; `snapshot()`/`restore()` persist it."""

    def __init__(
        self,
        quote_currency: str = "USDT",
        quote_balance: Decimal = Decimal(0),
        base_balances: Mapping[str, Decimal] | None = None,
        fee_rate: Decimal = Decimal("0.001"),
        slippage_bps: Decimal = Decimal(0),
    ):
        if not isinstance(quote_currency, str) or not re.fullmatch(r"[A-Z0-9]{2,20}", quote_currency):
            raise ValueError(f"quote_currency={quote_currency!r}: expected a currency code like USDT")
        self.quote_currency = quote_currency
        self.fee_rate = exact(fee_rate, "fee_rate")
        if not Decimal(0) <= self.fee_rate < 1:
            raise ValueError(f"fee_rate={fee_rate}: must lie in [0, 1), e.g. 0.001 for 0.1%")
        self.slippage_bps = exact(slippage_bps, "slippage_bps")
        if not Decimal(0) <= self.slippage_bps < BPS:
            raise ValueError(f"slippage_bps={slippage_bps}: must lie in [0, 10000)")
        self._balances: dict[str, Decimal] = {quote_currency: exact(quote_balance, "quote_balance", non_negative=True)}
        for currency, amount in (base_balances or {}).items():
            if not isinstance(currency, str) or not re.fullmatch(r"[A-Z0-9]{1,20}", currency):
                raise ValueError(f"base_balances: {currency!r} is not a currency code like BTC")
            if currency == quote_currency:
                raise ValueError(f"base_balances: {currency} is the quote currency; pass it as quote_balance")
            self._balances[currency] = exact(amount, f"base_balances[{currency}]", non_negative=True)
        self._orders: dict[str, PaperOrder] = {}
        self._fills: list[Fill] = []
        self._positions: dict[str, Position] = {}  # position_id -> position, oldest first
        self._open_position: dict[str, str] = {}  # symbol -> position_id of its open position
        self._last_candle: dict[str, datetime] = {}
        self._last_close: dict[str, Decimal] = {}

    # --- what callers read ----------------------------------------------------------------

    @property
    def balances(self) -> dict[str, Decimal]:
        """Every currency's balance, pending orders' reservations included (see `available`)."""
        return dict(self._balances)

    @property
    def orders(self) -> tuple[PaperOrder, ...]:
        return tuple(self._orders.values())

    @property
    def fills(self) -> tuple[Fill, ...]:
        return tuple(self._fills)

    @property
    def positions(self) -> dict[str, Position]:
        """The open position per symbol."""
        return {symbol: self._positions[pid] for symbol, pid in self._open_position.items()}

    @property
    def position_history(self) -> tuple[Position, ...]:
        """Every position ever opened, open and closed, oldest first."""
        return tuple(self._positions.values())

    def order(self, client_order_id: str) -> PaperOrder | None:
        return self._orders.get(client_order_id)

    def last_candle(self, symbol: str) -> tuple[datetime, Decimal] | None:
        """Open time and close of the newest candle fed for `symbol`; None before the first."""
        if symbol not in self._last_candle:
            return None
        return self._last_candle[symbol], self._last_close[symbol]

    def realized_pnl(self, symbol: str | None = None) -> Decimal:
        return sum((p.realized_pnl for p in self._positions.values() if symbol in (None, p.symbol)), Decimal(0))

    def available(self, currency: str) -> Decimal:
        """The balance minus what pending orders have reserved."""
        reserved = Decimal(0)
        for order in self._orders.values():
            if order.status != "pending":
                continue
            base, quote = order.symbol.split("/")
            if order.side == "buy" and quote == currency:
                reserved += self._buy_reservation(order.amount, order.expected_price)
            elif order.side == "sell" and base == currency:
                reserved += order.amount
        return self._balances.get(currency, Decimal(0)) - reserved

    def equity(self, prices: Mapping[str, Decimal]) -> Decimal:
        """Quote balance plus every base balance at `prices` (symbol -> price, e.g. the last close;
        Decimal, int, str or float like candle prices)."""
        total = self._balances[self.quote_currency]
        with localcontext(EXACT):
            for currency, amount in self._balances.items():
                if currency == self.quote_currency or amount == 0:
                    continue
                symbol = f"{currency}/{self.quote_currency}"
                if symbol not in prices:
                    raise ValueError(f"equity: no price for {symbol} to value {amount} {currency}")
                total += amount * _number_in(prices[symbol], f"prices[{symbol}]")
            return to_scale(total, ROUND_HALF_EVEN)

    # --- orders ---------------------------------------------------------------------------

    def submit(self, ticket: OrderTicket, now: datetime) -> PaperOrder:
        """Record a pending market order; it fills on the first candle opening at or after `now`.

        The same client order id again returns the order already held (whatever its status):
        a retried signal never makes a second order. Refusals are recorded as rejected orders
        with the reason: a buy beyond the free quote balance (at the expected price with
        slippage and fee), a sell beyond the free base balance.
        """
        if not isinstance(ticket, OrderTicket):
            raise TypeError(f"ticket: expected an OrderTicket, got {type(ticket).__name__}")
        _aware(now, "now")
        existing = self._orders.get(ticket.client_order_id)
        if existing is not None:
            return existing
        if ticket.quote != self.quote_currency:
            raise ValueError(f"{ticket.client_order_id}: symbol {ticket.symbol} is not quoted in {self.quote_currency}")
        order = PaperOrder(
            client_order_id=ticket.client_order_id,
            symbol=ticket.symbol,
            side=ticket.side,
            amount=ticket.amount,
            expected_price=ticket.price if ticket.price is not None else self._last_close.get(ticket.symbol),
            stop_loss=ticket.stop_loss,
            take_profit=ticket.take_profit,
            decision_id=ticket.decision_id,
            signal_storage_id=ticket.signal_storage_id,
            status="pending",
            submitted_at=now,
            updated_at=now,
            stop_fraction=ticket.stop_fraction,
            target_fraction=ticket.target_fraction,
            trailing_stop=ticket.trailing_stop,
        )
        refusal = self._refusal(ticket)
        if refusal is not None:
            order = replace(order, status="rejected", reason=refusal)
        self._orders[order.client_order_id] = order
        return order

    def cancel(self, client_order_id: str, now: datetime, reason: str = "canceled") -> PaperOrder:
        """Cancel a pending order; a filled, rejected or canceled one is returned unchanged."""
        _aware(now, "now")
        order = self._orders.get(client_order_id)
        if order is None:
            raise KeyError(f"no paper order with client_order_id={client_order_id!r}")
        if order.status == "pending":
            order = replace(order, status="canceled", updated_at=now, reason=reason)
            self._orders[client_order_id] = order
        return order

    def _refusal(self, ticket: OrderTicket) -> str | None:
        if ticket.side == "buy":
            price = ticket.price if ticket.price is not None else self._last_close.get(ticket.symbol)
            if price is None:  # nothing to size the reservation with: refuse rather than guess
                return (
                    f"no price known for {ticket.symbol} to check the {self.quote_currency} balance: "
                    "pass the expected price"
                )
            need = self._buy_reservation(ticket.amount, price)
            free = self.available(self.quote_currency)
            if need > free:
                return (
                    f"insufficient {self.quote_currency}: buying {ticket.amount} {ticket.base} at about {price} "
                    f"needs {need} with slippage and fee, {free} is free"
                )
            return None
        free = self.available(ticket.base)
        if ticket.amount > free:
            return (
                f"insufficient {ticket.base}: selling {ticket.amount} "
                f"but {free} is held and not reserved by pending sells"
            )
        return None

    def _buy_reservation(self, amount: Decimal, price: Decimal) -> Decimal:
        """What a buy may cost: amount × price with slippage, plus the fee, rounded up."""
        with localcontext(EXACT):
            return to_scale(amount * self._slipped(price, "buy") * (1 + self.fee_rate), ROUND_CEILING)

    def _slipped(self, price: Decimal, side: str) -> Decimal:
        with localcontext(EXACT):
            if side == "buy":
                return to_scale(price * (1 + self.slippage_bps / BPS), ROUND_CEILING)
            return to_scale(price * (1 - self.slippage_bps / BPS), ROUND_FLOOR)

    # --- candles --------------------------------------------------------------------------

    def on_candle(self, symbol: str, ts: datetime, open, high, low, close) -> list[Fill]:
        """Process one NEW closed candle of `symbol` (`ts` = its open time): fill the pending
        orders submitted at or before `ts` at its open, then check the open position's stop and
        target against its low and high. Returns the fills it made.

        Candles must come in time order per symbol; one at or before the last processed candle
        is ignored (returns []), so replaying candles after a restart changes nothing.
        Prices may be Decimal, int, str or float (a float goes through its shortest repr).
        """
        check_symbol(symbol, "symbol")
        _aware(ts, "ts")
        o, h, low_, c = (
            _number_in(value, f"{symbol} candle at {ts.isoformat()} {name}")
            for value, name in ((open, "open"), (high, "high"), (low, "low"), (close, "close"))
        )
        if h < max(o, c) or low_ > min(o, c):
            raise ValueError(
                f"{symbol} candle at {ts.isoformat()}: open/close outside [low, high] "
                f"(open={o}, high={h}, low={low_}, close={c})"
            )
        last = self._last_candle.get(symbol)
        if last is not None and ts <= last:
            return []
        made: list[Fill] = []
        for order in list(self._orders.values()):
            if order.symbol == symbol and order.status == "pending" and order.submitted_at <= ts:
                made.extend(self._fill_order(order, o, ts))
        made.extend(self._watch_exits(symbol, ts, o, h, low_))
        self._last_candle[symbol] = ts
        self._last_close[symbol] = c
        return made

    def _fill_order(self, order: PaperOrder, open_price: Decimal, ts: datetime) -> list[Fill]:
        base, quote = order.symbol.split("/")
        price = self._slipped(open_price, order.side)
        with localcontext(EXACT):
            if order.side == "buy":
                notional = to_scale(order.amount * price, ROUND_CEILING)
                fee = to_scale(notional * self.fee_rate, ROUND_CEILING)
                if notional + fee > self._balances[quote]:
                    self._reject(
                        order,
                        ts,
                        f"insufficient {quote} at fill: {notional + fee} needed at {price}, "
                        f"{self._balances[quote]} held",
                    )
                    return []
                self._balances[quote] -= notional + fee
                self._balances[base] = self._balances.get(base, Decimal(0)) + order.amount
                position_id = self._add_to_position(order, price, notional + fee, fee, ts)
                reason = "entry"
            else:
                if order.amount > self._balances.get(base, Decimal(0)):
                    self._reject(
                        order,
                        ts,
                        f"insufficient {base} at fill: selling {order.amount}, "
                        f"{self._balances.get(base, Decimal(0))} held",
                    )
                    return []
                notional = to_scale(order.amount * price, ROUND_FLOOR)
                fee = to_scale(notional * self.fee_rate, ROUND_CEILING)
                position_id = self._sell(order.symbol, order.amount, notional - fee, fee, ts)
                reason = "signal"
        self._orders[order.client_order_id] = replace(order, status="filled", updated_at=ts, fill_price=price, fee=fee)
        fill = Fill(
            order.client_order_id, order.symbol, order.side, order.amount, price, fee, quote, ts, reason, position_id
        )
        self._fills.append(fill)
        return [fill]

    def _reject(self, order: PaperOrder, ts: datetime, reason: str) -> None:
        self._orders[order.client_order_id] = replace(order, status="rejected", updated_at=ts, reason=reason)

    def _add_to_position(self, order: PaperOrder, price: Decimal, cost: Decimal, fee: Decimal, ts: datetime) -> str:
        position_id = self._open_position.get(order.symbol)
        stop, target = levels_from_fill(price, order.stop_fraction, order.target_fraction)
        position = bought_into(
            None if position_id is None else self._positions[position_id],
            order.client_order_id,
            order.symbol,
            order.amount,
            price,
            cost,
            fee,
            order.stop_loss if stop is None else stop,
            order.take_profit if target is None else target,
            ts,
            order.trailing_stop,
        )
        self._open_position[order.symbol] = position.position_id
        self._positions[position.position_id] = position
        return position.position_id

    def _sell(self, symbol: str, amount: Decimal, proceeds: Decimal, fee: Decimal, ts: datetime) -> str | None:
        """Move balances for a sale and charge it to the open position first."""
        base, quote = symbol.split("/")
        self._balances[base] -= amount
        self._balances[quote] += proceeds
        position_id = self._open_position.get(symbol)
        if position_id is None:
            return None  # sold a holding that predates any position (e.g. SIM_BASE_BALANCE)
        position = sold_from(self._positions[position_id], amount, proceeds, fee)
        if position.amount == 0:
            position = replace(position, closed_at=ts)
            del self._open_position[symbol]
        self._positions[position_id] = position
        return position_id

    def _watch_exits(self, symbol: str, ts: datetime, o: Decimal, h: Decimal, low: Decimal) -> list[Fill]:
        position_id = self._open_position.get(symbol)
        if position_id is None:
            return []
        position = self._positions[position_id]
        touched = exit_on_candle(position, o, h, low)
        if touched is None:
            self._positions[position_id] = watched(position, h)
            return []
        reason, price = touched[0], self._slipped(touched[1], "sell")
        with localcontext(EXACT):
            notional = to_scale(position.amount * price, ROUND_FLOOR)
            fee = to_scale(notional * self.fee_rate, ROUND_CEILING)
        amount = position.amount
        self._sell(symbol, amount, notional - fee, fee, ts)
        fill = Fill(position_id, symbol, "sell", amount, price, fee, self.quote_currency, ts, reason, position_id)
        self._fills.append(fill)
        return [fill]

    # --- persistence ----------------------------------------------------------------------

    def snapshot(self) -> dict[str, list[dict]]:
        """The whole state as plain rows (str, int, Decimal, datetime, None), one list per table:
        account, balances, orders, fills, positions, candles. `seq` keeps each table's order."""
        return {
            "account": [
                {"quote_currency": self.quote_currency, "fee_rate": self.fee_rate, "slippage_bps": self.slippage_bps}
            ],
            # Sorted, so two brokers in the same state give equal snapshots however they got there.
            "balances": [{"currency": c, "amount": self._balances[c]} for c in sorted(self._balances)],
            "orders": [{"seq": i, **asdict(o)} for i, o in enumerate(self._orders.values())],
            "fills": [{"seq": i, **asdict(f)} for i, f in enumerate(self._fills)],
            "positions": [{"seq": i, **asdict(p)} for i, p in enumerate(self._positions.values())],
            "candles": [
                {"symbol": s, "ts": self._last_candle[s], "close": self._last_close[s]}
                for s in sorted(self._last_candle)
            ],
        }

    @classmethod
    def restore(cls, rows: Mapping[str, Iterable[Mapping]]) -> PaperBroker:
        """Rebuild a broker from `snapshot()` rows, e.g. read back from DuckDB (DECIMAL(38, 18)
        values with trailing zeros and timestamps in any zone are fine)."""
        for table in ("account", "balances", "orders", "fills", "positions", "candles"):
            if table not in rows:
                raise PaperStateError(f"snapshot has no {table!r} rows")
        account = list(rows["account"])
        if len(account) != 1:
            raise PaperStateError(f"snapshot 'account' must have exactly one row, has {len(account)}")
        acc = account[0]
        balances = {r["currency"]: _stored(r["amount"], f"balances[{r['currency']}]") for r in rows["balances"]}
        quote = acc["quote_currency"]
        if quote not in balances:
            raise PaperStateError(f"snapshot 'balances' has no row for the quote currency {quote}")
        broker = cls(
            quote,
            balances.pop(quote),
            balances,
            _stored(acc["fee_rate"], "fee_rate"),
            _stored(acc["slippage_bps"], "slippage_bps"),
        )
        for row in sorted(rows["orders"], key=lambda r: r["seq"]):
            order = _restore_row(PaperOrder, row, "orders")
            broker._orders[order.client_order_id] = order
        broker._fills = [_restore_row(Fill, r, "fills") for r in sorted(rows["fills"], key=lambda r: r["seq"])]
        for row in sorted(rows["positions"], key=lambda r: r["seq"]):
            position = _restore_row(Position, row, "positions")
            broker._positions[position.position_id] = position
            if position.is_open:
                if position.symbol in broker._open_position:
                    raise PaperStateError(f"snapshot 'positions': two open positions for {position.symbol}")
                broker._open_position[position.symbol] = position.position_id
        for row in rows["candles"]:
            broker._last_candle[row["symbol"]] = _aware(row["ts"], f"candles[{row['symbol']}].ts")
            broker._last_close[row["symbol"]] = _stored(row["close"], f"candles[{row['symbol']}].close")
        return broker


# --- helpers --------------------------------------------------------------------------------


def _aware(value: object, name: str) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name}={value!r}: expected a timezone-aware datetime")
    return value


def _number_in(value: object, where: str) -> Decimal:
    """A positive price from outside (a float goes through its shortest repr, e.g. 42283.58)."""
    return exact(to_decimal(value, where), where, positive=True)


def _stored(value: object, name: str) -> Decimal:
    """A Decimal read back from storage: trailing zeros dropped, so values print as they were."""
    if isinstance(value, str):
        try:
            value = Decimal(value)
        except InvalidOperation:
            raise PaperStateError(f"{name}={value!r}: not a decimal") from None
    if isinstance(value, int) and not isinstance(value, bool):
        value = Decimal(value)
    if not isinstance(value, Decimal):
        raise PaperStateError(f"{name}={value!r}: expected a Decimal (or its string)")
    value = exact(value, name)
    return value.quantize(Decimal(1)) if value == value.to_integral_value() else value.normalize(EXACT)


def _restore_row(kind: type, row: Mapping, table: str):
    values = {}
    for f in fields(kind):
        if f.name not in row:
            if f.default is not MISSING:
                continue
            raise PaperStateError(f"snapshot '{table}' row {dict(row)!r} lacks {f.name!r}")
        value = row[f.name]
        if isinstance(value, Decimal) or (value is not None and "Decimal" in str(f.type)):
            value = _stored(value, f"{table}.{f.name}")
        elif isinstance(value, datetime):
            value = _aware(value, f"{table}.{f.name}")
        values[f.name] = value
    return kind(**values)
