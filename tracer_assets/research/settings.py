"""The research domain's settings: the backtests' costs and where their results are exported."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tracer_assets.config import Row, defaults, fraction, not_negative, number, path, positive

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
    (
        "TRACER_DESIGN_PROPOSALS",
        "6",
        "Strategy designer: candidates per daily run (offline mutations, or what each LLM call is asked for, "
        "at most 5 per call).",
    ),
    (
        "TRACER_DESIGN_CALLS",
        "1",
        "Strategy designer: LLM calls per daily run when ANTHROPIC_API_KEY is set (without a key it works offline).",
    ),
    ("TRACER_DESIGN_SEED", "7", "Strategy designer: seed of the offline mutation and crossover."),
    (
        "TRACER_DESIGN_MAX_CORRELATION",
        "0.9",
        "Strategy designer: a candidate whose entries correlate more than this with an active strategy's is rejected.",
    ),
    ("TRACER_TUNE_STRATEGIES", "3", "Tuner: how many bottom-ranked strategies are swept each daily run."),
    (
        "TRACER_RESEARCH_WORKERS",
        "2",
        "Research job: steps run side by side, one process each (design, tuning and training in parallel).",
    ),
)
DEFAULTS = defaults(TABLE)


@dataclass(frozen=True)
class ResearchSettings:
    backtest_json_path: Path
    backtest_fee: float
    backtest_slippage_bps: float
    design_proposals: int
    design_calls: int
    design_seed: int
    design_max_correlation: float
    tune_strategies: int
    workers: int


def load(env: Mapping[str, str]) -> ResearchSettings:
    def count(name: str) -> int:
        return not_negative(name, number(env, name, DEFAULTS[name], int))

    return ResearchSettings(
        backtest_json_path=path(env, "MACRO_BACKTEST_JSON_PATH", DEFAULTS["MACRO_BACKTEST_JSON_PATH"]),
        backtest_fee=fraction(env, "TRACER_BACKTEST_FEE", DEFAULTS["TRACER_BACKTEST_FEE"], float),
        backtest_slippage_bps=not_negative(
            "TRACER_BACKTEST_SLIPPAGE_BPS",
            number(env, "TRACER_BACKTEST_SLIPPAGE_BPS", DEFAULTS["TRACER_BACKTEST_SLIPPAGE_BPS"], float),
        ),
        design_proposals=count("TRACER_DESIGN_PROPOSALS"),
        design_calls=count("TRACER_DESIGN_CALLS"),
        design_seed=number(env, "TRACER_DESIGN_SEED", DEFAULTS["TRACER_DESIGN_SEED"], int),
        design_max_correlation=fraction(
            env, "TRACER_DESIGN_MAX_CORRELATION", DEFAULTS["TRACER_DESIGN_MAX_CORRELATION"], float
        ),
        tune_strategies=count("TRACER_TUNE_STRATEGIES"),
        workers=positive(
            "TRACER_RESEARCH_WORKERS", number(env, "TRACER_RESEARCH_WORKERS", DEFAULTS["TRACER_RESEARCH_WORKERS"], int)
        ),
    )
