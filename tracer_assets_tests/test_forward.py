"""The forward test: real candles replayed through the strategy decider, the risk manager and the
paper broker make the backtest engine's trades (parity), its books balance at every step, the
exits of a spec (signal, stop, target, trailing) happen where a trader works them out by hand,
and `tracer forward` prints and writes what it did."""

import json
from collections import defaultdict
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import numpy as np
import polars as pl
import pytest
from conftest import bundled_frame, clean_tracer_environment, write_ohlcv

from tracer_assets.cli import main as tracer_main
from tracer_assets.research.engine import FillRules
from tracer_assets.research.spec import builtin_spec, load_spec
from tracer_assets.trading.accounts import REPLAY_MARKET
from tracer_assets.trading.decide import ENTRY_LABELS, Selection, decide_by_strategy, macro_selection, new_candles
from tracer_assets.trading.forward import OPEN_LIMITS, ForwardSeries, compare_with_backtest, forward_test
from tracer_assets.trading.orders import Action
from tracer_assets.trading.paper import PaperBroker
from tracer_assets.trading.risk import MarketRules
from tracer_assets.trading.strategy_call import PickedStrategy, strategy_call

FEE, SLIPPAGE_BPS = Decimal("0.001"), Decimal(5)
SYMBOLS = ["BTC/USDT", "ETH/USDT", "SOL/USDT"]


def market(symbol: str) -> MarketRules:
    return MarketRules(symbol=symbol, **REPLAY_MARKET)


def candles(symbol: str, timeframe: str) -> pl.DataFrame:
    return bundled_frame(symbol, timeframe).rename({"date": "ts"})


def real_series(name: str, timeframe: str = "1h") -> list[ForwardSeries]:
    spec = builtin_spec(name)
    combo = {n: p.default for n, p in spec.parameters.items()}
    return [
        ForwardSeries(symbol, timeframe, PickedStrategy(name, spec, combo, None), candles(symbol, timeframe))
        for symbol in SYMBOLS
    ]


def window(series: list[ForwardSeries], days: int = 45) -> tuple[datetime, datetime]:
    ts = series[0].candles["ts"]
    start = ts[len(ts) // 2]
    return start, start + timedelta(days=days)


def run(series, start, end, limits=OPEN_LIMITS):
    broker = PaperBroker("USDT", Decimal(10_000), None, FEE, SLIPPAGE_BPS)
    return forward_test(series, start, end, broker, limits, market, Decimal(100))


# --- parity ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "exits"),
    [
        ("ema_cross", {"signal", "stop"}),
        ("bollinger_breakout", {"signal", "trailing"}),  # a trailing stop
        ("macd_hist_trend", {"signal", "stop", "target"}),  # a fixed stop and a target
    ],
)
def test_the_forward_test_makes_the_backtest_engines_trades(name, exits):
    series = real_series(name)
    start, end = window(series)
    forward = run(series, start, end)
    parity = compare_with_backtest(series, forward, FillRules(fee=float(FEE), slippage_bps=float(SLIPPAGE_BPS)))
    compared = parity.rows.filter(pl.col("identical").is_not_null())
    assert parity.compared == compared.height >= 20
    # Entry and exit candles, fill prices, fees per unit and exit reasons: all identical.
    assert parity.matched == parity.compared, compared.filter(~pl.col("identical"))["note"].to_list()[:3]
    assert set(compared["backtest_exit_reason"]) == exits
    # The one kind of difference left is named: the engine sells at the end of the data.
    open_at_end = parity.rows.filter(pl.col("identical").is_null())
    assert open_at_end.height == forward.trades()["exit_ts"].null_count()
    assert all("end_of_data" in note for note in open_at_end["note"])


def test_a_trade_the_risk_manager_refuses_is_named_in_the_comparison():
    series = real_series("ema_cross")
    start, end = window(series)
    tight = replace(OPEN_LIMITS, max_open_positions=1)
    parity = compare_with_backtest(
        series, run(series, start, end, tight), FillRules(fee=float(FEE), slippage_bps=float(SLIPPAGE_BPS))
    )
    refused = parity.rows.filter(pl.col("note").str.contains("refused by the risk manager"))
    assert refused.height > 0
    assert all("open_positions: 1 open positions, limit 1" in note for note in refused["note"])
    assert parity.matched < parity.compared


# --- accounting --------------------------------------------------------------------------------


def test_cash_plus_positions_is_equity_at_every_step_and_fees_add_up():
    series = real_series("macd_hist_trend")
    start, end = window(series, days=20)
    forward = run(series, start, end)
    broker = forward.broker
    fills = sorted(broker.fills, key=lambda f: f.ts)
    assert len(fills) > 20
    # Rebuild cash and holdings from the fills alone, and mark them at each step's closes.
    closes = defaultdict(dict)
    for s in series:
        for ts, close in s.candles.select("ts", "close").iter_rows():
            closes[s.symbol][ts] = Decimal(repr(close))
    cash, held, f = Decimal(10_000), defaultdict(Decimal), 0
    last_close: dict[str, Decimal] = {}
    for step in forward.equity:
        candle_open = step["ts"] - timedelta(hours=1)
        while f < len(fills) and fills[f].ts <= candle_open:
            fill = fills[f]
            value = fill.amount * fill.price
            cash += -value - fill.fee if fill.side == "buy" else value - fill.fee
            held[fill.symbol] += fill.amount if fill.side == "buy" else -fill.amount
            f += 1
        for symbol in closes:
            if candle_open in closes[symbol]:
                last_close[symbol] = closes[symbol][candle_open]
        positions = sum((amount * last_close[s] for s, amount in held.items() if amount), Decimal(0))
        assert abs(step["quote"] - cash) <= Decimal("1e-12"), step["ts"]
        assert abs(step["positions_value"] - positions) <= Decimal("1e-9"), step["ts"]
    assert f == len(fills)
    # Every fee paid is a fill's fee: the orders' fees plus those of the broker's own exits.
    order_fees = sum((o.fee for o in broker.orders if o.status == "filled"), Decimal(0))
    exit_fees = sum((x.fee for x in fills if x.reason in ("stop", "target", "trailing")), Decimal(0))
    assert sum((x.fee for x in fills), Decimal(0)) == order_fees + exit_fees
    assert sum((p.fees_paid for p in broker.position_history), Decimal(0)) == order_fees + exit_fees
    # Each fee is the fee rate of its fill's notional, rounded up to 18 places at most.
    for fill in fills:
        assert Decimal(0) <= fill.fee - fill.amount * fill.price * FEE < Decimal("1e-17")


# --- the strategy decider's exits on hand-built candles ----------------------------------------

SPEC = {
    "name": "sma_pair",
    "description": "A 2-bar SMA crossing a 4-bar SMA.",
    "timeframe": "1h",
    "entry": {"cross_above": {"a": {"indicator": "sma", "params": {"window": 2}},
                              "b": {"indicator": "sma", "params": {"window": 4}}}},
    "exit": {"cross_below": {"a": {"indicator": "sma", "params": {"window": 2}},
                             "b": {"indicator": "sma", "params": {"window": 4}}}},
}  # fmt: skip
T0 = datetime(2024, 1, 1, tzinfo=UTC)


def hand_built(bars: list[tuple[float, float, float, float]]) -> pl.DataFrame:
    """(open, high, low, close) per hour from T0."""
    o, h, low, c = (np.array(column, dtype=float) for column in zip(*bars))
    return pl.DataFrame(
        {
            "ts": [T0 + timedelta(hours=i) for i in range(len(bars))],
            "open": o,
            "high": h,
            "low": low,
            "close": c,
            "volume": np.ones(len(bars)),
        }
    )


# Falling, then a jump: sma2 crosses above sma4 at the close of bar 5; the buy fills at bar 6's open.
DOWN_THEN_UP = [(10, 10, 10, 10), (9, 9, 9, 9), (8, 8, 8, 8), (7, 7, 7, 7), (6, 6, 6, 6), (6, 12, 6, 12)]


def hand_trade(stops: dict, later: list[tuple]) -> tuple[list, list]:
    spec = load_spec({**SPEC, **stops})
    series = [ForwardSeries("BTC/USDT", "1h", PickedStrategy("sma_pair", spec, {}, None), hand_built(later))]
    broker = PaperBroker("USDT", Decimal(10_000), None, FEE, Decimal(0))
    forward = forward_test(series, T0, T0 + timedelta(days=1), broker, OPEN_LIMITS, market, Decimal(100))
    return forward.trades().iter_rows(named=True), forward.decisions


def test_entry_then_exit_rule():
    # After the entry, the price falls back: sma2 crosses below sma4 at bar 8's close; sold at bar 9's open.
    bars = [*DOWN_THEN_UP, (12, 12, 12, 12), (12, 12, 12, 12), (5, 5, 5, 5), (4, 4, 4, 4)]
    (trade,), decisions = hand_trade({}, bars)
    assert [d["action"] for d in decisions] == ["BUY", "SELL"]
    assert (trade["entry_ts"], trade["entry_price"]) == (T0 + timedelta(hours=6), Decimal(12))
    assert (trade["exit_ts"], trade["exit_price"], trade["exit_reason"]) == (T0 + timedelta(hours=9), 4, "signal")


def test_stop_loss_at_its_level_from_the_fill():
    # Filled at 12: stop 2% below, 11.76. Bar 7's low 11.5 reaches it: sold at 11.76, not at the low.
    bars = [*DOWN_THEN_UP, (12, 12.5, 12, 12.4), (12.4, 12.6, 11.5, 12.5)]
    (trade,), _ = hand_trade({"stop_loss": 0.02}, bars)
    assert (trade["exit_ts"], trade["exit_price"], trade["exit_reason"]) == (
        T0 + timedelta(hours=7),
        Decimal("11.76"),
        "stop",
    )


def test_take_profit_at_its_level_and_a_gap_fills_at_the_open():
    bars = [*DOWN_THEN_UP, (12, 12.5, 12, 12.4), (12.4, 12.7, 12.3, 12.5)]
    (trade,), _ = hand_trade({"take_profit": 0.05}, bars)  # target 12.6, reached by bar 7's high
    assert (trade["exit_ts"], trade["exit_price"], trade["exit_reason"]) == (
        T0 + timedelta(hours=7),
        Decimal("12.6"),
        "target",
    )
    gap = [*DOWN_THEN_UP, (12, 12.5, 12, 12.4), (13, 13.2, 12.9, 13.1)]  # opens above the target
    (trade,), _ = hand_trade({"take_profit": 0.05}, gap)
    assert (trade["exit_price"], trade["exit_reason"]) == (13, "target")


def test_trailing_stop_follows_the_highs_of_earlier_candles_only():
    # Filled at 12; bar 6 reaches 15 (it cannot stop itself out on its own high); bar 7's trailing
    # level is 15 x 0.9 = 13.5, and its low 13 reaches it: sold at 13.5.
    bars = [*DOWN_THEN_UP, (12, 15, 11.5, 14.8), (14.8, 14.9, 13, 13.2)]
    (trade,), _ = hand_trade({"trailing_stop": 0.1}, bars)
    assert (trade["exit_ts"], trade["exit_price"], trade["exit_reason"]) == (
        T0 + timedelta(hours=7),
        Decimal("13.5"),
        "trailing",
    )


def test_decide_by_strategy_picks_the_best_kept_strategy_and_exits_by_the_one_that_bought():
    spec = load_spec({**SPEC, "stop_loss": 0.02, "take_profit": 0.05, "trailing_stop": 0.03})
    other = load_spec({**SPEC, "name": "other"})
    arrays = {c: hand_built(DOWN_THEN_UP)[c].to_numpy() for c in ("open", "high", "low", "close", "volume")}
    kept, known = {"a": spec}, {"a": spec, "b": other}
    rows = {"1h": [
        {"strategy_id": "a", "score": 0.5, "parameters": ""},
        {"strategy_id": "b", "score": 1.5, "parameters": ""},  # best, but not kept
    ]}  # fmt: skip
    selected = Selection("BTC/USDT", "1h", {"1h": "selected: ..."})
    decision, picked = decide_by_strategy(selected, None, kept, known, rows, lambda tf: arrays, "5m")
    assert (decision.action, picked.strategy_id, decision.price) == (Action.BUY, "a", Decimal(12))
    assert (decision.stop_fraction, decision.target_fraction, decision.trailing_stop) == (
        Decimal("0.02"),
        Decimal("0.05"),
        Decimal("0.03"),
    )
    nothing = Selection("BTC/USDT", None, {"1h": "not a candidate: ..."})
    decision, picked = decide_by_strategy(nothing, None, kept, known, rows, lambda tf: arrays, "5m")
    assert (decision.action, picked) == (Action.HOLD, None)
    assert decision.reason.startswith("no timeframe selected: 1h: not a candidate")
    # Held: the archived strategy that bought it is read, whatever the selection says.
    falling = {k: v[:5] for k, v in arrays.items()}
    decision, picked = decide_by_strategy(nothing, ("1h", "b", ""), kept, known, rows, lambda tf: falling, "5m")
    assert (picked.strategy_id, decision.action) == ("b", Action.HOLD)
    assert "held, exit rule false" in decision.reason


def test_the_macro_selection_enters_on_the_labels_of_its_decider():
    """The rules decider's trigger is the ensemble's strong_bull; the strategy decider's is its
    strategy's entry rule, so any label but a bearish one lets its timeframe be selected."""
    bull_stats = {"totalPNL": 120.0, "winRate": 0.55, "trades": 40}
    bear_stats = {"totalPNL": -30.0, "winRate": 0.6, "trades": 40}

    def selected(label: str, decider: str, stats=bull_stats) -> str | None:
        signals = {"1h": {"ensemble_label": label}}
        return macro_selection("BTC/USDT", signals, {"1h": stats}, ["1h"], 0.2, ENTRY_LABELS[decider]).timeframe

    assert [selected(label, "strategy") for label in ("strong_bull", "bull", "other", "bear", "strong_bear")] == [
        "1h", "1h", "1h", None, None,
    ]  # fmt: skip
    assert [selected(label, "rules") for label in ("strong_bull", "bull", "other")] == ["1h", None, None]
    assert selected("strong_bull", "strategy", bear_stats) is None  # the backtest regime still guards
    why = macro_selection("BTC/USDT", {"1h": {"ensemble_label": "bear"}}, {"1h": bull_stats}, ["1h"], 0.2,
                          ENTRY_LABELS["strategy"]).reason  # fmt: skip
    assert why == "1h: not a candidate: backtest regime Bull (totalPNL 120.00, winRate 0.55), ensemble bear"


def test_the_new_candles_of_a_series_are_those_after_the_previous_signal_events():
    ts = [T0 + timedelta(hours=i) for i in range(6)]
    assert new_candles(ts, None, None) == 1  # no earlier event: the newest only
    assert new_candles(ts, ts[4], None) == 1  # one tick, one candle
    assert new_candles(ts, ts[2], None) == 3  # a tick after a pause: three candles, none skipped
    assert new_candles(ts, ts[5], None) == 1  # the same candle again, never read by a strategy
    assert new_candles(ts, ts[5], ts[5]) == 0  # the same candle, read by a strategy decision already
    assert new_candles(ts, T0 + timedelta(days=1), None) == 1  # the clock went back
    assert new_candles([], ts[2], None) == 1


def test_a_read_after_several_new_candles_misses_no_entry_or_exit():
    """A tick after a pause (or on a fast replay clock) brings several candles: the strategy is
    read at each. The entry fired at bar 5's close (DOWN_THEN_UP); two candles later it still
    buys while the engine is in that trade, and holds once a stop has ended it."""
    spec = load_spec({**SPEC, "stop_loss": 0.05})

    def call(bars, held=False, new_bars=3):
        frame = hand_built(bars)
        arrays = {c: frame[c].to_numpy() for c in ("open", "high", "low", "close", "volume")}
        return strategy_call(spec, {}, arrays, held, new_bars)

    rising = [*DOWN_THEN_UP, (12, 13, 12, 13), (13, 14, 13, 14)]
    caught_up = call(rising)
    assert (caught_up.action, caught_up.stop_loss) == (Action.BUY, 0.05)
    assert caught_up.reason == "sma_pair(): entry rule true 2 candles before the newest close, still in that trade"
    assert call(rising, new_bars=1).action is Action.HOLD  # read at the newest candle only: no entry there
    # The entry candle read again (a 4h candle outlives many ticks): not a second buy.
    entry_bar = DOWN_THEN_UP
    assert call(entry_bar, new_bars=1).action is Action.BUY
    again = call(entry_bar, new_bars=0)
    assert (again.action, again.reason) == (Action.HOLD, "sma_pair(): flat, no new candle since the previous read")
    stopped = [*DOWN_THEN_UP, (12, 13, 11, 12.5), (12.5, 13, 12.4, 12.9)]  # bar 6 fills at 12, its low 11 < 11.4
    ended = call(stopped)
    assert ended.action is Action.HOLD
    assert ended.reason == "sma_pair(): flat; its entry 2 candles ago led to a trade that has ended since"
    # A level rule (close > 10) true on the new candles, but the engine has been in the trade it
    # opened at bar 0's signal all along: the loop, flat, does not join it late.
    above_ten = load_spec({**SPEC, "entry": {"compare": {"left": "close", "op": ">", "right": 10}},
                           "exit": {"compare": {"left": "close", "op": "<", "right": 0}}})  # fmt: skip
    frame = hand_built([(c, c, c, c) for c in (11, 12, 13, 12, 11, 9)])
    arrays = {c: frame[c].to_numpy() for c in ("open", "high", "low", "close", "volume")}
    late = strategy_call(above_ten, {}, arrays, False, 3)
    assert (late.action, late.reason) == (
        Action.HOLD,
        "sma_pair(): flat; not joining the trade it entered 5 candles ago",
    )
    # Held: the exit rule fired at bar 8's close (sma2 crossed below sma4), read one candle later.
    falling = [*DOWN_THEN_UP, (12, 13, 12, 13), (13, 13, 6, 6), (6, 7, 6, 7), (7, 8, 7, 8)]
    sold = call(falling, held=True)
    assert sold.action is Action.SELL
    assert sold.reason == "sma_pair(): exit rule true 1 candle before the newest close, held"
    assert call(falling, held=True, new_bars=1).action is Action.HOLD


# --- the command -------------------------------------------------------------------------------


def test_tracer_forward_prints_the_trades_and_the_parity_and_writes_its_tables(tmp_path, monkeypatch, capsys):
    clean_tracer_environment(monkeypatch)
    database = tmp_path / "tracer.duckdb"
    write_ohlcv(str(database), "BTC/USDT", "1h", bars=2000)
    monkeypatch.setenv("TRACER_DUCKDB_PATH", str(database))
    monkeypatch.setenv("TRACER_SYMBOLS", "BTC/USDT")
    monkeypatch.setenv("TRACER_TIMEFRAMES", "1h")
    ts = candles("BTC/USDT", "1h")["ts"].head(2000)
    start, end = ts[1000], ts[1999]
    args = ["forward", "--start", start.isoformat(), "--end", end.isoformat(), "--timeframe", "1h"]
    code = tracer_main([*args, "--strategy", "ema_cross", "--output-dir", str(tmp_path / "out")])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "BTC/USDT   ema_cross (ema_cross) fast=10,slow=40" in printed.out
    summary = json.loads(next((tmp_path / "out").glob("*_1h/summary.json")).read_text())
    parity = summary["parity"]
    assert parity["compared"] > 5 and parity["identical"] == parity["compared"]
    assert f"{parity['identical']} of {parity['compared']} closed trades identical" in printed.out
    assert "Buy and hold over the window: BTC/USDT" in printed.out
    trades = pl.read_parquet(next((tmp_path / "out").glob("*_1h/trades.parquet")))
    assert trades.filter(pl.col("exit_ts").is_not_null()).height == summary["trades_closed"] >= parity["compared"]

    # Without research and without --strategy: what to do, exit 2.
    assert tracer_main(args) == 2
    assert "no kept strategy has an out-of-sample score on BTC/USDT 1h" in capsys.readouterr().err
    assert tracer_main([*args, "--strategy", "nope"]) == 2
    assert "--strategy 'nope'" in capsys.readouterr().err
