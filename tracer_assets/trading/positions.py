"""Positions, and the arithmetic of buying into and selling from one, shared by the paper
broker and the live book (and read by the risk manager); the exit levels of a position and
which of them a candle touches (the backtester's rules 2-4, docs/backtesting.md). Exact
decimals. Pure."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal, localcontext

from tracer_assets.money import EXACT, to_scale


@dataclass(frozen=True)
class Position:
    """A long spot position: what was bought and not yet sold, with its stop, target and trailing stop."""

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
    trailing_stop: Decimal | None = None  # a fraction below `peak`
    peak: Decimal | None = None  # the entry price and the highs of the candles watched since

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
    trailing_stop: Decimal | None = None,
) -> Position:
    """A buy of `amount` at `price` (`cost` quote paid, `fee` of it) opening a position, or added
    to the open `old` one: amount-weighted entry price; the buy's stop/target/trailing stop
    replace the position's, None keeps them. Shared by the paper broker and the live book."""
    if old is None:
        peak = price if trailing_stop is not None else None
        return Position(
            position_id, symbol, amount, price, cost, stop_loss, take_profit, ts, fees_paid=fee,
            trailing_stop=trailing_stop, peak=peak,
        )  # fmt: skip
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
        trailing_stop=trailing_stop if trailing_stop is not None else old.trailing_stop,
        peak=max(old.peak or price, price) if (trailing_stop or old.trailing_stop) is not None else None,
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


def levels_from_fill(
    price: Decimal, stop_fraction: Decimal | None, target_fraction: Decimal | None
) -> tuple[Decimal | None, Decimal | None]:
    """The stop and target of a buy filled at `price` whose decision gave them as fractions of the
    fill (the strategy decider: the spec's stop_loss and take_profit): price x (1 - stop),
    price x (1 + target), as the backtester sets them from its entry fill (rule 2)."""
    with localcontext(EXACT):
        stop = None if stop_fraction is None else to_scale(price * (1 - stop_fraction), ROUND_HALF_EVEN)
        target = None if target_fraction is None else to_scale(price * (1 + target_fraction), ROUND_HALF_EVEN)
    return stop, target


def stop_level(position: Position) -> tuple[Decimal | None, str]:
    """The position's stop now and its reason: the fixed stop, or the trailing level
    peak x (1 - trailing_stop) when that is strictly higher ("trailing")."""
    level, reason = position.stop_loss, "stop"
    if position.trailing_stop is not None and position.peak is not None:
        with localcontext(EXACT):
            trailing = to_scale(position.peak * (1 - position.trailing_stop), ROUND_HALF_EVEN)
        if level is None or trailing > level:
            level, reason = trailing, "trailing"
    return level, reason


def exit_on_candle(position: Position, open_: Decimal, high: Decimal, low: Decimal) -> tuple[str, Decimal] | None:
    """(reason, price before slippage) when the candle touches the open position's target or stop,
    in the backtester's order (docs/backtesting.md, rule 3): an open at or beyond the target, then
    at or below the stop, fills at the open; else a low reaching the stop fills at the stop (before
    any target inside the same candle), else a high reaching the target fills at the target."""
    stop, reason = stop_level(position)
    target = position.take_profit
    if target is not None and open_ >= target:
        return "target", open_
    if stop is not None and open_ <= stop:
        return reason, open_
    if stop is not None and low <= stop:
        return reason, stop
    if target is not None and high >= target:
        return "target", target
    return None


def watched(position: Position, high: Decimal) -> Position:
    """The position after a candle it survived: its trailing peak raised to the candle's high, so
    the peak a candle is checked against is made of the candles strictly before it (rule 4)."""
    if position.trailing_stop is None or position.peak is None or high <= position.peak:
        return position
    return replace(position, peak=high)
