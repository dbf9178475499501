"""The one execution path: a signal event's BUY/SELL decisions become orders through a `Broker`,
the paper account or the live exchange account alike.

For each intent (the broker's own stop/target exits first, then the event's decisions): the
client order id (`orders.client_order_id`), never a second order for an id already recorded,
refusal of a signal that became too old and of a price the broker cannot vouch for, the risk
manager's verdict against the broker's market rules, free quote and positions, then the broker.
Every refusal is recorded as a `rejected` order with its reason. Pure: no Dagster; the asset
turns `ExecutionFailed` into a failed step.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Protocol

from tracer_assets.money import decimal_or_none
from tracer_assets.trading.decide import SignalEvent, order_request, stale_at_execution
from tracer_assets.trading.orders import Action, Mode, OrderTicket, client_order_id
from tracer_assets.trading.positions import Position
from tracer_assets.trading.risk import MarketRules, RiskLimits, RiskState, RiskVerdict, assess, capped
from tracer_assets.trading.store import OrderRow, PortfolioRow, TradingStore, order_row, portfolio_row


class ExecutionFailed(RuntimeError):
    """The step cannot go on safely (an order's fate unknown, live trading refused); what was
    recorded before it stays recorded, nothing more is sent."""


@dataclass(frozen=True)
class Intent:
    """An order to place: a decision's BUY/SELL, or a stop/target exit (`exit` says which)."""

    decision: Mapping  # the decision row, or {decision_id, symbol} for an exit
    side: str
    price: Decimal | None  # what the decision expected (its candle's close)
    stop: Decimal | None = None
    target: Decimal | None = None
    size: Decimal | None = None  # quote currency the decider asked for
    exit: str | None = None
    # A buy's exits as fractions of its fill price (the strategy decider), set when it fills.
    stop_fraction: Decimal | None = None
    target_fraction: Decimal | None = None
    trailing_stop: Decimal | None = None

    @classmethod
    def of_decision(cls, decision: Mapping) -> Intent:
        side = Action(decision["action"]).side

        def exit_level(name: str) -> Decimal | None:
            return decimal_or_none(decision.get(name)) if side == "buy" else None

        return cls(
            decision=decision,
            side=side,
            price=decimal_or_none(decision["price"]),
            stop=exit_level("stop_loss"),
            target=exit_level("take_profit"),
            size=decimal_or_none(decision["size_quote"]),
            stop_fraction=exit_level("stop_fraction"),
            target_fraction=exit_level("target_fraction"),
            trailing_stop=exit_level("trailing_stop"),
        )

    def ticket(self, cid: str, verdict: RiskVerdict, signal_storage_id: int) -> OrderTicket:
        """The order the risk manager approved (`verdict`), as a broker takes it."""
        return OrderTicket(
            cid, self.decision["symbol"], self.side, verdict.amount, verdict.price, self.stop, self.target,
            self.decision["decision_id"], signal_storage_id, self.stop_fraction, self.target_fraction,
            self.trailing_stop,
        )  # fmt: skip


@dataclass
class Settlement:
    """What a broker leaves when the orders are placed: its balance, marks and positions, and
    what it has to write with them."""

    quote_balance: Decimal
    marks: dict[str, Decimal]
    positions: Sequence[Position]
    order_updates: list[tuple] = field(default_factory=list)  # (status, price, fee, now, reason, cid)
    paper_state: dict | None = None
    facts: dict = field(default_factory=dict)  # for the step's metadata
    notes: list[str] = field(default_factory=list)  # warnings for the step's log


class Broker(Protocol):
    """A trading account the execution path can use: the paper account or the live one."""

    mode: Mode
    records_each_order: bool  # True: record an order as soon as it is placed (a live exchange holds it)
    order_fields: dict  # columns of its own every order row carries (blank until the broker fills them)

    def open(self, store: TradingStore) -> tuple[datetime, list[OrderRow]]:
        """Start: the account's clock, and the orders recorded on the way (reconcile)."""

    def market_rules(self, symbol: str) -> MarketRules: ...

    def risk_state(self, now: datetime) -> RiskState: ...

    def last_price(self, symbol: str) -> Decimal | None:
        """A price to size with when the decision has none."""

    def exits(self, store: TradingStore, event: SignalEvent) -> list[Intent]:
        """Sales of positions whose stop or target was touched, that the account does not make itself."""

    def refusal(self, symbol: str, price: Decimal) -> str | None:
        """Why this price must not be traded on now (a fresh ticker disagrees), else None."""

    def submit(self, ticket: OrderTicket, row: OrderRow) -> OrderRow:
        """Place the ticket; `row` (the order as sized) updated with what the broker made of it."""

    def recorded(self, row: OrderRow) -> None:
        """An order of this run is recorded (the next one's risk may depend on it)."""

    def settle(self, store: TradingStore, now: datetime, event: SignalEvent) -> Settlement: ...


@dataclass
class ExecutionOutcome:
    rows: list[OrderRow]  # orders recorded by this run: found on reconcile, then placed or refused
    settlement: Settlement
    portfolio: PortfolioRow


def execute(
    broker: Broker,
    store: TradingStore,
    event: SignalEvent,
    symbols: Sequence[str],
    limits: RiskLimits,
    run_id: str,
    config_hash: str,
) -> ExecutionOutcome:
    now, rows = broker.open(store)
    known = store.known_order_ids()  # the orders found on reconcile included: `open` recorded them
    decisions = store.decisions(event, symbols, acting_only=True)
    # Exits first: a position whose stop or target was touched is sold before anything new is bought.
    intents = [*broker.exits(store, event), *(Intent.of_decision(d) for d in decisions.iter_rows(named=True))]
    placed: list[OrderRow] = []
    for intent in intents:
        symbol = intent.decision["symbol"]
        cid = client_order_id(intent.decision["decision_id"], intent.side)
        if cid in known:  # this intent's order exists (recorded, or found on reconcile): never a second one
            continue
        known.add(cid)
        price = intent.price or broker.last_price(symbol)
        # A stop or target exit reduces risk: it goes whatever the signal's age or the ticker say.
        refusal = None
        if intent.exit is None:
            refusal = stale_at_execution(intent.decision, now) or (price and broker.refusal(symbol, price))
        verdict = None
        if price is not None and not refusal:
            verdict = assess(
                order_request(intent.decision, intent.side, price),
                broker.risk_state(now),
                capped(limits, intent.size),
                broker.market_rules(symbol),
            )
        row = order_row(cid, intent.decision, event, run_id, broker.mode, intent.side, now, config_hash, verdict)
        row.update(broker.order_fields)
        if refusal:
            row["reason"] = refusal
        elif verdict is not None and verdict.approved:
            row = broker.submit(intent.ticket(cid, verdict, event.storage_id), row)
            if intent.exit:
                row["reason"] = " / ".join(filter(None, [intent.exit, row["reason"]]))
        elif intent.exit:
            row["reason"] = f"{intent.exit}; refused: {row['reason']}"
        if broker.records_each_order:
            store.record_orders([row])  # at once: a crash after this line cannot lose the order
        broker.recorded(row)
        placed.append(row)
    settlement = broker.settle(store, now, event)
    portfolio = portfolio_row(
        settlement.positions, settlement.quote_balance, settlement.marks, now, run_id, event.storage_id, broker.mode
    )
    store.settle(
        broker.mode,
        settlement.positions,
        portfolio,
        new_orders=[] if broker.records_each_order else placed,
        order_updates=settlement.order_updates,
        paper_state=settlement.paper_state,
    )
    return ExecutionOutcome([*rows, *placed], settlement, portfolio)
