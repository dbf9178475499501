"""Technical indicators with TA-Lib's definitions: the one implementation, used by the
features/indicators columns and by the strategy rules (`research.rules`).

No Dagster. Two layers:

- Kernels, one function per indicator (`ema`, `sma`, `rsi`, `atr`, `macd`, `bollinger`,
  `donchian`, `roc`, `log_return`, `volume_z`, `realized_vol`, and the `seeded_ewm` recursion
  under the EMAs and Wilder averages): float64 numpy arrays of ONE series in time order in,
  float64 arrays of the same length out, NaN where the indicator has no value yet (warm-up).
  `research.rules` calls them once per distinct (indicator, parameters) of a whole parameter
  grid; they take intermediates already computed (MACD's EMAs, Bollinger's mean and deviation)
  so a grid shares them.
- `compute_indicators(candles)`: the `INDICATOR_COLUMNS` of frames in the stored candle shape
  (symbol, timeframe, ts, open, high, low, close, volume; any extra columns are kept), in any row
  order and with any number of symbols and timeframes. It returns them sorted by
  (symbol, timeframe, ts) with the columns appended, each (symbol, timeframe) series computed
  by the kernels over its rows in ts order: a missing candle is not filled in, the indicator
  simply steps from the previous row present. Warm-up rows are null there (never NaN, never a
  partially seeded value), exactly where TA-Lib has no output.

Definitions (TA-Lib C library, default compatibility, unstable period 0; checked in the tests
against the `ta-lib` 0.8.2 Python wheel, which reports TA-Lib C "0.8.1"). Index i is the 0-based
position of a bar within its series, N the window. Every recursion is seeded with a simple mean,
as TA-Lib does (`seeded_ewm`: y[s] = mean(x[s-P+1..s]), then y[i] = y[i-1] + a * (x[i] - y[i-1]),
NaN before s).

ema(N)             TA_EMA. k = 2/(N+1). The first value, at i = N-1, is the simple mean of
                   close[0..N-1]; then ema_i = ema_{i-1} + k * (close_i - ema_{i-1}).
                   Columns ema_12, ema_26, ema_50, ema_200.
sma(N)             mean(x[i-N+1..i]); from i = N-1 (close; volume for the rules' volume_sma).
rsi(N)             TA_RSI, Wilder. d_i = close_i - close_{i-1} (i >= 1); gain = max(d, 0),
                   loss = max(-d, 0). At i = N the averages are the simple means of gain/loss over
                   i = 1..N; then Wilder smoothing avg_i = (avg_{i-1} * (N-1) + x_i) / N (an EMA
                   with alpha 1/N seeded by that mean). rsi = 100 * avg_gain / (avg_gain + avg_loss),
                   and 0.0 where avg_gain + avg_loss is zero (no change over the whole smoothing
                   memory, e.g. a flat price series), as TA-Lib outputs. TA-Lib's "zero" has varied
                   between versions (C 0.4.0: |sum| < 1e-8 absolute; 0.6: 1e-14; the 0.8.2 wheel:
                   exact zero, checked down to 1e-300 prices). The absolute bands would zero the RSI
                   of sub-cent tokens, so this implements the exact test: results match any of those
                   versions whenever the N-bar average absolute close change is above their band.
                   From i = N. Column rsi_14.
atr(N)             TA_ATR over TA_TRANGE. tr_i = max(high_i, close_{i-1}) - min(low_i, close_{i-1})
                   for i >= 1 (no true range at i = 0). At i = N, atr = mean of tr[1..N]; then
                   Wilder smoothing atr_i = (atr_{i-1} * (N-1) + tr_i) / N. From i = N. Column atr_14.
macd(fast, slow, signal), outputs line, signal, hist (TA_MACD -> TA_INT_MACD)
                   TA-Lib starts both EMAs at the same index, the slow one's: the slow EMA is
                   ema(slow) (seed = mean of close[0..slow-1] at i = slow-1); the fast EMA is ALSO
                   seeded at i = slow-1, with the mean of the `fast` closes ending there, not at
                   i = fast-1 -- so the MACD fast line differs from ema(fast) for a while (for
                   12/26/9: seeded at 25 with close[14..25]). line_i = fast_i - slow_i. The signal
                   is EMA(signal) of the line seeded with the mean of line[slow-1 .. slow+signal-2]
                   at i = slow+signal-2; hist = line - signal. All three from i = slow+signal-2
                   (TA-Lib's lookback, 33 for 12/26/9: it does not output the line before the
                   signal exists). Needs fast < slow. Columns macd, macd_signal, macd_hist.
bollinger(N, k), outputs upper, middle, lower (TA_BBANDS with SMA): middle = sma(N);
                   upper/lower = middle +/- k * population standard deviation (ddof 0) of the same
                   N closes. From i = N-1.
donchian(N), outputs upper, lower: max(high) / min(low) of the N bars BEFORE bar i (i-N..i-1,
                   excluding bar i, so `close > donchian.upper` can happen). From i = N.
roc(N)             TA_ROC: 100 * (close_i / close_{i-N} - 1), in percent. From i = N.

Not from TA-Lib (features columns):

log_return         ln(close_i / close_{i-1}); from i = 1.
volume_z(N)        (volume_i - mean) / std over the N volumes ending at i (sample std, ddof = 1);
                   from i = N-1, and none where that std is zero (or below 1e-10 * |mean|, i.e. a
                   constant window up to rounding), as no z-score exists there. Column volume_z (20).
realized_vol(N)    Sample std (ddof = 1) of the N log returns ending at i, i.e. of log_return over
                   i-N+1..i. Per bar of the series' own timeframe, NOT annualized (multiply by
                   sqrt(bars per year) to annualize). From i = N. Column realized_vol (20).

Inputs are expected validated (see `market.candles.validate_candles`, `research.rules.check_candles`):
positive finite prices, finite volumes, no duplicate ts within a series.

Arithmetic (fixed, so a value is the same bit for bit whoever computes it): the recursion is
one numba loop, y + a * (x - y), TA-Lib's EMA step (and exactly what polars'
ewm_mean(adjust=False) computes); for Wilder's averages TA-Lib's (y * (N-1) + x) / N differs from
it by rounding only. Seeds are numpy means; rolling means, sample deviations and extremes are
polars'; the two-pass population deviation (Bollinger) is numpy's; logarithms are the C
library's log, one value at a time (as polars' ln computes them; numpy's vectorized log differs
from it in the last bit on ~3% of values on AVX-512 machines, and between machines).

`compute_indicators` sorts with polars (ts first, then each series gathered by group_by +
explode, ~3x faster than a sort on string keys in polars 2.1) and runs the kernels per series,
the series in parallel threads (the kernels release the GIL), so a series' values do not
depend, not even in the last bit, on which other series share the frame.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import polars as pl
from numba import njit

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


# --- kernels: one series, float64 arrays in time order, NaN during warm-up ------------------


@njit(cache=True, nogil=True)
def _recurse(x: np.ndarray, alpha: float, seed_index: int, seed: float, out: np.ndarray) -> None:
    """out[seed_index] = seed; out[i] = out[i-1] + alpha * (x[i] - out[i-1]) after it."""
    y = seed
    out[seed_index] = y
    for i in range(seed_index + 1, x.shape[0]):
        y = y + alpha * (x[i] - y)
        out[i] = y


def seeded_ewm(x: np.ndarray, alpha: float, seed_index: int, period: int) -> np.ndarray:
    """y[seed_index] = mean(x[seed_index-period+1 .. seed_index]), then
    y[i] = y[i-1] + alpha * (x[i] - y[i-1]); NaN before `seed_index` (all NaN when the series
    is shorter). TA-Lib's seeded EMA (alpha 2/(N+1)) and Wilder smoothing (alpha 1/N). Values of
    x before the seed window are not read."""
    out = np.full(len(x), np.nan)
    if seed_index < len(x):
        seed = x[seed_index - period + 1 : seed_index + 1].mean()
        _recurse(x, alpha, seed_index, seed, out)
    return out


def ema(x: np.ndarray, window: int, seed_index: int | None = None) -> np.ndarray:
    """TA-Lib's EMA, seeded at `seed_index` (default window-1; MACD's fast EMA uses slow-1)
    with the mean of the `window` values ending there."""
    seed_index = window - 1 if seed_index is None else seed_index
    return seeded_ewm(x, 2.0 / (window + 1), seed_index, window)


def wilder(x: np.ndarray, window: int) -> np.ndarray:
    """Wilder smoothing of x defined from index 1 (x[0] is not read): the mean of x[1..window]
    at index `window`, then alpha 1/window."""
    return seeded_ewm(x, 1.0 / window, window, window)


def sma(x: np.ndarray, window: int) -> np.ndarray:
    # polars' rolling mean keeps full precision over 72k bars (checked to 1e-15 against fsum).
    return pl.Series(x).rolling_mean(window).to_numpy().astype(np.float64)


def rolling_std(x: np.ndarray, window: int, mean: np.ndarray) -> np.ndarray:
    """Population standard deviation of the `window` values ending at each bar, given their
    mean: two-pass (deviations from each window's own mean), because a one-pass sum of
    squares loses up to 1e-9 of precision at BTC prices over short windows."""
    out = np.full(len(x), np.nan)
    count = len(x) - window + 1
    if count <= 0:
        return out
    window_mean = mean[window - 1 :]
    total = np.zeros(count)
    deviation = np.empty(count)
    for offset in range(window):  # window passes over whole arrays, not one per bar
        np.subtract(x[offset : offset + count], window_mean, out=deviation)
        deviation *= deviation
        total += deviation
    out[window - 1 :] = np.sqrt(total / window)
    return out


def _sample_std(x: np.ndarray, window: int) -> np.ndarray:
    """Sample standard deviation (ddof 1) of the `window` values ending at each bar (polars')."""
    return pl.Series(x, dtype=pl.Float64).rolling_std(window, ddof=1).to_numpy()


def rsi(close: np.ndarray, window: int) -> np.ndarray:
    change = np.empty(len(close))
    change[:1] = np.nan  # no change at bar 0; the seed mean starts at bar 1
    np.subtract(close[1:], close[:-1], out=change[1:])
    gain = wilder(np.maximum(change, 0.0), window)
    loss = wilder(np.maximum(-change, 0.0), window)
    total = gain + loss
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total == 0.0, 0.0, 100.0 * gain / total)


def true_range(high: np.ndarray, low: np.ndarray, close: np.ndarray) -> np.ndarray:
    """max(high[i], close[i-1]) - min(low[i], close[i-1]); NaN at bar 0."""
    out = np.full(len(close), np.nan)
    prev_close = close[:-1]
    out[1:] = np.maximum(high[1:], prev_close) - np.minimum(low[1:], prev_close)
    return out


def atr(high: np.ndarray, low: np.ndarray, close: np.ndarray, window: int) -> np.ndarray:
    return wilder(true_range(high, low, close), window)


def macd(
    close: np.ndarray,
    fast: int,
    slow: int,
    signal: int,
    fast_ema: np.ndarray | None = None,
    slow_ema: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(line, signal, hist) as TA_MACD: both EMAs start at index slow-1. The EMAs may be
    passed in when already computed (fast_ema must then be ema(close, fast, slow-1), slow_ema
    ema(close, slow)); they are not modified."""
    if fast >= slow:
        raise ValueError(f"macd fast {fast} must be below slow {slow}")
    start = slow - 1
    if fast_ema is None:
        fast_ema = ema(close, fast, start)
    if slow_ema is None:
        slow_ema = ema(close, slow)
    line = fast_ema - slow_ema
    first = start + signal - 1
    signal_line = seeded_ewm(line, 2.0 / (signal + 1), first, signal)
    line[: min(first, len(line))] = np.nan  # TA-Lib outputs nothing before the signal exists
    return line, signal_line, line - signal_line


def bollinger(
    close: np.ndarray, window: int, k: float, middle: np.ndarray | None = None, std: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(upper, middle, lower); `middle` (sma) and `std` (rolling_std) may be passed in when
    already computed."""
    if middle is None:
        middle = sma(close, window)
    if std is None:
        std = rolling_std(close, window, middle)
    width = k * std
    return middle + width, middle, middle - width


def donchian(high: np.ndarray, low: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """(upper, lower) over the `window` bars before each bar, the bar itself excluded."""
    upper = np.full(len(high), np.nan)
    lower = np.full(len(low), np.nan)
    if window < len(high):
        upper[window:] = pl.Series(high).rolling_max(window).to_numpy()[window - 1 : -1]
        lower[window:] = pl.Series(low).rolling_min(window).to_numpy()[window - 1 : -1]
    return upper, lower


def roc(close: np.ndarray, window: int) -> np.ndarray:
    out = np.full(len(close), np.nan)
    if window < len(close):
        out[window:] = 100.0 * (close[window:] / close[:-window] - 1.0)
    return out


@njit(cache=True, nogil=True)
def _log_ratios(close: np.ndarray, out: np.ndarray) -> None:
    for i in range(1, close.shape[0]):
        out[i] = math.log(close[i] / close[i - 1])  # the C library's log: see the module docstring


def log_return(close: np.ndarray) -> np.ndarray:
    out = np.full(len(close), np.nan)
    _log_ratios(close, out)
    return out


def volume_z(volume: np.ndarray, window: int) -> np.ndarray:
    mean, std = sma(volume, window), _sample_std(volume, window)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(std > 1e-10 * np.abs(mean), (volume - mean) / std, np.nan)


def realized_vol(log_returns: np.ndarray, window: int) -> np.ndarray:
    """Sample std of the `window` log returns ending at each bar, from `log_return(close)`
    (NaN at bar 0, so the first value is at bar `window`)."""
    out = np.full(len(log_returns), np.nan)
    if len(log_returns) > 1:
        out[1:] = _sample_std(log_returns[1:], window)
    return out


def series_indicators(
    high: np.ndarray, low: np.ndarray, close: np.ndarray, volume: np.ndarray
) -> dict[str, np.ndarray]:
    """The `INDICATOR_COLUMNS` of one series (float64 arrays in ts order), NaN in warm-up."""
    emas = {n: ema(close, n) for n in EMA_PERIODS}
    line, signal, hist = macd(close, MACD_FAST, MACD_SLOW, MACD_SIGNAL, slow_ema=emas[MACD_SLOW])
    returns = log_return(close)
    return {
        **{f"ema_{n}": values for n, values in emas.items()},
        "macd": line,
        "macd_signal": signal,
        "macd_hist": hist,
        "rsi_14": rsi(close, RSI_PERIOD),
        "atr_14": atr(high, low, close, ATR_PERIOD),
        "log_return": returns,
        "volume_z": volume_z(volume, ZSCORE_WINDOW),
        "realized_vol": realized_vol(returns, VOL_WINDOW),
    }


# --- the features/indicators columns of a candle frame ---------------------------------------


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
    keys = list(KEYS)
    # Same result as .sort([*KEYS, "ts"]), about 3x faster on shuffled rows in polars 2.1: sort
    # the one temporal column, gather each series (in that order) and sort the few series.
    series = candles.lazy().sort("ts", maintain_order=True).group_by(keys).agg(pl.all()).sort(keys).collect()
    lengths = series["ts"].list.len().to_list()
    frame = series.explode(pl.exclude(keys))
    # The input columns come back as they were; the float64 copies serve the computation only.
    high, low, close, volume = (frame[c].cast(pl.Float64).to_numpy() for c in ("high", "low", "close", "volume"))
    columns = {name: np.empty(frame.height) for name in INDICATOR_COLUMNS}

    def compute(part: slice) -> None:
        for name, values in series_indicators(high[part], low[part], close[part], volume[part]).items():
            columns[name][part] = values

    bounds = np.cumsum([0, *lengths]).tolist()
    parts = [slice(start, stop) for start, stop in zip(bounds, bounds[1:])]
    # The kernels release the GIL (numba nogil, polars, numpy): series run in parallel threads,
    # each writing its own rows.
    workers = min(len(parts), pl.thread_pool_size())
    if workers > 1:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(compute, parts))
    else:
        for part in parts:
            compute(part)
    # NaN only marks warm-up here (validated candles give no other), stored as null.
    return frame.with_columns(pl.Series(name, columns[name], nan_to_null=True) for name in INDICATOR_COLUMNS)
