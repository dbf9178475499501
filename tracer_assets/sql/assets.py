"""Each dbt_like_sql model becomes one asset; its deps are the refs in its SQL."""

from datetime import UTC, datetime

import dagster as dg

from tracer_assets.checks import check_result
from tracer_assets.market.checks import CHECK_DESCRIPTIONS, candle_checks
from tracer_assets.market.timeframes import timeframe_seconds
from tracer_assets.policies import DUCKDB_POOL, SINGLE_RUN_BACKFILL, loop_freshness
from tracer_assets.resources.warehouse import TracerDuckDB
from tracer_assets.settings import Settings
from tracer_assets.sql.models import (
    SqlModel,
    load_models,
    materialize_statements,
    render_model,
    template_variables,
)
from tracer_assets.tables import transaction

# The checks a candle-shaped incremental model gets, like market/candles.
CANDLE_TABLE_CHECKS = ("no_duplicate_keys", "monotonic_time", "sane_ohlc")


def sql_variables(settings: Settings) -> dict:
    return template_variables(
        settings.market.base_timeframe,
        timeframe_seconds(settings.market.base_timeframe),
        [(tf, timeframe_seconds(tf)) for tf in settings.market.timeframes],
    )


def _sql_literal(moment) -> str:
    return f"'{moment.astimezone(UTC).isoformat()}'::TIMESTAMPTZ"


def _is_candle_shaped(model: SqlModel) -> bool:
    return model.materialized == "incremental" and model.config.get("time_column") == "ts" and model.key[0] == "market"


def build_sql_asset(
    model: SqlModel, settings: Settings, partitions: dg.PartitionsDefinition, partitioned_keys: set[tuple[str, ...]]
) -> dg.AssetsDefinition:
    variables = sql_variables(settings)
    key = dg.AssetKey(list(model.key))
    incremental = model.materialized == "incremental"
    if incremental and model.refs[0] not in partitioned_keys:
        raise ValueError(f"{model.path}: an incremental model must ref a daily-partitioned asset first")
    checks = CANDLE_TABLE_CHECKS if _is_candle_shaped(model) else ()

    @dg.asset(
        key=key,
        deps=[dg.AssetKey(list(ref)) for ref in model.refs],
        description=model.description or f"SQL model {model.path.name}",
        partitions_def=partitions if incremental else None,
        backfill_policy=SINGLE_RUN_BACKFILL if incremental else None,
        pool=DUCKDB_POOL,
        freshness_policy=loop_freshness(settings) if incremental else None,
        code_version=model.code_version,
        group_name=model.key[0],
        kinds={"duckdb", "sql"},
        metadata={
            "sql_file": str(model.path),
            "materialized": model.materialized,
            "sql": dg.MetadataValue.md(f"```sql\n{model.source.strip()}\n```"),
        },
        check_specs=[
            dg.AssetCheckSpec(name, asset=key, blocking=True, description=CHECK_DESCRIPTIONS[name]) for name in checks
        ],
    )
    def sql_model(context: dg.AssetExecutionContext, duckdb: TracerDuckDB):
        window = None
        if incremental:
            time_window = context.partition_time_window
            window = (_sql_literal(time_window.start), _sql_literal(time_window.end))
        sql = render_model(model, variables, window)
        with duckdb.get_connection() as connection:
            # DDL outside the write transaction (see tables.ensure_table for why).
            for statement in materialize_statements(model, sql):
                connection.execute(statement)
            if incremental:
                column = model.config["time_column"]
                with transaction(connection):
                    connection.execute(
                        f"DELETE FROM {model.table} WHERE {column} >= {window[0]} AND {column} < {window[1]}"
                    )
                    connection.execute(f"INSERT INTO {model.table} BY NAME {sql}")
            metadata: dict = {"table": model.table}
            where = (
                f"WHERE {model.config['time_column']} >= {window[0]} AND {model.config['time_column']} < {window[1]}"
                if incremental
                else ""
            )
            if incremental and "timeframe" in _columns(connection, model.table):
                counts = connection.execute(
                    f"SELECT timeframe, count(*) FROM {model.table} {where} GROUP BY 1 ORDER BY min(ts), 1"
                ).fetchall()
                metadata["rows_per_timeframe"] = dict(counts)
            metadata["dagster/row_count"] = connection.execute(
                f"SELECT count(*) FROM {model.table} {where}"
            ).fetchall()[0][0]
            results = []
            if checks:
                start, end = context.partition_time_window
                now = datetime.now(UTC)
                results = [check_result(o, key) for o in candle_checks(connection, model.table, start, end, now)]
        return dg.MaterializeResult(metadata=metadata, check_results=results)

    return sql_model


def _columns(connection, table: str) -> list[str]:
    schema, name = table.split(".")
    return [
        row[0]
        for row in connection.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = ? AND table_name = ?",
            [schema, name],
        ).fetchall()
    ]


def build_sql_assets(
    settings: Settings, partitions: dg.PartitionsDefinition, partitioned_keys: set[tuple[str, ...]]
) -> list[dg.AssetsDefinition]:
    models = load_models(settings.sql_dir, sql_variables(settings))
    incremental_keys = {m.key for m in models if m.materialized == "incremental"}
    return [build_sql_asset(m, settings, partitions, partitioned_keys | incremental_keys) for m in models]
