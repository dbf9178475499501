"""Backtest stats for the macro orchestrator: its regime reading and its results file.

The orchestrator keeps, per strategy variant and timeframe, `totalPNL`, `winRate`, `trades` and
`drawdown`, and reads a regime from them. Here:

regime_from_stats(stats, min_win_rate=0.2)   (MACRO_MIN_WIN_RATE)
    "Flat" when totalPNL is missing, null or NaN, or `trades` is present and 0;
    "Bear" when totalPNL < 0, whatever the win rate (losing money is bearish even with many
           small wins);
    "Bull" when totalPNL > 0 and winRate >= min_win_rate;
    "Flat" otherwise: totalPNL == 0, or a profit with winRate missing or below the minimum
           (a profit carried by a few lucky trades is not read as a trend).
    winRate is a FRACTION in [0, 1] (what `metrics` and `backtest_results_json` write). A value
    above 1 is refused rather than guessed at: 0.5 could be 50% or half a percent.

backtest_results_json(rows) / write_backtest_results(path, rows): the shape
    {"generated_at": "2024-06-01T00:00:00Z",
     "results": {variant: {timeframe: {"totalPNL": float, "winRate": float|null,
                                        "trades": int, "drawdown": float}}}}
    from rows carrying `variant`, `timeframe` and the `metrics` columns `pnl` (quote),
    `win_rate` (fraction), `trades`, `max_drawdown` (positive fraction). Written atomically:
    a temporary file in the same folder, flushed, then os.replace.
"""

from __future__ import annotations

import json
import math
import numbers
import os
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import polars as pl

from tracer_assets.files import write_atomically

Regime = Literal["Bull", "Bear", "Flat"]
DEFAULT_MIN_WIN_RATE = 0.2  # MACRO_MIN_WIN_RATE's default
ROW_FIELDS = ("variant", "timeframe", "pnl", "win_rate", "trades", "max_drawdown")


def _optional_number(name: str, value: object) -> float | None:
    """None for missing/null/NaN; a float for a real number; ValueError for anything else."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name}={value!r}: must be a number or null")
    number = float(value)
    if math.isnan(number):
        return None
    if math.isinf(number):
        raise ValueError(f"{name}={value!r}: must be finite")
    return number


def _win_rate(name: str, value: object) -> float | None:
    rate = _optional_number(name, value)
    if rate is not None and not 0.0 <= rate <= 1.0:
        raise ValueError(f"{name}={value!r}: must be a fraction in [0, 1] (a percent like 45.0 is not accepted)")
    return rate


def regime_from_stats(stats: Mapping[str, Any], min_win_rate: float = DEFAULT_MIN_WIN_RATE) -> Regime:
    """Bull / Bear / Flat from one variant's backtest stats (rules in this module's docstring)."""
    if not isinstance(stats, Mapping):
        raise ValueError(f"stats={stats!r}: must be a mapping with totalPNL and winRate")
    threshold = _win_rate("min_win_rate", min_win_rate)
    if threshold is None:
        raise ValueError(f"min_win_rate={min_win_rate!r}: must be a fraction in [0, 1]")
    total_pnl = _optional_number("totalPNL", stats.get("totalPNL"))
    win_rate = _win_rate("winRate", stats.get("winRate"))
    trades = _optional_number("trades", stats.get("trades"))
    if total_pnl is None or trades == 0:
        return "Flat"
    if total_pnl < 0:
        return "Bear"
    if total_pnl > 0 and win_rate is not None and win_rate >= threshold:
        return "Bull"
    return "Flat"


def _rows(rows: Iterable[Mapping[str, Any]] | pl.DataFrame) -> Iterable[Mapping[str, Any]]:
    return rows.iter_rows(named=True) if isinstance(rows, pl.DataFrame) else rows


def backtest_results_json(
    rows: Iterable[Mapping[str, Any]] | pl.DataFrame, generated_at: datetime | None = None
) -> dict[str, Any]:
    """The orchestrator's results document from rows of variant, timeframe and metrics."""
    stamp = datetime.now(UTC) if generated_at is None else generated_at
    if stamp.tzinfo is None:
        raise ValueError(f"generated_at={generated_at!r}: must be timezone-aware")
    results: dict[str, dict[str, dict[str, Any]]] = {}
    for n, row in enumerate(_rows(rows)):
        missing = [field for field in ROW_FIELDS if field not in row]
        if missing:
            raise ValueError(f"rows[{n}]: missing {', '.join(missing)} (needs {', '.join(ROW_FIELDS)})")
        variant, timeframe = row["variant"], row["timeframe"]
        for name in ("variant", "timeframe"):
            if not isinstance(row[name], str) or not row[name]:
                raise ValueError(f"rows[{n}].{name}={row[name]!r}: must be a non-empty string")
        trades = row["trades"]
        if isinstance(trades, bool) or not isinstance(trades, numbers.Integral) or trades < 0:
            raise ValueError(f"rows[{n}].trades={trades!r}: must be a whole number >= 0")
        if timeframe in results.get(variant, {}):
            raise ValueError(f"rows[{n}]: a second row for variant {variant!r} and timeframe {timeframe!r}")
        results.setdefault(variant, {})[timeframe] = {
            "totalPNL": _optional_number(f"rows[{n}].pnl", row["pnl"]),
            "winRate": _win_rate(f"rows[{n}].win_rate", row["win_rate"]),
            "trades": int(trades),
            "drawdown": _optional_number(f"rows[{n}].max_drawdown", row["max_drawdown"]),
        }
    return {
        "generated_at": stamp.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "results": results,
    }


def write_backtest_results(
    path: str | os.PathLike[str],
    rows: Iterable[Mapping[str, Any]] | pl.DataFrame,
    generated_at: datetime | None = None,
) -> Path:
    """Write `backtest_results_json(rows)` to `path` atomically; a reader sees the old file or the new one."""
    document = backtest_results_json(rows, generated_at)
    text = json.dumps(document, indent=2, sort_keys=True, allow_nan=False) + "\n"
    return write_atomically(Path(path), text)
