"""The two `Broker`s of the execution path (`execution.py`), each a broker bound to its store:

- `PaperAccount`: the exact paper broker (`paper.py`), restored from its last snapshot, fed the
  base candles stored since, sizing against the exchange's market rules (the replay exchange's
  Binance-like ones offline, the real exchange's in DRY mode on a real exchange); it fills and
  watches stops and targets itself, candle by candle, and its orders, state, positions and
  portfolio are written in one transaction at the end.
- `LiveAccount`: the ccxt live broker (`live.py`) on a real exchange, reconciled on start, its
  positions rebuilt from the recorded executions (`live_book.py`), stops and targets watched on
  the stored candles, each order recorded as soon as the exchange answers.

Pure but for the store: no Dagster.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import polars as pl

from tracer_assets.money import decimal_or_none
from tracer_assets.trading.decide import SignalEvent, decision_id
from tracer_assets.trading.execution import ExecutionFailed, Intent, Settlement
from tracer_assets.trading.live import (
    ExchangeOrder,
    LiveBroker,
    LiveTradingRefused,
    OrderStateUnknown,
    RecordedOrder,
)
from tracer_assets.trading.live_book import Execution, book_positions, exit_trigger
from tracer_assets.trading.orders import Mode, OrderTicket
from tracer_assets.trading.paper import PaperBroker
from tracer_assets.trading.risk import MarketRules, RiskState
from tracer_assets.trading.state import dump_broker, load_broker
from tracer_assets.trading.store import QUOTE, OrderRow, TradingStore

# Replay has no exchange filters: amounts to 1e-8, prices to 1e-8, and Binance's 5 USDT
# minimum notional, so a paper order on replay is never one a real exchange would refuse.
REPLAY_MARKET = dict(
    amount_step=Decimal("1e-8"), price_tick=Decimal("1e-8"), min_amount=None, max_amount=None, min_cost=Decimal(5)
)
# How far back reconcile reads each symbol's orders; older pending records are looked up by id.
RECONCILE_WINDOW = timedelta(days=7)


def new_paper_broker(settings) -> PaperBroker:
    """The paper account before its first run: SIM_QUOTE_BALANCE, and SIM_BASE_BALANCE of each base."""
    bases = (
        {s.split("/")[0]: settings.trading.sim_base_balance for s in settings.market.symbols}
        if settings.trading.sim_base_balance
        else {}
    )
    return PaperBroker(
        QUOTE, settings.trading.sim_quote_balance, bases, settings.trading.fee_rate, settings.trading.slippage_bps
    )


def paper_broker(store: TradingStore, settings) -> PaperBroker:
    """The paper broker as its last run left it."""
    state = store.paper_state()
    return load_broker(state) if state is not None else new_paper_broker(settings)


class PaperAccount:
    mode = Mode.DRY
    records_each_order = False  # with the broker's state, in one transaction: never one without the other
    order_fields: dict = {}

    def __init__(
        self, settings, clock: Callable[[], datetime], market_rules: Callable[[str], MarketRules | None], run_id: str
    ):
        self.settings = settings
        self._clock = clock
        self._exchange_rules = market_rules
        self.broker: PaperBroker | None = None
        self._open_before: set[str] = set()
        self._later: pl.DataFrame | None = None
        self.fills = 0
        self.run_id = run_id

    def open(self, store: TradingStore) -> tuple[datetime, list[OrderRow]]:
        now = self._clock()
        self.broker = paper_broker(store, self.settings)
        # Only these orders can change status in this run (older ones are settled).
        self._open_before = {o.client_order_id for o in self.broker.orders if o.status == "pending"}
        candles = self._new_candles(store, now)
        self.fills += self._feed(candles.filter(pl.col("ts") < now))
        self._later = candles.filter(pl.col("ts") >= now)
        return now, []

    def market_rules(self, symbol: str) -> MarketRules:
        return self._exchange_rules(symbol) or MarketRules(symbol=symbol, **REPLAY_MARKET)

    def risk_state(self, now: datetime) -> RiskState:
        return RiskState.from_history(self.broker.position_history, now, self.broker.available(QUOTE))

    def last_price(self, symbol: str) -> Decimal | None:
        seen = self.broker.last_candle(symbol)
        return seen[1] if seen is not None else self.settings.trading.sim_price

    def exits(self, store: TradingStore, event: SignalEvent) -> list[Intent]:
        return []  # the paper broker fills stops and targets itself, candle by candle

    def refusal(self, symbol: str, price: Decimal) -> str | None:
        return None

    def submit(self, ticket: OrderTicket, row: OrderRow) -> OrderRow:
        order = self.broker.submit(ticket, row["ts"])
        self._open_before.add(order.client_order_id)
        return {**row, "status": order.status, "reason": order.reason or row["reason"]}

    def recorded(self, row: OrderRow) -> None:
        pass

    def settle(self, store: TradingStore, now: datetime, event: SignalEvent) -> Settlement:
        self.fills += self._feed(self._later)
        updates = []
        for cid in sorted(self._open_before):
            order = self.broker.order(cid)
            updates.append((order.status, order.fill_price, order.fee, now, order.reason, order.client_order_id))
        marks = {s: seen[1] for s in self.settings.market.symbols if (seen := self.broker.last_candle(s)) is not None}
        return Settlement(
            quote_balance=self.broker.balances.get(QUOTE, Decimal(0)),
            marks=marks,
            positions=self.broker.position_history,
            order_updates=updates,
            paper_state={
                "saved_at": now,
                "run_id": self.run_id,
                "signal_storage_id": event.storage_id,
                "state": dump_broker(self.broker),
            },  # fmt: skip
            facts={"fills": self.fills, "open": len(self.broker.positions)},
        )

    def _new_candles(self, store: TradingStore, now: datetime) -> pl.DataFrame:
        """Base candles the broker has not seen yet, oldest first. For a symbol it has never seen,
        from its oldest pending order (that order's next open), else from `now`: before that there
        is nothing of the broker's own to fill or watch."""
        pending: dict[str, datetime] = {}
        for order in self.broker.orders:
            if order.status == "pending":
                pending[order.symbol] = min(order.submitted_at, pending.get(order.symbol, order.submitted_at))
        frames = []
        for symbol in self.settings.market.symbols:
            seen = self.broker.last_candle(symbol)
            if seen is not None:
                frames.append(store.candles_since(symbol, seen[0], inclusive=False))
            else:
                frames.append(store.candles_since(symbol, pending.get(symbol, now)))
        return pl.concat(frames).sort("ts", "symbol")

    def _feed(self, candles: pl.DataFrame) -> int:
        fills = 0
        for symbol, ts, o, h, low, c in candles.iter_rows():
            fills += len(self.broker.on_candle(symbol, ts, o, h, low, c))
        return fills


class LiveAccount:
    mode = Mode.LIVE
    records_each_order = True  # the exchange holds it: the record must follow at once
    # What the exchange reports of an order, blank until it has answered.
    order_fields = {"exchange_order_id": None, "filled": Decimal(0), "fee_currency": None}

    def __init__(self, settings, client, config_hash: str, run_id: str, log: Callable[[str], None]):
        self.settings = settings
        self._client = client
        self._config_hash = config_hash
        self._run_id = run_id
        self._log = log
        self.broker: LiveBroker | None = None
        self._markets: dict[str, MarketRules] = {}
        self._dust: dict[str, Decimal] = {}
        self._book = None
        self._free_quote = Decimal(0)
        self._closes: dict[str, Decimal] = {}
        self._store: TradingStore | None = None
        self.reconciled = 0

    def open(self, store: TradingStore) -> tuple[datetime, list[OrderRow]]:
        try:
            self.broker = LiveBroker(self._client, self.settings.trading, allowed=True)
        except LiveTradingRefused as exc:
            raise ExecutionFailed(f"{exc}; nothing was sent") from exc
        exchange = self.broker.exchange
        self._store = store
        now = self.broker.now()  # the exchange's clock: its order times, the reconcile window and signal ages
        ours = store.decided_intents()
        recorded = [RecordedOrder(*row) for row in store.recorded_orders(self.mode)]
        try:
            found = self.broker.reconcile(
                self.settings.market.symbols, recorded, since=now - RECONCILE_WINDOW, ours=ours.__contains__
            )
        except OrderStateUnknown as exc:
            raise ExecutionFailed(f"reconciling with {exchange.id} failed, nothing was sent: {exc}") from exc
        rows = []
        for order in found.unrecorded:
            decided, sent_for = ours[order.client_order_id]
            reason = f"found at {exchange.id} on reconcile: sent by a run that stopped before recording it"
            rows.append(self._row(order, decided, sent_for, now, reason))
            store.record_orders(rows[-1:])
        for order in found.changed:
            store.update_order(order, now)
        for cid in found.missing:
            store.mark_canceled(cid, now, f"unknown to {exchange.id} on reconcile: it never arrived")
        if found.foreign:
            self._log(
                f"reconcile with {exchange.id}: {len(found.foreign)} order(s) carry this prefix "
                "but derive from no decision of this deployment (another instance or machine sent them); "
                f"not adopted: {', '.join(found.foreign[:5])}"
            )
        if found.unrecorded or found.changed or found.missing:
            self._log(
                f"reconcile with {exchange.id}: {len(found.unrecorded)} order(s) recorded that were sent but "
                f"not recorded, {len(found.changed)} updated, {len(found.missing)} unknown to the exchange"
            )
        self.reconciled = len(found.unrecorded) + len(found.changed) + len(found.missing)
        self._markets = {
            symbol: MarketRules.from_ccxt_market(exchange.market(symbol), exchange.precisionMode)
            for symbol in self.settings.market.symbols
        }
        self._dust = {s: rules.min_amount or rules.amount_step or Decimal(0) for s, rules in self._markets.items()}
        self._book = self._rebook()
        self._free_quote = found.free.get(QUOTE, Decimal(0))
        self._closes = store.last_closes(self.settings.market.symbols)
        return now, rows

    def market_rules(self, symbol: str) -> MarketRules:
        return self._markets[symbol]

    def risk_state(self, now: datetime) -> RiskState:
        return RiskState.from_history(self._book.positions, now, self._free_quote)

    def last_price(self, symbol: str) -> Decimal | None:
        return self._closes.get(symbol)

    def exits(self, store: TradingStore, event: SignalEvent) -> list[Intent]:
        intents = []
        for symbol, position in self._book.open_positions.items():
            candles = store.candles_since(symbol, position.opened_at)
            touched = [
                (ts, decimal_or_none(h), decimal_or_none(low))
                for ts, h, low in candles.select("ts", "high", "low").iter_rows()
            ]
            trigger = exit_trigger(position, touched)
            if trigger is not None:
                reason, at = trigger
                intents.append(Intent(
                    decision={"decision_id": decision_id(event, symbol), "symbol": symbol},
                    side="sell", price=self._closes.get(symbol),
                    exit=f"{reason} touched by the candle at {at.isoformat()}: market sell",
                ))  # fmt: skip
        return intents

    def refusal(self, symbol: str, price: Decimal) -> str | None:
        """Too far from the exchange's last traded price right now (a bad candle, a stale price),
        or no ticker to compare it with."""
        last, why_none = self.broker.last_price(symbol)
        if last is None:
            return f"no fresh ticker to check the decision's price {price} against ({why_none}): not sent"
        deviation = abs(price - last) / last
        limit = self.settings.trading.max_price_deviation
        if deviation > limit:
            return (
                f"the decision's price {price} is {deviation:.2%} away from the ticker's last price {last} "
                f"(limit {limit:.2%}, TRACER_MAX_PRICE_DEVIATION): not sent"
            )
        return None

    def submit(self, ticket: OrderTicket, row: OrderRow) -> OrderRow:
        try:
            order = self.broker.submit(ticket)
        except OrderStateUnknown as exc:
            raise ExecutionFailed(f"{exc}. Nothing more was sent; what this run placed before it is recorded.") from exc
        placed = {
            **row,
            **self._row(order, ticket.decision_id, None, row["ts"], order.reason or row["reason"]),
            "signal_storage_id": row["signal_storage_id"],
            "signal_run_id": row["signal_run_id"],
            "risk_checks": row["risk_checks"],
        }
        return placed

    def recorded(self, row: OrderRow) -> None:
        if row["filled"]:
            self._book = self._rebook()  # the next order's risk sees this one's position
            if row["side"] == "buy":  # and the cash it took (a sale's proceeds are not counted on: conservative)
                fee = row["fee"] if row["fee_currency"] == QUOTE else 0
                self._free_quote -= row["filled"] * row["price"] + fee

    def settle(self, store: TradingStore, now: datetime, event: SignalEvent) -> Settlement:
        return Settlement(
            quote_balance=self.broker.balances().get(QUOTE, Decimal(0)),
            marks=self._closes,
            positions=self._book.positions,
            facts={"reconciled": self.reconciled, "open": len(self._book.open_positions)},
            notes=list(self._book.notes),
        )

    def _rebook(self):
        """The live positions, replayed from every recorded live execution (exits from the buy's decision)."""
        executions = [
            Execution(
                cid,
                symbol,
                side,
                filled,
                price,
                fee,
                fee_currency,
                ts.astimezone(UTC),
                *(decimal_or_none(level) for level in levels),
            )  # fmt: skip
            for cid, symbol, side, filled, price, fee, fee_currency, ts, *levels in self._store.live_executions(
                self.mode
            )
        ]
        return book_positions(executions, self._dust)

    def _row(self, order: ExchangeOrder, decision: str, event: SignalEvent | None, now: datetime, reason) -> OrderRow:
        """An order as the exchange reported it, in trading.orders' shape: `amount` what was asked
        for, `filled` what executed, `price` the average fill price."""
        return {
            "client_order_id": order.client_order_id,
            "decision_id": decision,
            "signal_storage_id": event.storage_id if event else None,
            "signal_run_id": event.run_id if event else None,
            "run_id": self._run_id,
            "mode": self.mode,
            "symbol": order.symbol,
            "side": order.side,
            "amount": order.amount,
            "price": order.average_price,
            "status": order.status,
            "fee": order.fee,
            "ts": order.ts or now,
            "updated_at": now,
            "reason": reason,
            "risk_checks": "[]",
            "config_hash": self._config_hash,
            "exchange_order_id": order.exchange_order_id,
            "filled": order.filled,
            "fee_currency": order.fee_currency,
        }
