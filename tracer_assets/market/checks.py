"""Data checks over a stored candle table, run in SQL on the window just written.

Pure DuckDB (no Dagster): each returns a CheckOutcome that the asset turns into an
AssetCheckResult. They look at what landed, not at what was meant to land.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import duckdb

from tracer_assets.market.timeframes import timeframe_ms

CHECK_DESCRIPTIONS = {
    "no_duplicate_keys": "No two rows share (symbol, timeframe, ts).",
    "monotonic_time": "Per symbol and timeframe, every candle sits on its timeframe's grid and none is from the future (open + timeframe <= the exchange's now).",
    "sane_ohlc": "No null/NaN or non-positive price, high >= low, open and close within [low, high], volume >= 0.",
    "last_candle_not_stale": "For every symbol fetched, the newest candle closes within two trading ticks of what the exchange could have delivered.",
}


@dataclass(frozen=True)
class CheckOutcome:
    name: str
    passed: bool
    metadata: dict = field(default_factory=dict)


def _steps_sql(connection, table: str, start: datetime, end: datetime) -> str:
    timeframes = [row[0] for row in connection.execute(
        f"SELECT DISTINCT timeframe FROM {table} WHERE ts >= ? AND ts < ?", [start, end]
    ).fetchall()]
    if not timeframes:
        return "(SELECT NULL::VARCHAR AS timeframe, NULL::BIGINT AS step_ms WHERE false)"
    values = ", ".join(f"('{tf}', {timeframe_ms(tf)})" for tf in timeframes)
    return f"(SELECT * FROM (VALUES {values}) AS s(timeframe, step_ms))"


def no_duplicate_keys(connection, table: str, start: datetime, end: datetime) -> CheckOutcome:
    rows = connection.execute(
        f"""SELECT symbol, timeframe, ts, count(*) AS n FROM {table}
            WHERE ts >= ? AND ts < ? GROUP BY ALL HAVING n > 1 ORDER BY ts""",
        [start, end],
    ).fetchall()
    return CheckOutcome(
        "no_duplicate_keys",
        not rows,
        {"duplicate_keys": len(rows), "examples": [f"{s} {tf} {ts.isoformat()} x{n}" for s, tf, ts, n in rows[:5]]},
    )


def monotonic_time(connection, table: str, start: datetime, end: datetime, now: datetime) -> CheckOutcome:
    steps = _steps_sql(connection, table, start, end)
    rows = connection.execute(
        f"""SELECT c.symbol, c.timeframe, c.ts,
                   epoch_ms(c.ts) % s.step_ms <> 0 AS off_grid,
                   epoch_ms(c.ts) + s.step_ms > epoch_ms(?::TIMESTAMPTZ) AS from_future
            FROM {table} c JOIN {steps} s USING (timeframe)
            WHERE c.ts >= ? AND c.ts < ? AND (off_grid OR from_future)
            ORDER BY c.ts""",
        [now, start, end],
    ).fetchall()
    return CheckOutcome(
        "monotonic_time",
        not rows,
        {
            "off_grid": sum(1 for r in rows if r[3]),
            "from_future": sum(1 for r in rows if r[4]),
            "examples": [f"{s} {tf} {ts.isoformat()}" for s, tf, ts, *_ in rows[:5]],
        },
    )


def sane_ohlc(connection, table: str, start: datetime, end: datetime) -> CheckOutcome:
    prices = ("open", "high", "low", "close")
    broken = " OR ".join(
        [f"{c} IS NULL OR isnan({c})" for c in (*prices, "volume")]
        + [f"{c} <= 0" for c in prices]
        + ["high < low", "open < low", "open > high", "close < low", "close > high", "volume < 0"]
    )
    rows = connection.execute(
        f"SELECT symbol, timeframe, ts FROM {table} WHERE ts >= ? AND ts < ? AND ({broken}) ORDER BY ts",
        [start, end],
    ).fetchall()
    return CheckOutcome(
        "sane_ohlc", not rows, {"broken_rows": len(rows), "examples": [f"{s} {tf} {ts.isoformat()}" for s, tf, ts in rows[:5]]}
    )


def last_candle_not_stale(
    connection,
    table: str,
    symbols: list[str],
    timeframe: str,
    start: datetime,
    expected_end: datetime,
    tolerance: timedelta,
) -> CheckOutcome:
    """expected_end: the close of the newest candle the exchange could have had (window end or now)."""
    if expected_end <= start or not symbols:
        return CheckOutcome("last_candle_not_stale", True, {"symbols_checked": 0})
    step = timedelta(milliseconds=timeframe_ms(timeframe))
    newest = dict(
        connection.execute(
            f"""SELECT symbol, max(ts) FROM {table}
                WHERE timeframe = ? AND ts >= ? AND ts < ? AND list_contains(?, symbol) GROUP BY symbol""",
            [timeframe, start, expected_end, list(symbols)],
        ).fetchall()
    )
    stale = {}
    for symbol in symbols:
        last = newest.get(symbol)
        if last is None or last + step < expected_end - tolerance:
            stale[symbol] = "no candle" if last is None else f"last candle opens {last.isoformat()}"
    return CheckOutcome(
        "last_candle_not_stale",
        not stale,
        {"expected_close": expected_end.isoformat(), "tolerance_s": tolerance.total_seconds(), "stale": stale},
    )


def candle_checks(
    connection: duckdb.DuckDBPyConnection,
    table: str,
    start: datetime,
    end: datetime,
    now: datetime,
) -> list[CheckOutcome]:
    """The checks every candle-shaped table gets (base and resampled)."""
    return [
        no_duplicate_keys(connection, table, start, end),
        monotonic_time(connection, table, start, end, now),
        sane_ohlc(connection, table, start, end),
    ]
