"""ccxt's real `binance` client against a local fake Binance: pagination, retries, skipped
symbols, market context. Nothing leaves 127.0.0.1: every API URL of the client is rebased
onto the fake server, and a short client timeout turns a stray request into a failure."""

from __future__ import annotations

import socket
import time
from datetime import UTC, datetime

import ccxt
import polars as pl
import pytest

# A sibling module: pytest puts this folder (it has no __init__.py) on sys.path.
from fake_binance import BUNDLED_DATA, DATA_END_MS, DEFAULT_PERPETUALS, FakeBinance
from polars.testing import assert_frame_equal

from tracer_assets.market.download import RetryPolicy, fetch_candles, fetch_candles_for_symbols
from tracer_assets.market.timeframes import timeframe_ms
from tracer_assets.resources.ccxt_exchange import fetch_market_context, make_ccxt_exchange, spot_market_context
from tracer_assets.resources.replay_exchange import ReplayExchange, read_candle_file

BACKOFF = 0.01
KLINES = "/api/v3/klines"


@pytest.fixture
def server():
    with FakeBinance() as fake:
        yield fake


@pytest.fixture
def exchange(server):
    client = make_ccxt_exchange("binance", api_urls={"*": server.url})
    client.timeout = 2000  # ms: a request that escaped to the internet fails fast instead of hanging
    return client


def recording_policy(retries: int = 3) -> tuple[RetryPolicy, list[float]]:
    """A tiny-backoff policy that also writes down every sleep it takes."""
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        time.sleep(seconds)

    return RetryPolicy(retries=retries, backoff_seconds=BACKOFF, sleep=sleep), sleeps


def ms(*ymd: int) -> int:
    return int(datetime(*ymd, tzinfo=UTC).timestamp() * 1000)


def bundled(symbol: str, start_ms: int, end_ms: int) -> pl.DataFrame:
    """The bundled 5m candles of `symbol` with open time in [start_ms, end_ms)."""
    frame = read_candle_file(BUNDLED_DATA / f"{symbol.replace('/', '_')}-5m.parquet")
    return frame.filter(pl.col("ms").is_between(start_ms, end_ms, closed="left"))


def as_file_rows(candles: pl.DataFrame, symbol: str) -> pl.DataFrame:
    """Downloaded candles of one symbol in the file's shape, to compare value for value."""
    return candles.filter(pl.col("symbol") == symbol).select(
        pl.col("ts").dt.epoch("ms").alias("ms"), "open", "high", "low", "close", "volume"
    )


def test_every_api_url_of_the_client_points_at_the_local_server(server, exchange):
    urls = exchange.urls["api"]
    assert all(url.startswith(server.url + "/") for url in urls.values()), urls
    assert urls["public"] == server.url + "/api/v3" and urls["fapiPublic"] == server.url + "/fapi/v1"
    assert exchange.enableRateLimit is True


def test_explicit_api_urls_override_and_unknown_keys_are_refused(server):
    client = make_ccxt_exchange("binance", api_urls={"*": server.url, "public": server.url + "/spot/api/v3"})
    assert client.urls["api"]["public"] == server.url + "/spot/api/v3"
    assert client.urls["api"]["dapiPublic"] == server.url + "/dapi/v1"
    with pytest.raises(ValueError, match="publik"):
        make_ccxt_exchange("binance", api_urls={"publik": server.url})
    with pytest.raises(ValueError, match="http"):
        make_ccxt_exchange("binance", api_urls={"public": "localhost:8080"})


def test_sandbox_mode_switches_to_the_testnet_and_is_refused_where_there_is_none():
    client = make_ccxt_exchange("binance", sandbox=True)
    assert client.urls["api"]["public"] == "https://testnet.binance.vision/api/v3"
    with pytest.raises(ValueError, match="'kraken' has no sandbox"):
        make_ccxt_exchange("kraken", sandbox=True)


def test_unknown_exchange_id_is_a_value_error_naming_it():
    with pytest.raises(ValueError, match="'binanse'.*binance"):
        make_ccxt_exchange("binanse")


def test_load_markets_reads_spot_pairs_and_perpetuals_from_three_exchange_infos(server, exchange):
    markets = exchange.load_markets()

    assert [r.path for r in server.requests()] == [
        "/api/v3/exchangeInfo",
        "/fapi/v1/exchangeInfo",
        "/dapi/v1/exchangeInfo",
    ]
    btc = markets["BTC/USDT"]
    assert (btc["spot"], btc["precision"]["price"], btc["precision"]["amount"], btc["limits"]["cost"]["min"]) == (
        True,
        0.01,
        1e-05,
        5.0,
    )
    perp = markets["BTC/USDT:USDT"]
    assert (perp["swap"], perp["linear"], perp["precision"]["price"], perp["limits"]["cost"]["min"]) == (
        True,
        True,
        0.1,
        100.0,
    )
    assert exchange.fetch_time() == DATA_END_MS


def test_download_pages_through_three_days_exactly_as_the_file(server, exchange):
    start, end = ms(2024, 3, 1), ms(2024, 3, 4)
    policy, sleeps = recording_policy()

    candles = fetch_candles(exchange, "BTC/USDT", "5m", start, end, page_limit=250, policy=policy)

    assert candles.height == 864
    assert_frame_equal(as_file_rows(candles, "BTC/USDT"), bundled("BTC/USDT", start, end), check_exact=True)
    # 864 candles in pages of 250: 250 + 250 + 250 + 114, the last page reaching past `end`.
    pages = server.requests(KLINES)
    step = timeframe_ms("5m")
    assert [int(r.query["startTime"]) for r in pages] == [
        start,
        start + 250 * step,
        start + 500 * step,
        start + 750 * step,
    ]
    assert {(r.query["symbol"], r.query["interval"], r.query["limit"], r.status) for r in pages} == {
        ("BTCUSDT", "5m", "250", 200)
    }
    assert sleeps == []


def test_rate_limited_requests_are_retried_with_exponential_backoff(server, exchange):
    start, end = ms(2024, 5, 1), ms(2024, 5, 2)
    server.fail_next(KLINES, status=429, times=2)
    policy, sleeps = recording_policy()

    candles = fetch_candles(exchange, "BTC/USDT", "5m", start, end, page_limit=1000, policy=policy)

    assert_frame_equal(as_file_rows(candles, "BTC/USDT"), bundled("BTC/USDT", start, end), check_exact=True)
    pages = server.requests(KLINES)
    assert [(r.status, int(r.query["startTime"])) for r in pages] == [(429, start), (429, start), (200, start)]
    assert sleeps == [BACKOFF, 2 * BACKOFF]


@pytest.mark.parametrize("status", [500, 502, 503])
def test_a_server_error_is_retried_then_the_download_succeeds(server, exchange, status):
    start, end = ms(2024, 6, 10), ms(2024, 6, 11)
    server.fail_next(KLINES, status=status)
    policy, sleeps = recording_policy()

    candles = fetch_candles(exchange, "ETH/USDT", "5m", start, end, page_limit=1000, policy=policy)

    assert_frame_equal(as_file_rows(candles, "ETH/USDT"), bundled("ETH/USDT", start, end), check_exact=True)
    assert [r.status for r in server.requests(KLINES)] == [status, 200]
    assert sleeps == [BACKOFF]


def test_a_symbol_that_keeps_failing_is_skipped_and_the_others_arrive(server, exchange):
    start, end = datetime(2024, 7, 1, tzinfo=UTC), datetime(2024, 7, 2, tzinfo=UTC)
    server.fail_always("ETH/USDT", status=503)
    policy, sleeps = recording_policy(retries=3)

    download = fetch_candles_for_symbols(
        exchange, ["BTC/USDT", "ETH/USDT", "SOL/USDT"], "5m", start, end, page_limit=1000, policy=policy
    )

    start_ms, end_ms = ms(2024, 7, 1), ms(2024, 7, 2)
    for symbol in ("BTC/USDT", "SOL/USDT"):
        assert_frame_equal(as_file_rows(download.candles, symbol), bundled(symbol, start_ms, end_ms), check_exact=True)
    assert set(download.candles["symbol"].unique()) == {"BTC/USDT", "SOL/USDT"}
    assert list(download.failures) == ["ETH/USDT"]
    assert download.failures["ETH/USDT"].startswith("ExchangeNotAvailable: ")
    assert "503 Service Unavailable" in download.failures["ETH/USDT"]
    # One try and exactly `retries` retries, with the backoff doubling between them.
    assert [r.status for r in server.requests(KLINES, symbol="ETH/USDT")] == [503] * 4
    assert sleeps == [BACKOFF, 2 * BACKOFF, 4 * BACKOFF]
    assert [r.status for r in server.requests(KLINES, symbol="SOL/USDT")] == [200]


def test_market_context_of_a_linear_perpetual_is_what_the_server_served(server, exchange):
    btc = DEFAULT_PERPETUALS[0]
    server.fail_next("/fapi/v1/openInterest", status=429)
    policy, sleeps = recording_policy()

    context = fetch_market_context(exchange, "BTC/USDT:USDT", policy)

    assert context == {
        "open_interest": float(btc.open_interest),
        "funding_rate": float(btc.last_funding_rate),
        "funding_timestamp": ms(2024, 9, 6, 8),  # the next 8-hourly funding after the server's now
        "errors": {},
    }
    assert [
        (r.path, r.query, r.status)
        for r in server.requests()
        if r.path.startswith("/fapi/v1/") and "exchangeInfo" not in r.path
    ] == [
        ("/fapi/v1/openInterest", {"symbol": "BTCUSDT"}, 429),
        ("/fapi/v1/openInterest", {"symbol": "BTCUSDT"}, 200),
        ("/fapi/v1/premiumIndex", {"symbol": "BTCUSDT"}, 200),
    ]
    assert sleeps == [BACKOFF]


def test_market_context_of_a_spot_pair_is_none_with_a_reason(server, exchange):
    policy, _ = recording_policy()

    context = fetch_market_context(exchange, "BTC/USDT", policy)
    missing = fetch_market_context(exchange, "NOPE/USDT", policy)

    assert (context["open_interest"], context["funding_rate"], context["funding_timestamp"]) == (None, None, None)
    assert "spot market" in context["errors"]["open_interest"] and "spot market" in context["errors"]["funding_rate"]
    assert missing["errors"]["open_interest"] == "binance has no market NOPE/USDT"
    # Binance would have answered for the perpetual BTCUSDT: the spot pair must not ask.
    assert not [r for r in server.requests() if r.path in ("/fapi/v1/openInterest", "/fapi/v1/premiumIndex")]


def test_market_context_on_the_replay_exchange_is_none_with_a_reason():
    context = fetch_market_context(ReplayExchange(BUNDLED_DATA), "BTC/USDT", RetryPolicy(retries=0))

    assert (context["open_interest"], context["funding_rate"], context["funding_timestamp"]) == (None, None, None)
    assert context["errors"] == {
        "open_interest": "replay does not support fetchOpenInterest",
        "funding_rate": "replay does not support fetchFundingRate",
    }


def test_an_unreachable_api_url_fails_fast_instead_of_hanging():
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))  # bound but never listening: connections are refused
        client = make_ccxt_exchange("binance", api_urls={"*": f"http://127.0.0.1:{unused.getsockname()[1]}"})
        client.timeout = 2000
        policy, sleeps = recording_policy(retries=1)
        began = time.monotonic()

        with pytest.raises(ccxt.NetworkError):
            fetch_candles(client, "BTC/USDT", "5m", ms(2024, 3, 1), ms(2024, 3, 2), policy=policy)

    assert time.monotonic() - began < 5
    assert sleeps == [BACKOFF]


def test_a_spot_pairs_context_is_read_off_its_perpetual_and_never_raises(server, exchange):
    btc = DEFAULT_PERPETUALS[0]
    policy, _ = recording_policy()
    context = spot_market_context(exchange, "BTC/USDT", policy)
    assert (context["open_interest"], context["funding_rate"]) == (
        float(btc.open_interest),
        float(btc.last_funding_rate),
    )
    # No perpetual of that pair: the spot market's own answer, none, with the reason.
    missing = spot_market_context(exchange, "NOPE/USDT", policy)
    assert missing["open_interest"] is None and "no market NOPE/USDT" in missing["errors"]["open_interest"]
    # The exchange down past the retries: no exception, the reason instead.
    server.fail_always("/fapi/v1/openInterest", status=503)
    down = spot_market_context(exchange, "BTC/USDT", RetryPolicy(retries=0))
    assert down["open_interest"] is None and down["errors"]["open_interest"]
