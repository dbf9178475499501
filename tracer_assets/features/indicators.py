"""Technical indicators on candles, with TA-Lib's definitions, for every symbol/timeframe at once.

Pure polars (no Dagster). `compute_indicators(candles)` takes frames in the stored candle shape
(symbol, timeframe, ts, open, high, low, close, volume; any extra columns are kept), in any row
order and with any number of symbols and timeframes, and returns them sorted by
(symbol, timeframe, ts) with the columns of `INDICATOR_COLUMNS` appended. Every indicator is
computed per (symbol, timeframe) series, over the rows in ts order: a missing candle is not
filled in, the indicator simply steps from the previous row present.

Warm-up rows are null (never NaN, never a partially seeded value), exactly where TA-Lib has no
output. Index i below is the 0-based position of a row within its (symbol, timeframe) series.

Definitions (TA-Lib C library, default compatibility, unstable period 0; checked in the tests
against the `ta-lib` 0.8.2 Python wheel, which reports TA-Lib C "0.8.1"):

EMA(N), columns ema_12, ema_26, ema_50, ema_200 (TA_EMA)
    k = 2 / (N + 1). The first value, at i = N-1, is the simple mean of close[0..N-1]; then
    ema_i = ema_{i-1} + k * (close_i - ema_{i-1}). Null for i < N-1.

MACD(12, 26, 9), columns macd, macd_signal, macd_hist (TA_MACD -> TA_INT_MACD)
    TA-Lib starts both EMAs at the same index, the slow one's: the slow EMA(26) is ema_26 (seed =
    mean of close[0..25] at i = 25); the fast EMA(12) is ALSO seeded at i = 25, with the mean of
    the 12 closes ending there (close[14..25]), not at i = 11 -- so the MACD fast line differs
    from ema_12 for a while. line_i = fast_i - slow_i from i = 25. The signal is EMA(9) of the
    line seeded with the mean of line[25..33] at i = 33. macd = line, macd_signal = signal,
    macd_hist = line - signal; all three are null for i < 33 (TA-Lib's lookback 33: it does not
    output the line before the signal exists).

RSI(14), column rsi_14 (TA_RSI, Wilder)
    d_i = close_i - close_{i-1} (i >= 1); gain = max(d, 0), loss = max(-d, 0). At i = 14 the
    averages are the simple means of gain/loss over i = 1..14; then Wilder smoothing
    avg_i = (avg_{i-1} * 13 + x_i) / 14 (an EMA with alpha 1/14 seeded by that mean).
    rsi = 100 * avg_gain / (avg_gain + avg_loss), and 0.0 where avg_gain + avg_loss is zero
    (no change over the whole smoothing memory, e.g. a flat price series), as TA-Lib outputs.
    TA-Lib's "zero" has varied between versions (C 0.4.0: |sum| < 1e-8 absolute; 0.6: 1e-14;
    the 0.8.2 wheel: exact zero, checked down to 1e-300 prices). The absolute bands would zero the RSI of
    sub-cent tokens, so this implements the exact test: results match any of those versions
    whenever the 14-bar average absolute close change is above their band. Null for i < 14.

ATR(14), column atr_14 (TA_ATR over TA_TRANGE)
    tr_i = max(high_i, close_{i-1}) - min(low_i, close_{i-1}) for i >= 1 (no true range at
    i = 0). At i = 14, atr = mean of tr[1..14]; then Wilder smoothing
    atr_i = (atr_{i-1} * 13 + tr_i) / 14. Null for i < 14.

Not from TA-Lib:

log_return   ln(close_i / close_{i-1}); null at i = 0.
volume_z     (volume_i - mean) / std over the 20 volumes ending at i (sample std, ddof = 1);
             null for i < 19 and null where that std is zero (or below 1e-10 * |mean|, i.e. a
             constant window up to rounding), as no z-score exists there.
realized_vol Sample std (ddof = 1) of the 20 log returns ending at i, i.e. of log_return over
             i-19..i. Per bar of the series' own timeframe, NOT annualized (multiply by
             sqrt(bars per year) to annualize). Null for i < 20.

Inputs are expected validated (see `market.candles.validate_candles`): positive prices, no
null/NaN values, no duplicate ts within a series.

Implementation: one lazy query. Rows are ordered by sorting ts, then gathering each series
(group_by + explode), which polars 2.1 does ~3x faster than a sort on (symbol, timeframe, ts)
with string keys. Row-wise steps (previous close, true range, gains,
position in the series) are masked at each series' first row; every recursion is polars'
`ewm_mean(adjust=False)` evaluated `.over()` the series, seeded exactly: its input is null before
the seed index, the SMA at the seed index, the raw value after. With only leading nulls,
`ewm_mean(adjust=False)` starts its recursion at the first non-null value (y = x there) and
keeps the leading rows null, which is exactly TA-Lib's seeding. Rolling windows are evaluated
per series too, so a series' values do not depend, not even in the last bit, on which other
series share the frame.
"""

from __future__ import annotations

import math

import polars as pl

KEYS = ("symbol", "timeframe")

EMA_PERIODS = (12, 26, 50, 200)
MACD_FAST, MACD_SLOW, MACD_SIGNAL = 12, 26, 9
RSI_PERIOD = 14
ATR_PERIOD = 14
ZSCORE_WINDOW = 20
VOL_WINDOW = 20

INDICATOR_COLUMNS: tuple[str, ...] = (
    "ema_12",
    "ema_26",
    "ema_50",
    "ema_200",
    "macd",
    "macd_signal",
    "macd_hist",
    "rsi_14",
    "atr_14",
    "log_return",
    "volume_z",
    "realized_vol",  # per-bar std of 20 log returns, not annualized
)

# First index (0-based, within a series) holding a value; null before it. Equals TA-Lib's
# lookback for the TA-Lib indicators.
FIRST_VALID_INDEX: dict[str, int] = {
    **{f"ema_{n}": n - 1 for n in EMA_PERIODS},
    "macd": MACD_SLOW - 1 + MACD_SIGNAL - 1,
    "macd_signal": MACD_SLOW - 1 + MACD_SIGNAL - 1,
    "macd_hist": MACD_SLOW - 1 + MACD_SIGNAL - 1,
    "rsi_14": RSI_PERIOD,
    "atr_14": ATR_PERIOD,
    "log_return": 1,
    "volume_z": ZSCORE_WINDOW - 1,
    "realized_vol": VOL_WINDOW,
}


def warmup_bars(rel_tol: float = 1e-9, seed_error_ratio: float = 100.0) -> int:
    """Bars of history after which every indicator at the newest bar no longer depends on
    where the history starts, to `rel_tol` relative.

    Computing over only the last W bars differs from the full history only through the seed:
    a recursion y_i = (1 - a) * y_{i-1} + a * x_i started from a wrong value carries that error
    multiplied by (1 - a)^k after k further steps, and is otherwise identical. The seed error
    |SMA seed - full-history value| is bounded by the series' own level (`seed_error_ratio` = 100
    allows it to be 100x the indicator's level at the newest bar: a 100x price fall, or a 100x
    drop in volatility for RSI/ATR averages). So an indicator seeded at index s with smoothing a
    needs s + k bars where (1 - a)^k * seed_error_ratio <= rel_tol, i.e.
        k = ceil(ln(rel_tol / seed_error_ratio) / ln(1 - a)).
    For 1e-9 and 100: EMA(200) (a = 2/201, seed at index 199): k = 2533, so 200 + 2533 = 2733
    bars, which dominates; EMA(50) 50 + 634 = 684, Wilder RSI/ATR (a = 1/14, seed at 14)
    15 + 342 = 357, MACD's EMAs less (fast 12 seeded at 25: 178; signal: 148); the 20-bar
    windows need 21. MACD values near a zero crossing are compared at the price's
    scale (their absolute error is that of the EMAs they subtract).
    """
    needs = [ZSCORE_WINDOW, VOL_WINDOW + 1]
    ratio = rel_tol / seed_error_ratio
    smoothings = [(2.0 / (n + 1), n - 1) for n in EMA_PERIODS]
    smoothings += [
        (2.0 / (MACD_FAST + 1), MACD_SLOW - 1),
        (2.0 / (MACD_SIGNAL + 1), MACD_SLOW - 1 + MACD_SIGNAL - 1),
        (1.0 / RSI_PERIOD, RSI_PERIOD),
        (1.0 / ATR_PERIOD, ATR_PERIOD),
    ]
    for alpha, seed_index in smoothings:
        steps = math.ceil(math.log(ratio) / math.log(1.0 - alpha))
        needs.append(seed_index + 1 + steps)
    return max(needs)


# 2733 with the defaults (EMA 200: 200 bars up to its seed + 2533 decay steps; see
# `warmup_bars`). The newest bar's values over the last WARMUP_BARS bars equal the
# full-history ones to 1e-9 relative.
WARMUP_BARS: int = warmup_bars()


def _seeded(x: pl.Expr, period: int, seed_index: int) -> pl.Expr:
    """x with nulls before `seed_index`, the mean of x[seed_index-period+1 .. seed_index] at it.

    Fed to ewm_mean(adjust=False), this starts the recursion at the SMA seed, as TA-Lib does.
    Evaluated inside .over(): the slice is the series' own.
    """
    i = pl.col("_i")
    seed = x.slice(seed_index - period + 1, period).mean()
    return pl.when(i > seed_index).then(x).when(i == seed_index).then(seed)


def _ewm(x: pl.Expr, alpha: float) -> pl.Expr:
    # Only leading nulls ever reach here; with those, ewm_mean(adjust=False) starts at the first
    # value and leaves the leading rows null, whatever ignore_nulls says.
    return x.ewm_mean(alpha=alpha, adjust=False, ignore_nulls=True)


def _indicator_frame(candles: pl.LazyFrame) -> pl.LazyFrame:
    """The indicators of candles already sorted by (symbol, timeframe, ts)."""
    series = pl.col("_g")
    i = pl.col("_i")
    close = pl.col("close")

    # Stage 1, row-wise on the sorted frame (no window state, so exact per series): series
    # number, position in the series, and the inputs needing the previous close.
    row = pl.int_range(pl.len(), dtype=pl.Int64)
    first = pl.any_horizontal(*[(pl.col(k) != pl.col(k).shift(1)) for k in KEYS]).fill_null(True)
    frame = candles.with_columns(
        first.cum_sum().cast(pl.UInt32).alias("_g"),
        (row - pl.when(first).then(row).forward_fill()).alias("_i"),
    )
    prev_close = pl.when(i >= 1).then(close.shift(1))
    change = close - prev_close
    frame = frame.with_columns(
        change.clip(lower_bound=0.0).alias("_gain"),
        (-change).clip(lower_bound=0.0).alias("_loss"),
        # max_/min_horizontal skip nulls: mask the first row's true range explicitly.
        pl.when(i >= 1).then(pl.max_horizontal("high", prev_close) - pl.min_horizontal("low", prev_close)).alias("_tr"),
        (close / prev_close).log().alias("log_return"),
    )

    # Stage 2, per series: every seeded recursion, the rolling windows.
    ema = [_ewm(_seeded(close, n, n - 1), 2.0 / (n + 1)).alias(f"ema_{n}") for n in EMA_PERIODS]
    fast = _ewm(_seeded(close, MACD_FAST, MACD_SLOW - 1), 2.0 / (MACD_FAST + 1)).alias("_macd_fast")
    wilder = 1.0 / RSI_PERIOD
    avg_gain = _ewm(_seeded(pl.col("_gain"), RSI_PERIOD, RSI_PERIOD), wilder).alias("_avg_gain")
    avg_loss = _ewm(_seeded(pl.col("_loss"), RSI_PERIOD, RSI_PERIOD), wilder).alias("_avg_loss")
    atr = _ewm(_seeded(pl.col("_tr"), ATR_PERIOD, ATR_PERIOD), 1.0 / ATR_PERIOD).alias("atr_14")
    volume = pl.col("volume")
    vol_mean = volume.rolling_mean(ZSCORE_WINDOW).alias("_vol_mean")
    vol_std = volume.rolling_std(ZSCORE_WINDOW, ddof=1).alias("_vol_std")
    realized = pl.col("log_return").rolling_std(VOL_WINDOW, ddof=1).alias("realized_vol")
    stage2 = [*ema, fast, avg_gain, avg_loss, atr, vol_mean, vol_std, realized]
    frame = frame.with_columns(*[e.over(series) for e in stage2])

    # Stage 3: MACD line (from index 25) and its signal (from 33).
    signal_start = MACD_SLOW - 1 + MACD_SIGNAL - 1
    line = pl.col("_macd_fast") - pl.col(f"ema_{MACD_SLOW}")
    frame = frame.with_columns(line.alias("_macd_line")).with_columns(
        _ewm(_seeded(pl.col("_macd_line"), MACD_SIGNAL, signal_start), 2.0 / (MACD_SIGNAL + 1))
        .over(series)
        .alias("macd_signal")
    )

    # Stage 4, row-wise: outputs.
    gain_loss = pl.col("_avg_gain") + pl.col("_avg_loss")
    mean, std = pl.col("_vol_mean"), pl.col("_vol_std")
    return frame.with_columns(
        pl.when(i >= signal_start).then(pl.col("_macd_line")).alias("macd"),
        (pl.col("_macd_line") - pl.col("macd_signal")).alias("macd_hist"),
        pl.when(gain_loss == 0.0).then(0.0).otherwise(100.0 * pl.col("_avg_gain") / gain_loss).alias("rsi_14"),
        pl.when(std > 1e-10 * mean.abs()).then((volume - mean) / std).alias("volume_z"),
    )


def compute_indicators(candles: pl.DataFrame) -> pl.DataFrame:
    """The candles sorted by (symbol, timeframe, ts) with `INDICATOR_COLUMNS` appended.

    Any number of symbols and timeframes, rows in any order; each (symbol, timeframe) series is
    computed on its own. See the module docstring for the exact definitions.
    """
    missing = [c for c in (*KEYS, "ts", "high", "low", "close", "volume") if c not in candles.columns]
    if missing:
        raise ValueError(f"candles frame lacks columns {missing}")
    clash = [c for c in INDICATOR_COLUMNS if c in candles.columns]
    if clash:
        raise ValueError(f"candles frame already has indicator columns {clash}")
    values = [c for c in ("open", "high", "low", "close", "volume") if c in candles.columns]
    keys = list(KEYS)
    # Same result as .sort([*KEYS, "ts"]), about 3x faster on shuffled rows in polars 2.1: sort
    # the one temporal column, gather each series (in that order) and sort the few series.
    lazy = (
        candles.lazy().sort("ts", maintain_order=True).group_by(keys).agg(pl.all()).sort(keys).explode(pl.exclude(keys))
    )
    computed = _indicator_frame(lazy.with_columns(*[pl.col(c).cast(pl.Float64) for c in values]))
    # The input columns come back as they were (the float casts served the computation only).
    return pl.concat([lazy, computed.select(*INDICATOR_COLUMNS)], how="horizontal").collect()
