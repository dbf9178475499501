"""Reading candles (market.ohlcv) with their warm-up, and the newest stored indicators. No Dagster."""

from collections.abc import Sequence
from datetime import datetime, timedelta

import duckdb
import polars as pl

from tracer_assets.features.keys import INDICATORS_TABLE
from tracer_assets.market.keys import OHLCV_TABLE
from tracer_assets.market.timeframes import timeframe_seconds

CANDLE_COLUMNS = ("symbol", "timeframe", "ts", "open", "high", "low", "close", "volume")


def read_ohlcv(connection, timeframe: str, start: datetime, end: datetime, symbols=None) -> pl.DataFrame:
    """Candles of one timeframe with open time in [start, end), oldest first."""
    sql = f"SELECT {', '.join(CANDLE_COLUMNS)} FROM {OHLCV_TABLE} WHERE timeframe = ? AND ts >= ? AND ts < ?"
    params: list = [timeframe, start, end]
    if symbols:
        sql += " AND list_contains(?, symbol)"
        params.append(list(symbols))
    try:
        frame = connection.sql(sql + " ORDER BY symbol, ts", params=params).pl()
    except duckdb.CatalogException as exc:  # e.g. a new DuckDB file under an instance that knew the view
        raise LookupError(
            "market.ohlcv does not exist in this DuckDB file: materialize market/ohlcv "
            "(`dagster asset materialize --select market/ohlcv -m tracer_assets.definitions`, or `make demo`)"
        ) from exc
    return frame.with_columns(pl.col("ts").dt.convert_time_zone("UTC"))


def read_with_warmup(connection, timeframes, start: datetime, end: datetime, bars: int, symbols=None) -> pl.DataFrame:
    """Every timeframe's candles in [start, end) plus `bars` candles of history before."""
    frames = [
        read_ohlcv(connection, tf, start - timedelta(seconds=bars * timeframe_seconds(tf)), end, symbols)
        for tf in timeframes
    ]
    return pl.concat(frames)


def read_recent_indicators(connection, timeframes, bars: int, symbols: Sequence[str] | None = None) -> pl.DataFrame:
    """The newest `bars` indicator rows of every series (of `symbols`, if given), by time range
    (not a full scan)."""
    only = " AND list_contains(?, symbol)" if symbols is not None else ""
    frames = []
    for timeframe in timeframes:
        chosen = [list(symbols)] if symbols is not None else []
        frame = connection.sql(
            f"""SELECT * FROM {INDICATORS_TABLE}
                WHERE timeframe = ?{only}
                  AND ts > (SELECT max(ts) FROM {INDICATORS_TABLE} WHERE timeframe = ?{only}) - to_seconds(?::BIGINT)
                ORDER BY symbol, ts""",
            params=[timeframe, *chosen, timeframe, *chosen, bars * timeframe_seconds(timeframe)],
        ).pl()
        frames.append(frame.with_columns(pl.col("ts").dt.convert_time_zone("UTC")))
    return pl.concat(frames, how="vertical_relaxed")
