"""The daily report's plots: real PNGs of the expected size that draw something, also for an
empty input; the four files written under their names; the Markdown image that carries them."""

from __future__ import annotations

import base64
import io
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import numpy as np
import polars as pl
import pytest
from matplotlib.image import imread

from tracer_assets.reports.plots import (
    MAX_LINES,
    drawdown_plot,
    equity_plot,
    markdown_image,
    model_f1_plot,
    portfolio_plot,
    render_plots,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
START = datetime(2024, 1, 1, tzinfo=UTC)


def pixels(png: bytes) -> np.ndarray:
    """The decoded image, checked to be a PNG of 900 x 450 pixels (9 x 4.5 inches at 100 dpi)."""
    assert png.startswith(PNG_SIGNATURE)
    image = imread(io.BytesIO(png), format="png")
    assert image.shape[:2] == (450, 900)
    return image.reshape(-1, image.shape[-1])


def drawn_share(png: bytes) -> float:
    """The share of pixels that differ from the background (the top-left corner's colour)."""
    image = pixels(png)
    return float(np.mean(np.any(image != image[0], axis=1)))


def colours(png: bytes) -> int:
    return len(np.unique(pixels(png), axis=0))


def curves_of(paths: dict[str, list[float]]) -> pl.DataFrame:
    """Equity curves, one strategy per path, hourly from START, on one symbol and timeframe."""
    rows = [
        {
            "strategy_id": f"id-{name}",
            "name": name,
            "symbol": "BTC/USDT",
            "timeframe": "1h",
            "ts": START + timedelta(hours=hour),
            "equity": value,
        }
        for name, path in paths.items()
        for hour, value in enumerate(path)
    ]
    return pl.DataFrame(rows).with_columns(pl.col("ts").dt.convert_time_zone("UTC"))


def three_curves() -> pl.DataFrame:
    hours = np.arange(200)
    return curves_of(
        {
            "ema cross": list(1 + 0.001 * hours + 0.02 * np.sin(hours / 7)),
            "rsi bounce": list(1 - 0.0005 * hours + 0.03 * np.cos(hours / 11)),
            "macd trend": list(1 + 0.0002 * hours),
        }
    )


def test_the_equity_and_drawdown_plots_draw_three_lines():
    curves = three_curves()
    for png in (equity_plot(curves), drawdown_plot(curves)):
        assert drawn_share(png) > 0.01
        assert colours(png) > 50  # three antialiased coloured lines, a legend, text
    assert equity_plot(curves) != drawdown_plot(curves)
    assert equity_plot(curves) == equity_plot(curves.reverse())  # the row order does not matter


def test_only_the_lines_ending_highest_are_drawn():
    # Twelve lines ending from 1.01 to 1.12, two more ending lower; all span the same range, so
    # dropping the two leaves the axes unchanged and the images equal.
    best = {f"best {k:02d}": [1.0, 1.3, 0.8, 1.0 + (k + 1) / 100] for k in range(MAX_LINES)}
    worse = {"worse a": [1.0, 1.1, 0.9, 0.95], "worse b": [1.0, 1.0, 1.0, 0.9]}
    assert equity_plot(curves_of(best | worse)) == equity_plot(curves_of(best))
    assert equity_plot(curves_of(best | worse)) != equity_plot(curves_of(dict(list(best.items())[1:]) | worse))


def test_the_model_f1_and_portfolio_plots_draw_their_data():
    results = pl.DataFrame(
        {
            "model_id": ["m1", "m2", "m3", "m1"],
            "f1_model": [0.55, 0.48, 0.41, 0.57],
            "f1_majority": [0.33, 0.33, 0.33, 0.33],
            "f1_last_return": [0.45, None, 0.44, 0.46],
        }
    )
    assert drawn_share(model_f1_plot(results)) > 0.01
    hours = [START + timedelta(hours=h) for h in range(48)]
    equity = pl.DataFrame(
        {
            "ts": hours * 2,
            "mode": ["DRY"] * 48 + ["LIVE"] * 48,
            "equity": [Decimal(10000 + 10 * h) for h in range(48)] + [Decimal(500 - h) for h in range(48)],
        }
    )
    assert drawn_share(portfolio_plot(equity)) > 0.01


@pytest.mark.parametrize("plot", [equity_plot, drawdown_plot, model_f1_plot, portfolio_plot])
def test_an_empty_input_gives_a_png_that_says_no_data_yet(plot):
    png = plot(pl.DataFrame())
    assert drawn_share(png) > 0.001  # the title and the "no data yet" text
    assert plot(pl.DataFrame()) == png


def test_render_plots_writes_the_four_files_and_returns_their_names(tmp_path):
    equity = pl.DataFrame({"ts": [START, START + timedelta(hours=1)], "mode": ["DRY", "DRY"], "equity": [1.0, 1.1]})
    names = render_plots(
        tmp_path / "reports", "2024-06-03", curves=three_curves(), model_results=pl.DataFrame(), portfolio=equity
    )
    assert names == {
        "equity": "2024-06-03-equity.png",
        "drawdown": "2024-06-03-drawdown.png",
        "model-f1": "2024-06-03-model-f1.png",
        "portfolio": "2024-06-03-portfolio.png",
    }
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == sorted(names.values())  # no temp file left
    for name in names.values():
        pixels((tmp_path / "reports" / name).read_bytes())
    assert (tmp_path / "reports" / names["equity"]).read_bytes() == equity_plot(three_curves())
    with pytest.raises(ValueError, match="plain file name"):
        render_plots(tmp_path, "../x", curves=pl.DataFrame(), model_results=pl.DataFrame(), portfolio=pl.DataFrame())


def test_a_markdown_image_carries_the_png_unchanged():
    png = equity_plot(three_curves())
    image = markdown_image(png, "equity of the strategies")
    match = re.fullmatch(r"!\[equity of the strategies\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", image)
    assert match is not None
    assert base64.b64decode(match.group(1)) == png
