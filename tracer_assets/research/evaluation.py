"""Measuring a candidate strategy the way research may: on the research window, and out of sample.

Pure (no Dagster). A series is one symbol's candles of one timeframe, oldest first. Its
research window is the bars before its first walk-forward test window
(`backtest.research_window_stop`): the designer and the tuner look there and nowhere else.
A candidate's out-of-sample figures are those of `backtest_strategy`, the same walk-forward
the `research/backtests` asset runs, averaged over the series like the ranking does; they
are recorded as the trial's result and never shown to the LLM.

Regimes (for the designer's gaps): each bar of a research window is `uptrend` (close above its
100-bar SMA, which rose over the last 20 bars), `downtrend` (below it, falling) or `sideways`.
A strategy covers a regime when its default-parameter trades entered in that regime have a
positive mean return over the research windows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from tracer_assets.features.indicators import sma
from tracer_assets.research.backtest import (
    MIN_BARS,
    backtest_strategy,
    candle_arrays,
    research_window_stop,
    simulate_signals,
)
from tracer_assets.research.engine import FillRules
from tracer_assets.research.metrics import metrics
from tracer_assets.research.rules import evaluate, param_grid
from tracer_assets.research.selection import ReturnStats, return_stats
from tracer_assets.research.spec import StrategySpec

SeriesKey = tuple[str, str]  # (symbol, timeframe)
REGIMES = ("uptrend", "downtrend", "sideways")
REGIME_SMA = 100
REGIME_SLOPE_BARS = 20
SUMMARY_METRICS = ("score", "sharpe", "total_return", "max_drawdown", "win_rate", "trades")


@dataclass(frozen=True)
class WindowFigures:
    """Mean figures over the series a strategy was measured on."""

    series: int
    score: float | None
    sharpe: float | None
    total_return: float | None
    max_drawdown: float | None
    win_rate: float | None
    trades: float | None

    def as_dict(self) -> dict:
        return {name: getattr(self, name) for name in ("series", *SUMMARY_METRICS)}


@dataclass(frozen=True)
class Evaluation:
    """A candidate's research-window figures (default parameters), its out-of-sample
    walk-forward figures, and the statistics of its pooled out-of-sample bar returns."""

    in_sample: WindowFigures
    out_of_sample: WindowFigures
    oos_returns: ReturnStats | None
    combinations: int  # grid size tried in each walk-forward training window
    per_series: pl.DataFrame = field(repr=False)  # symbol, timeframe, window, METRIC_COLUMNS


def _figures(frame: pl.DataFrame) -> WindowFigures:
    """Means of the summary metrics (null where nothing is finite)."""
    if frame.is_empty():
        return WindowFigures(0, *(None for _ in SUMMARY_METRICS))
    means = frame.select(pl.col(c).cast(pl.Float64).fill_nan(None).mean() for c in SUMMARY_METRICS).row(0)
    return WindowFigures(frame.height, *means)


def research_slice(candles: pl.DataFrame) -> pl.DataFrame:
    """The bars research may see: those before the first out-of-sample window."""
    return candles.head(research_window_stop(candles.height))


def default_signals(spec: StrategySpec, candles: pl.DataFrame):
    """Signals of the spec's default parameters over `candles` (one combination)."""
    defaults = {name: p.default for name, p in spec.parameters.items()}
    return evaluate(spec, candle_arrays(candles), [defaults])


def _simulate_defaults(spec: StrategySpec, candles: pl.DataFrame, rules: FillRules):
    return simulate_signals(candle_arrays(candles), default_signals(spec, candles), rules)


def research_window_metrics(
    spec: StrategySpec, series: Mapping[SeriesKey, pl.DataFrame], rules: FillRules
) -> pl.DataFrame:
    """symbol, timeframe and the metrics of the default parameters on each research window."""
    rows = []
    for (symbol, timeframe), candles in series.items():
        window = research_slice(candles)
        if candles.height < MIN_BARS or window.height < 2:
            continue
        table = metrics(_simulate_defaults(spec, window, rules), timeframe).drop("combo")
        rows.append(table.with_columns(pl.lit(symbol).alias("symbol"), pl.lit(timeframe).alias("timeframe")))
    return pl.concat(rows) if rows else pl.DataFrame()


def evaluate_candidate(spec: StrategySpec, series: Mapping[SeriesKey, pl.DataFrame], rules: FillRules) -> Evaluation:
    """The candidate on every series: research-window figures at its defaults, and the
    walk-forward out-of-sample figures (its grid re-chosen in each training window). The
    return statistics pool the out-of-sample bar returns of the series of the spec's own
    timeframe (of every series when the spec's timeframe has none)."""
    in_sample = research_window_metrics(spec, series, rules)
    oos_rows, own_returns, all_returns = [], [], []
    for (symbol, timeframe), candles in series.items():
        if candles.height < MIN_BARS:
            continue
        result = backtest_strategy(spec, candles, timeframe, rules)
        oos = result.rows.filter(pl.col("window") == "out_of_sample")
        oos_rows.append(oos.with_columns(pl.lit(symbol).alias("symbol"), pl.lit(timeframe).alias("timeframe")))
        all_returns.append(result.oos_returns)
        if timeframe == spec.timeframe:
            own_returns.append(result.oos_returns)
    pooled = own_returns or all_returns
    out_of_sample = pl.concat(oos_rows) if oos_rows else pl.DataFrame()
    parts = [
        frame.with_columns(pl.lit(window).alias("window")).select("symbol", "timeframe", "window", *SUMMARY_METRICS)
        for window, frame in (("research", in_sample), ("out_of_sample", out_of_sample))
        if not frame.is_empty()
    ]
    return Evaluation(
        in_sample=_figures(in_sample),
        out_of_sample=_figures(out_of_sample),
        oos_returns=return_stats(np.concatenate(pooled)) if pooled else None,
        combinations=len(param_grid(spec)),
        per_series=pl.concat(parts, how="vertical_relaxed") if parts else pl.DataFrame(),
    )


def bar_regimes(close: np.ndarray) -> np.ndarray:
    """REGIMES label of every bar (sideways during the SMA's warm-up)."""
    close = np.asarray(close, dtype=np.float64)
    labels = np.full(close.shape[0], "sideways", dtype=object)
    if close.shape[0] <= REGIME_SMA + REGIME_SLOPE_BARS:
        return labels
    average = sma(close, REGIME_SMA)
    slope = np.full_like(average, np.nan)
    slope[REGIME_SLOPE_BARS:] = average[REGIME_SLOPE_BARS:] - average[:-REGIME_SLOPE_BARS]
    with np.errstate(invalid="ignore"):
        labels[(close > average) & (slope > 0)] = "uptrend"
        labels[(close < average) & (slope < 0)] = "downtrend"
    return labels


@dataclass(frozen=True)
class Gaps:
    """What no kept strategy covers on the research windows."""

    symbols: list[str]
    timeframes: list[str]
    regimes: list[str]
    regime_share: dict[str, float]  # share of research-window bars in each regime

    def as_dict(self) -> dict:
        return {
            "symbols": self.symbols,
            "timeframes": self.timeframes,
            "regimes": self.regimes,
            "regime_share": self.regime_share,
        }


def portfolio_gaps(
    kept: Mapping[str, StrategySpec], series: Mapping[SeriesKey, pl.DataFrame], rules: FillRules
) -> tuple[Gaps, pl.DataFrame]:
    """The gaps, and each kept strategy's research-window metrics per series (strategy_id,
    symbol, timeframe, METRIC_COLUMNS). A symbol (timeframe) is covered when some kept strategy
    scores above 0 on one of its series; a regime as the module doc says."""
    covered_series: set[SeriesKey] = set()
    regime_returns: dict[str, list[float]] = {}
    bars = {regime: 0 for regime in REGIMES}
    regimes_of = {}
    for key, candles in series.items():
        window = research_slice(candles)
        labels = bar_regimes(window["close"].to_numpy())
        regimes_of[key] = (window, labels)
        for regime in REGIMES:
            bars[regime] += int((labels == regime).sum())
    frames = []
    for sid, spec in kept.items():
        returns: dict[str, list[float]] = {regime: [] for regime in REGIMES}
        for key, (window, labels) in regimes_of.items():
            if series[key].height < MIN_BARS or window.height < 2:
                continue
            result = _simulate_defaults(spec, window, rules)
            table = metrics(result, key[1]).drop("combo")
            frames.append(
                table.with_columns(
                    pl.lit(sid).alias("strategy_id"), pl.lit(key[0]).alias("symbol"), pl.lit(key[1]).alias("timeframe")
                )
            )
            if (table["score"][0] or 0.0) > 0:
                covered_series.add(key)
            for entry, trade_return in zip(result.entry_idx, result.return_):
                # The signal was taken at the close of the bar before the entry's open.
                returns[labels[max(int(entry) - 1, 0)]].append(float(trade_return))
        for regime, values in returns.items():
            if values and float(np.mean(values)) > 0:
                regime_returns.setdefault(regime, []).append(float(np.mean(values)))
    total = sum(bars.values()) or 1
    gaps = Gaps(
        symbols=sorted({s for s, _ in series} - {s for s, _ in covered_series}),
        timeframes=sorted({t for _, t in series} - {t for _, t in covered_series}),
        regimes=[regime for regime in REGIMES if regime not in regime_returns],
        regime_share={regime: round(bars[regime] / total, 4) for regime in REGIMES},
    )
    return gaps, (pl.concat(frames) if frames else pl.DataFrame())
