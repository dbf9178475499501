"""What to do about a new signal, per symbol: the macro selection, then the strategy or the
rules decider.

Pure (no Dagster, no I/O). The decisions asset feeds it the new `signals.signals` rows, the
backtest stats per symbol and timeframe, the newest indicators and what is held.

The macro selection (the macro orchestrator's rule), per symbol over the configured timeframes:
a timeframe is a candidate when its backtest stats read as a `Bull` regime
(`research.macro.regime_from_stats` against MACRO_MIN_WIN_RATE) AND its ensemble label is one the
decider enters on: `strong_bull` for the rules decider, whose trigger the label is; any label
but `bear` and `strong_bear` for the strategy decider, whose trigger is the strategy's entry rule
(`ENTRY_LABELS`). Among candidates the one whose stats have the highest total PnL wins. No
candidate: HOLD, with the reason of every timeframe recorded.

The strategy decider (TRACER_DECIDER=strategy; `strategy_decision`), on the winning timeframe:
the kept strategy with the best out-of-sample score of the symbol on it (`strategy_call.
pick_strategy`) is read at the newest closed candle: its entry gives BUY with the spec's stop-loss,
take-profit and trailing stop as fractions of the fill price (the backtester's levels); held, the
strategy that bought the position is read on its timeframe and its exit gives SELL.

The rules decider (TRACER_DECIDER=rules), on the winning timeframe's signal:
- BUY when nothing is held in the symbol, signal_quality >= TB_MIN_SIGNAL_QUALITY and
  conviction >= TB_MIN_CONVICTION_SCORE; stop-loss 2 ATR below the price, take-profit 3 ATR
  above it (ATR 14 of that timeframe), confidence = conviction / 10.
- SELL (close the long) when the symbol is held and the ensemble label of the timeframe it was
  bought on (else the base timeframe) turned `bear` or `strong_bear`, whatever the selection.
- HOLD otherwise, with the reason.
"""

from __future__ import annotations

import math
import uuid
from bisect import bisect_right
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

import numpy as np

from tracer_assets.market.timeframes import timeframe_seconds
from tracer_assets.money import decimal_or_none
from tracer_assets.research.backtest import format_combo
from tracer_assets.research.macro import regime_from_stats
from tracer_assets.research.spec import StrategySpec
from tracer_assets.trading.orders import Action
from tracer_assets.trading.risk import OrderRequest
from tracer_assets.trading.strategy_call import (
    PickedStrategy,
    StrategyCall,
    parse_combo,
    pick_strategy,
    strategy_call,
)
from tracer_assets.vocabulary import BEAR, BULL, OTHER, STRONG_BEAR, STRONG_BULL

STOP_ATR = Decimal(2)
TARGET_ATR = Decimal(3)
BEARISH = (BEAR, STRONG_BEAR)
# The ensemble labels on which a timeframe can be selected, per decider: the rules decider enters
# on the label itself; the strategy decider enters on its strategy's rule and the label only
# guards against buying into a bearish ensemble.
ENTRY_LABELS = {"rules": (STRONG_BULL,), "llm": (STRONG_BULL,), "strategy": (STRONG_BULL, BULL, OTHER)}
_DECISION_NAMESPACE = uuid.UUID("6f1c2a5e-3b7d-4c1e-9a53-8d0e2f4b7a19")


@dataclass(frozen=True)
class SignalEvent:
    """One materialization of signals/signals: its storage id, which restarts at 1 in every
    Dagster instance, and the id of the run that made it, a UUID unique across instances."""

    storage_id: int
    run_id: str


def decision_id(event: SignalEvent, symbol: str) -> str:
    """The same signal event and symbol always give the same id, so a re-run finds its decision;
    another instance's event with the same storage id gives another id (its run id differs)."""
    return str(uuid.uuid5(_DECISION_NAMESPACE, f"{event.run_id}:{event.storage_id}:{symbol}"))


@dataclass(frozen=True)
class Selection:
    symbol: str
    timeframe: str | None  # the winner, or None: HOLD
    reasons: dict[str, str] = field(default_factory=dict)  # timeframe -> why it is or is not a candidate

    @property
    def reason(self) -> str:
        return "; ".join(f"{tf}: {why}" for tf, why in self.reasons.items())


@dataclass(frozen=True)
class Decision:
    symbol: str
    timeframe: str | None
    action: Action
    confidence: float
    reason: str
    price: Decimal | None = None
    stop_loss: Decimal | None = None
    take_profit: Decimal | None = None
    size_quote: Decimal | None = None
    # The strategy decider's: exits as fractions of the fill price, and which strategy decided.
    stop_fraction: Decimal | None = None
    target_fraction: Decimal | None = None
    trailing_stop: Decimal | None = None
    strategy_id: str | None = None
    strategy_parameters: str | None = None


def macro_selection(
    symbol: str,
    signals_by_timeframe: Mapping[str, Mapping],
    stats_by_timeframe: Mapping[str, Mapping],
    timeframes: Sequence[str],
    min_win_rate: float,
    entry_labels: Collection[str] = (STRONG_BULL,),
) -> Selection:
    reasons: dict[str, str] = {}
    candidates: list[tuple[float, str]] = []
    for timeframe in timeframes:
        signal = signals_by_timeframe.get(timeframe)
        stats = stats_by_timeframe.get(timeframe)
        if signal is None:
            reasons[timeframe] = "no signal"
            continue
        if stats is None:
            reasons[timeframe] = "no backtest stats"
            continue
        regime = regime_from_stats(stats, min_win_rate)
        label = signal["ensemble_label"]
        described = (
            f"backtest regime {regime} (totalPNL {stats.get('totalPNL'):.2f}, "
            f"winRate {_rate(stats.get('winRate'))}), ensemble {label}"
        )
        if regime != "Bull" or label not in entry_labels:
            reasons[timeframe] = f"not a candidate: {described}"
            continue
        reasons[timeframe] = f"candidate: {described}"
        candidates.append((float(stats["totalPNL"]), timeframe))
    if not candidates:
        return Selection(symbol, None, reasons)
    # Highest total PnL wins; ties go to the first configured timeframe (max keeps the first).
    best = max(candidates, key=lambda c: c[0])[1]
    reasons[best] = reasons[best].replace("candidate:", "selected:", 1)
    return Selection(symbol, best, reasons)


def rules_decision(
    selection: Selection,
    signals_by_timeframe: Mapping[str, Mapping],
    indicators_by_timeframe: Mapping[str, Mapping],
    prices: Mapping[str, Decimal],
    held_timeframe: str | None,
    base_timeframe: str,
    min_signal_quality: float,
    min_conviction: float,
) -> Decision:
    """`held_timeframe`: the timeframe the open position was bought on, "" if unknown, None if flat."""
    symbol = selection.symbol
    if held_timeframe is not None:
        watched = held_timeframe if held_timeframe in signals_by_timeframe else base_timeframe
        signal = signals_by_timeframe.get(watched)
        if signal is not None and signal["ensemble_label"] in BEARISH:
            return Decision(
                symbol,
                watched,
                Action.SELL,
                _confidence(signal),
                f"held, and the {watched} ensemble label turned {signal['ensemble_label']}",
                price=prices.get(watched),
            )
        return Decision(symbol, watched, Action.HOLD, 0.0, f"held; {watched} label not bearish; {selection.reason}")
    if selection.timeframe is None:
        return Decision(symbol, None, Action.HOLD, 0.0, f"no timeframe selected: {selection.reason}")
    timeframe = selection.timeframe
    signal = signals_by_timeframe[timeframe]
    quality, conviction = float(signal["signal_quality"]), float(signal["conviction"])
    if quality < min_signal_quality or conviction < min_conviction:
        return Decision(
            symbol,
            timeframe,
            Action.HOLD,
            0.0,
            f"{timeframe} selected but signal_quality {quality:.2f} (min {min_signal_quality:g}) or "
            f"conviction {conviction:.2f} (min {min_conviction:g}) too low",
        )
    price = prices.get(timeframe)
    atr = decimal_or_none(indicators_by_timeframe.get(timeframe, {}).get("atr_14"))
    if price is None or atr is None or atr <= 0:
        return Decision(symbol, timeframe, Action.HOLD, 0.0, f"{timeframe}: no price or ATR to set the stop from")
    stop = price - STOP_ATR * atr
    if stop <= 0:
        return Decision(symbol, timeframe, Action.HOLD, 0.0, f"{timeframe}: a 2-ATR stop would be at or below zero")
    return Decision(
        symbol,
        timeframe,
        Action.BUY,
        _confidence(signal),
        f"{timeframe} selected: signal_quality {quality:.2f}, conviction {conviction:.2f}; {selection.reason}",
        price=price,
        stop_loss=stop,
        take_profit=price + TARGET_ATR * atr,
    )


def strategy_decision(
    symbol: str,
    timeframe: str | None,
    picked: PickedStrategy | None,
    call: StrategyCall | None,
    price: Decimal | None,
    why_not: str = "",
) -> Decision:
    """A strategy call (`strategy_call.call_at`) of `picked` on `timeframe` as a decision; HOLD
    with `why_not` when no strategy or call is there. BUY carries the spec's exits as fractions
    (confidence 1: the strategy's edge sizes the order, through Kelly)."""
    if picked is None or call is None or timeframe is None:
        return Decision(symbol, timeframe, Action.HOLD, 0.0, why_not or "no strategy to read")
    names = {"strategy_id": picked.strategy_id, "strategy_parameters": format_combo(picked.combo)}
    reason = f"{timeframe} {picked.strategy_id} {call.reason}"
    if call.action is Action.HOLD:
        return Decision(symbol, timeframe, Action.HOLD, 0.0, reason, **names)
    if price is None:
        return Decision(symbol, timeframe, Action.HOLD, 0.0, f"{reason}; but no close to price it at", **names)
    if call.action is Action.SELL:
        return Decision(symbol, timeframe, Action.SELL, 1.0, reason, price=price, **names)
    return Decision(
        symbol,
        timeframe,
        Action.BUY,
        1.0,
        reason,
        price=price,
        stop_fraction=decimal_or_none(call.stop_loss),
        target_fraction=decimal_or_none(call.take_profit),
        trailing_stop=decimal_or_none(call.trailing_stop),
        **names,
    )


def decide_by_strategy(
    selection: Selection,
    held_by: tuple[str, str | None, str | None] | None,
    kept: Mapping[str, StrategySpec],
    known: Mapping[str, StrategySpec],
    out_of_sample: Mapping[str, Iterable[Mapping]],
    candles: Callable[[str], Mapping[str, np.ndarray]],
    base_timeframe: str,
    previous_event: Mapping[tuple[str, str], datetime] | None = None,
    read_already: Mapping[tuple[str, str], datetime] | None = None,
) -> tuple[Decision, PickedStrategy | None]:
    """The strategy decider for one symbol. Flat: the best kept strategy on the selected
    timeframe (`out_of_sample`: research.backtests rows of the symbol per timeframe) at its newest
    candle. Held (`held_by`: the buy's timeframe, strategy id and parameters): the strategy that
    bought it, on its timeframe (the best kept one there when the buy was not a strategy's).
    `candles(timeframe)`: the symbol's candles up to the newest closed one, oldest first (with
    their `ts`, to tell the new ones: `new_candles`; `previous_event`, `read_already` per (symbol,
    timeframe))."""
    symbol = selection.symbol
    if held_by is not None:
        timeframe, sid, parameters = held_by
        timeframe = timeframe or base_timeframe
        if sid in known and parameters is not None:
            spec = known[sid]
            picked = PickedStrategy(sid, spec, parse_combo(spec, parameters), None)
        else:
            picked = pick_strategy(kept, out_of_sample.get(timeframe, ()))
        why_not = f"held; no kept strategy with an out-of-sample score on {symbol} {timeframe} to exit by"
    else:
        timeframe = selection.timeframe
        if timeframe is None:
            return Decision(symbol, None, Action.HOLD, 0.0, f"no timeframe selected: {selection.reason}"), None
        picked = pick_strategy(kept, out_of_sample.get(timeframe, ()))
        why_not = f"{timeframe} selected, but no kept strategy has an out-of-sample score on {symbol} {timeframe}"
    if picked is None:
        return Decision(symbol, timeframe, Action.HOLD, 0.0, why_not), None
    arrays = candles(timeframe)
    series = (symbol, timeframe)
    unread = new_candles(arrays.get("ts", ()), (previous_event or {}).get(series), (read_already or {}).get(series))
    call = strategy_call(picked.spec, picked.combo, arrays, held_by is not None, unread)
    price = decimal_or_none(float(arrays["close"][-1])) if len(arrays["close"]) else None
    return strategy_decision(symbol, timeframe, picked, call, price), picked


def new_candles(ts: Sequence[datetime], previous_event: datetime | None, read_already: datetime | None) -> int:
    """How many of the candles (open times, oldest first) closed after the newest one an earlier
    signal event was computed on (`previous_event`; 1 without one, or when the clock went back);
    0 when a strategy decision read the newest one already (`read_already`: a 4h candle outlives
    many ticks)."""
    if not len(ts):
        return 1
    newest = ts[-1]
    if read_already == newest:
        return 0
    if previous_event is None or previous_event >= newest:
        return 1
    return len(ts) - bisect_right(ts, previous_event)


def signal_valid_until(signals: Iterable[Mapping], max_age_seconds: float) -> datetime | None:
    """The instant past which a symbol's signals of one event are too old to trade: the close of
    the newest candle they were computed on, plus the allowed age. None when there is no signal."""
    closes = [row["ts"] + timedelta(seconds=timeframe_seconds(row["timeframe"])) for row in signals]
    return max(closes) + timedelta(seconds=max_age_seconds) if closes else None


def stale_reason(valid_until: datetime | None, now: datetime, max_age_seconds: float) -> str:
    if valid_until is None:
        return "no signal for this symbol in the signal event"
    closed = valid_until - timedelta(seconds=max_age_seconds)
    return (
        f"signal too old to trade: its newest candle closed at {closed.isoformat()}, "
        f"{(now - closed).total_seconds():.0f} s before the exchange's clock ({now.isoformat()}); "
        f"the limit is {max_age_seconds:g} s (TRACER_MAX_SIGNAL_AGE_SECONDS)"
    )


def stale_at_execution(decision: Mapping, now: datetime) -> str | None:
    """Why a recorded BUY/SELL must not be executed at `now` (the exchange's clock): its signal
    became too old since it was decided (a run delayed, the sensor catching up after downtime).
    None when it may go ahead."""
    valid_until = decision.get("valid_until")
    if valid_until is None:
        return "signal age unknown (decided before signal ages were recorded): not traded"
    if now > valid_until:
        return (
            f"signal too old at execution: valid until {valid_until.isoformat()}, the exchange's clock "
            f"shows {now.isoformat()} (TRACER_MAX_SIGNAL_AGE_SECONDS)"
        )
    return None


def payoff_ratio(win_rate: float | None, profit_factor: float | None) -> float | None:
    """Average win / average loss from a backtest's win rate W and profit factor PF (gross wins /
    gross losses): PF = W x avg_win / ((1 - W) x avg_loss), so R = PF x (1 - W) / W. None when
    either is missing or degenerate (no wins, no losses)."""
    if win_rate is None or profit_factor is None:
        return None
    w, pf = float(win_rate), float(profit_factor)
    if not (math.isfinite(w) and math.isfinite(pf)) or not 0 < w < 1 or pf <= 0:
        return None
    return pf * (1 - w) / w


def kelly_inputs(stats: Mapping | None) -> dict[str, float | None]:
    """The win rate and payoff ratio of the strategy behind a buy, both or neither (the risk
    manager sizes by fractional Kelly only with both)."""
    win_rate = None if stats is None else stats.get("winRate")
    payoff = None if stats is None else stats.get("payoff")
    if win_rate is None or payoff is None or not math.isfinite(float(win_rate)):
        return {"win_rate": None, "payoff_ratio": None}
    return {"win_rate": float(win_rate), "payoff_ratio": float(payoff)}


def order_request(decision: Mapping, side: str, price: Decimal) -> OrderRequest:
    """What a recorded decision asks of the risk manager; a buy carries its strategy's edge."""
    buy = side == "buy"
    return OrderRequest(
        decision["symbol"],
        side,
        price,
        confidence=decision.get("confidence", Decimal(1)),
        win_rate=decision.get("win_rate") if buy else None,
        payoff_ratio=decision.get("payoff_ratio") if buy else None,
    )


def exact_confidence(value: float) -> Decimal:
    """A decider's confidence as the exact decimal stored and sized with: 6 places, within [0, 1]
    (a double such as conviction / 10 would reach sizing as 0.507584000000000032)."""
    number = decimal_or_none(value)
    if number is None:
        return Decimal(0)
    return min(Decimal(1), max(Decimal(0), number)).quantize(Decimal("0.000001"))


def _confidence(signal: Mapping) -> float:
    return max(0.0, min(1.0, float(signal["conviction"]) / 10))


def _rate(value) -> str:
    return "n/a" if value is None else f"{float(value):.2f}"
