"""What the strategy decider reads from DuckDB: the strategies it may trade, their out-of-sample
results per series, and the candles a spec is evaluated over. Used by the decisions asset, the
forward test and the daily report's parity check. No Dagster."""

from __future__ import annotations

from datetime import datetime

import polars as pl

from tracer_assets.market.keys import OHLCV_TABLE
from tracer_assets.ranking.keys import STRATEGY_RANKING_TABLE
from tracer_assets.research.keys import BACKTESTS_TABLE, STRATEGIES_TABLE
from tracer_assets.research.spec import StrategySpec, load_spec
from tracer_assets.tables import table_exists
from tracer_assets.trading.decide import payoff_ratio
from tracer_assets.trading.strategy_call import PickedStrategy

# Candles a spec is read over: enough for any built-in's indicators to settle.
STRATEGY_LOOKBACK_BARS = 1000


def strategy_book(
    connection,
) -> tuple[dict[str, StrategySpec], dict[str, StrategySpec], dict[tuple[str, str], list[dict]]]:
    """(kept, known, out_of_sample): the kept strategies' specs (every active one before the
    first ranking), every stored spec (a held position's strategy may be archived since), and per
    (symbol, timeframe) the out-of-sample rows of research.backtests."""
    if not table_exists(connection, STRATEGIES_TABLE) or not table_exists(connection, BACKTESTS_TABLE):
        return {}, {}, {}
    stored = connection.execute(f"SELECT strategy_id, spec FROM {STRATEGIES_TABLE}").fetchall()
    known = {sid: load_spec(spec) for sid, spec in stored}
    kept_query = (
        f"SELECT item_id FROM {STRATEGY_RANKING_TABLE} WHERE status = 'kept'"
        if table_exists(connection, STRATEGY_RANKING_TABLE)
        else f"SELECT strategy_id FROM {STRATEGIES_TABLE} WHERE status = 'active'"
    )
    kept_ids = {row[0] for row in connection.execute(kept_query).fetchall()}
    rows: dict[tuple[str, str], list[dict]] = {}
    frame = connection.sql(
        f"""SELECT symbol, timeframe, strategy_id, score, parameters, win_rate, profit_factor
            FROM {BACKTESTS_TABLE} WHERE "window" = 'out_of_sample'"""
    ).pl()
    for row in frame.iter_rows(named=True):
        rows.setdefault((row["symbol"], row["timeframe"]), []).append(row)
    return {sid: spec for sid, spec in known.items() if sid in kept_ids}, known, rows


def edge(picked: PickedStrategy, rows) -> dict:
    """The picked strategy's out-of-sample win rate and payoff ratio (Kelly's inputs; both None
    when its row or either figure is missing)."""
    for row in rows:
        if row["strategy_id"] == picked.strategy_id:
            payoff = payoff_ratio(row["win_rate"], row["profit_factor"])
            if payoff is not None:
                return {"win_rate": row["win_rate"], "payoff_ratio": payoff}
    return {"win_rate": None, "payoff_ratio": None}


def candles_up_to(connection, symbol: str, timeframe: str, until: datetime, *, inclusive: bool = True) -> pl.DataFrame:
    """The newest STRATEGY_LOOKBACK_BARS candles (ts, open, high, low, close, volume) of the
    series opening at or before `until` (before it when not inclusive), oldest first."""
    condition = "ts <= ?" if inclusive else "ts < ?"
    return connection.sql(
        f"""SELECT * FROM (SELECT ts, open, high, low, close, volume FROM {OHLCV_TABLE}
            WHERE symbol = ? AND timeframe = ? AND {condition} ORDER BY ts DESC LIMIT {STRATEGY_LOOKBACK_BARS})
            ORDER BY ts""",
        params=[symbol, timeframe, until],
    ).pl()
