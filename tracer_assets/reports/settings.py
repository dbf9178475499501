"""The reports domain's settings: where the daily report is written, how much it lists and how
far back its trends look."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tracer_assets.config import Row, defaults, number, path, positive

TABLE: tuple[Row, ...] = (
    (
        "TRACER_REPORTS_DIR",
        ".tracer/reports",
        "Where the daily report's JSON and PNG plots are written, one `YYYY-MM-DD.json` per day.",
    ),
    ("TRACER_REPORT_TOP", "10", "How many strategies, models and ensembles the daily report lists."),
    ("TRACER_REPORT_TRENDS", "7", "How many earlier reports the daily report's trends compare against."),
)
DEFAULTS = defaults(TABLE)


@dataclass(frozen=True)
class ReportsSettings:
    reports_dir: Path
    top: int
    trends: int


def load(env: Mapping[str, str]) -> ReportsSettings:
    def count(name: str) -> int:
        return positive(name, number(env, name, DEFAULTS[name], int))

    return ReportsSettings(
        reports_dir=path(env, "TRACER_REPORTS_DIR", DEFAULTS["TRACER_REPORTS_DIR"]),
        top=count("TRACER_REPORT_TOP"),
        trends=count("TRACER_REPORT_TRENDS"),
    )
