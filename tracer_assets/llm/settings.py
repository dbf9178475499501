"""The LLM client's settings (the key is not one: it is read through Dagster's EnvVar where used)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from tracer_assets.config import Row, defaults, number, positive, text

TABLE: tuple[Row, ...] = (
    (
        "TRACER_ANTHROPIC_MODEL",
        "claude-sonnet-4-6",
        "The model the `llm` decider, the strategy designer and the report's review ask.",
    ),
    (
        "TRACER_ANTHROPIC_BASE_URL",
        "(none: Anthropic's API)",
        "Another Messages API endpoint for every LLM call (a proxy, a local server).",
    ),
    ("TRACER_LLM_TIMEOUT_SECONDS", "20", "The `llm` decider's time limit; past it the decision is HOLD."),
)
DEFAULTS = defaults(TABLE)


@dataclass(frozen=True)
class LlmSettings:
    anthropic_model: str
    anthropic_base_url: str | None
    llm_timeout_seconds: float


def load(env: Mapping[str, str]) -> LlmSettings:
    return LlmSettings(
        anthropic_model=text(env, "TRACER_ANTHROPIC_MODEL", DEFAULTS["TRACER_ANTHROPIC_MODEL"]),
        anthropic_base_url=text(env, "TRACER_ANTHROPIC_BASE_URL", None),
        llm_timeout_seconds=positive(
            "TRACER_LLM_TIMEOUT_SECONDS",
            number(env, "TRACER_LLM_TIMEOUT_SECONDS", DEFAULTS["TRACER_LLM_TIMEOUT_SECONDS"], float),
        ),
    )
