"""Downloading candles from any ccxt-shaped exchange: pagination, retries, per-symbol failures.

Works the same on the replay exchange and on a real ccxt client. No Dagster here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime

import ccxt
import polars as pl

from tracer_assets.market.candles import candles_from_rows, empty_candles
from tracer_assets.market.timeframes import timeframe_ms

# Worth another try: the network, the exchange's rate limiter, an exchange briefly down.
# OperationFailed too: ccxt raises it (the parent of NetworkError) for a 5xx that carries the
# exchange's own JSON error body, e.g. Binance's {"code": -1001, "msg": "Internal error"}.
# Everything else (a bad symbol, a refused request: ExchangeError) fails at once.
RETRYABLE_ERRORS = (ccxt.NetworkError, ccxt.RateLimitExceeded, ccxt.ExchangeNotAvailable, ccxt.OperationFailed)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryPolicy:
    retries: int = 5
    backoff_seconds: float = 1.0
    sleep: Callable[[float], None] = time.sleep


def call_with_retries(fn: Callable, *args, policy: RetryPolicy, what: str, **kwargs):
    """Call fn, retrying RETRYABLE_ERRORS with exponential backoff (1x, 2x, 4x, ...)."""
    for attempt in range(policy.retries + 1):
        try:
            return fn(*args, **kwargs)
        except RETRYABLE_ERRORS as exc:
            if attempt == policy.retries:
                raise
            delay = policy.backoff_seconds * 2**attempt
            log.warning(
                "%s: %s: %s; retry %d/%d in %.2fs", what, type(exc).__name__, exc, attempt + 1, policy.retries, delay
            )
            policy.sleep(delay)
    raise AssertionError("unreachable")


def fetch_candles(
    exchange,
    symbol: str,
    timeframe: str,
    start_ms: int,
    end_ms: int,
    *,
    page_limit: int = 1000,
    policy: RetryPolicy = RetryPolicy(),
) -> pl.DataFrame:
    """Every closed candle with open time in [start_ms, end_ms), page by page until caught up.

    Rows come back in the order the exchange sent them (validation, not this function,
    judges order and duplicates). The candle still forming is never included.
    """
    step = timeframe_ms(timeframe)
    # A candle is closed once open + timeframe <= now.
    end_ms = min(end_ms, (exchange.milliseconds() // step) * step)
    rows: list[list[float]] = []
    since = start_ms
    while since < end_ms:
        page = call_with_retries(
            exchange.fetch_ohlcv,
            symbol,
            timeframe,
            since,
            page_limit,
            policy=policy,
            what=f"fetch_ohlcv {symbol} {timeframe}",
        )
        page = [row for row in page if start_ms <= row[0] < end_ms]
        if not page:
            break
        rows.extend(page)
        newest = max(row[0] for row in page)
        if newest + step <= since:  # the exchange ignored `since`: stop rather than loop
            break
        since = newest + step
    return candles_from_rows(rows, symbol, timeframe)


@dataclass
class Download:
    candles: pl.DataFrame
    failures: dict[str, str] = field(default_factory=dict)  # symbol -> why it was skipped
    pages_rows: dict[str, int] = field(default_factory=dict)  # symbol -> rows received


def fetch_candles_for_symbols(
    exchange,
    symbols: Iterable[str],
    timeframe: str,
    start: datetime,
    end: datetime,
    *,
    page_limit: int = 1000,
    policy: RetryPolicy = RetryPolicy(),
    progress: Callable[[str], None] | None = None,
) -> Download:
    """Fetch every symbol; one that still fails after its retries is skipped and reported."""
    start_ms, end_ms = int(start.timestamp() * 1000), int(end.timestamp() * 1000)
    frames, failures, counts = [], {}, {}
    symbols = list(symbols)
    for n, symbol in enumerate(symbols, 1):
        try:
            frame = fetch_candles(exchange, symbol, timeframe, start_ms, end_ms, page_limit=page_limit, policy=policy)
        except ccxt.BaseError as exc:
            failures[symbol] = f"{type(exc).__name__}: {exc}"
            log.error("skipping %s: %s", symbol, failures[symbol])
            continue
        frames.append(frame)
        counts[symbol] = frame.height
        if progress:
            progress(f"[{n}/{len(symbols)}] {symbol} {timeframe}: {frame.height} candles")
    candles = pl.concat(frames) if frames else empty_candles()
    return Download(candles=candles, failures=failures, pages_rows=counts)
