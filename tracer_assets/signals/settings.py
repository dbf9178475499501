"""The signals domain's settings."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tracer_assets.config import Row, defaults, text

TABLE: tuple[Row, ...] = (
    (
        "TRACER_SIGNAL_LOG",
        ".tracer/logs/macro_signal.log",
        (
            "External predictions (the macro orchestrator's JSON lines), read tolerantly; "
            "the newest line per symbol and timeframe joins the ensemble label."
        ),
    ),
)
DEFAULTS = defaults(TABLE)


@dataclass(frozen=True)
class SignalsSettings:
    signal_log: Path


def load(env: Mapping[str, str]) -> SignalsSettings:
    return SignalsSettings(
        signal_log=Path(text(env, "TRACER_SIGNAL_LOG", DEFAULTS["TRACER_SIGNAL_LOG"])).expanduser().absolute()
    )
