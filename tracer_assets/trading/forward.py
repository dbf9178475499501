"""The forward test: a window of candles replayed one candle at a time through the decision
job's own code: the strategy decider (`strategy_call.call_at`, `decide.strategy_decision`), the
execution path's intent and risk manager (`execution.Intent`, `risk.assess`) and the paper
broker, with no Dagster run per candle. Then the comparison with the backtest engine on the same
spec, parameters and candles (`compare_with_backtest`). The rules are written in
docs/trading.md ("Forward test"). Pure: no Dagster, no I/O.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

import polars as pl

from tracer_assets.market.timeframes import timeframe_seconds
from tracer_assets.money import to_decimal
from tracer_assets.research.backtest import candle_arrays, format_combo
from tracer_assets.research.engine import EXIT_REASON_NAMES, FillRules, simulate
from tracer_assets.trading.decide import exact_confidence, order_request, strategy_decision
from tracer_assets.trading.execution import Intent
from tracer_assets.trading.orders import Action, client_order_id
from tracer_assets.trading.paper import PaperBroker
from tracer_assets.trading.risk import MarketRules, RiskLimits, RiskState, assess, capped
from tracer_assets.trading.strategy_call import PickedStrategy, StrategySignals, call_at, strategy_signals

PRICE_TOLERANCE = 1e-9  # relative: the engine's float prices against the broker's exact ones

# Limits that never bind at the forward test's order sizes (`tracer forward --open-limits`): the
# replay then makes every trade the engine makes, which isolates the parity of the fill rules.
OPEN_LIMITS = RiskLimits(
    min_order_quote=Decimal(5),
    max_order_quote=Decimal(100),
    max_symbol_exposure_quote=Decimal(100),
    max_total_exposure_quote=Decimal(10_000),
    daily_loss_limit_quote=Decimal(10**9),
    loss_cooldown=timedelta(0),
    max_open_positions=100,
    daily_trade_limit=10**9,
)


@dataclass(frozen=True)
class ForwardSeries:
    """One symbol traded by one strategy on one timeframe. `candles` (ts, open, high, low, close,
    volume; oldest first) may start before the window: the earlier bars warm the indicators up."""

    symbol: str
    timeframe: str
    picked: PickedStrategy
    candles: pl.DataFrame
    win_rate: float | None = None  # the strategy's out-of-sample edge, for Kelly sizing
    payoff_ratio: float | None = None


@dataclass
class ForwardRun:
    start: datetime
    end: datetime
    broker: PaperBroker
    decisions: list[dict] = field(default_factory=list)  # every BUY and SELL (HOLDs are counted in `holds`)
    orders: list[dict] = field(default_factory=list)
    equity: list[dict] = field(default_factory=list)  # ts (a close), quote, positions value, equity
    holds: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    candles: int = 0  # candle x symbol steps replayed
    signals: dict[str, StrategySignals] = field(default_factory=dict)  # per symbol, over its candles
    first_bar: dict[str, int] = field(default_factory=dict)  # per symbol: its first bar in the window
    last_bar: dict[str, int] = field(default_factory=dict)

    def trades(self) -> pl.DataFrame:
        """One row per position the broker opened: entry and exit fills, fees, PnL, exit reason
        (None while open)."""
        fills = defaultdict(list)
        for fill in self.broker.fills:
            fills[fill.position_id].append(fill)
        rows = []
        for position in self.broker.position_history:
            entry = next(f for f in fills[position.position_id] if f.side == "buy")
            exit_ = next((f for f in fills[position.position_id] if f.side == "sell"), None)
            rows.append(
                {
                    "symbol": position.symbol,
                    "entry_ts": entry.ts,
                    "exit_ts": exit_.ts if exit_ else None,
                    "amount": entry.amount,
                    "entry_price": entry.price,
                    "exit_price": exit_.price if exit_ else None,
                    "entry_fee": entry.fee,
                    "exit_fee": exit_.fee if exit_ else None,
                    "exit_reason": exit_.reason if exit_ else None,
                    "realized_pnl": position.realized_pnl if exit_ else None,
                }
            )
        return pl.DataFrame(rows, schema=TRADE_SCHEMA, strict=False)


TRADE_SCHEMA = {
    "symbol": pl.String,
    "entry_ts": pl.Datetime("us", "UTC"),
    "exit_ts": pl.Datetime("us", "UTC"),
    "amount": pl.Decimal(38, 18),
    "entry_price": pl.Decimal(38, 18),
    "exit_price": pl.Decimal(38, 18),
    "entry_fee": pl.Decimal(38, 18),
    "exit_fee": pl.Decimal(38, 18),
    "exit_reason": pl.String,
    "realized_pnl": pl.Decimal(38, 18),
}


@dataclass(frozen=True)
class _Prepared:
    series: ForwardSeries
    computed: StrategySignals
    ts: list[datetime]
    prices: list[tuple[Decimal, Decimal, Decimal, Decimal]]
    step: timedelta


def forward_test(
    series: Sequence[ForwardSeries],
    start: datetime,
    end: datetime,
    broker: PaperBroker,
    limits: RiskLimits,
    market_rules: Callable[[str], MarketRules],
    order_amount: Decimal,
    progress: Callable[[int, int], None] | None = None,
) -> ForwardRun:
    """Replay every candle opening in [start, end), in time order over all series: the broker
    fills and watches exits on the candle, then the strategy decides at its close and the risk
    manager sizes what it asks for; an approved order fills at the next candle's open."""
    run = ForwardRun(start, end, broker)
    prepared = [_prepare(s) for s in series]
    run.signals = {p.series.symbol: p.computed for p in prepared}
    steps: dict[datetime, list[tuple[_Prepared, int]]] = defaultdict(list)
    for p in prepared:
        for i, ts in enumerate(p.ts):
            if start <= ts < end:
                steps[ts].append((p, i))
                run.first_bar.setdefault(p.series.symbol, i)
                run.last_bar[p.series.symbol] = i
    total = sum(len(v) for v in steps.values())
    for ts in sorted(steps):
        due = sorted(steps[ts], key=lambda item: item[0].series.symbol)
        for p, i in due:
            broker.on_candle(p.series.symbol, ts, *p.prices[i])
        for p, i in due:
            _decide(run, p, i, limits, market_rules, order_amount)
        run.candles += len(due)
        close = ts + min(p.step for p, _ in due)
        marks = {s: seen[1] for s in broker.positions if (seen := broker.last_candle(s)) is not None}
        positions_value = sum((p.amount * marks[s] for s, p in broker.positions.items()), Decimal(0))
        quote = broker.balances[broker.quote_currency]
        run.equity.append({"ts": close, "quote": quote, "positions_value": positions_value})
        if progress is not None:
            progress(run.candles, total)
    return run


def _prepare(series: ForwardSeries) -> _Prepared:
    candles = series.candles.sort("ts")
    computed = strategy_signals(series.picked.spec, series.picked.combo, candle_arrays(candles))
    prices = [
        tuple(to_decimal(v, f"{series.symbol} {name}") for v, name in zip(row, ("open", "high", "low", "close")))
        for row in candles.select("open", "high", "low", "close").iter_rows()
    ]
    step = timedelta(seconds=timeframe_seconds(series.timeframe))
    return _Prepared(series, computed, candles["ts"].to_list(), prices, step)


def _decide(
    run: ForwardRun,
    p: _Prepared,
    i: int,
    limits: RiskLimits,
    market_rules: Callable[[str], MarketRules],
    order_amount: Decimal,
) -> None:
    symbol, broker = p.series.symbol, run.broker
    now = p.ts[i] + p.step  # the decision is taken at the candle's close
    call = call_at(p.computed, i, symbol in broker.positions)
    decision = strategy_decision(symbol, p.series.timeframe, p.series.picked, call, p.prices[i][3])
    if decision.action is Action.HOLD:
        run.holds[symbol] += 1
        return
    decision_id = f"forward:{symbol}:{now.isoformat()}"
    row = {
        "decision_id": decision_id,
        "ts": p.ts[i],
        "decided_at": now,
        "symbol": symbol,
        "timeframe": decision.timeframe,
        "action": decision.action.value,
        "confidence": exact_confidence(decision.confidence),
        "reason": decision.reason,
        "price": decision.price,
        "stop_loss": None,
        "take_profit": None,
        "size_quote": order_amount,
        "stop_fraction": decision.stop_fraction,
        "target_fraction": decision.target_fraction,
        "trailing_stop": decision.trailing_stop,
        "strategy_id": decision.strategy_id,
        "strategy_parameters": decision.strategy_parameters,
        "win_rate": p.series.win_rate,
        "payoff_ratio": p.series.payoff_ratio,
    }
    run.decisions.append(row)
    intent = Intent.of_decision(row)
    cid = client_order_id(decision_id, intent.side)
    state = RiskState.from_history(broker.position_history, now, broker.available(broker.quote_currency))
    verdict = assess(
        order_request(row, intent.side, intent.price), state, capped(limits, intent.size), market_rules(symbol)
    )
    order = {"client_order_id": cid, "decision_id": decision_id, "ts": now, "symbol": symbol, "side": intent.side}
    if not verdict.approved:
        run.orders.append({**order, "status": "rejected", "amount": None, "reason": verdict.reason})
        return
    placed = broker.submit(intent.ticket(cid, verdict, 0), now)
    run.orders.append({**order, "status": placed.status, "amount": placed.amount, "reason": placed.reason})


# --- what a user reads ------------------------------------------------------------------------


def equity_curve(run: ForwardRun) -> pl.DataFrame:
    rows = [{"ts": r["ts"], "equity": r["quote"] + r["positions_value"]} for r in run.equity]
    return pl.DataFrame(rows, schema={"ts": pl.Datetime("us", "UTC"), "equity": pl.Decimal(38, 18)})


def max_drawdown(values: Sequence[Decimal]) -> float:
    """Largest fall from a running peak, a positive fraction of that peak (0.0 when none)."""
    peak, worst = None, 0.0
    for value in values:
        peak = value if peak is None or value > peak else peak
        if peak > 0:
            worst = max(worst, float((peak - value) / peak))
    return worst


def buy_and_hold(series: Sequence[ForwardSeries], run: ForwardRun) -> dict[str, float]:
    """Per symbol: the return of buying at the window's first open and holding to its last close."""
    returns = {}
    for s in series:
        first, last = run.first_bar.get(s.symbol), run.last_bar.get(s.symbol)
        if first is None:
            continue
        candles = s.candles.sort("ts")
        returns[s.symbol] = float(candles["close"][last]) / float(candles["open"][first]) - 1
    return returns


def summary(run: ForwardRun, series: Sequence[ForwardSeries], initial: Decimal) -> dict:
    curve = equity_curve(run)
    values = curve["equity"].to_list() or [initial]
    trades = run.trades()
    closed = trades.filter(pl.col("exit_ts").is_not_null())
    wins = closed.filter(pl.col("realized_pnl") > 0).height
    holds = buy_and_hold(series, run)
    final = values[-1]
    fees = sum((f.fee for f in run.broker.fills), Decimal(0))
    return {
        "start": run.start.isoformat(),
        "end": run.end.isoformat(),
        "candles": run.candles,
        "initial_equity": str(initial),
        "final_equity": str(final),
        "pnl": str(final - initial),
        "return": float(final / initial - 1),
        "max_drawdown": max_drawdown([initial, *values]),
        "trades_closed": closed.height,
        "trades_open": trades.height - closed.height,
        "win_rate": wins / closed.height if closed.height else None,
        "fees": str(fees),
        "orders": len(run.orders),
        "orders_refused": sum(o["status"] == "rejected" for o in run.orders),
        "holds": dict(run.holds),
        "buy_and_hold": holds,
        "buy_and_hold_mean": sum(holds.values()) / len(holds) if holds else None,
        "strategies": {
            s.symbol: f"{s.timeframe} {s.picked.strategy_id} {s.picked.spec.name} {format_combo(s.picked.combo)}"
            for s in series
        },
    }


# --- parity with the backtest engine -----------------------------------------------------------


def backtest_trades(s: ForwardSeries, run: ForwardRun, rules: FillRules) -> pl.DataFrame:
    """The engine's trades of the same spec, parameters and candles over the window's bars (the
    signals the replay computed over the warm-up too, read again here)."""
    first, last = run.first_bar.get(s.symbol), run.last_bar.get(s.symbol)
    if first is None:
        return pl.DataFrame()
    candles = s.candles.sort("ts")
    arrays = candle_arrays(candles)
    signals = run.signals[s.symbol].signals
    window = slice(first, last + 1)
    result = simulate(
        *(arrays[c][window] for c in ("open", "high", "low", "close")),
        signals.entries[window],
        signals.exits[window],
        signals.stop_loss,
        signals.take_profit,
        signals.trailing_stop,
        rules=rules,
    )
    ts = candles["ts"].to_list()[window]
    fee = rules.fee
    return pl.DataFrame(
        {
            "symbol": [s.symbol] * len(result.entry_idx),
            "entry_ts": [ts[int(k)] for k in result.entry_idx],
            "exit_ts": [ts[int(k)] for k in result.exit_idx],
            "entry_price": result.entry_price,
            "exit_price": result.exit_price,
            "entry_fee_per_unit": result.entry_price * fee,
            "exit_fee_per_unit": result.exit_price * fee,
            "exit_reason": [EXIT_REASON_NAMES[int(r)] for r in result.exit_reason],
        },
        schema_overrides={"entry_ts": pl.Datetime("us", "UTC"), "exit_ts": pl.Datetime("us", "UTC")},
    )


@dataclass(frozen=True)
class Parity:
    rows: pl.DataFrame  # one per backtest trade (and per forward-only trade): what matched, what differs
    matched: int  # backtest trades the forward test made identically
    compared: int  # backtest trades that closed inside the window before the data ended


def compare_with_backtest(series: Sequence[ForwardSeries], run: ForwardRun, rules: FillRules) -> Parity:
    """Trade by trade: entry and exit candles, fill prices, fees per unit (fee rate x price, to
    PRICE_TOLERANCE) and exit reasons. The sizes differ by design (the engine commits a fraction
    of its equity; the risk manager sizes in quote currency within its limits), and a trade the
    engine closes at the end of the data stays open in the forward test: both are named."""
    forward = run.trades()
    refusals = {(o["symbol"], o["ts"]): o["reason"] for o in run.orders if o["status"] == "rejected"}
    rows, matched, compared = [], 0, 0
    seen = set()
    for s in series:
        engine = backtest_trades(s, run, rules)
        mine = {r["entry_ts"]: r for r in forward.filter(pl.col("symbol") == s.symbol).iter_rows(named=True)}
        for trade in engine.iter_rows(named=True):
            other = mine.get(trade["entry_ts"])
            seen.add((s.symbol, trade["entry_ts"]))
            if trade["exit_reason"] == "end_of_data":
                note = "the backtest sells at the last close (end_of_data); the forward test keeps it open"
                if other is None or other["exit_ts"] is not None:
                    note = "end_of_data in the backtest; " + ("not bought" if other is None else "closed")
                rows.append(_parity_row(trade, other, None, note))
                continue
            compared += 1
            if other is None:
                # The order was decided at the previous close, the entry candle's open.
                refused = refusals.get((s.symbol, trade["entry_ts"]))
                why = f"refused by the risk manager: {refused}" if refused else "no forward trade at this entry"
                rows.append(_parity_row(trade, None, False, why))
                continue
            differences = _differences(trade, other)
            ok = not differences
            matched += ok
            note = "; ".join(differences) if differences else _sizing_note(trade, other)
            rows.append(_parity_row(trade, other, ok, note))
        for entry_ts, other in mine.items():
            if (s.symbol, entry_ts) not in seen:
                rows.append(_parity_row(None, other, False, "the forward test traded where the backtest did not"))
    return Parity(pl.DataFrame(rows, schema=PARITY_SCHEMA, strict=False), matched, compared)


PARITY_SCHEMA = {
    "symbol": pl.String,
    "entry_ts": pl.Datetime("us", "UTC"),
    "exit_ts": pl.Datetime("us", "UTC"),
    "backtest_exit_ts": pl.Datetime("us", "UTC"),
    "exit_reason": pl.String,
    "backtest_exit_reason": pl.String,
    "entry_price": pl.Float64,
    "backtest_entry_price": pl.Float64,
    "exit_price": pl.Float64,
    "backtest_exit_price": pl.Float64,
    "identical": pl.Boolean,
    "note": pl.String,
}


def _parity_row(trade: Mapping | None, other: Mapping | None, identical: bool | None, note: str) -> dict:
    both = trade or other
    return {
        "symbol": both["symbol"],
        "entry_ts": both["entry_ts"],
        "exit_ts": other["exit_ts"] if other else None,
        "backtest_exit_ts": trade["exit_ts"] if trade else None,
        "exit_reason": other["exit_reason"] if other else None,
        "backtest_exit_reason": trade["exit_reason"] if trade else None,
        "entry_price": _float(other["entry_price"]) if other else None,
        "backtest_entry_price": trade["entry_price"] if trade else None,
        "exit_price": _float(other["exit_price"]) if other else None,
        "backtest_exit_price": trade["exit_price"] if trade else None,
        "identical": identical,
        "note": note,
    }


def _float(value: Decimal | None) -> float | None:
    return None if value is None else float(value)


def _close(a: float, b: Decimal | None) -> bool:
    return b is not None and math.isclose(a, float(b), rel_tol=PRICE_TOLERANCE, abs_tol=0.0)


def _differences(trade: Mapping, other: Mapping) -> list[str]:
    found = []
    if other["exit_ts"] != trade["exit_ts"]:
        found.append(f"exit candle {other['exit_ts']} vs the backtest's {trade['exit_ts']}")
    if other["exit_reason"] != trade["exit_reason"]:
        found.append(f"exit reason {other['exit_reason']} vs {trade['exit_reason']}")
    if not _close(trade["entry_price"], other["entry_price"]):
        found.append(f"entry price {other['entry_price']} vs {trade['entry_price']!r}")
    if not _close(trade["exit_price"], other["exit_price"]):
        found.append(f"exit price {other['exit_price']} vs {trade['exit_price']!r}")
    for side in ("entry", "exit"):
        fee = other[f"{side}_fee"]
        per_unit = None if fee is None else fee / other["amount"]
        if not _close(trade[f"{side}_fee_per_unit"], per_unit):
            found.append(f"{side} fee per unit {per_unit} vs {trade[f'{side}_fee_per_unit']!r}")
    return found


def _sizing_note(trade: Mapping, other: Mapping) -> str:
    spent = other["amount"] * other["entry_price"] + other["entry_fee"]
    return f"identical; sized by the risk manager at {spent:.2f} quote (the engine commits a fraction of its equity)"
