"""The order vocabulary both brokers share: statuses, sides, client order ids, the ticket a
decision hands a broker, and a fill. Pure: no Dagster, no I/O."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Literal

from tracer_assets.money import exact


class Mode(StrEnum):
    """Where a run's orders go: the paper broker (DRY) or a real exchange (LIVE). Stored as text."""

    DRY = "DRY"
    LIVE = "LIVE"


class Action(StrEnum):
    """What a decider decided for a symbol. Stored as text."""

    BUY = "BUY"
    SELL = "SELL"
    HOLD = "HOLD"

    @property
    def side(self) -> str:
        """The order side of a BUY or SELL ("buy" / "sell")."""
        if self is Action.HOLD:
            raise ValueError("HOLD places no order")
        return self.value.lower()


OrderStatus = Literal["pending", "filled", "rejected", "canceled"]
ORDER_STATUSES: tuple[str, ...] = ("pending", "filled", "rejected", "canceled")
SIDES: tuple[str, ...] = ("buy", "sell")
FILL_REASONS: tuple[str, ...] = ("entry", "signal", "stop", "target", "trailing")

# Binance's rule for client order ids (other exchanges accept a superset of it).
CLIENT_ORDER_ID_PATTERN = re.compile(r"^[\.A-Z\:/a-z0-9_-]{1,36}$")
MAX_PREFIX_LENGTH = 7  # prefix + "-" + 28 hex (112 bits of the intent's hash) = 36
CLIENT_ORDER_ID_HEX = 28


def check_symbol(symbol: object, name: str) -> None:
    if not isinstance(symbol, str) or not re.fullmatch(r"[A-Z0-9]{1,20}/[A-Z0-9]{1,20}", symbol):
        raise ValueError(f"{name}={symbol!r}: expected a ccxt spot symbol like BTC/USDT")


def client_order_id(decision_id: str, side: str, prefix: str = "tracer") -> str:
    """The order's id at the exchange, derived from the trading intent, so a retry reuses it.

    `<prefix>-<28 hex of sha256(decision id|side)>`. The decision id derives from the signal
    event (the signals run's id, a UUID, and its storage id) and the symbol
    (`decide.decision_id`), so the same event decided again gives the same id, while events of
    another Dagster instance, a restart on a new instance or another machine never share one
    (a storage id alone restarts at 1 in every new instance).
    """
    if not isinstance(decision_id, str) or not decision_id.strip():
        raise ValueError(f"decision_id={decision_id!r}: expected a non-empty string")
    if side not in SIDES:
        raise ValueError(f"side={side!r}: expected 'buy' or 'sell'")
    if not re.fullmatch(rf"[A-Za-z0-9_.:]{{1,{MAX_PREFIX_LENGTH}}}", prefix or ""):
        raise ValueError(f"prefix={prefix!r}: expected 1-{MAX_PREFIX_LENGTH} of A-Z a-z 0-9 _ . :")
    digest = hashlib.sha256(f"{decision_id}|{side}".encode()).hexdigest()[:CLIENT_ORDER_ID_HEX]
    return f"{prefix}-{digest}"


@dataclass(frozen=True)
class OrderTicket:
    """What the decision step asks a broker to do: one market order of `amount` base units."""

    client_order_id: str
    symbol: str  # ccxt spot symbol, "BTC/USDT"
    side: str  # "buy" / "sell"
    amount: Decimal  # base currency
    price: Decimal | None  # the price the decision expected (the last close), for checks only
    stop_loss: Decimal | None
    take_profit: Decimal | None
    decision_id: str
    signal_storage_id: int
    # A buy's exits as fractions of its fill price (the strategy decider's, the spec's own),
    # set when it fills, as the backtester does; instead of stop_loss / take_profit, not with them.
    stop_fraction: Decimal | None = None
    target_fraction: Decimal | None = None
    trailing_stop: Decimal | None = None  # a fraction below the highest price since the fill

    def __post_init__(self) -> None:
        if not isinstance(self.client_order_id, str) or not CLIENT_ORDER_ID_PATTERN.match(self.client_order_id):
            raise ValueError(f"client_order_id={self.client_order_id!r}: expected 1-36 of A-Z a-z 0-9 . : / _ -")
        check_symbol(self.symbol, "symbol")
        if self.side not in SIDES:
            raise ValueError(f"side={self.side!r}: expected 'buy' or 'sell'")
        exact(self.amount, "amount", positive=True)
        for name in ("price", "stop_loss", "take_profit"):
            if getattr(self, name) is not None:
                exact(getattr(self, name), name, positive=True)
        if not isinstance(self.decision_id, str) or not self.decision_id.strip():
            raise ValueError(f"decision_id={self.decision_id!r}: expected a non-empty string")
        if (
            isinstance(self.signal_storage_id, bool)
            or not isinstance(self.signal_storage_id, int)
            or self.signal_storage_id < 0
        ):
            raise ValueError(f"signal_storage_id={self.signal_storage_id!r}: expected an int >= 0")
        if self.side == "sell" and (self.stop_loss is not None or self.take_profit is not None):
            raise ValueError(
                f"{self.client_order_id}: a sell closes a long position; stop_loss/take_profit belong to buys"
            )
        fractions = {"stop_fraction": 1, "target_fraction": None, "trailing_stop": 1}
        for name, upper in fractions.items():
            value = getattr(self, name)
            if value is None:
                continue
            if self.side == "sell":
                raise ValueError(f"{self.client_order_id}: a sell closes a long position; {name} belongs to buys")
            exact(value, name, positive=True)
            if upper is not None and value >= upper:
                raise ValueError(f"{self.client_order_id}: {name}={value} must be below 1 (a fraction of the price)")
        if self.stop_fraction is not None and self.stop_loss is not None:
            raise ValueError(f"{self.client_order_id}: give the stop as stop_loss or as stop_fraction, not both")
        if self.target_fraction is not None and self.take_profit is not None:
            raise ValueError(f"{self.client_order_id}: give the target as take_profit or as target_fraction, not both")
        stop, target, price = self.stop_loss, self.take_profit, self.price
        if stop is not None and target is not None and not stop < target:
            raise ValueError(f"{self.client_order_id}: stop_loss={stop} must be below take_profit={target}")
        if price is not None and stop is not None and not stop < price:
            raise ValueError(f"{self.client_order_id}: stop_loss={stop} must be below the expected price={price}")
        if price is not None and target is not None and not target > price:
            raise ValueError(f"{self.client_order_id}: take_profit={target} must be above the expected price={price}")

    @property
    def base(self) -> str:
        return self.symbol.split("/")[0]

    @property
    def quote(self) -> str:
        return self.symbol.split("/")[1]


@dataclass(frozen=True)
class Fill:
    """One execution: `amount` base units at `price`, `fee` paid in `fee_currency`."""

    client_order_id: str  # the order filled; for a stop/target exit, the order that opened the position
    symbol: str
    side: str
    amount: Decimal
    price: Decimal
    fee: Decimal
    fee_currency: str
    ts: datetime  # the candle's open time (the instant the price existed)
    reason: str  # "entry" (a buy), "signal" (a sell order), "stop", "target", "trailing"
    position_id: str | None = None  # the position it opened, added to or reduced
