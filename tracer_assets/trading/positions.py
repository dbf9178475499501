"""Positions, and the arithmetic of buying into and selling from one, shared by the paper
broker and the live book (and read by the risk manager). Exact decimals. Pure."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal, localcontext

from tracer_assets.money import EXACT, to_scale


@dataclass(frozen=True)
class Position:
    """A long spot position: what was bought and not yet sold, with its stop and target."""

    position_id: str  # the client order id of the order that opened it
    symbol: str
    amount: Decimal  # base units still held by the position
    entry_price: Decimal  # amount-weighted fill price of the buys (slippage in, fees out)
    cost_basis: Decimal  # quote paid for `amount`, fees included
    stop_loss: Decimal | None
    take_profit: Decimal | None
    opened_at: datetime
    realized_pnl: Decimal = Decimal(0)  # quote received minus cost basis of what was sold, fees included
    fees_paid: Decimal = Decimal(0)
    closed_at: datetime | None = None

    @property
    def is_open(self) -> bool:
        return self.closed_at is None

    def unrealized_pnl(self, price: Decimal) -> Decimal:
        """Mark to `price`, before the fee a sale would cost."""
        with localcontext(EXACT):
            return to_scale(self.amount * price - self.cost_basis, ROUND_HALF_EVEN)


def bought_into(
    old: Position | None,
    position_id: str,
    symbol: str,
    amount: Decimal,
    price: Decimal,
    cost: Decimal,
    fee: Decimal,
    stop_loss: Decimal | None,
    take_profit: Decimal | None,
    ts: datetime,
) -> Position:
    """A buy of `amount` at `price` (`cost` quote paid, `fee` of it) opening a position, or added
    to the open `old` one: amount-weighted entry price; the buy's stop/target replace the
    position's, None keeps them. Shared by the paper broker and the live book."""
    if old is None:
        return Position(position_id, symbol, amount, price, cost, stop_loss, take_profit, ts, fees_paid=fee)
    with localcontext(EXACT):
        total = old.amount + amount
        entry = to_scale((old.entry_price * old.amount + price * amount) / total, ROUND_HALF_EVEN)
    return replace(
        old,
        amount=total,
        entry_price=entry,
        cost_basis=old.cost_basis + cost,
        fees_paid=old.fees_paid + fee,
        stop_loss=stop_loss if stop_loss is not None else old.stop_loss,
        take_profit=take_profit if take_profit is not None else old.take_profit,
    )


def sold_from(position: Position, amount: Decimal, proceeds: Decimal, fee: Decimal) -> Position:
    """A sale of `amount` (`proceeds` quote received, `fee` paid) charged to `position`: the part
    it holds takes its share of the cost basis, proceeds and fee; more than it holds is not its
    business. Closing it (closed_at) is the caller's rule. Shared by the paper broker and the live book."""
    closed = min(amount, position.amount)
    with localcontext(EXACT):
        # Whole amounts take whole values; a part takes its share, rounded once.
        basis = (
            position.cost_basis
            if closed == position.amount
            else to_scale(position.cost_basis * closed / position.amount, ROUND_HALF_EVEN)
        )
        received = proceeds if closed == amount else to_scale(proceeds * closed / amount, ROUND_HALF_EVEN)
        fee_part = fee if closed == amount else to_scale(fee * closed / amount, ROUND_HALF_EVEN)
    return replace(
        position,
        amount=position.amount - closed,
        cost_basis=position.cost_basis - basis,
        realized_pnl=position.realized_pnl + received - basis,
        fees_paid=position.fees_paid + fee_part,
    )
