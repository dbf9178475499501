"""The risk manager: decides whether an order may go out, and how big it is.

Pure and exact: every amount, price and fee is a `decimal.Decimal`, nothing here does I/O,
and the caller supplies the state (positions, trades and realized PnL today, the last loss,
the clock). `assess` never raises on bad *market data* (a NaN price, a confidence out of
range, a market whose precision is unknown): it returns a rejected verdict whose reason
names what was wrong, because the decision job must record every refusal. Wrong *types*
and impossible state (a float price, a naive datetime, an unknown side) are programmer
errors and raise.

Spot, long only: a buy opens (or, when allowed, adds to) a position; a sell closes the
whole position in that symbol. Closing always stays possible: the kill switch, the daily
trade limit and the loss cooldown stop new risk only.

Buy sizing, in quote currency (USDT):

1. confidence fraction = min_confidence_fraction + (1 - min_confidence_fraction) x confidence,
   i.e. confidence 0 -> 20 %, 0.5 -> 60 %, 1 -> 100 % of `max_order_quote` by default;
2. with the strategy's win rate W and payoff ratio R (average win / average loss), the full
   Kelly fraction f* = W - (1 - W) / R; f* <= 0 means no edge and the buy is rejected;
   otherwise the size is multiplied by kelly_fraction x f*, clipped to [0, 1];
3. capped by the room left under the per-symbol and total exposure limits (positions valued
   at cost: amount x entry price) and by the free quote balance when it is given;
4. the price is rounded DOWN to the market's tick and the amount (quote / price) DOWN to its
   step; the order is then checked, never adjusted upwards: cost = amount x price must lie in
   [min_order_quote, max_order_quote] and meet the market's minimum cost; the amount must
   meet the market's minimum and maximum amount.

Prices round down on both sides: a limit buy then never pays more than asked, a closing
sell is at most one tick more willing to fill, and the cost checked against the exchange's
minimum notional is never overstated.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import ROUND_DOWN, Decimal
from typing import Literal

from tracer_assets.money import decimal_or_none, to_decimal
from tracer_assets.trading.positions import Position

# ccxt's precision modes (ccxt.base.decimal_to_precision), copied so this module stays free
# of the exchange library; a test keeps them equal to ccxt's.
DECIMAL_PLACES = 2
SIGNIFICANT_DIGITS = 3
TICK_SIZE = 4

BUY_CHECKS = (
    "price",
    "confidence",
    "market_precision",
    "kill_switch",
    "daily_trade_limit",
    "loss_cooldown",
    "open_positions",
    "strategy_edge",
    "symbol_exposure",
    "total_exposure",
    "free_quote",
    "order_size",
    "market_min_amount",
    "market_max_amount",
    "market_min_cost",
)
SELL_CHECKS = (
    "price",
    "market_precision",
    "kill_switch",
    "daily_trade_limit",
    "loss_cooldown",
    "position",
    "market_min_amount",
    "market_max_amount",
    "market_min_cost",
)

Side = Literal["buy", "sell"]
_ZERO = Decimal(0)
_ONE = Decimal(1)


# --- inputs ------------------------------------------------------------------------------


def _require_decimal(owner: str, name: str, value: object, *, positive: bool = False, allow_none: bool = False) -> None:
    """Money is exact: a float here is a programmer error, and so is NaN or a bad sign."""
    if value is None and allow_none:
        return
    if not isinstance(value, Decimal):
        raise TypeError(f"{owner}.{name} must be a decimal.Decimal, got {type(value).__name__} {value!r}")
    if not value.is_finite():
        raise ValueError(f"{owner}.{name}={value}: must be a finite number")
    if positive and value <= 0:
        raise ValueError(f"{owner}.{name}={value}: must be greater than 0")
    if not positive and value < 0:
        raise ValueError(f"{owner}.{name}={value}: must not be negative")


def _cost(position: Position) -> Decimal:
    """Exposure at cost: what the position's amount cost at its entry price (fees aside)."""
    return position.amount * position.entry_price


def _require_int(owner: str, name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{owner}.{name} must be an int, got {type(value).__name__} {value!r}")
    if value < 0:
        raise ValueError(f"{owner}.{name}={value}: must not be negative")


def _require_aware(owner: str, name: str, value: object, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, datetime):
        raise TypeError(f"{owner}.{name} must be a datetime, got {type(value).__name__} {value!r}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{owner}.{name}={value.isoformat()}: must be timezone-aware (UTC)")


def _require_fraction(owner: str, name: str, value: object) -> None:
    """A Decimal in (0, 1]."""
    _require_decimal(owner, name, value, positive=True)
    if value > _ONE:
        raise ValueError(f"{owner}.{name}={value}: must be at most 1")


@dataclass(frozen=True)
class RiskLimits:
    """The operator's limits, all in quote currency (e.g. USDT) unless said otherwise.

    Exposure counts open positions at cost (amount x entry price), the capital committed.
    `loss_cooldown` is how long buys wait after a losing trade closed.
    """

    min_order_quote: Decimal  # MIN_ALLOWED_ORDER_AMOUNT
    max_order_quote: Decimal  # MAX_ORDER_AMOUNT
    max_symbol_exposure_quote: Decimal
    max_total_exposure_quote: Decimal
    daily_loss_limit_quote: Decimal  # the kill switch trips at realized PnL today <= -this
    loss_cooldown: timedelta
    max_open_positions: int = 3
    daily_trade_limit: int = 8
    kelly_fraction: Decimal = Decimal("0.5")
    min_confidence_fraction: Decimal = Decimal("0.2")
    allow_adding_to_position: bool = False  # no pyramiding unless asked for

    def __post_init__(self) -> None:
        owner = "RiskLimits"
        for name in (
            "min_order_quote",
            "max_order_quote",
            "max_symbol_exposure_quote",
            "max_total_exposure_quote",
            "daily_loss_limit_quote",
        ):
            _require_decimal(owner, name, getattr(self, name), positive=True)
        if self.min_order_quote > self.max_order_quote:
            raise ValueError(
                f"RiskLimits.min_order_quote={self.min_order_quote} is above max_order_quote={self.max_order_quote}"
            )
        if self.max_symbol_exposure_quote > self.max_total_exposure_quote:
            raise ValueError(
                f"RiskLimits.max_symbol_exposure_quote={self.max_symbol_exposure_quote} is above "
                f"max_total_exposure_quote={self.max_total_exposure_quote}"
            )
        if not isinstance(self.loss_cooldown, timedelta):
            raise TypeError(f"RiskLimits.loss_cooldown must be a timedelta, got {self.loss_cooldown!r}")
        if self.loss_cooldown < timedelta(0):
            raise ValueError(f"RiskLimits.loss_cooldown={self.loss_cooldown}: must not be negative")
        _require_int(owner, "max_open_positions", self.max_open_positions)
        _require_int(owner, "daily_trade_limit", self.daily_trade_limit)
        _require_fraction(owner, "kelly_fraction", self.kelly_fraction)
        _require_fraction(owner, "min_confidence_fraction", self.min_confidence_fraction)
        if not isinstance(self.allow_adding_to_position, bool):
            raise TypeError(
                f"RiskLimits.allow_adding_to_position must be a bool, got {self.allow_adding_to_position!r}"
            )

    @classmethod
    def from_settings(cls, settings) -> RiskLimits:
        """From `tracer_assets.settings.Settings` (or anything with its attribute names)."""
        return cls(
            min_order_quote=settings.trading.min_allowed_order_amount,
            max_order_quote=settings.trading.max_order_amount,
            max_symbol_exposure_quote=settings.trading.max_symbol_exposure,
            max_total_exposure_quote=settings.trading.max_total_exposure,
            daily_loss_limit_quote=settings.trading.daily_loss_limit,
            loss_cooldown=timedelta(minutes=settings.trading.loss_cooldown_minutes),
            max_open_positions=settings.trading.max_open_positions,
            daily_trade_limit=settings.trading.daily_trade_limit,
            kelly_fraction=settings.trading.kelly_fraction,
        )


def capped(limits: RiskLimits, requested: Decimal | None) -> RiskLimits:
    """The decider's size (ORDER_AMOUNT for rules, the LLM's for llm) caps the risk manager's:
    sizing scales within the smaller of the two, never above what was asked for."""
    if requested is None or requested >= limits.max_order_quote:
        return limits
    return replace(limits, max_order_quote=max(requested, limits.min_order_quote))


@dataclass(frozen=True)
class MarketRules:
    """A spot market's precision and limits, amounts in base currency, prices in quote.

    A step or tick of None means the precision is unknown: every order on that market is
    rejected rather than sent with a guessed rounding.
    """

    symbol: str
    amount_step: Decimal | None
    price_tick: Decimal | None
    min_amount: Decimal | None = None
    max_amount: Decimal | None = None
    min_cost: Decimal | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.symbol, str) or not self.symbol:
            raise ValueError(f"MarketRules.symbol must be a non-empty string, got {self.symbol!r}")
        owner = f"MarketRules({self.symbol})"
        _require_decimal(owner, "amount_step", self.amount_step, positive=True, allow_none=True)
        _require_decimal(owner, "price_tick", self.price_tick, positive=True, allow_none=True)
        for name in ("min_amount", "max_amount", "min_cost"):
            _require_decimal(owner, name, getattr(self, name), allow_none=True)

    @classmethod
    def from_ccxt_market(cls, market: Mapping, precision_mode: int) -> MarketRules:
        """Read ccxt's unified market structure (`exchange.markets[symbol]`).

        `precision_mode` is the exchange's `exchange.precisionMode`: TICK_SIZE (Binance and
        most of ccxt 4.5) gives the step itself, DECIMAL_PLACES a number of decimals.
        SIGNIFICANT_DIGITS (bitfinex, bithumb) has no fixed step, and a missing precision is
        unknown: both leave the step None so `assess` rejects orders on that market.
        Derivative markets (amounts in contracts) are refused with ValueError.
        """
        if not isinstance(market, Mapping):
            raise TypeError(f"market must be ccxt's market dict, got {type(market).__name__}")
        symbol = market.get("symbol")
        if not symbol:
            raise ValueError(f"market has no 'symbol': keys {sorted(market)}")
        if market.get("spot") is False or market.get("contract"):
            raise ValueError(f"{symbol}: the risk manager sizes spot orders; this is a {market.get('type')} market")
        if precision_mode not in (DECIMAL_PLACES, SIGNIFICANT_DIGITS, TICK_SIZE):
            raise ValueError(
                f"{symbol}: unknown ccxt precision mode {precision_mode!r} "
                f"(expected {DECIMAL_PLACES}, {SIGNIFICANT_DIGITS} or {TICK_SIZE})"
            )
        precision = market.get("precision") or {}
        limits = market.get("limits") or {}
        return cls(
            symbol=symbol,
            amount_step=_ccxt_step(precision.get("amount"), precision_mode, f"{symbol} precision.amount"),
            price_tick=_ccxt_step(precision.get("price"), precision_mode, f"{symbol} precision.price"),
            min_amount=_ccxt_decimal((limits.get("amount") or {}).get("min"), f"{symbol} limits.amount.min"),
            max_amount=_ccxt_decimal((limits.get("amount") or {}).get("max"), f"{symbol} limits.amount.max"),
            min_cost=_ccxt_decimal((limits.get("cost") or {}).get("min"), f"{symbol} limits.cost.min"),
        )


def _ccxt_decimal(value: object, where: str) -> Decimal | None:
    """A market rule from ccxt (a float of the exchange's digits: 1e-05 -> 0.00001), non-negative."""
    number = to_decimal(value, where)
    if number is not None and number < 0:
        raise ValueError(f"{where}={value!r}: must be a finite, non-negative number")
    return None if number is None else number.normalize() if number else _ZERO


def _ccxt_step(value: object, mode: int, where: str) -> Decimal | None:
    number = _ccxt_decimal(value, where)
    if number is None or number == 0 or mode == SIGNIFICANT_DIGITS:
        return None
    if mode == DECIMAL_PLACES:
        if number != number.to_integral_value():
            raise ValueError(f"{where}={value!r}: decimal places must be a whole number")
        return _ONE.scaleb(-int(number))
    return number


@dataclass(frozen=True)
class RiskState:
    """What the caller read from DuckDB: open positions and today's record, and the clock.

    `free_quote` is the quote balance available to buy with; None means the caller does not
    know it and buys are not capped by it.
    """

    positions: tuple[Position, ...]
    trades_today: int
    realized_pnl_today: Decimal
    last_loss_at: datetime | None
    now: datetime
    free_quote: Decimal | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.positions, tuple) or not all(isinstance(p, Position) for p in self.positions):
            raise TypeError(f"RiskState.positions must be a tuple of Position, got {self.positions!r}")
        for position in self.positions:
            owner = f"Position({position.symbol})"
            _require_decimal(owner, "amount", position.amount, positive=True)
            _require_decimal(owner, "entry_price", position.entry_price, positive=True)
            _require_aware(owner, "opened_at", position.opened_at)
        _require_int("RiskState", "trades_today", self.trades_today)
        if not isinstance(self.realized_pnl_today, Decimal) or not self.realized_pnl_today.is_finite():
            raise TypeError(f"RiskState.realized_pnl_today must be a finite Decimal, got {self.realized_pnl_today!r}")
        _require_aware("RiskState", "last_loss_at", self.last_loss_at, allow_none=True)
        _require_aware("RiskState", "now", self.now)
        _require_decimal("RiskState", "free_quote", self.free_quote, allow_none=True)

    @classmethod
    def from_history(cls, history: Iterable, now: datetime, free_quote: Decimal | None) -> RiskState:
        """From every position a broker ever held, open and closed (anything with symbol, amount,
        entry_price, opened_at, closed_at and realized_pnl, like the brokers' positions): the
        open ones, today's (UTC) new positions and realized PnL, and the last loss."""
        history = list(history)
        day = now.replace(hour=0, minute=0, second=0, microsecond=0)
        closed = [p for p in history if p.closed_at is not None]
        losses = [p.closed_at for p in closed if p.realized_pnl < 0]
        return cls(
            positions=tuple(p for p in history if p.closed_at is None),
            trades_today=sum(1 for p in history if p.opened_at >= day),
            realized_pnl_today=sum((p.realized_pnl for p in closed if p.closed_at >= day), Decimal(0)),
            last_loss_at=max(losses) if losses else None,
            now=now,
            free_quote=free_quote,
        )

    def held(self, symbol: str) -> tuple[Decimal, Decimal]:
        """(amount, cost) held in `symbol`, summed over its positions."""
        mine = [p for p in self.positions if p.symbol == symbol]
        return sum((p.amount for p in mine), _ZERO), sum((_cost(p) for p in mine), _ZERO)

    @property
    def open_symbols(self) -> frozenset[str]:
        return frozenset(p.symbol for p in self.positions)

    @property
    def total_exposure(self) -> Decimal:
        return sum((_cost(p) for p in self.positions), _ZERO)


@dataclass(frozen=True)
class OrderRequest:
    """What a decision asks for. `price` is the expected fill price (quote per base).

    `confidence` (0-1) scales the size; `win_rate` (0-1) and `payoff_ratio` (average win /
    average loss) of the strategy enable Kelly sizing, both or neither. Values are checked by
    `assess` (a bad one is a rejection); only wrong types raise here.
    """

    symbol: str
    side: Side
    price: Decimal
    confidence: float = 1.0
    win_rate: float | None = None
    payoff_ratio: float | None = None

    def __post_init__(self) -> None:
        if self.side not in ("buy", "sell"):
            raise ValueError(f"OrderRequest.side={self.side!r}: expected 'buy' or 'sell'")
        if not isinstance(self.price, Decimal):
            raise TypeError(
                f"OrderRequest.price must be a decimal.Decimal, got {type(self.price).__name__} {self.price!r}"
            )
        for name in ("confidence", "win_rate", "payoff_ratio"):
            value = getattr(self, name)
            if value is None and name != "confidence":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
                raise TypeError(f"OrderRequest.{name} must be a number, got {type(value).__name__} {value!r}")


# --- the verdict ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """One rule's outcome, kept for the audit whether it passed or not."""

    name: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class RiskVerdict:
    """The decision. Rejected verdicts carry amount 0 and cost 0, so nothing can be sent by mistake.

    `amount` is in base currency, rounded down to the step; `price` rounded down to the tick
    (0 when the price itself was unusable); `cost` = amount x price in quote currency.
    """

    approved: bool
    amount: Decimal
    price: Decimal
    cost: Decimal
    checks: tuple[Check, ...]
    reason: str

    def failed(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if not c.passed)

    def as_record(self) -> dict:
        """A JSON-ready dict for the audit trail: Decimals as exact strings, no exponent."""
        return {
            "approved": self.approved,
            "amount": _fmt(self.amount),
            "price": _fmt(self.price),
            "cost": _fmt(self.cost),
            "reason": self.reason,
            "checks": [{"name": c.name, "passed": c.passed, "detail": c.detail} for c in self.checks],
        }


def round_down(value: Decimal, step: Decimal) -> Decimal:
    """The largest multiple of `step` not above `value` (value >= 0), at the step's exponent."""
    return (value / step).to_integral_value(rounding=ROUND_DOWN) * step


def confidence_fraction(confidence: Decimal, limits: RiskLimits) -> Decimal:
    """Confidence 0..1 mapped linearly onto [min_confidence_fraction, 1] (0 -> 20 %, 1 -> 100 %)."""
    floor = limits.min_confidence_fraction
    return floor + (_ONE - floor) * confidence


def kelly_fraction(win_rate: Decimal, payoff_ratio: Decimal) -> Decimal:
    """Full Kelly f* = W - (1 - W) / R for a bet that wins R per 1 lost with probability W."""
    return win_rate - (_ONE - win_rate) / payoff_ratio


def _fmt(value: Decimal) -> str:
    """Readable and exact: no exponent, no trailing zeros past the point."""
    text = f"{value:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


class _Checks:
    """Collects checks in a fixed order; `skip` fills in the ones that could not be evaluated."""

    def __init__(self, names: tuple[str, ...]):
        self.names = names
        self.done: dict[str, Check] = {}

    def add(self, name: str, passed: bool, detail: str) -> bool:
        assert name in self.names and name not in self.done, name
        self.done[name] = Check(name, passed, detail)
        return passed

    def skip_rest(self, because: str) -> None:
        for name in self.names:
            if name not in self.done:
                self.done[name] = Check(name, False, f"not evaluated: {because}")

    def verdict(self, amount: Decimal, price: Decimal, cost: Decimal) -> RiskVerdict:
        checks = tuple(self.done[n] for n in self.names)
        first_failure = next((c for c in checks if not c.passed), None)
        if first_failure is None:
            return RiskVerdict(True, amount, price, cost, checks, "approved")
        return RiskVerdict(False, _ZERO, price, _ZERO, checks, f"{first_failure.name}: {first_failure.detail}")


# --- the rules ----------------------------------------------------------------------------


def assess(request: OrderRequest, state: RiskState, limits: RiskLimits, market: MarketRules) -> RiskVerdict:
    """Apply every risk rule to `request`; see the module docstring for the sizing."""
    if request.symbol != market.symbol:
        raise ValueError(f"OrderRequest.symbol={request.symbol!r} but the market rules are for {market.symbol!r}")
    checks = _Checks(BUY_CHECKS if request.side == "buy" else SELL_CHECKS)
    quote = market.symbol.split("/")[-1].split(":")[0]

    price_ok = request.price.is_finite() and request.price > 0
    checks.add(
        "price",
        price_ok,
        f"{request.price} {quote}" if price_ok else f"price={request.price} must be a finite number above 0",
    )
    if request.side == "buy":
        confidence = decimal_or_none(request.confidence)
        confidence_ok = confidence is not None and _ZERO <= confidence <= _ONE
        checks.add(
            "confidence",
            confidence_ok,
            f"{confidence}" if confidence_ok else f"confidence={request.confidence} must be within [0, 1]",
        )
    else:
        confidence, confidence_ok = None, True  # a sell closes whatever the confidence
    precision_ok = market.amount_step is not None and market.price_tick is not None
    checks.add(
        "market_precision",
        precision_ok,
        f"amount step {_fmt(market.amount_step)}, price tick {_fmt(market.price_tick)}"
        if precision_ok
        else (
            f"{market.symbol}: market precision unknown "
            f"(amount step {market.amount_step}, price tick {market.price_tick})"
        ),
    )

    _gates(request, state, limits, checks)

    price = round_down(request.price, market.price_tick) if price_ok and precision_ok else _ZERO
    if price_ok and precision_ok and price <= 0:
        checks.done["price"] = Check(
            "price", False, f"price={request.price} rounds down to 0 at tick {_fmt(market.price_tick)}"
        )
        price_ok = False
    if not (price_ok and confidence_ok and precision_ok):
        checks.skip_rest("price, confidence or market precision unusable")
        return checks.verdict(_ZERO, price, _ZERO)

    if request.side == "buy":
        amount = _size_buy(request, state, limits, market, price, confidence, checks, quote)
    else:
        amount = _size_sell(request, state, market, checks)
    if amount is None:
        return checks.verdict(_ZERO, price, _ZERO)
    cost = amount * price
    _market_limits(market, amount, cost, checks, quote)
    return checks.verdict(amount, price, cost)


def _gates(request: OrderRequest, state: RiskState, limits: RiskLimits, checks: _Checks) -> None:
    """Kill switch, daily trade limit, cooldown: they stop buys; sells pass and say so."""
    selling = request.side == "sell"
    note = "; sells still allowed (closing reduces risk)"

    tripped = state.realized_pnl_today <= -limits.daily_loss_limit_quote
    pnl = f"realized PnL today {_fmt(state.realized_pnl_today)}, limit -{_fmt(limits.daily_loss_limit_quote)}"
    checks.add(
        "kill_switch",
        selling or not tripped,
        f"kill switch active: {pnl}" + (note if selling else "") if tripped else f"off: {pnl}",
    )

    at_limit = state.trades_today >= limits.daily_trade_limit
    trades = f"{state.trades_today} trades today, limit {limits.daily_trade_limit}"
    checks.add(
        "daily_trade_limit",
        selling or not at_limit,
        f"daily trade limit reached: {trades}" + (note if selling else "") if at_limit else trades,
    )

    if state.last_loss_at is None:
        checks.add("loss_cooldown", True, "no loss recorded")
    else:
        until = state.last_loss_at + limits.loss_cooldown
        cooling = state.now < until
        checks.add(
            "loss_cooldown",
            selling or not cooling,
            f"cooling down after a loss until {until.isoformat()}" + (note if selling else "")
            if cooling
            else f"last loss at {state.last_loss_at.isoformat()}, cooldown over at {until.isoformat()}",
        )

    if not selling:
        held_amount, _ = state.held(request.symbol)
        open_count = len(state.open_symbols)
        if held_amount > 0:
            checks.add(
                "open_positions",
                limits.allow_adding_to_position,
                f"adding to the open {request.symbol} position ({open_count} open)"
                if limits.allow_adding_to_position
                else f"already in position: {_fmt(held_amount)} {request.symbol} held, adding is not allowed",
            )
        else:
            checks.add(
                "open_positions",
                open_count < limits.max_open_positions,
                f"{open_count} open positions, limit {limits.max_open_positions}",
            )


def _size_buy(
    request: OrderRequest,
    state: RiskState,
    limits: RiskLimits,
    market: MarketRules,
    price: Decimal,
    confidence: Decimal,
    checks: _Checks,
    quote: str,
) -> Decimal | None:
    """The buy's amount in base currency, or None when it cannot be sized at all."""
    size = limits.max_order_quote * confidence_fraction(confidence, limits)
    sizing = f"{_fmt(limits.max_order_quote)} x confidence fraction {_fmt(confidence_fraction(confidence, limits))}"

    if request.win_rate is None and request.payoff_ratio is None:
        checks.add("strategy_edge", True, "no win rate / payoff given: Kelly not applied")
    else:
        win_rate = None if request.win_rate is None else decimal_or_none(request.win_rate)
        payoff = None if request.payoff_ratio is None else decimal_or_none(request.payoff_ratio)
        if win_rate is None or payoff is None or not (_ZERO <= win_rate <= _ONE) or payoff <= 0:
            checks.add(
                "strategy_edge",
                False,
                f"win_rate={request.win_rate} must be within [0, 1] and payoff_ratio={request.payoff_ratio} "
                "above 0, both given",
            )
            checks.skip_rest("no usable strategy edge")
            return None
        full_kelly = kelly_fraction(win_rate, payoff)
        if full_kelly <= 0:
            checks.add(
                "strategy_edge",
                False,
                (
                    f"no edge: Kelly f* = {_fmt(win_rate)} - (1 - {_fmt(win_rate)}) / {_fmt(payoff)} "
                    f"= {_fmt(full_kelly)} <= 0"
                ),
            )
            checks.skip_rest("no usable strategy edge")
            return None
        scale = min(max(full_kelly * limits.kelly_fraction, _ZERO), _ONE)
        size *= scale
        sizing += f" x Kelly {_fmt(limits.kelly_fraction)} x {_fmt(full_kelly)}"
        checks.add("strategy_edge", True, f"Kelly f* {_fmt(full_kelly)}, sized at {_fmt(scale)} of it")

    _, symbol_cost = state.held(request.symbol)
    caps = [
        (
            "symbol_exposure",
            limits.max_symbol_exposure_quote - symbol_cost,
            f"{_fmt(symbol_cost)} of {_fmt(limits.max_symbol_exposure_quote)} {quote} in {request.symbol}",
        ),
        (
            "total_exposure",
            limits.max_total_exposure_quote - state.total_exposure,
            f"{_fmt(state.total_exposure)} of {_fmt(limits.max_total_exposure_quote)} {quote} in all positions",
        ),
    ]
    if state.free_quote is None:
        checks.add("free_quote", True, "free quote balance not given: not capped by it")
    else:
        caps.append(("free_quote", state.free_quote, f"{_fmt(state.free_quote)} {quote} free"))
    for name, room, held in caps:
        room = max(room, _ZERO)
        # A cap only fails when it leaves no room for the smallest allowed order.
        checks.add(
            name,
            room >= limits.min_order_quote,
            f"{held}: room {_fmt(room)}, minimum order {_fmt(limits.min_order_quote)}",
        )
        if room < size:
            size, sizing = room, f"capped by {name} to {_fmt(room)}"

    amount = round_down(size / price, market.amount_step)
    cost = amount * price
    within = limits.min_order_quote <= cost <= limits.max_order_quote
    checks.add(
        "order_size",
        within,
        f"sized {_fmt(size)} {quote} ({sizing}); {_fmt(amount)} at {_fmt(price)} costs {_fmt(cost)}, "
        f"allowed [{_fmt(limits.min_order_quote)}, {_fmt(limits.max_order_quote)}]"
        + ("" if within else ": below the minimum, not raised to it" if cost < limits.min_order_quote else ""),
    )
    return amount


def _size_sell(request: OrderRequest, state: RiskState, market: MarketRules, checks: _Checks) -> Decimal | None:
    """Close the whole position, rounded down to the step; spot has no shorting."""
    held_amount, _ = state.held(request.symbol)
    if held_amount <= 0:
        checks.add("position", False, f"no open {request.symbol} position to sell (spot: no shorting)")
        checks.skip_rest("nothing to sell")
        return None
    amount = round_down(held_amount, market.amount_step)
    checks.add(
        "position",
        amount > 0,
        f"closing {_fmt(amount)} of {_fmt(held_amount)} {request.symbol} held (step {_fmt(market.amount_step)})",
    )
    return amount


def _market_limits(market: MarketRules, amount: Decimal, cost: Decimal, checks: _Checks, quote: str) -> None:
    """The exchange's minimums reject, never round up; its maximum rejects too."""
    base = market.symbol.split("/")[0]
    if market.min_amount is None:
        checks.add("market_min_amount", amount > 0, f"{_fmt(amount)} {base}; market sets no minimum amount")
    else:
        checks.add(
            "market_min_amount",
            amount > 0 and amount >= market.min_amount,
            f"{_fmt(amount)} {base}, market minimum {_fmt(market.min_amount)}",
        )
    if market.max_amount is None:
        checks.add("market_max_amount", True, "market sets no maximum amount")
    else:
        checks.add(
            "market_max_amount",
            amount <= market.max_amount,
            f"{_fmt(amount)} {base}, market maximum {_fmt(market.max_amount)}",
        )
    if market.min_cost is None:
        checks.add("market_min_cost", True, "market sets no minimum cost")
    else:
        checks.add(
            "market_min_cost",
            cost >= market.min_cost,
            f"cost {_fmt(cost)} {quote}, market minimum {_fmt(market.min_cost)}",
        )
