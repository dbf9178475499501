"""The market domain's settings: which exchange, symbols and timeframes, the replay clock, the
tick, and how candles are fetched. Read once from the environment (`load`)."""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import ccxt

from tracer_assets.config import Row, SettingsError, day, defaults, instant, not_negative, number, positive, text
from tracer_assets.data import BUNDLED_REPLAY_DIR
from tracer_assets.market.timeframes import check_resample_timeframes, parse_timeframe_list, timeframe_seconds

DEFAULT_SYMBOLS = ("BTC/USDT", "ETH/USDT", "SOL/USDT", "XRP/USDT", "DOGE/USDT", "LINK/USDT")

TABLE: tuple[Row, ...] = (
    (
        "TRACER_EXCHANGE",
        "replay",
        "`replay` (the bundled real candles, offline) or any ccxt exchange id (`binance`, `kraken`, ...).",
    ),
    (
        "TRACER_EXCHANGE_URLS",
        "(none)",
        (
            "JSON merged into the ccxt exchange's `urls['api']`, "
            "e.g. to point the real client at a local server or a proxy."
        ),
    ),
    ("TRACER_SYMBOLS", ",".join(DEFAULT_SYMBOLS), "Comma-separated ccxt symbols to trade and research."),
    ("TRACER_BASE_TIMEFRAME", "5m", "The timeframe fetched from the exchange and stored in `market.candles`."),
    (
        "TRACER_TIMEFRAMES",
        "15m,1h,4h",
        "Higher timeframes resampled in SQL from the base; each a whole multiple of the base that divides a day.",
    ),
    ("TRACER_START_DATE", "first bundled day (2024-01-01)", "First daily partition of `market/candles`."),
    (
        "TRACER_END_DATE",
        "replay: the last bundled day; ccxt: open-ended",
        "Last daily partition (inclusive), optional.",
    ),
    (
        "TRACER_REPLAY_DIR",
        "the bundled 2024 set",
        "Folder of candle files in freqtrade's layout (`BTC_USDT-5m.feather`, `.json`, `.parquet`).",
    ),
    (
        "TRACER_REPLAY_START",
        "(none: clock stopped at the end of the data; `make dev`: 3 days before that end)",
        "Dataset time (ISO, UTC) the replay clock shows at `TRACER_REPLAY_ANCHOR`; setting it starts the clock.",
    ),
    (
        "TRACER_REPLAY_SPEED",
        "1",
        (
            "Dataset seconds that pass per wall-clock second once the replay clock runs; `make dev` defaults it to "
            "a new base candle every tick or sooner (2 for 5m candles and a 3-minute tick)."
        ),
    ),
    (
        "TRACER_REPLAY_ANCHOR",
        "00:00 UTC of the current day",
        (
            "Wall-clock instant (ISO, UTC) at which the replay clock shows `TRACER_REPLAY_START`; `make dev` sets it "
            "to its launch, so the clock starts there and does not jump when the day changes."
        ),
    ),
    (
        "TRACER_TICK_CRON",
        "*/3 * * * *",
        (
            "The trading tick: a schedule materializing today's candles, resampled timeframes, indicators and signals; "
            "freshness of candles and signals is two ticks."
        ),
    ),
    ("TRACER_FETCH_PAGE_LIMIT", "1000", "Candles asked for per `fetch_ohlcv` call (pagination page size)."),
    (
        "TRACER_FETCH_RETRIES",
        "5",
        "Retries, with exponential backoff, on ccxt NetworkError / RateLimitExceeded / ExchangeNotAvailable.",
    ),
    ("TRACER_FETCH_BACKOFF_SECONDS", "1", "First backoff delay; doubles on each retry."),
)
DEFAULTS = defaults(TABLE)


@dataclass(frozen=True)
class MarketSettings:
    exchange: str
    exchange_urls: Mapping[str, str]
    symbols: tuple[str, ...]
    base_timeframe: str
    timeframes: tuple[str, ...]
    start_date: str | None
    end_date: str | None
    replay_dir: Path
    replay_start: datetime | None
    replay_speed: float
    replay_anchor: datetime | None
    tick_cron: str
    fetch_page_limit: int
    fetch_retries: int
    fetch_backoff_seconds: float

    @property
    def is_replay(self) -> bool:
        return self.exchange == "replay"

    @property
    def all_timeframes(self) -> tuple[str, ...]:
        """The base timeframe, then the resampled ones."""
        return (self.base_timeframe, *self.timeframes)

    @property
    def base_timeframe_seconds(self) -> int:
        return timeframe_seconds(self.base_timeframe)

    @property
    def universe(self) -> dict[str, object]:
        """What is traded, where: the part of these settings a trading decision depends on (the
        replay clock, paths and fetch tuning change no decision)."""
        return {"exchange": self.exchange, "symbols": self.symbols, "base_timeframe": self.base_timeframe,
                "timeframes": self.timeframes}  # fmt: skip


def load(env: Mapping[str, str]) -> MarketSettings:
    exchange = text(env, "TRACER_EXCHANGE", DEFAULTS["TRACER_EXCHANGE"]).lower()
    if exchange != "replay" and exchange not in ccxt.exchanges:
        close = difflib.get_close_matches(exchange, ccxt.exchanges, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise SettingsError(f"TRACER_EXCHANGE={exchange!r} is neither 'replay' nor a ccxt exchange id{hint}")
    settings = MarketSettings(
        exchange=exchange,
        exchange_urls=_exchange_urls(env),
        symbols=_symbols(env),
        base_timeframe=(base_timeframe := text(env, "TRACER_BASE_TIMEFRAME", DEFAULTS["TRACER_BASE_TIMEFRAME"])),
        timeframes=_timeframes(env, base_timeframe),
        start_date=day(env, "TRACER_START_DATE"),
        end_date=day(env, "TRACER_END_DATE"),
        replay_dir=Path(text(env, "TRACER_REPLAY_DIR", str(BUNDLED_REPLAY_DIR))).expanduser(),
        replay_start=instant(env, "TRACER_REPLAY_START"),
        replay_speed=positive(
            "TRACER_REPLAY_SPEED", number(env, "TRACER_REPLAY_SPEED", DEFAULTS["TRACER_REPLAY_SPEED"], float)
        ),
        replay_anchor=instant(env, "TRACER_REPLAY_ANCHOR"),
        tick_cron=text(env, "TRACER_TICK_CRON", DEFAULTS["TRACER_TICK_CRON"]),
        fetch_page_limit=positive(
            "TRACER_FETCH_PAGE_LIMIT", number(env, "TRACER_FETCH_PAGE_LIMIT", DEFAULTS["TRACER_FETCH_PAGE_LIMIT"], int)
        ),
        fetch_retries=not_negative(
            "TRACER_FETCH_RETRIES", number(env, "TRACER_FETCH_RETRIES", DEFAULTS["TRACER_FETCH_RETRIES"], int)
        ),
        fetch_backoff_seconds=not_negative(
            "TRACER_FETCH_BACKOFF_SECONDS",
            number(env, "TRACER_FETCH_BACKOFF_SECONDS", DEFAULTS["TRACER_FETCH_BACKOFF_SECONDS"], float),
        ),
    )
    if settings.start_date and settings.end_date and settings.end_date < settings.start_date:
        raise SettingsError(f"TRACER_END_DATE={settings.end_date} is before TRACER_START_DATE={settings.start_date}")
    return settings


def _exchange_urls(env: Mapping[str, str]) -> dict[str, str]:
    raw = text(env, "TRACER_EXCHANGE_URLS", None)
    if raw is None:
        return {}
    try:
        urls = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise SettingsError(f"TRACER_EXCHANGE_URLS is not valid JSON: {exc}") from None
    if not isinstance(urls, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in urls.items()):
        raise SettingsError(
            'TRACER_EXCHANGE_URLS must be a JSON object of strings, e.g. {"public": "http://127.0.0.1:8080/api/v3"}'
        )
    return urls


def _symbols(env: Mapping[str, str]) -> tuple[str, ...]:
    raw = text(env, "TRACER_SYMBOLS", DEFAULTS["TRACER_SYMBOLS"])
    entries = [s.strip().upper() for s in raw.split(",")]
    if not any(entries):
        raise SettingsError("TRACER_SYMBOLS is empty: name at least one symbol, e.g. BTC/USDT")
    if any(not entry for entry in entries):
        raise SettingsError(
            f"TRACER_SYMBOLS={raw!r} has an empty entry (entry {entries.index('') + 1}): "
            "write symbols separated by single commas, e.g. BTC/USDT,ETH/USDT"
        )
    duplicates = sorted({entry for entry in entries if entries.count(entry) > 1})
    if duplicates:
        raise SettingsError(f"TRACER_SYMBOLS={raw!r} names {', '.join(duplicates)} more than once")
    for symbol in entries:
        base, _, quote = symbol.partition("/")
        if not base or not quote or "/" in quote:
            raise SettingsError(f"TRACER_SYMBOLS: {symbol!r} is not a ccxt symbol like BTC/USDT")
    return tuple(entries)


def _timeframes(env: Mapping[str, str], base_timeframe: str) -> tuple[str, ...]:
    try:
        timeframe_seconds(base_timeframe)
        timeframes = parse_timeframe_list(text(env, "TRACER_TIMEFRAMES", DEFAULTS["TRACER_TIMEFRAMES"]))
        check_resample_timeframes(base_timeframe, timeframes)
    except ValueError as exc:
        raise SettingsError(f"TRACER_TIMEFRAMES / TRACER_BASE_TIMEFRAME: {exc}") from None
    return timeframes
