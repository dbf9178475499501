"""Every setting Tracer reads from the environment, read here and nowhere else.

The seeds' variable names (DRY_RUN, ORDER_AMOUNT, TB_MIN_SIGNAL_QUALITY, ...) are honoured
as they were; new ones are TRACER_*. README.md has the table of names, defaults and
meanings; `SETTINGS_TABLE` below is its source, and a test keeps the two in step.

Secrets (exchange keys, LLM keys) are not settings: they are read through Dagster's
`EnvVar` where they are used, so they never sit in this object, a log or metadata.
"""

from __future__ import annotations

import difflib
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path

import ccxt

from tracer_assets.data import BUNDLED_REPLAY_DIR
from tracer_assets.market.timeframes import (
    check_resample_timeframes,
    parse_timeframe_list,
    timeframe_seconds,
)

# The models folder sits beside the package in a checkout (the project installs editable).
CHECKOUT_SQL_DIR = Path(__file__).resolve().parents[1] / "dbt_like_sql"
DEFAULT_SYMBOLS = ("BTC/USDT", "ETH/USDT", "SOL/USDT", "XRP/USDT", "DOGE/USDT", "LINK/USDT")

# (name, default as written in the README, meaning). The README table is generated
# from this list (`python -m tracer_assets.settings --markdown`).
SETTINGS_TABLE: tuple[tuple[str, str, str], ...] = (
    ("TRACER_DUCKDB_PATH", ".tracer/tracer.duckdb", "The one DuckDB file every asset lives in."),
    (
        "DAGSTER_HOME",
        ".dagster",
        "The Dagster instance (runs, schedules, sensors) the CLI and the UI share; `make` targets default it.",
    ),
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
        "(none: clock stopped at the end of the data)",
        "Dataset time (ISO, UTC) the replay clock shows at `TRACER_REPLAY_ANCHOR`; setting it starts the clock.",
    ),
    ("TRACER_REPLAY_SPEED", "1", "Dataset seconds that pass per wall-clock second once the replay clock runs."),
    (
        "TRACER_REPLAY_ANCHOR",
        "00:00 UTC of the current day",
        "Wall-clock instant (ISO, UTC) at which the replay clock shows `TRACER_REPLAY_START`.",
    ),
    ("TRACER_SQL_DIR", "dbt_like_sql/ of the checkout", "Folder of the dbt-like SQL models (`<schema>/<table>.sql`)."),
    (
        "TRACER_TICK_CRON",
        "*/3 * * * *",
        (
            "The trading tick: a schedule materializing today's candles, resampled timeframes, indicators and signals; "
            "freshness of candles and signals is two ticks."
        ),
    ),
    (
        "TRACER_SIGNAL_LOG",
        ".tracer/logs/macro_signal.log",
        (
            "External predictions (the macro orchestrator's JSON lines), read tolerantly; "
            "the newest line per symbol and timeframe joins the ensemble label."
        ),
    ),
    ("TRACER_FETCH_PAGE_LIMIT", "1000", "Candles asked for per `fetch_ohlcv` call (pagination page size)."),
    (
        "TRACER_FETCH_RETRIES",
        "5",
        "Retries, with exponential backoff, on ccxt NetworkError / RateLimitExceeded / ExchangeNotAvailable.",
    ),
    ("TRACER_FETCH_BACKOFF_SECONDS", "1", "First backoff delay; doubles on each retry."),
    ("DRY_RUN", "1", "Seed flag: 1 means paper trading. Live orders need `DRY_RUN=0` and the other live conditions."),
    ("FORCE_DRY", "0", "Seed flag: 1 forces paper trading whatever else is set."),
    ("ENABLE_LIVE", "0", "Seed flag: first of the two live switches."),
    ("IS_LIVE", "0", "Seed flag: second of the two live switches."),
    ("DEBUG", "0", "Seed flag: 1 turns on debug logging of the `tracer_assets` loggers (to stderr)."),
    (
        "ORDER_AMOUNT",
        "10",
        (
            "The order size (quote currency) the rules decider asks for; "
            "the risk manager sizes within the smaller of it (or the LLM's size) and `MAX_ORDER_AMOUNT`."
        ),
    ),
    ("MIN_ALLOWED_ORDER_AMOUNT", "5", "Smallest order size in quote currency; smaller orders are refused."),
    ("MAX_ORDER_AMOUNT", "100", "Largest order size in quote currency."),
    ("MACRO_MIN_WIN_RATE", "0.2", "Win rate below which backtest stats never read as a Bull regime."),
    ("TB_MIN_SIGNAL_QUALITY", "6", "Rules decider: least signal quality (0-10) to act."),
    ("TB_MIN_CONVICTION_SCORE", "5", "Rules decider: least conviction score to act."),
    (
        "SIM_PRICE",
        "(none: market price)",
        "Paper broker: the price an order is sized at when no market price of its symbol is known "
        "(no candle stored yet); it still fills at the next candle's open.",
    ),
    ("SIM_BASE_BALANCE", "0", "Paper broker: starting base-currency balance."),
    ("SIM_QUOTE_BALANCE", "10000", "Paper broker: starting quote-currency balance."),
    (
        "MACRO_BACKTEST_JSON_PATH",
        ".tracer/backtest/backtest_results.json",
        (
            "Where the backtests are exported in the macro orchestrator's shape "
            "(`totalPNL`, `winRate`, trades, drawdown per strategy variant and timeframe)."
        ),
    ),
    ("TRACER_BACKTEST_FEE", "0.001", "Backtests: taker fee on every fill, as a fraction of the notional."),
    ("TRACER_BACKTEST_SLIPPAGE_BPS", "5", "Backtests: adverse slippage on every fill, in basis points."),
    (
        "TRACER_DECIDER",
        "rules",
        (
            "`rules` (thresholds `TB_MIN_SIGNAL_QUALITY`, `TB_MIN_CONVICTION_SCORE`) or `llm` "
            "(the anthropic client; key from `ANTHROPIC_API_KEY` through Dagster's `EnvVar`)."
        ),
    ),
    ("TRACER_ANTHROPIC_MODEL", "claude-sonnet-4-6", "The model the `llm` decider asks."),
    (
        "TRACER_ANTHROPIC_BASE_URL",
        "(none: Anthropic's API)",
        "Another Messages API endpoint for the `llm` decider (a proxy, a local server).",
    ),
    ("TRACER_LLM_TIMEOUT_SECONDS", "20", "The `llm` decider's time limit; past it the decision is HOLD."),
    (
        "TRACER_EXCHANGE_API_KEY",
        "(none)",
        (
            "Secret. The exchange API key for live orders, read through Dagster's `EnvVar` and only in LIVE mode; "
            "never logged or stored."
        ),
    ),
    (
        "TRACER_EXCHANGE_SECRET",
        "(none)",
        "Secret. The exchange API secret for live orders, like `TRACER_EXCHANGE_API_KEY`.",
    ),
    ("TRACER_SANDBOX", "0", "1: live orders go to the exchange's sandbox (testnet) through ccxt's sandbox mode."),
    (
        "TRACER_LOG_DIR",
        ".tracer/logs",
        (
            "The seed's audit files: `macro_ccxt_orders.log` (tab-separated), "
            "`macro_ccxt_orders_audit.jsonl`, `macro_diagnostics.json`."
        ),
    ),
    (
        "TRACER_FEE_RATE",
        "0.001",
        "Paper broker: fee on every fill, as a fraction of the notional, taken in the quote currency.",
    ),
    ("TRACER_SLIPPAGE_BPS", "5", "Paper broker: adverse slippage on every fill, in basis points."),
    ("TRACER_MAX_OPEN_POSITIONS", "3", "Risk: most positions open at once."),
    ("TRACER_MAX_SYMBOL_EXPOSURE", "MAX_ORDER_AMOUNT", "Risk: most quote currency held in one symbol (at cost)."),
    ("TRACER_MAX_TOTAL_EXPOSURE", "3 x MAX_ORDER_AMOUNT", "Risk: most quote currency held over all symbols (at cost)."),
    ("TRACER_DAILY_TRADE_LIMIT", "8", "Risk: most new positions per UTC day."),
    (
        "TRACER_DAILY_LOSS_LIMIT",
        "50",
        "Risk: realized loss in a UTC day (quote currency) at which new risk halts; positions can still close.",
    ),
    ("TRACER_LOSS_COOLDOWN_MINUTES", "30", "Risk: no new position this long after a losing trade."),
    (
        "TRACER_MAX_SIGNAL_AGE_SECONDS",
        "2 base candles (600 on 5m)",
        (
            "A signal event whose newest candle closed longer ago than this, on the exchange's clock, is not traded: "
            "HOLD at decision time, refused at execution."
        ),
    ),
    (
        "TRACER_MAX_PRICE_DEVIATION",
        "0.05",
        (
            "Live orders: refused when the decision's price differs from a fresh ticker's last price "
            "by more than this fraction."
        ),
    ),
    (
        "TRACER_KELLY_FRACTION",
        "0.5",
        (
            "Risk: a buy's size is multiplied by this fraction of full Kelly, from the selected strategy's "
            "out-of-sample win rate and payoff (profit factor); no edge means no buy. Half Kelly of a typical "
            "edge is 10-20% of the order: raise `ORDER_AMOUNT` so that it clears `MIN_ALLOWED_ORDER_AMOUNT`."
        ),
    ),
)


# The defaults as the table writes them: `load_settings` reads the plain ones (numbers, flags, words)
# from here, so each is written once; the others are derived there (e.g. TRACER_MAX_TOTAL_EXPOSURE
# from MAX_ORDER_AMOUNT) and the table only describes them.
DEFAULTS: dict[str, str] = {name: default for name, default, _ in SETTINGS_TABLE if not default.startswith("(")}


class SettingsError(ValueError):
    """A setting has a value Tracer cannot use; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    duckdb_path: Path
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
    sql_dir: Path
    tick_cron: str
    signal_log: Path
    fetch_page_limit: int
    fetch_retries: int
    fetch_backoff_seconds: float
    dry_run: bool
    force_dry: bool
    enable_live: bool
    is_live: bool
    debug: bool
    order_amount: Decimal
    min_allowed_order_amount: Decimal
    max_order_amount: Decimal
    macro_min_win_rate: float
    tb_min_signal_quality: float
    tb_min_conviction_score: float
    sim_price: Decimal | None
    sim_base_balance: Decimal
    sim_quote_balance: Decimal
    backtest_json_path: Path
    backtest_fee: float
    backtest_slippage_bps: float
    decider: str
    anthropic_model: str
    anthropic_base_url: str | None
    llm_timeout_seconds: float
    sandbox: bool
    log_dir: Path
    fee_rate: Decimal
    slippage_bps: Decimal
    max_open_positions: int
    max_symbol_exposure: Decimal
    max_total_exposure: Decimal
    daily_trade_limit: int
    daily_loss_limit: Decimal
    loss_cooldown_minutes: float
    kelly_fraction: Decimal
    max_signal_age_seconds: float
    max_price_deviation: Decimal

    @property
    def is_replay(self) -> bool:
        return self.exchange == "replay"

    @property
    def live_flags_on(self) -> bool:
        """The flag half of the live conditions (docs/architecture.md) (the exchange keys are the other half)."""
        return self.enable_live and self.is_live and not self.force_dry and not self.dry_run

    @property
    def all_timeframes(self) -> tuple[str, ...]:
        """The base timeframe, then the resampled ones."""
        return (self.base_timeframe, *self.timeframes)

    @property
    def base_timeframe_seconds(self) -> int:
        return timeframe_seconds(self.base_timeframe)


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name}={raw!r}: expected 1/0, true/false, yes/no or on/off")


def _text(env: Mapping[str, str], name: str, default: str | None) -> str | None:
    raw = env.get(name)
    return default if raw is None or raw.strip() == "" else raw.strip()


def _number(env: Mapping[str, str], name: str, default: str, kind: type):
    """A finite number of `kind` (int, float or Decimal); NaN and infinity are refused."""
    raw = _text(env, name, default)
    try:
        value = kind(raw)
    except (ValueError, InvalidOperation):
        raise SettingsError(f"{name}={raw!r}: expected a number") from None
    if not math.isfinite(value):
        raise SettingsError(f"{name}={raw!r}: expected a finite number")
    return value


def _positive(name: str, value):
    if value <= 0:
        raise SettingsError(f"{name}={value}: must be greater than 0")
    return value


def _not_negative(name: str, value):
    if value < 0:
        raise SettingsError(f"{name}={value}: must be 0 or more")
    return value


def _fraction(env: Mapping[str, str], name: str, default: str, kind: type):
    value = _number(env, name, default, kind)
    if not 0 <= value <= 1:
        raise SettingsError(f"{name}={value}: must lie in [0, 1]")
    return value


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = _text(env, name, default).lower()
    if value not in choices:
        raise SettingsError(f"{name}={value!r}: expected one of {', '.join(choices)}")
    return value


def _path(env: Mapping[str, str], name: str, default: str) -> Path:
    return Path(_text(env, name, default)).expanduser().absolute()


def _instant(env: Mapping[str, str], name: str) -> datetime | None:
    raw = _text(env, name, None)
    if raw is None:
        return None
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise SettingsError(f"{name}={raw!r}: expected an ISO date or time, e.g. 2024-06-01T00:00") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _date(env: Mapping[str, str], name: str) -> str | None:
    raw = _text(env, name, None)
    if raw is None:
        return None
    try:
        return datetime.strptime(raw, "%Y-%m-%d").strftime("%Y-%m-%d")
    except ValueError:
        raise SettingsError(f"{name}={raw!r}: expected a date as YYYY-MM-DD") from None


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read and check every setting. Raises SettingsError naming the variable at fault."""
    env = dict(os.environ if environ is None else environ)

    exchange = _text(env, "TRACER_EXCHANGE", DEFAULTS["TRACER_EXCHANGE"]).lower()
    if exchange != "replay" and exchange not in ccxt.exchanges:
        close = difflib.get_close_matches(exchange, ccxt.exchanges, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise SettingsError(f"TRACER_EXCHANGE={exchange!r} is neither 'replay' nor a ccxt exchange id{hint}")
    urls_raw = _text(env, "TRACER_EXCHANGE_URLS", None)
    exchange_urls: dict[str, str] = {}
    if urls_raw is not None:
        try:
            exchange_urls = json.loads(urls_raw)
        except json.JSONDecodeError as exc:
            raise SettingsError(f"TRACER_EXCHANGE_URLS is not valid JSON: {exc}") from None
        if not isinstance(exchange_urls, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in exchange_urls.items()
        ):
            raise SettingsError(
                'TRACER_EXCHANGE_URLS must be a JSON object of strings, e.g. {"public": "http://127.0.0.1:8080/api/v3"}'
            )

    symbols_raw = _text(env, "TRACER_SYMBOLS", DEFAULTS["TRACER_SYMBOLS"])
    entries = [s.strip().upper() for s in symbols_raw.split(",")]
    if not any(entries):
        raise SettingsError("TRACER_SYMBOLS is empty: name at least one symbol, e.g. BTC/USDT")
    if any(not entry for entry in entries):
        raise SettingsError(
            f"TRACER_SYMBOLS={symbols_raw!r} has an empty entry (entry {entries.index('') + 1}): "
            "write symbols separated by single commas, e.g. BTC/USDT,ETH/USDT"
        )
    duplicates = sorted({entry for entry in entries if entries.count(entry) > 1})
    if duplicates:
        raise SettingsError(f"TRACER_SYMBOLS={symbols_raw!r} names {', '.join(duplicates)} more than once")
    symbols = tuple(entries)
    for symbol in symbols:
        base, _, quote = symbol.partition("/")
        if not base or not quote or "/" in quote:
            raise SettingsError(f"TRACER_SYMBOLS: {symbol!r} is not a ccxt symbol like BTC/USDT")

    base_timeframe = _text(env, "TRACER_BASE_TIMEFRAME", DEFAULTS["TRACER_BASE_TIMEFRAME"])
    try:
        timeframe_seconds(base_timeframe)
        timeframes = parse_timeframe_list(_text(env, "TRACER_TIMEFRAMES", DEFAULTS["TRACER_TIMEFRAMES"]))
        check_resample_timeframes(base_timeframe, timeframes)
    except ValueError as exc:
        raise SettingsError(f"TRACER_TIMEFRAMES / TRACER_BASE_TIMEFRAME: {exc}") from None

    replay_dir = Path(_text(env, "TRACER_REPLAY_DIR", str(BUNDLED_REPLAY_DIR))).expanduser()

    max_order = _positive("MAX_ORDER_AMOUNT", _number(env, "MAX_ORDER_AMOUNT", DEFAULTS["MAX_ORDER_AMOUNT"], Decimal))
    settings = Settings(
        duckdb_path=Path(_text(env, "TRACER_DUCKDB_PATH", DEFAULTS["TRACER_DUCKDB_PATH"])).expanduser().absolute(),
        exchange=exchange,
        exchange_urls=exchange_urls,
        symbols=symbols,
        base_timeframe=base_timeframe,
        timeframes=timeframes,
        start_date=_date(env, "TRACER_START_DATE"),
        end_date=_date(env, "TRACER_END_DATE"),
        replay_dir=replay_dir,
        replay_start=_instant(env, "TRACER_REPLAY_START"),
        replay_speed=_positive(
            "TRACER_REPLAY_SPEED", _number(env, "TRACER_REPLAY_SPEED", DEFAULTS["TRACER_REPLAY_SPEED"], float)
        ),
        replay_anchor=_instant(env, "TRACER_REPLAY_ANCHOR"),
        sql_dir=Path(_text(env, "TRACER_SQL_DIR", str(CHECKOUT_SQL_DIR))).expanduser(),
        tick_cron=_text(env, "TRACER_TICK_CRON", DEFAULTS["TRACER_TICK_CRON"]),
        signal_log=Path(_text(env, "TRACER_SIGNAL_LOG", DEFAULTS["TRACER_SIGNAL_LOG"])).expanduser().absolute(),
        fetch_page_limit=_positive(
            "TRACER_FETCH_PAGE_LIMIT", _number(env, "TRACER_FETCH_PAGE_LIMIT", DEFAULTS["TRACER_FETCH_PAGE_LIMIT"], int)
        ),
        fetch_retries=_not_negative(
            "TRACER_FETCH_RETRIES", _number(env, "TRACER_FETCH_RETRIES", DEFAULTS["TRACER_FETCH_RETRIES"], int)
        ),
        fetch_backoff_seconds=_not_negative(
            "TRACER_FETCH_BACKOFF_SECONDS",
            _number(env, "TRACER_FETCH_BACKOFF_SECONDS", DEFAULTS["TRACER_FETCH_BACKOFF_SECONDS"], float),
        ),
        dry_run=_flag(env, "DRY_RUN", DEFAULTS["DRY_RUN"] == "1"),
        force_dry=_flag(env, "FORCE_DRY", DEFAULTS["FORCE_DRY"] == "1"),
        enable_live=_flag(env, "ENABLE_LIVE", DEFAULTS["ENABLE_LIVE"] == "1"),
        is_live=_flag(env, "IS_LIVE", DEFAULTS["IS_LIVE"] == "1"),
        debug=_flag(env, "DEBUG", DEFAULTS["DEBUG"] == "1"),
        order_amount=_positive("ORDER_AMOUNT", _number(env, "ORDER_AMOUNT", DEFAULTS["ORDER_AMOUNT"], Decimal)),
        min_allowed_order_amount=_positive(
            "MIN_ALLOWED_ORDER_AMOUNT",
            _number(env, "MIN_ALLOWED_ORDER_AMOUNT", DEFAULTS["MIN_ALLOWED_ORDER_AMOUNT"], Decimal),
        ),
        max_order_amount=_positive(
            "MAX_ORDER_AMOUNT", _number(env, "MAX_ORDER_AMOUNT", DEFAULTS["MAX_ORDER_AMOUNT"], Decimal)
        ),
        macro_min_win_rate=_number(env, "MACRO_MIN_WIN_RATE", DEFAULTS["MACRO_MIN_WIN_RATE"], float),
        tb_min_signal_quality=_number(env, "TB_MIN_SIGNAL_QUALITY", DEFAULTS["TB_MIN_SIGNAL_QUALITY"], float),
        tb_min_conviction_score=_number(env, "TB_MIN_CONVICTION_SCORE", DEFAULTS["TB_MIN_CONVICTION_SCORE"], float),
        sim_price=None
        if _text(env, "SIM_PRICE", None) is None
        else _positive("SIM_PRICE", _number(env, "SIM_PRICE", "0", Decimal)),
        sim_base_balance=_not_negative(
            "SIM_BASE_BALANCE", _number(env, "SIM_BASE_BALANCE", DEFAULTS["SIM_BASE_BALANCE"], Decimal)
        ),
        sim_quote_balance=_not_negative(
            "SIM_QUOTE_BALANCE", _number(env, "SIM_QUOTE_BALANCE", DEFAULTS["SIM_QUOTE_BALANCE"], Decimal)
        ),
        backtest_json_path=_path(env, "MACRO_BACKTEST_JSON_PATH", DEFAULTS["MACRO_BACKTEST_JSON_PATH"]),
        backtest_fee=_fraction(env, "TRACER_BACKTEST_FEE", DEFAULTS["TRACER_BACKTEST_FEE"], float),
        backtest_slippage_bps=_not_negative(
            "TRACER_BACKTEST_SLIPPAGE_BPS",
            _number(env, "TRACER_BACKTEST_SLIPPAGE_BPS", DEFAULTS["TRACER_BACKTEST_SLIPPAGE_BPS"], float),
        ),
        decider=_choice(env, "TRACER_DECIDER", DEFAULTS["TRACER_DECIDER"], ("rules", "llm")),
        anthropic_model=_text(env, "TRACER_ANTHROPIC_MODEL", DEFAULTS["TRACER_ANTHROPIC_MODEL"]),
        anthropic_base_url=_text(env, "TRACER_ANTHROPIC_BASE_URL", None),
        llm_timeout_seconds=_positive(
            "TRACER_LLM_TIMEOUT_SECONDS",
            _number(env, "TRACER_LLM_TIMEOUT_SECONDS", DEFAULTS["TRACER_LLM_TIMEOUT_SECONDS"], float),
        ),
        sandbox=_flag(env, "TRACER_SANDBOX", DEFAULTS["TRACER_SANDBOX"] == "1"),
        log_dir=_path(env, "TRACER_LOG_DIR", DEFAULTS["TRACER_LOG_DIR"]),
        fee_rate=_fraction(env, "TRACER_FEE_RATE", DEFAULTS["TRACER_FEE_RATE"], Decimal),
        slippage_bps=_not_negative(
            "TRACER_SLIPPAGE_BPS", _number(env, "TRACER_SLIPPAGE_BPS", DEFAULTS["TRACER_SLIPPAGE_BPS"], Decimal)
        ),
        max_open_positions=_positive(
            "TRACER_MAX_OPEN_POSITIONS",
            _number(env, "TRACER_MAX_OPEN_POSITIONS", DEFAULTS["TRACER_MAX_OPEN_POSITIONS"], int),
        ),
        max_symbol_exposure=_positive(
            "TRACER_MAX_SYMBOL_EXPOSURE", _number(env, "TRACER_MAX_SYMBOL_EXPOSURE", str(max_order), Decimal)
        ),
        max_total_exposure=_positive(
            "TRACER_MAX_TOTAL_EXPOSURE", _number(env, "TRACER_MAX_TOTAL_EXPOSURE", str(3 * max_order), Decimal)
        ),
        daily_trade_limit=_not_negative(
            "TRACER_DAILY_TRADE_LIMIT",
            _number(env, "TRACER_DAILY_TRADE_LIMIT", DEFAULTS["TRACER_DAILY_TRADE_LIMIT"], int),
        ),
        daily_loss_limit=_positive(
            "TRACER_DAILY_LOSS_LIMIT",
            _number(env, "TRACER_DAILY_LOSS_LIMIT", DEFAULTS["TRACER_DAILY_LOSS_LIMIT"], Decimal),
        ),
        loss_cooldown_minutes=_not_negative(
            "TRACER_LOSS_COOLDOWN_MINUTES",
            _number(env, "TRACER_LOSS_COOLDOWN_MINUTES", DEFAULTS["TRACER_LOSS_COOLDOWN_MINUTES"], float),
        ),
        kelly_fraction=_fraction(env, "TRACER_KELLY_FRACTION", DEFAULTS["TRACER_KELLY_FRACTION"], Decimal),
        max_signal_age_seconds=_positive(
            "TRACER_MAX_SIGNAL_AGE_SECONDS",
            _number(env, "TRACER_MAX_SIGNAL_AGE_SECONDS", str(2 * timeframe_seconds(base_timeframe)), float),
        ),
        max_price_deviation=_positive(
            "TRACER_MAX_PRICE_DEVIATION",
            _fraction(env, "TRACER_MAX_PRICE_DEVIATION", DEFAULTS["TRACER_MAX_PRICE_DEVIATION"], Decimal),
        ),
    )
    if settings.max_symbol_exposure > settings.max_total_exposure:
        raise SettingsError(
            f"TRACER_MAX_SYMBOL_EXPOSURE={settings.max_symbol_exposure} is above "
            f"TRACER_MAX_TOTAL_EXPOSURE={settings.max_total_exposure}"
        )
    if settings.min_allowed_order_amount > settings.max_order_amount:
        raise SettingsError(
            f"MIN_ALLOWED_ORDER_AMOUNT={settings.min_allowed_order_amount} is above "
            f"MAX_ORDER_AMOUNT={settings.max_order_amount}"
        )
    if settings.order_amount > settings.max_order_amount:
        raise SettingsError(
            f"ORDER_AMOUNT={settings.order_amount} is above MAX_ORDER_AMOUNT={settings.max_order_amount}: "
            "the risk manager would never size an order that large; lower ORDER_AMOUNT or raise MAX_ORDER_AMOUNT"
        )
    if not 0 <= settings.macro_min_win_rate <= 1:
        raise SettingsError(f"MACRO_MIN_WIN_RATE={settings.macro_min_win_rate}: must lie in [0, 1]")
    if settings.start_date and settings.end_date and settings.end_date < settings.start_date:
        raise SettingsError(f"TRACER_END_DATE={settings.end_date} is before TRACER_START_DATE={settings.start_date}")
    return settings


def settings_markdown() -> str:
    rows = ["| name | default | meaning |", "|---|---|---|"]
    rows += [
        f"| `{name}` | {default if default.startswith('(') or ' ' in default else f'`{default}`'} | {meaning} |"
        for name, default, meaning in SETTINGS_TABLE
    ]
    return "\n".join(rows)


if __name__ == "__main__":
    print(settings_markdown())
