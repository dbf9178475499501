"""The daily report's plots as PNG bytes: the strategies' equity and drawdown, the models' F1
against their baselines, the accounts' equity. Each figure is a `matplotlib.figure.Figure` drawn
on its own Agg canvas: no pyplot, no global state, so plots can be drawn in any thread or process.
An empty input still gives a PNG, one that says "no data yet"."""

from __future__ import annotations

import base64
import functools
import io
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from tracer_assets.files import write_atomically

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

# matplotlib is imported in the functions that draw: it costs ~0.5 s to import, and every run
# process imports the definitions (which import this module).

__all__ = [
    "MAX_LINES",
    "drawdown_plot",
    "equity_plot",
    "markdown_image",
    "model_f1_plot",
    "portfolio_plot",
    "render_plots",
    "render_pngs",
]

FIGURE_SIZE = (9.0, 4.5)  # inches
DPI = 100
MAX_LINES = 12  # more lines than this is a blur of colours, not a plot
MAX_MODELS = 12
CURVE_KEY = ("strategy_id", "name", "symbol", "timeframe")


@functools.cache
def _palette() -> list[tuple[float, float, float, float]]:
    """20 distinct colours: the dark half of tab20 first, so the first lines differ most."""
    from matplotlib import colormaps  # imported here: see the note on matplotlib above

    return [colormaps["tab20"](i) for i in (*range(0, 20, 2), *range(1, 20, 2))]


_F1_BARS = (
    ("f1_model", "model", "tab:blue"),
    ("f1_majority", "majority class", "tab:gray"),
    ("f1_last_return", "last return's sign", "tab:orange"),
)


def _figure() -> tuple[Figure, Axes]:
    # imported here: see the note on matplotlib above
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=FIGURE_SIZE, dpi=DPI, layout="tight")
    FigureCanvasAgg(figure)
    return figure, figure.add_subplot()


def _png(figure: Figure) -> bytes:
    # Tight layout rather than bbox_inches="tight": the image keeps its 900 x 450 pixels.
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


def _no_data(title: str) -> bytes:
    figure, axes = _figure()
    axes.set_axis_off()
    axes.set_title(title)
    axes.text(0.5, 0.5, "no data yet", ha="center", va="center", fontsize=16, color="dimgray", transform=axes.transAxes)
    return _png(figure)


def _time_axis(axes: Axes) -> None:
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter  # imported here: see the note above

    locator = AutoDateLocator()
    axes.xaxis.set_major_locator(locator)
    axes.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    axes.grid(True, alpha=0.3)


def _legend(axes: Axes) -> None:
    # Outside the axes, on the right: the lines stay visible whatever their shape.
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)


# ---------------------------------------------------------------------------------------------
# Strategies


def _best_curves(curves: pl.DataFrame) -> list[tuple[str, pl.DataFrame]]:
    """(label, rows by time) of the lines with the highest final equity, at most MAX_LINES, best
    first. A line is one strategy on one symbol and timeframe; non-finite equity is dropped."""
    rows = curves.with_columns(pl.col("equity").cast(pl.Float64)).filter(pl.col("equity").is_finite())
    lines = []
    for key, line in rows.sort("ts").group_by(CURVE_KEY, maintain_order=True):
        _, name, symbol, timeframe = key
        lines.append((f"{name} {symbol} {timeframe}", line))
    lines.sort(key=lambda item: (-item[1].get_column("equity")[-1], item[0]))
    return lines[:MAX_LINES]


def equity_plot(curves: pl.DataFrame) -> bytes:
    """The equity (start = 1) of the MAX_LINES lines ending highest; curves columns strategy_id,
    name, symbol, timeframe, ts, equity."""
    title = "Strategies' equity"
    lines = _best_curves(curves) if not curves.is_empty() else []
    if not lines:
        return _no_data(title)
    figure, axes = _figure()
    for (label, line), colour in zip(lines, _palette()):
        axes.plot(line.get_column("ts").to_numpy(), line.get_column("equity").to_numpy(), label=label, color=colour)
    axes.axhline(1.0, color="black", linewidth=0.8, alpha=0.5)
    axes.set_title(title)
    axes.set_ylabel("equity (start = 1)")
    _time_axis(axes)
    _legend(axes)
    return _png(figure)


def drawdown_plot(curves: pl.DataFrame) -> bytes:
    """The drawdown (equity / running peak - 1) of the same lines as `equity_plot`."""
    title = "Strategies' drawdown"
    lines = _best_curves(curves) if not curves.is_empty() else []
    if not lines:
        return _no_data(title)
    figure, axes = _figure()
    for (label, line), colour in zip(lines, _palette()):
        equity = line.get_column("equity").to_numpy()
        drawdown = equity / np.maximum.accumulate(equity) - 1.0
        axes.plot(line.get_column("ts").to_numpy(), drawdown, label=label, color=colour)
    axes.set_title(title)
    axes.set_ylabel("drawdown from the peak")
    from matplotlib.ticker import PercentFormatter  # imported here: see the note on matplotlib above

    axes.yaxis.set_major_formatter(PercentFormatter(1.0))
    _time_axis(axes)
    _legend(axes)
    return _png(figure)


# ---------------------------------------------------------------------------------------------
# Models


def model_f1_plot(results: pl.DataFrame) -> bytes:
    """Per model, its out-of-sample F1 beside the two baselines' (majority class, last return's
    sign), as grouped horizontal bars; results columns model_id, f1_model, f1_majority,
    f1_last_return (several rows of a model are averaged). At most MAX_MODELS, best first."""
    title = "Models' F1 against the baselines"
    if results.is_empty():
        return _no_data(title)
    columns = [column for column, _, _ in _F1_BARS]
    means = (
        results.with_columns(pl.col(columns).cast(pl.Float64).fill_nan(None))
        .group_by("model_id")
        .agg(pl.col(columns).mean())
        .sort(["f1_model", "model_id"], descending=[True, False], nulls_last=True)
        .head(MAX_MODELS)
        .reverse()  # barh draws bottom-up: the best model ends on top
    )
    figure, axes = _figure()
    positions = np.arange(means.height)
    height = 0.8 / len(_F1_BARS)
    for index, (column, label, colour) in enumerate(_F1_BARS):
        values = means.get_column(column).fill_null(np.nan).to_numpy()
        # The model's bar on top of its group, as in the legend.
        axes.barh(positions + (1 - index) * height, values, height=height, label=label, color=colour)
    axes.set_yticks(positions, [str(model_id) for model_id in means.get_column("model_id")], fontsize=7)
    axes.set_xlabel("F1 macro (out of sample)")
    axes.set_xlim(0.0, 1.0)
    axes.set_title(title)
    axes.grid(True, axis="x", alpha=0.3)
    _legend(axes)
    return _png(figure)


# ---------------------------------------------------------------------------------------------
# Accounts


def portfolio_plot(equity: pl.DataFrame) -> bytes:
    """Each account's equity over time; equity columns ts, mode, equity."""
    title = "Accounts' equity"
    if equity.is_empty():
        return _no_data(title)
    rows = equity.with_columns(pl.col("equity").cast(pl.Float64)).filter(pl.col("equity").is_finite()).sort("ts")
    if rows.is_empty():
        return _no_data(title)
    figure, axes = _figure()
    for ((mode,), line), colour in zip(rows.group_by("mode", maintain_order=True), _palette()):
        axes.plot(line.get_column("ts").to_numpy(), line.get_column("equity").to_numpy(), label=str(mode), color=colour)
    axes.set_title(title)
    axes.set_ylabel("equity (quote currency)")
    _time_axis(axes)
    _legend(axes)
    return _png(figure)


# ---------------------------------------------------------------------------------------------
# Files and Markdown


def render_pngs(*, curves: pl.DataFrame, model_results: pl.DataFrame, portfolio: pl.DataFrame) -> dict[str, bytes]:
    """The four plots as PNG bytes, by plot name (equity, drawdown, model-f1, portfolio)."""
    return {
        "equity": equity_plot(curves),
        "drawdown": drawdown_plot(curves),
        "model-f1": model_f1_plot(model_results),
        "portfolio": portfolio_plot(portfolio),
    }


def write_plots(directory: Path, stem: str, pngs: dict[str, bytes]) -> dict[str, str]:
    """Writes `<stem>-<plot>.png` for each plot atomically into `directory`; returns plot name ->
    file name (relative to `directory`), the report's `plots`."""
    if not stem or Path(stem).name != stem:
        raise ValueError(f"stem {stem!r} must be a plain file name stem, without a directory")
    names = {plot: f"{stem}-{plot}.png" for plot in pngs}
    for plot, png in pngs.items():
        write_atomically(Path(directory) / names[plot], png)
    return names


def render_plots(
    directory: Path, stem: str, *, curves: pl.DataFrame, model_results: pl.DataFrame, portfolio: pl.DataFrame
) -> dict[str, str]:
    """The four plots rendered and written (see write_plots)."""
    return write_plots(directory, stem, render_pngs(curves=curves, model_results=model_results, portfolio=portfolio))


def markdown_image(png: bytes, alt: str) -> str:
    """The PNG inline in Markdown, as a data URL (how Dagster's UI shows an image in metadata)."""
    alt_text = alt.replace("[", "(").replace("]", ")").replace("\n", " ")
    return f"![{alt_text}](data:image/png;base64,{base64.b64encode(png).decode('ascii')})"
