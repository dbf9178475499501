"""Guards against lookahead and against too short a warm-up (freqtrade's lookahead and
recursive analysis), as pure functions the asset checks call.

- Lookahead: a value computed for candle t from the whole history must equal the value
  computed from the history cut at t. A leaking computation (a centred window, a shift(-1))
  differs at the cut, by far more than float noise.
- Recursive: the newest values must not change when the warm-up window is doubled; if they
  do, the per-tick window is too short for the indicators to have converged.

All series of a check run through one `compute` call: each cut history becomes its own
series (its symbol tagged with the cut), so the cost is one pass, not one per sample.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

import polars as pl

from tracer_assets.market.checks import CheckOutcome

_KEY = ["symbol", "timeframe", "ts"]


@dataclass(frozen=True)
class Mismatch:
    symbol: str
    timeframe: str
    ts: datetime
    column: str
    expected: float | None
    got: float | None

    def __str__(self) -> str:
        return (
            f"{self.symbol} {self.timeframe} {self.ts:%Y-%m-%dT%H:%M}Z {self.column}: {self.expected!r} vs {self.got!r}"
        )


def _differs(a, b, rel_tol: float) -> bool:
    if a is None or b is None:
        return (a is None) != (b is None)
    if isinstance(a, float) and isinstance(b, float) and (math.isnan(a) or math.isnan(b)):
        return math.isnan(a) != math.isnan(b)  # NaN compares false with everything: test it apart
    if isinstance(a, float) or isinstance(b, float):
        return abs(a - b) > rel_tol * max(abs(a), abs(b), 1e-12)
    return a != b


def compare_rows(
    reference: pl.DataFrame, candidate: pl.DataFrame, columns: Sequence[str], rel_tol: float
) -> list[Mismatch]:
    """Every (row, column) of `candidate` that differs from `reference`'s row of the same
    (symbol, timeframe, ts) by more than `rel_tol` relative (0: any difference)."""
    joined = reference.select(*_KEY, *columns).join(
        candidate.select(*_KEY, *[pl.col(c).alias(f"{c}__cut") for c in columns]), on=_KEY, how="inner"
    )
    mismatches = []
    for row in joined.iter_rows(named=True):
        for column in columns:
            if _differs(row[column], row[f"{column}__cut"], rel_tol):
                mismatches.append(
                    Mismatch(row["symbol"], row["timeframe"], row["ts"], column, row[column], row[f"{column}__cut"])
                )
    return mismatches


def _tag(frame: pl.DataFrame, tag: str) -> pl.DataFrame:
    return frame.with_columns(pl.col("symbol") + tag)


def _untag(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.with_columns(pl.col("symbol").str.replace(r"@[^@]*$", ""))


def series_cut(candles: pl.DataFrame, sample: tuple[str, str, datetime]) -> pl.DataFrame:
    """The sampled series' candles up to and including the sampled one."""
    symbol, timeframe, ts = sample
    return candles.filter((pl.col("symbol") == symbol) & (pl.col("timeframe") == timeframe) & (pl.col("ts") <= ts))


def lookahead_mismatches(
    candles: pl.DataFrame,
    compute: Callable[[pl.DataFrame], pl.DataFrame],
    samples: Sequence[tuple[str, str, datetime]],
    columns: Sequence[str],
    rel_tol: float = 1e-6,
    cut: Callable[[pl.DataFrame, tuple[str, str, datetime]], pl.DataFrame] = series_cut,
) -> list[Mismatch]:
    """Recompute each sampled (symbol, timeframe, ts) from the candles `cut` keeps for it (by
    default its own series up to ts) and compare with the row computed from all the candles.

    `compute` maps candles (symbol, timeframe, ts, OHLCV) to rows keyed the same way. A sample
    with a row from all the candles and none from the cut ones is a mismatch (column "row").
    """
    full = compute(candles)
    cuts = [_tag(cut(candles, sample), f"@{n}") for n, sample in enumerate(samples)]
    if not cuts:
        return []
    recomputed = compute(pl.concat(cuts))
    wanted = pl.DataFrame(
        {
            "symbol": [f"{s}@{n}" for n, (s, _, _) in enumerate(samples)],
            "timeframe": [tf for _, tf, _ in samples],
            "ts": [ts for _, _, ts in samples],
        },
        schema={"symbol": pl.String, "timeframe": pl.String, "ts": recomputed.schema["ts"]},
    )
    at_cut = _untag(recomputed.join(wanted, on=_KEY, how="semi"))
    vanished = full.join(_untag(wanted), on=_KEY, how="semi").join(at_cut, on=_KEY, how="anti")
    return compare_rows(full, at_cut, columns, rel_tol) + [
        Mismatch(symbol, timeframe, ts, "row", 1.0, None) for symbol, timeframe, ts in vanished.select(_KEY).rows()
    ]


def warmup_mismatches(
    candles: pl.DataFrame,
    compute: Callable[[pl.DataFrame], pl.DataFrame],
    warmup_bars: int,
    columns: Sequence[str],
    rel_tol: float = 1e-9,
) -> list[Mismatch]:
    """Newest values computed over the last `warmup_bars` bars vs over twice as many.

    Series shorter than twice the warm-up are compared over what there is (their whole
    history is then the doubled window, which is exactly right).
    """
    ordered = candles.sort("symbol", "timeframe", "ts")
    long = ordered.group_by(["symbol", "timeframe"], maintain_order=True).tail(2 * warmup_bars)
    short = _tag(ordered.group_by(["symbol", "timeframe"], maintain_order=True).tail(warmup_bars), "@short")
    both = compute(pl.concat([long, short]))
    newest = both.group_by(["symbol", "timeframe"], maintain_order=True).last()
    reference = newest.filter(~pl.col("symbol").str.contains("@short"))
    candidate = _untag(newest.filter(pl.col("symbol").str.contains("@short")))
    return compare_rows(reference, candidate, columns, rel_tol)


def guard_outcome(name: str, mismatches: Sequence[Mismatch], **metadata) -> CheckOutcome:
    """A guard's verdict in the shape every check of the project reports."""
    return CheckOutcome(
        name, not mismatches, {**metadata, "mismatches": len(mismatches), "examples": [str(m) for m in mismatches[:5]]}
    )
