"""The research domain's settings: the backtests' costs and where their results are exported."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tracer_assets.config import Row, defaults, fraction, not_negative, number, path

TABLE: tuple[Row, ...] = (
    (
        "MACRO_BACKTEST_JSON_PATH",
        ".tracer/backtest/backtest_results.json",
        (
            "Where the backtests are exported in the macro orchestrator's shape "
            "(`totalPNL`, `winRate`, trades, drawdown per strategy variant and timeframe)."
        ),
    ),
    ("TRACER_BACKTEST_FEE", "0.001", "Backtests: taker fee on every fill, as a fraction of the notional."),
    ("TRACER_BACKTEST_SLIPPAGE_BPS", "5", "Backtests: adverse slippage on every fill, in basis points."),
)
DEFAULTS = defaults(TABLE)


@dataclass(frozen=True)
class ResearchSettings:
    backtest_json_path: Path
    backtest_fee: float
    backtest_slippage_bps: float


def load(env: Mapping[str, str]) -> ResearchSettings:
    return ResearchSettings(
        backtest_json_path=path(env, "MACRO_BACKTEST_JSON_PATH", DEFAULTS["MACRO_BACKTEST_JSON_PATH"]),
        backtest_fee=fraction(env, "TRACER_BACKTEST_FEE", DEFAULTS["TRACER_BACKTEST_FEE"], float),
        backtest_slippage_bps=not_negative(
            "TRACER_BACKTEST_SLIPPAGE_BPS",
            number(env, "TRACER_BACKTEST_SLIPPAGE_BPS", DEFAULTS["TRACER_BACKTEST_SLIPPAGE_BPS"], float),
        ),
    )
