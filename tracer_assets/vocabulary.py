"""The shared vocabulary: labels, symbols, timeframes and times, each in one normal form.

Pure Python (no Dagster, no polars). Every normalizer takes whatever a producer wrote and
returns the normal form or, for a value that is not one, `None` (`other` for a label); none
of them raises.

Labels
------
`normalize_label(value)` maps a value to one of `LABELS`:

==========================================  ===============
input                                       label
==========================================  ===============
True                                        bull
False                                       bear
2, 2.0, "2", "+2", "2.0"                    strong_bull
1, 1.0, "1", "+1"                           bull
-1, -1.0, "-1"                              bear
-2, -2.0, "-2"                              strong_bear
0, any other number (3, 0.7, -1.5),         other
NaN, inf, "nan"
None, "", "   ", unknown text, other types  other
==========================================  ===============

Bytes are decoded as UTF-8 first; numpy ints, floats and bools, Decimal and Fraction count as
the numbers and booleans they are (bool is tested before int: it is an int subclass).

Text is matched after lowercasing and dropping everything but the letters a-z, so
"STRONG_BULL", "Strong Bull", "strong-bull", "strongbull" and " strong bull " are one word:

===========  ==================================================================
label        words
===========  ==================================================================
strong_bull  strong bull(ish), strongly bullish, very bullish, strong buy,
             strong long, strong up
bull         bull, bullish, buy, long, up, true
bear         bear, bearish, sell, short, down, false
strong_bear  strong bear(ish), strongly bearish, very bearish, strong sell,
             strong short, strong down
other        everything else (neutral, hold, flat, none, sideways, garbage)
===========  ==================================================================

Numbers are not rounded: only exact integers -2..2 carry a direction. A 0.7 is most likely a
probability, and guessing a direction from it would be wrong; it reads as `other`.
`label_score(label)` is the label's vote for an ensemble (`LABEL_SCORES`): strong_bull 2,
bull 1, other 0, bear -1, strong_bear -2.

Symbols
-------
`normalize_symbol(value)` gives ccxt's "BASE/QUOTE" (upper case): "btc/usdt", "BTC-USDT",
"BTC_USDT", "BTC USDT" are split at the separator; "btcusdt" at a known quote suffix
(`QUOTES`: USDT, USDC, BUSD, USD, BTC, ETH, EUR; longest first); "BINANCE:BTCUSDT" loses the
exchange prefix; "BTC/USDT:USDT" (a ccxt swap) keeps its settle currency.

Timeframes
----------
`normalize_timeframe(value)` gives ccxt's notation in the largest whole unit. It reads an
amount and one unit letter (s, m, h, d, w, M, y): an upper-case "M" is a month ("1M", ccxt's
notation), any other letter is read in lower case ("1H" -> "1h", "1D" -> "1d"); a multiple
moves to the larger unit ("60m" -> "1h", "1440m" -> "1d"). Lengths come from
`market.timeframes.timeframe_seconds`, the project's one timeframe parser.

Times
-----
`normalize_ts(value)` gives a timezone-aware UTC datetime from epoch seconds, milliseconds,
microseconds or nanoseconds (told apart by magnitude), numeric strings of those, a datetime,
or ISO 8601 with or without a zone ("Z", "+02:00", " UTC"; no zone means UTC; a bare date is
midnight UTC). Times before `TS_MIN` (2000-01-01) or from `TS_MAX` (2100-01-01) on are not
times (they are unit mistakes, not predictions).
"""

from __future__ import annotations

import math
import numbers
import re
from datetime import UTC, datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any

from tracer_assets.market.timeframes import timeframe_seconds

__all__ = [
    "BEAR",
    "BULL",
    "LABELS",
    "LABEL_SCORES",
    "OTHER",
    "QUOTES",
    "STRONG_BEAR",
    "STRONG_BULL",
    "TS_MAX",
    "TS_MIN",
    "label_score",
    "normalize_label",
    "normalize_symbol",
    "normalize_timeframe",
    "normalize_ts",
]

# ---------------------------------------------------------------------------------------------
# Labels
# ---------------------------------------------------------------------------------------------

STRONG_BULL, BULL, BEAR, STRONG_BEAR, OTHER = "strong_bull", "bull", "bear", "strong_bear", "other"
LABELS: tuple[str, ...] = (STRONG_BULL, BULL, BEAR, STRONG_BEAR, OTHER)
LABEL_SCORES: dict[str, int] = {STRONG_BULL: 2, BULL: 1, OTHER: 0, BEAR: -1, STRONG_BEAR: -2}
# The labels in score order: a classifier's class i is CLASS_LABELS[i], its score i - 2.
CLASS_LABELS: tuple[str, ...] = (STRONG_BEAR, BEAR, OTHER, BULL, STRONG_BULL)
_INT_LABELS = {score: label for label, score in LABEL_SCORES.items()}

_WORDS: dict[str, tuple[str, ...]] = {
    STRONG_BULL: (
        "strongbull",
        "strongbullish",
        "stronglybullish",
        "verybullish",
        "strongbuy",
        "stronglong",
        "strongup",
    ),
    BULL: ("bull", "bullish", "buy", "long", "up", "true"),
    BEAR: ("bear", "bearish", "sell", "short", "down", "false"),
    STRONG_BEAR: (
        "strongbear",
        "strongbearish",
        "stronglybearish",
        "verybearish",
        "strongsell",
        "strongshort",
        "strongdown",
    ),
}
_TEXT_LABELS = {word: label for label, words in _WORDS.items() for word in words}
_NOT_LETTERS = re.compile(r"[^a-z]+")
_NUMBER_TEXT = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_INTEGER_TEXT = re.compile(r"[+-]?\d{1,30}")
_MAX_TEXT = 64  # longer text is no label, symbol or time


def _label_from_float(number: float) -> str:
    if not math.isfinite(number) or not number.is_integer():
        return OTHER
    return _INT_LABELS.get(int(number), OTHER)


@lru_cache(maxsize=4096)
def _label_from_text(text: str) -> str:
    text = text.strip()
    if not text:
        return OTHER
    if _NUMBER_TEXT.fullmatch(text):
        return _label_from_float(float(text))
    return _TEXT_LABELS.get(_NOT_LETTERS.sub("", text.lower()), OTHER)


def normalize_label(value: Any) -> str:
    """One of `LABELS` for whatever a producer wrote (see the module's table). Never raises."""
    try:
        if value is None:
            return OTHER
        if isinstance(value, bool) or type(value).__name__ in ("bool_", "bool"):  # before int; numpy's too
            return BULL if bool(value) else BEAR
        if isinstance(value, (bytes, bytearray)):
            value = bytes(value[:200]).decode("utf-8", "replace")
        if isinstance(value, str):
            if len(value) > _MAX_TEXT:  # not cached: garbage should not fill the cache
                return _label_from_text.__wrapped__(value)
            return _label_from_text(value)
        if isinstance(value, numbers.Integral):
            return _INT_LABELS.get(int(value), OTHER)
        if isinstance(value, (numbers.Real, Decimal)):
            return _label_from_float(float(value))
    except Exception:  # a hostile __float__ / __bool__, a huge Decimal, ...
        return OTHER
    return OTHER


def label_score(label: Any) -> int:
    """The label's vote, -2..2 (strong_bear -2 .. strong_bull 2, other 0).

    Raw values are normalized first, so label_score("Strong Buy") == 2.
    """
    try:
        return LABEL_SCORES[label]
    except (KeyError, TypeError):
        return LABEL_SCORES[normalize_label(label)]


# ---------------------------------------------------------------------------------------------
# Symbols
# ---------------------------------------------------------------------------------------------

QUOTES: tuple[str, ...] = ("USDT", "USDC", "BUSD", "USD", "BTC", "ETH", "EUR")
_QUOTES_LONGEST_FIRST = tuple(sorted(QUOTES, key=len, reverse=True))
_ASSET = re.compile(r"[A-Z0-9]{1,20}")
_SEPARATORS = re.compile(r"[-_\s]+")


@lru_cache(maxsize=4096)
def _symbol_from_text(text: str) -> str | None:
    text = text.strip().upper()
    if "/" in text:
        base, _, rest = text.partition("/")
        quote, colon, settle = rest.partition(":")
        base, quote, settle = base.strip(), quote.strip(), settle.strip()
        if not (_ASSET.fullmatch(base) and _ASSET.fullmatch(quote)):
            return None
        if colon:
            return f"{base}/{quote}:{settle}" if _ASSET.fullmatch(settle) else None
        return f"{base}/{quote}"
    if ":" in text:  # an exchange prefix, TradingView style: BINANCE:BTCUSDT
        text = text.rpartition(":")[2].strip()
    parts = [part for part in _SEPARATORS.split(text) if part]
    if len(parts) == 2:
        base, quote = parts
    elif len(parts) == 1:
        base = quote = ""
        for candidate in _QUOTES_LONGEST_FIRST:
            if text.endswith(candidate) and len(text) > len(candidate):
                base, quote = text[: -len(candidate)], candidate
                break
    else:
        return None
    if _ASSET.fullmatch(base) and _ASSET.fullmatch(quote):
        return f"{base}/{quote}"
    return None


def normalize_symbol(value: Any) -> str | None:
    """The ccxt symbol ("BTC/USDT") for "btcusdt", "BTC-USDT", "btc/usdt", ...; None if not one."""
    if not isinstance(value, str) or len(value) > _MAX_TEXT:
        return None
    return _symbol_from_text(value)


# ---------------------------------------------------------------------------------------------
# Timeframes
# ---------------------------------------------------------------------------------------------

_TIMEFRAME_TEXT = re.compile(r"\s*([0-9]{1,6})\s*([A-Za-z])\s*")
_WHOLE_UNITS = tuple((unit, timeframe_seconds(f"1{unit}")) for unit in "wdhms")  # largest first


@lru_cache(maxsize=1024)
def _timeframe_from_text(text: str) -> str | None:
    match = _TIMEFRAME_TEXT.fullmatch(text)
    if match is None:
        return None
    amount, unit = int(match.group(1)), match.group(2)
    if unit != "M":  # an upper-case M is ccxt's month; any other letter in either case
        unit = unit.lower()
    try:
        seconds = timeframe_seconds(f"{amount}{unit}")
    except ValueError:
        return None
    if unit in ("M", "y"):  # calendar units: 12M is not 360d
        return f"{amount}{unit}"
    return next(f"{seconds // size}{name}" for name, size in _WHOLE_UNITS if seconds % size == 0)


def normalize_timeframe(value: Any) -> str | None:
    """ccxt timeframe in its largest whole unit ("1h") for "1H", "60m", " 1h "; None if not one."""
    if not isinstance(value, str) or len(value) > 32:
        return None
    return _timeframe_from_text(value)


# ---------------------------------------------------------------------------------------------
# Times
# ---------------------------------------------------------------------------------------------

TS_MIN = datetime(2000, 1, 1, tzinfo=UTC)
TS_MAX = datetime(2100, 1, 1, tzinfo=UTC)  # exclusive
_TS_MIN_S, _TS_MAX_S = TS_MIN.timestamp(), TS_MAX.timestamp()
_LONG_FRACTION = re.compile(r"(\.\d{6})\d+")
_UTC_SUFFIX = re.compile(r"\s*(?:UTC|GMT)\s*$", re.IGNORECASE)


def _from_epoch(number: int | float) -> datetime | None:
    if type(number) is not int and not math.isfinite(number):
        return None
    size = abs(number)
    if size >= 1e17:
        scale = 1_000_000_000  # nanoseconds
    elif size >= 1e14:
        scale = 1_000_000  # microseconds
    elif size >= 1e11:
        scale = 1_000  # milliseconds
    else:
        scale = 1
    seconds = number / scale
    if not _TS_MIN_S <= seconds < _TS_MAX_S:
        return None
    # A double holds these seconds to better than 0.25 us: rounding to the microsecond is exact.
    return datetime.fromtimestamp(seconds, UTC)


def _in_range(moment: datetime) -> datetime | None:
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return moment if TS_MIN <= moment < TS_MAX else None


def normalize_ts(value: Any) -> datetime | None:
    """A timezone-aware UTC datetime from epoch s/ms/us/ns or ISO 8601; None if not a time."""
    try:
        if isinstance(value, bool) or value is None:
            return None
        if isinstance(value, datetime):
            return _in_range(value)
        if isinstance(value, (int, float)):
            return _from_epoch(value)
        if not isinstance(value, str):
            return None
        text = value.strip()
        if not text or len(text) > _MAX_TEXT:
            return None
        if _NUMBER_TEXT.fullmatch(text):
            number = int(text) if _INTEGER_TEXT.fullmatch(text) else float(text)
            moment = _from_epoch(number)
            if moment is not None or len(text) != 8 or not text.isdigit():
                return moment
            # eight digits out of the epoch range: a basic ISO date (20240101), below
        text = _UTC_SUFFIX.sub("", text)
        text = _LONG_FRACTION.sub(r"\1", text)  # nanoseconds: fromisoformat takes six digits
        return _in_range(datetime.fromisoformat(text))
    except (ValueError, OverflowError, TypeError, OSError):
        return None
