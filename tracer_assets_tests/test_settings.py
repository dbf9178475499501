"""Settings from the environment: defaults, the seeds' variable names, the live switches,
refusals that name the variable, and the README table kept in step with SETTINGS_TABLE."""

from __future__ import annotations

import itertools
import re
from decimal import Decimal
from pathlib import Path

import pytest

import tracer_assets
from tracer_assets.data import BUNDLED_REPLAY_DIR
from tracer_assets.settings import DEFAULT_SYMBOLS, SETTINGS_TABLE, SettingsError, load_settings, settings_markdown


def setting(settings, attr: str):
    """A setting by its attribute name, in whichever domain's settings it lives."""
    for part in (settings, settings.market, settings.signals, settings.research, settings.trading, settings.llm):
        if hasattr(part, attr):
            return getattr(part, attr)
    raise AttributeError(attr)


def test_defaults_are_offline_replay_paper_trading():
    s = load_settings(environ={})
    assert s.market.exchange == "replay" and s.market.is_replay
    assert (
        s.market.symbols
        == ("BTC/USDT", "ETH/USDT", "SOL/USDT", "XRP/USDT", "DOGE/USDT", "LINK/USDT")
        == DEFAULT_SYMBOLS
    )
    assert s.market.base_timeframe == "5m" and s.market.base_timeframe_seconds == 300
    assert s.market.timeframes == ("15m", "1h", "4h")
    assert s.market.replay_dir == BUNDLED_REPLAY_DIR
    assert s.market.replay_start is None and s.market.replay_anchor is None and s.market.replay_speed == 1.0
    assert s.market.exchange_urls == {}
    assert s.duckdb_path.is_absolute() and s.duckdb_path.parts[-2:] == (".tracer", "tracer.duckdb")
    assert s.market.tick_cron == "*/3 * * * *"
    assert (s.market.fetch_page_limit, s.market.fetch_retries, s.market.fetch_backoff_seconds) == (1000, 5, 1.0)
    assert s.trading.dry_run is True
    assert (s.trading.force_dry, s.trading.enable_live, s.trading.is_live, s.debug) == (False, False, False, False)
    assert s.trading.live_flags_on is False
    assert (s.trading.order_amount, s.trading.min_allowed_order_amount, s.trading.max_order_amount) == (
        Decimal(100),
        Decimal(5),
        Decimal(100),
    )
    assert s.trading.macro_min_win_rate == 0.2
    assert (s.trading.tb_min_signal_quality, s.trading.tb_min_conviction_score) == (6.0, 5.0)
    assert s.trading.sim_price is None
    assert (s.trading.sim_base_balance, s.trading.sim_quote_balance) == (Decimal(0), Decimal(10000))
    assert s.market.start_date is None and s.market.end_date is None


def test_blank_values_mean_the_default():
    assert load_settings(environ={"DRY_RUN": "  ", "ORDER_AMOUNT": "", "TRACER_SYMBOLS": ""}) == load_settings(
        environ={}
    )


def test_defaults_match_the_settings_table():
    """The README's default column says what an unset variable gives."""
    table = {name: default for name, default, _ in SETTINGS_TABLE}
    s = load_settings(environ={})
    assert table["TRACER_SYMBOLS"] == ",".join(s.market.symbols)
    assert table["TRACER_TIMEFRAMES"] == ",".join(s.market.timeframes)
    assert table["TRACER_BASE_TIMEFRAME"] == s.market.base_timeframe
    assert table["TRACER_EXCHANGE"] == s.market.exchange
    assert table["TRACER_TICK_CRON"] == s.market.tick_cron
    for name, attr in [
        ("DRY_RUN", "dry_run"),
        ("FORCE_DRY", "force_dry"),
        ("ENABLE_LIVE", "enable_live"),
        ("IS_LIVE", "is_live"),
        ("DEBUG", "debug"),
    ]:
        assert table[name] == ("1" if setting(s, attr) else "0"), name
    assert table["ORDER_AMOUNT"] == "MAX_ORDER_AMOUNT" and s.trading.order_amount == s.trading.max_order_amount
    for name, attr in [
        ("MIN_ALLOWED_ORDER_AMOUNT", "min_allowed_order_amount"),
        ("MAX_ORDER_AMOUNT", "max_order_amount"),
        ("SIM_BASE_BALANCE", "sim_base_balance"),
        ("SIM_QUOTE_BALANCE", "sim_quote_balance"),
    ]:
        assert Decimal(table[name]) == setting(s, attr), name
    assert float(table["MACRO_MIN_WIN_RATE"]) == s.trading.macro_min_win_rate
    assert int(table["TRACER_FETCH_PAGE_LIMIT"]) == s.market.fetch_page_limit
    assert tuple(int(h) for h in table["TRACER_ML_HORIZONS"].split(",")) == s.ml.horizons
    assert tuple(table["TRACER_ML_FEATURE_SETS"].split(",")) == s.ml.feature_sets
    assert int(table["TRACER_ML_ROUNDS"]) == s.ml.rounds and int(table["TRACER_ML_THREADS"]) == s.ml.threads
    assert float(table["TRACER_MODEL_MAX_AGE_HOURS"]) == s.ml.model_max_age_hours
    assert s.ml.timeframes == s.market.timeframes  # "the resampled timeframes"


@pytest.mark.parametrize(
    ("name", "raw", "attr", "expected"),
    [
        ("DRY_RUN", "0", "dry_run", False),
        ("FORCE_DRY", "1", "force_dry", True),
        ("ENABLE_LIVE", "true", "enable_live", True),
        ("IS_LIVE", "yes", "is_live", True),
        ("DEBUG", "on", "debug", True),
        ("ORDER_AMOUNT", "12.5", "order_amount", Decimal("12.5")),
        ("MIN_ALLOWED_ORDER_AMOUNT", "7", "min_allowed_order_amount", Decimal("7")),
        ("MAX_ORDER_AMOUNT", "250", "max_order_amount", Decimal("250")),
        ("MACRO_MIN_WIN_RATE", "0.35", "macro_min_win_rate", 0.35),
        ("TB_MIN_SIGNAL_QUALITY", "7.5", "tb_min_signal_quality", 7.5),
        ("TB_MIN_CONVICTION_SCORE", "3", "tb_min_conviction_score", 3.0),
        ("SIM_PRICE", "42000.5", "sim_price", Decimal("42000.5")),
        ("SIM_BASE_BALANCE", "0.25", "sim_base_balance", Decimal("0.25")),
        ("SIM_QUOTE_BALANCE", "5000", "sim_quote_balance", Decimal("5000")),
    ],
)
def test_every_seed_variable_name_is_honoured(name, raw, attr, expected):
    default = setting(load_settings(environ={}), attr)
    assert default != expected  # the case really changes something
    assert setting(load_settings(environ={name: raw}), attr) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1", True),
        ("TRUE", True),
        (" Yes ", True),
        ("on", True),
        ("0", False),
        ("false", False),
        ("No", False),
        ("OFF", False),
    ],
)
def test_flag_spellings(raw, expected):
    assert load_settings(environ={"DEBUG": raw}).debug is expected


_UNSET = None
_LIVE_CASES = list(itertools.product([_UNSET, "0", "1"], repeat=4))


@pytest.mark.parametrize(
    ("enable_live", "is_live", "force_dry", "dry_run"),
    _LIVE_CASES,
    ids=[f"ENABLE_LIVE={a}-IS_LIVE={b}-FORCE_DRY={c}-DRY_RUN={d}" for a, b, c, d in _LIVE_CASES],
)
def test_live_flags_on_only_with_both_switches_on_and_both_dry_flags_off(enable_live, is_live, force_dry, dry_run):
    values = {"ENABLE_LIVE": enable_live, "IS_LIVE": is_live, "FORCE_DRY": force_dry, "DRY_RUN": dry_run}
    env = {k: v for k, v in values.items() if v is not _UNSET}
    expected = enable_live == "1" and is_live == "1" and force_dry in (_UNSET, "0") and dry_run == "0"
    assert load_settings(environ=env).trading.live_flags_on is expected


BAD_VALUES = [
    ({"ORDER_AMOUNT": "abc"}, "ORDER_AMOUNT", "expected a number"),
    ({"ORDER_AMOUNT": "0"}, "ORDER_AMOUNT", "must be greater than 0"),
    ({"MAX_ORDER_AMOUNT": "-5"}, "MAX_ORDER_AMOUNT", "must be greater than 0"),
    ({"SIM_QUOTE_BALANCE": "lots"}, "SIM_QUOTE_BALANCE", "expected a number"),
    ({"MACRO_MIN_WIN_RATE": "nan"}, "MACRO_MIN_WIN_RATE", "expected a finite number"),
    ({"MACRO_MIN_WIN_RATE": "1.5"}, "MACRO_MIN_WIN_RATE", "must lie in [0, 1]"),
    ({"TB_MIN_SIGNAL_QUALITY": "high"}, "TB_MIN_SIGNAL_QUALITY", "expected a number"),
    ({"DRY_RUN": "maybe"}, "DRY_RUN", "expected 1/0"),
    ({"IS_LIVE": "2"}, "IS_LIVE", "expected 1/0"),
    ({"TRACER_EXCHANGE_URLS": "{not json"}, "TRACER_EXCHANGE_URLS", "is not valid JSON"),
    ({"TRACER_EXCHANGE_URLS": '["http://127.0.0.1"]'}, "TRACER_EXCHANGE_URLS", "must be a JSON object of strings"),
    ({"TRACER_EXCHANGE_URLS": '{"public": 8080}'}, "TRACER_EXCHANGE_URLS", "must be a JSON object of strings"),
    ({"TRACER_TIMEFRAMES": "7m"}, "TRACER_TIMEFRAMES", "not a whole multiple of the base timeframe 5m"),
    (
        {"TRACER_TIMEFRAMES": "15m,5m"},
        "TRACER_TIMEFRAMES",
        "timeframe 5m is not a whole multiple of the base timeframe 5m",
    ),
    ({"TRACER_TIMEFRAMES": "1w"}, "TRACER_TIMEFRAMES", "timeframe 1w does not divide one day evenly"),
    ({"TRACER_TIMEFRAMES": "7h"}, "TRACER_TIMEFRAMES", "timeframe 7h does not divide one day evenly"),
    ({"TRACER_TIMEFRAMES": "1h,fortnight"}, "TRACER_TIMEFRAMES", "'fortnight' is not a timeframe"),
    (
        {"TRACER_BASE_TIMEFRAME": "1h"},
        "TRACER_BASE_TIMEFRAME",
        "timeframe 15m is not a whole multiple of the base timeframe 1h",
    ),
    ({"TRACER_SYMBOLS": "BTCUSDT"}, "TRACER_SYMBOLS", "'BTCUSDT' is not a ccxt symbol"),
    ({"TRACER_SYMBOLS": " , "}, "TRACER_SYMBOLS", "is empty"),
    ({"MIN_ALLOWED_ORDER_AMOUNT": "200"}, "MIN_ALLOWED_ORDER_AMOUNT", "is above MAX_ORDER_AMOUNT=100"),
    ({"TRACER_FETCH_RETRIES": "-1"}, "TRACER_FETCH_RETRIES", "must be 0 or more"),
    ({"TRACER_FETCH_PAGE_LIMIT": "0"}, "TRACER_FETCH_PAGE_LIMIT", "must be greater than 0"),
    ({"TRACER_FETCH_PAGE_LIMIT": "1.5"}, "TRACER_FETCH_PAGE_LIMIT", "expected a number"),
    ({"TRACER_REPLAY_SPEED": "0"}, "TRACER_REPLAY_SPEED", "must be greater than 0"),
    ({"TRACER_REPLAY_START": "yesterday"}, "TRACER_REPLAY_START", "expected an ISO date"),
    ({"TRACER_START_DATE": "2024/01/01"}, "TRACER_START_DATE", "expected a date as YYYY-MM-DD"),
    (
        {"TRACER_START_DATE": "2024-05-01", "TRACER_END_DATE": "2024-04-01"},
        "TRACER_END_DATE",
        "is before TRACER_START_DATE",
    ),
]


@pytest.mark.parametrize(
    ("env", "variable", "fragment"),
    BAD_VALUES,
    ids=[",".join(f"{k}={v}" for k, v in env.items()) for env, _, _ in BAD_VALUES],
)
def test_bad_values_raise_settings_error_naming_the_variable(env, variable, fragment):
    with pytest.raises(SettingsError) as caught:
        load_settings(environ=env)
    message = str(caught.value)
    assert variable in message
    assert fragment in message


def test_min_above_max_names_both_amounts():
    with pytest.raises(SettingsError, match=r"MIN_ALLOWED_ORDER_AMOUNT=50 is above MAX_ORDER_AMOUNT=40"):
        load_settings(environ={"MIN_ALLOWED_ORDER_AMOUNT": "50", "MAX_ORDER_AMOUNT": "40"})
    assert load_settings(
        environ={"MIN_ALLOWED_ORDER_AMOUNT": "40", "MAX_ORDER_AMOUNT": "40"}
    ).trading.max_order_amount == Decimal(40)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ORDER_AMOUNT", "NaN"),
        ("MAX_ORDER_AMOUNT", "Infinity"),
        ("SIM_BASE_BALANCE", "nan"),
        ("SIM_PRICE", "-5"),
        ("TRACER_REPLAY_SPEED", "inf"),
        ("TRACER_FETCH_BACKOFF_SECONDS", "-1"),
        ("TRACER_FETCH_RETRIES", "-1"),
    ],
)
def test_non_finite_or_negative_numbers_are_refused_naming_the_variable(name, value):
    with pytest.raises(SettingsError, match=name):
        load_settings(environ={name: value})


def test_amounts_are_exact_decimals():
    s = load_settings(
        environ={
            "ORDER_AMOUNT": "0.1",
            "MAX_ORDER_AMOUNT": "0.3",
            "MIN_ALLOWED_ORDER_AMOUNT": "0.1",
            "SIM_PRICE": "0.2",
        }
    )
    for value in (
        s.trading.order_amount,
        s.trading.min_allowed_order_amount,
        s.trading.max_order_amount,
        s.trading.sim_price,
        s.trading.sim_base_balance,
        s.trading.sim_quote_balance,
    ):
        assert type(value) is Decimal
    assert s.trading.order_amount + s.trading.sim_price == s.trading.max_order_amount  # 0.1 + 0.2 == 0.3, unlike floats
    assert str(s.trading.order_amount) == "0.1"


def test_symbols_are_upper_cased_in_order():
    s = load_settings(environ={"TRACER_SYMBOLS": " eth/usdt, BTC/USDT "})
    assert s.market.symbols == ("ETH/USDT", "BTC/USDT")


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ("BTC/USDT,,", "has an empty entry (entry 2)"),
        ("BTC/USDT,", "has an empty entry (entry 2)"),
        (",BTC/USDT", "has an empty entry (entry 1)"),
        ("eth/usdt,BTC/USDT,ETH/USDT", "names ETH/USDT more than once"),
        ("BTC/", "'BTC/' is not a ccxt symbol"),
        ("BTC/USDT/X", "'BTC/USDT/X' is not a ccxt symbol"),
    ],
)
def test_a_symbol_list_with_a_slip_is_refused_naming_it(raw, fragment):
    """A stray comma or a repeated symbol is a typo, not a list to tidy up silently."""
    with pytest.raises(SettingsError, match=re.escape(fragment)) as error:
        load_settings(environ={"TRACER_SYMBOLS": raw})
    assert str(error.value).startswith("TRACER_SYMBOLS")


def test_an_order_amount_above_the_maximum_is_refused_naming_both():
    with pytest.raises(SettingsError, match=r"ORDER_AMOUNT=150 is above MAX_ORDER_AMOUNT=100"):
        load_settings(environ={"ORDER_AMOUNT": "150"})
    assert load_settings(environ={"ORDER_AMOUNT": "100"}).trading.order_amount == Decimal(100)


def test_the_signal_age_limit_defaults_to_two_base_candles():
    assert load_settings(environ={}).trading.max_signal_age_seconds == 600
    assert (
        load_settings(
            environ={"TRACER_BASE_TIMEFRAME": "15m", "TRACER_TIMEFRAMES": "1h"}
        ).trading.max_signal_age_seconds
        == 1800
    )
    assert load_settings(environ={"TRACER_MAX_SIGNAL_AGE_SECONDS": "90"}).trading.max_signal_age_seconds == 90
    with pytest.raises(SettingsError, match="TRACER_MAX_SIGNAL_AGE_SECONDS=0"):
        load_settings(environ={"TRACER_MAX_SIGNAL_AGE_SECONDS": "0"})
    with pytest.raises(SettingsError, match="TRACER_MAX_PRICE_DEVIATION"):
        load_settings(environ={"TRACER_MAX_PRICE_DEVIATION": "1.5"})


def test_timeframes_are_sorted_by_length_and_deduplicated():
    assert load_settings(environ={"TRACER_TIMEFRAMES": "4h, 15m,1h,15m,1d"}).market.timeframes == (
        "15m",
        "1h",
        "4h",
        "1d",
    )


def test_exchange_urls_and_replay_clock_are_parsed():
    s = load_settings(
        environ={
            "TRACER_EXCHANGE": "Binance",
            "TRACER_EXCHANGE_URLS": '{"public": "http://127.0.0.1:8080/api/v3"}',
            "TRACER_REPLAY_START": "2024-06-01T12:00",
            "TRACER_REPLAY_ANCHOR": "2031-01-01T00:00:00+02:00",
            "TRACER_REPLAY_SPEED": "60",
        }
    )
    assert s.market.exchange == "binance" and not s.market.is_replay
    assert s.market.exchange_urls == {"public": "http://127.0.0.1:8080/api/v3"}
    assert s.market.replay_start.isoformat() == "2024-06-01T12:00:00+00:00"  # naive means UTC
    assert s.market.replay_anchor.isoformat() == "2030-12-31T22:00:00+00:00"  # converted to UTC
    assert s.market.replay_speed == 60.0


def test_settings_ignore_the_process_environment_when_given_a_mapping(monkeypatch):
    monkeypatch.setenv("ORDER_AMOUNT", "77")
    assert load_settings(environ={}).trading.order_amount == Decimal(100)
    assert load_settings().trading.order_amount == Decimal(77)


# --- the README table -------------------------------------------------------------------------


def test_settings_markdown_has_one_row_per_setting():
    lines = settings_markdown().splitlines()
    assert lines[:2] == ["| name | default | meaning |", "|---|---|---|"]
    assert len(lines) == 2 + len(SETTINGS_TABLE)
    assert [re.match(r"\| `([A-Z_]+)` \|", line).group(1) for line in lines[2:]] == [n for n, _, _ in SETTINGS_TABLE]
    assert "| `MAX_ORDER_AMOUNT` | `100` | Largest order size in quote currency. |" in lines


def test_every_setting_is_listed_in_the_readme_table():
    readme = Path(tracer_assets.__file__).parents[1] / "README.md"
    text = readme.read_text() if readme.is_file() else ""
    table_rows = [line for line in text.splitlines() if line.lstrip().startswith("|")]
    missing = [
        name
        for name, _, _ in SETTINGS_TABLE
        if not any(re.search(rf"(?<![A-Z0-9_]){name}(?![A-Z0-9_])", row) for row in table_rows)
    ]
    assert missing == [], (
        f"README.md's settings table lacks {missing}; regenerate it with `python -m tracer_assets.settings`"
    )
    # Defaults and meanings too: a changed default with a stale README row is caught here.
    assert settings_markdown() in text, "README.md's settings table is stale: `python -m tracer_assets.settings`"


def test_debug_turns_on_debug_logging_of_the_tracer_loggers():
    import logging

    from tracer_assets.definitions import configure_logging

    logger = logging.getLogger("tracer_assets.trading")
    try:
        configure_logging(load_settings(environ={"DEBUG": "1"}))
        assert logger.isEnabledFor(logging.DEBUG)
        configure_logging(load_settings(environ={}))
        assert not logger.isEnabledFor(logging.DEBUG)
    finally:
        configure_logging(load_settings(environ={}))
