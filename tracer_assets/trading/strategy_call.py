"""The strategy decider's core: what one strategy spec says at the newest closed candle.

Pure (no Dagster, no I/O). The spec's rules are evaluated (research/rules.py, the backtester's
own evaluation) over candles that end with the newest closed one, at one parameter combination:
flat and the entry rule true at that close -> BUY with the spec's stop-loss, take-profit and
trailing stop (fractions of the fill price); held and the exit rule true -> SELL; otherwise
HOLD, with the reason. This is the backtester's rule 7 (docs/backtesting.md) read at one bar, so
a replay of these calls bar by bar makes the same trades as `engine.simulate`.

`pick_strategy` chooses which spec and combination trade a symbol on a timeframe: among the kept
strategies, the best out-of-sample score of that series; the combination is the one its
walk-forward chose for the newest test window.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

import numpy as np

from tracer_assets.research.backtest import simulate_signals
from tracer_assets.research.engine import ExitReason, FillRules
from tracer_assets.research.rules import Signals, evaluate, param_grid
from tracer_assets.research.spec import StrategySpec
from tracer_assets.trading.orders import Action


@dataclass(frozen=True)
class StrategyCall:
    action: Action
    reason: str
    stop_loss: float | None = None  # fractions of the entry fill price (trailing: of the peak)
    take_profit: float | None = None
    trailing_stop: float | None = None


@dataclass(frozen=True)
class PickedStrategy:
    strategy_id: str
    spec: StrategySpec
    combo: dict
    score: float | None


def _fraction(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def parse_combo(spec: StrategySpec, text: str) -> dict:
    """'fast=10,slow=40' (one walk-forward window's choice, `backtest.format_combo`) to values of the
    parameters' types."""
    values = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, raw = part.partition("=")
        if name not in spec.parameters:
            raise ValueError(f"{spec.name}: unknown parameter {name!r} in {text!r}")
        values[name] = int(raw) if spec.parameters[name].is_integer else float(raw)
    return values


def pick_strategy(kept: Mapping[str, StrategySpec], out_of_sample_rows: Iterable[Mapping]) -> PickedStrategy | None:
    """`out_of_sample_rows`: research.backtests rows (strategy_id, score, parameters) of one
    symbol and timeframe, window out_of_sample. The best finite score among `kept` strategies
    (ties: the smaller id); its combination is the newest window's choice (the last of the
    "; "-joined parameters). None when no kept strategy has a finite score there."""
    candidates = [
        row
        for row in out_of_sample_rows
        if row["strategy_id"] in kept and row["score"] is not None and math.isfinite(row["score"])
    ]
    if not candidates:
        return None
    best = min(candidates, key=lambda row: (-row["score"], row["strategy_id"]))
    spec = kept[best["strategy_id"]]
    newest = (best.get("parameters") or "").split(";")[-1]
    return PickedStrategy(best["strategy_id"], spec, parse_combo(spec, newest), best["score"])


@dataclass(frozen=True)
class StrategySignals:
    """A spec's signals at one combination over a candle series (rules.evaluate, one column)."""

    label: str  # "name(param=value, ...)"
    signals: Signals

    @property
    def bars(self) -> int:
        return self.signals.entries.shape[0]


def strategy_signals(spec: StrategySpec, combo: Mapping, candles: Mapping[str, np.ndarray]) -> StrategySignals:
    """Evaluate the spec once over the candles (oldest first). Each bar's signals use only the
    candles up to it (the rules' causality, tested against lookahead), so a replay may compute
    them once for the whole series and read them bar by bar (`call_at`)."""
    grid = param_grid(spec, {name: [value] for name, value in combo.items()})
    return StrategySignals(_label(spec, grid[0]), evaluate(spec, candles, grid))


def _candles(count: int) -> str:
    return f"{count} candle" if count == 1 else f"{count} candles"


def _label(spec: StrategySpec, combo: Mapping) -> str:
    return f"{spec.name}({', '.join(f'{k}={v}' for k, v in sorted(combo.items()))})"


def call_at(computed: StrategySignals, bar: int, held: bool) -> StrategyCall:
    """What the spec says at the close of `bar`; `held`: a position of this symbol is open."""
    label, signals = computed.label, computed.signals
    if bar < 1:
        return StrategyCall(Action.HOLD, f"{label}: fewer than 2 candles")
    entry, exit_ = bool(signals.entries[bar, 0]), bool(signals.exits[bar, 0])
    if held:
        if exit_:
            return StrategyCall(Action.SELL, f"{label}: exit rule true at the close, held")
        return StrategyCall(Action.HOLD, f"{label}: held, exit rule false (the stops keep watching)")
    if entry:
        return StrategyCall(
            Action.BUY,
            f"{label}: entry rule true at the close",
            stop_loss=_fraction(signals.stop_loss[0]),
            take_profit=_fraction(signals.take_profit[0]),
            trailing_stop=_fraction(signals.trailing_stop[0]),
        )
    return StrategyCall(Action.HOLD, f"{label}: flat, entry rule false")


def strategy_call(
    spec: StrategySpec, combo: Mapping, candles: Mapping[str, np.ndarray], held: bool, new_bars: int = 1
) -> StrategyCall:
    """The spec at the close of the last candle (oldest first; open, high, low, close, volume).
    `held`: a position of this symbol is open. Never raises for too few candles: HOLD says so.

    `new_bars`: the candles closed since the previous read (a tick after a pause, or on a fast
    replay clock, brings several). None of them is skipped: held, an exit rule true at any of
    them sells; flat, an entry at an earlier one buys when the backtest engine, run over these
    candles, is still in the trade it opened (no exit, stop, target or trailing stop since), at
    the newest close, later than the backtest would have. 0: the newest candle was read before,
    so its entry is not taken twice (held, its exit is read again: a refused sell is retried)."""
    if len(candles["close"]) < 2:
        return StrategyCall(Action.HOLD, f"{_label(spec, combo)}: fewer than 2 candles")
    if new_bars < 1 and not held:
        return StrategyCall(Action.HOLD, f"{_label(spec, combo)}: flat, no new candle since the previous read")
    computed = strategy_signals(spec, combo, candles)
    last = computed.bars - 1
    call = call_at(computed, last, held)
    first_new = max(1, computed.bars - max(1, new_bars))
    if call.action is not Action.HOLD or first_new == last:
        return call
    signals = computed.signals
    if held:
        fired = [bar for bar in range(first_new, last) if signals.exits[bar, 0]]
        if fired:
            return replace(
                call_at(computed, fired[0], held),
                reason=f"{computed.label}: exit rule true {_candles(last - fired[0])} before the newest close, held",
            )
        return call
    entered = [bar for bar in range(first_new, last) if signals.entries[bar, 0]]
    if not entered:
        return call
    trades = simulate_signals(dict(candles), signals, FillRules())
    open_at_end = len(trades.entry_idx) > 0 and trades.exit_reason[-1] == ExitReason.END_OF_DATA
    signal_bar = int(trades.entry_idx[-1]) - 1 if open_at_end else entered[-1]  # the fill is the next open
    ago = last - signal_bar
    if not open_at_end:
        return replace(
            call, reason=f"{computed.label}: flat; its entry {_candles(ago)} ago led to a trade that has ended since"
        )
    if signal_bar < first_new:
        return replace(call, reason=f"{computed.label}: flat; not joining the trade it entered {_candles(ago)} ago")
    return replace(
        call_at(computed, signal_bar, held),
        reason=f"{computed.label}: entry rule true {_candles(ago)} before the newest close, still in that trade",
    )
