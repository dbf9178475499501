"""The offline exchange answers like a ccxt client, over the bundled real candles and over a
folder of freqtrade-named files; its clock decides which candles exist yet."""

from __future__ import annotations

import copy
import json
import time
from datetime import UTC, datetime, timedelta

import ccxt
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from tracer_assets.data import BUNDLED_REPLAY_DIR
from tracer_assets.dev import clock_environment
from tracer_assets.market.candles import CandleValidationError, candles_from_rows, validate_candles
from tracer_assets.market.download import fetch_candles
from tracer_assets.resources.exchange import ExchangeResource
from tracer_assets.resources.replay_exchange import ReplayClock, ReplayExchange, pair_to_symbol, read_candle_file
from tracer_assets.settings import DEFAULT_SYMBOLS, load_settings

UTC = UTC
FIVE_MIN_MS = 300_000
HOUR_MS = 3_600_000
BUNDLED_SYMBOLS = {"BTC/USDT", "ETH/USDT", "SOL/USDT", "XRP/USDT", "DOGE/USDT", "LINK/USDT", "LTC/USDT", "AVAX/USDT"}
COMMON_END = datetime(2024, 9, 6, 4, 45, tzinfo=UTC)  # BTC and ETH stop at 04:40 (open time)


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _file_rows(name: str) -> list[list]:
    """The bundled file read straight with polars, as ccxt rows: [ms, o, h, l, c, v]."""
    raw = pl.read_parquet(BUNDLED_REPLAY_DIR / name)
    return raw.select(pl.col("date").dt.epoch("ms"), "open", "high", "low", "close", "volume").rows()


@pytest.fixture(scope="module")
def exchange() -> ReplayExchange:
    return ReplayExchange(BUNDLED_REPLAY_DIR, symbols=DEFAULT_SYMBOLS)


@pytest.fixture(scope="module")
def btc_file() -> list[list]:
    return _file_rows("BTC_USDT-5m.parquet")


class Wall:
    """An injectable wall clock (seconds since the epoch)."""

    def __init__(self, at: datetime):
        self.now = at.timestamp()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# --- markets and candles -------------------------------------------------------------------


def test_load_markets_lists_every_bundled_symbol(exchange):
    markets = exchange.load_markets()
    assert set(markets) == BUNDLED_SYMBOLS
    btc = markets["BTC/USDT"]
    assert (btc["id"], btc["base"], btc["quote"], btc["spot"], btc["type"]) == ("BTCUSDT", "BTC", "USDT", True, "spot")
    assert exchange.has["fetchOHLCV"] is True


def test_timeframes_are_the_ones_on_disk(exchange):
    assert list(exchange.timeframes) == ["5m", "1h"]


def test_fetch_ohlcv_since_returns_the_file_rows_oldest_first(exchange, btc_file):
    since = ms(datetime(2024, 5, 20, 13, 15, tzinfo=UTC))
    rows = exchange.fetch_ohlcv("BTC/USDT", "5m", since=since, limit=37)
    first = next(i for i, row in enumerate(btc_file) if row[0] == since)
    assert rows == [list(row) for row in btc_file[first : first + 37]]
    assert all(type(row[0]) is int and len(row) == 6 for row in rows)
    assert [row[0] for row in rows] == list(range(since, since + 37 * FIVE_MIN_MS, FIVE_MIN_MS))


def test_fetch_ohlcv_since_between_candles_starts_at_the_next_one(exchange):
    since = ms(datetime(2024, 5, 20, 13, 15, tzinfo=UTC))
    rows = exchange.fetch_ohlcv("BTC/USDT", "5m", since=since + 1, limit=3)
    assert [row[0] for row in rows] == [since + FIVE_MIN_MS * k for k in (1, 2, 3)]


def test_fetch_ohlcv_hourly_matches_the_hourly_file(exchange):
    hourly = _file_rows("ETH_USDT-1h.parquet")
    rows = exchange.fetch_ohlcv("ETH/USDT", "1h", since=hourly[100][0], limit=24)
    assert rows == [list(row) for row in hourly[100:124]]


@pytest.mark.parametrize("limit", [1, 5, 1000])
def test_fetch_ohlcv_respects_limit(exchange, limit):
    rows = exchange.fetch_ohlcv("BTC/USDT", "5m", since=ms(datetime(2024, 2, 1, tzinfo=UTC)), limit=limit)
    assert len(rows) == limit


def test_fetch_ohlcv_without_limit_gives_a_thousand_like_binance(exchange):
    assert len(exchange.fetch_ohlcv("BTC/USDT", "5m", since=ms(datetime(2024, 2, 1, tzinfo=UTC)))) == 1000


def test_fetch_ohlcv_without_since_returns_the_newest_limit_candles(exchange, btc_file):
    rows = exchange.fetch_ohlcv("BTC/USDT", "5m", limit=12)
    assert rows == [list(row) for row in btc_file[-12:]]
    assert rows[-1][0] == ms(datetime(2024, 9, 6, 4, 40, tzinfo=UTC))


def test_symbol_with_longer_data_is_cut_at_the_common_end(exchange):
    sol = _file_rows("SOL_USDT-5m.parquet")
    assert sol[-1][0] > ms(COMMON_END)  # SOL's own file runs on to 2024-09-07
    newest = exchange.fetch_ohlcv("SOL/USDT", "5m", limit=2)
    assert [row[0] for row in newest] == [ms(COMMON_END) - 2 * FIVE_MIN_MS, ms(COMMON_END) - FIVE_MIN_MS]
    assert exchange.fetch_ohlcv("SOL/USDT", "5m", since=ms(COMMON_END), limit=10) == []


def test_since_past_the_end_returns_nothing(exchange):
    assert exchange.fetch_ohlcv("BTC/USDT", "5m", since=ms(datetime(2025, 1, 1, tzinfo=UTC)), limit=10) == []


def test_unknown_symbol_is_bad_symbol(exchange):
    with pytest.raises(ccxt.BadSymbol, match="NOPE/USDT"):
        exchange.fetch_ohlcv("NOPE/USDT", "5m", limit=1)


def test_unknown_timeframe_is_bad_request_not_bad_symbol(exchange):
    with pytest.raises(ccxt.BadRequest, match="15m candles for BTC/USDT") as caught:
        exchange.fetch_ohlcv("BTC/USDT", "15m", limit=1)
    assert not isinstance(caught.value, ccxt.BadSymbol)


def test_futures_and_funding_are_not_supported(exchange):
    with pytest.raises(ccxt.NotSupported):
        exchange.fetch_open_interest("BTC/USDT")
    with pytest.raises(ccxt.NotSupported):
        exchange.fetch_funding_rate("BTC/USDT")


# --- the clock -------------------------------------------------------------------------------


def test_clock_is_stopped_at_the_common_end_of_the_default_six_symbols(exchange):
    assert exchange.symbols == ("BTC/USDT", "ETH/USDT", "SOL/USDT", "XRP/USDT", "DOGE/USDT", "LINK/USDT")
    assert exchange.clock.start is None
    assert exchange.milliseconds() == ms(COMMON_END)
    assert exchange.data_start_ms == ms(datetime(2024, 1, 1, tzinfo=UTC))


def test_clock_end_follows_the_configured_symbols():
    late = ReplayExchange(BUNDLED_REPLAY_DIR, symbols=["SOL/USDT", "AVAX/USDT"])
    assert late.milliseconds() == ms(datetime(2024, 9, 7, 2, 20, tzinfo=UTC))  # SOL's last open 02:15


def test_running_clock_makes_new_candles_appear_as_wall_time_advances():
    anchor = datetime(2031, 1, 1, tzinfo=UTC)
    wall = Wall(anchor)
    start = datetime(2024, 4, 2, 12, 0, tzinfo=UTC)
    replay = ReplayExchange(
        BUNDLED_REPLAY_DIR,
        symbols=["BTC/USDT"],
        clock_start=start,
        clock_speed=60.0,
        clock_anchor=anchor,
        wall_seconds=wall,
    )

    def newest() -> datetime:
        (row,) = replay.fetch_ohlcv("BTC/USDT", "5m", limit=1)
        return datetime.fromtimestamp(row[0] / 1000, tz=UTC)

    assert replay.milliseconds() == ms(start)
    assert newest() == datetime(2024, 4, 2, 11, 55, tzinfo=UTC)

    wall.advance(4)  # 4 wall seconds x 60 = 12:04: the 12:00 candle is still forming
    assert replay.milliseconds() == ms(datetime(2024, 4, 2, 12, 4, tzinfo=UTC))
    assert newest() == datetime(2024, 4, 2, 11, 55, tzinfo=UTC)

    wall.advance(1)  # 12:05: the 12:00 candle has closed
    assert newest() == datetime(2024, 4, 2, 12, 0, tzinfo=UTC)

    wall.advance(30)  # 12:35
    assert newest() == datetime(2024, 4, 2, 12, 30, tzinfo=UTC)
    rows = replay.fetch_ohlcv("BTC/USDT", "5m", since=ms(start), limit=100)
    assert len(rows) == 7  # 12:00 ... 12:30, nothing after

    wall.advance(10 * 365 * 86_400)  # far beyond the data: the clock stops at its end
    assert replay.milliseconds() == replay.data_end_ms == ms(COMMON_END)
    assert newest() == datetime(2024, 9, 6, 4, 40, tzinfo=UTC)


def test_an_hourly_candle_is_only_served_once_its_hour_has_closed():
    start = datetime(2024, 4, 2, 12, 59, 59, tzinfo=UTC)
    wall = Wall(start)
    replay = ReplayExchange(
        BUNDLED_REPLAY_DIR, symbols=["BTC/USDT"], clock_start=start, clock_anchor=start, wall_seconds=wall
    )
    assert replay.fetch_ohlcv("BTC/USDT", "1h", limit=1)[0][0] == ms(datetime(2024, 4, 2, 11, tzinfo=UTC))
    wall.advance(1)
    assert replay.fetch_ohlcv("BTC/USDT", "1h", limit=1)[0][0] == ms(datetime(2024, 4, 2, 12, tzinfo=UTC))


def test_clock_anchor_defaults_to_midnight_utc_of_the_wall_day():
    wall = Wall(datetime(2031, 6, 15, 6, 30, tzinfo=UTC))
    clock = ReplayClock(ms(COMMON_END), start=datetime(2024, 3, 1, tzinfo=UTC), speed=1.0, wall_seconds=wall)
    assert clock.now_ms() == ms(datetime(2024, 3, 1, 6, 30, tzinfo=UTC))
    stopped = ReplayClock(ms(COMMON_END), wall_seconds=wall)
    assert stopped.now_ms() == ms(COMMON_END)


# --- a TRACER_REPLAY_DIR of freqtrade files --------------------------------------------------


@pytest.fixture
def freqtrade_dir(tmp_path, btc_file):
    """A small folder as freqtrade writes it: BTC as .feather, ETH as .json, a stray README."""
    window = pl.col("date").is_between(
        datetime(2024, 6, 1, tzinfo=UTC), datetime(2024, 6, 2, tzinfo=UTC), closed="left"
    )
    btc = pl.read_parquet(BUNDLED_REPLAY_DIR / "BTC_USDT-5m.parquet").filter(window)
    btc.write_ipc(tmp_path / "BTC_USDT-5m.feather", compression="lz4")
    eth = pl.read_parquet(BUNDLED_REPLAY_DIR / "ETH_USDT-5m.parquet").filter(window)
    eth_rows = eth.select(pl.col("date").dt.epoch("ms"), "open", "high", "low", "close", "volume").rows()
    (tmp_path / "ETH_USDT-5m.json").write_text(json.dumps([list(r) for r in eth_rows]))
    (tmp_path / "README.md").write_text("not candles")
    return tmp_path


def test_folder_of_feather_and_json_files_replays_like_the_bundle(freqtrade_dir, exchange):
    replay = ReplayExchange(freqtrade_dir)
    assert replay.symbols == ("BTC/USDT", "ETH/USDT")
    assert set(replay.load_markets()) == {"BTC/USDT", "ETH/USDT"}
    assert replay.milliseconds() == ms(datetime(2024, 6, 2, tzinfo=UTC))
    since = ms(datetime(2024, 6, 1, 10, tzinfo=UTC))
    for symbol in ("BTC/USDT", "ETH/USDT"):
        assert replay.fetch_ohlcv(symbol, "5m", since=since, limit=50) == exchange.fetch_ohlcv(
            symbol, "5m", since=since, limit=50
        )
    assert len(replay.fetch_ohlcv("ETH/USDT", "5m", since=0, limit=1000)) == 288


def test_read_candle_file_reads_json_feather_and_parquet_alike(freqtrade_dir):
    feather = read_candle_file(freqtrade_dir / "BTC_USDT-5m.feather")
    assert feather.columns == ["ms", "open", "high", "low", "close", "volume"]
    assert feather.height == 288
    parquet = read_candle_file(BUNDLED_REPLAY_DIR / "BTC_USDT-5m.parquet")
    assert_frame_equal(feather, parquet.filter(pl.col("ms").is_in(feather["ms"].implode())))
    json_frame = read_candle_file(freqtrade_dir / "ETH_USDT-5m.json")
    assert json_frame.schema == feather.schema


def test_parquet_is_preferred_over_json_for_the_same_pair(freqtrade_dir):
    eth = pl.read_parquet(BUNDLED_REPLAY_DIR / "ETH_USDT-5m.parquet").head(12)  # 2024-01-01, unlike the json
    eth.write_parquet(freqtrade_dir / "ETH_USDT-5m.parquet")
    replay = ReplayExchange(freqtrade_dir, symbols=["ETH/USDT"])
    assert replay.fetch_ohlcv("ETH/USDT", "5m", since=0, limit=1)[0][0] == ms(datetime(2024, 1, 1, tzinfo=UTC))


def test_unreadable_candle_file_is_named(tmp_path):
    (tmp_path / "BTC_USDT-5m.json").write_text("{ not json")
    with pytest.raises(ValueError, match="BTC_USDT-5m.json"):
        ReplayExchange(tmp_path)


def test_folder_without_candle_files_is_refused_naming_the_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "BTC-USDT.json").write_text("[]")  # not freqtrade's naming
    with pytest.raises(ValueError, match="holds no candle files") as caught:
        ReplayExchange(tmp_path)
    assert str(tmp_path) in str(caught.value)


def test_missing_folder_is_refused_naming_it(tmp_path):
    with pytest.raises(ValueError, match="is not a folder") as caught:
        ReplayExchange(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(caught.value)


def test_configured_symbol_without_base_candles_is_refused_naming_it(freqtrade_dir):
    with pytest.raises(ValueError, match="no 5m candles for SOL/USDT") as caught:
        ReplayExchange(freqtrade_dir, symbols=["BTC/USDT", "SOL/USDT"])
    assert "it has: BTC/USDT, ETH/USDT" in str(caught.value)


def test_a_file_out_of_order_is_served_as_it_is_and_validation_catches_it(tmp_path, btc_file):
    rows = [list(r) for r in btc_file[:20]]
    rows[5], rows[6] = rows[6], rows[5]
    (tmp_path / "BTC_USDT-5m.json").write_text(json.dumps(rows))
    replay = ReplayExchange(tmp_path)
    served = replay.fetch_ohlcv("BTC/USDT", "5m", since=0, limit=100)
    assert served == rows
    with pytest.raises(CandleValidationError, match=r"2024-01-01T00:25:00Z.*\[out_of_order_timestamp\]"):
        validate_candles(candles_from_rows(served, "BTC/USDT", "5m"))


@pytest.mark.parametrize(
    ("pair", "symbol"),
    [("BTC_USDT", "BTC/USDT"), ("XRP_USDT_USDT", "XRP/USDT:USDT"), ("1000SHIB_USDT", "1000SHIB/USDT")],
)
def test_freqtrade_pair_names_become_ccxt_symbols(pair, symbol):
    assert pair_to_symbol(pair) == symbol


def test_futures_file_names_are_read_as_swap_markets(tmp_path, btc_file):
    (tmp_path / "XRP_USDT_USDT-5m-futures.json").write_text(json.dumps([list(r) for r in btc_file[:3]]))
    replay = ReplayExchange(tmp_path)
    assert replay.symbols == ("XRP/USDT:USDT",)
    market = replay.load_markets()["XRP/USDT:USDT"]
    assert (market["type"], market["spot"], market["base"], market["quote"]) == ("swap", False, "XRP", "USDT")


# --- pagination over the replay ---------------------------------------------------------------


class CountingExchange:
    def __init__(self, inner):
        self.inner = inner
        self.calls = []

    def milliseconds(self):
        return self.inner.milliseconds()

    def fetch_ohlcv(self, symbol, timeframe, since=None, limit=None, params=None):
        self.calls.append((since, limit))
        return self.inner.fetch_ohlcv(symbol, timeframe, since, limit)


def test_fetch_candles_in_pages_of_100_equals_one_big_page(exchange):
    start, end = ms(datetime(2024, 7, 1, tzinfo=UTC)), ms(datetime(2024, 7, 3, tzinfo=UTC))
    paged = CountingExchange(exchange)
    small = fetch_candles(paged, "BTC/USDT", "5m", start, end, page_limit=100)
    one = CountingExchange(exchange)
    big = fetch_candles(one, "BTC/USDT", "5m", start, end, page_limit=1000)

    assert small.height == 576
    assert_frame_equal(small, big)
    assert len(paged.calls) == 6 and len(one.calls) == 1
    assert [since for since, _ in paged.calls] == [start + k * 100 * FIVE_MIN_MS for k in range(6)]
    assert small["ts"].min() == datetime(2024, 7, 1, tzinfo=UTC)
    assert small["ts"].max() == datetime(2024, 7, 2, 23, 55, tzinfo=UTC)


def test_fetch_candles_stops_at_the_replay_clock(exchange):
    start = ms(datetime(2024, 9, 5, tzinfo=UTC))
    candles = fetch_candles(exchange, "ETH/USDT", "5m", start, ms(datetime(2024, 9, 10, tzinfo=UTC)), page_limit=100)
    assert candles["ts"].max() == COMMON_END - timedelta(minutes=5)
    assert candles.height == (ms(COMMON_END) - start) // FIVE_MIN_MS
    validate_candles(candles)


def test_served_rows_are_copies_not_views_of_the_cache(exchange):
    since = ms(datetime(2024, 2, 1, tzinfo=UTC))
    rows = exchange.fetch_ohlcv("BTC/USDT", "5m", since=since, limit=2)
    kept = copy.deepcopy(rows)
    rows[0][1] = -1.0
    assert exchange.fetch_ohlcv("BTC/USDT", "5m", since=since, limit=2) == kept


# --- empty candle files --------------------------------------------------------------------------


def _write_empty(folder, ext: str) -> None:
    """A BTC file with the right columns and no rows, in one of the three formats."""
    frame = pl.read_parquet(BUNDLED_REPLAY_DIR / "BTC_USDT-5m.parquet").head(0)
    if ext == "parquet":
        frame.write_parquet(folder / "BTC_USDT-5m.parquet")
    elif ext == "feather":
        frame.write_ipc(folder / "BTC_USDT-5m.feather")
    else:
        (folder / "BTC_USDT-5m.json").write_text("[]")


@pytest.mark.parametrize("ext", ["parquet", "feather", "json"])
def test_an_empty_candle_file_is_refused_naming_the_file_and_the_symbol(freqtrade_dir, ext):
    (freqtrade_dir / "BTC_USDT-5m.feather").unlink()
    _write_empty(freqtrade_dir, ext)
    with pytest.raises(ValueError) as caught:
        ReplayExchange(freqtrade_dir, symbols=["BTC/USDT", "ETH/USDT"])
    message = str(caught.value)
    assert str(freqtrade_dir / f"BTC_USDT-5m.{ext}") in message
    assert "(BTC/USDT 5m)" in message and "holds no candles" in message
    assert "ETH" not in message


def test_an_empty_file_of_a_symbol_not_configured_is_left_alone(freqtrade_dir):
    (freqtrade_dir / "SOL_USDT-5m.json").write_text("[]")
    assert ReplayExchange(freqtrade_dir, symbols=["ETH/USDT"]).symbols == ("ETH/USDT",)


@pytest.mark.parametrize("ext", ["parquet", "feather", "json"])
def test_a_zero_byte_candle_file_is_refused_naming_the_file_and_the_symbol(tmp_path, ext):
    (tmp_path / f"BTC_USDT-5m.{ext}").write_bytes(b"")
    with pytest.raises(ValueError) as caught:
        ReplayExchange(tmp_path)
    message = str(caught.value)
    assert f"cannot read candle file {tmp_path / f'BTC_USDT-5m.{ext}'}" in message
    assert message.endswith("(the 5m candles of BTC/USDT)")


# --- the clock `make dev` runs ------------------------------------------------------------------


def test_make_devs_clock_moves_from_three_days_before_the_end_and_serves_new_candles():
    """The settings make dev adds (tracer_assets/dev.py), read as every process it starts reads
    them: launched ten and a half minutes ago at 2x, the clock is 21 dataset minutes past its start."""
    env = {"TRACER_SYMBOLS": "BTC/USDT,ETH/USDT"}
    launch = datetime.now(UTC) - timedelta(minutes=10, seconds=30)
    env |= clock_environment(env, launch)
    start = COMMON_END - timedelta(days=3)
    assert env["TRACER_REPLAY_START"] == "2024-09-03T04:45:00Z" == f"{start:%Y-%m-%dT%H:%M:%SZ}"
    assert env["TRACER_REPLAY_SPEED"] == "2"  # 5m candles, a tick every 3 minutes: a candle every 2.5 minutes
    assert env["TRACER_REPLAY_ANCHOR"] == f"{launch:%Y-%m-%dT%H:%M:%SZ}"
    exchange = ExchangeResource.from_settings(load_settings(env))

    # 630 wall seconds (plus the anchor's cut second and the test's own time) x 2: 05:06 and a little
    # more; the next candle closes at 05:10, two wall minutes away, so nothing here races the clock.
    now = exchange.now()
    assert start + timedelta(minutes=21) <= now < start + timedelta(minutes=22)
    rows = exchange.client().fetch_ohlcv("BTC/USDT", "5m", since=ms(start - timedelta(hours=1)), limit=100)
    served = [datetime.fromtimestamp(row[0] / 1000, tz=UTC) for row in rows]
    # Nothing from the clock's future: the history make dev stores before launch ends at the start.
    assert served[-1] == datetime(2024, 9, 3, 5, 0, tzinfo=UTC)
    assert [t for t in served if t >= start] == [start + timedelta(minutes=m) for m in (0, 5, 10, 15)]

    # A process started later (the daemon's run worker) inherits the anchor: the same time, moving on.
    later = ExchangeResource.from_settings(load_settings(env))
    time.sleep(0.01)
    assert now < later.now() < now + timedelta(seconds=5)

    # At launch (anchor = now) the clock shows the start and no candle after it exists yet.
    fresh = dict(env, TRACER_REPLAY_ANCHOR=f"{datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ}")
    at_launch = ExchangeResource.from_settings(load_settings(fresh))
    assert start <= at_launch.now() < start + timedelta(seconds=10)
    (newest,) = at_launch.client().fetch_ohlcv("BTC/USDT", "5m", limit=1)
    assert newest[0] == ms(start - timedelta(minutes=5))


@pytest.mark.parametrize(("cron", "speed"), [("*/3 * * * *", "2"), ("* * * * *", "5"), ("*/10 * * * *", "1")])
def test_make_devs_clock_brings_a_new_candle_every_tick_or_sooner(cron, speed):
    env = {"TRACER_TICK_CRON": cron}
    assert clock_environment(env, datetime.now(UTC))["TRACER_REPLAY_SPEED"] == speed


def test_make_dev_keeps_the_clock_settings_it_is_given_and_sets_none_off_replay():
    given = {
        "TRACER_REPLAY_START": "2024-06-01T00:00:00Z",
        "TRACER_REPLAY_SPEED": "10",
        "TRACER_REPLAY_ANCHOR": "2031-01-01T00:00:00Z",
    }
    assert clock_environment(given, datetime.now(UTC)) == {"TRACER_MAX_SIGNAL_AGE_SECONDS": "1800"}  # 3 min at 10x
    launch = datetime(2031, 5, 1, 12, 30, tzinfo=UTC)
    assert clock_environment({"TRACER_REPLAY_START": "2024-06-01"}, launch) == {
        "TRACER_REPLAY_SPEED": "2",
        "TRACER_REPLAY_ANCHOR": "2031-05-01T12:30:00Z",
    }
    assert clock_environment({"TRACER_EXCHANGE": "binance"}, launch) == {}


def test_a_fast_dev_clock_lets_a_signal_be_one_tick_of_wall_time_old():
    """At 20x a 3-minute tick is an hour of market time: the loop's own latency would make every
    signal older than two 5m candles, and every decision a HOLD for a stale signal."""
    fast = {"TRACER_REPLAY_START": "2024-06-01", "TRACER_REPLAY_SPEED": "20"}
    assert clock_environment(fast, datetime.now(UTC))["TRACER_MAX_SIGNAL_AGE_SECONDS"] == "3600"
    given = clock_environment({**fast, "TRACER_MAX_SIGNAL_AGE_SECONDS": "900"}, datetime.now(UTC))
    assert "TRACER_MAX_SIGNAL_AGE_SECONDS" not in given
