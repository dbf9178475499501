"""The tuner: a bottom-ranked strategy's parameters swept over widened ranges.

Pure (no Dagster). `widened(spec)` doubles every parameter's range around its centre (kept
valid: windows stay >= 1, stop fractions inside their bounds, MACD's fast below its slow,
the grid within MAX_TUNE_COMBINATIONS by coarser steps); a parameter whose wider range the
schema refuses keeps its range. `sweep` simulates every combination of the wider grid with
the numba engine on the research windows and picks the best mean score there; the variant
is the widened spec with those values as defaults. Whether it is registered is decided by
its out-of-sample score against its parent's (assets.py), never by the research window.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from decimal import Decimal

import numpy as np
import polars as pl

from tracer_assets.research.backtest import MIN_BARS, candle_arrays, simulate_signals
from tracer_assets.research.engine import FillRules
from tracer_assets.research.evaluation import SeriesKey, research_slice
from tracer_assets.research.metrics import metrics
from tracer_assets.research.rules import evaluate, param_grid
from tracer_assets.research.spec import SpecError, StrategySpec, load_spec

MAX_TUNE_COMBINATIONS = 400
WIDEN_FACTOR = 2


def _widen_parameter(p: Mapping, budget: int) -> dict:
    """The range widened WIDEN_FACTOR times around its centre, on the same grid (whole steps
    added at both ends, so the parent's values stay on it), with at most `budget` values."""
    integer = all(isinstance(p[k], int) for k in ("default", "low", "high", "step"))
    low, high, step = (Decimal(str(p[k])) for k in ("low", "high", "step"))
    steps_added = max(1, int((high - low) * (WIDEN_FACTOR - 1) / 2 / step))
    new_low, new_high = low - steps_added * step, high + steps_added * step
    if low > 0:  # a positive range (a window, a stop fraction, a multiplier) stays positive
        floor = Decimal(1) if integer else low / 2
        while new_low < floor:
            new_low += step
    count = int((new_high - new_low) / step) + 1
    while count > budget:
        step *= 2
        count = int((new_high - new_low) / step) + 1
    new_high = new_low + (count - 1) * step  # the top of the range on the grid
    if integer:
        new_low, new_high, step = int(new_low), int(new_high), max(1, int(step))
    else:
        new_low, new_high, step = float(new_low), float(new_high), float(step)
    return {"default": p["default"], "low": new_low, "high": new_high, "step": step}


def widened(spec: StrategySpec) -> StrategySpec:
    """The spec with every parameter's range widened (see the module doc)."""
    data = json.loads(spec.canonical_json())
    names = sorted(data.get("parameters", {}))
    if not names:
        return spec
    budget = max(2, int(MAX_TUNE_COMBINATIONS ** (1 / len(names))))
    for name in names:
        trial = json.loads(json.dumps(data))
        wider = _widen_parameter(trial["parameters"][name], budget)
        # The grid must still hold the default: snap it to the new grid.
        steps = round((Decimal(str(wider["default"])) - Decimal(str(wider["low"]))) / Decimal(str(wider["step"])))
        snapped = Decimal(str(wider["low"])) + steps * Decimal(str(wider["step"]))
        wider["default"] = int(snapped) if isinstance(wider["low"], int) else float(snapped)
        trial["parameters"][name] = wider
        try:
            load_spec(trial)
        except SpecError:
            continue  # this parameter keeps its range
        data = trial
    variant = load_spec(data)
    if len(param_grid(variant)) > MAX_TUNE_COMBINATIONS:
        return spec
    return variant


def sweep(spec: StrategySpec, series: Mapping[SeriesKey, pl.DataFrame], rules: FillRules) -> tuple[dict, float, int]:
    """(best combination, its mean research-window score, combinations tried) over the series."""
    grid = param_grid(spec)
    totals, counted = np.zeros(len(grid)), 0
    for (_, timeframe), candles in series.items():
        window = research_slice(candles)
        if candles.height < MIN_BARS or window.height < 2:
            continue
        arrays = candle_arrays(window)
        result = simulate_signals(arrays, evaluate(spec, arrays, grid), rules)
        totals += metrics(result, timeframe)["score"].fill_null(0.0).to_numpy()
        counted += 1
    if counted == 0:
        raise ValueError(f"{spec.name}: no series long enough to sweep")
    means = totals / counted
    best = int(np.argmax(means))  # ties: the first in grid order
    return dict(grid[best]), float(means[best]), len(grid)


def tuned_variant(parent: StrategySpec, best: Mapping[str, int | float]) -> StrategySpec:
    """The widened spec with `best` as its defaults, named after its parent."""
    data = json.loads(widened(parent).canonical_json())
    for name, value in best.items():
        data["parameters"][name]["default"] = value
    body = json.dumps({k: v for k, v in data.items() if k not in ("name", "description")}, sort_keys=True)
    data["name"] = f"{parent.name[:48]}-tuned-{hashlib.sha256(body.encode()).hexdigest()[:6]}"
    values = ", ".join(f"{k}={v}" for k, v in best.items())
    data["description"] = f"{parent.name} tuned on the research windows over widened ranges: {values}."
    return load_spec(data)
