"""Strategy specs: a strategy is data (schema-validated JSON), never code.

A spec names its entry and exit rules over indicator columns, its timeframe, its tunable
parameters with ranges, and its stop-loss, take-profit and trailing stop. Specs may be written
by an LLM, so nothing here (or in `rules.py`) executes anything taken from a spec: there is no
eval and no expression string parsed into Python. A rule is a tree of a closed set of node
types (`all`, `any`, `not`, `compare`, `cross_above`, `cross_below`) whose leaves are operands
of a closed set of kinds (an indicator from `INDICATORS`, a price column, a number, or a
"$parameter" reference); every string in a spec is matched against fixed names, nothing more.

`load_spec(text_or_dict)` validates and returns a frozen `StrategySpec`, or raises `SpecError`
with a one-line message naming the field path of every problem, e.g.
`entry.all[1].cross_above.a.params.window: unknown parameter '$fats'`.
`docs/strategies.md` documents the schema, the rule semantics and the indicator definitions.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from importlib import resources
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from tracer_assets.market.timeframes import timeframe_seconds

PRICE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close", "volume")
COMPARISON_OPS: tuple[str, ...] = (">", ">=", "<", "<=")
RULE_NODE_TYPES: tuple[str, ...] = ("all", "any", "not", "compare", "cross_above", "cross_below")

PARAM_NAME_PATTERN = r"^[a-z][a-z0-9_]{0,31}$"
PARAM_REF_PATTERN = r"^\$[a-z][a-z0-9_]{0,31}$"
SLUG_PATTERN = r"^[a-z0-9]+(?:[_-][a-z0-9]+)*$"

# Limits on what a spec may ask for: an LLM-written spec must not be able to request a
# pathological tree or an unbounded search space.
MAX_PARAMETERS = 8
MAX_RULE_NODES = 64
MAX_RULE_DEPTH = 8
MAX_PARAMETER_VALUES = 1000  # grid points of one parameter's range

# Slot kinds of indicator parameters.
WINDOW = "window"  # an integer >= 1 (a number of bars)
POSITIVE = "positive"  # a number > 0 (e.g. Bollinger's k)


@dataclass(frozen=True)
class IndicatorDef:
    """One indicator of the closed set: its parameters (name -> slot kind) and outputs.

    `outputs` is empty for single-output indicators (the operand then has no "output" key).
    """

    params: tuple[tuple[str, str], ...]
    outputs: tuple[str, ...] = ()

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.params)


# The closed set. Exact definitions (TA-Lib's where TA-Lib has the indicator) are in
# `features/indicators.py`, which implements them, and docs/strategies.md.
INDICATORS: dict[str, IndicatorDef] = {
    "ema": IndicatorDef((("window", WINDOW),)),
    "sma": IndicatorDef((("window", WINDOW),)),
    "rsi": IndicatorDef((("window", WINDOW),)),
    "atr": IndicatorDef((("window", WINDOW),)),
    "roc": IndicatorDef((("window", WINDOW),)),
    "volume_sma": IndicatorDef((("window", WINDOW),)),
    "macd": IndicatorDef((("fast", WINDOW), ("slow", WINDOW), ("signal", WINDOW)), ("line", "signal", "hist")),
    "bollinger": IndicatorDef((("window", WINDOW), ("k", POSITIVE)), ("upper", "middle", "lower")),
    "donchian": IndicatorDef((("window", WINDOW),), ("upper", "lower")),
}
IndicatorKind = Literal["ema", "sma", "rsi", "atr", "roc", "volume_sma", "macd", "bollinger", "donchian"]


class SpecError(ValueError):
    """A strategy spec that failed validation; the message names the field path(s)."""


Loc = tuple[str | int, ...]


class _SpecProblems(ValueError):
    """Problems found by a model validator, each with its path relative to the model."""

    def __init__(self, problems: list[tuple[Loc, str]]):
        self.problems = problems
        super().__init__("; ".join(f"{format_path(loc)}: {msg}" for loc, msg in problems))


def format_path(loc: Loc) -> str:
    """('entry', 'all', 1, 'compare', 'left') -> 'entry.all[1].compare.left'.

    Elements starting with '~' are pydantic union tags (see the discriminators below), not
    fields, and are dropped.
    """
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.startswith("~"):
            continue
        elif not re.fullmatch(r"[A-Za-z0-9_$]+", part):
            out += f"[{part!r}]"  # a key from the input: quoted, so the message stays one line
        else:
            out += f".{part}" if out else part
    return out or "(spec)"


def _error_lines(error: ValidationError) -> list[str]:
    lines: list[str] = []
    for item in error.errors():
        loc = tuple(item["loc"])
        cause = (item.get("ctx") or {}).get("error")
        if isinstance(cause, _SpecProblems):
            lines += [f"{format_path(loc + sub)}: {msg}" for sub, msg in cause.problems]
        elif item["type"] == "value_error" and cause is not None:
            lines.append(f"{format_path(loc)}: {cause}")
        elif item["type"] == "extra_forbidden":
            lines.append(f"{format_path(loc)}: unknown field (not part of the spec schema)")
        else:
            lines.append(f"{format_path(loc)}: {item['msg']}")
    return lines


def _spec_error(error: ValidationError) -> SpecError:
    lines = _error_lines(error)
    shown = lines[:5]
    more = f" (and {len(lines) - 5} more)" if len(lines) > 5 else ""
    return SpecError("; ".join(shown) + more)


# --- scalar field types -------------------------------------------------------------------


def _number(value: Any) -> int | float:
    # JSON true/false are ints to Python; a spec number must be written as a number.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"expected a number, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"expected a finite number, got {value!r}")
    return value


def _param_ref(value: Any) -> str:
    if not isinstance(value, str) or not re.match(PARAM_REF_PATTERN, value):
        raise ValueError(f"expected a parameter reference like '$fast', got {value!r}")
    return value


def _number_or_ref(value: Any) -> int | float | str:
    if isinstance(value, str):
        return _param_ref(value)
    try:
        return _number(value)
    except ValueError:
        raise ValueError(f"expected a number or a parameter reference like '$fast', got {value!r}") from None


def _stop(field: str, upper: float | None):
    """Validator of a stop field: null, a '$parameter', or a fraction in (0, upper)."""

    def check(value: Any) -> float | str | None:
        if value is None:
            return None
        checked = _number_or_ref(value)
        if isinstance(checked, str):
            return checked
        if checked <= 0 or (upper is not None and checked >= upper):
            bound = f"between 0 and {upper:g} (exclusive)" if upper is not None else "above 0"
            raise ValueError(f"a fraction of the entry price {bound}, got {checked!r}")
        return float(checked)

    return check


def _long_only(value: Any) -> Any:
    if value != "long":
        raise ValueError(f"only 'long' is supported (spot trading: a short needs borrowing), got {value!r}")
    return value


Number = Annotated[int | float, BeforeValidator(_number)]
ParamValue = Annotated[int | float | str, BeforeValidator(_number_or_ref)]


class _SpecModel(BaseModel):
    # strict: no silent coercion ("10" is not 10, true is not 1); frozen: a validated spec
    # cannot be edited into an invalid one.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, validate_by_name=True)


# --- parameters ---------------------------------------------------------------------------


def _decimal(value: int | float) -> Decimal:
    # repr is the shortest string that round-trips: 0.1 stays 0.1, not 0.1000000000000000055...
    return Decimal(repr(value)) if isinstance(value, float) else Decimal(value)


class ParameterSpec(_SpecModel):
    """A tunable parameter: its default and its search range low..high in steps of `step`.

    It is an integer parameter when all four numbers are written as integers; windows need one.
    """

    default: Number
    low: Number
    high: Number
    step: Number

    @model_validator(mode="after")
    def _check_range(self) -> ParameterSpec:
        problems: list[tuple[Loc, str]] = []
        if self.step <= 0:
            problems.append((("step",), f"must be above 0, got {self.step!r}"))
        if self.low > self.high:
            problems.append((("low",), f"low {self.low!r} is above high {self.high!r}"))
        elif not self.low <= self.default <= self.high:
            problems.append(
                (("default",), f"default {self.default!r} is outside the range [{self.low!r}, {self.high!r}]")
            )
        if not problems and self.count() > MAX_PARAMETER_VALUES:
            problems.append((("step",), f"the range has {self.count()} values, more than {MAX_PARAMETER_VALUES}"))
        if problems:
            raise _SpecProblems(problems)
        return self

    @property
    def is_integer(self) -> bool:
        return all(isinstance(v, int) for v in (self.default, self.low, self.high, self.step))

    def count(self) -> int:
        """Number of grid values low, low + step, ... <= high."""
        return int((_decimal(self.high) - _decimal(self.low)) // _decimal(self.step)) + 1

    def values(self) -> tuple[int | float, ...]:
        """The grid values low, low + step, ... <= high, computed in decimal so that a float
        range (0.01 .. 0.05 step 0.01) gives 0.03, not 0.030000000000000002."""
        if self.is_integer:
            return tuple(range(int(self.low), int(self.high) + 1, int(self.step)))
        low, step = _decimal(self.low), _decimal(self.step)
        return tuple(float(low + k * step) for k in range(self.count()))


# --- operands -----------------------------------------------------------------------------


class IndicatorOperand(_SpecModel):
    """`{"indicator": "ema", "params": {"window": "$fast"}}`; multi-output ones add "output"."""

    indicator: IndicatorKind
    params: dict[str, ParamValue]
    output: str | None = None

    @model_validator(mode="after")
    def _check_params(self) -> IndicatorOperand:
        definition = INDICATORS[self.indicator]
        problems: list[tuple[Loc, str]] = []
        for name in self.params:
            if name not in definition.param_names:
                problems.append(
                    (
                        ("params", name),
                        f"{self.indicator} has no parameter {name!r} (it takes {_names(definition.param_names)})",
                    )
                )
        for name, kind in definition.params:
            if name not in self.params:
                problems.append((("params",), f"{self.indicator} needs {name!r}"))
                continue
            value = self.params[name]
            if isinstance(value, str):
                continue  # a "$parameter": checked against its range by StrategySpec
            message = literal_value_problem(kind, value)
            if message:
                problems.append((("params", name), message))
        if definition.outputs:
            if self.output not in definition.outputs:
                got = "none" if self.output is None else repr(self.output)
                problems.append(
                    (("output",), f"{self.indicator} needs an output, one of {_names(definition.outputs)}; got {got}")
                )
        elif self.output is not None:
            problems.append((("output",), f"{self.indicator} has a single output; remove 'output'"))
        if not problems and self.indicator == "macd":
            fast, slow = self.params["fast"], self.params["slow"]
            if not isinstance(fast, str) and not isinstance(slow, str) and fast >= slow:
                problems.append((("params", "fast"), f"macd fast {fast} must be below slow {slow}"))
        if problems:
            raise _SpecProblems(problems)
        return self


def literal_value_problem(kind: str, value: int | float) -> str | None:
    """Why `value` cannot fill an indicator parameter slot of `kind`, or None if it can."""
    if kind == WINDOW and (not isinstance(value, int) or value < 1):
        return f"a window is an integer >= 1, got {value!r}"
    if kind == POSITIVE and value <= 0:
        return f"must be above 0, got {value!r}"
    return None


def _names(names: tuple[str, ...]) -> str:
    return ", ".join(names)


def _operand_tag(value: Any) -> str | None:
    if isinstance(value, (dict, IndicatorOperand)):
        return "~indicator"
    if isinstance(value, str):
        return "~param" if value.startswith("$") else "~price"
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return "~constant"
    return None


def _constant(value: Any) -> float:
    return float(_number(value))


Operand = Annotated[
    Annotated[IndicatorOperand, Tag("~indicator")]
    | Annotated[Literal["open", "high", "low", "close", "volume"], Tag("~price")]
    | Annotated[str, BeforeValidator(_param_ref), Tag("~param")]
    | Annotated[float, BeforeValidator(_constant), Tag("~constant")],
    Discriminator(
        _operand_tag,
        custom_error_type="operand",
        custom_error_message=(
            "expected an operand: an indicator object, a price column "
            "(open, high, low, close, volume), a number or a '$parameter'"
        ),
    ),
]


def is_series(operand: Any) -> bool:
    """True for operands that vary bar by bar (indicators and price columns)."""
    return isinstance(operand, IndicatorOperand) or (isinstance(operand, str) and not operand.startswith("$"))


class Comparison(_SpecModel):
    """left op right, evaluated bar by bar."""

    left: Operand
    op: Literal[">", ">=", "<", "<="]
    right: Operand

    @model_validator(mode="after")
    def _needs_a_series(self) -> Comparison:
        if not (is_series(self.left) or is_series(self.right)):
            raise _SpecProblems([((), "compares two constants; one side must be an indicator or a price column")])
        return self


class Cross(_SpecModel):
    """a crosses b: used by cross_above and cross_below."""

    a: Operand
    b: Operand

    @model_validator(mode="after")
    def _needs_a_series(self) -> Cross:
        if not (is_series(self.a) or is_series(self.b)):
            raise _SpecProblems([((), "two constants never cross; one side must be an indicator or a price column")])
        return self


# --- rule nodes ---------------------------------------------------------------------------


class AllRule(_SpecModel):
    all: list[Rule] = Field(min_length=1)


class AnyRule(_SpecModel):
    any: list[Rule] = Field(min_length=1)


class NotRule(_SpecModel):
    not_: Rule = Field(alias="not")


class CompareRule(_SpecModel):
    compare: Comparison


class CrossAboveRule(_SpecModel):
    cross_above: Cross


class CrossBelowRule(_SpecModel):
    cross_below: Cross


_RULE_CLASSES: dict[str, type[_SpecModel]] = {
    "all": AllRule,
    "any": AnyRule,
    "not": NotRule,
    "compare": CompareRule,
    "cross_above": CrossAboveRule,
    "cross_below": CrossBelowRule,
}


def _rule_tag(value: Any) -> str | None:
    if isinstance(value, dict):
        # The first node key present decides; any other key is then reported as unknown.
        for key in value:
            if key in _RULE_CLASSES:
                return f"~{key}"
        return None
    for key, cls in _RULE_CLASSES.items():
        if isinstance(value, cls):
            return f"~{key}"
    return None


Rule = Annotated[
    Annotated[AllRule, Tag("~all")]
    | Annotated[AnyRule, Tag("~any")]
    | Annotated[NotRule, Tag("~not")]
    | Annotated[CompareRule, Tag("~compare")]
    | Annotated[CrossAboveRule, Tag("~cross_above")]
    | Annotated[CrossBelowRule, Tag("~cross_below")],
    Discriminator(
        _rule_tag,
        custom_error_type="rule",
        custom_error_message=(
            "expected a rule: an object with one key, one of all, any, not, compare, cross_above, cross_below"
        ),
    ),
]

for _cls in _RULE_CLASSES.values():
    _cls.model_rebuild()


def rule_node_type(rule: Any) -> str:
    """'all', 'any', 'not', 'compare', 'cross_above' or 'cross_below'."""
    for key, cls in _RULE_CLASSES.items():
        if isinstance(rule, cls):
            return key
    raise TypeError(f"not a rule node: {rule!r}")


def rule_children(rule: Any) -> list[tuple[Loc, Any]]:
    """Child rules with their paths relative to `rule`."""
    if isinstance(rule, AllRule):
        return [(("all", i), child) for i, child in enumerate(rule.all)]
    if isinstance(rule, AnyRule):
        return [(("any", i), child) for i, child in enumerate(rule.any)]
    if isinstance(rule, NotRule):
        return [(("not",), rule.not_)]
    return []


def rule_operands(rule: Any) -> list[tuple[Loc, Any]]:
    """The operands of a leaf rule (compare, cross_*) with their relative paths; [] otherwise."""
    if isinstance(rule, CompareRule):
        return [(("compare", "left"), rule.compare.left), (("compare", "right"), rule.compare.right)]
    if isinstance(rule, CrossAboveRule):
        return [(("cross_above", "a"), rule.cross_above.a), (("cross_above", "b"), rule.cross_above.b)]
    if isinstance(rule, CrossBelowRule):
        return [(("cross_below", "a"), rule.cross_below.a), (("cross_below", "b"), rule.cross_below.b)]
    return []


def iter_rule(rule: Any, loc: Loc = (), depth: int = 1) -> Iterator[tuple[Loc, Any, int]]:
    """Every node of a rule tree, depth first: (path, node, depth)."""
    yield loc, rule, depth
    for sub, child in rule_children(rule):
        yield from iter_rule(child, loc + sub, depth + 1)


def parameter_references(rule: Any, loc: Loc = ()) -> Iterator[tuple[Loc, str, str | None]]:
    """Every "$name" in a rule tree: (path, name, slot) with slot WINDOW / POSITIVE for an
    indicator parameter, None for a number compared against."""
    for node_loc, node, _ in iter_rule(rule, loc):
        for sub, operand in rule_operands(node):
            if isinstance(operand, IndicatorOperand):
                slots = dict(INDICATORS[operand.indicator].params)
                for name, value in operand.params.items():
                    if isinstance(value, str):
                        yield node_loc + sub + ("params", name), value[1:], slots[name]
            elif isinstance(operand, str) and operand.startswith("$"):
                yield node_loc + sub, operand[1:], None


# --- the spec -----------------------------------------------------------------------------

STOP_FIELDS: tuple[str, ...] = ("stop_loss", "take_profit", "trailing_stop")
# Exclusive upper bound of each stop fraction: a stop at or beyond 100% below the entry could
# never trigger; a take-profit may be any gain.
STOP_UPPER: dict[str, float | None] = {"stop_loss": 1.0, "take_profit": None, "trailing_stop": 1.0}


class StrategySpec(_SpecModel):
    """A strategy as data. See docs/strategies.md for every field."""

    name: str = Field(pattern=SLUG_PATTERN, max_length=64)
    description: str = Field(min_length=1, max_length=2000)
    timeframe: str
    # Long only: Tracer trades spot, where a short would need borrowing.
    side: Annotated[Literal["long"], BeforeValidator(_long_only)] = "long"
    parameters: dict[str, ParameterSpec] = Field(default_factory=dict)
    entry: Rule
    exit: Rule | None = None
    stop_loss: Annotated[float | str | None, BeforeValidator(_stop("stop_loss", STOP_UPPER["stop_loss"]))] = None
    take_profit: Annotated[float | str | None, BeforeValidator(_stop("take_profit", STOP_UPPER["take_profit"]))] = None
    trailing_stop: Annotated[
        float | str | None, BeforeValidator(_stop("trailing_stop", STOP_UPPER["trailing_stop"]))
    ] = None
    position_fraction: float = Field(default=1.0, gt=0.0, le=1.0)
    pyramiding: bool = False

    @field_validator("timeframe")
    @classmethod
    def _check_timeframe(cls, value: str) -> str:
        timeframe_seconds(value)  # raises "'5x' is not a timeframe like 5m, 1h or 4h"
        return value

    @field_validator("description")
    @classmethod
    def _check_description(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value

    @model_validator(mode="after")
    def _check_cross_fields(self) -> StrategySpec:
        problems = _cross_field_problems(self)
        if problems:
            raise _SpecProblems(problems)
        return self

    def rules(self) -> list[tuple[str, Any]]:
        """[("entry", rule), ("exit", rule)] for the rules present."""
        return [(name, rule) for name, rule in (("entry", self.entry), ("exit", self.exit)) if rule is not None]

    def canonical_json(self) -> str:
        """The spec as JSON with sorted keys and no whitespace: equal specs give equal text,
        whatever the key order or the omitted defaults of the input."""
        data = self.model_dump(mode="json", by_alias=True, exclude_none=True)
        return json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False)

    def content_hash(self) -> str:
        """sha256 hex of `canonical_json()`: the spec's identity for caching and lineage."""
        return hashlib.sha256(self.canonical_json().encode("utf-8")).hexdigest()


def _cross_field_problems(spec: StrategySpec) -> list[tuple[Loc, str]]:
    """Checks needing the whole spec: references, ranges of referenced parameters, sizes."""
    problems: list[tuple[Loc, str]] = []
    params = spec.parameters
    if len(params) > MAX_PARAMETERS:
        problems.append((("parameters",), f"{len(params)} parameters, more than {MAX_PARAMETERS}"))
    for name in params:
        if not re.match(PARAM_NAME_PATTERN, name):
            problems.append(
                (
                    ("parameters", name),
                    "a parameter name is lower case letters, digits and _, starting with a letter (at most 32)",
                )
            )

    used: set[str] = set()
    references: list[tuple[Loc, str, str | None]] = []
    for rule_name, rule in spec.rules():
        nodes = list(iter_rule(rule, (rule_name,)))
        if len(nodes) > MAX_RULE_NODES:
            problems.append(((rule_name,), f"the rule has {len(nodes)} nodes, more than {MAX_RULE_NODES}"))
        depth = max(d for _, _, d in nodes)
        if depth > MAX_RULE_DEPTH:
            problems.append(((rule_name,), f"the rule is nested {depth} deep, more than {MAX_RULE_DEPTH}"))
        references += list(parameter_references(rule, (rule_name,)))
        for loc, node, _ in nodes:
            for sub, operand in rule_operands(node):
                if isinstance(operand, IndicatorOperand) and operand.indicator == "macd":
                    problem = _macd_order_problem(operand, params)
                    if problem:
                        problems.append((loc + sub + ("params", "fast"), problem))
    for field in STOP_FIELDS:
        value = getattr(spec, field)
        if isinstance(value, str):
            references.append(((field,), value[1:], field))

    for loc, name, slot in references:
        used.add(name)
        parameter = params.get(name)
        if parameter is None:
            known = f" (parameters: {_names(tuple(params))})" if params else " (the spec has no parameters)"
            problems.append((loc, f"unknown parameter '${name}'{known}"))
            continue
        message = _range_problem(name, parameter, slot)
        if message:
            problems.append((loc, message))
    for name in params:
        if name not in used:
            problems.append((("parameters", name), "not used by any rule or stop (it would only multiply the grid)"))
    return problems


def _range_problem(name: str, parameter: ParameterSpec, slot: str | None) -> str | None:
    """Why some value of `parameter`'s range cannot fill `slot`, or None."""
    span = f"'${name}' (range [{parameter.low!r}, {parameter.high!r}])"
    if slot == WINDOW:
        if not parameter.is_integer:
            return f"{span} fills a window, so its default, low, high and step must be integers"
        if parameter.low < 1:
            return f"{span} fills a window, so its low must be >= 1"
    elif slot == POSITIVE and parameter.low <= 0:
        return f"{span} must stay above 0, so its low must be above 0"
    elif slot in STOP_UPPER:
        upper = STOP_UPPER[slot]
        if parameter.low <= 0 or (upper is not None and parameter.high >= upper):
            bound = f"between 0 and {upper:g} (exclusive)" if upper is not None else "above 0"
            return f"{span} is a {slot} fraction, so its whole range must be {bound}"
    return None


def _macd_order_problem(operand: IndicatorOperand, params: Mapping[str, ParameterSpec]) -> str | None:
    """MACD needs fast < slow for every grid combination: the largest fast below the smallest slow."""

    def bounds(value: int | float | str) -> tuple[float, float] | None:
        if isinstance(value, str):
            parameter = params.get(value[1:])
            return None if parameter is None else (parameter.low, parameter.high)
        return (value, value)

    fast, slow = bounds(operand.params["fast"]), bounds(operand.params["slow"])
    if fast is None or slow is None or fast[1] < slow[0]:
        return None
    return f"macd fast (up to {fast[1]!r}) must be below slow (from {slow[0]!r}) for every grid value"


# --- loading ------------------------------------------------------------------------------


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json.loads would silently keep the last of two equal keys, hiding what the author meant.
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise SpecError(f"{key}: the key appears twice in one JSON object")
        result[key] = value
    return result


def _refuse_constant(name: str) -> Any:
    raise SpecError(f"{name} is not a number a spec may hold")


def load_spec(source: str | bytes | Mapping[str, Any] | StrategySpec) -> StrategySpec:
    """Validate a spec given as JSON text or a dict; raise SpecError naming the bad field."""
    if isinstance(source, StrategySpec):
        return source
    if isinstance(source, (str, bytes)):
        try:
            data = json.loads(source, object_pairs_hook=_refuse_duplicates, parse_constant=_refuse_constant)
        except json.JSONDecodeError as error:
            raise SpecError(f"not valid JSON: {error}") from None
    else:
        data = source
    if not isinstance(data, Mapping):
        raise SpecError(f"a strategy spec is a JSON object, got {type(data).__name__}")
    try:
        return StrategySpec.model_validate(dict(data))
    except ValidationError as error:
        raise _spec_error(error) from None


# --- the built-in library -----------------------------------------------------------------

BUILTIN_PACKAGE = "tracer_assets.research"
BUILTIN_FOLDER = "builtin"


def builtin_specs() -> list[StrategySpec]:
    """The built-in strategies (`tracer_assets/research/builtin/*.json`), validated, by name.

    A file's stem must equal the spec's name, so a spec is found where its name says.
    """
    folder = resources.files(BUILTIN_PACKAGE) / BUILTIN_FOLDER
    specs: list[StrategySpec] = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".json"):
            continue
        try:
            spec = load_spec(entry.read_text(encoding="utf-8"))
        except SpecError as error:
            raise SpecError(f"builtin/{entry.name}: {error}") from None
        if spec.name != entry.name.removesuffix(".json"):
            raise SpecError(f"builtin/{entry.name}: name: {spec.name!r} differs from the file name")
        specs.append(spec)
    if not specs:
        raise SpecError(f"no built-in strategies found in {folder}")
    return specs


def builtin_spec(name: str) -> StrategySpec:
    """One built-in strategy by name."""
    for spec in builtin_specs():
        if spec.name == name:
            return spec
    known = ", ".join(spec.name for spec in builtin_specs())
    raise KeyError(f"no built-in strategy {name!r} (built-in: {known})")
