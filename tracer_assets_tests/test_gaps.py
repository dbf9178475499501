"""find_gaps on real candles: holes cut out of the bundled 2024 data, a symbol with nothing,
the candle still forming, and (when ../shared is there) Binance's real 2021 maintenance gaps."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

import tracer_assets
from tracer_assets.data import BUNDLED_REPLAY_DIR
from tracer_assets.market.candles import GAP_SCHEMA, closed_window_end, find_gaps, validate_candles
from tracer_assets.market.download import fetch_candles, fetch_candles_for_symbols
from tracer_assets.resources.replay_exchange import ReplayExchange

UTC = UTC
DAY = datetime(2024, 3, 10, tzinfo=UTC)
DAY_END = DAY + timedelta(days=1)
FIVE_MIN = timedelta(minutes=5)


def utc(*parts) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _gaps(frame: pl.DataFrame) -> list[tuple]:
    return frame.sort("symbol", "gap_start").select("symbol", "gap_start", "gap_end", "missing_candles").rows()


@pytest.fixture(scope="module")
def exchange() -> ReplayExchange:
    return ReplayExchange(BUNDLED_REPLAY_DIR, symbols=["BTC/USDT", "ETH/USDT"])


@pytest.fixture(scope="module")
def btc_day(exchange) -> pl.DataFrame:
    candles = fetch_candles(exchange, "BTC/USDT", "5m", ms(DAY), ms(DAY_END))
    assert candles.height == 288
    return candles


def _without(candles: pl.DataFrame, start: datetime, count: int) -> pl.DataFrame:
    cut = candles.filter((pl.col("ts") >= start) & (pl.col("ts") < start + count * FIVE_MIN))
    assert cut.height == count  # the hole really removes `count` real candles
    return candles.filter(~pl.col("ts").is_in(cut["ts"].implode()))


def test_complete_real_day_has_no_gaps(btc_day):
    gaps = find_gaps(btc_day, ["BTC/USDT"], "5m", DAY, DAY_END)
    assert gaps.is_empty()
    assert gaps.schema == pl.Schema(GAP_SCHEMA)


@pytest.mark.parametrize(
    ("hole_start", "count", "expected"),
    [
        (utc(2024, 3, 10, 12, 0), 1, (utc(2024, 3, 10, 12, 0), utc(2024, 3, 10, 12, 5), 1)),
        (utc(2024, 3, 10, 12, 0), 10, (utc(2024, 3, 10, 12, 0), utc(2024, 3, 10, 12, 50), 10)),
        (DAY, 3, (DAY, utc(2024, 3, 10, 0, 15), 3)),
        (utc(2024, 3, 10, 23, 50), 2, (utc(2024, 3, 10, 23, 50), DAY_END, 2)),
    ],
    ids=["one_candle", "run_of_ten", "at_window_start", "at_window_end"],
)
def test_hole_in_real_candles_is_reported_exactly(btc_day, hole_start, count, expected):
    candles = _without(btc_day, hole_start, count)
    gaps = find_gaps(candles, ["BTC/USDT"], "5m", DAY, DAY_END)
    assert _gaps(gaps) == [("BTC/USDT", *expected)]
    assert gaps["timeframe"].to_list() == ["5m"]


def test_several_holes_are_reported_separately_and_candles_outside_the_window_ignored(exchange, btc_day):
    candles = _without(_without(btc_day, utc(2024, 3, 10, 1, 0), 2), utc(2024, 3, 10, 18, 30), 4)
    # real neighbours either side of the window must not hide or create gaps
    around = pl.concat(
        [
            fetch_candles(exchange, "BTC/USDT", "5m", ms(DAY - FIVE_MIN * 3), ms(DAY)),
            candles,
            fetch_candles(exchange, "BTC/USDT", "5m", ms(DAY_END), ms(DAY_END + FIVE_MIN * 3)),
        ]
    )
    assert around.height == candles.height + 6
    assert _gaps(find_gaps(around, ["BTC/USDT"], "5m", DAY, DAY_END)) == [
        ("BTC/USDT", utc(2024, 3, 10, 1, 0), utc(2024, 3, 10, 1, 10), 2),
        ("BTC/USDT", utc(2024, 3, 10, 18, 30), utc(2024, 3, 10, 18, 50), 4),
    ]


def test_symbol_with_no_candles_in_the_window_is_one_gap_covering_it(btc_day):
    gaps = find_gaps(btc_day, ["BTC/USDT", "ETH/USDT"], "5m", DAY, DAY_END)
    assert _gaps(gaps) == [("ETH/USDT", DAY, DAY_END, 288)]


def test_symbol_with_no_candles_at_all_on_an_empty_frame(btc_day):
    gaps = find_gaps(btc_day.clear(), ["SOL/USDT"], "5m", DAY, DAY + timedelta(hours=2))
    assert _gaps(gaps) == [("SOL/USDT", DAY, DAY + timedelta(hours=2), 24)]


def test_candles_of_another_timeframe_do_not_fill_a_gap(exchange, btc_day):
    hourly = fetch_candles(exchange, "BTC/USDT", "1h", ms(DAY), ms(DAY_END))
    assert hourly.height == 24
    candles = pl.concat([_without(btc_day, utc(2024, 3, 10, 6, 0), 1), hourly])
    assert _gaps(find_gaps(candles, ["BTC/USDT"], "5m", DAY, DAY_END)) == [
        ("BTC/USDT", utc(2024, 3, 10, 6, 0), utc(2024, 3, 10, 6, 5), 1)
    ]
    assert find_gaps(candles, ["BTC/USDT"], "1h", DAY, DAY_END).is_empty()


def test_empty_or_reversed_window_has_no_gaps(btc_day):
    assert find_gaps(btc_day, ["BTC/USDT"], "5m", DAY, DAY).is_empty()
    assert find_gaps(btc_day, ["BTC/USDT"], "5m", DAY_END, DAY).is_empty()


@pytest.mark.parametrize(
    ("now", "closed_end"),
    [
        (utc(2024, 3, 10, 12, 7, 30), utc(2024, 3, 10, 12, 5)),  # 12:05 candle still forming
        (utc(2024, 3, 10, 12, 5), utc(2024, 3, 10, 12, 5)),  # 12:00 closed this instant
        (utc(2024, 3, 10, 12, 4, 59), utc(2024, 3, 10, 12, 0)),  # 12:00 closes in one second
    ],
)
def test_window_ending_at_closed_window_end_does_not_report_the_forming_candle(now, closed_end):
    # the replay clock shows `now`: the exchange serves only closed candles
    exchange = ReplayExchange(
        BUNDLED_REPLAY_DIR,
        symbols=["BTC/USDT"],
        clock_start=now,
        clock_anchor=now,
        wall_seconds=lambda: now.timestamp(),
    )
    assert exchange.milliseconds() == ms(now)
    end = closed_window_end(DAY_END, exchange.milliseconds(), "5m")
    assert end == closed_end

    candles = fetch_candles(exchange, "BTC/USDT", "5m", ms(DAY), ms(DAY_END))
    assert candles["ts"].max() == closed_end - FIVE_MIN
    assert find_gaps(candles, ["BTC/USDT"], "5m", DAY, end).is_empty()
    # the naive window would call everything from the forming candle on "missing"
    assert _gaps(find_gaps(candles, ["BTC/USDT"], "5m", DAY, DAY_END)) == [
        ("BTC/USDT", closed_end, DAY_END, (DAY_END - closed_end) // FIVE_MIN)
    ]


def test_closed_window_end_keeps_a_window_that_is_already_over():
    assert closed_window_end(DAY_END, ms(DAY_END + timedelta(days=3)), "5m") == DAY_END
    assert closed_window_end(DAY_END, ms(utc(2024, 3, 10, 13, 59)), "1h") == utc(2024, 3, 10, 13, 0)


# --- the real 2021 data with Binance maintenance gaps (optional, in ../shared) ---------------


def _shared_2021() -> Path:
    base = os.environ.get("TRACER_SHARED_DATA")
    root = Path(base) if base else Path(tracer_assets.__file__).resolve().parents[2] / "shared" / "data"
    return root / "binance_spot_2021"


# Last candle before each hole and first after, as read from BTC_USDT-5m.json: the gap is
# [last before + 5m, first after).
REAL_2021_GAPS = [
    (utc(2020, 12, 21, 14, 5), utc(2020, 12, 21, 18, 0)),
    (utc(2020, 12, 25, 1, 55), utc(2020, 12, 25, 3, 0)),
    (utc(2021, 2, 11, 3, 40), utc(2021, 2, 11, 5, 0)),
    (utc(2021, 3, 6, 1, 55), utc(2021, 3, 6, 3, 30)),
    (utc(2021, 4, 20, 1, 55), utc(2021, 4, 20, 4, 30)),
    (utc(2021, 4, 25, 4, 0), utc(2021, 4, 25, 8, 45)),
]


def test_replay_of_real_2021_binance_data_finds_exactly_the_six_maintenance_gaps():
    folder = _shared_2021()
    if not (folder / "BTC_USDT-5m.json").is_file():
        pytest.skip(f"optional real 2021 data not present: {folder}/BTC_USDT-5m.json (set TRACER_SHARED_DATA)")

    exchange = ReplayExchange(data_dir=folder, symbols=["BTC/USDT"], base_timeframe="5m")
    start, end = utc(2020, 12, 1), utc(2021, 8, 1)
    download = fetch_candles_for_symbols(exchange, ["BTC/USDT"], "5m", start, end)
    assert download.failures == {}
    candles = download.candles
    validate_candles(candles)  # real data: sorted, on the grid, sane

    window_end = closed_window_end(end, exchange.milliseconds(), "5m")
    assert window_end == utc(2021, 7, 17, 21, 10)  # the clock stops at the end of the file
    gaps = find_gaps(candles, ["BTC/USDT"], "5m", start, window_end)

    expected = [
        ("BTC/USDT", before + FIVE_MIN, after, (after - before - FIVE_MIN) // FIVE_MIN)
        for before, after in REAL_2021_GAPS
    ]
    assert _gaps(gaps) == expected
    assert [g[3] for g in expected] == [46, 12, 15, 18, 30, 56]
    # every candle of the window is either present or inside one of the six gaps
    assert candles.height + gaps["missing_candles"].sum() == (window_end - start) // FIVE_MIN
    # and the neighbours of each gap are real candles
    present = set(candles["ts"].to_list())
    for before, after in REAL_2021_GAPS:
        assert before in present and after in present
