"""Evaluate a strategy spec's rules over candles, for a whole parameter grid at once.

`param_grid(spec)` expands the parameters' ranges into combinations; `evaluate(spec, candles,
grid)` returns `Signals`: for every bar i and combination j, `entries[i, j]` is True when the
entry rule is true at the CLOSE of bar i (so a backtest can act no earlier than bar i+1's
open), likewise `exits`; plus each combination's stop-loss, take-profit and trailing stop.

Vectorized across the grid: every distinct indicator (kind + resolved parameters) is computed
once and shared by all combinations (an EMA-cross grid of 20 fast x 20 slow windows computes
40 EMAs, not 400), and so is every rule node whose parameters do not vary between two
combinations (e.g. `close > ema(200)` in a grid over the RSI threshold).

Warm-up: an indicator is NaN until it has enough bars (its first valid bar, below). A rule is
evaluated from the first bar at which every operand it uses is defined (plus one bar for a
cross, which looks at the previous bar); before that it is False. After warm-up no value is
NaN (the candles are checked finite and positive), so plain boolean logic is exact there and
`not` never turns an undefined comparison into True.

Indicators: the kinds of `spec.INDICATORS`, each computed by its kernel in
`tracer_assets.features.indicators` (TA-Lib's definitions where TA-Lib has the indicator; the
same functions compute the features/indicators columns): ema, sma, rsi, atr, macd (output
line|signal|hist), bollinger (upper|middle|lower), donchian (upper|lower), roc, and volume_sma
(`sma` of the volume). Their exact definitions and first valid bars are in that module's
docstring and docs/strategies.md.

Pure numpy; no Dagster.
"""

from __future__ import annotations

import itertools
import math
import numbers
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tracer_assets.features.indicators import atr, bollinger, donchian, ema, macd, roc, rolling_std, rsi, sma
from tracer_assets.research.spec import (
    INDICATORS,
    PRICE_COLUMNS,
    STOP_FIELDS,
    IndicatorOperand,
    StrategySpec,
    literal_value_problem,
    parameter_references,
    rule_children,
    rule_node_type,
    rule_operands,
)

DEFAULT_MAX_COMBINATIONS = 10_000

Combo = dict[str, "int | float"]

_OPS: dict[str, Callable[[Any, Any], Any]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}


@dataclass(frozen=True)
class Signals:
    """Entry/exit signals of one spec over one candle series, for every grid combination.

    entries, exits: bool, shape (n_bars, n_combos), column j for grid[j]; True at bar i means
        the rule is true at the close of bar i (act at bar i+1's open). Fortran-ordered, so
        each combination's column is contiguous. `exits` is all False without an exit rule.
    stop_loss, take_profit, trailing_stop: float64, shape (n_combos,), fractions of the entry
        price (trailing: of the highest price since entry); NaN = none.
    position_fraction: fraction of the available capital one entry uses.
    pyramiding: whether an entry signal while in a position adds to it.
    grid: the combinations, every parameter resolved (defaults filled in).
    """

    entries: np.ndarray
    exits: np.ndarray
    stop_loss: np.ndarray
    take_profit: np.ndarray
    trailing_stop: np.ndarray
    position_fraction: float
    pyramiding: bool
    grid: tuple[Combo, ...]


# --- parameters and grids -----------------------------------------------------------------


def check_parameter_value(spec: StrategySpec, name: str, value: Any) -> int | float:
    """`value` for parameter `name`, refused unless it has the parameter's type and lies in its
    range (the spec was validated over that range, so every value in it is usable)."""
    parameter = spec.parameters.get(name)
    if parameter is None:
        known = ", ".join(spec.parameters) or "none"
        raise ValueError(f"{spec.name}: unknown parameter {name!r} (parameters: {known})")
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{spec.name}: parameter {name!r} must be a number, got {value!r}")
    if parameter.is_integer:
        if not isinstance(value, numbers.Integral):
            raise ValueError(f"{spec.name}: parameter {name!r} must be an integer, got {value!r}")
        checked: int | float = int(value)
    else:
        checked = float(value)
        if not math.isfinite(checked):
            raise ValueError(f"{spec.name}: parameter {name!r} must be finite, got {value!r}")
    if not parameter.low <= checked <= parameter.high:
        raise ValueError(
            f"{spec.name}: parameter {name!r} value {value!r} is outside its range "
            f"[{parameter.low!r}, {parameter.high!r}]"
        )
    return checked


def resolve_combo(spec: StrategySpec, combo: Mapping[str, Any]) -> Combo:
    """Every parameter of the spec with its value: the combo's, else the default."""
    for name in combo:
        if name not in spec.parameters:
            check_parameter_value(spec, name, combo[name])  # raises: unknown parameter
    return {
        name: check_parameter_value(spec, name, combo[name]) if name in combo else parameter.default
        for name, parameter in sorted(spec.parameters.items())
    }


def param_grid(
    spec: StrategySpec,
    overrides: Mapping[str, Sequence[Any]] | None = None,
    max_combinations: int = DEFAULT_MAX_COMBINATIONS,
) -> list[Combo]:
    """Every combination of the parameters' values: each range low, low+step, ... <= high, or
    the values given in `overrides` (checked against the parameter's type and range).

    Parameters are taken in name order and the last one varies fastest, so the same spec gives
    the same grid whatever the key order of its JSON. A spec without parameters has one
    combination, {}. Refuses a grid of more than `max_combinations`.
    """
    overrides = dict(overrides or {})
    values: dict[str, tuple[int | float, ...]] = {}
    for name in overrides:
        if name not in spec.parameters:
            check_parameter_value(spec, name, None)  # raises: unknown parameter
    for name, parameter in sorted(spec.parameters.items()):
        if name in overrides:
            given = overrides[name]
            if isinstance(given, (str, bytes)) or not isinstance(given, Sequence) or not given:
                raise ValueError(f"{spec.name}: overrides[{name!r}] must be a non-empty list of values, got {given!r}")
            checked = (check_parameter_value(spec, name, v) for v in given)
            values[name] = tuple(dict.fromkeys(checked))  # duplicates would repeat combinations
        else:
            values[name] = parameter.values()
    total = math.prod(len(v) for v in values.values())
    if total > max_combinations:
        sizes = " x ".join(f"{name} {len(v)}" for name, v in values.items())
        raise ValueError(
            f"{spec.name}: the grid has {total} combinations ({sizes}), more than "
            f"max_combinations={max_combinations}; narrow the ranges or pass fewer values"
        )
    names = list(values)
    return [dict(zip(names, combo)) for combo in itertools.product(*values.values())]


# --- indicators ---------------------------------------------------------------------------


def compute_indicator(
    kind: str,
    params: Mapping[str, int | float],
    candles: Mapping[str, np.ndarray],
    memo: dict[tuple, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """One indicator of the closed set: {output: values} ("value" for single-output ones).

    `memo` (kept by the caller across calls on the same candles) shares intermediates between
    indicators: ema(26) and macd(12, 26, 9)'s slow EMA, bollinger(20, 2) and (20, 2.5)'s
    mean and deviation, sma(20) and bollinger(20, k)'s middle.
    """
    definition = INDICATORS.get(kind)
    if definition is None:
        raise ValueError(f"unknown indicator {kind!r} (known: {', '.join(INDICATORS)})")
    if set(params) != set(definition.param_names):
        raise ValueError(f"{kind} takes parameters {definition.param_names}, got {tuple(params)}")
    for name, slot in definition.params:
        problem = literal_value_problem(slot, params[name])
        if problem:
            raise ValueError(f"{kind}.{name}: {problem}")
    memo = {} if memo is None else memo

    def cached(key: tuple, compute: Callable[[], np.ndarray]) -> np.ndarray:
        if key not in memo:
            memo[key] = compute()
        return memo[key]

    close = candles["close"]

    def close_ema(window: int, seed_index: int) -> np.ndarray:
        return cached(("ema", window, seed_index), lambda: ema(close, window, seed_index))

    def column_sma(column: str, window: int) -> np.ndarray:
        return cached(("sma", column, window), lambda: sma(candles[column], window))

    if kind == "ema":
        return {"value": close_ema(params["window"], params["window"] - 1)}
    if kind == "sma":
        return {"value": column_sma("close", params["window"])}
    if kind == "volume_sma":
        return {"value": column_sma("volume", params["window"])}
    if kind == "rsi":
        return {"value": rsi(close, params["window"])}
    if kind == "atr":
        return {"value": atr(candles["high"], candles["low"], close, params["window"])}
    if kind == "roc":
        return {"value": roc(close, params["window"])}
    if kind == "macd":
        fast, slow = params["fast"], params["slow"]
        line, signal, hist = macd(
            close, fast, slow, params["signal"], fast_ema=close_ema(fast, slow - 1), slow_ema=close_ema(slow, slow - 1)
        )
        return {"line": line, "signal": signal, "hist": hist}
    if kind == "bollinger":
        window = params["window"]
        middle = column_sma("close", window)
        std = cached(("std", window), lambda: rolling_std(close, window, middle))
        upper, middle, lower = bollinger(close, window, float(params["k"]), middle=middle, std=std)
        return {"upper": upper, "middle": middle, "lower": lower}
    if kind == "donchian":
        upper, lower = donchian(candles["high"], candles["low"], params["window"])
        return {"upper": upper, "lower": lower}
    raise AssertionError(f"indicator {kind!r} is declared but not implemented")


def check_candles(candles: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The five columns as contiguous float64 arrays of one length, finite, prices > 0 and
    volume >= 0 (so no indicator is NaN after its warm-up); refused otherwise."""
    missing = [c for c in PRICE_COLUMNS if c not in candles]
    if missing:
        raise ValueError(f"candles lack columns {missing} (need {list(PRICE_COLUMNS)})")
    columns = {c: np.ascontiguousarray(candles[c], dtype=np.float64) for c in PRICE_COLUMNS}
    lengths = {c: a.shape for c, a in columns.items()}
    if any(len(shape) != 1 for shape in lengths.values()) or len(set(lengths.values())) != 1:
        raise ValueError(f"candle columns must be 1-D arrays of one length, got shapes {lengths}")
    for column, values in columns.items():
        bad = ~np.isfinite(values) | (values < 0.0 if column == "volume" else values <= 0.0)
        if bad.any():
            i = int(np.argmax(bad))
            rule = "finite and >= 0" if column == "volume" else "finite and > 0"
            raise ValueError(f"candles: {column}[{i}] = {float(values[i])!r} is not {rule}")
    return columns


# --- rule evaluation ----------------------------------------------------------------------


def _first_defined(values: np.ndarray) -> int:
    defined = ~np.isnan(values)
    return int(np.argmax(defined)) if defined.any() else len(values)


class _GridEvaluator:
    """Evaluates rule trees per combination, sharing indicators and parameter-independent
    sub-rules between combinations. Each result is (values, start): valid from bar `start`."""

    def __init__(self, candles: dict[str, np.ndarray], varying: set[str]):
        self.candles = candles
        self.n = len(candles["close"])
        self.varying = varying
        self.indicators: dict[tuple, dict[str, tuple[np.ndarray, int]]] = {}
        self.memo: dict[tuple, np.ndarray] = {}
        self.nodes: dict[tuple, tuple[np.ndarray, int]] = {}
        self.node_info: dict[int, tuple[str, tuple[str, ...]]] = {}

    def _info(self, node: Any) -> tuple[str, tuple[str, ...]]:
        """(structural key, parameters used) of a node, computed once per node object."""
        info = self.node_info.get(id(node))
        if info is None:
            names = tuple(sorted({name for _, name, _ in parameter_references(node)}))
            info = (node.model_dump_json(by_alias=True), names)
            self.node_info[id(node)] = info
        return info

    def indicator(self, operand: IndicatorOperand, combo: Combo) -> tuple[np.ndarray, int]:
        params = {name: combo[value[1:]] if isinstance(value, str) else value for name, value in operand.params.items()}
        key = (operand.indicator, tuple(sorted(params.items())))
        outputs = self.indicators.get(key)
        if outputs is None:
            outputs = {}
            for output, values in compute_indicator(operand.indicator, params, self.candles, self.memo).items():
                start = _first_defined(values)
                if np.isnan(values[start:]).any():  # cannot happen on checked candles
                    raise AssertionError(f"{operand.indicator}{params} is NaN after its warm-up")
                outputs[output] = (values, start)
            self.indicators[key] = outputs
        return outputs[operand.output or "value"]

    def operand(self, operand: Any, combo: Combo) -> tuple[Any, int]:
        if isinstance(operand, IndicatorOperand):
            return self.indicator(operand, combo)
        if isinstance(operand, str):
            if operand.startswith("$"):
                return float(combo[operand[1:]]), 0
            return self.candles[operand], 0
        return float(operand), 0

    def node(self, node: Any, combo: Combo) -> tuple[np.ndarray, int]:
        key_json, names = self._info(node)
        # Worth keeping only if another combination can reuse it: some varying parameter is
        # not used by this node.
        shareable = not self.varying <= set(names)
        key = (key_json, tuple(combo[name] for name in names))
        if shareable and key in self.nodes:
            return self.nodes[key]
        result = self._compute(node, combo)
        if shareable:
            self.nodes[key] = result
        return result

    def _compute(self, node: Any, combo: Combo) -> tuple[np.ndarray, int]:
        kind = rule_node_type(node)
        if kind in ("all", "any", "not"):
            children = [self.node(child, combo) for _, child in rule_children(node)]
            start = max(s for _, s in children)
            if kind == "not":
                return ~children[0][0], start
            combine = np.logical_and if kind == "all" else np.logical_or
            values = children[0][0].copy()
            for child, _ in children[1:]:
                combine(values, child, out=values)
            return values, start
        (_, left), (_, right) = rule_operands(node)
        (a, start_a), (b, start_b) = self.operand(left, combo), self.operand(right, combo)
        start = max(start_a, start_b)
        if kind == "compare":
            return np.asarray(_OPS[node.compare.op](a, b), dtype=bool), start
        # cross_above at bar i: a[i-1] <= b[i-1] and a[i] > b[i]. With side = (a > b), that is
        # side[i] and not side[i-1], i.e. side[i] > side[i-1] on booleans: one comparison of
        # the series per cross. (a <= b is "not a > b" wherever both are defined, and the
        # result is used only from `start`, where they are.) cross_below mirrors it with <.
        side = np.greater(a, b) if kind == "cross_above" else np.less(a, b)
        values = np.empty(self.n, dtype=bool)
        values[:1] = False  # bar 0 has no previous bar
        np.greater(side[1:], side[:-1], out=values[1:])
        return values, start + 1


def evaluate(spec: StrategySpec, candles: Mapping[str, Any], grid: Sequence[Mapping[str, Any]]) -> Signals:
    """The spec's entry/exit signals over `candles` (open, high, low, close, volume, in time
    order) for every combination of `grid` (e.g. from `param_grid`; missing parameters take
    their default). See `Signals` for what a True means."""
    columns = check_candles(candles)
    combos = tuple(resolve_combo(spec, combo) for combo in grid)
    if not combos:
        raise ValueError(f"{spec.name}: the grid is empty; pass [{{}}] for the defaults")
    n_bars, n_combos = len(columns["close"]), len(combos)
    varying = {name for name in spec.parameters if len({c[name] for c in combos}) > 1}
    evaluator = _GridEvaluator(columns, varying)

    entries = np.zeros((n_bars, n_combos), dtype=bool, order="F")
    exits = np.zeros((n_bars, n_combos), dtype=bool, order="F")
    for target, rule in ((entries, spec.entry), (exits, spec.exit)):
        if rule is None:
            continue
        for j, combo in enumerate(combos):
            values, start = evaluator.node(rule, combo)
            target[:, j] = values
            target[: min(start, n_bars), j] = False  # before every operand is warmed up

    stops = {
        field: np.array([_stop_value(getattr(spec, field), combo) for combo in combos], dtype=np.float64)
        for field in STOP_FIELDS
    }
    return Signals(
        entries=entries,
        exits=exits,
        stop_loss=stops["stop_loss"],
        take_profit=stops["take_profit"],
        trailing_stop=stops["trailing_stop"],
        position_fraction=float(spec.position_fraction),
        pyramiding=spec.pyramiding,
        grid=combos,
    )


def _stop_value(value: float | str | None, combo: Combo) -> float:
    if value is None:
        return math.nan
    if isinstance(value, str):
        return float(combo[value[1:]])
    return float(value)
