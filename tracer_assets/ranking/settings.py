"""The ranking domain's settings: how many of each kind are kept."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from tracer_assets.config import Row, defaults, not_negative, number, positive

TABLE: tuple[Row, ...] = (
    ("TRACER_KEEP_STRATEGIES", "20", "Strategies kept by out-of-sample score; the rest are archived with a reason."),
    ("TRACER_KEEP_MODELS", "5", "Models kept by out-of-sample F1 macro."),
    ("TRACER_KEEP_ENSEMBLES", "3", "Ensembles kept by out-of-sample accuracy, within each model timeframe."),
    ("TRACER_RANKING_MIN_KEPT", "1", "Never fewer kept of a kind than this, even on a day nothing scored."),
)
DEFAULTS = defaults(TABLE)


@dataclass(frozen=True)
class RankingSettings:
    keep_strategies: int
    keep_models: int
    keep_ensembles: int
    min_kept: int


def load(env: Mapping[str, str]) -> RankingSettings:
    def count(name: str) -> int:
        return positive(name, number(env, name, DEFAULTS[name], int))

    return RankingSettings(
        keep_strategies=count("TRACER_KEEP_STRATEGIES"),
        keep_models=count("TRACER_KEEP_MODELS"),
        keep_ensembles=count("TRACER_KEEP_ENSEMBLES"),
        min_kept=not_negative(
            "TRACER_RANKING_MIN_KEPT", number(env, "TRACER_RANKING_MIN_KEPT", DEFAULTS["TRACER_RANKING_MIN_KEPT"], int)
        ),
    )
