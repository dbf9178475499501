"""The models' features and labels (ml/dataset.py), checked as a quant researcher would check them.

- Labels on hand-built series: the net forward return enters at the NEXT bar's open and exits h bars
  later, less a round trip of fees; the class thresholds are in units of realized_vol x sqrt(h) and
  inclusive at the boundary; nothing is labelled across the end of the data, a gap or a symbol.
- Higher-timeframe context on real Binance candles: joined as of the row's CLOSE (a 15m bar sees the
  1h bar that had closed by its own close), never by open time.
- The no-lookahead guard: silent on the real builder, loud on a planted future return and on a
  context joined by open time.
- The feature sets' columns, and features that do not depend on the price level.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from functools import cache

import polars as pl
import pytest
from conftest import bundled_frame
from polars.testing import assert_frame_equal

from tracer_assets.features.indicators import compute_indicators
from tracer_assets.market.timeframes import timeframe_seconds
from tracer_assets.ml.dataset import (
    BASE_FEATURES,
    CONTEXT_STEMS,
    PRICE_FEATURES,
    TREND_FEATURES,
    add_labels,
    base_features,
    build_features,
    context_column,
    feature_columns,
    feature_lookahead_mismatches,
    label_columns,
)

ALL_TIMEFRAMES = ["15m", "1h", "4h"]
STRONG_BEAR, BEAR, OTHER, BULL, STRONG_BULL = range(5)
HOUR = timedelta(hours=1)
T0 = datetime(2024, 3, 1, tzinfo=UTC)


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


@cache
def five_minute(symbol: str) -> pl.DataFrame:
    """The bundled 5m Binance candles of `symbol` in the stored shape (no gaps in 2024's files)."""
    return bundled_frame(symbol).select(
        pl.lit(symbol).alias("symbol"),
        pl.col("date").dt.cast_time_unit("us").alias("ts"),
        *(pl.col(c).cast(pl.Float64) for c in ("open", "high", "low", "close", "volume")),
    )


@cache
def real_candles(symbols: tuple[str, ...], start: datetime, days: int, timeframes: tuple[str, ...]) -> pl.DataFrame:
    """`days` of real candles from `start`, resampled from 5m into each timeframe (complete buckets only):
    first open, max high, min low, last close, summed volume."""
    frames = []
    for symbol in symbols:
        five = five_minute(symbol).filter(pl.col("ts").is_between(start, start + timedelta(days=days), closed="left"))
        for tf in timeframes:
            bucket = five.group_by_dynamic("ts", every=tf, closed="left", label="left").agg(
                pl.col("open").first(),
                pl.col("high").max(),
                pl.col("low").min(),
                pl.col("close").last(),
                pl.col("volume").sum(),
                pl.len().alias("n"),
            )
            complete = bucket.filter(pl.col("n") == timeframe_seconds(tf) // 300)
            frames.append(
                complete.select(
                    pl.lit(symbol).alias("symbol"),
                    pl.lit(tf).alias("timeframe"),
                    "ts",
                    "open",
                    "high",
                    "low",
                    "close",
                    "volume",
                )
            )
    return pl.concat(frames)


def hourly_series(opens: list[float], vol: float = 0.01, symbol: str = "BTC/USDT") -> pl.DataFrame:
    """A hand-built 1h feature frame: just the columns add_labels reads."""
    return pl.DataFrame(
        {
            "symbol": [symbol] * len(opens),
            "timeframe": ["1h"] * len(opens),
            "ts": [T0 + i * HOUR for i in range(len(opens))],
            "open": opens,
            "realized_vol": [vol] * len(opens),
        },
        schema_overrides={"ts": pl.Datetime("us", "UTC")},
    )


def row_at(frame: pl.DataFrame, timeframe: str, ts: datetime, symbol: str = "BTC/USDT") -> dict:
    rows = frame.filter((pl.col("symbol") == symbol) & (pl.col("timeframe") == timeframe) & (pl.col("ts") == ts))
    assert rows.height == 1, (symbol, timeframe, ts, rows.height)
    return rows.row(0, named=True)


# ---------------------------------------------------------------------------------------------
# 1. Labels
# ---------------------------------------------------------------------------------------------

# 12 hourly opens. For h = 2 the trade of bar t buys open[t+1] and sells open[t+3]; with a fee of
# 0.1% a side, fwd = ln(open[t+3] / open[t+1]) + 2 ln(0.999), z = fwd / (0.01 x sqrt 2):
#   t  entry  exit   fwd        z       class (thresholds 0.5, 1.5)
#   0  100.0  103.0  +0.02756  +1.949  strong_bull
#   1  100.5   99.0  -0.01704  -1.205  bear
#   2  103.0  100.0  -0.03156  -2.232  strong_bear
#   3   99.0   97.0  -0.02241  -1.585  strong_bear
#   4  100.0   98.5  -0.01711  -1.210  bear
#   5   97.0   98.0  +0.00826  +0.584  bull
#   6   98.5   99.5  +0.00810  +0.573  bull
#   7   98.0   99.0  +0.00815  +0.576  bull
#   8   99.5   99.5  -0.00200  -0.141  other      (the fee alone)
#   9..11: no exit bar -> null
OPENS = [100.0, 100.0, 100.5, 103.0, 99.0, 100.0, 97.0, 98.5, 98.0, 99.5, 99.0, 99.5]
FEE = 0.001


def test_forward_return_enters_at_the_next_open_and_pays_a_round_trip():
    labelled = add_labels(hourly_series(OPENS), [1, 2], (0.5, 1.5), FEE, ALL_TIMEFRAMES)
    forward, label, label_end = label_columns(2)
    assert (forward, label, label_end) == ("fwd_return_h2", "label_h2", "label_end_h2")
    assert labelled.schema[label] == pl.Int8

    fwd = labelled[forward].to_list()
    for t in range(9):
        assert fwd[t] == pytest.approx(math.log(OPENS[t + 3] / OPENS[t + 1]) + 2 * math.log(1 - FEE), rel=0, abs=1e-15)
    # Not the bar's own open, not a one-way fee (both differ by far more than rounding).
    assert fwd[0] != pytest.approx(math.log(OPENS[2] / OPENS[0]) + 2 * math.log(1 - FEE), abs=1e-6)
    assert fwd[0] != pytest.approx(math.log(OPENS[3] / OPENS[1]) + math.log(1 - FEE), abs=1e-6)
    assert fwd[9:] == [None, None, None]  # the last h + 1 = 3 bars have no exit bar

    assert labelled[label].to_list() == [
        STRONG_BULL,
        BEAR,
        STRONG_BEAR,
        STRONG_BEAR,
        BEAR,
        BULL,
        BULL,
        BULL,
        OTHER,
        None,
        None,
        None,
    ]
    # The label is known at the exit bar's open: ts[t + 3].
    ts = labelled["ts"].to_list()
    assert labelled[label_end].to_list() == [*ts[3:], None, None, None]

    # h = 1: open[t+1] -> open[t+2], z in units of 0.01 x sqrt 1; null for the last 2 bars.
    fwd1 = labelled["fwd_return_h1"].to_list()
    for t in range(10):
        assert fwd1[t] == pytest.approx(math.log(OPENS[t + 2] / OPENS[t + 1]) + 2 * math.log(1 - FEE), abs=1e-15)
    assert fwd1[10:] == [None, None]
    # t=0: ln(100.5/100) - 0.002 = +0.00299 -> z 0.299 other; t=1: ln(103/100.5) - 0.002 = +0.02257 ->
    # z 2.257 strong_bull; t=2: ln(99/103) - 0.002 = -0.04161 -> strong_bear; t=8: ln(99/99.5) - 0.002 =
    # -0.00704 -> z -0.704 bear; t=9: ln(99.5/99) - 0.002 = +0.00304 -> other.
    assert labelled["label_h1"].to_list()[:3] == [OTHER, STRONG_BULL, STRONG_BEAR]
    assert labelled["label_h1"].to_list()[8:] == [BEAR, OTHER, None, None]
    assert labelled["label_end_h1"].to_list() == [*ts[2:], None, None]


def test_class_thresholds_are_inclusive_in_units_of_vol_sqrt_h():
    # Power-of-two price ratios give exact logarithms: ln 4 = 2 ln 2 and ln 1/2 = -ln 2 in floats.
    assert math.log(4.0) == 2 * math.log(2.0) and math.log(0.5) == -math.log(2.0) == math.log(0.25) / 2
    vol = 0.5
    weak = math.log(2.0) / (vol * math.sqrt(2))  # z of a doubling over h = 2 bars, ~0.98
    strong = 2 * weak  # z of a quadrupling, exactly
    # t: entry open[t+1] -> exit open[t+3], ratio -> z
    #   0: 8 -> 16  x2    -> +weak     1: 8 -> 32  x4   -> +strong   2: 16 -> 8  x1/2 -> -weak
    #   3: 32 -> 8  x1/4  -> -strong   4: 8 -> 8   x1   -> 0         5: 8 -> 24  x3   -> 1.58 weak
    #   6: 8 -> 12  x1.5  -> 0.58 weak
    opens = [8.0, 8.0, 8.0, 16.0, 32.0, 8.0, 8.0, 8.0, 24.0, 12.0]
    frame = hourly_series(opens, vol=vol)

    on_the_boundary = add_labels(frame, [2], (weak, strong), 0.0, ALL_TIMEFRAMES)
    z = (on_the_boundary["fwd_return_h2"] / (vol * math.sqrt(2))).to_list()
    assert z[:5] == [weak, strong, -weak, -strong, 0.0]  # exactly at the thresholds
    assert on_the_boundary["label_h2"].to_list() == [
        BULL,
        STRONG_BULL,
        BEAR,
        STRONG_BEAR,
        OTHER,
        BULL,
        OTHER,
        None,
        None,
        None,
    ]

    # One ulp further out, the same returns fall one class towards `other`.
    just_past = add_labels(
        frame, [2], (math.nextafter(weak, math.inf), math.nextafter(strong, math.inf)), 0.0, ALL_TIMEFRAMES
    )
    assert just_past["label_h2"].to_list()[:5] == [OTHER, BULL, OTHER, BEAR, OTHER]


def test_no_label_across_a_gap_a_symbol_or_an_unknown_volatility():
    # Hour 6 is missing: every window [t, t + 3h] that contains it is unlabelled.
    hours = [h for h in range(12) if h != 6]
    btc = hourly_series(OPENS).filter(pl.col("ts").is_in([T0 + h * HOUR for h in hours]))
    # A second symbol on the same hours, listed first: the series must not run into each other.
    eth = hourly_series([2 * o for o in OPENS], symbol="ETH/USDT").with_columns(
        pl.when(pl.col("ts") == T0 + 4 * HOUR).then(None).otherwise(pl.col("realized_vol")).alias("realized_vol")
    )
    labelled = add_labels(pl.concat([eth, btc]), [2], (0.5, 1.5), FEE, ALL_TIMEFRAMES)

    by_hour = {row["ts"]: row for row in labelled.filter(pl.col("symbol") == "BTC/USDT").iter_rows(named=True)}
    assert sorted(by_hour) == [T0 + h * HOUR for h in hours]
    open_at = {h: OPENS[h] for h in hours}
    for h in (0, 1, 2, 7, 8):  # entry h+1 .. exit h+3 all present
        row = by_hour[T0 + h * HOUR]
        assert row["fwd_return_h2"] == pytest.approx(
            math.log(open_at[h + 3] / open_at[h + 1]) + 2 * math.log(1 - FEE), abs=1e-15
        )
        assert row["label_end_h2"] == T0 + (h + 3) * HOUR
    for h in (3, 4, 5, 7 + 2, 10, 11):  # 3, 4, 5 span the gap (5's next row is hour 7); 9-11 hit the end
        row = by_hour[T0 + h * HOUR]
        assert (row["fwd_return_h2"], row["label_h2"], row["label_end_h2"]) == (None, None, None), h

    eth_rows = labelled.filter(pl.col("symbol") == "ETH/USDT")
    # ETH is complete: prices x2 leave the returns as they were, except at hour 4 (no volatility).
    expected = [math.log(OPENS[t + 3] / OPENS[t + 1]) + 2 * math.log(1 - FEE) for t in range(9)]
    got = eth_rows["fwd_return_h2"].to_list()
    assert got[4] is None and eth_rows["label_h2"][4] is None and eth_rows["label_end_h2"][4] is None
    assert [g for i, g in enumerate(got[:9]) if i != 4] == pytest.approx(
        [e for i, e in enumerate(expected) if i != 4], abs=1e-15
    )
    assert got[9:] == [None, None, None]  # not labelled from BTC's first opens


# ---------------------------------------------------------------------------------------------
# 2. Context, joined as of the close
# ---------------------------------------------------------------------------------------------

CONTEXT_START = datetime(2024, 3, 1, tzinfo=UTC)


def test_context_is_the_higher_bar_that_had_closed_by_the_rows_close():
    candles = real_candles(("BTC/USDT",), CONTEXT_START, 20, ("15m", "1h", "4h"))
    features = build_features(compute_indicators(candles), ["15m", "1h"], ALL_TIMEFRAMES)
    ctx_1h = [context_column("1h", s) for s in CONTEXT_STEMS]
    ctx_4h = [context_column("4h", s) for s in CONTEXT_STEMS]
    assert set(features["timeframe"].unique()) == {"15m", "1h"}
    assert (features["feature_time"] - features["ts"]).to_list() == [
        timedelta(minutes=15) if tf == "15m" else HOUR for tf in features["timeframe"]
    ]

    # The hourly reference: base features of the 1h candles alone.
    hourly = base_features(compute_indicators(candles.filter(pl.col("timeframe") == "1h")))
    four_hourly = base_features(compute_indicators(candles.filter(pl.col("timeframe") == "4h")))
    day = datetime(2024, 3, 12, tzinfo=UTC)

    def hourly_stems(frame: pl.DataFrame, timeframe: str, ts: datetime) -> list[float]:
        return [row_at(frame, timeframe, ts)[s] for s in CONTEXT_STEMS]

    def context(timeframe: str, ts: datetime, columns: list[str]) -> list[float]:
        return [row_at(features, timeframe, ts)[c] for c in columns]

    ten, nine = hourly_stems(hourly, "1h", day + 10 * HOUR), hourly_stems(hourly, "1h", day + 9 * HOUR)
    assert all(a != b for a, b in zip(ten, nine))  # the checks below can tell the two bars apart
    # 10:45 closes at 11:00, with the 1h bar 10:00.
    assert context("15m", day + timedelta(hours=10, minutes=45), ctx_1h) == ten
    # 10:30 closes at 10:45: the 1h bar 10:00 is still open, the context is 09:00's.
    assert context("15m", day + timedelta(hours=10, minutes=30), ctx_1h) == nine
    assert context("15m", day + timedelta(hours=10), ctx_1h) == nine
    # 4h: 15m 11:45 (closes 12:00) sees the 4h bar 08:00; 11:30 still sees 04:00.
    assert context("15m", day + timedelta(hours=11, minutes=45), ctx_4h) == hourly_stems(
        four_hourly, "4h", day + 8 * HOUR
    )
    assert context("15m", day + timedelta(hours=11, minutes=30), ctx_4h) == hourly_stems(
        four_hourly, "4h", day + 4 * HOUR
    )
    # A 1h row: no 1h context of itself; the 4h context as of its close (11:00 closes at 12:00 -> 08:00).
    assert context("1h", day + 11 * HOUR, ctx_1h) == [None] * 4
    assert context("1h", day + 11 * HOUR, ctx_4h) == hourly_stems(four_hourly, "4h", day + 8 * HOUR)
    assert context("1h", day + 10 * HOUR, ctx_4h) == hourly_stems(four_hourly, "4h", day + 4 * HOUR)

    # Every row: the higher bar is the one whose close is the row's close rounded down to that timeframe.
    for higher, reference, rows_tf in (("1h", hourly, "15m"), ("4h", four_hourly, "15m"), ("4h", four_hourly, "1h")):
        rows = features.filter(pl.col("timeframe") == rows_tf).with_columns(
            ctx_ts=(pl.col("feature_time").dt.truncate(higher) - pl.duration(seconds=timeframe_seconds(higher)))
        )
        expected = reference.select(
            "symbol", pl.col("ts").alias("ctx_ts"), *(pl.col(s).alias(f"want_{s}") for s in CONTEXT_STEMS)
        )
        joined = rows.join(expected, on=["symbol", "ctx_ts"], how="left")
        for stem in CONTEXT_STEMS:
            got, want = pl.col(context_column(higher, stem)), pl.col(f"want_{stem}")
            wrong = joined.filter(~got.eq_missing(want))
            assert wrong.is_empty(), (higher, rows_tf, stem, wrong.select("ts", "ctx_ts", got, want).head())
        # Not vacuous: after the higher timeframe's warm-up, the context is there.
        filled = joined[context_column(higher, "ema50_dist")].is_not_null().mean()
        assert filled > (0.5 if higher == "4h" else 0.85), (higher, rows_tf, filled)

    # No 1h row carries a 1h context at all.
    assert (
        features.filter(pl.col("timeframe") == "1h").select(ctx_1h).null_count().row(0)
        == (features.filter(pl.col("timeframe") == "1h").height,) * 4
    )


def test_context_is_empty_rather_than_stale_after_a_gap_in_the_higher_timeframe():
    candles = real_candles(("BTC/USDT",), CONTEXT_START, 20, ("15m", "1h", "4h"))
    day = datetime(2024, 3, 12, tzinfo=UTC)
    holed = candles.filter(~((pl.col("timeframe") == "1h") & (pl.col("ts") == day + 9 * HOUR)))
    features = build_features(compute_indicators(holed), ["15m"], ALL_TIMEFRAMES)
    column = context_column("1h", "rsi")
    # 10:00 - 10:30 would see the missing 09:00 bar; 08:00's is more than one hour old by then.
    for minutes in (0, 15, 30):
        assert row_at(features, "15m", day + timedelta(hours=10, minutes=minutes))[column] is None
    # 09:30 (closes 09:45) rightly sees 08:00's, closed 45 minutes earlier; 09:45, closing when 09:00
    # should have, is the next test.
    hourly = base_features(compute_indicators(holed.filter(pl.col("timeframe") == "1h")))
    eight = row_at(hourly, "1h", day + 8 * HOUR)["rsi"]
    assert row_at(features, "15m", day + timedelta(hours=9, minutes=30))[column] == eight
    assert row_at(features, "15m", day + timedelta(hours=10, minutes=45))[column] is not None  # 10:00's


def test_context_is_empty_at_the_close_of_a_missing_higher_bar():
    candles = real_candles(("BTC/USDT",), CONTEXT_START, 20, ("15m", "1h", "4h"))
    day = datetime(2024, 3, 12, tzinfo=UTC)
    # The 1h bar 10:00 is missing (e.g. the 5m candle 10:05 was: 1h 10:00 and 15m 10:00 are incomplete,
    # 15m 10:45 is whole). 15m 10:45 closes at 11:00, when 10:00 should have closed: its context is
    # gone, and 09:00's (closed at 10:00) is one bar stale.
    holed = candles.filter(~((pl.col("timeframe") == "1h") & (pl.col("ts") == day + 10 * HOUR)))
    features = build_features(compute_indicators(holed), ["15m"], ALL_TIMEFRAMES)
    assert row_at(features, "15m", day + timedelta(hours=10, minutes=45))[context_column("1h", "rsi")] is None


# ---------------------------------------------------------------------------------------------
# 3. The no-lookahead guard
# ---------------------------------------------------------------------------------------------

GUARD_SYMBOLS = ("BTC/USDT", "ETH/USDT")
GUARD_START = datetime(2024, 5, 1, tzinfo=UTC)
GUARD_DAYS = 30  # per symbol 2880 15m, 720 1h, 180 4h bars
GUARD_END = GUARD_START + timedelta(days=GUARD_DAYS)
COMPARED = [*BASE_FEATURES, *(context_column(h, s) for h in ("1h", "4h") for s in CONTEXT_STEMS), "open", "log_return"]


def real_build(candles: pl.DataFrame) -> pl.DataFrame:
    return build_features(compute_indicators(candles), ["15m", "1h"], ALL_TIMEFRAMES)


def guard_samples() -> list[tuple[str, str, datetime]]:
    """The newest bars of each symbol: 15m 23:00, 23:15, 23:30, 23:45 and 1h 22:00, 23:00 of the last day."""
    quarters = [GUARD_END - timedelta(minutes=m) for m in (60, 45, 30, 15)]
    hours = [GUARD_END - 2 * HOUR, GUARD_END - HOUR]
    return [(s, "15m", ts) for s in GUARD_SYMBOLS for ts in quarters] + [
        (s, "1h", ts) for s in GUARD_SYMBOLS for ts in hours
    ]


def guard_candles() -> pl.DataFrame:
    return real_candles(GUARD_SYMBOLS, GUARD_START, GUARD_DAYS, ("15m", "1h", "4h"))


def mismatched(mismatches) -> set[tuple[str, str, datetime, str]]:
    return {(m.symbol, m.timeframe, m.ts, m.column) for m in mismatches}


def test_guard_passes_the_real_feature_builder():
    candles = guard_candles()
    samples = guard_samples()
    full = real_build(candles)
    # Not vacuous: at the samples every compared value exists (a 1h row has no 1h context).
    for symbol, timeframe, ts in samples:
        row = row_at(full, timeframe, ts, symbol)
        absent = [c for c in COMPARED if row[c] is None]
        assert absent == ([context_column("1h", s) for s in CONTEXT_STEMS] if timeframe == "1h" else []), absent
    assert feature_lookahead_mismatches(candles, real_build, samples, COMPARED, ALL_TIMEFRAMES) == []


def test_guard_catches_a_planted_future_return():
    def leaking(candles: pl.DataFrame) -> pl.DataFrame:
        return real_build(candles).with_columns(planted=pl.col("log_return").shift(-1).over("symbol", "timeframe"))

    samples = guard_samples()
    mismatches = feature_lookahead_mismatches(guard_candles(), leaking, samples, [*COMPARED, "planted"], ALL_TIMEFRAMES)
    # Every sample but the newest bar of each series (whose next return is unknown in the full data too).
    newest = {("15m", GUARD_END - timedelta(minutes=15)), ("1h", GUARD_END - HOUR)}
    assert mismatched(mismatches) == {(s, tf, ts, "planted") for s, tf, ts in samples if (tf, ts) not in newest}
    for m in mismatches:
        assert m.expected is not None and m.got is None  # the cut history has no next bar


def test_guard_catches_a_context_joined_by_open_time():
    stem = "rsi"
    column = context_column("1h", stem)

    def by_open_time(candles: pl.DataFrame) -> pl.DataFrame:
        """The 15m rows' 1h RSI taken from the newest 1h bar that had OPENED by the 15m bar's open."""
        features = real_build(candles)
        hourly = features.filter(pl.col("timeframe") == "1h").select("symbol", "ts", pl.col(stem).alias("wrong"))
        joined = features.sort("ts").join_asof(
            hourly.sort("ts"), on="ts", by="symbol", strategy="backward", check_sortedness=False
        )
        return joined.with_columns(
            pl.when(pl.col("timeframe") == "15m").then(pl.col("wrong")).otherwise(pl.col(column)).alias(column)
        ).drop("wrong")

    samples = guard_samples()
    mismatches = feature_lookahead_mismatches(guard_candles(), by_open_time, samples, COMPARED, ALL_TIMEFRAMES)
    # 15m 23:00, 23:15 and 23:30 read the 1h bar 23:00 before it closed; 23:45 closes with it (no leak),
    # and the 1h rows are untouched.
    leaking = {(s, "15m", GUARD_END - timedelta(minutes=m), column) for s in GUARD_SYMBOLS for m in (60, 45, 30)}
    assert mismatched(mismatches) == leaking


# ---------------------------------------------------------------------------------------------
# 4. Feature sets
# ---------------------------------------------------------------------------------------------


def test_feature_sets():
    price = feature_columns("15m", "price", ALL_TIMEFRAMES)
    assert price == list(PRICE_FEATURES)
    assert price == [
        "ret_1",
        "ret_3",
        "ret_6",
        "ret_12",
        "ret_24",
        "realized_vol",
        "vol_ratio",
        "atr_pct",
        "volume_z",
        "range_atr",
        "body_atr",
    ]
    assert not set(price) & set(TREND_FEATURES)  # no EMA, MACD or RSI
    assert not any(c.startswith("ctx_") for c in price)

    no_context = feature_columns("15m", "no_context", ALL_TIMEFRAMES)
    assert no_context == list(BASE_FEATURES) == [*TREND_FEATURES, *PRICE_FEATURES]
    assert not any(c.startswith("ctx_") for c in no_context)

    full = feature_columns("15m", "full", ALL_TIMEFRAMES)
    ctx = [c for c in full if c.startswith("ctx_")]
    assert full == [*BASE_FEATURES, *ctx]
    assert ctx == [f"ctx_{h}_{s}" for h in ("1h", "4h") for s in ("ema50_dist", "rsi", "macd_hist_atr", "ret_1")]
    assert [c for c in feature_columns("1h", "full", ALL_TIMEFRAMES) if c.startswith("ctx_")] == ctx[4:]  # 4h only
    assert feature_columns("4h", "full", ALL_TIMEFRAMES) == list(BASE_FEATURES)  # nothing above 4h
    # The configured order does not matter, only the lengths.
    assert feature_columns("15m", "full", ["4h", "1h", "15m"]) == [*BASE_FEATURES, *ctx[4:], *ctx[:4]]

    for bad in ("Full", "context", ""):
        with pytest.raises(ValueError, match="unknown feature set"):
            feature_columns("15m", bad, ALL_TIMEFRAMES)


# ---------------------------------------------------------------------------------------------
# 5. Scale-free features
# ---------------------------------------------------------------------------------------------


def test_base_features_do_not_depend_on_the_price_level():
    candles = real_candles(("ETH/USDT",), CONTEXT_START, 10, ("15m",))
    scaled = candles.with_columns(pl.col(c) * 1000 for c in ("open", "high", "low", "close"))
    columns = ["symbol", "timeframe", "ts", *BASE_FEATURES]
    plain_all = base_features(compute_indicators(candles))
    thousandfold_all = base_features(compute_indicators(scaled))
    # The indicators themselves do scale (the prices really were multiplied).
    assert (thousandfold_all["atr_14"] / plain_all["atr_14"]).drop_nulls().to_list() == pytest.approx(
        [1000.0] * (960 - 14), rel=1e-9
    )
    plain, thousandfold = plain_all.select(columns), thousandfold_all.select(columns)
    assert plain.height == 960 and plain.drop_nulls().height == 960 - 199  # complete from EMA 200's first value
    # 1e-9 relative, with an absolute floor of 1e-10: a few features are differences of nearly equal
    # numbers (close - EMA, MACD - signal, ln c_t - ln c_t-k) and sit near 0 at some bars, where
    # float rounding alone (about 1e-12 absolute here) exceeds 1e-9 of the value. A dependence on the
    # price level would differ by orders of magnitude more.
    assert_frame_equal(plain, thousandfold, check_exact=False, rel_tol=1e-9, abs_tol=1e-10)
