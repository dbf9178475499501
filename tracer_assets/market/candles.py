"""Candles as polars frames: the stored shape, validation before anything is written, and gaps.

No Dagster here: the asset in `market/assets.py` calls these.

The stored shape (`market.candles`, `market.ohlcv`): symbol, timeframe, ts (candle open time,
UTC), open, high, low, close, volume.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import polars as pl

from tracer_assets.market.timeframes import timeframe_ms

PRICE_COLUMNS = ("open", "high", "low", "close")
VALUE_COLUMNS = (*PRICE_COLUMNS, "volume")
CANDLE_SCHEMA = {
    "symbol": pl.String,
    "timeframe": pl.String,
    "ts": pl.Datetime("us", "UTC"),
    **{name: pl.Float64 for name in VALUE_COLUMNS},
}
GAP_SCHEMA = {
    "symbol": pl.String,
    "timeframe": pl.String,
    "gap_start": pl.Datetime("us", "UTC"),
    "gap_end": pl.Datetime("us", "UTC"),
    "missing_candles": pl.Int64,
}

# Validation rules in the order they are reported. Each maps to a polars expression that is
# true on an offending row; the order rules need the frame sorted as it arrived.
RULES: dict[str, str] = {
    "missing_value": "a price or the volume is null or NaN",
    "non_finite": "a price or the volume is infinite (+inf or -inf)",
    "non_positive_price": "a price is zero or negative",
    "high_below_low": "high < low",
    "open_outside_range": "open outside [low, high]",
    "close_outside_range": "close outside [low, high]",
    "negative_volume": "volume < 0",
    "off_grid_timestamp": "timestamp not on the timeframe grid",
    "duplicate_timestamp": "timestamp appears twice",
    "out_of_order_timestamp": "timestamp earlier than the one before it",
}


@dataclass(frozen=True)
class Violation:
    rule: str
    symbol: str
    timeframe: str
    ts: datetime | None
    rows: int
    detail: str

    def __str__(self) -> str:
        when = self.ts.strftime("%Y-%m-%dT%H:%M:%SZ") if self.ts else "?"
        more = f" ({self.rows} rows)" if self.rows > 1 else ""
        return f"{self.symbol} {self.timeframe} at {when}: {RULES[self.rule]} [{self.rule}]{more}: {self.detail}"


class CandleValidationError(ValueError):
    """A batch of candles broke a rule; nothing of the batch may be written."""

    def __init__(self, violations: list[Violation]):
        self.violations = violations
        lines = [str(v) for v in violations[:20]]
        if len(violations) > 20:
            lines.append(f"... and {len(violations) - 20} more")
        super().__init__("candles rejected, nothing was written:\n  " + "\n  ".join(lines))


def empty_candles() -> pl.DataFrame:
    return pl.DataFrame(schema=CANDLE_SCHEMA)


def candles_from_rows(rows: list[list[float]], symbol: str, timeframe: str) -> pl.DataFrame:
    """ccxt's OHLCV rows ([ms, o, h, l, c, v]) to the stored shape, order kept as it came."""
    if not rows:
        return empty_candles()
    frame = pl.DataFrame(rows, schema=["ms", *VALUE_COLUMNS], orient="row", schema_overrides={"ms": pl.Int64})
    return frame.select(
        pl.lit(symbol, pl.String).alias("symbol"),
        pl.lit(timeframe, pl.String).alias("timeframe"),
        pl.from_epoch("ms", time_unit="ms").cast(pl.Datetime("us")).dt.replace_time_zone("UTC").alias("ts"),
        *[pl.col(name).cast(pl.Float64) for name in VALUE_COLUMNS],
    )


def validate_candles(candles: pl.DataFrame) -> None:
    """Raise CandleValidationError naming symbol, timestamp and rule for every broken rule.

    Checked per (symbol, timeframe) in the order the rows arrived, so an exchange that sends
    candles out of order is caught rather than silently sorted.
    """
    if candles.is_empty():
        return
    missing = [c for c in CANDLE_SCHEMA if c not in candles.columns]
    if missing:
        raise ValueError(f"candles frame lacks columns {missing}")
    ms = pl.col("ts").dt.epoch("ms")
    steps = {tf: timeframe_ms(tf) for tf in candles["timeframe"].unique().to_list()}
    step_ms = pl.col("timeframe").replace_strict(steps, return_dtype=pl.Int64)
    in_group = ["symbol", "timeframe"]
    prev_ms = ms.shift(1).over(in_group)
    missing = pl.any_horizontal([pl.col(c).is_null() | pl.col(c).is_nan() for c in VALUE_COLUMNS])
    infinite = pl.any_horizontal([pl.col(c).is_infinite() for c in VALUE_COLUMNS]).fill_null(False)

    def on_complete_rows(broken: pl.Expr) -> pl.Expr:
        # A row with a NaN or an infinity is reported by missing_value / non_finite only:
        # NaN compares above every number in polars and +inf/-inf above/below them, so such
        # a row would trip the range rules too (or, with high=inf, slip through all of them).
        return (broken & ~missing & ~infinite).fill_null(False)

    flags = candles.with_row_index("_row").select(
        "_row",
        *in_group,
        "ts",
        *VALUE_COLUMNS,
        missing.alias("missing_value"),
        infinite.alias("non_finite"),
        on_complete_rows(pl.any_horizontal([pl.col(c) <= 0 for c in PRICE_COLUMNS])).alias("non_positive_price"),
        on_complete_rows(pl.col("high") < pl.col("low")).alias("high_below_low"),
        on_complete_rows((pl.col("open") < pl.col("low")) | (pl.col("open") > pl.col("high"))).alias(
            "open_outside_range"
        ),
        on_complete_rows((pl.col("close") < pl.col("low")) | (pl.col("close") > pl.col("high"))).alias(
            "close_outside_range"
        ),
        on_complete_rows(pl.col("volume") < 0).alias("negative_volume"),
        (pl.col("ts").is_null() | (ms % step_ms != 0)).fill_null(True).alias("off_grid_timestamp"),
        pl.col("ts").is_duplicated().over(in_group).alias("duplicate_timestamp"),
        (ms < prev_ms).fill_null(False).alias("out_of_order_timestamp"),
    )
    violations: list[Violation] = []
    for rule in RULES:
        offending = flags.filter(pl.col(rule))
        if offending.is_empty():
            continue
        for (symbol, timeframe), group in offending.group_by(in_group, maintain_order=True):
            first = group.row(0, named=True)
            detail = ", ".join(f"{c}={first[c]}" for c in VALUE_COLUMNS)
            violations.append(Violation(rule, symbol, timeframe, first["ts"], group.height, detail))
    if violations:
        raise CandleValidationError(violations)


def closed_window_end(window_end: datetime, now_ms: int, timeframe: str) -> datetime:
    """The end of what can exist yet: a candle is closed once its open + timeframe <= now."""
    step = timeframe_ms(timeframe)
    now_floor = datetime.fromtimestamp((now_ms // step) * step / 1000, tz=UTC)
    return min(window_end, now_floor)


def find_gaps(
    candles: pl.DataFrame,
    symbols: list[str] | tuple[str, ...],
    timeframe: str,
    window_start: datetime,
    window_end: datetime,
) -> pl.DataFrame:
    """Every run of missing candles in [window_start, window_end) per symbol, not filled in.

    `gap_start` is the open time of the first missing candle, `gap_end` the open time of the
    next candle present (or the window end): the gap is [gap_start, gap_end).
    """
    step = timeframe_ms(timeframe)
    start_ms = int(window_start.timestamp() * 1000)
    end_ms = int(window_end.timestamp() * 1000)
    if end_ms <= start_ms:
        return pl.DataFrame(schema=GAP_SCHEMA)
    present = (
        candles.filter(pl.col("timeframe") == timeframe)
        .select("symbol", pl.col("ts").dt.epoch("ms").alias("ms"))
        .filter((pl.col("ms") >= start_ms) & (pl.col("ms") < end_ms))
    )
    # Bracket every symbol's candles with sentinels one step outside the window, so leading
    # and trailing holes come out of the same "step larger than one timeframe" rule.
    sentinels = pl.DataFrame(
        {
            "symbol": [s for s in symbols for _ in range(2)],
            "ms": [m for _ in symbols for m in (start_ms - step, end_ms)],
        },
        schema={"symbol": pl.String, "ms": pl.Int64},
    )
    gaps = (
        pl.concat([present, sentinels])
        .unique()
        .sort("symbol", "ms")
        .with_columns(next_ms=pl.col("ms").shift(-1).over("symbol"))
        .filter(pl.col("next_ms") - pl.col("ms") > step)
        .select(
            "symbol",
            pl.lit(timeframe, pl.String).alias("timeframe"),
            (pl.col("ms") + step).alias("gap_start_ms"),
            pl.col("next_ms").alias("gap_end_ms"),
        )
    )
    return gaps.select(
        "symbol",
        "timeframe",
        pl.from_epoch("gap_start_ms", time_unit="ms")
        .cast(pl.Datetime("us"))
        .dt.replace_time_zone("UTC")
        .alias("gap_start"),
        pl.from_epoch("gap_end_ms", time_unit="ms")
        .cast(pl.Datetime("us"))
        .dt.replace_time_zone("UTC")
        .alias("gap_end"),
        ((pl.col("gap_end_ms") - pl.col("gap_start_ms")) // step).alias("missing_candles"),
    )
