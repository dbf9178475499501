"""How frames are shown in Dagster metadata (the UI renders markdown tables). No Dagster import."""

from __future__ import annotations

import polars as pl


def markdown_table(frame: pl.DataFrame, float_format: str | None = None) -> str:
    """The frame as a markdown table; floats through `float_format` (e.g. "{:.3f}") when given."""

    def cell(value) -> str:
        return float_format.format(value) if float_format and isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.iter_rows()]
    return "\n".join(lines)
