"""The live book: positions and PnL rebuilt from the executions the exchange reported.

The paper broker is its own source of truth; a live account is not. What Tracer owns on a
live account is the orders it placed, recorded in `trading.orders` with what the exchange
said of them (filled amount, average price, fee and its currency). `book_positions` replays
those executions, oldest first, into the same `Position` rows the paper broker keeps, so the
risk manager, `trading.positions` and the portfolio read both modes alike. Balances are
not kept here: they are the exchange's (`fetch_balance`).

Fees, as the exchange charges them (exact, no guessing):
- in the base currency (Binance's default on a buy): the position holds `filled - fee`;
  the fee's quote value at the fill price counts in `fees_paid`;
- in the quote currency: a buy's fee adds to the cost basis, a sell's comes off the proceeds;
- in a third currency (BNB) or unknown: the amounts are untouched and the fee is left out of
  the PnL, which therefore reads slightly high; `book_positions` says so in `notes`.

`exit_trigger` is the tick-side watch of a live position's stop, target and trailing stop: the
exchange holds no stop order, so a candle that touched a level sends a market sell on the next
decision run (the fill is the market price then, not the level: worse than a resting stop
when the price runs away, which docs/trading.md states).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal, localcontext

from tracer_assets.money import EXACT, to_scale
from tracer_assets.trading.positions import (
    Position,
    bought_into,
    exit_on_candle,
    levels_from_fill,
    sold_from,
    watched,
)


@dataclass(frozen=True)
class Execution:
    """One of our orders as the exchange reported it, with the exits its decision set (levels, or
    fractions of the fill price)."""

    client_order_id: str
    symbol: str
    side: str  # "buy" / "sell"
    filled: Decimal  # base units
    average_price: Decimal
    fee: Decimal | None
    fee_currency: str | None
    ts: datetime
    stop_loss: Decimal | None = None
    take_profit: Decimal | None = None
    stop_fraction: Decimal | None = None
    target_fraction: Decimal | None = None
    trailing_stop: Decimal | None = None


@dataclass
class Book:
    positions: list[Position] = field(default_factory=list)  # every position, oldest first
    notes: list[str] = field(default_factory=list)  # what could not be booked exactly

    @property
    def open_positions(self) -> dict[str, Position]:
        return {p.symbol: p for p in self.positions if p.is_open}


def book_positions(executions: Iterable[Execution], dust: Mapping[str, Decimal] | None = None) -> Book:
    """Replay `executions` (any order; sorted by time here) into positions.

    `dust`: per symbol, the smallest amount the market lets one sell (its minimum or step). A
    position whose remainder after a sell is below it is closed: that remainder cannot be sold,
    so it stays on the account as dust and its cost is booked as lost (conservative).
    """
    book = Book()
    open_by_symbol: dict[str, int] = {}
    # At one instant, buys before sells: a sell never comes before the buy it closes.
    for execution in sorted(executions, key=lambda e: (e.ts, e.side != "buy", e.client_order_id)):
        if execution.filled <= 0:
            continue
        base, quote = execution.symbol.split("/")
        with localcontext(EXACT):
            notional = execution.filled * execution.average_price
            fee, fee_currency = execution.fee or Decimal(0), execution.fee_currency
            if execution.fee and fee_currency not in (base, quote):
                book.notes.append(
                    f"{execution.client_order_id}: fee {execution.fee} {fee_currency} is not in {base} or "
                    f"{quote}; left out of the PnL"
                )
            if execution.side == "buy":
                received = execution.filled - fee if fee_currency == base else execution.filled
                cost = notional + fee if fee_currency == quote else notional
                fee_quote = (
                    fee * execution.average_price if fee_currency == base else fee if fee_currency == quote else 0
                )
                _buy(
                    book,
                    open_by_symbol,
                    execution,
                    received,
                    to_scale(cost, ROUND_HALF_EVEN),
                    to_scale(Decimal(fee_quote), ROUND_HALF_EVEN),
                )
            else:
                # A sale's fee in the base asset is worth fee x price in quote, off the proceeds too.
                proceeds = (
                    notional - fee
                    if fee_currency == quote
                    else notional - fee * execution.average_price
                    if fee_currency == base
                    else notional
                )
                fee_quote = (
                    fee if fee_currency == quote else fee * execution.average_price if fee_currency == base else 0
                )
                _sell(
                    book,
                    open_by_symbol,
                    execution,
                    to_scale(proceeds, ROUND_HALF_EVEN),
                    to_scale(Decimal(fee_quote), ROUND_HALF_EVEN),
                    (dust or {}).get(execution.symbol, Decimal(0)),
                )
    return book


def _buy(
    book: Book, open_by_symbol: dict, execution: Execution, received: Decimal, cost: Decimal, fee: Decimal
) -> None:
    index = open_by_symbol.get(execution.symbol)
    stop, target = levels_from_fill(execution.average_price, execution.stop_fraction, execution.target_fraction)
    position = bought_into(
        None if index is None else book.positions[index],
        execution.client_order_id,
        execution.symbol,
        received,
        execution.average_price,
        cost,
        fee,
        execution.stop_loss if stop is None else stop,
        execution.take_profit if target is None else target,
        execution.ts,
        execution.trailing_stop,
    )
    if index is None:
        open_by_symbol[execution.symbol] = len(book.positions)
        book.positions.append(position)
    else:
        book.positions[index] = position


def _sell(
    book: Book, open_by_symbol: dict, execution: Execution, proceeds: Decimal, fee: Decimal, dust: Decimal
) -> None:
    index = open_by_symbol.get(execution.symbol)
    if index is None:
        book.notes.append(
            f"{execution.client_order_id}: sold {execution.filled} {execution.symbol} with no open "
            "position (a holding from before Tracer): not booked"
        )
        return
    position = sold_from(book.positions[index], execution.filled, proceeds, fee)
    if position.amount < max(dust, Decimal("1e-18")):
        if position.amount:
            # Below what the market lets one sell: written off (its cost counts as lost), not held.
            book.notes.append(
                f"{execution.symbol}: {position.amount} left after {execution.client_order_id} is below "
                f"the market's smallest sale ({dust}); written off as dust"
            )
        position = replace(
            position,
            amount=Decimal(0),
            cost_basis=Decimal(0),
            closed_at=execution.ts,
            realized_pnl=position.realized_pnl - position.cost_basis,
        )
        del open_by_symbol[execution.symbol]
    book.positions[index] = position


def exit_trigger(
    position: Position, candles: Iterable[tuple[datetime, Decimal, Decimal]]
) -> tuple[str, datetime] | None:
    """("stop" | "trailing" | "target", the candle's open time) for the first candle (open time,
    high, low) opening at or after the position's entry that touched one of its exits, by
    `positions.exit_on_candle` (the stop first when one candle touched both; the trailing peak
    made of the candles before); None otherwise. The open is not read here: the low stands for
    it (the pessimistic reading), and the market sell fills at the price of the moment anyway."""
    for ts, high, low in sorted(candles):
        if ts < position.opened_at:
            continue
        touched = exit_on_candle(position, low, high, low)
        if touched is not None:
            return touched[0], ts
        position = watched(position, high)
    return None
