"""The strategy designer and the tuner: Claude's answers (through the local Messages API server)
screened one by one, the offline mutations through the same screen, tuned variants registered only
when they beat their parent out of sample, and every trial recorded. Real DuckDB files, the real
anthropic client, the numba engine on the bundled candles."""

import json

import dagster as dg
import duckdb
import polars as pl
import pytest
from fake_anthropic import FakeAnthropic

from tracer_assets.llm.resource import AnthropicResource
from tracer_assets.research import design, tuning
from tracer_assets.research.design_assets import UPSTREAM, build_design_assets
from tracer_assets.research.design_runs import ResearchInputs, read_research_inputs, run_tuning
from tracer_assets.research.engine import FillRules
from tracer_assets.research.evaluation import research_slice
from tracer_assets.research.registry import STRATEGY_COLUMNS, strategy_id, sync_builtins
from tracer_assets.research.spec import builtin_spec, builtin_specs, load_spec
from tracer_assets.resources.step_values import StepValuesIOManager
from tracer_assets.resources.warehouse import TracerDuckDB
from tracer_assets.settings import load_settings

API_KEY = "sk-ant-test-design-0123456789"
SYMBOLS = ("BTC/USDT", "ETH/USDT")
RULES = FillRules(fee=0.001, slippage_bps=5)

# A strategy no built-in is: a fast EMA crossing a 50-bar SMA, out when the close falls under a 20 EMA.
VALID = {
    "name": "ema_over_sma_trend",
    "description": "Buy when a fast EMA crosses above the 50-bar SMA; sell when the close falls below the 20 EMA.",
    "timeframe": "1h",
    "parameters": {"fast": {"default": 12, "low": 8, "high": 16, "step": 4}},
    "entry": {
        "cross_above": {
            "a": {"indicator": "ema", "params": {"window": "$fast"}},
            "b": {"indicator": "sma", "params": {"window": 50}},
        }
    },
    "exit": {"cross_below": {"a": "close", "b": {"indicator": "ema", "params": {"window": 20}}}},
    "stop_loss": 0.04,
}


def bundled_series() -> dict[tuple[str, str], pl.DataFrame]:
    from tracer_assets.data import BUNDLED_REPLAY_DIR

    return {
        (symbol, "1h"): pl.read_parquet(BUNDLED_REPLAY_DIR / f"{symbol.replace('/', '_')}-1h.parquet")
        .rename({"date": "ts"})
        .with_columns(pl.col("ts").dt.cast_time_unit("us"))
        for symbol in SYMBOLS
    }


def write_research_inputs(database: str) -> dict[str, str]:
    """research.strategies with the built-ins, market.ohlcv with the bundled 1h candles of two
    symbols; returns strategy_id by name."""
    from datetime import UTC, datetime

    from tracer_assets.research.assets import STRATEGIES_DDL

    inserts, _ = sync_builtins([], builtin_specs(), datetime.now(UTC))
    candles = pl.concat(
        frame.with_columns(pl.lit(symbol).alias("symbol"), pl.lit(tf).alias("timeframe"))
        for (symbol, tf), frame in bundled_series().items()
    )
    with duckdb.connect(database) as connection:
        connection.execute("CREATE SCHEMA IF NOT EXISTS research")
        connection.execute("CREATE SCHEMA IF NOT EXISTS market")
        connection.execute(STRATEGIES_DDL)
        connection.executemany(
            f"INSERT INTO research.strategies ({', '.join(STRATEGY_COLUMNS)}) VALUES "
            f"({', '.join('?' * len(STRATEGY_COLUMNS))})",
            [[row[c] for c in STRATEGY_COLUMNS] for row in inserts],
        )
        connection.register("candles", candles.to_arrow())
        connection.execute("CREATE TABLE market.ohlcv AS SELECT * FROM candles")
    return {row["name"]: row["strategy_id"] for row in inserts}


def materialize_designs(tmp_path, database: str, llm: AnthropicResource, **env: str) -> dg.ExecuteInProcessResult:
    settings = load_settings({"TRACER_TIMEFRAMES": "1h", "TRACER_SYMBOLS": ",".join(SYMBOLS), **env})
    designs, _ = build_design_assets(settings)
    return dg.materialize(
        [designs, *(dg.AssetSpec(key) for key in UPSTREAM.values())],
        resources={
            "duckdb": TracerDuckDB(database=database),
            "llm_research": llm,
            "step_values": StepValuesIOManager(base_dir=str(tmp_path / "step_values")),
        },
        raise_on_error=False,
    )


@pytest.mark.slow
def test_claudes_answers_are_screened_and_only_the_valid_spec_is_registered(tmp_path):
    database = str(tmp_path / "tracer.duckdb")
    ids = write_research_inputs(database)
    unknown_indicator = json.loads(json.dumps(VALID))
    unknown_indicator["name"] = "supertrend_cross"
    unknown_indicator["entry"]["cross_above"]["b"] = {"indicator": "supertrend", "params": {"window": 10}}
    duplicate = json.loads(builtin_spec("ema_cross").canonical_json())  # the built-in, key order aside
    with FakeAnthropic(api_key=API_KEY) as server:
        server.reply_text("Here are some ideas: buy low, sell high. No JSON today.")
        server.reply_text(json.dumps({"proposals": [{"spec": unknown_indicator, "rationale": "trend"}]}))
        server.reply_text(json.dumps({"proposals": [{"spec": duplicate, "rationale": "classic"}]}))
        server.reply_text(
            "```json\n"
            + json.dumps({"proposals": [{"spec": VALID, "parents": [ids["ema_cross"]], "rationale": "slower base"}]})
            + "\n```"
        )
        llm = AnthropicResource(api_key=API_KEY, base_url=server.url, max_tokens=4096, timeout_seconds=10)
        result = materialize_designs(tmp_path, database, llm, TRACER_DESIGN_CALLS="4")
        prompts = [request.prompt_text for request in server.requests]
    assert result.success
    assert len(prompts) == 4
    # The LLM sees research-window figures only, never an out-of-sample one.
    assert "best_performers_research_window" in prompts[0]
    assert "out_of_sample" not in prompts[0] and "oos" not in prompts[0].lower()

    with duckdb.connect(database, read_only=True) as connection:
        proposals = connection.execute(
            "SELECT source, status, reason, name FROM research.designs ORDER BY proposal_id"
        ).fetchall()
        registered = connection.execute(
            "SELECT strategy_id, name, origin, parent, status FROM research.strategies WHERE origin = 'designed'"
        ).fetchall()
        trials = connection.execute("SELECT kind, source, name, registered, oos_series FROM research.trials").fetchall()
    reasons = sorted((status, reason) for _, status, reason, _ in proposals)
    assert len(proposals) == 4 and {source for source, *_ in proposals} == {"llm"}
    assert reasons[0][0] == "registered" and reasons[0][1].startswith("new strategy: 2 rule nodes, 3 combinations")
    rejected = [reason for status, reason in reasons if status == "rejected"]
    assert any(r.startswith("invalid answer: no JSON object in the answer") for r in rejected)
    assert any(r.startswith("invalid spec: entry.cross_above.b.indicator: Input should be 'ema'") for r in rejected)
    assert any(
        r.startswith(f"duplicate of ema_cross ({ids['ema_cross']}, active): same content hash") for r in rejected
    )
    valid_id = strategy_id(load_spec(VALID))
    assert registered == [(valid_id, "ema_over_sma_trend", "designed", ids["ema_cross"], "active")]
    assert trials == [("designed", "llm", "ema_over_sma_trend", True, 2)]


@pytest.mark.slow
def test_without_a_key_the_offline_designer_registers_through_the_same_screen(tmp_path):
    database = str(tmp_path / "tracer.duckdb")
    write_research_inputs(database)
    result = materialize_designs(tmp_path, database, AnthropicResource(api_key=None), TRACER_DESIGN_PROPOSALS="2")
    assert result.success
    with duckdb.connect(database, read_only=True) as connection:
        proposals = connection.execute("SELECT source, status, reason, parents FROM research.designs").fetchall()
        designed = connection.execute(
            "SELECT name, parent, spec FROM research.strategies WHERE origin = 'designed'"
        ).fetchall()
        trials = connection.execute("SELECT count(*) FROM research.trials WHERE kind = 'designed'").fetchall()[0][0]
    assert {source for source, *_ in proposals} == {"offline"}
    assert len(designed) == 2 == trials  # it stops once it has the number asked for
    assert sum(status == "registered" for _, status, _, _ in proposals) == 2
    for name, parent, spec in designed:
        assert load_spec(spec).name == name and parent  # valid, with its parent(s)
    # Every rejection says why.
    assert all(reason for _, status, reason, _ in proposals if status == "rejected")


def test_offline_candidates_are_deterministic_and_change_when_the_parents_do():
    parents = [(strategy_id(spec), spec) for spec in builtin_specs()[:4]]
    first = design.offline_candidates(parents, 8, seed=7)
    assert first == design.offline_candidates(parents, 8, seed=7)
    assert [c.data for c in first] != [c.data for c in design.offline_candidates(parents, 8, seed=8)]
    assert [c.data for c in first] != [c.data for c in design.offline_candidates(parents[:3], 8, seed=7)]
    for candidate in first:
        assert candidate.source == "offline" and set(candidate.parents) <= {sid for sid, _ in parents}
        assert candidate.data["name"].startswith(tuple(spec.name for _, spec in parents))


def screen_of(series, max_correlation=0.9) -> design.Screen:
    specs = {strategy_id(spec): spec for spec in builtin_specs()}
    registry = {sid: {"name": spec.name, "status": "active", "spec": spec} for sid, spec in specs.items()}
    return design.Screen(registry, dict(specs), series, max_correlation)


def test_the_screen_refuses_with_a_reason_naming_what_was_wrong():
    series = bundled_series()
    screen = screen_of(series)
    ema_cross_id = strategy_id(builtin_spec("ema_cross"))

    def verdict(data, parents=()):
        return screen.check(design.Candidate("llm", data, tuple(parents)))

    def changed(**fields):
        return {**json.loads(json.dumps(VALID)), **fields}

    too_deep = changed(entry={"all": [VALID["entry"]] + [{"compare": {"left": "close", "op": ">", "right": i}}
                                                          for i in range(16)]})  # fmt: skip
    # all + cross_above + 16 compares in the entry, cross_below in the exit
    assert verdict(too_deep).reason == f"too complex: 19 rule nodes, at most {design.MAX_DESIGN_NODES}"
    wide = changed(parameters={"fast": {"default": 12, "low": 2, "high": 500, "step": 1}})
    assert verdict(wide).reason.startswith("too complex: ")
    assert verdict(changed(timeframe="4h")).reason == "timeframe 4h has no candles (available: 1h)"
    assert verdict(VALID, ["0123456789abcdef"]).reason == "unknown parent strategy id '0123456789abcdef'"
    assert verdict(changed(name="ema_cross")).reason == f"name 'ema_cross' is taken by strategy {ema_cross_id}"
    never = changed(entry={"compare": {"left": "close", "op": "<", "right": 1}}, parameters={})
    assert verdict(never).reason == "never enters on the research window of BTC/USDT 1h"
    # The same entries as ema_cross under another exit: a near-copy.
    copy = json.loads(builtin_spec("ema_cross").canonical_json()) | {"name": "ema_cross_tight", "stop_loss": 0.01}
    assert verdict(copy).reason.startswith(f"entries correlate 1.000 with ema_cross ({ema_cross_id}) on BTC/USDT 1h")
    assert verdict(None).reason == "no spec in the answer"
    accepted = verdict(VALID)
    assert accepted.status == design.REGISTERED
    # Registered once: the second time it is a duplicate of itself.
    assert verdict(VALID).reason.startswith(f"duplicate of ema_over_sma_trend ({accepted.strategy_id}, active)")


def test_screened_entries_only_look_at_the_research_window():
    series = bundled_series()
    window = research_slice(series[("BTC/USDT", "1h")])
    assert window.height == 2 * (series[("BTC/USDT", "1h")].height // 6)
    screen = screen_of(series)
    entries = screen.entries("x", load_spec(VALID), ("BTC/USDT", "1h"))
    assert entries.shape == (window.height,)


def test_widened_ranges_stay_valid_hold_the_default_and_fit_the_grid_cap():
    for spec in builtin_specs():
        wider = tuning.widened(spec)
        for name, parameter in spec.parameters.items():
            new = wider.parameters[name]
            assert new.low <= parameter.low and new.high >= parameter.high, (spec.name, name)
            assert new.low <= new.default <= new.high
        from tracer_assets.research.rules import param_grid

        assert len(param_grid(wider)) <= tuning.MAX_TUNE_COMBINATIONS
    ema = tuning.widened(builtin_spec("ema_cross"))
    assert (ema.parameters["fast"].low, ema.parameters["fast"].high) == (5, 25)  # 5..20 doubled, windows >= 1


def tuning_inputs(parent_score: float) -> ResearchInputs:
    parent = builtin_spec("sma_cross")
    sid = strategy_id(parent)
    registry = {sid: {"name": parent.name, "status": "active", "origin": "builtin", "spec": parent}}
    ranking = pl.DataFrame({"item_id": [sid], "rank": [1], "score": [parent_score], "status": ["kept"]})
    return ResearchInputs(registry, ranking, bundled_series())


def test_a_tuned_variant_is_registered_only_when_it_beats_its_parent_out_of_sample():
    settings = load_settings({"TRACER_TUNE_STRATEGIES": "1"})
    parent_id = strategy_id(builtin_spec("sma_cross"))
    beaten = run_tuning(tuning_inputs(parent_score=-1e9), settings, "run-a", lambda message: None)
    unbeaten = run_tuning(tuning_inputs(parent_score=1e9), settings, "run-b", lambda message: None)

    [row] = beaten.own.to_dicts()
    assert row["registered"] and row["parent_id"] == parent_id
    assert row["reason"] == f"out-of-sample score {row['oos_score']:.4f} beats the parent's -1000000000.0000"
    [strategy] = beaten.strategies.to_dicts()
    assert strategy["origin"] == "tuned" and strategy["parent"] == parent_id
    assert strategy["strategy_id"] == row["variant_id"] and strategy["name"].startswith("sma_cross-tuned-")

    [row] = unbeaten.own.to_dicts()
    assert not row["registered"] and unbeaten.strategies.is_empty()
    assert row["reason"] == f"out-of-sample score {row['oos_score']:.4f} does not beat the parent's 1000000000.0000"
    # Both are trials, registered or not: the count the deflated Sharpe ratio corrects for.
    for outcome, registered in ((beaten, True), (unbeaten, False)):
        [trial] = outcome.trials.to_dicts()
        assert trial["kind"] == "tuned" and trial["registered"] is registered
        assert trial["combinations"] == row["combinations"] > 16  # the widened grid, not the parent's 16
        assert trial["oos_series"] == 2 and trial["bar_count"] > 1000


def test_research_inputs_read_back_what_was_written(tmp_path):
    database = str(tmp_path / "tracer.duckdb")
    ids = write_research_inputs(database)
    with duckdb.connect(database) as connection:
        inputs = read_research_inputs(connection, ("1h",))
    assert set(inputs.registry) == set(ids.values()) and inputs.ranking.is_empty()
    assert sorted(inputs.series) == [(s, "1h") for s in SYMBOLS]
    assert inputs.series[("BTC/USDT", "1h")].columns == ["ts", "open", "high", "low", "close", "volume"]
