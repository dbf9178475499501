"""The strategy decider's core on real and hand-built candles: a spec read at the newest close,
bar by bar, makes the backtester's entries and exits; the kept strategy with the best
out-of-sample score of a series is the one picked, with its newest window's parameters."""

import json

import numpy as np
import pytest
from conftest import bundled_frame

from tracer_assets.research.backtest import candle_arrays
from tracer_assets.research.engine import ExitReason, FillRules, simulate
from tracer_assets.research.rules import evaluate
from tracer_assets.research.spec import builtin_spec, load_spec
from tracer_assets.trading.orders import Action
from tracer_assets.trading.strategy_call import parse_combo, pick_strategy, strategy_call

BARS = 900


def without_stops(name: str):
    data = json.loads(builtin_spec(name).canonical_json())
    for stop in ("stop_loss", "take_profit", "trailing_stop"):
        data.pop(stop, None)
    return load_spec(data)


@pytest.mark.parametrize("name", ["ema_cross", "rsi_mean_reversion", "macd_cross"])
def test_calls_bar_by_bar_make_the_backtesters_signal_trades(name):
    spec = without_stops(name)
    combo = {n: p.default for n, p in spec.parameters.items()}
    candles = candle_arrays(bundled_frame("BTC/USDT", "1h").head(BARS))
    signals = evaluate(spec, candles, [combo])
    prices = [candles[c] for c in ("open", "high", "low", "close")]
    levels = (signals.stop_loss, signals.take_profit, signals.trailing_stop)
    engine = simulate(*prices, signals.entries, signals.exits, *levels, rules=FillRules(fee=0.001, slippage_bps=5))
    expected = [
        (int(entry), int(exit_))
        for entry, exit_, reason in zip(engine.entry_idx, engine.exit_idx, engine.exit_reason)
        if reason == ExitReason.SIGNAL
    ]
    # The replay: at each close, the spec sees only the candles so far; orders act at the next open.
    trades, held, entered = [], False, None
    for i in range(BARS - 1):
        call = strategy_call(spec, combo, {k: v[: i + 1] for k, v in candles.items()}, held)
        if call.action is Action.BUY:
            held, entered = True, i + 1
        elif call.action is Action.SELL:
            trades.append((entered, i + 1))
            held = False
    assert expected and trades == expected


def hand_built(closes) -> dict[str, np.ndarray]:
    close = np.array(closes, dtype=float)
    return {
        "open": close,
        "high": close * 1.001,
        "low": close * 0.999,
        "close": close,
        "volume": np.ones_like(close),
    }


def test_entry_exit_and_the_stops_the_spec_carries():
    spec = load_spec(
        {
            "name": "sma_pair",
            "description": "A 2-bar SMA crossing a 4-bar SMA, with every kind of stop.",
            "timeframe": "1h",
            "entry": {"cross_above": {"a": {"indicator": "sma", "params": {"window": 2}},
                                      "b": {"indicator": "sma", "params": {"window": 4}}}},
            "exit": {"cross_below": {"a": {"indicator": "sma", "params": {"window": 2}},
                                     "b": {"indicator": "sma", "params": {"window": 4}}}},
            "stop_loss": 0.02,
            "take_profit": 0.05,
            "trailing_stop": 0.03,
        }
    )  # fmt: skip
    falling_then_up = hand_built([10, 9, 8, 7, 6, 12])  # sma2 crosses above sma4 at the last close
    up_then_down = hand_built([6, 7, 8, 9, 10, 6])  # and below it here
    buy = strategy_call(spec, {}, falling_then_up, held=False)
    assert buy.action is Action.BUY and (buy.stop_loss, buy.take_profit, buy.trailing_stop) == (0.02, 0.05, 0.03)
    assert strategy_call(spec, {}, falling_then_up, held=True).action is Action.HOLD  # no pyramiding
    sell = strategy_call(spec, {}, up_then_down, held=True)
    assert sell.action is Action.SELL and sell.stop_loss is None
    assert strategy_call(spec, {}, up_then_down, held=False).reason.endswith("flat, entry rule false")
    assert strategy_call(spec, {}, hand_built([5]), held=False).reason.endswith("fewer than 2 candles")


def test_the_best_kept_strategy_of_the_series_with_its_newest_choice():
    ema, sma = builtin_spec("ema_cross"), builtin_spec("sma_cross")
    kept = {"a1": ema, "b2": sma}
    rows = [
        {"strategy_id": "a1", "score": 0.4, "parameters": "fast=5,slow=30; fast=10,slow=40"},
        {"strategy_id": "b2", "score": 0.4, "parameters": "fast=10,slow=50"},
        {"strategy_id": "zz", "score": 9.0, "parameters": "fast=1,slow=2"},  # archived: not kept
        {"strategy_id": "b2x", "score": float("nan"), "parameters": ""},
    ]
    picked = pick_strategy(kept, rows)
    assert (picked.strategy_id, picked.combo) == ("a1", {"fast": 10, "slow": 40})  # tie -> smaller id
    assert pick_strategy(kept, rows[2:]) is None
    with pytest.raises(ValueError, match="unknown parameter 'speed'"):
        parse_combo(ema, "speed=3")
