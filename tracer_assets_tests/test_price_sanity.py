"""The checks on stored candles that look at prices: sane_ohlc refuses non-finite values by
name, and no_price_jump flags an implausible move (a 1000x close) against the series' own
recent volatility, while flagging nothing on the real bundled Binance candles."""

from __future__ import annotations

import math
import statistics
import time
from datetime import UTC, datetime, timedelta

import duckdb
import polars as pl
import pytest

from tracer_assets.data import BUNDLED_REPLAY_DIR
from tracer_assets.market.candles import validate_candles
from tracer_assets.market.checks import (
    PRICE_JUMP_FLOOR,
    PRICE_JUMP_K,
    PRICE_JUMP_WINDOW,
    no_price_jump,
    sane_ohlc,
)
from tracer_assets.settings import DEFAULT_SYMBOLS
from tracer_assets.tables import replace_window

UTC = UTC
TABLE = "market.candles"
BUNDLED_START, BUNDLED_END = datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 9, 8, tzinfo=UTC)
PLANTED = datetime(2024, 1, 2, 12, tzinfo=UTC)


def bundled_candles(symbols=("BTC/USDT", "ETH/USDT"), start=BUNDLED_START, end=BUNDLED_END) -> pl.DataFrame:
    """The bundled 5m files in the stored shape (market.candles' columns)."""
    frames = []
    for symbol in symbols:
        raw = pl.read_parquet(BUNDLED_REPLAY_DIR / f"{symbol.replace('/', '_')}-5m.parquet")
        frames.append(
            raw.filter(pl.col("date").is_between(start, end, closed="left")).select(
                pl.lit(symbol).alias("symbol"),
                pl.lit("5m").alias("timeframe"),
                pl.col("date").dt.cast_time_unit("us").alias("ts"),
                "open",
                "high",
                "low",
                "close",
                "volume",
            )
        )
    return pl.concat(frames).sort("symbol", "timeframe", "ts")


def set_value(candles: pl.DataFrame, symbol: str, at: datetime, **values) -> pl.DataFrame:
    """`candles` with some columns of one candle replaced (expressions or numbers)."""
    row = (pl.col("symbol") == symbol) & (pl.col("ts") == at)
    assert candles.filter(row).height == 1
    return candles.with_columns(
        [
            pl.when(row)
            .then(value if isinstance(value, pl.Expr) else pl.lit(value, pl.Float64))
            .otherwise(pl.col(c))
            .alias(c)
            for c, value in values.items()
        ]
    )


def plant_close(candles: pl.DataFrame, symbol: str, at: datetime, factor: float) -> pl.DataFrame:
    """A bad tick: the close times `factor`, the high/low stretched to hold it (still valid)."""
    close = pl.col("close") * factor
    return set_value(
        candles, symbol, at, close=close, high=pl.max_horizontal("high", close), low=pl.min_horizontal("low", close)
    )


def store(candles: pl.DataFrame) -> duckdb.DuckDBPyConnection:
    """An in-memory warehouse holding `candles` as market.candles, written as the asset writes."""
    connection = duckdb.connect()
    connection.execute("SET TimeZone = 'UTC'")
    start, end = candles["ts"].min(), candles["ts"].max() + timedelta(minutes=5)
    replace_window(connection, [(TABLE, candles, "ts", candles["symbol"].unique().to_list())], start, end)
    connection.execute("CHECKPOINT")
    return connection


def day(date: str) -> tuple[datetime, datetime]:
    start = datetime.strptime(date, "%Y-%m-%d").replace(tzinfo=UTC)
    return start, start + timedelta(days=1)


@pytest.fixture(scope="module")
def january() -> pl.DataFrame:
    return bundled_candles(end=datetime(2024, 1, 5, tzinfo=UTC))


@pytest.fixture(scope="module")
def bundled_warehouse():
    """Every bundled candle of the six default symbols: 2024-01-01 .. 2024-09-06/07."""
    connection = store(bundled_candles(DEFAULT_SYMBOLS))
    yield connection
    connection.close()


# --- sane_ohlc: non-finite values are refused by name -------------------------------------------


@pytest.mark.parametrize(
    ("column", "value"), [("high", math.inf), ("low", -math.inf), ("close", math.inf), ("volume", math.inf)]
)
def test_sane_ohlc_refuses_an_infinite_value_naming_symbol_time_and_rule(january, column, value):
    connection = store(set_value(january, "BTC/USDT", PLANTED, **{column: value}))
    outcome = sane_ohlc(connection, TABLE, *day("2024-01-02"))
    assert not outcome.passed
    assert outcome.metadata["broken_rows"] == 1
    assert outcome.metadata["broken_rules"] == {"non_finite": 1}
    assert outcome.metadata["examples"] == [
        "BTC/USDT 5m at 2024-01-02T12:00:00Z: a price or the volume is infinite (+inf or -inf) [non_finite]"
    ]


def test_sane_ohlc_names_every_rule_a_row_breaks(january):
    broken = set_value(january, "ETH/USDT", PLANTED, high=pl.col("low") - 1.0)
    broken = set_value(broken, "BTC/USDT", PLANTED + timedelta(hours=1), close=math.nan)
    outcome = sane_ohlc(store(broken), TABLE, *day("2024-01-02"))
    assert not outcome.passed
    assert outcome.metadata["broken_rules"] == {
        "missing_value": 1,
        "high_below_low": 1,
        "open_outside_range": 1,
        "close_outside_range": 1,
    }
    assert outcome.metadata["examples"] == [
        "ETH/USDT 5m at 2024-01-02T12:00:00Z: high < low [high_below_low]; open outside [low, high] "
        "[open_outside_range]; close outside [low, high] [close_outside_range]",
        "BTC/USDT 5m at 2024-01-02T13:00:00Z: a price or the volume is null or NaN [missing_value]",
    ]


def test_sane_ohlc_passes_the_real_candles(january):
    outcome = sane_ohlc(store(january), TABLE, *day("2024-01-02"))
    assert outcome.passed and outcome.metadata["broken_rows"] == 0


# --- no_price_jump ---------------------------------------------------------------------------------


def test_the_thresholds_are_module_constants():
    assert (PRICE_JUMP_K, PRICE_JUMP_WINDOW, PRICE_JUMP_FLOOR) == (300.0, 288, 1e-3)


def test_no_jump_is_flagged_on_any_real_bundled_candle(bundled_warehouse):
    """Six symbols, Jan-Sep 2024, the 2024-01-03 and 2024-08-05 crashes included."""
    outcome = no_price_jump(bundled_warehouse, TABLE, BUNDLED_START, BUNDLED_END)
    assert outcome.passed, outcome.metadata["examples"]
    assert outcome.metadata["jumps"] == 0
    # The largest real move (XRP's 15% candle on 2024-01-03) is under half the threshold.
    assert outcome.metadata["largest_move_x_scale"] < PRICE_JUMP_K / 2
    assert outcome.metadata["largest_move"].startswith("XRP/USDT 5m at 2024-01-03T12:05:00Z: ")


def test_day_partitions_see_what_the_whole_range_sees_and_cost_little(bundled_warehouse):
    """A day reads its window's worth of earlier candles: the crash day alone gives the same
    largest move as the whole range, and a day's check on the full table takes milliseconds."""
    whole = no_price_jump(bundled_warehouse, TABLE, BUNDLED_START, BUNDLED_END)
    crash_day = no_price_jump(bundled_warehouse, TABLE, *day("2024-01-03"))
    assert crash_day.metadata["largest_move"] == whole.metadata["largest_move"]
    seconds = []
    for date in ("2024-03-14", "2024-06-07", "2024-08-05", "2024-09-06", "2024-09-07"):
        began = time.perf_counter()
        assert no_price_jump(bundled_warehouse, TABLE, *day(date)).passed
        seconds.append(time.perf_counter() - began)
    assert statistics.median(seconds) < 1.0  # about 0.01 s measured; a full scan would be far more


def test_a_planted_1000x_close_is_flagged_naming_symbol_time_and_size(january):
    planted = plant_close(january, "BTC/USDT", PLANTED, 1000.0)
    validate_candles(planted)  # a consistent candle: only the jump check can see it
    outcome = no_price_jump(store(planted), TABLE, *day("2024-01-02"))
    assert not outcome.passed
    # the jump and the return after it
    assert outcome.metadata["jumps"] == 2
    assert outcome.metadata["jumps_by_symbol"] == {"BTC/USDT": 2}
    jump, back = sorted(outcome.metadata["examples"])  # listed largest first; here by time
    assert jump.startswith("BTC/USDT 5m at 2024-01-02T12:00:00Z: close ")
    assert "(x1000, |log move| 6.9" in jump and jump.endswith("[no_price_jump]")
    assert back.startswith("BTC/USDT 5m at 2024-01-02T12:05:00Z: close ") and "(x0.000999" in back
    assert outcome.metadata["largest_move_x_scale"] > 10 * PRICE_JUMP_K


@pytest.mark.parametrize("factor", [10.0, 0.1, 2.0])
def test_smaller_bad_ticks_are_flagged_too(january, factor):
    outcome = no_price_jump(store(plant_close(january, "ETH/USDT", PLANTED, factor)), TABLE, *day("2024-01-02"))
    assert not outcome.passed
    assert outcome.metadata["examples"][0].startswith("ETH/USDT 5m at 2024-01-02T12:0")


def test_a_wick_alone_is_flagged_by_the_high_low_range(january):
    wick = set_value(january, "BTC/USDT", PLANTED, high=pl.col("high") * 1000)
    outcome = no_price_jump(store(wick), TABLE, *day("2024-01-02"))
    assert outcome.metadata["jumps"] == 1
    (example,) = outcome.metadata["examples"]
    assert example.startswith("BTC/USDT 5m at 2024-01-02T12:00:00Z: high/low ") and "log range" in example


def test_the_first_candle_of_a_day_is_judged_against_the_day_before(january):
    midnight = datetime(2024, 1, 3, tzinfo=UTC)
    planted = plant_close(january, "BTC/USDT", midnight, 1000.0)
    outcome = no_price_jump(store(planted), TABLE, *day("2024-01-03"))
    assert outcome.metadata["examples"][0].startswith("BTC/USDT 5m at 2024-01-03T00:00:00Z: close ")


def test_a_jump_before_the_window_is_neither_reported_nor_raises_the_scale(january):
    planted = store(plant_close(january, "BTC/USDT", datetime(2024, 1, 2, 23, 0, tzinfo=UTC), 1000.0))
    clean = store(january)
    next_day = day("2024-01-03")
    judged, reference = no_price_jump(planted, TABLE, *next_day), no_price_jump(clean, TABLE, *next_day)
    assert judged.passed
    assert judged.metadata["largest_move"] == reference.metadata["largest_move"]  # the median shrugs it off


def test_a_flat_series_does_not_flag_its_noise():
    """A pegged price that hardly moves (median move 0): a 0.5% tick is noise, not a jump."""
    start = datetime(2024, 1, 1, tzinfo=UTC)
    n = 2 * 288
    close = [1.0] * n
    close[400] = 1.005
    flat = pl.DataFrame(
        {
            "symbol": ["USDC/USDT"] * n,
            "timeframe": ["5m"] * n,
            "ts": [start + timedelta(minutes=5 * i) for i in range(n)],
            "open": close,
            "high": [c * 1.0001 for c in close],
            "low": [c * 0.9999 for c in close],
            "close": close,
            "volume": [1.0] * n,
        },
        schema_overrides={"ts": pl.Datetime("us", "UTC")},
    )
    connection = store(flat)
    outcome = no_price_jump(connection, TABLE, *day("2024-01-02"))
    assert outcome.passed and outcome.metadata["jumps"] == 0
    # ... and the floor is what keeps it quiet: without one, any move over a median of 0 is infinite.
    assert not no_price_jump(connection, TABLE, *day("2024-01-02"), floor=1e-9).passed


def test_an_empty_window_passes(january):
    outcome = no_price_jump(store(january), TABLE, *day("2024-02-01"))
    assert outcome.passed and outcome.metadata["jumps"] == 0
