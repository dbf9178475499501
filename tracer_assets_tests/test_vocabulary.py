"""The shared vocabulary: the five labels and their scores, symbols, timeframes (through the one
timeframe parser, market/timeframes.py) and prediction timestamps, each to one normal form."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from fractions import Fraction

import numpy as np
import pytest

from tracer_assets import vocabulary
from tracer_assets.market import timeframes
from tracer_assets.vocabulary import (
    LABEL_SCORES,
    LABELS,
    label_score,
    normalize_label,
    normalize_symbol,
    normalize_timeframe,
    normalize_ts,
)

T0 = 1_700_000_000  # 2023-11-14 22:13:20 UTC

# ---------------------------------------------------------------------------------------------
# Labels
# ---------------------------------------------------------------------------------------------

LABEL_TABLE = [
    # strings in any case and separator
    ("STRONG_BULL", "strong_bull"),
    ("Strong Bull", "strong_bull"),
    ("strong-bull", "strong_bull"),
    ("strongbull", "strong_bull"),
    ("  strong   bull  ", "strong_bull"),
    ("Strongly Bullish", "strong_bull"),
    ("very bullish", "strong_bull"),
    ("strong buy", "strong_bull"),
    ("STRONG_BUY", "strong_bull"),
    ("strong long", "strong_bull"),
    (" bull ", "bull"),
    ("BULL", "bull"),
    ("Bullish", "bull"),
    ("buy", "bull"),
    ("Long", "bull"),
    ("up", "bull"),
    ("UP", "bull"),
    ("true", "bull"),
    ("bear", "bear"),
    ("bearish", "bear"),
    ("SELL", "bear"),
    ("short", "bear"),
    ("down", "bear"),
    ("false", "bear"),
    ("strong_bear", "strong_bear"),
    ("Strong-Bear", "strong_bear"),
    ("strong bearish", "strong_bear"),
    ("strong sell", "strong_bear"),
    ("strong short", "strong_bear"),
    ("strong down", "strong_bear"),
    # numbers: exact integers -2..2 only
    (2, "strong_bull"),
    (1, "bull"),
    (0, "other"),
    (-1, "bear"),
    (-2, "strong_bear"),
    (3, "other"),
    (-3, "other"),
    (10**40, "other"),
    (2.0, "strong_bull"),
    (1.0, "bull"),
    (-1.0, "bear"),
    (-2.0, "strong_bear"),
    (0.0, "other"),
    (-0.0, "other"),
    (0.7, "other"),
    (1.5, "other"),
    (-1.5, "other"),
    (float("nan"), "other"),
    (float("inf"), "other"),
    (float("-inf"), "other"),
    # numeric strings
    ("2", "strong_bull"),
    ("+2", "strong_bull"),
    ("2.0", "strong_bull"),
    ("1", "bull"),
    ("+1", "bull"),
    (" 1 ", "bull"),
    ("-1", "bear"),
    ("-1.0", "bear"),
    ("-2", "strong_bear"),
    ("0", "other"),
    ("1.5", "other"),
    ("3", "other"),
    ("1e0", "bull"),
    ("nan", "other"),
    ("NaN", "other"),
    ("inf", "other"),
    # booleans (before ints: bool is an int subclass)
    (True, "bull"),
    (False, "bear"),
    # nothing, garbage, other types
    (None, "other"),
    ("", "other"),
    ("   ", "other"),
    ("neutral", "other"),
    ("HOLD", "other"),
    ("flat", "other"),
    ("bull/bear", "other"),
    ("not bull", "other"),
    ("\x00\x01", "other"),
    ("\ufffd\ufffd", "other"),
    ("bull" * 100, "other"),
    ([1], "other"),
    ({"label": "bull"}, "other"),
    (object(), "other"),
    (b"bull", "bull"),
    (b"\xff\xfe", "other"),
    (Decimal("2"), "strong_bull"),
    (Decimal("NaN"), "other"),
    (Fraction(-2, 1), "strong_bear"),
    (Fraction(1, 2), "other"),
    (np.int64(-2), "strong_bear"),
    (np.float64(1.0), "bull"),
    (np.float64("nan"), "other"),
    (np.bool_(True), "bull"),
    (np.bool_(False), "bear"),
]


@pytest.mark.parametrize(("value", "expected"), LABEL_TABLE, ids=[repr(v)[:30] for v, _ in LABEL_TABLE])
def test_normalize_label_table(value, expected):
    assert normalize_label(value) == expected


def test_normalize_label_never_raises_on_hostile_objects():
    class Hostile(float):
        def __float__(self):
            raise RuntimeError("no")

        def is_integer(self):
            raise RuntimeError("no")

    class BadRepr:
        def __repr__(self):
            raise RuntimeError("no")

    for value in (Hostile(1.0), BadRepr(), Decimal("1e999999"), type, print, ..., range(3)):
        assert normalize_label(value) in LABELS


def test_labels_and_scores():
    assert LABELS == ("strong_bull", "bull", "bear", "strong_bear", "other")
    assert LABEL_SCORES == {"strong_bull": 2, "bull": 1, "other": 0, "bear": -1, "strong_bear": -2}
    assert [label_score(label) for label in LABELS] == [2, 1, -1, -2, 0]
    assert label_score("Strong Buy") == 2
    assert label_score(-1) == -1
    assert label_score(True) == 1
    assert label_score(None) == 0
    assert label_score(["unhashable"]) == 0
    assert label_score(float("nan")) == 0


# ---------------------------------------------------------------------------------------------
# Symbols, timeframes, times
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("BTC/USDT", "BTC/USDT"),
        ("btc/usdt", "BTC/USDT"),
        (" btc / usdt ", "BTC/USDT"),
        ("BTC-USDT", "BTC/USDT"),
        ("BTC_USDT", "BTC/USDT"),
        ("btc usdt", "BTC/USDT"),
        ("btcusdt", "BTC/USDT"),
        ("BTCUSDT", "BTC/USDT"),
        ("ETHUSDC", "ETH/USDC"),
        ("BNBBUSD", "BNB/BUSD"),
        ("BTCUSD", "BTC/USD"),
        ("ETHBTC", "ETH/BTC"),
        ("LINKETH", "LINK/ETH"),
        ("BTCEUR", "BTC/EUR"),
        ("1000PEPEUSDT", "1000PEPE/USDT"),
        ("BINANCE:BTCUSDT", "BTC/USDT"),
        ("BTC/USDT:USDT", "BTC/USDT:USDT"),
        ("XBT-EUR", "XBT/EUR"),
        ("USDT", None),
        ("BTCXYZ", None),
        ("BTC-USDT-SWAP", None),
        ("BTC/", None),
        ("/USDT", None),
        ("BTC/US DT", None),
        ("", None),
        ("   ", None),
        ("\x00BTCUSDT", None),
        (42, None),
        (None, None),
        (["BTC/USDT"], None),
        ("B" * 100, None),
    ],
)
def test_normalize_symbol(raw, expected):
    assert normalize_symbol(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1h", "1h"),
        ("1H", "1h"),
        ("15m", "15m"),
        ("60m", "1h"),
        ("90m", "90m"),
        ("24h", "1d"),
        ("1440m", "1d"),
        ("1d", "1d"),
        ("1D", "1d"),
        ("7d", "1w"),
        ("1w", "1w"),
        ("1W", "1w"),
        ("1M", "1M"),  # ccxt: upper-case M is a month
        ("12M", "12M"),  # calendar units stay as written
        ("1m", "1m"),
        ("30s", "30s"),
        ("60S", "1m"),
        ("1y", "1y"),
        (" 1h ", "1h"),
        ("4 h", "4h"),
        ("0m", None),
        ("-5m", None),
        ("+5m", None),
        ("1.5h", None),
        ("5x", None),
        ("h", None),
        ("fortnight", None),
        ("", None),
        (None, None),
        (True, None),
        (15, None),
        ("9" * 40, None),
    ],
)
def test_normalize_timeframe(raw, expected):
    assert normalize_timeframe(raw) == expected
    if expected is not None:
        assert normalize_timeframe(expected) == expected


def test_timeframe_lengths_come_from_the_one_parser(monkeypatch):
    """normalize_timeframe has no parser of its own: market/timeframes.py decides what is one."""
    seen = []
    real = timeframes.timeframe_seconds
    monkeypatch.setattr(vocabulary, "timeframe_seconds", lambda tf: seen.append(tf) or real(tf))
    vocabulary._timeframe_from_text.cache_clear()
    try:
        assert normalize_timeframe("180M") == "180M" and normalize_timeframe("180m") == "3h"
        assert seen == ["180M", "180m"]
    finally:
        vocabulary._timeframe_from_text.cache_clear()
    with pytest.raises(ValueError, match="not a timeframe"):
        timeframes.timeframe_seconds("1H")  # strict: configured timeframes are written in ccxt's notation


EXPECTED_T0 = datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (T0, EXPECTED_T0),
        (T0 * 1000, EXPECTED_T0),
        (T0 * 1000 + 123, EXPECTED_T0 + timedelta(milliseconds=123)),
        (T0 * 1_000_000 + 7, EXPECTED_T0 + timedelta(microseconds=7)),
        (T0 * 1_000_000_000, EXPECTED_T0),
        (float(T0), EXPECTED_T0),
        (T0 + 0.5, EXPECTED_T0 + timedelta(milliseconds=500)),
        (str(T0), EXPECTED_T0),
        (str(T0 * 1000), EXPECTED_T0),
        (f"{T0}.25", EXPECTED_T0 + timedelta(milliseconds=250)),
        ("2023-11-14T22:13:20Z", EXPECTED_T0),
        ("2023-11-14T22:13:20", EXPECTED_T0),  # no zone: UTC
        ("2023-11-14 22:13:20", EXPECTED_T0),
        ("2023-11-14T23:13:20+01:00", EXPECTED_T0),
        ("2023-11-14T17:13:20-05:00", EXPECTED_T0),
        ("2023-11-14T22:13:20.000+00:00", EXPECTED_T0),
        ("2023-11-14T22:13:20.123456789Z", EXPECTED_T0 + timedelta(microseconds=123456)),
        ("2023-11-14 22:13:20 UTC", EXPECTED_T0),
        ("2023-11-14", datetime(2023, 11, 14, tzinfo=UTC)),
        ("20231114", datetime(2023, 11, 14, tzinfo=UTC)),
        (datetime(2023, 11, 14, 22, 13, 20), EXPECTED_T0),
        (datetime(2023, 11, 14, 23, 13, 20, tzinfo=timezone(timedelta(hours=1))), EXPECTED_T0),
        (0, None),  # 1970: a unit mistake, not a prediction
        (-T0, None),
        (5_000_000_000_000_000_000_000, None),
        ("1999-12-31T23:59:59Z", None),
        ("2100-01-01", None),
        (float("nan"), None),
        (float("inf"), None),
        (10**400, None),
        ("yesterday", None),
        ("2023-13-45", None),
        ("", None),
        (None, None),
        (True, None),
        ([T0], None),
    ],
)
def test_normalize_ts(raw, expected):
    moment = normalize_ts(raw)
    assert moment == expected
    if moment is not None:
        assert moment.tzinfo is not None and moment.utcoffset() == timedelta(0)
