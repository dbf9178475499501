"""The models' features and labels, from the stored indicators (docs/ml.md). Pure polars, no Dagster.

Every feature of a row is computed from its series' rows up to and including that bar, and from
higher-timeframe bars that had closed by that bar's close (joined on close time, never open
time): `feature_lookahead_mismatches` recomputes rows from history cut at their bar and must
find them identical. Labels look ahead by construction and are kept apart from the features:
the net log return from the next bar's open (the first price a signal on this bar's close can
trade at) to the open `h` bars later, in units of the series' own volatility over `h` bars.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from datetime import timedelta

import polars as pl

from tracer_assets.guards import Mismatch, lookahead_mismatches
from tracer_assets.market.timeframes import timeframe_seconds

SERIES = ["symbol", "timeframe"]
RETURN_LAGS = (1, 3, 6, 12, 24)
VOL_RATIO_WINDOW = 100  # bars in the mean that realized volatility is compared with
TREND_FEATURES = ("ema12_dist", "ema26_dist", "ema50_dist", "ema200_dist", "macd_atr", "macd_signal_atr",
                  "macd_hist_atr", "rsi")  # fmt: skip
PRICE_FEATURES = (*(f"ret_{lag}" for lag in RETURN_LAGS), "realized_vol", "vol_ratio", "atr_pct", "volume_z",
                  "range_atr", "body_atr")  # fmt: skip
BASE_FEATURES = (*TREND_FEATURES, *PRICE_FEATURES)
CONTEXT_STEMS = ("ema50_dist", "rsi", "macd_hist_atr", "ret_1")  # taken from each higher timeframe
# Bars of a series before its first complete feature row: EMA 200 (199), then the volatility mean.
FEATURE_WARMUP_BARS = 200 + 20 + VOL_RATIO_WINDOW


def context_timeframes(timeframe: str, all_timeframes: Sequence[str]) -> list[str]:
    """The configured timeframes above `timeframe`: their last closed bar is its context."""
    return [tf for tf in all_timeframes if timeframe_seconds(tf) > timeframe_seconds(timeframe)]


def context_column(timeframe: str, stem: str) -> str:
    return f"ctx_{timeframe}_{stem}"


def feature_columns(timeframe: str, feature_set: str, all_timeframes: Sequence[str]) -> list[str]:
    """The feature columns a model of `timeframe` and `feature_set` reads, in a fixed order."""
    if feature_set == "price":
        return list(PRICE_FEATURES)
    columns = list(BASE_FEATURES)
    if feature_set == "full":
        columns += [context_column(h, s) for h in context_timeframes(timeframe, all_timeframes) for s in CONTEXT_STEMS]
    elif feature_set != "no_context":
        raise ValueError(f"unknown feature set {feature_set!r}")
    return columns


def _seconds(timeframes: Sequence[str]) -> pl.Expr:
    return pl.col("timeframe").replace_strict({tf: timeframe_seconds(tf) for tf in timeframes}, return_dtype=pl.Int64)


def _ratio(numerator: pl.Expr, denominator: pl.Expr) -> pl.Expr:
    """numerator / denominator, null where the denominator is not positive (a flat series)."""
    return pl.when(denominator > 0).then(numerator / denominator).otherwise(None)


def base_features(indicators: pl.DataFrame) -> pl.DataFrame:
    """`BASE_FEATURES` per row: indicator values made comparable across symbols and price levels
    (distances in ATRs, returns in volatility units). Rows sorted by (symbol, timeframe, ts)."""
    frame = indicators.sort(*SERIES, "ts")
    atr, vol = pl.col("atr_14"), pl.col("realized_vol")
    log_close = pl.col("close").log()
    return frame.with_columns(
        *(_ratio(pl.col("close") - pl.col(f"ema_{n}"), atr).alias(f"ema{n}_dist") for n in (12, 26, 50, 200)),
        _ratio(pl.col("macd"), atr).alias("macd_atr"),
        _ratio(pl.col("macd_signal"), atr).alias("macd_signal_atr"),
        _ratio(pl.col("macd_hist"), atr).alias("macd_hist_atr"),
        (pl.col("rsi_14") / 100 - 0.5).alias("rsi"),
        *(
            _ratio((log_close - log_close.shift(lag)).over(SERIES), vol * math.sqrt(lag)).alias(f"ret_{lag}")
            for lag in RETURN_LAGS
        ),
        _ratio(vol, vol.rolling_mean(VOL_RATIO_WINDOW).over(SERIES)).alias("vol_ratio"),
        _ratio(atr, pl.col("close")).alias("atr_pct"),
        _ratio(pl.col("high") - pl.col("low"), atr).alias("range_atr"),
        _ratio(pl.col("close") - pl.col("open"), atr).alias("body_atr"),
    )


def build_features(indicators: pl.DataFrame, timeframes: Sequence[str], all_timeframes: Sequence[str]) -> pl.DataFrame:
    """Feature rows of `timeframes` from features.indicators rows (candles + indicators) of those
    timeframes and every higher one: symbol, timeframe, ts, feature_time (the bar's close),
    open, log_return (for the labels and the last-return baseline), the base features and each
    higher timeframe's context as of that close."""
    seconds = _seconds(all_timeframes)
    based = base_features(indicators).with_columns(feature_time=pl.col("ts") + pl.duration(seconds=seconds))
    rows = based.filter(pl.col("timeframe").is_in(list(timeframes)))
    rows = rows.select(*SERIES, "ts", "feature_time", "open", "log_return", *BASE_FEATURES).sort("feature_time")
    highers = sorted({h for tf in timeframes for h in context_timeframes(tf, all_timeframes)}, key=timeframe_seconds)
    for higher in highers:
        context = (
            based.filter(pl.col("timeframe") == higher)
            .select("symbol", "feature_time", *(pl.col(s).alias(context_column(higher, s)) for s in CONTEXT_STEMS))
            .sort("feature_time")
        )
        # The newest bar of `higher` that had closed by this bar's close, and closed less than one
        # of its own bars before it (a gap leaves the context empty rather than stale; polars'
        # tolerance is inclusive, hence the microsecond off).
        rows = rows.join_asof(
            context,
            on="feature_time",
            by="symbol",
            strategy="backward",
            tolerance=f"{timeframe_seconds(higher) * 1_000_000 - 1}us",
            check_sortedness=False,
        )
        lower = [tf for tf in timeframes if timeframe_seconds(tf) >= timeframe_seconds(higher)]
        if lower:  # a timeframe is not its own context
            rows = rows.with_columns(
                pl.when(pl.col("timeframe").is_in(lower)).then(None).otherwise(pl.col(c)).alias(c)
                for c in (context_column(higher, s) for s in CONTEXT_STEMS)
            )
    return rows.sort(*SERIES, "ts")


def label_columns(horizon: int) -> tuple[str, str, str]:
    """(forward return, class, label end) columns of a horizon."""
    return f"fwd_return_h{horizon}", f"label_h{horizon}", f"label_end_h{horizon}"


def add_labels(
    features: pl.DataFrame,
    horizons: Sequence[int],
    thresholds: tuple[float, float],
    fee: float,
    all_timeframes: Sequence[str],
) -> pl.DataFrame:
    """For each horizon h: the net forward log return from the next bar's open to the open h
    bars after it, less a round trip of `fee`; its class (CLASS_LABELS index) by `thresholds`
    in units of realized_vol x sqrt(h); and the instant the label is known (that exit bar's
    open). Null where the exit bar is not exactly h + 1 bars later (the end of the data or a
    gap) or the volatility is unknown."""
    weak, strong = thresholds
    seconds = _seconds(all_timeframes)
    vol = pl.col("realized_vol")
    frame = features.sort(*SERIES, "ts").with_columns(next_open=pl.col("open").shift(-1).over(SERIES))
    round_trip = 2 * math.log1p(-fee)
    for h in horizons:
        forward, label, label_end = label_columns(h)
        exit_ts = pl.col("ts").shift(-(h + 1)).over(SERIES)
        whole = (exit_ts - pl.col("ts")) == pl.duration(seconds=seconds * (h + 1))
        value = (pl.col("open").shift(-(h + 1)).over(SERIES) / pl.col("next_open")).log() + round_trip
        frame = frame.with_columns(
            pl.when(whole & (vol > 0)).then(value).otherwise(None).alias(forward),
            pl.when(whole & (vol > 0)).then(exit_ts).otherwise(None).alias(label_end),
        )
        z = pl.col(forward) / (vol * math.sqrt(h))
        frame = frame.with_columns(
            pl.when(pl.col(forward).is_null())
            .then(None)
            .when(z <= -strong)
            .then(0)
            .when(z <= -weak)
            .then(1)
            .when(z >= strong)
            .then(4)
            .when(z >= weak)
            .then(3)
            .otherwise(2)
            .cast(pl.Int8)
            .alias(label)
        )
    return frame.drop("next_open")


def feature_lookahead_mismatches(
    candles: pl.DataFrame,
    build: Callable[[pl.DataFrame], pl.DataFrame],
    samples: Sequence[tuple[str, str, object]],
    columns: Sequence[str],
    all_timeframes: Sequence[str],
) -> list[Mismatch]:
    """Rows rebuilt from candles cut at each sample's close must equal the rows built from all.

    `build` maps candles (every timeframe of a symbol) to feature rows. The cut keeps, of EVERY
    timeframe, the candles that had closed by the sampled bar's close: a feature reading a later
    candle of any timeframe (a shift(-1), a higher timeframe joined by open time) differs.
    """
    close = pl.col("ts") + pl.duration(seconds=_seconds(all_timeframes))

    def closed_by(frame: pl.DataFrame, sample: tuple) -> pl.DataFrame:
        symbol, timeframe, ts = sample
        return frame.filter(
            (pl.col("symbol") == symbol) & (close <= ts + timedelta(seconds=timeframe_seconds(timeframe)))
        )

    return lookahead_mismatches(candles, build, samples, columns, rel_tol=0.0, cut=closed_by)
