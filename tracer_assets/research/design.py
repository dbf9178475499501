"""The strategy designer: candidate specs from Claude or from mutation and crossover, screened.

Pure (no Dagster, no DuckDB). A candidate is data: a JSON object that may become a strategy
spec. Whatever wrote it (the LLM, or `offline_candidates` when there is no API key), it goes
through the one screening path, `Screen.check`, which registers nothing and returns a verdict:

1. the answer or the object is refused when it is not a valid spec (`load_spec`'s reason);
2. complexity is capped: at most MAX_DESIGN_NODES rule nodes, MAX_DESIGN_PARAMETERS
   parameters and MAX_DESIGN_COMBINATIONS grid combinations;
3. its timeframe must have candles and its parents must be known strategies;
4. its content hash must be new (any strategy ever registered, archived ones included), and
   so must its rules, parameters and stops under another name (`body_hash`); its name must
   not belong to another strategy;
5. its default entries on the research window of the reference series (the first symbol, the
   spec's timeframe) must fire, and correlate at most `max_correlation` with every active
   strategy's entries there (a near-copy adds a trial and no diversity).

The LLM is shown the portfolio's gaps and the research-window metrics of the best and worst
performers (evaluation.py), never an out-of-sample figure.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from tracer_assets.llm import Asker
from tracer_assets.research.evaluation import SeriesKey, default_signals, research_slice
from tracer_assets.research.registry import strategy_id
from tracer_assets.research.rules import param_grid
from tracer_assets.research.spec import (
    INDICATORS,
    SpecError,
    StrategySpec,
    iter_rule,
    load_spec,
)

MAX_DESIGN_NODES = 16
MAX_DESIGN_PARAMETERS = 4
MAX_DESIGN_COMBINATIONS = 400
REGISTERED, REJECTED = "registered", "rejected"


@dataclass(frozen=True)
class Candidate:
    """One proposal: the object (None when the answer had none), where it came from, its parents."""

    source: str  # "llm" or "offline"
    data: Mapping[str, Any] | None
    parents: tuple[str, ...] = ()
    note: str = ""  # the rationale (LLM) or the mutation made (offline)
    failure: str | None = None  # why there is no object (the LLM call's reason)
    raw_text: str | None = None


@dataclass(frozen=True)
class Verdict:
    candidate: Candidate
    status: str  # REGISTERED or REJECTED
    reason: str
    spec: StrategySpec | None = None

    @property
    def strategy_id(self) -> str | None:
        return strategy_id(self.spec) if self.spec is not None else None


def body_hash(spec: StrategySpec) -> str:
    """The content hash without the name and the description: the same rules, parameters and
    stops under another name are the same strategy."""
    body = {k: v for k, v in json.loads(spec.canonical_json()).items() if k not in ("name", "description")}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def rule_node_count(spec: StrategySpec) -> int:
    return sum(1 for _, rule in spec.rules() for _ in iter_rule(rule))


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two boolean series (0 when either never changes)."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    if a.std() == 0 or b.std() == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


@dataclass
class Screen:
    """The screening state of one design run: what exists, and the entries to compare against.

    registry: every stored strategy (strategy_id -> {"name", "status", "spec"}); active: the
    specs whose entries a candidate must not copy; series: candles per (symbol, timeframe)."""

    registry: dict[str, dict]
    active: dict[str, StrategySpec]
    series: Mapping[SeriesKey, pl.DataFrame]
    max_correlation: float
    _entries: dict[tuple[str, SeriesKey], np.ndarray] = field(default_factory=dict)
    _bodies: dict[str, str] = field(default_factory=dict)  # strategy_id -> body_hash, each computed once

    def body(self, sid: str) -> str:
        if sid not in self._bodies:
            self._bodies[sid] = body_hash(self.registry[sid]["spec"])
        return self._bodies[sid]

    def reference(self, timeframe: str) -> SeriesKey | None:
        keys = sorted(key for key in self.series if key[1] == timeframe)
        return keys[0] if keys else None

    def entries(self, sid: str, spec: StrategySpec, key: SeriesKey) -> np.ndarray:
        if (sid, key) not in self._entries:
            self._entries[(sid, key)] = default_signals(spec, research_slice(self.series[key])).entries[:, 0]
        return self._entries[(sid, key)]

    def check(self, candidate: Candidate) -> Verdict:
        def rejected(reason: str, spec: StrategySpec | None = None) -> Verdict:
            return Verdict(candidate, REJECTED, reason, spec)

        if candidate.data is None:
            return rejected(candidate.failure or "no spec in the answer")
        try:
            spec = load_spec(candidate.data)
        except SpecError as error:
            return rejected(f"invalid spec: {error}")
        nodes, parameters = rule_node_count(spec), len(spec.parameters)
        if nodes > MAX_DESIGN_NODES:
            return rejected(f"too complex: {nodes} rule nodes, at most {MAX_DESIGN_NODES}", spec)
        if parameters > MAX_DESIGN_PARAMETERS:
            return rejected(f"too complex: {parameters} parameters, at most {MAX_DESIGN_PARAMETERS}", spec)
        try:
            combinations = len(param_grid(spec, max_combinations=MAX_DESIGN_COMBINATIONS))
        except ValueError as error:
            return rejected(f"too complex: {error}", spec)
        reference = self.reference(spec.timeframe)
        if reference is None:
            available = ", ".join(sorted({t for _, t in self.series}))
            return rejected(f"timeframe {spec.timeframe} has no candles (available: {available})", spec)
        unknown = [p for p in candidate.parents if p not in self.registry]
        if unknown:
            return rejected(f"unknown parent strategy id {unknown[0]!r}", spec)
        sid = strategy_id(spec)
        if sid in self.registry:
            known = self.registry[sid]
            return rejected(f"duplicate of {known['name']} ({sid}, {known['status']}): same content hash", spec)
        body = body_hash(spec)
        for other_id, row in self.registry.items():
            if self.body(other_id) == body:
                return rejected(f"a copy of {row['name']} ({other_id}, {row['status']}) under another name", spec)
            if row["name"] == spec.name:
                return rejected(f"name {spec.name!r} is taken by strategy {other_id}", spec)
        entries = self.entries(sid, spec, reference)
        if not entries.any():
            return rejected(f"never enters on the research window of {reference[0]} {reference[1]}", spec)
        for other_id, other in sorted(self.active.items()):
            corr = _correlation(entries, self.entries(other_id, other, reference))
            if corr > self.max_correlation:
                return rejected(
                    f"entries correlate {corr:.3f} with {other.name} ({other_id}) on {reference[0]} {reference[1]}, "
                    f"more than {self.max_correlation}",
                    spec,
                )
        self.registry[sid] = {"name": spec.name, "status": "active", "spec": spec}
        self.active[sid] = spec
        return Verdict(candidate, REGISTERED, f"new strategy: {nodes} rule nodes, {combinations} combinations", spec)


# --- offline: mutation and crossover ---------------------------------------------------------

STOP_CHOICES = {
    "stop_loss": (0.02, 0.03, 0.05, 0.08),
    "take_profit": (0.04, 0.08, 0.15, 0.25),
    "trailing_stop": (0.02, 0.04, 0.06),
}
TREND_FILTER = {"compare": {"left": "close", "op": ">", "right": {"indicator": "sma", "params": {"window": 200}}}}
VOLUME_FILTER = {
    "compare": {"left": "volume", "op": ">", "right": {"indicator": "volume_sma", "params": {"window": 20}}}
}
WINDOW_SCALES = (0.5, 0.75, 1.5, 2.0)


def _spec_dict(spec: StrategySpec) -> dict:
    return json.loads(spec.canonical_json())


def _short_hash(data: Mapping) -> str:
    body = {k: v for k, v in data.items() if k not in ("name", "description")}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[:6]


def _named(data: dict, base: str, kind: str, description: str) -> dict:
    data["name"] = f"{base[:40]}-{kind}-{_short_hash(data)}"
    data["description"] = description
    return data


def _used_parameters(data: Mapping) -> set[str]:
    used: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, str) and value.startswith("$"):
            used.add(value[1:])
        elif isinstance(value, Mapping):
            for key, inner in value.items():
                if key != "parameters":
                    walk(inner)
        elif isinstance(value, list):
            for inner in value:
                walk(inner)

    walk(data)
    return used


def _prune_parameters(data: dict) -> dict:
    used = _used_parameters(data)
    data["parameters"] = {k: v for k, v in data.get("parameters", {}).items() if k in used}
    return data


def _entry_parameters(data: Mapping) -> list[str]:
    """Integer parameters the entry rule uses (scaling one changes when it fires)."""
    used = _used_parameters({"entry": data["entry"]})
    params = data.get("parameters", {})
    return sorted(n for n in used if n in params and all(isinstance(params[n][k], int) for k in params[n]))


def _scale_parameter(data: dict, rng: random.Random) -> tuple[dict, str] | None:
    """Scale the range of one integer parameter of the entry (a window or a threshold)."""
    names = _entry_parameters(data)
    if not names:
        return None
    name, scale = rng.choice(names), rng.choice(WINDOW_SCALES)
    p = data["parameters"][name]
    low, high = max(1, round(p["low"] * scale)), max(1, round(p["high"] * scale))
    step = max(1, round(p["step"] * scale))
    default = min(max(round(p["default"] * scale), low), high)
    data["parameters"][name] = {"default": default, "low": low, "high": max(high, low), "step": step}
    return data, f"parameter {name} scaled by {scale}"


def _add_filter(data: dict, rng: random.Random) -> tuple[dict, str]:
    name, rule = rng.choice((("a trend filter close > sma(200)", TREND_FILTER), ("a volume filter", VOLUME_FILTER)))
    data["entry"] = {"all": [data["entry"], rule]}
    return data, f"entry with {name}"


def _change_stop(data: dict, rng: random.Random) -> tuple[dict, str]:
    stop = rng.choice(sorted(STOP_CHOICES))
    value = rng.choice(STOP_CHOICES[stop])
    data[stop] = value
    return _prune_parameters(data), f"{stop} set to {value}"


def _inline_parameters(data: dict) -> dict:
    """The spec with every "$name" replaced by the parameter's default, and no parameters."""
    defaults = {name: p["default"] for name, p in data.get("parameters", {}).items()}

    def inline(value: Any) -> Any:
        if isinstance(value, str) and value.startswith("$") and value[1:] in defaults:
            return defaults[value[1:]]
        if isinstance(value, Mapping):
            return {k: inline(v) for k, v in value.items()}
        if isinstance(value, list):
            return [inline(v) for v in value]
        return value

    return {**inline({k: v for k, v in data.items() if k != "parameters"}), "parameters": {}}


def _crossover(a: dict, b: dict) -> tuple[dict, str]:
    """Enter on either parent's entry, leave on a's exit, with b's stops. b's parameters are
    fixed at their defaults, so the child tunes what a tunes (and stays within the caps)."""
    b = _inline_parameters(b)
    child = dict(a)
    child["entry"] = {"any": [a["entry"], b["entry"]]}
    for stop in STOP_CHOICES:
        child.pop(stop, None)
        if stop in b:
            child[stop] = b[stop]
    return _prune_parameters(
        child
    ), f"entry of {a['name']} or of {b['name']}, exit of {a['name']}, stops of {b['name']}"


def offline_candidates(parents: list[tuple[str, StrategySpec]], count: int, seed: int) -> list[Candidate]:
    """`count` candidates from the parents (best first): each changes when its parent enters
    (a scaled entry parameter, an added filter, or a crossover entering on either of two
    parents' entries: a change of stops alone would copy the parent's entries) and sometimes
    its stops too. A generator seeded with `seed` and the parents' ids chooses, so the same
    inputs give the same candidates and a grown registry gives new ones."""
    if not parents or count <= 0:
        return []
    key = f"{seed}:" + ",".join(sid for sid, _ in parents)
    rng = random.Random(int(hashlib.sha256(key.encode()).hexdigest()[:16], 16))
    candidates = []
    for _ in range(count):
        sid, spec = rng.choice(parents)
        data = _spec_dict(spec)
        if len(parents) > 1 and rng.random() < 0.3:
            other_id, other = rng.choice([p for p in parents if p[0] != sid])
            child, note = _crossover(data, _spec_dict(other))
            ids, kind = (sid, other_id), "x"
        else:
            mutation = _scale_parameter if rng.random() < 0.6 else _add_filter
            child, note = mutation(data, rng) or _add_filter(data, rng)
            ids, kind = (sid,), "m"
        if rng.random() < 0.5:
            child, stop_note = _change_stop(child, rng)
            note = f"{note}; {stop_note}"
        child = _named(child, spec.name, kind, f"Designed offline from {spec.name}: {note}.")
        candidates.append(Candidate("offline", child, ids, note))
    return candidates


# --- the LLM ---------------------------------------------------------------------------------


class Proposal(BaseModel):
    model_config = ConfigDict(extra="forbid")

    spec: dict[str, Any]
    parents: list[str] = Field(default_factory=list, max_length=4)
    rationale: str = Field(default="", max_length=2000)


class DesignAnswer(BaseModel):
    """The designer's answer: strategy specs as data (each screened on its own)."""

    model_config = ConfigDict(extra="forbid")

    proposals: list[Proposal] = Field(min_length=1, max_length=5)


DESIGN_SYSTEM_PROMPT = (
    "You design trading strategies for Tracer, a crypto research platform. A strategy is a JSON spec, "
    "never code: it is validated against a fixed schema and anything else is rejected. Long only, spot. "
    "Answer with exactly one JSON object and nothing else: "
    '{"proposals": [{"spec": {...}, "parents": ["<strategy_id>", ...], "rationale": "..."}]}. '
    "The spec grammar: name (lower-case slug, new), description, timeframe (one of the timeframes given), "
    "parameters {name: {default, low, high, step}} (integers for windows; at most "
    f"{MAX_DESIGN_PARAMETERS}; every one used; at most {MAX_DESIGN_COMBINATIONS} grid combinations), entry rule, "
    'optional exit rule, optional stop_loss / take_profit / trailing_stop fractions (or "$param"). '
    'A rule is one of {"all": [rules]}, {"any": [rules]}, {"not": rule}, '
    '{"compare": {"left": operand, "op": ">"|">="|"<"|"<=", "right": operand}}, '
    '{"cross_above": {"a": operand, "b": operand}}, {"cross_below": {"a": operand, "b": operand}}; '
    f"at most {MAX_DESIGN_NODES} nodes. An operand is a price column (open, high, low, close, volume), a number, "
    '"$param", or {"indicator": name, "params": {...}, "output": name?} with indicators: '
    + "; ".join(
        f"{name}({', '.join(p for p, _ in definition.params)})"
        + (f" outputs {', '.join(definition.outputs)}" if definition.outputs else "")
        for name, definition in INDICATORS.items()
    )
    + ". Propose strategies that fill the portfolio's gaps and differ from the existing ones."
)


def design_prompt(
    gaps: Mapping[str, Any],
    top: Iterable[Mapping[str, Any]],
    bottom: Iterable[Mapping[str, Any]],
    timeframes: list[str],
    proposals: int,
) -> str:
    """The user message: gaps, and the best and worst performers' specs with their
    research-window metrics (the only metrics the LLM ever sees)."""
    body = {
        "task": f"Propose {proposals} new strategies.",
        "timeframes_with_candles": timeframes,
        "portfolio_gaps": gaps,
        "best_performers_research_window": list(top),
        "worst_performers_research_window": list(bottom),
    }
    return json.dumps(body, indent=1, default=str)


def llm_candidates(asker: Asker, prompt: str, calls: int) -> list[Candidate]:
    """Ask `calls` times; each answer's proposals become candidates, and a failed call one
    candidate without an object that carries the call's reason (so it is stored as rejected)."""
    candidates: list[Candidate] = []
    for _ in range(calls):
        result = asker.ask(DESIGN_SYSTEM_PROMPT, [{"role": "user", "content": prompt}], DesignAnswer)
        if not result.ok:
            candidates.append(Candidate("llm", None, failure=result.reason, raw_text=result.raw_text))
            continue
        for proposal in result.answer.proposals:
            spec = _plain(proposal.spec)
            candidates.append(
                Candidate("llm", spec, tuple(proposal.parents), proposal.rationale, None, result.raw_text)
            )
    return candidates


def _plain(value: Any) -> Any:
    """Decimals (the strict decoder's numbers) back to int or float, as a spec is written."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() and "." not in str(value) else float(value)
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value
