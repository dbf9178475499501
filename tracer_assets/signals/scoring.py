"""From indicators to a signal: quality, regime, conviction and the ensemble label.

Pure polars, no Dagster. Every score is computed per (symbol, timeframe) from that series'
own rows up to and including the candle scored, so scoring the newest row of a history cut
at any past candle gives the signal that candle had then (the lookahead guard checks this).

Definitions (also in the README):

direction d: the sign of the trend vote, the sum of sign(close - ema_50),
    sign(ema_12 - ema_26) and sign(ema_50 - ema_200); 0 when the vote is tied at 0.

signal_quality, 0-10: how clean a move in direction d is.
    10 x (0.30 momentum + 0.30 trend + 0.20 volume + 0.20 rsi) without a sentiment source.
    momentum = |tanh(macd_hist / (0.25 atr_14))| when macd_hist points along d, else 0
    trend    = |trend vote| / 3 (all three orderings agree: 1)
    volume   = clip(volume_z / 2, 0, 1) (volume above its 20-bar mean confirms)
    rsi      = 1 inside the healthy band for d (50-70 up, 30-50 down), falling linearly to 0
               at 85 / 15 (overextended) and at 40 / 60 (against the move)
    With a sentiment source (a value in [-1, 1] per symbol), sentiment takes weight 0.15
    (its agreement with d, clipped to [0, 1]) and the four weights above are scaled by 0.85.
    Without one, its weight is redistributed in proportion, which is the formula above.

regime: Bull / Bear / Flat, a `volatile` flag, and a confidence in [0, 1].
    trend strength s = tanh((ema_50 - ema_200) / atr_14 / 4) (long trend, in ATR units)
    Bull when s > 0.25 and close > ema_200; Bear when s < -0.25 and close < ema_200; else Flat.
    volatile when realized_vol exceeds 1.5 x its median over the last 500 bars.
    confidence: |s| for Bull/Bear, 1 - |s| / 0.25 x 0.5 for Flat, scaled by volume
    confirmation (0.8 + 0.2 volume), and by 0.8 when volatile.

conviction, 0-10: 10 x (0.40 quality/10 + 0.25 regime agreement + 0.15 calm + 0.20 confirmation)
    regime agreement = regime_confidence when the regime's direction equals d (Flat: 0)
    calm = 1 - min(realized_vol / (3 x median), 1)
    confirmation = the share of the symbol's other timeframes whose direction equals d
    (computed across timeframes at the newest candle, so it is filled in by `score_latest`).

ensemble_label: the weighted mean of every prediction's score (strong_bear -2 .. strong_bull 2):
    the rule-based one (weight 1; its label from d and quality: strong at quality >= 7,
    plain at >= 4, else other), the models' one when there is a usable one (ml_label; weight
    = TRACER_ML_VOTE_WEIGHT x its confidence, ml_confidence; see docs/ml.md), plus every
    external prediction for the symbol and timeframe (weight = its confidence, 0.5 when it
    gave none). Mean >= 1.5 strong_bull, >= 0.5 bull,
    <= -1.5 strong_bear, <= -0.5 bear, else other. ensemble_confidence = the weight of the
    predictions whose direction matches the label's, over all the weight (other: the weight
    of the neutral ones).

History a signal needs: a signal reads every indicator of REQUIRED at its candle, so its series
needs SIGNAL_HISTORY_BARS candles up to and including that candle (200: EMA 200's first value;
every other indicator exists sooner). With fewer, the row has no indicators and no signal may be
published for it. The indicators keep converging after that (to 1e-9 of the full-history value
after WARMUP_BARS = 2,733 candles, whatever the history before; see features/indicators.py):
`history_shortfalls` names the series short of SIGNAL_HISTORY_BARS, and `not_converged` the
ones short of WARMUP_BARS, which are published but reported.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import polars as pl

from tracer_assets.features.indicators import FIRST_VALID_INDEX, WARMUP_BARS
from tracer_assets.vocabulary import BEAR, BULL, OTHER, STRONG_BEAR, STRONG_BULL, label_score

REQUIRED = (
    "close",
    "ema_12",
    "ema_26",
    "ema_50",
    "ema_200",
    "macd_hist",
    "rsi_14",
    "atr_14",
    "volume_z",
    "realized_vol",
)
VOLATILITY_LOOKBACK = 500  # bars in the realized-volatility median
SIGNAL_COLUMNS = (
    "symbol",
    "timeframe",
    "ts",
    "close",
    "direction",
    "signal_quality",
    "regime",
    "regime_volatile",
    "regime_confidence",
    "conviction",
    "rule_label",
    "ensemble_label",
    "ensemble_confidence",
    "predictions_used",
    "ml_label",
    "ml_confidence",
)

_BY_SERIES = ["symbol", "timeframe"]
# Candles of a series, up to and including the one scored, for every REQUIRED indicator to exist.
SIGNAL_HISTORY_BARS = 1 + max(FIRST_VALID_INDEX.get(column, 0) for column in REQUIRED)


def _sign(expr: pl.Expr) -> pl.Expr:
    return pl.when(expr > 0).then(1).when(expr < 0).then(-1).otherwise(0)


def _clip01(expr: pl.Expr) -> pl.Expr:
    return expr.clip(0.0, 1.0)


def _rsi_score(d: pl.Expr) -> pl.Expr:
    rsi = pl.col("rsi_14")
    up = pl.when(rsi < 50).then(_clip01((rsi - 40) / 10)).when(rsi <= 70).then(1.0).otherwise(_clip01((85 - rsi) / 15))
    down = (
        pl.when(rsi > 50).then(_clip01((60 - rsi) / 10)).when(rsi >= 30).then(1.0).otherwise(_clip01((rsi - 15) / 15))
    )
    return pl.when(d > 0).then(up).when(d < 0).then(down).otherwise(0.0)


def score_history(indicators: pl.DataFrame, sentiment: Mapping[str, float] | None = None) -> pl.DataFrame:
    """Per-bar scores for every row that has its indicators (warm-up rows are dropped).

    Rows must be one series per (symbol, timeframe); order does not matter.
    """
    missing = [c for c in REQUIRED if c not in indicators.columns]
    if missing:
        raise ValueError(f"indicators lack columns {missing}")
    frame = (
        indicators.sort(*_BY_SERIES, "ts")
        .with_columns(
            vol_median=pl.col("realized_vol").rolling_median(VOLATILITY_LOOKBACK, min_samples=20).over(_BY_SERIES)
        )
        .drop_nulls(list(REQUIRED))
    )

    vote = (
        _sign(pl.col("close") - pl.col("ema_50"))
        + _sign(pl.col("ema_12") - pl.col("ema_26"))
        + _sign(pl.col("ema_50") - pl.col("ema_200"))
    )
    frame = frame.with_columns(trend_vote=vote).with_columns(direction=_sign(pl.col("trend_vote")))
    d = pl.col("direction")
    momentum = (
        pl.when(_sign(pl.col("macd_hist")) == d)
        .then((pl.col("macd_hist") / (0.25 * pl.col("atr_14"))).tanh().abs())
        .otherwise(0.0)
    )
    trend = pl.col("trend_vote").abs() / 3
    volume = _clip01(pl.col("volume_z") / 2)
    weights = {"momentum": 0.30, "trend": 0.30, "volume": 0.20, "rsi": 0.20}
    parts = {"momentum": momentum, "trend": trend, "volume": volume, "rsi": _rsi_score(d)}
    quality = sum(weights[k] * parts[k] for k in weights)
    if sentiment:
        agreement = _clip01(pl.col("symbol").replace_strict(dict(sentiment), default=0.0, return_dtype=pl.Float64) * d)
        quality = 0.85 * quality + 0.15 * agreement
    frame = frame.with_columns(signal_quality=(10 * quality).round(4), volume_confirmation=volume)

    strength = ((pl.col("ema_50") - pl.col("ema_200")) / pl.col("atr_14") / 4).tanh()
    frame = frame.with_columns(trend_strength=strength)
    s = pl.col("trend_strength")
    regime = (
        pl.when((s > 0.25) & (pl.col("close") > pl.col("ema_200")))
        .then(pl.lit("Bull"))
        .when((s < -0.25) & (pl.col("close") < pl.col("ema_200")))
        .then(pl.lit("Bear"))
        .otherwise(pl.lit("Flat"))
    )
    volatile = (pl.col("realized_vol") > 1.5 * pl.col("vol_median")).fill_null(False)
    frame = frame.with_columns(regime=regime, regime_volatile=volatile)
    base_confidence = pl.when(pl.col("regime") == "Flat").then(1 - (s.abs() / 0.25).clip(0, 1) * 0.5).otherwise(s.abs())
    confidence = (
        base_confidence
        * (0.8 + 0.2 * pl.col("volume_confirmation"))
        * pl.when(pl.col("regime_volatile")).then(0.8).otherwise(1.0)
    )
    frame = frame.with_columns(regime_confidence=_clip01(confidence).round(4))

    regime_direction = pl.col("regime").replace_strict({"Bull": 1, "Bear": -1, "Flat": 0}, return_dtype=pl.Int64)
    agreement = pl.when((regime_direction == d) & (d != 0)).then(pl.col("regime_confidence")).otherwise(0.0)
    calm = 1 - (pl.col("realized_vol") / (3 * pl.col("vol_median"))).clip(0, 1).fill_null(0.0)
    rule_label = (
        pl.when((d > 0) & (pl.col("signal_quality") >= 7))
        .then(pl.lit(STRONG_BULL))
        .when((d > 0) & (pl.col("signal_quality") >= 4))
        .then(pl.lit(BULL))
        .when((d < 0) & (pl.col("signal_quality") >= 7))
        .then(pl.lit(STRONG_BEAR))
        .when((d < 0) & (pl.col("signal_quality") >= 4))
        .then(pl.lit(BEAR))
        .otherwise(pl.lit(OTHER))
    )
    return frame.with_columns(
        partial_conviction=0.40 * pl.col("signal_quality") / 10 + 0.25 * agreement + 0.15 * calm,
        rule_label=rule_label,
    )


def score_latest(
    indicators: pl.DataFrame,
    predictions: Mapping[tuple[str, str], Mapping] | None = None,
    sentiment: Mapping[str, float] | None = None,
) -> pl.DataFrame:
    """One signal per (symbol, timeframe): its newest candle with indicators, fully scored."""
    history = score_history(indicators, sentiment)
    latest = history.group_by(_BY_SERIES, maintain_order=True).last()
    # Confirmation across timeframes: the share of the symbol's other timeframes pointing the same way.
    confirm = []
    directions = {
        (r["symbol"], r["timeframe"]): r["direction"]
        for r in latest.select(*_BY_SERIES, "direction").iter_rows(named=True)
    }
    for (symbol, timeframe), direction in directions.items():
        others = [d for (s, tf), d in directions.items() if s == symbol and tf != timeframe]
        agree = sum(1 for d in others if d == direction and direction != 0)
        confirm.append(agree / len(others) if others else 0.0)
    latest = latest.with_columns(confirmation=pl.Series(confirm, dtype=pl.Float64))
    latest = latest.with_columns(
        conviction=(10 * (pl.col("partial_conviction") + 0.20 * pl.col("confirmation"))).round(4)
    )
    return with_predictions(latest, predictions).select(SIGNAL_COLUMNS)


def with_predictions(
    latest: pl.DataFrame,
    predictions: Mapping[tuple[str, str], Mapping] | None,
    ml_votes: Mapping[tuple[str, str], Mapping] | None = None,
    ml_weight: float = 1.0,
) -> pl.DataFrame:
    """`latest` with ensemble_label, ensemble_confidence, predictions_used, ml_label and
    ml_confidence (re)computed from its rule_label, the models' vote and the external
    prediction of each (symbol, timeframe), if any."""
    labels, confidences, used, ml_labels, ml_confidences = [], [], [], [], []
    for row in latest.select(*_BY_SERIES, "rule_label").iter_rows(named=True):
        key = (row["symbol"], row["timeframe"])
        votes = [(row["rule_label"], 1.0)]
        ml = (ml_votes or {}).get(key)
        if ml:
            votes.append((ml["label"], ml_weight * float(ml["confidence"])))
        external = (predictions or {}).get(key)
        if external:
            votes.append(_weighted(external))
        label, confidence, count = ensemble(votes)
        labels.append(label)
        confidences.append(confidence)
        used.append(count)
        ml_labels.append(ml["label"] if ml else None)
        ml_confidences.append(float(ml["confidence"]) if ml else None)
    return latest.with_columns(
        ensemble_label=pl.Series(labels, dtype=pl.String),
        ensemble_confidence=pl.Series(confidences, dtype=pl.Float64),
        predictions_used=pl.Series(used, dtype=pl.Int64),
        ml_label=pl.Series(ml_labels, dtype=pl.String),
        ml_confidence=pl.Series(ml_confidences, dtype=pl.Float64),
    )


@dataclass(frozen=True)
class HistoryShortfall:
    """A configured series that has no valid signal: too few candles, or no indicators."""

    symbol: str
    timeframe: str
    bars: int  # candles of the series up to its newest one (counted over the indicators' window)
    needed: int

    @property
    def reason(self) -> str:
        if self.bars < self.needed:
            return f"{self.bars} of {self.needed} candles"
        return f"{self.bars} candles but no indicators at the newest one (features/indicators not materialized for it)"

    def __str__(self) -> str:
        return f"{self.symbol} {self.timeframe}: {self.reason}"


def history_shortfalls(
    bars: Mapping[tuple[str, str], int],
    scored: Iterable[tuple[str, str]],
    symbols: Iterable[str],
    timeframes: Iterable[str],
    needed: int = SIGNAL_HISTORY_BARS,
) -> list[HistoryShortfall]:
    """Every configured (symbol, timeframe) without a valid signal, in configuration order.

    `bars`: candles per series up to its newest (a missing series has 0); `scored`: the series
    with a scored row (`score_latest`). A series is short when it has fewer than `needed` candles,
    or when it has them but no scored row (its indicators were computed on less, or not at all).
    """
    scored = set(scored)
    shortfalls = []
    for symbol in symbols:
        for timeframe in timeframes:
            count = int(bars.get((symbol, timeframe), 0))
            if count < needed or (symbol, timeframe) not in scored:
                shortfalls.append(HistoryShortfall(symbol, timeframe, count, needed))
    return shortfalls


def not_converged(bars: Mapping[tuple[str, str], int], warmup: int = WARMUP_BARS) -> list[tuple[str, str]]:
    """The series with fewer than `warmup` candles: valid signals, but their indicators still
    depend (beyond 1e-9) on where the stored history starts."""
    return sorted(key for key, count in bars.items() if count < warmup)


def _weighted(prediction: Mapping) -> tuple[str, float]:
    confidence = prediction.get("confidence")
    return prediction.get("label", OTHER), 0.5 if confidence is None else float(confidence)


def ensemble(predictions: list[tuple[str, float]]) -> tuple[str, float, int]:
    """(label, confidence, how many predictions) from (label, weight) pairs; see the module doc."""
    total = sum(weight for _, weight in predictions)
    if total <= 0:
        return OTHER, 0.0, len(predictions)
    mean = sum(label_score(label) * weight for label, weight in predictions) / total
    if mean >= 1.5:
        label = STRONG_BULL
    elif mean >= 0.5:
        label = BULL
    elif mean <= -1.5:
        label = STRONG_BEAR
    elif mean <= -0.5:
        label = BEAR
    else:
        label = OTHER
    direction = (label_score(label) > 0) - (label_score(label) < 0)
    agreeing = sum(
        weight
        for candidate, weight in predictions
        if ((label_score(candidate) > 0) - (label_score(candidate) < 0)) == direction
    )
    return label, round(agreeing / total, 4), len(predictions)
