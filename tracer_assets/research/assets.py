"""research/strategies (the spec registry) and research/backtests + research/equity_curves
(every active strategy x symbol x timeframe, walk-forward), plus the macro orchestrator's
backtest_results.json."""

import time
from datetime import UTC, datetime

import dagster as dg
import polars as pl

from tracer_assets.market.keys import OHLCV_KEY
from tracer_assets.policies import DAILY_FRESHNESS, DUCKDB_POOL, STEP_VALUES_IO
from tracer_assets.research.backtest import backtest_strategy
from tracer_assets.research.engine import FillRules
from tracer_assets.research.keys import (
    BACKTESTS_KEY,
    BACKTESTS_SEED_VIEW,
    BACKTESTS_TABLE,
    EQUITY_KEY,
    EQUITY_TABLE,
    STRATEGIES_KEY,
)
from tracer_assets.research.macro import write_backtest_results
from tracer_assets.research.metrics import METRIC_COLUMNS
from tracer_assets.research.registry import STRATEGY_COLUMNS, sync_builtins
from tracer_assets.research.spec import builtin_specs, load_spec
from tracer_assets.resources.warehouse import TracerDuckDB
from tracer_assets.settings import Settings
from tracer_assets.tables import replace_table, transaction
from tracer_assets.ui_tables import COLUMN_SCHEMA, column_schema, descriptions_of, frame_table

STRATEGIES_DDL = """CREATE TABLE IF NOT EXISTS research.strategies (
    strategy_id VARCHAR PRIMARY KEY, name VARCHAR, version INTEGER, spec VARCHAR, content_hash VARCHAR,
    origin VARCHAR, parent VARCHAR, status VARCHAR, status_reason VARCHAR, created_at TIMESTAMPTZ,
    updated_at TIMESTAMPTZ)"""

# research.backtests, every column (name, DuckDB type, description); the metrics' definitions are
# research/metrics.py's (docs/backtesting.md).
BACKTESTS_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("strategy_id", "VARCHAR", "The strategy (research.strategies)"),
    ("name", "VARCHAR", "The strategy's name"),
    ("symbol", "VARCHAR", "Spot symbol, e.g. BTC/USDT"),
    ("timeframe", "VARCHAR", "Candle timeframe backtested"),
    ("window", "VARCHAR", "full (default parameters, whole history) or out_of_sample (walk-forward)"),
    ("parameters", "VARCHAR", "The parameters used, JSON"),
    ("total_return", "DOUBLE", "Final equity - 1 (equity starts at 1.0)"),
    ("pnl", "DOUBLE", "Initial capital (10,000 quote) x total_return"),
    ("win_rate", "DOUBLE", "Trades with pnl > 0 / trades; empty without trades"),
    ("trades", "BIGINT", "Closed trades"),
    ("sharpe", "DOUBLE", "Annualized Sharpe ratio of the bar returns; 0 without variance"),
    ("sortino", "DOUBLE", "Annualized Sortino ratio; empty when no return is negative"),
    ("max_drawdown", "DOUBLE", "Largest fall of the close-marked equity from its peak, a fraction (0.25 = 25%)"),
    ("profit_factor", "DOUBLE", "Winning pnl / losing pnl; empty without a losing trade"),
    ("exposure", "DOUBLE", "Share of bars with a position held"),
    ("expectancy", "DOUBLE", "Mean trade return after fees; empty without trades"),
    ("score", "DOUBLE", "The ranking figure: sharpe x min(1, trades / 30) - 2 x max_drawdown"),
    ("computed_at", "TIMESTAMP WITH TIME ZONE", "When the backtests ran (UTC)"),
)
BEST_SHOWN = ("name", "symbol", "timeframe", "score", "total_return", "sharpe", "win_rate", "max_drawdown", "trades")


def build_research_assets(settings: Settings) -> list[dg.AssetsDefinition]:
    timeframes = settings.market.all_timeframes

    @dg.asset(
        key=STRATEGIES_KEY,
        description=(
            "Every strategy spec (schema-validated JSON, docs/strategies.md) with its content hash, version, "
            "origin (builtin, designed, tuned), parent, status (active, archived) and the reason for its status."
        ),
        pool=DUCKDB_POOL,
        group_name="research",
        kinds={"duckdb"},
        freshness_policy=DAILY_FRESHNESS,
    )
    def strategies(context: dg.AssetExecutionContext, duckdb: TracerDuckDB):
        now = datetime.now(UTC)
        with duckdb.get_connection() as connection:
            connection.execute("CREATE SCHEMA IF NOT EXISTS research")
            connection.execute(STRATEGIES_DDL)
            stored = connection.sql(f"SELECT {', '.join(STRATEGY_COLUMNS)} FROM research.strategies").pl().to_dicts()
            inserts, updates = sync_builtins(stored, builtin_specs(), now)
            with transaction(connection):
                if inserts:
                    connection.executemany(
                        f"INSERT INTO research.strategies ({', '.join(STRATEGY_COLUMNS)}) "
                        f"VALUES ({', '.join('?' * len(STRATEGY_COLUMNS))})",
                        [[row[c] for c in STRATEGY_COLUMNS] for row in inserts],
                    )
                for update in updates:
                    connection.execute(
                        "UPDATE research.strategies SET status = ?, status_reason = ?, updated_at = ? "
                        "WHERE strategy_id = ?",
                        [update["status"], update["status_reason"], update["updated_at"], update["strategy_id"]],
                    )
            counts = dict(connection.execute("SELECT status, count(*) FROM research.strategies GROUP BY 1").fetchall())
        return dg.MaterializeResult(
            metadata={
                "inserted": len(inserts),
                "archived": len(updates),
                "active": counts.get("active", 0),
                "dagster/row_count": sum(counts.values()),
            }
        )

    @dg.op(
        pool=DUCKDB_POOL,
        ins={"strategies": dg.In(dg.Nothing), "ohlcv": dg.In(dg.Nothing)},
        out=dg.Out(io_manager_key=STEP_VALUES_IO),
    )
    def research_read_for_backtests(duckdb: TracerDuckDB) -> tuple[list, dict]:
        """The active specs and the candles of every timeframe (short, in the pool)."""
        with duckdb.get_connection() as connection:
            specs = [
                (sid, spec)
                for sid, spec in connection.execute(
                    "SELECT strategy_id, spec FROM research.strategies WHERE status = 'active' ORDER BY name"
                ).fetchall()
            ]
            candles = {
                tf: connection.sql(
                    "SELECT symbol, ts, open, high, low, close, volume FROM market.ohlcv "
                    "WHERE timeframe = ? ORDER BY symbol, ts",
                    params=[tf],
                ).pl()
                for tf in timeframes
            }
        return specs, candles

    @dg.op(out=dg.Out(io_manager_key=STEP_VALUES_IO))
    def research_backtest(context: dg.OpExecutionContext, inputs: tuple[list, dict]) -> dict:
        """Every active strategy x symbol x timeframe (outside the pool: this is the long part)."""
        stored, candles = inputs
        specs = [(sid, load_spec(spec)) for sid, spec in stored]
        rules = FillRules(fee=settings.research.backtest_fee, slippage_bps=settings.research.backtest_slippage_bps)
        if not specs:
            raise dg.Failure("research.strategies has no active strategy: materialize research/strategies first")
        total, done, began = len(specs) * len(settings.market.symbols) * len(timeframes), 0, time.perf_counter()
        rows, curves = [], []
        for symbol in settings.market.symbols:
            for tf in timeframes:
                series = candles[tf].filter(pl.col("symbol") == symbol)
                if series.is_empty():
                    continue
                for sid, spec in specs:
                    result = backtest_strategy(spec, series, tf, rules)
                    keys = [
                        pl.lit(sid).alias("strategy_id"),
                        pl.lit(spec.name).alias("name"),
                        pl.lit(symbol).alias("symbol"),
                        pl.lit(tf).alias("timeframe"),
                    ]
                    rows.append(result.rows.with_columns(keys))
                    curves.append(result.equity.with_columns(keys))
                    done += 1
                context.log.info(
                    f"[{done}/{total}] {symbol} {tf}: {len(specs)} strategies, {series.height} bars "
                    f"({time.perf_counter() - began:.1f} s)"
                )
        if not rows:
            raise dg.Failure("market.ohlcv has no candles of the configured symbols: materialize market data first")
        table = pl.concat(rows).with_columns(pl.lit(datetime.now(UTC)).alias("computed_at"))
        table = table.select(
            "strategy_id", "name", "symbol", "timeframe", "window", "parameters", *METRIC_COLUMNS, "computed_at"
        )
        return {"table": table, "equity": pl.concat(curves), "backtests": done, "seconds": time.perf_counter() - began}

    @dg.op(pool=DUCKDB_POOL, out={"backtests": dg.Out(dg.Nothing), "equity_curves": dg.Out(dg.Nothing)})
    def research_write_backtests(context: dg.OpExecutionContext, duckdb: TracerDuckDB, computed: dict):
        """Both tables and the seed's view in one transaction (short, in the pool)."""
        table, equity = computed["table"], computed["equity"]
        with duckdb.get_connection() as connection:
            replace_table(
                connection,
                [(BACKTESTS_TABLE, table), (EQUITY_TABLE, equity)],
                alias_views=[(BACKTESTS_SEED_VIEW, BACKTESTS_TABLE)],
            )
        oos = table.filter(pl.col("window") == "out_of_sample")
        exported = oos.select(
            (pl.col("name") + ":" + pl.col("symbol")).alias("variant"),
            "timeframe",
            "pnl",
            "win_rate",
            "trades",
            "max_drawdown",
        )
        write_backtest_results(settings.research.backtest_json_path, exported)
        best = oos.sort("score", descending=True, nulls_last=True).head(10).select(BEST_SHOWN)
        context.add_output_metadata(
            {
                "dagster/row_count": table.height,
                "backtests": computed["backtests"],
                "seconds": round(computed["seconds"], 2),
                "backtest_results_json": str(settings.research.backtest_json_path),
                "best_out_of_sample": frame_table(best, descriptions_of(BACKTESTS_COLUMNS), float_places=4),
            },
            output_name="backtests",
        )
        context.add_output_metadata({"dagster/row_count": equity.height}, output_name="equity_curves")

    @dg.graph_multi_asset(
        outs={
            "backtests": dg.AssetOut(
                key=BACKTESTS_KEY,
                dagster_type=dg.Nothing,
                kinds={"duckdb"},
                description=(
                    "Every active strategy x symbol x timeframe: the full run at default parameters, and a rolling "
                    "walk-forward (parameters chosen in sample, measured out of sample). Metrics and the ranking "
                    "score in docs/backtesting.md; the score that ranks is the out_of_sample row's. Also written "
                    "to MACRO_BACKTEST_JSON_PATH in the macro orchestrator's shape."
                ),
                metadata={COLUMN_SCHEMA: column_schema(BACKTESTS_COLUMNS)},
            ),
            "equity_curves": dg.AssetOut(
                key=EQUITY_KEY,
                dagster_type=dg.Nothing,
                kinds={"duckdb"},
                description="Equity (starting at 1.0) of each full backtest, at most 500 points per curve.",
            ),
        },
        ins={
            "strategies": dg.AssetIn(key=STRATEGIES_KEY, dagster_type=dg.Nothing),
            "ohlcv": dg.AssetIn(key=OHLCV_KEY, dagster_type=dg.Nothing),
        },
        group_name="research",
        name="backtests",
    )
    def backtests(strategies, ohlcv):
        written, curves = research_write_backtests(
            research_backtest(research_read_for_backtests(strategies=strategies, ohlcv=ohlcv))
        )
        return {"backtests": written, "equity_curves": curves}

    # Graph assets drop a freshness policy given to their outs (Dagster 1.13): set it on the spec.
    backtests = backtests.map_asset_specs(
        lambda spec: spec.replace_attributes(freshness_policy=DAILY_FRESHNESS) if spec.key == BACKTESTS_KEY else spec
    )

    return [strategies, backtests]
