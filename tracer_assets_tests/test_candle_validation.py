"""validate_candles on real bundled Binance candles: one broken row per rule, and the message
a user reads names the symbol, the exact candle time and the rule that caught it."""

from __future__ import annotations

import copy
import math
from datetime import UTC, datetime

import polars as pl
import pytest

from tracer_assets.data import BUNDLED_REPLAY_DIR
from tracer_assets.market.candles import (
    RULES,
    CandleValidationError,
    Violation,
    candles_from_rows,
    validate_candles,
)
from tracer_assets.resources.replay_exchange import ReplayExchange

SLICE_START = datetime(2024, 3, 10, tzinfo=UTC)
SLICE_ROWS = 50
BROKEN = 10  # index of the row each case breaks: 2024-03-10 00:50 UTC
FIVE_MIN_MS = 300_000


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture(scope="module")
def exchange() -> ReplayExchange:
    return ReplayExchange(BUNDLED_REPLAY_DIR, symbols=["BTC/USDT", "ETH/USDT"])


@pytest.fixture(scope="module")
def btc_rows(exchange) -> list[list[float]]:
    rows = exchange.fetch_ohlcv("BTC/USDT", "5m", int(SLICE_START.timestamp() * 1000), SLICE_ROWS)
    assert len(rows) == SLICE_ROWS
    assert rows[0][0] == 1_710_028_800_000  # 2024-03-10 00:00 UTC, the real first candle of the slice
    return rows


@pytest.fixture(scope="module")
def eth_rows(exchange) -> list[list[float]]:
    return exchange.fetch_ohlcv("ETH/USDT", "5m", int(SLICE_START.timestamp() * 1000), SLICE_ROWS)


# --- how each case breaks the row list (ccxt rows: [ms, open, high, low, close, volume]) -------
# Each returns the open time (ms) the error must name.


def _null_close(rows):
    rows[BROKEN][4] = None
    return rows[BROKEN][0]


def _nan_volume(rows):
    rows[BROKEN][5] = math.nan
    return rows[BROKEN][0]


def _nan_high(rows):
    rows[BROKEN][2] = math.nan
    return rows[BROKEN][0]


def _inf_high(rows):
    rows[BROKEN][2] = math.inf
    return rows[BROKEN][0]


def _minus_inf_low(rows):
    rows[BROKEN][3] = -math.inf
    return rows[BROKEN][0]


def _inf_volume(rows):
    rows[BROKEN][5] = math.inf
    return rows[BROKEN][0]


def _inf_close_and_high(rows):
    rows[BROKEN][2] = rows[BROKEN][4] = math.inf
    return rows[BROKEN][0]


def _zero_prices(rows):
    rows[BROKEN][1:5] = [0.0, 0.0, 0.0, 0.0]
    return rows[BROKEN][0]


def _negative_low(rows):
    rows[BROKEN][3] = -1.0
    return rows[BROKEN][0]


def _high_below_low(rows):
    row = rows[BROKEN]
    row[2], row[3] = row[3] - 1.0, row[2] + 1.0  # high now under low
    return row[0]


def _open_above_high(rows):
    rows[BROKEN][1] = rows[BROKEN][2] * 1.01
    return rows[BROKEN][0]


def _close_below_low(rows):
    rows[BROKEN][4] = rows[BROKEN][3] * 0.99
    return rows[BROKEN][0]


def _negative_volume(rows):
    rows[BROKEN][5] = -0.5
    return rows[BROKEN][0]


def _off_grid(rows):
    rows[BROKEN][0] += 60_000  # 00:51, between two 5m candles
    return rows[BROKEN][0]


def _duplicate(rows):
    rows[BROKEN][0] = rows[BROKEN - 1][0]  # the 00:45 candle arrives twice
    return rows[BROKEN][0]


def _swapped(rows):
    rows[BROKEN], rows[BROKEN + 1] = rows[BROKEN + 1], rows[BROKEN]  # 00:55 then 00:50
    return rows[BROKEN + 1][0]  # the row that went back in time: 00:50


# (case id, rule, breaker, the exact set of rules the broken row trips)
CASES = [
    ("null_close", "missing_value", _null_close, {"missing_value"}),
    ("nan_volume", "missing_value", _nan_volume, {"missing_value"}),
    ("nan_high", "missing_value", _nan_high, {"missing_value"}),
    # high=inf passed every other rule (close < inf, high > low): refused by name, and only once;
    # -inf would trip non_positive_price and the range rules, inf in the low high_below_low.
    ("inf_high", "non_finite", _inf_high, {"non_finite"}),
    ("minus_inf_low", "non_finite", _minus_inf_low, {"non_finite"}),
    ("inf_volume", "non_finite", _inf_volume, {"non_finite"}),
    ("inf_close_and_high", "non_finite", _inf_close_and_high, {"non_finite"}),
    ("zero_prices", "non_positive_price", _zero_prices, {"non_positive_price"}),
    ("negative_low", "non_positive_price", _negative_low, {"non_positive_price"}),
    # high < low leaves no room for open and close inside [low, high]: those rules fire too.
    (
        "high_below_low",
        "high_below_low",
        _high_below_low,
        {"high_below_low", "open_outside_range", "close_outside_range"},
    ),
    ("open_above_high", "open_outside_range", _open_above_high, {"open_outside_range"}),
    ("close_below_low", "close_outside_range", _close_below_low, {"close_outside_range"}),
    ("negative_volume", "negative_volume", _negative_volume, {"negative_volume"}),
    ("off_grid", "off_grid_timestamp", _off_grid, {"off_grid_timestamp"}),
    ("duplicate", "duplicate_timestamp", _duplicate, {"duplicate_timestamp"}),
    ("swapped", "out_of_order_timestamp", _swapped, {"out_of_order_timestamp"}),
]


def test_every_rule_has_a_case():
    assert {rule for _, rule, _, _ in CASES} == set(RULES)


def test_clean_real_slice_passes(btc_rows):
    candles = candles_from_rows(btc_rows, "BTC/USDT", "5m")
    assert candles.height == SLICE_ROWS
    assert validate_candles(candles) is None


def test_empty_frame_passes():
    assert validate_candles(candles_from_rows([], "BTC/USDT", "5m")) is None


@pytest.mark.parametrize(("rule", "breaker", "tripped"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_broken_row_is_rejected_naming_symbol_time_and_rule(btc_rows, rule, breaker, tripped):
    rows = copy.deepcopy(btc_rows)
    broken_ms = breaker(rows)
    candles = candles_from_rows(rows, "BTC/USDT", "5m")

    with pytest.raises(CandleValidationError) as caught:
        validate_candles(candles)

    message = str(caught.value)
    when = _iso(broken_ms)
    assert message.startswith("candles rejected, nothing was written:")
    assert f"BTC/USDT 5m at {when}: {RULES[rule]} [{rule}]" in message
    assert {v.rule for v in caught.value.violations} == tripped
    caught_rule = next(v for v in caught.value.violations if v.rule == rule)
    assert caught_rule.symbol == "BTC/USDT"
    assert caught_rule.timeframe == "5m"
    assert caught_rule.ts == datetime.fromtimestamp(broken_ms / 1000, tz=UTC)
    # one broken row, except a duplicate, where both copies of the timestamp are flagged
    assert caught_rule.rows == (2 if rule == "duplicate_timestamp" else 1)


def test_duplicate_reports_how_many_rows_share_the_timestamp(btc_rows):
    rows = copy.deepcopy(btc_rows)
    _duplicate(rows)
    with pytest.raises(CandleValidationError) as caught:
        validate_candles(candles_from_rows(rows, "BTC/USDT", "5m"))
    assert "[duplicate_timestamp] (2 rows)" in str(caught.value)


def test_violation_message_carries_the_offending_values(btc_rows):
    rows = copy.deepcopy(btc_rows)
    _negative_volume(rows)
    with pytest.raises(CandleValidationError) as caught:
        validate_candles(candles_from_rows(rows, "BTC/USDT", "5m"))
    o, h, low, c = rows[BROKEN][1:5]
    assert f"open={o}, high={h}, low={low}, close={c}, volume=-0.5" in str(caught.value)


def test_several_broken_rules_in_one_batch_are_all_reported_in_rule_order(btc_rows):
    rows = copy.deepcopy(btc_rows)
    # different rows, different rules; listed in the batch out of RULES order on purpose
    rows[40][5] = -3.0  # negative_volume at 03:20
    rows[5][4] = None  # missing_value at 00:25
    rows[20][1] = rows[20][2] + 100.0  # open_outside_range at 01:40
    with pytest.raises(CandleValidationError) as caught:
        validate_candles(candles_from_rows(rows, "BTC/USDT", "5m"))

    assert [(v.rule, v.ts.strftime("%H:%M")) for v in caught.value.violations] == [
        ("missing_value", "00:25"),
        ("open_outside_range", "01:40"),
        ("negative_volume", "03:20"),
    ]
    lines = str(caught.value).splitlines()[1:]
    assert len(lines) == 3
    assert lines[0].strip().startswith("BTC/USDT 5m at 2024-03-10T00:25:00Z: ") and "[missing_value]" in lines[0]
    assert lines[1].strip().startswith("BTC/USDT 5m at 2024-03-10T01:40:00Z: ") and "[open_outside_range]" in lines[1]
    assert lines[2].strip().startswith("BTC/USDT 5m at 2024-03-10T03:20:00Z: ") and "[negative_volume]" in lines[2]


def test_same_rule_on_several_rows_names_the_first_and_counts_them(btc_rows):
    rows = copy.deepcopy(btc_rows)
    for i in (7, 12, 30):
        rows[i][5] = -1.0
    with pytest.raises(CandleValidationError) as caught:
        validate_candles(candles_from_rows(rows, "BTC/USDT", "5m"))
    (violation,) = caught.value.violations
    assert violation.rows == 3
    assert "BTC/USDT 5m at 2024-03-10T00:35:00Z: volume < 0 [negative_volume] (3 rows)" in str(caught.value)


def test_two_symbols_in_one_frame_only_the_broken_one_is_named(btc_rows, eth_rows):
    eth_broken = copy.deepcopy(eth_rows)
    eth_broken[BROKEN][4] = eth_broken[BROKEN][2] + 5.0  # close above high
    candles = pl.concat(
        [candles_from_rows(btc_rows, "BTC/USDT", "5m"), candles_from_rows(eth_broken, "ETH/USDT", "5m")]
    )
    with pytest.raises(CandleValidationError) as caught:
        validate_candles(candles)

    message = str(caught.value)
    assert "ETH/USDT 5m at 2024-03-10T00:50:00Z: close outside [low, high] [close_outside_range]" in message
    assert "BTC/USDT" not in message
    assert [(v.symbol, v.rule) for v in caught.value.violations] == [("ETH/USDT", "close_outside_range")]


def test_the_same_timestamp_under_two_symbols_is_not_a_duplicate(btc_rows, eth_rows):
    candles = pl.concat([candles_from_rows(btc_rows, "BTC/USDT", "5m"), candles_from_rows(eth_rows, "ETH/USDT", "5m")])
    assert candles["ts"].is_duplicated().all()  # every open time appears once per symbol
    assert validate_candles(candles) is None


def test_interleaved_symbols_are_checked_for_order_per_symbol(btc_rows, eth_rows):
    btc = candles_from_rows(btc_rows, "BTC/USDT", "5m").with_row_index("i")
    eth = candles_from_rows(eth_rows, "ETH/USDT", "5m").with_row_index("i")
    # BTC, ETH, BTC, ETH, ...: globally the time goes back every other row, per symbol it never does
    interleaved = pl.concat([btc, eth]).sort("i", "symbol", maintain_order=True).drop("i")
    assert interleaved["symbol"].head(2).to_list() == ["BTC/USDT", "ETH/USDT"]
    assert validate_candles(interleaved) is None


def test_off_grid_is_judged_against_each_rows_own_timeframe(exchange):
    since = int(SLICE_START.timestamp() * 1000)
    hourly = candles_from_rows(exchange.fetch_ohlcv("BTC/USDT", "1h", since, 5), "BTC/USDT", "1h")
    assert validate_candles(hourly) is None
    # a 5m-aligned time is off the 1h grid
    shifted = hourly.with_columns(
        pl.when(pl.int_range(pl.len()) == 2).then(pl.col("ts") + pl.duration(minutes=5)).otherwise("ts").alias("ts")
    )
    with pytest.raises(CandleValidationError) as caught:
        validate_candles(shifted)
    assert "BTC/USDT 1h at 2024-03-10T02:05:00Z: timestamp not on the timeframe grid [off_grid_timestamp]" in str(
        caught.value
    )


def test_more_than_twenty_violations_are_summarised():
    violations = [Violation("negative_volume", f"S{i}/USDT", "5m", SLICE_START, 1, "volume=-1") for i in range(23)]
    message = str(CandleValidationError(violations))
    assert message.count("[negative_volume]") == 20
    assert message.endswith("... and 3 more")


def test_frame_missing_a_column_is_refused_by_name(btc_rows):
    candles = candles_from_rows(btc_rows, "BTC/USDT", "5m").drop("volume")
    with pytest.raises(ValueError, match=r"lacks columns \['volume'\]"):
        validate_candles(candles)


def test_infinite_high_is_refused_naming_symbol_time_rule_and_value(btc_rows):
    rows = copy.deepcopy(btc_rows)
    rows[BROKEN][2] = math.inf
    with pytest.raises(CandleValidationError) as caught:
        validate_candles(candles_from_rows(rows, "BTC/USDT", "5m"))
    (violation,) = caught.value.violations
    assert str(violation).startswith(
        "BTC/USDT 5m at 2024-03-10T00:50:00Z: a price or the volume is infinite (+inf or -inf) [non_finite]: "
    )
    assert "high=inf" in str(violation)


def test_a_row_with_both_nan_and_inf_is_named_by_both_value_rules(btc_rows):
    rows = copy.deepcopy(btc_rows)
    rows[BROKEN][1] = math.nan
    rows[BROKEN][2] = math.inf
    with pytest.raises(CandleValidationError) as caught:
        validate_candles(candles_from_rows(rows, "BTC/USDT", "5m"))
    assert [v.rule for v in caught.value.violations] == ["missing_value", "non_finite"]
