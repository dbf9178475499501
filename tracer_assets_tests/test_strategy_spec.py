"""Strategies as data: spec validation, hashing, the built-in library, indicator values and rule
evaluation over a parameter grid.

Indicator values are checked against loop implementations written here from the formulas
(TA-Lib's C loops: SMA seeds, prev + k * (x - prev) EMAs, (prev * (n-1) + x) / n Wilder
smoothing, TA_MACD's common start index), on real BTC/USDT 5m candles, and against
`features.indicators.compute_indicators` where the columns overlap.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import re
from typing import Any

import numpy as np
import polars as pl
import pytest
from conftest import REPO, bundled_frame
from pydantic import ValidationError

from tracer_assets.features import indicators
from tracer_assets.features.indicators import compute_indicators
from tracer_assets.research import rules
from tracer_assets.research.rules import compute_indicator, evaluate, param_grid
from tracer_assets.research.spec import SpecError, StrategySpec, builtin_spec, builtin_specs, load_spec

REL = 1e-9
COLUMNS = ("open", "high", "low", "close", "volume")
REFERENCE_BARS = 4000  # the loop references are plain Python


@pytest.fixture(scope="module")
def btc() -> pl.DataFrame:
    return bundled_frame("BTC/USDT")


@pytest.fixture(scope="module")
def candles(btc: pl.DataFrame) -> dict[str, np.ndarray]:
    return {c: btc[c].to_numpy() for c in COLUMNS}


@pytest.fixture(scope="module")
def short_candles(candles: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {c: v[:REFERENCE_BARS].copy() for c, v in candles.items()}


def ema_spec(**changes: Any) -> dict[str, Any]:
    """A valid EMA-cross spec as a dict, with top-level fields replaced."""
    fast = {"indicator": "ema", "params": {"window": "$fast"}}
    slow = {"indicator": "ema", "params": {"window": "$slow"}}
    spec = {
        "name": "test_cross",
        "description": "EMA cross with a trend filter",
        "timeframe": "1h",
        "parameters": {
            "fast": {"default": 10, "low": 5, "high": 20, "step": 5},
            "slow": {"default": 40, "low": 30, "high": 60, "step": 10},
        },
        "entry": {
            "all": [
                {"compare": {"left": "close", "op": ">", "right": {"indicator": "sma", "params": {"window": 50}}}},
                {"cross_above": {"a": fast, "b": slow}},
            ]
        },
        "exit": {"cross_below": {"a": fast, "b": slow}},
        "stop_loss": 0.02,
    }
    spec.update(changes)
    return spec


# --- loading, the built-in library, hashing ---------------------------------------------


def test_every_builtin_strategy_loads_and_trades_on_real_candles(candles: dict[str, np.ndarray]) -> None:
    specs = builtin_specs()
    names = {s.name for s in specs}
    assert len(specs) >= 8
    assert {
        "ema_cross",
        "macd_cross",
        "rsi_mean_reversion",
        "bollinger_breakout",
        "donchian_atr_breakout",
        "trend_filter_rsi_pullback",
    } <= names
    assert len({s.timeframe for s in specs}) >= 3
    for spec in specs:
        grid = param_grid(spec)
        assert 1 <= len(grid) <= 100, spec.name
        # The defaults are a usable strategy: it enters and leaves at some point in 2024.
        signals = evaluate(spec, candles, [{}])
        assert signals.entries[:, 0].any(), spec.name
        assert signals.exits[:, 0].any() or spec.exit is None, spec.name
        assert builtin_spec(spec.name) == spec


def test_builtin_specs_document_every_rule_node_and_indicator() -> None:
    text = "".join(s.canonical_json() for s in builtin_specs())
    for node in ("all", "any", "not", "compare", "cross_above", "cross_below"):
        assert f'"{node}":' in text, node
    for kind in ("ema", "sma", "rsi", "atr", "macd", "bollinger", "donchian", "roc", "volume_sma"):
        assert f'"indicator":"{kind}"' in text, kind


def _reorder(value: Any) -> Any:
    """The same JSON value with every object's keys in reverse order."""
    if isinstance(value, dict):
        return {k: _reorder(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [_reorder(v) for v in value]
    return value


def test_content_hash_is_stable_and_independent_of_key_order_and_spelling() -> None:
    source = ema_spec()
    spec = load_spec(source)
    reordered = load_spec(json.dumps(_reorder(source), indent=4))
    explicit = load_spec({**source, "side": "long", "pyramiding": False, "take_profit": None, "position_fraction": 1})
    assert list(_reorder(source)) != list(source)
    assert spec.content_hash() == reordered.content_hash() == explicit.content_hash()
    assert spec.content_hash() == hashlib.sha256(spec.canonical_json().encode()).hexdigest()
    # canonical: sorted keys, no whitespace, and it loads back to the same spec
    assert spec.canonical_json() == json.dumps(json.loads(spec.canonical_json()), sort_keys=True, separators=(",", ":"))
    assert load_spec(spec.canonical_json()) == spec
    assert load_spec(spec.canonical_json()).content_hash() == spec.content_hash()
    # any real change changes it
    changed = copy.deepcopy(source)
    changed["parameters"]["fast"]["default"] = 15
    assert load_spec(changed).content_hash() != spec.content_hash()
    assert load_spec(ema_spec(stop_loss=0.03)).content_hash() != spec.content_hash()


def test_spec_is_frozen() -> None:
    spec = load_spec(ema_spec())
    with pytest.raises(ValidationError):
        spec.stop_loss = 0.5  # type: ignore[misc]


# --- invalid specs are rejected with the field named -----------------------------------


def _set(path: list[Any], value: Any) -> Any:
    def mutate(spec: dict[str, Any]) -> None:
        target = spec
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return mutate


def _delete(path: list[Any]) -> Any:
    def mutate(spec: dict[str, Any]) -> None:
        target = spec
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return mutate


CROSS_A = ["entry", "all", 1, "cross_above", "a"]

INVALID = [
    ("unknown indicator", _set(CROSS_A + ["indicator"], "emma"), "entry.all[1].cross_above.a.indicator", "'ema'"),
    (
        "unknown parameter",
        _set(CROSS_A + ["params", "window"], "$fats"),
        "entry.all[1].cross_above.a.params.window",
        "unknown parameter '$fats'",
    ),
    (
        "default outside range",
        _set(["parameters", "fast", "default"], 25),
        "parameters.fast.default",
        "outside the range [5, 20]",
    ),
    (
        "window 0",
        _set(["entry", "all", 0, "compare", "right", "params", "window"], 0),
        "entry.all[0].compare.right.params.window",
        "integer >= 1",
    ),
    (
        "float window",
        _set(["entry", "all", 0, "compare", "right", "params", "window"], 50.5),
        "entry.all[0].compare.right.params.window",
        "integer >= 1",
    ),
    ("extra field", _set(["colour"], "red"), "colour", "unknown field"),
    ("extra field deep", _set(CROSS_A + ["lookback"], 3), "entry.all[1].cross_above.a.lookback", "unknown field"),
    ("bad timeframe", _set(["timeframe"], "5x"), "timeframe", "'5x' is not a timeframe"),
    ("stop_loss negative", _set(["stop_loss"], -0.02), "stop_loss", "between 0 and 1"),
    ("stop_loss 100%", _set(["stop_loss"], 1.0), "stop_loss", "between 0 and 1"),
    ("empty all", _set(["entry"], {"all": []}), "entry.all", "at least 1 item"),
    ("unknown node", _set(["exit"], {"crosses": {}}), "exit", "expected a rule"),
    (
        "two constants",
        _set(["exit"], {"compare": {"left": 1, "op": "<", "right": 2}}),
        "exit.compare",
        "one side must be an indicator",
    ),
    ("bad operator", _set(["exit"], {"compare": {"left": "close", "op": "==", "right": 2}}), "exit.compare.op", "'>'"),
    (
        "bool operand",
        _set(["exit"], {"compare": {"left": "close", "op": "<", "right": True}}),
        "exit.compare.right",
        "expected an operand",
    ),
    (
        "code as operand",
        _set(["exit"], {"compare": {"left": "__import__('os').system('id')", "op": "<", "right": 1}}),
        "exit.compare.left",
        "'close'",
    ),
    (
        "code as parameter",
        _set(CROSS_A + ["params", "window"], "$fast; import os"),
        "entry.all[1].cross_above.a.params.window",
        "'$fast'",
    ),
    ("missing entry", _delete(["entry"]), "entry", "Field required"),
    ("missing indicator param", _set(CROSS_A + ["params"], {}), "entry.all[1].cross_above.a.params", "needs 'window'"),
    (
        "output on single output",
        _set(CROSS_A + ["output"], "line"),
        "entry.all[1].cross_above.a.output",
        "single output",
    ),
    (
        "macd without output",
        _set(
            ["exit"],
            {
                "compare": {
                    "left": {"indicator": "macd", "params": {"fast": 12, "slow": 26, "signal": 9}},
                    "op": ">",
                    "right": 0,
                }
            },
        ),
        "exit.compare.left.output",
        "line, signal, hist",
    ),
    (
        "macd fast above slow",
        _set(
            ["exit"],
            {
                "compare": {
                    "left": {
                        "indicator": "macd",
                        "params": {"fast": "$slow", "slow": "$fast", "signal": 9},
                        "output": "line",
                    },
                    "op": ">",
                    "right": 0,
                }
            },
        ),
        "exit.compare.left.params.fast",
        "must be below slow",
    ),
    (
        "window from a float parameter",
        _set(["parameters", "fast", "step"], 2.5),
        "entry.all[1].cross_above.a.params.window",
        "must be integers",
    ),
    (
        "window parameter below 1",
        _set(["parameters", "fast"], {"default": 5, "low": 0, "high": 20, "step": 5}),
        "entry.all[1].cross_above.a.params.window",
        "low must be >= 1",
    ),
    (
        "unused parameter",
        _set(["parameters", "spare"], {"default": 1, "low": 1, "high": 3, "step": 1}),
        "parameters.spare",
        "not used",
    ),
    ("step zero", _set(["parameters", "fast", "step"], 0), "parameters.fast.step", "above 0"),
    ("string number", _set(["parameters", "fast", "high"], "20"), "parameters.fast.high", "expected a number"),
    (
        "stop from a parameter out of range",
        _set(["stop_loss"], "$fast"),
        "stop_loss",
        "whole range must be between 0 and 1",
    ),
    ("short side", _set(["side"], "short"), "side", "only 'long'"),
    ("position fraction", _set(["position_fraction"], 1.5), "position_fraction", "less than or equal to 1"),
    ("bad name", _set(["name"], "EMA Cross!"), "name", "pattern"),
]


@pytest.mark.parametrize("case, mutate, path, fragment", INVALID, ids=[c[0] for c in INVALID])
def test_invalid_spec_is_rejected_naming_the_field(case: str, mutate: Any, path: str, fragment: str) -> None:
    source = ema_spec()
    load_spec(source)  # valid before the change
    mutate(source)
    with pytest.raises(SpecError) as raised:
        load_spec(source)
    message = str(raised.value)
    assert "\n" not in message
    assert f"{path}: " in message, message
    assert fragment in message, message


def test_invalid_json_text_is_rejected() -> None:
    with pytest.raises(SpecError, match="not valid JSON"):
        load_spec('{"name": ')
    with pytest.raises(SpecError, match="name: the key appears twice"):
        load_spec('{"name": "a", "name": "b"}')
    with pytest.raises(SpecError, match="NaN is not a number"):
        load_spec(json.dumps(ema_spec(stop_loss=float("nan"))))
    with pytest.raises(SpecError, match="JSON object, got list"):
        load_spec("[]")


# --- parameter grids -------------------------------------------------------------------


def test_param_grid_is_the_full_product_in_name_order() -> None:
    spec = builtin_spec("donchian_atr_breakout")
    grid = param_grid(spec)
    counts = {name: p.count() for name, p in spec.parameters.items()}
    assert len(grid) == math.prod(counts.values()) == 36
    assert len({tuple(sorted(c.items())) for c in grid}) == len(grid)
    assert all(list(c) == sorted(spec.parameters) for c in grid)
    # float steps are exact decimals, integers stay integers
    assert sorted({c["stop"] for c in grid}) == [0.02, 0.04, 0.06]
    assert sorted({c["entry_window"] for c in grid}) == [20, 30, 40, 50]
    assert all(type(c["entry_window"]) is int for c in grid)
    # same grid from the same spec written with keys in another order
    reordered = load_spec(_reorder(json.loads(spec.canonical_json())))
    assert param_grid(reordered) == grid


def test_param_grid_overrides_and_limits() -> None:
    spec = builtin_spec("ema_cross")
    grid = param_grid(spec, {"fast": [5, 7, 7]})
    assert sorted({c["fast"] for c in grid}) == [5, 7]
    assert len(grid) == 2 * spec.parameters["slow"].count()
    with pytest.raises(ValueError, match="'fast' value 50 is outside its range"):
        param_grid(spec, {"fast": [50]})
    with pytest.raises(ValueError, match="'fast' must be an integer"):
        param_grid(spec, {"fast": [7.5]})
    with pytest.raises(ValueError, match="unknown parameter 'fats'"):
        param_grid(spec, {"fats": [5]})
    with pytest.raises(ValueError, match="non-empty list"):
        param_grid(spec, {"fast": []})
    with pytest.raises(ValueError, match=r"16 combinations \(fast 4 x slow 4\), more than max_combinations=10"):
        param_grid(spec, max_combinations=10)


# --- indicators against loop references -----------------------------------------------


def ref_ema(x: list[float], n: int, seed_index: int | None = None) -> list[float]:
    seed_index = n - 1 if seed_index is None else seed_index
    out = [math.nan] * len(x)
    if len(x) <= seed_index:
        return out
    k = 2.0 / (n + 1)
    prev = sum(x[seed_index - n + 1 : seed_index + 1]) / n
    out[seed_index] = prev
    for t in range(seed_index + 1, len(x)):
        prev = prev + k * (x[t] - prev)
        out[t] = prev
    return out


def ref_sma(x: list[float], n: int) -> list[float]:
    return [math.fsum(x[t - n + 1 : t + 1]) / n if t >= n - 1 else math.nan for t in range(len(x))]


def ref_wilder(x: list[float], n: int) -> list[float]:
    """x[0] unused; seed mean(x[1..n]) at n; then (prev * (n-1) + x) / n."""
    out = [math.nan] * len(x)
    if len(x) <= n:
        return out
    prev = sum(x[1 : n + 1]) / n
    out[n] = prev
    for t in range(n + 1, len(x)):
        prev = (prev * (n - 1) + x[t]) / n
        out[t] = prev
    return out


def ref_rsi(close: list[float], n: int) -> list[float]:
    gains = [0.0] + [max(close[t] - close[t - 1], 0.0) for t in range(1, len(close))]
    losses = [0.0] + [max(close[t - 1] - close[t], 0.0) for t in range(1, len(close))]
    avg_gain, avg_loss = ref_wilder(gains, n), ref_wilder(losses, n)
    out = []
    for gain, loss in zip(avg_gain, avg_loss):
        out.append(math.nan if math.isnan(gain) else (0.0 if gain + loss == 0 else 100.0 * gain / (gain + loss)))
    return out


def ref_atr(high: list[float], low: list[float], close: list[float], n: int) -> list[float]:
    tr = [0.0] + [max(high[t], close[t - 1]) - min(low[t], close[t - 1]) for t in range(1, len(close))]
    return ref_wilder(tr, n)


def ref_macd(close: list[float], fast: int, slow: int, signal: int) -> dict[str, list[float]]:
    start = slow - 1
    fast_ema, slow_ema = ref_ema(close, fast, start), ref_ema(close, slow, start)
    line = [f - s for f, s in zip(fast_ema, slow_ema)]
    first = start + signal - 1
    sig = [math.nan] * len(close)
    prev = sum(line[start : first + 1]) / signal
    sig[first] = prev
    k = 2.0 / (signal + 1)
    for t in range(first + 1, len(close)):
        prev = prev + k * (line[t] - prev)
        sig[t] = prev
    line = [v if t >= first else math.nan for t, v in enumerate(line)]
    return {"line": line, "signal": sig, "hist": [a - b for a, b in zip(line, sig)]}


def ref_bollinger(close: list[float], n: int, k: float) -> dict[str, list[float]]:
    upper, middle, lower = [], [], []
    for t in range(len(close)):
        if t < n - 1:
            upper.append(math.nan), middle.append(math.nan), lower.append(math.nan)
            continue
        window = close[t - n + 1 : t + 1]
        mean = math.fsum(window) / n
        std = math.sqrt(math.fsum((v - mean) ** 2 for v in window) / n)
        upper.append(mean + k * std), middle.append(mean), lower.append(mean - k * std)
    return {"upper": upper, "middle": middle, "lower": lower}


def ref_donchian(high: list[float], low: list[float], n: int) -> dict[str, list[float]]:
    upper = [max(high[t - n : t]) if t >= n else math.nan for t in range(len(high))]
    lower = [min(low[t - n : t]) if t >= n else math.nan for t in range(len(low))]
    return {"upper": upper, "lower": lower}


def ref_roc(close: list[float], n: int) -> list[float]:
    return [100.0 * (close[t] / close[t - n] - 1.0) if t >= n else math.nan for t in range(len(close))]


def assert_matches(got: np.ndarray, expected: list[float], scale: float, label: str) -> None:
    """Same warm-up (NaN positions), then |got - expected| <= REL * max(|expected|, scale):
    values near zero (MACD, ROC) are compared at their input's scale."""
    expected_array = np.array(expected, dtype=np.float64)
    assert got.shape == expected_array.shape, label
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected_array), err_msg=f"{label}: warm-up differs")
    valid = ~np.isnan(expected_array)
    assert valid.any(), label
    error = np.abs(got[valid] - expected_array[valid])
    bound = REL * np.maximum(np.abs(expected_array[valid]), scale)
    worst = int(np.argmax(error / bound))
    assert (error <= bound).all(), f"{label}: off by {error[worst]:.3g} at a value {expected_array[valid][worst]:.6g}"


def _reference(kind: str, params: dict[str, Any], c: dict[str, list[float]]) -> dict[str, list[float]]:
    if kind == "ema":
        return {"value": ref_ema(c["close"], params["window"])}
    if kind == "sma":
        return {"value": ref_sma(c["close"], params["window"])}
    if kind == "volume_sma":
        return {"value": ref_sma(c["volume"], params["window"])}
    if kind == "rsi":
        return {"value": ref_rsi(c["close"], params["window"])}
    if kind == "atr":
        return {"value": ref_atr(c["high"], c["low"], c["close"], params["window"])}
    if kind == "roc":
        return {"value": ref_roc(c["close"], params["window"])}
    if kind == "macd":
        return ref_macd(c["close"], params["fast"], params["slow"], params["signal"])
    if kind == "bollinger":
        return ref_bollinger(c["close"], params["window"], params["k"])
    if kind == "donchian":
        return ref_donchian(c["high"], c["low"], params["window"])
    raise AssertionError(kind)


INDICATOR_CASES = [
    ("ema", {"window": 1}),
    ("ema", {"window": 12}),
    ("ema", {"window": 200}),
    ("sma", {"window": 2}),
    ("sma", {"window": 50}),
    ("volume_sma", {"window": 20}),
    ("rsi", {"window": 2}),
    ("rsi", {"window": 14}),
    ("atr", {"window": 1}),
    ("atr", {"window": 14}),
    ("macd", {"fast": 12, "slow": 26, "signal": 9}),
    ("macd", {"fast": 5, "slow": 35, "signal": 5}),
    ("bollinger", {"window": 2, "k": 1.5}),
    ("bollinger", {"window": 20, "k": 2.0}),
    ("donchian", {"window": 1}),
    ("donchian", {"window": 20}),
    ("roc", {"window": 1}),
    ("roc", {"window": 12}),
]


@pytest.mark.parametrize("kind, params", INDICATOR_CASES, ids=[f"{k}{tuple(p.values())}" for k, p in INDICATOR_CASES])
def test_indicator_matches_loop_reference_on_real_candles(
    kind: str, params: dict[str, Any], short_candles: dict[str, np.ndarray]
) -> None:
    as_lists = {c: v.tolist() for c, v in short_candles.items()}
    got = compute_indicator(kind, params, short_candles)
    expected = _reference(kind, params, as_lists)
    assert set(got) == set(expected)
    scale = float(np.mean(short_candles["volume" if kind == "volume_sma" else "close"]))
    if kind == "roc":
        scale = 1.0  # percent: compared at 1e-9 percentage points near zero
    for output in expected:
        assert_matches(got[output], expected[output], scale, f"{kind}{params}.{output}")


def test_indicators_equal_features_compute_indicators(btc: pl.DataFrame, candles: dict[str, np.ndarray]) -> None:
    """One implementation (features.indicators' kernels): the rules' indicators are the
    features/indicators columns bit for bit, warm-up NaN where the column is null."""
    frame = compute_indicators(
        btc.rename({"date": "ts"}).with_columns(symbol=pl.lit("BTC/USDT"), timeframe=pl.lit("5m"))
    )
    pairs = {f"ema_{n}": compute_indicator("ema", {"window": n}, candles)["value"] for n in (12, 26, 50, 200)}
    pairs |= {
        "rsi_14": compute_indicator("rsi", {"window": 14}, candles)["value"],
        "atr_14": compute_indicator("atr", {"window": 14}, candles)["value"],
    }
    macd = compute_indicator("macd", {"fast": 12, "slow": 26, "signal": 9}, candles)
    pairs |= {"macd": macd["line"], "macd_signal": macd["signal"], "macd_hist": macd["hist"]}
    for column, ours in pairs.items():
        theirs = frame[column].to_numpy()  # nulls -> NaN
        np.testing.assert_array_equal(ours, theirs, err_msg=column)


def test_rules_use_the_features_kernels() -> None:
    """One implementation: the rules call features.indicators' functions, not copies."""
    for name in ("ema", "sma", "rsi", "atr", "macd", "bollinger", "donchian", "roc", "rolling_std"):
        assert getattr(rules, name) is getattr(indicators, name), name


def test_indicators_match_talib_where_installed(short_candles: dict[str, np.ndarray]) -> None:
    talib = pytest.importorskip("talib")
    c = short_candles
    scale = float(np.mean(c["close"]))
    checks = [
        (compute_indicator("ema", {"window": 30}, c)["value"], talib.EMA(c["close"], 30)),
        (compute_indicator("sma", {"window": 30}, c)["value"], talib.SMA(c["close"], 30)),
        (compute_indicator("rsi", {"window": 7}, c)["value"], talib.RSI(c["close"], 7)),
        (compute_indicator("atr", {"window": 7}, c)["value"], talib.ATR(c["high"], c["low"], c["close"], 7)),
        (compute_indicator("roc", {"window": 10}, c)["value"] / scale, talib.ROC(c["close"], 10) / scale),
    ]
    macd = compute_indicator("macd", {"fast": 8, "slow": 21, "signal": 5}, c)
    checks += list(zip((macd["line"], macd["signal"], macd["hist"]), talib.MACD(c["close"], 8, 21, 5)))
    bands = compute_indicator("bollinger", {"window": 20, "k": 2.0}, c)
    checks += list(zip((bands["upper"], bands["middle"], bands["lower"]), talib.BBANDS(c["close"], 20, 2.0, 2.0)))
    for i, (ours, theirs) in enumerate(checks):
        assert_matches(ours, list(theirs), scale if i != 4 else 1.0, f"talib check {i}")


# --- rule semantics -------------------------------------------------------------------------


def hand_candles(close: list[float], open_: list[float] | None = None) -> dict[str, np.ndarray]:
    c = np.array(close, dtype=np.float64)
    o = np.array(open_ if open_ is not None else close, dtype=np.float64)
    return {"open": o, "high": np.maximum(o, c), "low": np.minimum(o, c), "close": c, "volume": np.ones_like(c)}


def rule_spec(entry: dict[str, Any], exit_: dict[str, Any] | None = None, **parameters: Any) -> StrategySpec:
    spec: dict[str, Any] = {"name": "hand", "description": "hand-built", "timeframe": "5m", "entry": entry}
    if exit_ is not None:
        spec["exit"] = exit_
    if parameters:
        spec["parameters"] = parameters
    return load_spec(spec)


def test_cross_above_and_below_on_a_hand_built_series() -> None:
    close = [1.0, 2.0, 3.0, 2.0, 1.0, 2.0, 2.0, 3.0, 1.0]
    opens = [2.0] * len(close)
    spec = rule_spec(
        {"cross_above": {"a": "close", "b": 2}},
        {"cross_below": {"a": "close", "b": "open"}},
    )
    signals = evaluate(spec, hand_candles(close, opens), [{}])
    definition_above = [i > 0 and close[i - 1] <= 2 and close[i] > 2 for i in range(len(close))]
    definition_below = [i > 0 and close[i - 1] >= opens[i - 1] and close[i] < opens[i] for i in range(len(close))]
    assert signals.entries[:, 0].tolist() == definition_above
    assert signals.exits[:, 0].tolist() == definition_below
    # touching is not crossing: 2 -> 2 is not a cross, 2 (equal) -> 3 is
    assert np.flatnonzero(signals.entries[:, 0]).tolist() == [2, 7]
    assert np.flatnonzero(signals.exits[:, 0]).tolist() == [4, 8]


def test_cross_of_two_indicators_matches_its_definition(short_candles: dict[str, np.ndarray]) -> None:
    spec = rule_spec(
        {
            "cross_above": {
                "a": {"indicator": "ema", "params": {"window": 5}},
                "b": {"indicator": "sma", "params": {"window": 20}},
            }
        }
    )
    a = compute_indicator("ema", {"window": 5}, short_candles)["value"]
    b = compute_indicator("sma", {"window": 20}, short_candles)["value"]
    expected = np.zeros(len(a), dtype=bool)
    expected[1:] = (a[:-1] <= b[:-1]) & (a[1:] > b[1:])
    got = evaluate(spec, short_candles, [{}]).entries[:, 0]
    np.testing.assert_array_equal(got, expected)
    assert got.sum() > 10
    assert not got[:20].any()  # sma(20) exists from bar 19, a cross needs bar 18 as well


def test_warm_up_is_false_even_under_not(short_candles: dict[str, np.ndarray]) -> None:
    # not(rsi > 70) is true at most bars, but never before RSI(14) exists (bar 14).
    spec = rule_spec(
        {"not": {"compare": {"left": {"indicator": "rsi", "params": {"window": 14}}, "op": ">", "right": 70}}},
        {
            "any": [
                {"compare": {"left": "close", "op": ">", "right": 0}},
                {"compare": {"left": {"indicator": "ema", "params": {"window": 30}}, "op": ">", "right": 1e12}},
            ]
        },
    )
    signals = evaluate(spec, short_candles, [{}])
    rsi = compute_indicator("rsi", {"window": 14}, short_candles)["value"]
    assert not signals.entries[:14, 0].any()
    np.testing.assert_array_equal(signals.entries[14:, 0], ~(rsi[14:] > 70))
    # any(...) is evaluated from the bar where all its operands exist (ema(30): bar 29)
    assert not signals.exits[:29, 0].any() and signals.exits[29:, 0].all()


def test_signals_shape_stops_and_no_exit_rule(short_candles: dict[str, np.ndarray]) -> None:
    spec = builtin_spec("donchian_atr_breakout")
    grid = param_grid(spec)
    signals = evaluate(spec, short_candles, grid)
    assert signals.entries.shape == signals.exits.shape == (REFERENCE_BARS, len(grid))
    assert signals.entries.dtype == bool
    np.testing.assert_array_equal(signals.stop_loss, [c["stop"] for c in grid])
    assert np.isnan(signals.take_profit).all() and np.isnan(signals.trailing_stop).all()
    assert signals.grid == tuple(grid)

    entry_only = rule_spec(
        {"compare": {"left": "close", "op": ">", "right": {"indicator": "sma", "params": {"window": 10}}}}
    )
    signals = evaluate(entry_only, short_candles, [{}])
    assert signals.entries.any() and not signals.exits.any()
    assert np.isnan(signals.stop_loss).all() and signals.position_fraction == 1.0


def test_grid_evaluation_equals_each_combination_alone(short_candles: dict[str, np.ndarray]) -> None:
    for spec in builtin_specs():
        grid = param_grid(spec)
        together = evaluate(spec, short_candles, grid)
        for j in range(0, len(grid), max(1, len(grid) // 6)):  # a spread of combinations
            alone = evaluate(spec, short_candles, [grid[j]])
            np.testing.assert_array_equal(together.entries[:, j], alone.entries[:, 0], err_msg=f"{spec.name} {grid[j]}")
            np.testing.assert_array_equal(together.exits[:, j], alone.exits[:, 0], err_msg=f"{spec.name} {grid[j]}")
            for field in ("stop_loss", "take_profit", "trailing_stop"):
                np.testing.assert_array_equal(getattr(together, field)[j], getattr(alone, field)[0])
        # the grid's columns really differ: the parameters matter
        assert len({together.entries[:, j].tobytes() for j in range(len(grid))}) > 1, spec.name


def test_each_distinct_indicator_is_computed_once_across_the_grid(
    short_candles: dict[str, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    real = rules.ema  # the kernel of features.indicators, as rules calls it

    def counting(x: np.ndarray, window: int, seed_index: int | None = None) -> np.ndarray:
        calls.append(window)
        return real(x, window, seed_index)

    monkeypatch.setattr(rules, "ema", counting)
    spec = load_spec(
        ema_spec(
            parameters={
                "fast": {"default": 5, "low": 2, "high": 21, "step": 1},
                "slow": {"default": 30, "low": 30, "high": 68, "step": 2},
            }
        )
    )
    grid = param_grid(spec)
    assert len(grid) == 400
    signals = evaluate(spec, short_candles, grid)
    assert sorted(calls) == sorted([*range(2, 22), *range(30, 69, 2)])  # 40 EMAs, not 400
    assert signals.entries.shape == (REFERENCE_BARS, 400)


def test_bad_candles_and_bad_combinations_are_refused(short_candles: dict[str, np.ndarray]) -> None:
    spec = builtin_spec("ema_cross")
    broken = {c: v.copy() for c, v in short_candles.items()}
    broken["close"][100] = np.nan
    with pytest.raises(ValueError, match=r"close\[100\] = nan is not finite and > 0"):
        evaluate(spec, broken, [{}])
    with pytest.raises(ValueError, match="lack columns \\['volume'\\]"):
        evaluate(spec, {c: v for c, v in short_candles.items() if c != "volume"}, [{}])
    with pytest.raises(ValueError, match="unknown parameter 'fats'"):
        evaluate(spec, short_candles, [{"fats": 5}])
    with pytest.raises(ValueError, match="'slow' value 10 is outside its range"):
        evaluate(spec, short_candles, [{"slow": 10}])


def test_docs_show_every_builtin_strategy_as_it_is() -> None:
    text = (REPO / "docs" / "strategies.md").read_text(encoding="utf-8")
    sections = re.split(r"^### `([a-z0-9_]+)`$", text, flags=re.M)
    documented = dict(zip(sections[1::2], sections[2::2]))
    for spec in builtin_specs():
        section = documented.get(spec.name)
        assert section is not None, f"docs/strategies.md has no section for {spec.name}"
        example = re.search(r"```json\n(.*?)```", section, flags=re.S)
        assert example is not None, spec.name
        assert load_spec(example.group(1)).content_hash() == spec.content_hash(), spec.name
        stated = re.search(r"(\d+) combinations\)", section)
        assert stated is not None and int(stated.group(1)) == len(param_grid(spec)), spec.name
