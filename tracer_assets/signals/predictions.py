"""External predictions: one label vocabulary, and a reader for a log another system writes.

Pure Python (no Dagster, no polars): the signals assets call these.

Labels
------
`normalize_label(value)` maps whatever a producer wrote to one of `LABELS`; it never raises.

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
`label_score(label)` is the label's vote for an ensemble: strong_bull 2, bull 1, other 0,
bear -1, strong_bear -2.

Reading the log
---------------
`read_signal_log(path)` reads newline-delimited JSON that another process may be writing
at that moment, and never raises: a missing file, an empty file, a whole JSON
document (a list, one object, or {"signals": [...]}), JSON lines, the two mixed, pretty-printed
objects spanning lines, binary garbage, NUL bytes, invalid UTF-8 (replaced by U+FFFD) and a
last object cut mid-write all give a `SignalLogRead`.

Only a regular file is ever opened. The path is checked with `os.stat` first: a directory, a
FIFO, a socket or a device is not opened at all (opening a FIFO with no writer blocks forever,
and a device can be endless) and reads as empty with `error` saying what it is; so does a
path that cannot be opened (permissions). The open itself uses O_NONBLOCK and the opened file
is checked again (`fstat`), so a FIFO swapped in between the two cannot block either. The
caller reports `error` as a warning; it never stops anything.

Two caps bound the work: at most the last `max_bytes` of the file are read (default 64 MiB,
a few seconds of parsing) and at most the last `max_records` usable records are kept (default
500,000, in file order: the newest lines); `records_dropped` counts the ones the cap let go.

How: each line that looks like one JSON value (starts with { or [ and ends with } or ]) is
parsed by `json`'s C scanner (the fast path; JSON lines never go further). Consecutive lines
that fail form a region; a region is tried as one JSON document, then scanned: from each `{`
that can start an object (`{` then `"` or `}`) the C decoder (`raw_decode`, on a window that
grows only while the object needs it) parses one; where it fails, a bracket scanner that respects
strings and escapes finds where the broken object ends (its closing brace, a `{` where no
value may start, a string running into a line end, or the end of the file), and complete
objects nested in the broken one (the items of a cut-off {"signals": [...]}) are salvaged.
Text outside any object is junk, counted once per line (not again on a line where a
broken object already counted). Reading is linear in the file size; a 50 MB log of JSON
lines takes a few seconds, most of it `json` itself.

What is rejected (`SignalLogRead.reasons`, one count each):

======================  ================================================================
reason                  what
======================  ================================================================
junk                    a line (or the part of one outside any object) that is not JSON:
                        binary bytes, NULs, text, control characters; a `{` followed by
                        neither `"`, `}` nor the end of the file is junk (a document's
                        skeleton between objects, "[", "],", is not)
not_an_object           a JSON value that is not an object (a bare 42 or "x" on a line, a
                        number in a list)
malformed_object        braces balance but the object is not valid JSON
unterminated_object     an object cut off in the middle of the file
truncated_tail          the object at the end of the file is incomplete (mid-write)
missing_symbol /        no symbol, or one that is not BASE/QUOTE
bad_symbol
missing_timeframe /     no timeframe, or one not like 5m, 1h, 4h
bad_timeframe
missing_ts / bad_ts     no time, or not a time between 2000 and 2100
======================  ================================================================

`examples` keeps the first 20 as "line N: reason detail".

Sanitized record
----------------
Keys are trimmed, lowercased, runs of spaces and dashes become "_", then aliases apply (the
first name of each row wins when several are present; the others go to `extra`):

==========  ===============================================
field       accepted keys
==========  ===============================================
symbol      symbol, pair, ticker, coin
timeframe   timeframe, tf, interval, time_frame
ts          ts, timestamp, time, datetime, date
label       label, signal, prediction, direction
confidence  confidence, probability, prob, score
==========  ===============================================

- symbol -> ccxt form "BASE/QUOTE" (upper case): "btc/usdt", "BTC-USDT", "BTC_USDT",
  "BTC USDT" split at the separator; "btcusdt" split at a known quote suffix (USDT, USDC,
  BUSD, USD, BTC, ETH, EUR; longest first); "BINANCE:BTCUSDT" loses the exchange prefix;
  "BTC/USDT:USDT" (a ccxt swap) keeps its settle currency. Anything else is rejected.
- timeframe -> ccxt notation in the largest whole unit: "1H" -> "1h", "15min"/"15m" ->
  "15m", "4 hours" -> "4h", "60m" -> "1h", "D"/"daily" -> "1d", MetaTrader "M15"/"H4" ->
  "15m"/"4h", a bare number is minutes (TradingView: 60 / "240" -> "1h" / "4h"). Upper-case
  "M" alone is a month ("1M", ccxt's notation); "min", "MIN", "Min" are minutes.
  Unknown units, zero and non-integers are rejected.
- ts -> timezone-aware UTC datetime, from epoch seconds, milliseconds, microseconds or
  nanoseconds (told apart by magnitude), numeric strings of those, or ISO 8601 with or without
  a zone ("Z", "+02:00", " UTC"; no zone means UTC; a bare date is midnight UTC). Times before
  2000-01-01 or from 2100-01-01 on are rejected (they are unit mistakes, not predictions).
- label -> `normalize_label` of the raw value, which is kept as `raw_label` (None when the
  record had no label; such a record is kept, labelled `other`).
- confidence -> float in [0, 1] or None: a value in [0, 1] as is; above 1 up to 100 read as a
  percentage ("85%" too); negative, above 100, NaN or non-numeric -> None (the record is
  kept). Exactly 1 means certainty, not 1 %.
- every other key is kept, unchanged, under `extra`.

A record is {"symbol", "timeframe", "ts", "label", "raw_label", "confidence", "extra"}.

Choosing the predictions a signal may use
-----------------------------------------
`latest_predictions(records)` is only the newest record per (symbol, timeframe), whatever its
time. The signals use `select_predictions(records, newest, configured)` instead: `newest` maps
each series about to be published, (symbol, timeframe), to the open time of the newest closed
candle its signal is computed on (Tracer's `ts`). Each record is put in exactly one bucket:

=====================  ======================================================================
bucket                 what
=====================  ======================================================================
rejected_unconfigured  its symbol or timeframe is not configured (not in `configured`, or not
                       in `newest` when `configured` is not given)
rejected_no_signal     configured, but no signal is published for that series in this run
rejected_future        dated after that series' newest closed candle: a prediction can only
                       use what was known at that candle (no lookahead), and a line dated in
                       the future (a clock or unit mistake, 2099) must never win
ignored_stale          dated more than `max_age_bars` candles of its timeframe before that
                       candle (default `MAX_PREDICTION_AGE_BARS` = 3: for 5m, 15 minutes)
used                   the newest remaining one of its series (on equal times the later line)
superseded             another remaining one of its series, older than the one used
=====================  ======================================================================

Symbols and timeframes of `newest` and `configured` are compared in their normalized form
("60m" is "1h"); the keys of `used` are the caller's own.
"""

from __future__ import annotations

import gc
import json
import math
import numbers
import os
import re
import stat
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import lru_cache
from typing import Any

__all__ = [
    "LABELS",
    "MAX_PREDICTION_AGE_BARS",
    "PredictionSelection",
    "SignalLogRead",
    "label_score",
    "latest_predictions",
    "normalize_label",
    "normalize_symbol",
    "normalize_timeframe",
    "parse_ts",
    "read_signal_log",
    "sanitize_record",
    "select_predictions",
]

UTC = UTC

# ---------------------------------------------------------------------------------------------
# Labels
# ---------------------------------------------------------------------------------------------

STRONG_BULL, BULL, BEAR, STRONG_BEAR, OTHER = "strong_bull", "bull", "bear", "strong_bear", "other"
LABELS: tuple[str, ...] = (STRONG_BULL, BULL, BEAR, STRONG_BEAR, OTHER)
LABEL_SCORES: dict[str, int] = {STRONG_BULL: 2, BULL: 1, OTHER: 0, BEAR: -1, STRONG_BEAR: -2}
_INT_LABELS = {2: STRONG_BULL, 1: BULL, 0: OTHER, -1: BEAR, -2: STRONG_BEAR}

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
        kind = type(value)
        if kind is str and len(value) <= 64:  # the common cases first
            return _label_from_text(value)
        if kind is int:
            return _INT_LABELS.get(value, OTHER)
        if value is None:
            return OTHER
        if isinstance(value, bool):  # before int: bool is an int subclass
            return BULL if value else BEAR
        if isinstance(value, str):
            if len(value) > 64:  # not cached: garbage should not fill the cache
                return _label_from_text.__wrapped__(value)
            return _label_from_text(value)
        if isinstance(value, (bytes, bytearray)):
            return normalize_label(bytes(value[:200]).decode("utf-8", "replace"))
        if type(value).__name__ in ("bool_", "bool"):  # numpy's bool is no Python bool
            return BULL if bool(value) else BEAR
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
# Fields: symbol, timeframe, ts, confidence
# ---------------------------------------------------------------------------------------------

QUOTES: tuple[str, ...] = ("USDT", "USDC", "BUSD", "USD", "BTC", "ETH", "EUR")
_QUOTES_LONGEST_FIRST = tuple(sorted(QUOTES, key=len, reverse=True))
_ASSET = re.compile(r"[A-Z0-9]{1,20}")
_SEPARATORS = re.compile(r"[-_\s]+")


@lru_cache(maxsize=4096)
def _symbol_from_text(text: str) -> str | None:
    text = text.strip().upper()
    if not text:
        return None
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
    if not isinstance(value, str) or len(value) > 64:
        return None
    return _symbol_from_text(value)


_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3_600, "d": 86_400, "w": 604_800}
_UNITS = {
    **dict.fromkeys(("s", "sec", "secs", "second", "seconds"), "s"),
    **dict.fromkeys(("m", "min", "mins", "minute", "minutes", "t"), "m"),
    **dict.fromkeys(("h", "hr", "hrs", "hour", "hours", "hourly"), "h"),
    **dict.fromkeys(("d", "day", "days", "daily"), "d"),
    **dict.fromkeys(("w", "wk", "wks", "week", "weeks", "weekly"), "w"),
    **dict.fromkeys(("mo", "mon", "mth", "month", "months", "monthly"), "M"),
    **dict.fromkeys(("y", "yr", "yrs", "year", "years", "yearly"), "y"),
}
# MetaTrader puts the unit first: M15, H4, D1, W1, MN1 (M is minutes there).
_MT_UNITS = {"m": "m", "h": "h", "d": "d", "w": "w", "mn": "M"}
_TIMEFRAME_NUMBER_FIRST = re.compile(r"(\d+)?\s*([A-Za-z]+)?")
_TIMEFRAME_UNIT_FIRST = re.compile(r"([A-Za-z]{1,2})(\d+)")
_MAX_TIMEFRAME_AMOUNT = 100_000


def _canonical_timeframe(amount: int, unit: str) -> str | None:
    if amount <= 0 or amount > _MAX_TIMEFRAME_AMOUNT:
        return None
    if unit in ("M", "y"):
        return f"{amount}{unit}"
    seconds = amount * _UNIT_SECONDS[unit]
    for name in ("w", "d", "h", "m", "s"):
        if seconds % _UNIT_SECONDS[name] == 0:
            return f"{seconds // _UNIT_SECONDS[name]}{name}"
    return None  # unreachable: every amount is whole seconds


@lru_cache(maxsize=1024)
def _timeframe_from_text(text: str) -> str | None:
    text = text.strip()
    match = _TIMEFRAME_NUMBER_FIRST.fullmatch(text)
    if match and (match.group(1) or match.group(2)):
        number, unit_text = match.groups()
        amount = int(number) if number else 1
        if unit_text is None:
            unit = "m"  # a bare number is minutes (TradingView: "60", "240")
        elif unit_text == "M":
            unit = "M"  # ccxt's month; "min" in any case is minutes
        else:
            unit = _UNITS.get(unit_text.lower())
            if unit is None:
                return None
        return _canonical_timeframe(amount, unit)
    match = _TIMEFRAME_UNIT_FIRST.fullmatch(text)
    if match:
        unit = _MT_UNITS.get(match.group(1).lower())
        if unit is not None:
            return _canonical_timeframe(int(match.group(2)), unit)
    return None


def normalize_timeframe(value: Any) -> str | None:
    """ccxt timeframe ("1h") for "1H", "60m", "4 hours", "15min", 240 ...; None if not one."""
    if type(value) is str:
        return _timeframe_from_text(value) if len(value) <= 32 else None
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return _canonical_timeframe(value, "m")
    if isinstance(value, float) and value.is_integer():
        return _canonical_timeframe(int(value), "m")
    if not isinstance(value, str) or len(value) > 32:
        return None
    return _timeframe_from_text(value)


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
    return moment if TS_MIN <= moment < TS_MAX else None


def parse_ts(value: Any) -> datetime | None:
    """A timezone-aware UTC datetime from epoch s/ms/us/ns or ISO 8601; None if not a time."""
    try:
        if type(value) is int:  # the common case first
            return _from_epoch(value)
        if isinstance(value, bool) or value is None:
            return None
        if isinstance(value, datetime):
            moment = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
            return _in_range(moment)
        if isinstance(value, (int, float)):
            return _from_epoch(value)
        if not isinstance(value, str):
            return None
        text = value.strip()
        if not text or len(text) > 64:
            return None
        if _NUMBER_TEXT.fullmatch(text):
            number = int(text) if _INTEGER_TEXT.fullmatch(text) else float(text)
            moment = _from_epoch(number)
            if moment is not None or len(text) != 8 or not text.isdigit():
                return moment
            # eight digits out of the epoch range: a basic ISO date (20240101), below
        if text[-1] in "CTct":
            text = _UTC_SUFFIX.sub("", text)
        if len(text) > 26:
            text = _LONG_FRACTION.sub(r"\1", text)  # nanoseconds: fromisoformat takes six digits
        moment = datetime.fromisoformat(text)
        moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
        return _in_range(moment)
    except (ValueError, OverflowError, TypeError, OSError):
        return None


def _confidence(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    percent = False
    if isinstance(value, str):
        text = value.strip()
        if text.endswith("%"):
            percent, text = True, text[:-1].strip()
        if not _NUMBER_TEXT.fullmatch(text):
            return None
        number = float(text)
    elif isinstance(value, (int, float)):
        number = float(value)
    else:
        return None
    if not math.isfinite(number):
        return None
    if percent or 1.0 < number <= 100.0:
        number /= 100.0
    return number if 0.0 <= number <= 1.0 else None


# ---------------------------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------------------------

_FIELD_ALIASES: dict[str, tuple[str, ...]] = {
    "symbol": ("symbol", "pair", "ticker", "coin"),
    "timeframe": ("timeframe", "tf", "interval", "time_frame"),
    "ts": ("ts", "timestamp", "time", "datetime", "date"),
    "label": ("label", "signal", "prediction", "direction"),
    "confidence": ("confidence", "probability", "prob", "score"),
}
_ALIAS = {alias: (name, rank) for name, aliases in _FIELD_ALIASES.items() for rank, alias in enumerate(aliases)}
_KEY_SEPARATORS = re.compile(r"[\s\-]+")
_WRAPPER_KEYS = ("signals", "predictions", "records", "data", "items")
_WRAPPER_KEY_SET = frozenset(_WRAPPER_KEYS)
_SYMBOL_KEYS = frozenset(_FIELD_ALIASES["symbol"])
_KEY_INFO: dict[str, tuple[str, str | None, int]] = {}  # key -> (normalized, field, rank)
_KEY_INFO_LIMIT = 4096


def _key_info(key: Any) -> tuple[str, str | None, int]:
    info = _KEY_INFO.get(key) if isinstance(key, str) else None
    if info is None:
        name = _KEY_SEPARATORS.sub("_", key.strip().lower()) if isinstance(key, str) else str(key)
        field_name, rank = _ALIAS.get(name, (None, 0))
        info = (name, field_name, rank)
        if isinstance(key, str) and len(_KEY_INFO) < _KEY_INFO_LIMIT:
            _KEY_INFO[key] = info
    return info


def _normalize_key(key: str) -> str:
    return _key_info(key)[0]


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _short(value: Any, width: int = 40) -> str:
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__name__}>"
    return text if len(text) <= width else text[: width - 3] + "..."


def sanitize_record(raw: Any) -> tuple[dict[str, Any] | None, str | None, str]:
    """(record, None, "") for a usable prediction, else (None, reason, detail).

    reason is missing_/bad_ symbol, timeframe or ts (checked in that order), or not_an_object;
    detail is a short repr of the offending value.
    """
    if not isinstance(raw, dict):
        return None, "not_an_object", _short(raw)
    chosen: dict[str, tuple[int, str, Any]] = {}
    extra: dict[str, Any] = {}
    key_info_get = _KEY_INFO.get
    for key, value in raw.items():
        info = key_info_get(key) or _key_info(key)
        field_name = info[1]
        if field_name is None:
            extra[info[0]] = value
            continue
        current = chosen.get(field_name)
        if current is None:
            chosen[field_name] = (info[2], info[0], value)
            continue
        # Several aliases of one field: a filled value beats an empty one, then the lower rank.
        new_blank, current_blank = _blank(value), _blank(current[2])
        if new_blank != current_blank:
            better = current_blank
        else:
            better = info[2] < current[0]
        if better:
            extra[current[1]] = current[2]
            chosen[field_name] = (info[2], info[0], value)
        else:
            extra[info[0]] = value

    required = {}
    for field_name, normalize in (("symbol", normalize_symbol), ("timeframe", normalize_timeframe), ("ts", parse_ts)):
        entry = chosen.get(field_name)
        raw = entry[2] if entry else None
        if _blank(raw):
            return None, f"missing_{field_name}", ""
        required[field_name] = normalize(raw)
        if required[field_name] is None:
            return None, f"bad_{field_name}", _short(raw)
    symbol, timeframe, ts = required["symbol"], required["timeframe"], required["ts"]
    entry = chosen.get("label")
    raw_label = entry[2] if entry else None
    entry = chosen.get("confidence")
    return (
        {
            "symbol": symbol,
            "timeframe": timeframe,
            "ts": ts,
            "label": normalize_label(raw_label),
            "raw_label": raw_label,
            "confidence": _confidence(entry[2]) if entry else None,
            "extra": extra,
        },
        None,
        "",
    )


def latest_predictions(records: Iterable[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """The newest record (by ts) per (symbol, timeframe); on equal ts the later one in the list.

    Records without a symbol, timeframe or datetime ts are skipped. Nothing else is checked: a
    record dated in the future wins here. What a signal may use is `select_predictions`.
    """
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for record in records:
        try:
            key = (record["symbol"], record["timeframe"])
            ts = record["ts"]
        except (KeyError, TypeError):
            continue
        if not (isinstance(ts, datetime) and isinstance(key[0], str) and isinstance(key[1], str)):
            continue
        if ts.tzinfo is None:
            ts = ts.replace(tzinfo=UTC)
        current = latest.get(key)
        if current is None or ts >= _aware(current["ts"]):
            latest[key] = record
    return latest


def _aware(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


# A prediction older than this many candles of its timeframe, counted back from the candle the
# signal is computed on, says nothing about that candle any more: it is ignored (5m: 15 minutes,
# 1h: 3 hours, 4h: 12 hours).
MAX_PREDICTION_AGE_BARS = 3
_MAX_SELECTION_EXAMPLES = 10


@dataclass
class PredictionSelection:
    """What `select_predictions` made of the records: the predictions used, and a count per bucket."""

    used: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    rejected_future: int = 0
    rejected_unconfigured: int = 0
    rejected_no_signal: int = 0
    ignored_stale: int = 0
    superseded: int = 0
    examples: list[str] = field(default_factory=list)  # "BTC/USDT 5m 2099-01-01T00:00Z: future ...", capped

    def counts(self) -> dict[str, int]:
        return {
            "used": len(self.used),
            "rejected_future": self.rejected_future,
            "rejected_unconfigured": self.rejected_unconfigured,
            "rejected_no_signal": self.rejected_no_signal,
            "ignored_stale": self.ignored_stale,
            "superseded": self.superseded,
        }

    def _note(self, record: Mapping[str, Any], why: str) -> None:
        if len(self.examples) < _MAX_SELECTION_EXAMPLES:
            self.examples.append(f"{record.get('symbol')} {record.get('timeframe')} {_iso(record.get('ts'))}: {why}")


def _iso(moment: Any) -> str:
    return f"{_aware(moment).astimezone(UTC):%Y-%m-%dT%H:%MZ}" if isinstance(moment, datetime) else repr(moment)


def _series_key(symbol: Any, timeframe: Any) -> tuple[str, str] | None:
    symbol, timeframe = normalize_symbol(symbol), normalize_timeframe(timeframe)
    return None if symbol is None or timeframe is None else (symbol, timeframe)


def _timeframe_length(timeframe: str) -> timedelta:
    """A canonical timeframe's length ("5m" -> 5 minutes); months and years have none."""
    match = re.fullmatch(r"(\d+)([smhdw])", timeframe)
    if match is None:
        raise ValueError(f"{timeframe!r} is not a timeframe of fixed length like 5m, 1h or 4h")
    return timedelta(seconds=int(match.group(1)) * _UNIT_SECONDS[match.group(2)])


def select_predictions(
    records: Iterable[Mapping[str, Any]],
    newest: Mapping[tuple[str, str], datetime],
    configured: Iterable[tuple[str, str]] | None = None,
    *,
    max_age_bars: int = MAX_PREDICTION_AGE_BARS,
) -> PredictionSelection:
    """The prediction each series may use, and every other record counted once (module doc).

    `newest`: (symbol, timeframe) -> open time of the newest closed candle that series' signal
    is computed on, for every series published. `configured`: every configured series; the ones
    not in `newest` then count as rejected_no_signal instead of rejected_unconfigured. A record
    exactly `max_age_bars` candles old is still used; older ones are stale. Records that are not
    sanitized records (no datetime ts) are skipped, as `latest_predictions` skips them.
    """
    if max_age_bars < 0:
        raise ValueError(f"max_age_bars must be >= 0, got {max_age_bars}")
    published: dict[tuple[str, str], tuple[tuple[str, str], datetime, datetime]] = {}
    for caller_key, moment in newest.items():
        key = _series_key(*caller_key)
        if key is None:
            raise ValueError(f"newest has {caller_key!r}, which is no (symbol, timeframe)")
        if not isinstance(moment, datetime):
            raise ValueError(f"newest[{caller_key!r}] is {moment!r}, not a datetime")
        moment = _aware(moment)
        published[key] = (caller_key, moment, moment - max_age_bars * _timeframe_length(key[1]))
    known = {key for key in (_series_key(*pair) for pair in (configured or ())) if key is not None}
    known.update(published)

    selection = PredictionSelection()
    chosen: dict[tuple[str, str], tuple[datetime, Mapping[str, Any]]] = {}
    for record in records:
        try:
            key = _series_key(record["symbol"], record["timeframe"])
            ts = record["ts"]
        except (KeyError, TypeError):
            continue
        if not isinstance(ts, datetime):
            continue
        ts = _aware(ts)
        if key is None or key not in known:
            selection.rejected_unconfigured += 1
            selection._note(record, "symbol or timeframe not configured")
            continue
        series = published.get(key)
        if series is None:
            selection.rejected_no_signal += 1
            selection._note(record, "no signal published for this series")
            continue
        _, candle, oldest = series
        if ts > candle:
            selection.rejected_future += 1
            selection._note(record, f"after the newest closed candle {_iso(candle)}")
            continue
        if ts < oldest:
            selection.ignored_stale += 1
            selection._note(record, f"older than {max_age_bars} candles before {_iso(candle)}")
            continue
        current = chosen.get(key)
        if current is not None:
            selection.superseded += 1
            if ts < current[0]:
                continue
        chosen[key] = (ts, record)
    selection.used = {published[key][0]: dict(record) for key, (_, record) in chosen.items()}
    return selection


# ---------------------------------------------------------------------------------------------
# The tolerant reader
# ---------------------------------------------------------------------------------------------

DEFAULT_MAX_BYTES = 64 * 1024 * 1024  # the newest 64 MiB: a few seconds of parsing
DEFAULT_MAX_RECORDS = 500_000  # the newest usable records kept (a few hundred MB at most)
MAX_EXAMPLES = 20
_NESTED_TRY_DEPTH = 6  # try the C decoder on nested objects down to this bracket depth
_DECODER = json.JSONDecoder()
_LOADS = json.loads
_RAW_DECODE = _DECODER.raw_decode
# Inside a broken object: a whole string, a string running into a line end, or a bracket,
# a colon or a comma. Everything else (numbers, literals, garbage) is skipped by the search.
_TOKEN = re.compile(r'(?P<str>"[^"\\\n]*(?:\\.[^"\\\n]*)*")|(?P<open_str>"[^\n]*)|(?P<punct>[{}\[\]:,])')
_ONLY_BLANKS_TO_END = re.compile(r"\s*\Z")
# Where an object can start: a brace, then a key's quote or the closing brace. A brace before
# anything else ("{{", "{1", binary) starts nothing: it is junk, not a broken object.
_OBJECT_START = re.compile(r'\{\s*(?:["}]|\Z)')  # or a brace the file ends after
_SCALAR_START = frozenset('-0123456789"tfnNI')
_JSON_SPACE = " \t\r\n"
_NOT_JUNK = " \t\r\n[],:"
_NOT_PARSED = object()


@dataclass
class SignalLogRead:
    """What `read_signal_log` made of a file."""

    path: str
    records: list[dict[str, Any]] = field(default_factory=list)
    rejected: int = 0
    reasons: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)  # "line 7: bad_timeframe '7x'", capped
    bytes_read: int = 0
    exists: bool = False
    truncated_tail: bool = False  # the last object was incomplete (the writer was mid-write)
    invalid_utf8_lines: int = 0  # lines decoded with U+FFFD replacements
    skipped_head_bytes: int = 0  # bytes before the window read when the file exceeds max_bytes
    records_dropped: int = 0  # usable records let go by max_records (the oldest in file order)
    error: str | None = None  # why the file was not (fully) read: not a regular file, an OS error

    @property
    def accepted(self) -> int:
        return len(self.records)


class _Collector:
    def __init__(self, result: SignalLogRead, max_records: int | None) -> None:
        self.result = result
        self.records: list | deque = deque(maxlen=max_records) if max_records else []
        self.reasons = result.reasons
        self.seen = 0  # usable records, kept or not

    def reject(self, reason: str, line: int | None, detail: str = "") -> None:
        self.result.rejected += 1
        self.reasons[reason] += 1
        if len(self.result.examples) < MAX_EXAMPLES:
            where = f"line {line}: " if line is not None else ""
            self.result.examples.append(f"{where}{reason} {detail}".rstrip())

    def value(self, value: Any, line: int | None, salvaged: bool = False) -> None:
        """A parsed JSON value: a record, a list of them, or a {"signals": [...]} wrapper."""
        if isinstance(value, dict):
            items = _wrapped(value)
            if items is None:
                if salvaged and not _looks_like_record(value):
                    return  # a nested part of a broken object, not a prediction
                self.record(value, line)
                return
            value = items
        elif not isinstance(value, list):
            if not salvaged:
                self.reject("not_an_object", line, _short(value))
            return
        for item in value:
            if isinstance(item, dict) and _wrapped(item) is None:
                if not salvaged or _looks_like_record(item):
                    self.record(item, line)
            elif not salvaged:
                self.reject("not_an_object", line, _short(item))

    def record(self, raw: dict, line: int | None) -> None:
        try:
            record, reason, detail = sanitize_record(raw)
        except Exception as error:  # defensive: sanitizing is meant to be total
            record, reason, detail = None, "unreadable_record", type(error).__name__
        if record is None:
            self.reject(reason or "unreadable_record", line, detail)
        else:
            self.seen += 1
            self.records.append(record)


def _wrapped(value: dict) -> list | None:
    """The list inside {"signals": [...]} (or predictions/records/data/items), else None."""
    if _WRAPPER_KEY_SET.isdisjoint(value):
        return None
    for key in _WRAPPER_KEYS:
        items = value.get(key)
        if isinstance(items, list) and not any(isinstance(k, str) and _normalize_key(k) in _SYMBOL_KEYS for k in value):
            return items
    return None


def _looks_like_record(value: dict) -> bool:
    return any(isinstance(k, str) and _normalize_key(k) in _SYMBOL_KEYS for k in value)


_FIRST_WINDOW = 4096


def _decode_at(text: str, start: int) -> tuple[Any, int] | None:
    """(value, end) of the JSON object at `start`, or None if it does not parse.

    The decoder sees a growing window, not the whole text: its errors count the lines before
    the error position, so decoding from every `{` of a big region would be quadratic. The
    window grows (x4) only while the error looks like the window's end cutting the object.
    """
    size, total = _FIRST_WINDOW, len(text)
    while True:
        window = text[start : start + size]
        try:
            value, end = _RAW_DECODE(window)
        except json.JSONDecodeError as error:
            cut = error.pos >= len(window) - 16 or error.msg.startswith("Unterminated string")
            if cut and start + size < total:
                size *= 4
                continue
            return None
        except (ValueError, RecursionError):
            return None
        return value, start + end


def _scan_broken(text: str, start: int) -> tuple[str, int, int, list]:
    """Follow a `{` at `start` that does not parse, to where it ends.

    Returns (how, stop, resume, salvaged): how is "closed" (its braces balanced: malformed),
    "restart" (a `{` where no value may start: a new object begins at `resume`), "broken" (a
    string runs into a line end, or brackets mismatch) or "eof"; `salvaged` holds the complete
    objects nested inside, parsed.
    """
    stack = ["{"]
    prev = "{"
    salvaged: list = []
    pos = start + 1
    search = _TOKEN.search
    while True:
        match = search(text, pos)
        if match is None:
            return "eof", len(text), len(text), salvaged
        kind = match.lastgroup
        pos = match.end()
        if kind == "str":
            prev = '"'
            continue
        if kind == "open_str":
            return "broken", pos, pos, salvaged
        char = text[match.start()]
        if char == "{" or char == "[":
            top = stack[-1]
            if (top == "{" and prev == ":") or (top == "[" and prev in "[,"):
                shallow = len(stack) < _NESTED_TRY_DEPTH
                if char == "{" and shallow and _OBJECT_START.match(text, match.start()):
                    decoded = _decode_at(text, match.start())
                    if decoded is not None:
                        salvaged.append(decoded[0])
                        pos, prev = decoded[1], "}"
                        continue
                stack.append(char)
                prev = char
            elif char == "{":
                return "restart", match.start(), match.start(), salvaged
            else:
                return "broken", pos, pos, salvaged
        elif char == "}" or char == "]":
            if stack[-1] != ("{" if char == "}" else "["):
                return "broken", pos, pos, salvaged
            stack.pop()
            prev = char
            if not stack:
                return "closed", pos, pos, salvaged
        else:
            prev = char


def _maybe_scalar(piece: str) -> bool:
    """Worth a json.loads: short, and starts (and ends) like a number, string or literal."""
    if not piece or len(piece) > 256 or piece[0] not in _SCALAR_START:
        return False
    return piece[0] != '"' or (len(piece) > 1 and piece[-1] == '"')


def _skeleton(text: str) -> bool:
    """Blank, or what is left of a document between its objects: "[", "],", ":" ..."""
    if text.strip(_NOT_JUNK):
        return False
    return all(len(line.strip(_JSON_SPACE)) <= 4 for line in text.split("\n"))


class _Reader:
    def __init__(self, collector: _Collector) -> None:
        self.out = collector

    def region(self, lines: list[str], first_line: int, at_eof: bool) -> None:
        """Lines that did not parse one by one: a multi-line document, objects, junk."""
        text = "\n".join(lines)
        stripped = text.strip(_JSON_SPACE)
        if not stripped:
            return
        if stripped[0] in "[{":
            try:
                value = _LOADS(stripped)
            except (ValueError, RecursionError):
                pass
            else:
                self.out.value(value, first_line)
                return
        covered: list[tuple[int, int]] = []
        rejected_lines: set[int] = set()  # lines already counted once, for a broken object
        pos = 0
        search = _OBJECT_START.search

        counted = [0, first_line]  # index counted to, line number there

        def line_of(index: int) -> int:  # indexes only grow: linear in the region overall
            counted[1] += text.count("\n", counted[0], index)
            counted[0] = index
            return counted[1]

        while True:
            found = search(text, pos)
            if found is None:
                break
            start = found.start()
            decoded = _decode_at(text, start)
            if decoded is not None:
                self.out.value(decoded[0], line_of(start))
                covered.append((start, decoded[1]))
                pos = decoded[1]
                continue
            how, stop, resume, salvaged = _scan_broken(text, start)
            covered.append((start, stop))
            line = line_of(start)
            rejected_lines.add(line)
            if how == "closed":
                reason = "malformed_object"
            elif at_eof and _ONLY_BLANKS_TO_END.match(text, stop):
                reason = "truncated_tail"
                self.out.result.truncated_tail = True
            else:
                reason = "unterminated_object"
            self.out.reject(reason, line, _short(text[start : min(stop, start + 60)], 50))
            for value in salvaged:
                self.out.value(value, line, salvaged=True)
            pos = resume
        self._junk(text, covered, first_line, rejected_lines)

    def _junk(self, text: str, covered: list[tuple[int, int]], first_line: int, rejected_lines: set[int]) -> None:
        """One rejection per line holding text outside every object (brackets and commas aside)."""
        junk_lines: dict[int, str] = {}
        gap_start, newlines, counted_to = 0, 0, 0
        for start, end in [*covered, (len(text), len(text))]:
            if start > gap_start:
                gap = text[gap_start:start]
                if not _skeleton(gap):
                    newlines += text.count("\n", counted_to, gap_start)
                    counted_to = gap_start
                    for offset, piece in enumerate(gap.split("\n")):
                        if not _skeleton(piece):
                            junk_lines.setdefault(first_line + newlines + offset, piece)
            gap_start = max(gap_start, end)
        for line, piece in junk_lines.items():
            if line in rejected_lines:
                continue
            piece = piece.strip(_JSON_SPACE)
            try:  # a bare JSON scalar (42, null, "x") is JSON, just not an object
                value = _LOADS(piece) if _maybe_scalar(piece) else _NOT_PARSED
            except (ValueError, RecursionError):
                value = _NOT_PARSED
            if value is _NOT_PARSED:
                self.out.reject("junk", line, _short(piece, 40))
            else:
                self.out.reject("not_an_object", line, _short(value, 40))


_CHUNK_BYTES = 4 * 1024 * 1024


def _raw_lines(handle, remaining: int, result: SignalLogRead):
    """The file's lines (bytes, without the newline) in chunks, up to `remaining` bytes."""
    carry: list[bytes] = []  # the start of a line longer than a chunk
    first = True
    while remaining > 0:
        chunk = handle.read(min(_CHUNK_BYTES, remaining))
        if not chunk:
            break
        remaining -= len(chunk)
        result.bytes_read += len(chunk)
        if first:
            first = False
            if chunk.startswith(b"\xef\xbb\xbf") and not result.skipped_head_bytes:
                chunk = chunk[3:]  # a UTF-8 byte order mark
        cut = chunk.rfind(b"\n")
        if cut < 0:
            carry.append(chunk)
            continue
        lines = chunk[:cut].split(b"\n")
        if carry:
            carry.append(lines[0])
            lines[0] = b"".join(carry)
            carry = []
        yield from lines
        if cut + 1 < len(chunk):
            carry.append(chunk[cut + 1 :])
    if carry:
        yield b"".join(carry)


_FILE_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)


def _not_regular(mode: int) -> str | None:
    """Why a file of this mode is not read ("not a regular file: a FIFO ..."), None if it is."""
    if stat.S_ISREG(mode):
        return None
    kind = next((name for test, name in _FILE_KINDS if test(mode)), f"mode {stat.filemode(mode)}")
    return f"not a regular file: {kind}; not opened"


def _open_regular(path, result: SignalLogRead):
    """A binary handle on the regular file at `path`, or None with `result` saying why not.

    Never opens anything but a regular file, and never blocks: stat first, open with
    O_NONBLOCK, and check the opened file again (it may have been replaced in between).
    """
    try:
        status = os.stat(path)
    except FileNotFoundError:
        return None
    except (OSError, TypeError, ValueError) as error:
        result.error = f"{type(error).__name__}: {error}"
        return None
    result.exists = True
    why = _not_regular(status.st_mode)
    if why is not None:
        result.error = why
        return None
    try:
        descriptor = os.open(path, _OPEN_FLAGS)
    except FileNotFoundError:  # removed since the stat
        result.exists = False
        return None
    except (OSError, TypeError, ValueError) as error:
        result.error = f"{type(error).__name__}: {error}"
        return None
    try:
        why = _not_regular(os.fstat(descriptor).st_mode)
        if why is None:
            return os.fdopen(descriptor, "rb")
        result.error = why.replace("not opened", "closed unread")
    except OSError as error:
        result.error = f"{type(error).__name__}: {error}"
    os.close(descriptor)
    return None


def read_signal_log(
    path: str | os.PathLike[str],
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_records: int | None = DEFAULT_MAX_RECORDS,
) -> SignalLogRead:
    """Every usable prediction in the log at `path`, read tolerantly; never raises, never blocks.

    A missing file reads as empty (`exists` False). Anything but a regular file (a directory, a
    FIFO, a device) is never opened: it reads as empty, with `error` saying what it is; so does
    a file that cannot be opened. At most the last `max_bytes` of the file are read (from the
    first line start in that window; line numbers in `examples` then count from there), and
    only as much as the file held when it was opened, so a writer appending meanwhile cannot
    keep the read going; `max_records` keeps only the last records in file order (None or 0:
    all; `records_dropped` counts the others). Python's cyclic garbage collector is paused
    during the read (and restored).
    """
    try:
        shown = os.fsdecode(path)
    except TypeError:
        shown = repr(path)
    result = SignalLogRead(path=shown)
    if not isinstance(path, (str, bytes, os.PathLike)):  # open(3) would adopt a descriptor
        result.error = f"TypeError: not a path: {type(path).__name__}"
        return result
    handle = _open_regular(path, result)
    if handle is None:
        return result
    collector = _Collector(result, max_records)
    # The records are acyclic: pausing the cycle collector while thousands of them are built
    # saves about a quarter of the time on a big file.
    collector_was_on = gc.isenabled()
    gc.disable()
    try:
        with handle:
            _read(handle, result, collector, max_bytes)
    except Exception as error:  # defensive: reading is meant to be total
        result.error = result.error or f"{type(error).__name__}: {error}"
    finally:
        if collector_was_on:
            gc.enable()
    result.records = list(collector.records)
    result.records_dropped = collector.seen - len(result.records)
    return result


def _read(handle, result: SignalLogRead, collector: _Collector, max_bytes: int) -> None:
    reader = _Reader(collector)
    pending: list[str] = []  # consecutive lines that did not parse alone
    pending_first = 0
    try:
        size = os.fstat(handle.fileno()).st_size
        remaining = size
        if max_bytes and size > max_bytes:
            handle.seek(size - max_bytes - 1)
            at_line_start = handle.read(1) == b"\n"
            head = b"" if at_line_start else handle.readline(max_bytes)  # a cut line
            result.skipped_head_bytes = size - max_bytes + len(head)
            result.bytes_read += len(head)
            remaining = max_bytes - len(head)
        scan_once = _DECODER.scan_once
        number = 0
        for raw in _raw_lines(handle, remaining, result):
            number += 1
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                line = raw.decode("utf-8", "replace")
                result.invalid_utf8_lines += 1
            stripped = line.strip(_JSON_SPACE)  # not str.strip(): \x1c-\x1f, \v are junk
            if not stripped:
                if pending:
                    pending.append("")
                continue
            first, last = stripped[0], stripped[-1]
            if (first == "{" and last == "}") or (first == "[" and last == "]"):
                try:
                    value, end = scan_once(stripped, 0)
                except (StopIteration, ValueError, RecursionError):
                    end = -1
                if end == len(stripped):  # the fast path: one JSON value on the line
                    if pending:
                        reader.region(pending, pending_first, at_eof=False)
                        pending = []
                    collector.value(value, number)
                    continue
            if not pending:
                pending_first = number
            pending.append(line.rstrip("\r"))
    except OSError as error:  # the file vanished or a disk error mid-read: keep what we have
        result.error = f"{type(error).__name__}: {error}"
    except MemoryError:
        result.error = "MemoryError: the file is too large for max_bytes"
        pending = []
    if pending:
        reader.region(pending, pending_first, at_eof=True)
