"""research/designs and research/tuning: new strategies from the designer and the tuner.

Each is a graph of three steps, like the ML training: a short read in the `duckdb` pool, the
work outside it (LLM calls, backtests), a short write in it (one transaction). Both register
what they accept in research.strategies (origin `designed` or `tuned`, with the parent ids)
and append every trial to research.trials; research/backtests and ranking/strategies measure
and rank the new strategies in the next run. The work is design_runs.py's; docs/research.md
has the rules.
"""

import dagster as dg

from tracer_assets.llm.resource import AnthropicResource
from tracer_assets.market.keys import OHLCV_KEY
from tracer_assets.metadata import markdown_table
from tracer_assets.policies import DAILY_FRESHNESS, DUCKDB_POOL, STEP_VALUES_IO
from tracer_assets.ranking.keys import STRATEGY_RANKING_KEY
from tracer_assets.research.design_runs import (
    Outcome,
    ResearchInputs,
    read_research_inputs,
    run_design,
    run_tuning,
    write_outcome,
)
from tracer_assets.research.keys import (
    BACKTESTS_KEY,
    DESIGNS_KEY,
    DESIGNS_TABLE,
    STRATEGIES_KEY,
    STRATEGIES_TABLE,
    TRIALS_TABLE,
    TUNING_KEY,
    TUNING_TABLE,
)
from tracer_assets.resources.warehouse import TracerDuckDB
from tracer_assets.settings import Settings
from tracer_assets.tables import table_exists

UPSTREAM = {
    "strategies": STRATEGIES_KEY,
    "backtests": BACKTESTS_KEY,
    "ranking": STRATEGY_RANKING_KEY,
    "ohlcv": OHLCV_KEY,
}


def build_design_assets(settings: Settings) -> list[dg.AssetsDefinition]:
    timeframes = settings.market.all_timeframes

    def research_graph(key, table, name, description, work):
        @dg.op(
            name=f"research_read_for_{name}",
            pool=DUCKDB_POOL,
            ins={name: dg.In(dg.Nothing) for name in UPSTREAM},
            out=dg.Out(io_manager_key=STEP_VALUES_IO),
        )
        def read(duckdb: TracerDuckDB) -> ResearchInputs:
            with duckdb.get_connection() as connection:
                if not table_exists(connection, STRATEGIES_TABLE):
                    raise dg.Failure(f"{STRATEGIES_TABLE} does not exist: materialize research/strategies first")
                return read_research_inputs(connection, timeframes)

        @dg.op(name=f"research_{name}", out=dg.Out(io_manager_key=STEP_VALUES_IO))
        def compute(context: dg.OpExecutionContext, inputs: ResearchInputs, llm_research: AnthropicResource) -> Outcome:
            return work(context, inputs, llm_research)

        @dg.op(name=f"research_write_{name}", pool=DUCKDB_POOL, out=dg.Out(dg.Nothing))
        def write(context: dg.OpExecutionContext, duckdb: TracerDuckDB, outcome: Outcome):
            with duckdb.get_connection() as connection:
                write_outcome(connection, table, outcome)
            registered = outcome.strategies.select("strategy_id", "name", "origin", "parent", "status_reason")
            context.add_output_metadata(
                {
                    "dagster/row_count": outcome.own.height,
                    "registered": outcome.strategies.height,
                    "retired": len(outcome.retired),
                    "trials": outcome.trials.height,
                    "seconds": round(outcome.seconds, 1),
                    "outcome": dg.MetadataValue.md(markdown_table(outcome.own.drop("run_id", "created_at"), "{:.4g}")),
                    "registered_strategies": dg.MetadataValue.md(markdown_table(registered)),
                }
            )

        @dg.graph_asset(
            key=key,
            ins={name: dg.AssetIn(key=k, dagster_type=dg.Nothing) for name, k in UPSTREAM.items()},
            group_name="research",
            kinds={"duckdb"},
            description=description,
        )
        def research_asset(strategies, backtests, ranking, ohlcv):
            return write(compute(read(strategies=strategies, backtests=backtests, ranking=ranking, ohlcv=ohlcv)))

        # graph assets drop a freshness policy given to the decorator (Dagster 1.13): set it on the spec.
        return research_asset.map_asset_specs(lambda spec: spec.replace_attributes(freshness_policy=DAILY_FRESHNESS))

    def designs(context, inputs, llm_research):
        asker = llm_research if llm_research.api_key else None
        return run_design(inputs, settings, asker, context.run.run_id, context.log.info)

    def tunes(context, inputs, llm_research):
        return run_tuning(inputs, settings, context.run.run_id, context.log.info)

    return [
        research_graph(
            DESIGNS_KEY, DESIGNS_TABLE, "designs",
            "New strategy specs from Claude (with ANTHROPIC_API_KEY) or from seeded mutation and crossover of the "
            "best performers (without): every proposal screened (schema, complexity, hash, entry correlation) and "
            f"stored with its verdict in {DESIGNS_TABLE}; the registered ones join research.strategies (origin "
            f"designed) and every evaluated one is a row of {TRIALS_TABLE}.",
            designs,
        ),
        research_graph(
            TUNING_KEY, TUNING_TABLE, "tuning",
            "The bottom-ranked strategies swept over widened parameter ranges on the research windows; a variant "
            "joins research.strategies (origin tuned) only when its out-of-sample score beats its parent's. One "
            f"row per parent in {TUNING_TABLE}; every variant is a row of {TRIALS_TABLE}.",
            tunes,
        ),
    ]  # fmt: skip
