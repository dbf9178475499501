"""The backtest engine against its written fill rules (docs/backtesting.md), hand-built candles with
the expected fills written out, and against the plain-Python reference on real BTC/USDT candles.
Also the metrics, walk-forward windows and the macro orchestrator's regime and results file."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from fractions import Fraction

import numpy as np
import polars as pl
import pytest
from backtest_reference import reference_backtest, reference_metrics
from conftest import bundled_frame

from tracer_assets.research.engine import EXIT_REASON_NAMES, FillRules, SimResult, simulate
from tracer_assets.research.macro import backtest_results_json, regime_from_stats, write_backtest_results
from tracer_assets.research.metrics import METRIC_COLUMNS, bars_per_year, metrics
from tracer_assets.research.walkforward import Window, check_windows, rolling_windows, walk_forward

NO_COSTS = FillRules(fee=0.0, slippage_bps=0.0)

# Five quiet candles (open, high, low, close) to place signals on.
CALM = [
    (100.0, 101.0, 99.0, 100.0),
    (100.0, 102.0, 99.0, 101.0),
    (102.0, 103.0, 101.0, 102.0),
    (103.0, 104.0, 102.0, 103.0),
    (105.0, 106.0, 104.0, 105.0),
]


def run(bars, entries=(), exits=(), stop_loss=None, take_profit=None, trailing_stop=None, rules=NO_COSTS) -> SimResult:
    """Simulate one combination over hand-built candles; signals given as bar numbers."""
    o, h, low, c = (np.array(column, dtype=np.float64) for column in zip(*bars))
    entry = np.zeros(len(bars), dtype=bool)
    entry[list(entries)] = True
    exit_ = np.zeros(len(bars), dtype=bool)
    exit_[list(exits)] = True
    return simulate(o, h, low, c, entry, exit_, stop_loss, take_profit, trailing_stop, rules, record_equity=True)


def fills(result: SimResult) -> list[tuple[int, int, float, float, str]]:
    """(entry bar, exit bar, entry price, exit price, exit reason) of every trade. Prices are
    rounded to 9 decimals: a level like 100 x (1 + 0.1) is 110.00000000000001 in binary floats
    (the exact arithmetic is checked separately, to 1e-14)."""
    return [
        (int(a), int(b), round(float(p), 9), round(float(q), 9), EXIT_REASON_NAMES[r])
        for a, b, p, q, r in zip(
            result.entry_idx, result.exit_idx, result.entry_price, result.exit_price, result.exit_reason
        )
    ]


# --- rule 1: a close's signal fills at the next open ---------------------------------------------


def test_signal_fills_at_the_next_open():
    result = run(CALM, entries={1}, exits={3})
    assert fills(result) == [(2, 4, 102.0, 105.0, "signal")]
    assert result.return_[0] == pytest.approx(105 / 102 - 1, rel=1e-15)
    assert result.final_equity[0] == pytest.approx(105 / 102, rel=1e-15)
    # Flat until the entry's open; marked at each close while held; the exit's cash after.
    assert result.equity[:, 0] == pytest.approx([1.0, 1.0, 1.0, 103 / 102, 105 / 102], rel=1e-15)
    assert result.trades_frame().select("combo", "entry_idx", "exit_idx", "exit_reason").rows() == [(0, 2, 4, "signal")]


def test_entry_signal_on_the_last_bar_does_nothing():
    result = run(CALM, entries={4})
    assert fills(result) == []
    assert result.final_equity[0] == 1.0
    assert list(result.equity[:, 0]) == [1.0] * 5


def test_entry_signal_on_the_bar_before_last_enters_at_the_last_open():
    result = run(CALM, entries={3})
    assert fills(result) == [(4, 4, 105.0, 105.0, "end_of_data")]


# --- rules 2 and 3: stops and targets inside a candle, gaps, both at once ------------------------

ENTERED_AT_100 = [(100.0, 100.0, 100.0, 100.0), (100.0, 101.0, 99.0, 100.0)]  # entry signal on bar 0


@pytest.mark.parametrize(
    ("bar", "expected"),
    [
        ((99.0, 100.0, 94.0, 96.0), (95.0, "stop")),  # low crosses 95: fills at the stop
        ((90.0, 92.0, 89.0, 91.0), (90.0, "stop")),  # opens below 95: fills at the open
        ((104.0, 111.0, 103.0, 108.0), (110.0, "target")),  # high crosses 110: fills at the target
        ((112.0, 113.0, 111.0, 112.0), (112.0, "target")),  # opens above 110: fills at the open
        ((100.0, 112.0, 94.0, 100.0), (95.0, "stop")),  # both inside one candle: the stop first
        ((112.0, 113.0, 90.0, 95.0), (112.0, "target")),  # opens beyond the target: the open is first
        ((100.0, 109.0, 96.0, 101.0), None),  # neither: still open, closed at the end of data
    ],
)
def test_stop_and_target_fills(bar, expected):
    result = run(ENTERED_AT_100 + [bar], entries={0}, stop_loss=0.05, take_profit=0.10)
    if expected is None:
        assert fills(result) == [(1, 2, 100.0, 101.0, "end_of_data")]
    else:
        assert fills(result) == [(1, 2, 100.0, *expected)]


# --- rule 4: live from the entry bar; the trailing peak excludes the bar being checked ------------


def test_stop_and_target_are_live_on_the_entry_bar():
    entry_bar_falls = [(100.0, 100.0, 100.0, 100.0), (100.0, 101.0, 94.0, 96.0), (96.0, 97.0, 95.0, 96.0)]
    assert fills(run(entry_bar_falls, entries={0}, stop_loss=0.05)) == [(1, 1, 100.0, 95.0, "stop")]
    entry_bar_rises = [(100.0, 100.0, 100.0, 100.0), (100.0, 111.0, 99.0, 108.0), (108.0, 109.0, 107.0, 108.0)]
    assert fills(run(entry_bar_rises, entries={0}, take_profit=0.10)) == [(1, 1, 100.0, 110.0, "target")]


def test_trailing_stop_follows_earlier_highs_only():
    bars = [
        (100.0, 100.0, 100.0, 100.0),
        # Entry at 100. Peak for this bar is the entry price: level 90, low 99 holds. Had the
        # bar's own high (130) counted, the level would be 117 and the low 99 would hit it.
        (100.0, 130.0, 99.0, 100.0),
        # Peak now 130, level 117: the bar opens at 100, below it -> fills at the open.
        (100.0, 101.0, 98.0, 99.0),
        (99.0, 99.0, 99.0, 99.0),
    ]
    assert fills(run(bars, entries={0}, trailing_stop=0.10)) == [(1, 2, 100.0, 100.0, "trailing")]


def test_trailing_stop_inside_a_candle_and_the_tighter_stop_binds():
    bars = [
        (100.0, 100.0, 100.0, 100.0),
        (100.0, 120.0, 96.0, 119.0),  # fixed stop 95 binds (trailing 90): low 96 holds; peak -> 120
        (118.0, 119.0, 94.0, 110.0),  # trailing 108 binds now (above 95): fills at 108
        (110.0, 110.0, 110.0, 110.0),
    ]
    assert fills(run(bars, entries={0}, stop_loss=0.05, trailing_stop=0.10)) == [(1, 2, 100.0, 108.0, "trailing")]
    early = [bars[0], (100.0, 101.0, 94.5, 100.0), bars[3]]  # on the entry bar the fixed stop is tighter
    assert fills(run(early, entries={0}, stop_loss=0.05, trailing_stop=0.10)) == [(1, 1, 100.0, 95.0, "stop")]


# --- rule 5: fees and slippage, exact arithmetic --------------------------------------------------


def test_fee_slippage_and_sizing_arithmetic():
    rules = FillRules(fee=0.001, slippage_bps=10.0, position_fraction=0.5)
    result = run(CALM, entries={1}, exits={3}, rules=rules)
    fee, slip, fraction = Fraction("0.001"), Fraction(10, 10_000), Fraction("0.5")
    buy = 102 * (1 + slip)  # 102.102: the buy fills 10 bps above the open
    committed = fraction * 1  # half of the equity, fee included
    size = committed / (buy * (1 + fee))  # what 0.5 buys once the 0.1% fee is paid
    sell = 105 * (1 - slip)  # 104.895: the sale fills 10 bps below the open
    proceeds = size * sell * (1 - fee)
    assert fills(result) == [(2, 4, pytest.approx(102.102, rel=1e-15), pytest.approx(104.895, rel=1e-15), "signal")]
    assert result.size[0] == pytest.approx(float(size), rel=1e-14)
    assert result.pnl[0] == pytest.approx(float(proceeds - committed), rel=1e-12)
    assert result.return_[0] == pytest.approx(float(proceeds / committed - 1), rel=1e-12)
    assert result.final_equity[0] == pytest.approx(float(1 - committed + proceeds), rel=1e-14)
    # Marked at the close of bar 3 (103) with the cash that was not committed.
    assert result.equity[3, 0] == pytest.approx(float(1 - committed + size * 103), rel=1e-14)
    # The same trade without costs, for scale: costs took about 0.4% of the committed amount.
    free = run(CALM, entries={1}, exits={3})
    assert free.return_[0] - result.return_[0] == pytest.approx(0.004, abs=2e-4)


def test_slippage_applies_to_stop_fills_from_the_slipped_entry_price():
    rules = FillRules(fee=0.0, slippage_bps=20.0)
    result = run(ENTERED_AT_100 + [(99.0, 100.0, 90.0, 92.0)], entries={0}, stop_loss=0.05, rules=rules)
    entry = 100 * 1.002  # 100.2
    stop = entry * 0.95  # 95.19, inside the bar
    assert fills(result) == [(1, 2, pytest.approx(entry, rel=1e-15), pytest.approx(stop * 0.998, rel=1e-15), "stop")]


def test_sizing_compounds_on_current_equity():
    rules = FillRules(fee=0.0, position_fraction=0.5)
    bars = CALM + [(105.0, 106.0, 104.0, 105.0), (110.0, 110.0, 110.0, 110.0)]
    result = run(bars, entries={0, 4}, exits={2}, rules=rules)
    assert fills(result) == [(1, 3, 100.0, 103.0, "signal"), (5, 6, 105.0, 110.0, "end_of_data")]
    equity_after_first = 1 + 0.5 * (103 / 100 - 1)  # 1.015
    assert result.size[0] == pytest.approx(0.5 / 100, rel=1e-15)
    assert result.size[1] == pytest.approx(0.5 * equity_after_first / 105, rel=1e-15)
    assert result.final_equity[0] == pytest.approx(equity_after_first * (1 + 0.5 * (110 / 105 - 1)), rel=1e-14)


# --- rule 6: closed at the end of data ---------------------------------------------------------


def test_open_position_is_closed_at_the_last_close_with_fee_and_slippage():
    rules = FillRules(fee=0.001, slippage_bps=5.0)
    bars = CALM[:4] + [(105.0, 106.0, 104.0, 104.5)]
    result = run(bars, entries={1}, exits={4}, rules=rules)  # the exit signal on the last bar is too late
    buy, sell = 102 * 1.0005, 104.5 * 0.9995
    assert fills(result) == [(2, 4, pytest.approx(buy, rel=1e-15), pytest.approx(sell, rel=1e-15), "end_of_data")]
    assert result.return_[0] == pytest.approx(sell * 0.999 / (buy * 1.001) - 1, rel=1e-12)


# --- rule 7: no pyramiding; which signal matters when -------------------------------------------


def test_entry_signals_while_in_a_position_are_ignored():
    result = run(CALM, entries={0, 1, 2, 3})
    assert fills(result) == [(1, 4, 100.0, 105.0, "end_of_data")]


def test_exit_signals_while_flat_are_ignored_and_flat_with_both_enters():
    assert fills(run(CALM, exits={0, 1, 2})) == []
    assert fills(run(CALM, entries={1}, exits={1})) == [(2, 4, 102.0, 105.0, "end_of_data")]


def test_in_a_position_with_both_signals_it_exits_and_does_not_reenter_at_that_open():
    result = run(CALM, entries={0, 2}, exits={2})
    assert fills(result) == [(1, 3, 100.0, 103.0, "signal")]  # bar 3's close: flat, no entry signal


def test_exit_signal_on_the_entry_bar_exits_at_the_next_open():
    assert fills(run(CALM, entries={1}, exits={2})) == [(2, 3, 102.0, 103.0, "signal")]


def test_after_a_stop_the_same_bars_entry_signal_counts():
    bars = ENTERED_AT_100 + [(99.0, 100.0, 94.0, 96.0), (96.0, 97.0, 95.5, 97.0), (97.0, 97.0, 97.0, 97.0)]
    # Stopped out inside bar 2; flat at its close, so bar 2's entry signal fills at bar 3's open;
    # bar 2's exit signal is ignored (flat).
    result = run(bars, entries={0, 2}, exits={2}, stop_loss=0.05)
    assert fills(result) == [(1, 2, 100.0, 95.0, "stop"), (3, 4, 96.0, 97.0, "end_of_data")]


# --- rule 8 and input checks ---------------------------------------------------------------------


def test_long_only_a_falling_market_loses_and_is_never_shorted():
    falling = [(100.0 - i, 100.0 - i, 99.0 - i, 99.0 - i) for i in range(6)]
    result = run(falling, entries={0}, exits={3})
    assert fills(result) == [(1, 4, 99.0, 96.0, "signal")]
    assert result.pnl[0] < 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"pyramiding": True}, "pyramiding=True"),
        ({"fee": -0.001}, "fee=-0.001"),
        ({"fee": float("nan")}, "fee=nan"),
        ({"slippage_bps": -1}, "slippage_bps=-1"),
        ({"position_fraction": 1.5}, "position_fraction=1.5"),
        ({"position_fraction": 0}, "position_fraction=0"),
    ],
)
def test_fill_rules_refuse_bad_values_by_name(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        FillRules(**kwargs)


def test_bad_inputs_are_refused_by_name():
    o, h, low, c = (np.array(x) for x in zip(*CALM))
    ok = np.zeros(5, dtype=bool)
    bad_low = low.copy()
    bad_low[2] = 103.5
    with pytest.raises(ValueError, match=r"candle 2: high < low"):
        simulate(o, h, bad_low, c, ok, ok)
    nan_close = c.copy()
    nan_close[3] = np.nan
    with pytest.raises(ValueError, match=r"close\[3\]=nan"):
        simulate(o, h, low, nan_close, ok, ok)
    with pytest.raises(ValueError, match=r"entries: must be a boolean array"):
        simulate(o, h, low, c, ok.astype(int), ok)
    with pytest.raises(ValueError, match=r"stop_loss\[1\]=1.5"):
        simulate(o, h, low, c, np.zeros((5, 2), bool), np.zeros((5, 2), bool), [0.1, 1.5])
    with pytest.raises(ValueError, match=r"take_profit\[0\]=-0.1"):
        simulate(o, h, low, c, ok, ok, None, -0.1)
    with pytest.raises(ValueError, match=r"exits: shape"):
        simulate(o, h, low, c, np.zeros((5, 2), bool), np.zeros((5, 3), bool))


# --- the engine against the reference on real candles ---------------------------------------------


@pytest.fixture(scope="module")
def btc() -> dict[str, np.ndarray]:
    frame = bundled_frame("BTC/USDT")
    return {name: frame[name].to_numpy() for name in ("open", "high", "low", "close")}


def ema(values: np.ndarray, span: int) -> np.ndarray:
    """Plain EMA seeded with the first value (alpha 2 / (span + 1))."""
    alpha = 2.0 / (span + 1)
    out = np.empty_like(values)
    out[0] = values[0]
    for i in range(1, len(values)):
        out[i] = out[i - 1] + alpha * (values[i] - out[i - 1])
    return out


def rsi(close: np.ndarray, period: int = 14) -> np.ndarray:
    """Wilder RSI seeded with the mean gain/loss of the first `period` changes (NaN before)."""
    change = np.diff(close, prepend=close[0])
    gain, loss = np.maximum(change, 0.0), np.maximum(-change, 0.0)
    out = np.full_like(close, np.nan)
    avg_gain, avg_loss = gain[1 : period + 1].mean(), loss[1 : period + 1].mean()
    for i in range(period, len(close)):
        if i > period:
            avg_gain = (avg_gain * (period - 1) + gain[i]) / period
            avg_loss = (avg_loss * (period - 1) + loss[i]) / period
        total = avg_gain + avg_loss
        out[i] = 100.0 * avg_gain / total if total > 0 else 50.0
    return out


def crossings(fast: np.ndarray, slow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    above = fast > slow
    before = np.concatenate([above[:1], above[:-1]])
    return above & ~before, ~above & before


def generator(name: str, prices: dict[str, np.ndarray]):
    """(entries, exits, stop_loss, take_profit, trailing_stop, rules) of a few combinations."""
    close = prices["close"]
    n = len(close)
    nan = np.nan
    if name == "ema_cross":
        pairs = [(5, 30), (12, 26), (20, 100)]
        columns = [crossings(ema(close, f), ema(close, s)) for f, s in pairs]
        entries = np.stack([e for e, _ in columns], axis=1)
        exits = np.stack([x for _, x in columns], axis=1)
        return entries, exits, np.full(3, nan), np.full(3, nan), np.full(3, nan), FillRules()
    if name == "ema_cross_with_stops":
        e, x = crossings(ema(close, 9), ema(close, 50))
        entries, exits = np.stack([e] * 4, axis=1), np.stack([x] * 4, axis=1)
        return (
            entries,
            exits,
            np.array([0.01, nan, 0.02, 0.005]),
            np.array([nan, 0.015, 0.03, nan]),
            np.array([nan, nan, 0.01, 0.004]),
            FillRules(fee=0.001, slippage_bps=2.0),
        )
    if name == "rsi_thresholds":
        value = rsi(close)
        entries = np.stack([value < 30, value < 25], axis=1)
        exits = np.stack([value > 70, value > 60], axis=1)
        return (
            entries,
            exits,
            np.array([nan, 0.02]),
            np.array([nan, 0.02]),
            np.array([nan, nan]),
            FillRules(fee=0.00075, position_fraction=0.8),
        )
    if name == "random":
        rng = np.random.default_rng(20240601)
        entries = rng.random((n, 4)) < np.array([0.01, 0.05, 0.2, 0.02])
        exits = rng.random((n, 4)) < np.array([0.01, 0.05, 0.2, 0.005])
        return (
            entries,
            exits,
            np.array([nan, 0.01, 0.003, 0.02]),
            np.array([nan, 0.01, nan, 0.04]),
            np.array([0.01, nan, 0.002, 0.015]),
            FillRules(fee=0.001, slippage_bps=5.0, position_fraction=0.6),
        )
    raise KeyError(name)


def reference_for(prices, entries, exits, stops, targets, trailing, rules, combo):
    level = lambda a: None if math.isnan(a[combo]) else float(a[combo])  # noqa: E731
    return reference_backtest(
        prices["open"].tolist(),
        prices["high"].tolist(),
        prices["low"].tolist(),
        prices["close"].tolist(),
        entries[:, combo].tolist(),
        exits[:, combo].tolist(),
        level(stops),
        level(targets),
        level(trailing),
        rules.fee,
        rules.slippage_bps,
        rules.position_fraction,
    )


def assert_close(actual, expected, what: str, rel: float = 1e-9, abs_: float = 1e-12) -> None:
    if expected is None:
        assert actual is None, f"{what}: {actual} != None"
    else:
        assert actual is not None and math.isclose(actual, expected, rel_tol=rel, abs_tol=abs_), (
            f"{what}: engine {actual} != reference {expected}"
        )


@pytest.mark.parametrize("name", ["ema_cross", "ema_cross_with_stops", "rsi_thresholds", "random"])
def test_engine_equals_reference_on_real_candles(btc, name):
    entries, exits, stops, targets, trailing, rules = generator(name, btc)
    result = simulate(
        btc["open"],
        btc["high"],
        btc["low"],
        btc["close"],
        entries,
        exits,
        stops,
        targets,
        trailing,
        rules,
        record_equity=True,
    )
    table = metrics(result, "5m")
    reasons_seen = set()
    for combo in range(entries.shape[1]):
        ref_trades, ref_equity = reference_for(btc, entries, exits, stops, targets, trailing, rules, combo)
        assert len(ref_trades) >= 20, "too few trades for the comparison to mean anything"
        part = result.combo_trades(combo)
        engine_trades = list(
            zip(
                result.entry_idx[part].tolist(),
                result.exit_idx[part].tolist(),
                [EXIT_REASON_NAMES[r] for r in result.exit_reason[part]],
            )
        )
        assert engine_trades == [(t.entry_idx, t.exit_idx, t.exit_reason) for t in ref_trades], combo
        for field in ("entry_price", "exit_price", "size", "pnl", "return_"):
            expected = np.array([getattr(t, field) for t in ref_trades])
            np.testing.assert_allclose(getattr(result, field)[part], expected, rtol=1e-9, atol=1e-12, err_msg=field)
        np.testing.assert_allclose(result.equity[:, combo], ref_equity, rtol=1e-9, atol=0)
        assert_close(result.final_equity[combo], ref_equity[-1], "final_equity")
        expected_metrics = reference_metrics(ref_trades, ref_equity, bars_per_year("5m"))
        row = table.row(combo, named=True)
        for column in METRIC_COLUMNS:
            assert_close(row[column], expected_metrics[column], f"{name} combo {combo} {column}")
        reasons_seen |= {t.exit_reason for t in ref_trades}
    if name in ("ema_cross_with_stops", "random"):
        assert reasons_seen == set(EXIT_REASON_NAMES)
    if name == "random":
        assert result.n_trades > 1024  # more than the first trade buffer: the growth path ran


def test_signal_layout_and_one_dimensional_signals_give_the_same_trades(btc):
    entries, exits, stops, targets, trailing, rules = generator("ema_cross_with_stops", btc)
    prices = (btc["open"], btc["high"], btc["low"], btc["close"])
    bar_major = simulate(*prices, entries, exits, stops, targets, trailing, rules)
    combo_major = simulate(
        *prices, np.asfortranarray(entries), np.asfortranarray(exits), stops, targets, trailing, rules
    )
    for field in ("combo", "entry_idx", "exit_idx", "exit_reason", "pnl", "final_equity", "max_drawdown"):
        np.testing.assert_array_equal(getattr(bar_major, field), getattr(combo_major, field))
    single = simulate(*prices, entries[:, 2], exits[:, 2], stops[2], targets[2], trailing[2], rules)
    part = bar_major.combo_trades(2)
    np.testing.assert_array_equal(single.exit_idx, bar_major.exit_idx[part])
    np.testing.assert_array_equal(single.pnl, bar_major.pnl[part])


# --- metrics on a tiny case, by hand ---------------------------------------------------------------


def test_metrics_by_hand():
    bars = [
        (100.0, 100.0, 100.0, 100.0),
        (100.0, 110.0, 100.0, 110.0),  # entered at 100 (signal on bar 0); equity 1.10
        (110.0, 110.0, 99.0, 99.0),  # equity 0.99; exit signal
        (99.0, 99.0, 99.0, 99.0),  # sold at the open, 99: trade 1 returns -1%; entry signal
        (99.0, 100.0, 99.0, 100.0),  # bought at 99; equity 0.99 * 100/99 = 1.00
        (100.0, 100.0, 100.0, 100.0),  # sold at the last close, 100 (end of data)
    ]
    result = run(bars, entries={0, 3}, exits={2})
    row = metrics(result, "1h", initial_capital=1_000.0).row(0, named=True)
    returns = [0.10, 0.99 / 1.10 - 1, 0.0, 1.00 / 0.99 - 1, 0.0]  # bars 1..5
    mean = sum(returns) / 5
    std = math.sqrt(sum((r - mean) ** 2 for r in returns) / 4)
    downside = math.sqrt((0.99 / 1.10 - 1) ** 2 / 5)
    sharpe = mean / std * math.sqrt(8760)
    assert row["trades"] == 2
    assert row["total_return"] == pytest.approx(0.0, abs=1e-12)
    assert row["pnl"] == pytest.approx(0.0, abs=1e-9)
    assert row["win_rate"] == 0.5
    assert row["expectancy"] == pytest.approx((-0.01 + (100 / 99 - 1)) / 2, rel=1e-12)
    assert row["profit_factor"] == pytest.approx(0.01 / 0.01, rel=1e-9)  # +0.01 of capital vs -0.01
    assert row["max_drawdown"] == pytest.approx(0.10, rel=1e-12)  # 1.10 down to 0.99
    assert row["exposure"] == pytest.approx(4 / 6)  # bars 1, 2 (exit at bar 3's open) and 4, 5
    assert row["sharpe"] == pytest.approx(sharpe, rel=1e-12)
    assert row["sortino"] == pytest.approx(mean / downside * math.sqrt(8760), rel=1e-12)
    assert row["score"] == pytest.approx(sharpe * 2 / 30 - 2 * 0.10, rel=1e-12)


def test_metrics_without_trades_or_without_losses():
    idle = metrics(run(CALM), "5m").row(0, named=True)
    assert idle | {"combo": 0} == {
        "combo": 0,
        "total_return": 0.0,
        "pnl": 0.0,
        "win_rate": None,
        "trades": 0,
        "sharpe": 0.0,
        "sortino": None,
        "max_drawdown": 0.0,
        "profit_factor": None,
        "exposure": 0.0,
        "expectancy": None,
        "score": 0.0,
    }
    winner = metrics(run(CALM, entries={0}, exits={3}), "5m").row(0, named=True)
    assert winner["trades"] == 1 and winner["win_rate"] == 1.0
    assert winner["profit_factor"] is None  # no losing trade: infinite, reported as null
    assert winner["sortino"] is None  # no negative bar return
    with pytest.raises(ValueError, match="initial_capital=-5"):
        metrics(run(CALM), "5m", initial_capital=-5)
    with pytest.raises(ValueError, match="'7q'"):
        metrics(run(CALM), "7q")


# --- walk-forward ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "train", "test", "step"), [(100, 30, 10, None), (1000, 200, 50, 80), (71769, 8640, 2016, None)]
)
def test_rolling_windows_never_overlap_their_test_data(n, train, test, step):
    windows = rolling_windows(n, train, test, step)
    assert windows
    previous_stop = 0
    for w in windows:
        assert w.in_sample.stop - w.in_sample.start == train
        assert w.out_of_sample.stop - w.out_of_sample.start == test
        assert w.out_of_sample.start == w.in_sample.stop  # test follows its training, no overlap
        assert w.out_of_sample.start >= previous_stop  # successive tests disjoint
        assert 0 <= w.in_sample.start and w.out_of_sample.stop <= n
        previous_stop = w.out_of_sample.stop
    # No further whole window would fit.
    assert windows[-1].in_sample.start + (step or test) + train + test > n
    check_windows(windows, n)


def test_rolling_windows_count_and_refusals():
    assert [(w.in_sample, w.out_of_sample) for w in rolling_windows(100, 30, 10)][:2] == [
        (slice(0, 30), slice(30, 40)),
        (slice(10, 40), slice(40, 50)),
    ]
    assert len(rolling_windows(100, 30, 10)) == 7
    with pytest.raises(ValueError, match="exceeds n_bars=100"):
        rolling_windows(100, 90, 20)
    with pytest.raises(ValueError, match="step_bars=5: must be at least test_bars=10"):
        rolling_windows(100, 30, 10, 5)
    with pytest.raises(ValueError, match="test_bars=1"):
        rolling_windows(100, 30, 1)
    with pytest.raises(ValueError, match="train_bars=2.5"):
        rolling_windows(100, 2.5, 10)
    with pytest.raises(ValueError, match="overlaps its in_sample"):
        check_windows([Window(slice(0, 30), slice(20, 40))], 100)
    with pytest.raises(ValueError, match="overlaps the previous test window"):
        check_windows([Window(slice(0, 30), slice(30, 40)), Window(slice(5, 35), slice(35, 45))], 100)
    with pytest.raises(ValueError, match="precedes its in_sample"):
        check_windows([Window(slice(50, 80), slice(10, 20))], 100)


def test_walk_forward_selects_in_sample_and_judges_out_of_sample(btc):
    n = 20_000
    prices = {k: v[:n] for k, v in btc.items()}
    close = prices["close"]
    grid = [(f, s) for f in (5, 12, 24) for s in (40, 100)]
    columns = [crossings(ema(close, f), ema(close, s)) for f, s in grid]
    entries = np.stack([e for e, _ in columns], axis=1)
    exits = np.stack([x for _, x in columns], axis=1)
    m = len(grid)
    stops, targets, trailing = np.full(m, 0.02), np.full(m, np.nan), np.full(m, np.nan)
    rules = FillRules()
    windows = rolling_windows(n, 6000, 2000)
    ohlc = [prices[k] for k in ("open", "high", "low", "close")]
    result = walk_forward(*ohlc, entries, exits, stops, targets, trailing, rules, windows, "5m")

    assert result.in_sample.height == result.out_of_sample.height == len(windows) == 7
    chained_equity = 1.0
    for k, w in enumerate(windows):
        in_table = metrics(
            simulate(
                *(p[w.in_sample] for p in ohlc),
                entries[w.in_sample],
                exits[w.in_sample],
                stops,
                targets,
                trailing,
                rules,
            ),
            "5m",
        )
        best = int(np.argmax(in_table["score"].to_numpy()))
        assert result.in_sample["combo"][k] == result.out_of_sample["combo"][k] == best
        assert result.in_sample["score"][k] == pytest.approx(in_table["score"][best])
        tested = simulate(
            *(p[w.out_of_sample] for p in ohlc),
            entries[w.out_of_sample, best],
            exits[w.out_of_sample, best],
            stops[best],
            targets[best],
            trailing[best],
            rules,
        )
        assert result.out_of_sample.row(k, named=True) | {"window": k} == (
            {
                "window": k,
                "is_start": w.in_sample.start,
                "is_stop": w.in_sample.stop,
                "oos_start": w.out_of_sample.start,
                "oos_stop": w.out_of_sample.stop,
                "combo": best,
            }
            | metrics(tested, "5m").drop("combo").row(0, named=True)
        )
        chained_equity *= float(tested.final_equity[0])

    trades = result.out_of_sample_trades
    assert trades.n_trades == result.out_of_sample["trades"].sum() > 0
    # Every test trade starts after its window opens (flat at the start) and ends inside it.
    for entry, exit_ in zip(trades.entry_idx, trades.exit_idx):
        window = next(w for w in windows if w.out_of_sample.start <= entry < w.out_of_sample.stop)
        assert window.out_of_sample.start < entry <= exit_ < window.out_of_sample.stop
    aggregate = result.aggregate.row(0, named=True)
    assert aggregate["total_return"] == pytest.approx(chained_equity - 1, rel=1e-12)
    assert aggregate["trades"] == trades.n_trades
    assert aggregate["max_drawdown"] >= result.out_of_sample["max_drawdown"].max() - 1e-12
    assert aggregate["exposure"] == pytest.approx(
        (result.out_of_sample["exposure"] * 2000).sum() / (2000 * len(windows))
    )

    by_drawdown = walk_forward(
        *ohlc, entries, exits, stops, targets, trailing, rules, windows[:1], "5m", select_by="max_drawdown"
    )
    in_table = metrics(
        simulate(
            *(p[windows[0].in_sample] for p in ohlc),
            entries[windows[0].in_sample],
            exits[windows[0].in_sample],
            stops,
            targets,
            trailing,
            rules,
        ),
        "5m",
    )
    assert by_drawdown.in_sample["combo"][0] == int(np.argmin(in_table["max_drawdown"].to_numpy()))
    with pytest.raises(ValueError, match="select_by='luck'"):
        walk_forward(*ohlc, entries, exits, stops, targets, trailing, rules, windows, "5m", select_by="luck")


# --- the macro orchestrator's regime and results file ------------------------------------------------


@pytest.mark.parametrize(
    ("stats", "min_win_rate", "regime"),
    [
        ({"totalPNL": 120.0, "winRate": 0.45, "trades": 30, "drawdown": 0.1}, 0.2, "Bull"),
        ({"totalPNL": 120.0, "winRate": 0.2}, 0.2, "Bull"),  # at the minimum counts
        ({"totalPNL": 120.0, "winRate": 0.19}, 0.2, "Flat"),  # profit, but too few winners
        ({"totalPNL": 120.0, "winRate": 0.3}, 0.4, "Flat"),
        ({"totalPNL": -5.0, "winRate": 0.9}, 0.2, "Bear"),  # losing with many small wins
        ({"totalPNL": -5.0, "winRate": 0.05}, 0.2, "Bear"),
        ({"totalPNL": 0.0, "winRate": 0.5}, 0.2, "Flat"),
        ({"totalPNL": 50.0, "winRate": None}, 0.2, "Flat"),
        ({"totalPNL": 50.0, "winRate": 0.5, "trades": 0}, 0.2, "Flat"),
        ({"winRate": 0.5}, 0.2, "Flat"),
        ({"totalPNL": None, "winRate": 0.5}, 0.2, "Flat"),
        ({"totalPNL": float("nan"), "winRate": 0.5}, 0.2, "Flat"),
        ({}, 0.2, "Flat"),
    ],
)
def test_regime_from_stats(stats, min_win_rate, regime):
    assert regime_from_stats(stats, min_win_rate) == regime


def test_regime_from_stats_refuses_ambiguous_or_wrong_values():
    with pytest.raises(ValueError, match=r"winRate=45.0: must be a fraction"):
        regime_from_stats({"totalPNL": 10.0, "winRate": 45.0})
    with pytest.raises(ValueError, match=r"totalPNL='12'"):
        regime_from_stats({"totalPNL": "12", "winRate": 0.5})
    with pytest.raises(ValueError, match=r"min_win_rate=20"):
        regime_from_stats({"totalPNL": 10.0, "winRate": 0.5}, 20)


def test_backtest_results_file_shape_and_atomic_write(tmp_path):
    table = metrics(run(CALM, entries={0, 2}, exits={1, 3}), "5m")
    rows = table.select(
        pl.lit("ema_9_50").alias("variant"),
        pl.lit("5m").alias("timeframe"),
        "pnl",
        "win_rate",
        "trades",
        "max_drawdown",
    ).vstack(
        pl.DataFrame(
            {
                "variant": ["ema_9_50", "idle"],
                "timeframe": ["1h", "4h"],
                "pnl": [-12.5, 0.0],
                "win_rate": [0.25, None],
                "trades": [4, 0],
                "max_drawdown": [0.03, 0.0],
            },
            schema_overrides={"win_rate": pl.Float64, "trades": pl.Int64},
        )
    )
    stamp = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
    document = backtest_results_json(rows, generated_at=stamp)
    expected_5m = table.row(0, named=True)
    assert document == {
        "generated_at": "2024-06-01T12:00:00Z",
        "results": {
            "ema_9_50": {
                "5m": {
                    "totalPNL": expected_5m["pnl"],
                    "winRate": expected_5m["win_rate"],
                    "trades": expected_5m["trades"],
                    "drawdown": expected_5m["max_drawdown"],
                },
                "1h": {"totalPNL": -12.5, "winRate": 0.25, "trades": 4, "drawdown": 0.03},
            },
            "idle": {"4h": {"totalPNL": 0.0, "winRate": None, "trades": 0, "drawdown": 0.0}},
        },
    }
    assert expected_5m["trades"] == 2 and expected_5m["pnl"] > 0 and expected_5m["win_rate"] == 1.0

    target = tmp_path / "macro" / "backtest_results.json"
    target.parent.mkdir()
    target.write_text('{"old": true}')
    assert write_backtest_results(target, rows, generated_at=stamp) == target
    assert json.loads(target.read_text()) == document
    assert sorted(p.name for p in target.parent.iterdir()) == ["backtest_results.json"]  # no temp file left
    written = json.loads(target.read_text())["results"]
    assert [
        regime_from_stats(written["ema_9_50"]["5m"]),
        regime_from_stats(written["ema_9_50"]["1h"]),
        regime_from_stats(written["idle"]["4h"]),
    ] == ["Bull", "Bear", "Flat"]

    with pytest.raises(ValueError, match=r"second row for variant 'ema_9_50' and timeframe '5m'"):
        write_backtest_results(target, rows.vstack(rows.head(1)))
    with pytest.raises(ValueError, match=r"rows\[0\]: missing max_drawdown"):
        write_backtest_results(target, [{"variant": "v", "timeframe": "5m", "pnl": 1.0, "win_rate": 0.5, "trades": 1}])
    assert json.loads(target.read_text()) == document  # a refused write leaves the file as it was
    assert sorted(p.name for p in target.parent.iterdir()) == ["backtest_results.json"]
