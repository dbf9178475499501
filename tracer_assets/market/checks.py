"""Data checks over a stored candle table, run in SQL on the window just written.

Pure DuckDB (no Dagster): each returns a CheckOutcome that the asset turns into an
AssetCheckResult. They look at what landed, not at what was meant to land.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import duckdb

from tracer_assets.market.candles import RULES
from tracer_assets.market.timeframes import timeframe_ms

# The price-jump check (no_price_jump). Measured on the bundled Binance 5m candles (8 pairs,
# 2024-01-01 .. 2024-09-06, the 2024-01-03 and 2024-08-05 crashes included): the largest real
# moves are a 13% close-to-close and a 15% high/low range in one candle, at most 142x the
# floored median |log return| of the day before. K = 300 leaves twice that as headroom and
# still flags, even in the calmest hour, any candle moving beyond x1.35 or x0.74 (log 0.3):
# a 2x, 10x or 1000x bad tick, not a crash.
PRICE_JUMP_K = 300.0
# One day of 5m candles: long enough that the median spans a day's quiet and busy hours and
# ignores a single bad tick, short enough to follow a regime change; one extra day to read.
PRICE_JUMP_WINDOW = 288
# A floor under the median |log return| (0.1%): a flat or barely traded series (median 0)
# must not flag every tick of noise. About a typical 5m median of the bundled pairs.
PRICE_JUMP_FLOOR = 1e-3

CHECK_DESCRIPTIONS = {
    "no_duplicate_keys": "No two rows share (symbol, timeframe, ts).",
    "monotonic_time": (
        "Per symbol and timeframe, every candle sits on its timeframe's grid and none is from the future "
        "(open + timeframe <= the exchange's now)."
    ),
    "sane_ohlc": (
        "No null/NaN/infinite price or volume, no non-positive price, high >= low, "
        "open and close within [low, high], volume >= 0."
    ),
    "last_candle_not_stale": (
        "For every symbol fetched, the newest candle closes within two trading ticks "
        "of what the exchange could have delivered."
    ),
    "no_price_jump": (
        "No candle moves implausibly against its own series' recent volatility: "
        "neither |log(close / previous close)| "
        f"nor log(high / low) exceeds {PRICE_JUMP_K:g} times the median |log return| "
        f"of the previous {PRICE_JUMP_WINDOW} candles "
        f"(floored at {PRICE_JUMP_FLOOR:g}). "
        "A warning: a bad tick (a 1000x close) shows here without stopping the run."
    ),
}


@dataclass(frozen=True)
class CheckOutcome:
    name: str
    passed: bool
    metadata: dict = field(default_factory=dict)


def _when(ts: datetime) -> str:
    """A stored timestamp as the candle errors write it: 2024-01-02T12:00:00Z."""
    if ts.tzinfo is not None:
        ts = ts.astimezone(UTC)
    return ts.strftime("%Y-%m-%dT%H:%M:%SZ")


def _steps_sql(connection, table: str, start: datetime, end: datetime) -> str:
    timeframes = [
        row[0]
        for row in connection.execute(
            f"SELECT DISTINCT timeframe FROM {table} WHERE ts >= ? AND ts < ?", [start, end]
        ).fetchall()
    ]
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


_PRICES = ("open", "high", "low", "close")
_VALUES = (*_PRICES, "volume")
# sane_ohlc's rules, named as validate_candles names them (candles.RULES). The comparisons are
# judged on complete, finite rows only, as in validate_candles: NaN and +inf compare above
# every number, so a row with one would otherwise trip (or, with high=inf, pass) them.
_MISSING_SQL = " OR ".join(f"{c} IS NULL OR isnan({c})" for c in _VALUES)
_NON_FINITE_SQL = " OR ".join(f"isinf({c})" for c in _VALUES)
_SANE_RULES_SQL = {
    "missing_value": _MISSING_SQL,
    "non_finite": _NON_FINITE_SQL,
    "non_positive_price": " OR ".join(f"{c} <= 0" for c in _PRICES),
    "high_below_low": "high < low",
    "open_outside_range": "open < low OR open > high",
    "close_outside_range": "close < low OR close > high",
    "negative_volume": "volume < 0",
}
_COMPLETE_SQL = f"NOT ({_MISSING_SQL}) AND NOT ({_NON_FINITE_SQL})"


def sane_ohlc(connection, table: str, start: datetime, end: datetime) -> CheckOutcome:
    """Every candle in [start, end) is complete, finite and consistent; examples name the
    symbol, the timestamp and the rule (candles.RULES), as validate_candles does."""
    broken = ", ".join(
        f"CASE WHEN ({sql}){'' if rule in ('missing_value', 'non_finite') else f' AND {_COMPLETE_SQL}'} "
        f"THEN '{rule}' END"
        for rule, sql in _SANE_RULES_SQL.items()
    )
    rows = connection.execute(
        f"""SELECT symbol, timeframe, ts, rules FROM (
                SELECT symbol, timeframe, ts, concat_ws(',', {broken}) AS rules
                FROM {table} WHERE ts >= ? AND ts < ?)
            WHERE rules <> '' ORDER BY ts, symbol""",
        [start, end],
    ).fetchall()
    per_rule: dict[str, int] = {}
    examples = []
    for symbol, timeframe, ts, rules in rows:
        names = rules.split(",")
        for name in names:
            per_rule[name] = per_rule.get(name, 0) + 1
        if len(examples) < 5:
            when = _when(ts)
            examples.append(f"{symbol} {timeframe} at {when}: " + "; ".join(f"{RULES[n]} [{n}]" for n in names))
    return CheckOutcome(
        "sane_ohlc",
        not rows,
        {
            "broken_rows": len(rows),
            "broken_rules": {rule: per_rule[rule] for rule in _SANE_RULES_SQL if rule in per_rule},
            "examples": examples,
        },
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


def no_price_jump(
    connection,
    table: str,
    start: datetime,
    end: datetime,
    k: float = PRICE_JUMP_K,
    window: int = PRICE_JUMP_WINDOW,
    floor: float = PRICE_JUMP_FLOOR,
) -> CheckOutcome:
    """Candles in [start, end) whose move is implausible against their series' recent volatility.

    Per (symbol, timeframe): the scale is the median |log(close / previous close)| over the
    `window` candles before each one, at least `floor`. A candle is a jump when its own
    |log(close / previous close)| or its range log(high / low) exceeds `k` times that scale.
    Reads `window` + 1 candles before `start`, so the first candle of a day is judged against
    the day before. A bad tick usually shows twice: the jump and the return after it.
    """
    if floor <= 0 or window < 1:
        raise ValueError(f"no_price_jump needs a floor > 0 and a window >= 1, not {floor} and {window}")
    steps = [
        row[0]
        for row in connection.execute(
            f"SELECT DISTINCT timeframe FROM {table} WHERE ts >= ? AND ts < ?", [start, end]
        ).fetchall()
    ]
    metadata: dict = {"threshold_k": k, "window_candles": window, "floor": floor}
    if not steps:
        return CheckOutcome(
            "no_price_jump",
            True,
            {
                **metadata,
                "jumps": 0,
                "jumps_by_symbol": {},
                "largest_move_x_scale": 0.0,
                "largest_move": "none",
                "examples": [],
            },
        )
    lookback = timedelta(milliseconds=max(timeframe_ms(tf) for tf in steps) * (window + 1))
    # Only positive, finite prices have a log; anything else is sane_ohlc's to report.
    rows = connection.execute(
        f"""WITH candles AS (
                SELECT symbol, timeframe, ts, high, low, close,
                       lag(close) OVER (PARTITION BY symbol, timeframe ORDER BY ts) AS prev_close
                FROM {table} WHERE ts >= ? AND ts < ?
            ), moves AS (
                SELECT *,
                       CASE WHEN close > 0 AND prev_close > 0 AND isfinite(close) AND isfinite(prev_close)
                            THEN abs(ln(close / prev_close)) END AS move,
                       CASE WHEN low > 0 AND isfinite(high) AND isfinite(low) AND high >= low
                            THEN ln(high / low) END AS span
                FROM candles
            ), judged AS (
                SELECT *, greatest(coalesce(median(move) OVER (
                           PARTITION BY symbol, timeframe ORDER BY ts
                           ROWS BETWEEN {int(window)} PRECEDING AND 1 PRECEDING
                       ), 0), ?) AS scale
                FROM moves
            )
            SELECT symbol, timeframe, ts, prev_close, close, high, low, move, span, scale,
                   greatest(coalesce(move, 0), coalesce(span, 0)) / scale AS ratio
            FROM judged WHERE ts >= ?
            QUALIFY ratio > ? OR row_number() OVER (ORDER BY ratio DESC, ts, symbol) = 1
            ORDER BY ts, symbol, timeframe""",
        [start - lookback, end, floor, start, k],
    ).fetchall()
    jumps = [row for row in rows if row[10] > k]
    largest = max(rows, key=lambda row: row[10])
    by_symbol: dict[str, int] = {}
    for row in jumps:
        by_symbol[row[0]] = by_symbol.get(row[0], 0) + 1
    return CheckOutcome(
        "no_price_jump",
        not jumps,
        {
            **metadata,
            "jumps": len(jumps),
            "jumps_by_symbol": by_symbol,
            "largest_move_x_scale": round(float(largest[10]), 2),
            "largest_move": _describe_move(largest, k),
            "examples": [_describe_move(row, k) for row in sorted(jumps, key=lambda r: -r[10])[:5]],
        },
    )


def _describe_move(row: tuple, k: float) -> str:
    """One line naming the symbol, the candle and the size of its move: the close's move when
    that is what broke the threshold (or is the larger), the high/low range otherwise."""
    symbol, timeframe, ts, prev_close, close, high, low, move, span, scale, ratio = row
    if move is not None and (move > k * scale or move >= (span or 0)):
        what = f"close {prev_close:.10g} -> {close:.10g} (x{close / prev_close:.4g}, |log move| {move:.4f})"
        ratio = move / scale
    elif span is not None:
        what = f"high/low {high:.10g}/{low:.10g} (x{high / low:.4g}, log range {span:.4f})"
    else:  # no positive, finite prices to measure: sane_ohlc's to report
        return f"{symbol} {timeframe} at {_when(ts)}: no move to measure [no_price_jump]"
    return (
        f"{symbol} {timeframe} at {_when(ts)}: {what} = {ratio:.1f}x the recent median |log return| "
        f"{scale:.5f} [no_price_jump]"
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
