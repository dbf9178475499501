"""Indicators against an independent loop implementation of TA-Lib's formulas, on real candles.

The reference below is written from the definitions (plain Python lists and floats, no polars,
following TA-Lib's C loops: SMA seeds, `prev + k * (x - prev)` EMAs, `(prev * (n-1) + x) / n`
Wilder smoothing, TA_INT_MACD's common start index). Where the TA-Lib Python package happens to
be installed it is checked too, but nothing here needs it.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from tracer_assets.data import BUNDLED_REPLAY_DIR
from tracer_assets.features.indicators import (
    FIRST_VALID_INDEX,
    INDICATOR_COLUMNS,
    WARMUP_BARS,
    compute_indicators,
    seeded_ewm,
    warmup_bars,
)
from tracer_assets.market.candles import candles_from_rows
from tracer_assets.resources.replay_exchange import read_candle_file

REL = 1e-9
ROWS = 3000
SERIES = [("BTC/USDT", "5m"), ("ETH/USDT", "5m"), ("BTC/USDT", "1h"), ("ETH/USDT", "1h")]


def bundled(symbol: str, timeframe: str, rows: int | None = ROWS) -> pl.DataFrame:
    path = Path(BUNDLED_REPLAY_DIR) / f"{symbol.replace('/', '_')}-{timeframe}.parquet"
    raw = read_candle_file(path)
    if rows is not None:
        raw = raw.head(rows)
    return candles_from_rows([list(r) for r in raw.rows()], symbol, timeframe)


# --- the loop reference -------------------------------------------------------------------


def ref_ema(x: list[float], n: int, seed_index: int | None = None, first: int = 0) -> list[float | None]:
    """TA_INT_EMA: SMA of the n values ending at seed_index, then prev + k * (x - prev)."""
    seed_index = first + n - 1 if seed_index is None else seed_index
    out: list[float | None] = [None] * len(x)
    if len(x) <= seed_index:
        return out
    k = 2.0 / (n + 1)
    prev = sum(x[seed_index - n + 1 : seed_index + 1]) / n
    out[seed_index] = prev
    for t in range(seed_index + 1, len(x)):
        prev = (x[t] - prev) * k + prev
        out[t] = prev
    return out


def ref_wilder(x: list[float | None], n: int) -> list[float | None]:
    """x defined from index 1: mean of x[1..n] at index n, then (prev * (n-1) + x) / n."""
    out: list[float | None] = [None] * len(x)
    if len(x) <= n:
        return out
    prev = sum(x[1 : n + 1]) / n  # type: ignore[arg-type]
    out[n] = prev
    for t in range(n + 1, len(x)):
        prev = (prev * (n - 1) + x[t]) / n  # type: ignore[operator]
        out[t] = prev
    return out


def ref_macd(close: list[float]) -> tuple[list, list, list]:
    """TA_INT_MACD: both EMAs start at index 25 (fast seeded with close[14..25]), signal at 33."""
    n = len(close)
    fast = ref_ema(close, 12, seed_index=25)
    slow = ref_ema(close, 26)
    line: list[float | None] = [None] * n
    for t in range(25, n):
        line[t] = fast[t] - slow[t]  # type: ignore[operator]
    signal: list[float | None] = [None] * n
    if n > 33:
        k = 2.0 / 10
        prev = sum(line[25:34]) / 9  # type: ignore[arg-type]
        signal[33] = prev
        for t in range(34, n):
            prev = (line[t] - prev) * k + prev  # type: ignore[operator]
            signal[t] = prev
    macd = [line[t] if t >= 33 else None for t in range(n)]
    hist = [macd[t] - signal[t] if t >= 33 else None for t in range(n)]  # type: ignore[operator]
    return macd, signal, hist


def ref_rsi(close: list[float], n: int = 14) -> list[float | None]:
    gains: list[float | None] = [None]
    losses: list[float | None] = [None]
    for t in range(1, len(close)):
        d = close[t] - close[t - 1]
        gains.append(d if d > 0 else 0.0)
        losses.append(-d if d < 0 else 0.0)
    avg_gain, avg_loss = ref_wilder(gains, n), ref_wilder(losses, n)
    out: list[float | None] = []
    for gain, loss in zip(avg_gain, avg_loss):
        if gain is None:
            out.append(None)
        elif gain + loss == 0:  # type: ignore[operator]
            out.append(0.0)
        else:
            out.append(100.0 * gain / (gain + loss))  # type: ignore[operator]
    return out


def ref_atr(high: list[float], low: list[float], close: list[float], n: int = 14) -> list[float | None]:
    tr: list[float | None] = [None]
    for t in range(1, len(close)):
        tr.append(max(high[t], close[t - 1]) - min(low[t], close[t - 1]))
    return ref_wilder(tr, n)


def ref_std(window: list[float]) -> float:
    mean = math.fsum(window) / len(window)
    return math.sqrt(math.fsum((v - mean) ** 2 for v in window) / (len(window) - 1))


def ref_log_return(close: list[float]) -> list[float | None]:
    return [None] + [math.log(close[t] / close[t - 1]) for t in range(1, len(close))]


def ref_volume_z(volume: list[float], n: int = 20) -> list[float | None]:
    out: list[float | None] = [None] * len(volume)
    for t in range(n - 1, len(volume)):
        window = volume[t - n + 1 : t + 1]
        std = ref_std(window)
        out[t] = (volume[t] - math.fsum(window) / n) / std if std > 0 else None
    return out


def ref_realized_vol(close: list[float], n: int = 20) -> list[float | None]:
    returns = ref_log_return(close)
    out: list[float | None] = [None] * len(close)
    for t in range(n, len(close)):
        out[t] = ref_std(returns[t - n + 1 : t + 1])  # type: ignore[arg-type]
    return out


def reference(series: pl.DataFrame) -> dict[str, list[float | None]]:
    """Every indicator of one series (rows in ts order) from the loops above."""
    high, low, close, volume = (series[c].to_list() for c in ("high", "low", "close", "volume"))
    macd, signal, hist = ref_macd(close)
    return {
        **{f"ema_{n}": ref_ema(close, n) for n in (12, 26, 50, 200)},
        "macd": macd,
        "macd_signal": signal,
        "macd_hist": hist,
        "rsi_14": ref_rsi(close),
        "atr_14": ref_atr(high, low, close),
        "log_return": ref_log_return(close),
        "volume_z": ref_volume_z(volume),
        "realized_vol": ref_realized_vol(close),
    }


# --- comparison ---------------------------------------------------------------------------


def floor(column: str, close: float) -> float:
    """The scale under which an error is measured absolutely (values crossing zero).

    MACD line/signal/hist are differences of EMAs of the price: measured against 1e-4 of the
    price; a z-score against 1 (its unit); everything else purely relative.
    """
    if column.startswith("macd"):
        return 1e-4 * close
    if column == "volume_z":
        return 1.0
    return 0.0


def assert_matches(column: str, got: list, want: list, close: list[float], label: str) -> None:
    assert len(got) == len(want)
    got_nulls = [t for t, v in enumerate(got) if v is None]
    want_nulls = [t for t, v in enumerate(want) if v is None]
    assert got_nulls == want_nulls, f"{label} {column}: nulls at {got_nulls[:5]}.. vs {want_nulls[:5]}.."
    worst, at = 0.0, None
    for t, (a, b) in enumerate(zip(got, want)):
        if b is None:
            continue
        assert not math.isnan(a), f"{label} {column}: NaN at {t}"
        err = abs(a - b) / max(abs(b), floor(column, close[t]), 1e-300)
        if err > worst:
            worst, at = err, t
    assert worst <= REL, f"{label} {column}: relative error {worst:.3g} at row {at}: {got[at]} vs {want[at]}"


@pytest.fixture(scope="module")
def candles() -> pl.DataFrame:
    """Four real series (two symbols x 5m/1h), rows shuffled together."""
    frame = pl.concat([bundled(symbol, timeframe) for symbol, timeframe in SERIES])
    return frame.sample(fraction=1.0, shuffle=True, seed=7)


@pytest.fixture(scope="module")
def computed(candles: pl.DataFrame) -> pl.DataFrame:
    return compute_indicators(candles)


def series_of(frame: pl.DataFrame, symbol: str, timeframe: str) -> pl.DataFrame:
    return frame.filter((pl.col("symbol") == symbol) & (pl.col("timeframe") == timeframe))


# --- tests --------------------------------------------------------------------------------


def test_shape_order_and_columns(candles: pl.DataFrame, computed: pl.DataFrame) -> None:
    assert computed.columns == [*candles.columns, *INDICATOR_COLUMNS]
    assert computed.height == candles.height
    assert computed.equals(computed.sort("symbol", "timeframe", "ts"))
    for column in INDICATOR_COLUMNS:
        assert computed.schema[column] == pl.Float64
    assert_frame_equal(computed.select(candles.columns), candles.sort("symbol", "timeframe", "ts"))


@pytest.mark.parametrize("column", INDICATOR_COLUMNS)
def test_matches_loop_reference_on_real_candles(computed: pl.DataFrame, column: str) -> None:
    for symbol, timeframe in SERIES:
        series = series_of(computed, symbol, timeframe)
        assert series.height == ROWS
        want = reference(series)[column]
        assert_matches(column, series[column].to_list(), want, series["close"].to_list(), f"{symbol} {timeframe}")


def test_warmup_rows_null_exactly_where_talib_has_no_output(computed: pl.DataFrame) -> None:
    expected = {
        "ema_12": 11, "ema_26": 25, "ema_50": 49, "ema_200": 199,
        "macd": 33, "macd_signal": 33, "macd_hist": 33,
        "rsi_14": 14, "atr_14": 14,
        "log_return": 1, "volume_z": 19, "realized_vol": 20,
    }  # fmt: skip
    assert FIRST_VALID_INDEX == expected
    for symbol, timeframe in SERIES:
        series = series_of(computed, symbol, timeframe)
        for column, first in expected.items():
            values = series[column]
            assert values.head(first).null_count() == first, (symbol, timeframe, column)
            assert values.slice(first).null_count() == 0, (symbol, timeframe, column)


def test_matches_talib_when_installed(computed: pl.DataFrame) -> None:
    talib = pytest.importorskip("talib")
    for symbol, timeframe in SERIES:
        series = series_of(computed, symbol, timeframe)
        high, low, close = (series[c].to_numpy() for c in ("high", "low", "close"))
        macd, signal, hist = talib.MACD(close, 12, 26, 9)
        expected = {
            **{f"ema_{n}": talib.EMA(close, n) for n in (12, 26, 50, 200)},
            "macd": macd, "macd_signal": signal, "macd_hist": hist,
            "rsi_14": talib.RSI(close, 14), "atr_14": talib.ATR(high, low, close, 14),
        }  # fmt: skip
        for column, want in expected.items():
            got = [None if v is None else float(v) for v in series[column].to_list()]
            assert_matches(
                column,
                got,
                [None if np.isnan(v) else float(v) for v in want],
                close.tolist(),
                f"talib {symbol} {timeframe}",
            )


def test_interleaved_unsorted_input_equals_each_series_alone(candles: pl.DataFrame, computed: pl.DataFrame) -> None:
    alone = pl.concat([compute_indicators(bundled(symbol, timeframe)) for symbol, timeframe in sorted(SERIES)])
    # Bit for bit: nothing of one series leaks into another, not even rounding.
    assert_frame_equal(computed, alone, check_exact=True)
    reshuffled = compute_indicators(candles.sample(fraction=1.0, shuffle=True, seed=99))
    assert_frame_equal(reshuffled, computed, check_exact=True)
    # The second symbol's first rows are warm-up rows again, not a continuation of the first's.
    eth = series_of(computed, "ETH/USDT", "5m")
    assert eth["ema_12"].head(11).null_count() == 11
    assert eth["log_return"][0] is None and eth["atr_14"].head(14).null_count() == 14


def test_series_shorter_than_warmup_and_empty_frame() -> None:
    short = bundled("BTC/USDT", "5m", rows=30)
    out = compute_indicators(short)
    assert out["ema_200"].null_count() == 30 and out["macd"].null_count() == 30
    assert out["ema_12"].null_count() == 11 and out["rsi_14"].null_count() == 14
    single = compute_indicators(short.head(1))
    assert single.select(INDICATOR_COLUMNS).null_count().row(0) == (1,) * len(INDICATOR_COLUMNS)
    empty = compute_indicators(short.head(0))
    assert empty.height == 0 and empty.columns == [*short.columns, *INDICATOR_COLUMNS]
    with pytest.raises(ValueError, match="lacks columns"):
        compute_indicators(short.drop("close"))


def test_warmup_bars_derivation() -> None:
    # EMA(200): seed at index 199, then ceil(ln(1e-9 / 100) / ln(1 - 2/201)) = 2533 steps.
    assert WARMUP_BARS == warmup_bars() == 200 + 2533
    assert warmup_bars(rel_tol=1e-6) < WARMUP_BARS < warmup_bars(rel_tol=1e-12)


@pytest.mark.parametrize(("symbol", "timeframe"), [("BTC/USDT", "5m"), ("ETH/USDT", "1h")])
def test_newest_bar_from_warmup_window_equals_full_history(symbol: str, timeframe: str) -> None:
    full_candles = bundled(symbol, timeframe, rows=None)
    assert full_candles.height > 2 * WARMUP_BARS
    newest = compute_indicators(full_candles).row(-1, named=True)
    for bars in (WARMUP_BARS, 2 * WARMUP_BARS):
        tail = compute_indicators(full_candles.tail(bars)).row(-1, named=True)
        assert tail["ts"] == newest["ts"]
        for column in INDICATOR_COLUMNS:
            want, got = newest[column], tail[column]
            err = abs(got - want) / max(abs(want), floor(column, newest["close"]))
            assert err <= REL, f"{bars} bars, {column}: {got} vs {want} ({err:.3g})"
    # The window matters: 300 bars are not enough for EMA(200) at this precision.
    short = compute_indicators(full_candles.tail(300)).row(-1, named=True)
    assert abs(short["ema_200"] - newest["ema_200"]) / newest["ema_200"] > REL


def test_no_nan_anywhere_only_nulls(computed: pl.DataFrame) -> None:
    nan_counts = computed.select(pl.col(INDICATOR_COLUMNS).is_nan().sum()).row(0)
    assert nan_counts == (0,) * len(INDICATOR_COLUMNS)
    infinite = computed.select(pl.col(INDICATOR_COLUMNS).is_infinite().sum()).row(0)
    assert infinite == (0,) * len(INDICATOR_COLUMNS)


def test_flat_prices_and_constant_volume() -> None:
    """TA-Lib's RSI is 0.0 when there was no change at all; a z-score of a constant is null."""
    n = 120
    rows = [[1_704_067_200_000 + t * 300_000, 5.0, 5.0, 5.0, 5.0, 7.0] for t in range(n)]
    out = compute_indicators(candles_from_rows(rows, "FLAT/USDT", "5m"))
    assert out.select(pl.col(INDICATOR_COLUMNS).is_nan().sum()).row(0) == (0,) * len(INDICATOR_COLUMNS)
    assert out["rsi_14"].slice(14).to_list() == [0.0] * (n - 14)
    assert out["atr_14"].slice(14).to_list() == [0.0] * (n - 14)
    assert out["ema_50"].slice(49).to_list() == [5.0] * (n - 49)
    assert out["macd_hist"].slice(33).to_list() == [0.0] * (n - 33)
    assert out["log_return"].slice(1).to_list() == [0.0] * (n - 1)
    assert out["realized_vol"].slice(20).to_list() == [0.0] * (n - 20)
    assert out["volume_z"].null_count() == n  # std 0: no z-score

    # Flat, then only rises: RSI 100; then one fall: RSI moves off 100, as in the loop reference.
    closes = [5.0] * 20 + [5.0 + 0.01 * t for t in range(1, 11)] + [4.9]
    rows = [[1_704_067_200_000 + t * 300_000, c, c, c, c, 0.0] for t, c in enumerate(closes)]
    out = compute_indicators(candles_from_rows(rows, "STEP/USDT", "5m"))
    want = ref_rsi(closes)
    assert out["rsi_14"].to_list()[:20] == want[:20]
    assert out["rsi_14"][29] == pytest.approx(100.0, rel=1e-12)
    assert out["rsi_14"][30] == pytest.approx(want[30], rel=1e-12)
    assert out["volume_z"].null_count() == len(closes)  # zero volume throughout


def test_seeded_ewm_seeding_semantics() -> None:
    """The recursion under every EMA and Wilder average: NaN before the seed, the mean of the
    `period` values ending at the seed index there (values before that window never read), then
    y = y + a (x - y)."""
    x = np.array([np.nan, 1.0, 3.0, 4.0, 10.0])
    got = seeded_ewm(x, 0.5, seed_index=2, period=2)
    np.testing.assert_array_equal(got, [np.nan, np.nan, 2.0, 3.0, 6.5])
    assert np.isnan(seeded_ewm(x, 0.5, seed_index=5, period=2)).all()  # series too short: no value
    assert seeded_ewm(x[:0], 0.5, seed_index=0, period=1).shape == (0,)


def test_random_walk_against_reference_with_gaps_in_order() -> None:
    """A synthetic series with a tiny price scale and rows given newest first."""
    rng = random.Random(3)
    price, rows = 0.00002, []
    for t in range(400):
        close = price * math.exp(rng.gauss(0, 0.01))
        high, low = max(price, close) * (1 + rng.random() * 0.005), min(price, close) * (1 - rng.random() * 0.005)
        rows.append([1_704_067_200_000 + t * 3_600_000, price, high, low, close, rng.random() * 1e9])
        price = close
    out = compute_indicators(candles_from_rows(rows[::-1], "PEPE/USDT", "1h"))
    want = reference(out)
    for column in INDICATOR_COLUMNS:
        assert_matches(column, out[column].to_list(), want[column], out["close"].to_list(), "PEPE 1h")


def test_extra_columns_and_integer_values_come_back_unchanged() -> None:
    base = bundled("ETH/USDT", "1h", rows=60)
    odd = base.with_columns(pl.col("volume").round(0).cast(pl.Int64), pl.lit("binance").alias("source"))
    out = compute_indicators(odd.reverse())
    assert out.columns == [*odd.columns, *INDICATOR_COLUMNS]
    assert_frame_equal(out.select(odd.columns), odd)
    as_float = compute_indicators(odd.with_columns(pl.col("volume").cast(pl.Float64)))
    assert_frame_equal(out.select(INDICATOR_COLUMNS), as_float.select(INDICATOR_COLUMNS), check_exact=True)
