"""Reading candles for the indicators from DuckDB (market.ohlcv), with their warm-up. No Dagster."""

from datetime import datetime, timedelta

import duckdb
import polars as pl

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
