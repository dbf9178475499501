"""What the daily report reads from DuckDB, as plain frames and dicts (no Dagster).

Every reader tolerates a table that does not exist yet (a first day, a step that never ran):
the report then says there is nothing, it does not fail.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import polars as pl

from tracer_assets.market.keys import CANDLES_TABLE, GAPS_TABLE
from tracer_assets.ml.keys import MODEL_RESULTS_TABLE
from tracer_assets.ranking.keys import (
    ENSEMBLE_RANKING_TABLE,
    HISTORY_TABLE,
    MODEL_RANKING_TABLE,
    STRATEGY_RANKING_TABLE,
)
from tracer_assets.research.keys import DESIGNS_TABLE, EQUITY_TABLE, TRIALS_TABLE, TUNING_TABLE
from tracer_assets.research.selection import ReturnStats, deflated_sharpe, trial_sharpe_variance
from tracer_assets.tables import table_columns, table_exists
from tracer_assets.trading.keys import PORTFOLIO_TABLE

RANKINGS = {"strategies": STRATEGY_RANKING_TABLE, "models": MODEL_RANKING_TABLE, "ensembles": ENSEMBLE_RANKING_TABLE}


def _frame(connection, table: str, sql: str, params=None) -> pl.DataFrame:
    return connection.sql(sql, params=params).pl() if table_exists(connection, table) else pl.DataFrame()


def _count(connection, table: str, where: str = "TRUE", params=None) -> int:
    if not table_exists(connection, table):
        return 0
    return int(connection.execute(f"SELECT count(*) FROM {table} WHERE {where}", params or []).fetchall()[0][0])


def rankings(connection) -> dict[str, pl.DataFrame]:
    """Each ranking; an ensemble's name says the timeframe it is ranked within (ranks repeat per timeframe)."""
    frames = {}
    for kind, table in RANKINGS.items():
        name = "name"
        if kind == "ensembles" and "ranked_within" in table_columns(connection, table):
            name = "name || coalesce(' (' || ranked_within || ')', '') AS name"
        frames[kind] = _frame(
            connection, table, f"SELECT item_id, {name}, rank, score, status, decision, reason FROM {table}"
        )
    return frames


def activity(connection, research_run_id: str | None) -> dict:
    run = [research_run_id]
    return {
        "designed": _count(connection, DESIGNS_TABLE, "run_id = ? AND status = 'registered'", run),
        "rejected": _count(connection, DESIGNS_TABLE, "run_id = ? AND status = 'rejected'", run),
        "tuned": _count(connection, TUNING_TABLE, "run_id = ? AND registered", run),
        "tuning_trials": _count(connection, TRIALS_TABLE, "run_id = ? AND kind = 'tuned'", run),
        "archived": newly_archived(connection, research_run_id),
        "restored": _count(connection, HISTORY_TABLE, "run_id = ? AND decision = 'restored'", run),
        "trials_total": _count(connection, TRIALS_TABLE),
    }


def newly_archived(connection, research_run_id: str | None) -> int:
    """Items the run archived that the ranking before it had not (every run re-archives the rest)."""
    if not table_exists(connection, HISTORY_TABLE):
        return 0
    return int(
        connection.execute(
            f"""SELECT count(*) FROM (
                    SELECT run_id, decision,
                           lag(decision) OVER (PARTITION BY kind, item_id ORDER BY ranked_at) AS before
                    FROM {HISTORY_TABLE})
                WHERE run_id = ? AND decision = 'archived' AND before IS DISTINCT FROM 'archived'""",
            [research_run_id],
        ).fetchall()[0][0]
    )


def selected_variants(connection, research_run_id: str | None) -> list[dict]:
    """The strategies the run registered (designed or tuned), each with its deflated Sharpe
    ratio given every trial recorded so far: N = the combinations tried, V = the variance
    of the trials' out-of-sample per-bar Sharpe ratios (docs/research.md)."""
    if not table_exists(connection, TRIALS_TABLE):
        return []
    trials = connection.sql(f"SELECT * FROM {TRIALS_TABLE}").pl()
    tried = int(trials["combinations"].sum())
    variance = trial_sharpe_variance(trials["bar_sharpe"].to_list())
    selected = []
    for row in trials.filter((pl.col("run_id") == research_run_id) & pl.col("registered")).iter_rows(named=True):
        deflated = None
        if row["bar_sharpe"] is not None and row["bar_count"]:
            stats = ReturnStats(row["bar_sharpe"], row["bar_count"], row["bar_skew"], row["bar_kurtosis"])
            try:
                deflated = deflated_sharpe(stats, max(tried, 1), variance)
            except ValueError:
                deflated = None
        selected.append(
            {
                "strategy_id": row["strategy_id"],
                "name": row["name"],
                "origin": row["kind"],
                "parents": json.loads(row["parents"]),
                "oos_score": row["oos_score"],
                "sharpe": row["oos_sharpe"],
                "deflated_sharpe": deflated,
                "trials": tried,
            }
        )
    return selected


def portfolio(connection, now: datetime) -> tuple[list[dict], pl.DataFrame]:
    """Per trading mode: the newest equity, its peak, drawdown, exposure, open positions and the
    change over the last 24 hours; and the equity over time (ts, mode, equity) for the plot."""
    history = _frame(
        connection,
        PORTFOLIO_TABLE,
        f"SELECT ts, mode, equity::DOUBLE AS equity, positions_value::DOUBLE AS positions_value, open_positions "
        f"FROM {PORTFOLIO_TABLE} ORDER BY ts",
    )
    if history.is_empty():
        return [], pl.DataFrame(schema={"ts": pl.Datetime("us", "UTC"), "mode": pl.String, "equity": pl.Float64})
    accounts = []
    for (mode,), rows in history.partition_by("mode", as_dict=True).items():
        last = rows.row(-1, named=True)
        newest = last["ts"]
        day_ago = rows.filter(pl.col("ts") <= newest - timedelta(days=1))
        accounts.append(
            {
                "mode": mode,
                "equity": last["equity"],
                "peak_equity": float(rows["equity"].max()),
                "exposure": last["positions_value"] / last["equity"] if last["equity"] else None,
                "open_positions": int(last["open_positions"] or 0),
                "day_pnl": last["equity"] - day_ago["equity"][-1] if day_ago.height else None,
                "as_of": newest,
            }
        )
    return accounts, history.select("ts", "mode", "equity")


def data_counts(connection) -> dict:
    gaps = _frame(connection, GAPS_TABLE, f"SELECT count(*) AS n, sum(missing_candles) AS missing FROM {GAPS_TABLE}")
    newest = _frame(connection, CANDLES_TABLE, f"SELECT max(ts) AS newest FROM {CANDLES_TABLE}")
    return {
        "gaps": int(gaps["n"][0]) if gaps.height else 0,
        "missing_candles": int(gaps["missing"][0] or 0) if gaps.height else 0,
        "newest_candle": newest["newest"][0] if newest.height else None,
    }


def kept_equity_curves(connection) -> pl.DataFrame:
    """Equity curves (full runs) of the strategies the ranking keeps."""
    if not (table_exists(connection, EQUITY_TABLE) and table_exists(connection, STRATEGY_RANKING_TABLE)):
        return pl.DataFrame()
    return connection.sql(
        f"SELECT e.strategy_id, e.name, e.symbol, e.timeframe, e.ts, e.equity FROM {EQUITY_TABLE} e "
        f"JOIN {STRATEGY_RANKING_TABLE} r ON r.item_id = e.strategy_id AND r.status = 'kept' "
        "ORDER BY e.strategy_id, e.symbol, e.timeframe, e.ts"
    ).pl()


def model_f1(connection) -> pl.DataFrame:
    """model_id, f1_model, f1_majority, f1_last_return: each model's overall out-of-sample F1."""
    results = _frame(
        connection,
        MODEL_RESULTS_TABLE,
        f"SELECT model_id, predictor, f1_macro FROM {MODEL_RESULTS_TABLE} WHERE fold = 'overall'",
    )
    if results.is_empty():
        return pl.DataFrame()
    wide = results.pivot(on="predictor", index="model_id", values="f1_macro", aggregate_function="mean")
    names = {"model": "f1_model", "majority": "f1_majority", "last_return": "f1_last_return"}
    return wide.rename({k: v for k, v in names.items() if k in wide.columns})
