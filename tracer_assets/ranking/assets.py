"""ranking/strategies, ranking/models and ranking/ensembles: each ranks its kind, keeps the best,
archives the rest with a reason (retention.py), and appends every verdict to
ranking.ranking_history in the same transaction that replaces its own table. Strategies and
models are ranked globally; ensembles within their model timeframe (each timeframe needs its
own predictor, and ranked globally by accuracy only the slow timeframes' near-majority stackers
would be kept)."""

from datetime import UTC, datetime

import dagster as dg
import polars as pl

from tracer_assets.metadata import markdown_table
from tracer_assets.ml.keys import ENSEMBLES_KEY, ENSEMBLES_TABLE, MODELS_KEY, MODELS_TABLE
from tracer_assets.policies import DAILY_FRESHNESS, DUCKDB_POOL
from tracer_assets.ranking.keys import (
    ENSEMBLE_RANKING_KEY,
    ENSEMBLE_RANKING_TABLE,
    HISTORY_SEED_VIEW,
    HISTORY_TABLE,
    MODEL_RANKING_KEY,
    MODEL_RANKING_TABLE,
    STRATEGY_RANKING_KEY,
    STRATEGY_RANKING_TABLE,
)
from tracer_assets.ranking.retention import ARCHIVED, RESTORED, rank_and_retain, rank_and_retain_within
from tracer_assets.research.keys import BACKTESTS_KEY, BACKTESTS_TABLE
from tracer_assets.resources.warehouse import TracerDuckDB
from tracer_assets.settings import Settings
from tracer_assets.tables import create_alias_view, ensure_table, table_exists, transaction


def build_ranking_assets(settings: Settings) -> list[dg.AssetsDefinition]:
    ranking = settings.ranking

    def ranking_asset(key, table, source_key, source_table, kind, what, keep, scores_sql, within=None):
        """`scores_sql` selects (item id, name, score, group): the group (`within` names it, e.g.
        "model timeframe") the item is ranked in, NULL for every item when ranked globally."""
        if within is None:
            how = (
                f"Every {kind} ranked by {what} (ties by id): the top {keep} kept, the rest archived with their rank, "
                f"score and the cutoff, an archived one restored when it climbs back, never fewer than "
                f"{ranking.min_kept} kept."
            )
        else:
            how = (
                f"Every {kind} ranked by {what} within its {within} (ties by id): the top {keep} of each {within} "
                f"kept, the rest archived with their rank in the {within}, score and the cutoff, an archived one "
                f"restored when it climbs back, never fewer than {ranking.min_kept} kept per {within}."
            )

        @dg.asset(
            key=key,
            deps=[source_key],
            description=f"{how} Each run also appends every verdict to {HISTORY_TABLE}.",
            pool=DUCKDB_POOL,
            group_name="ranking",
            kinds={"duckdb"},
            freshness_policy=DAILY_FRESHNESS,
        )
        def rank(context: dg.AssetExecutionContext, duckdb: TracerDuckDB):
            with duckdb.get_connection() as connection:
                if not table_exists(connection, source_table):
                    raise dg.Failure(f"{source_table} does not exist: materialize {source_key.to_user_string()} first")
                rows = connection.execute(scores_sql).fetchall()
                archived = set()
                if table_exists(connection, table):
                    archived = {
                        r[0]
                        for r in connection.execute(
                            f"SELECT item_id FROM {table} WHERE status = ?", [ARCHIVED]
                        ).fetchall()
                    }
                names = {item_id: name for item_id, name, _, _ in rows}
                if within is None:
                    scores = [(item_id, score) for item_id, _, score, _ in rows]
                    verdicts = rank_and_retain(scores, archived, keep, ranking.min_kept, what)
                else:
                    scores = [(item_id, group, score) for item_id, _, score, group in rows]
                    verdicts = rank_and_retain_within(scores, archived, keep, ranking.min_kept, what)
                now = datetime.now(UTC)
                frame = pl.DataFrame(
                    [
                        {
                            "item_id": v.item_id,
                            "name": names[v.item_id],
                            "ranked_within": v.group,
                            "rank": v.rank,
                            "score": v.score,
                            "status": ARCHIVED if not v.kept else "kept",
                            "decision": v.decision,
                            "reason": v.reason,
                            "run_id": context.run.run_id,
                            "ranked_at": now,
                        }
                        for v in verdicts
                    ],
                    schema={
                        "item_id": pl.String, "name": pl.String, "ranked_within": pl.String, "rank": pl.Int64,
                        "score": pl.Float64,
                        "status": pl.String, "decision": pl.String, "reason": pl.String, "run_id": pl.String,
                        "ranked_at": pl.Datetime("us", "UTC"),
                    },
                )  # fmt: skip
                history = frame.with_columns(pl.lit(kind).alias("kind"))
                ensure_table(connection, table, frame)
                ensure_table(connection, HISTORY_TABLE, history)
                with transaction(connection):
                    connection.register("verdicts", frame.to_arrow())
                    connection.execute(f"DELETE FROM {table}")
                    connection.execute(f"INSERT INTO {table} BY NAME SELECT * FROM verdicts")
                    connection.register("verdict_history", history.to_arrow())
                    connection.execute(f"INSERT INTO {HISTORY_TABLE} BY NAME SELECT * FROM verdict_history")
                    create_alias_view(connection, HISTORY_SEED_VIEW, HISTORY_TABLE)
                history_rows = connection.execute(f"SELECT count(*) FROM {HISTORY_TABLE}").fetchall()[0][0]
            counts = frame.group_by("decision").len()
            by_decision = dict(counts.rows())
            return dg.MaterializeResult(
                metadata={
                    "dagster/row_count": frame.height,
                    "kept": frame.filter(pl.col("status") == "kept").height,
                    "archived": by_decision.get(ARCHIVED, 0),
                    "restored": by_decision.get(RESTORED, 0),
                    "history_rows": int(history_rows),
                    "ranking": dg.MetadataValue.md(
                        markdown_table(frame.select("rank", "name", "score", "decision", "reason"), "{:.4g}")
                    ),
                }
            )

        return rank

    return [
        ranking_asset(
            STRATEGY_RANKING_KEY, STRATEGY_RANKING_TABLE, BACKTESTS_KEY, BACKTESTS_TABLE, "strategy",
            "mean out-of-sample score", ranking.keep_strategies,
            f"""SELECT strategy_id, any_value(name), avg(score) FILTER (WHERE isfinite(score)), NULL
                FROM {BACKTESTS_TABLE} WHERE "window" = 'out_of_sample' GROUP BY strategy_id""",
        ),
        ranking_asset(
            MODEL_RANKING_KEY, MODEL_RANKING_TABLE, MODELS_KEY, MODELS_TABLE, "model",
            "out-of-sample F1 macro", ranking.keep_models,
            f"SELECT model_id, model_id, f1_macro, NULL FROM {MODELS_TABLE}",
        ),
        ranking_asset(
            ENSEMBLE_RANKING_KEY, ENSEMBLE_RANKING_TABLE, ENSEMBLES_KEY, ENSEMBLES_TABLE, "ensemble",
            "out-of-sample accuracy", ranking.keep_ensembles,
            f"SELECT ensemble_id, ensemble_id, accuracy, timeframe FROM {ENSEMBLES_TABLE}", "model timeframe",
        ),
    ]  # fmt: skip
