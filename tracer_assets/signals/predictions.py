"""External predictions: a tolerant reader for the log another system writes, and the rules
that choose which prediction a signal may use.

Pure Python (no Dagster, no polars): the signals assets call these. The vocabulary (labels,
symbols, timeframes, times) is `tracer_assets.vocabulary`'s.

Reading the log
---------------
`read_signal_log(path)` never raises and never blocks. It reads JSON lines, a whole JSON
document (a list, one object, or {"signals": [...]}, also under "predictions", "records",
"data" or "items"), pretty-printed values spanning lines, and any mix of these. Each line is
parsed alone first (JSON lines never go further); consecutive lines that do not parse alone are
read as a run of JSON values: where no value parses, the line is rejected (once) and reading
resumes at the next line; garbage before a `{` on a line is skipped to it. A value cut at the
end of the file (the writer is mid-write) is one `truncated_tail`; the complete lines before it
are kept. Invalid UTF-8 is replaced (U+FFFD); a leading byte order mark is dropped.

Only a regular file is opened: the path is checked with `os.stat` first, and a directory, a
FIFO, a socket or a device is not opened at all (opening a FIFO with no writer blocks forever,
a device can be endless); it reads as empty with `error` saying what it is, and so does a path
that cannot be opened. The open uses O_NONBLOCK and the opened file is checked again (`fstat`),
so a FIFO swapped in between cannot block either. The caller reports `error` as a warning.

Two caps bound the work: at most the last `max_bytes` of the file (default 64 MiB, from the
first line start in that window), and at most the last `max_records` usable records (default
500,000, in file order: the newest); `records_dropped` counts the ones the cap let go.

What is rejected (`SignalLogRead.reasons`, one count each; `examples` keeps the first 20 as
"line N: reason detail"):

======================  ================================================================
reason                  what
======================  ================================================================
junk                    (part of) a line that is not JSON: binary bytes, NULs, text
not_an_object           a JSON value that is not an object (42, "x", a number in a list)
malformed_object        a value starting with { or [ that is not valid JSON
unterminated_object     a value cut off in the middle of the file
truncated_tail          a value cut off at the end of the file (mid-write)
missing_/bad_symbol     no symbol, or not BASE/QUOTE
missing_/bad_timeframe  no timeframe, or not like 5m, 1h, 4h
missing_/bad_ts         no time, or not a time between 2000 and 2100
======================  ================================================================

Sanitized record
----------------
Keys are trimmed, lowercased, runs of spaces and dashes become "_", then aliases apply (the
first name of each row wins when several are filled; the others go to `extra`):

==========  ===============================================
field       accepted keys
==========  ===============================================
symbol      symbol, pair, ticker, coin
timeframe   timeframe, tf, interval, time_frame
ts          ts, timestamp, time, datetime, date
label       label, signal, prediction, direction
confidence  confidence, probability, prob, score
==========  ===============================================

symbol, timeframe and ts are normalized by `tracer_assets.vocabulary`; label is
`normalize_label` of the raw value, kept as `raw_label` (None when missing: the record is kept,
labelled `other`); confidence is a float in [0, 1] or None: a value in [0, 1] as is, above 1 up
to 100 (or "85%") a percentage, anything else None (the record is kept). Every other key is
kept under `extra`. A record is {"symbol", "timeframe", "ts", "label", "raw_label",
"confidence", "extra"}.

Choosing the predictions a signal may use
-----------------------------------------
`select_predictions(records, newest, configured)`: `newest` maps each series about to be
published, (symbol, timeframe), to the open time of the newest closed candle its signal is
computed on (Tracer's `ts`). Each record is put in exactly one bucket:

=====================  ======================================================================
bucket                 what
=====================  ======================================================================
rejected_unconfigured  its symbol or timeframe is not configured (not in `configured`, or not
                       in `newest` when `configured` is not given)
rejected_no_signal     configured, but no signal is published for that series in this run
rejected_future        dated after that series' newest closed candle (no lookahead; a line
                       dated 2099 must never win)
ignored_stale          dated more than `max_age_bars` candles of its timeframe before that
                       candle (default `MAX_PREDICTION_AGE_BARS` = 3: for 5m, 15 minutes)
used                   the newest remaining one of its series (on equal times the later line)
superseded             another remaining one of its series, older than the one used
=====================  ======================================================================

Symbols and timeframes of `newest` and `configured` are compared in their normalized form
("60m" is "1h"); the keys of `used` are the caller's own.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
from bisect import bisect_right
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from itertools import accumulate
from typing import Any

from tracer_assets.market.timeframes import timeframe_seconds
from tracer_assets.vocabulary import normalize_label, normalize_symbol, normalize_timeframe, normalize_ts

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_RECORDS",
    "MAX_EXAMPLES",
    "MAX_PREDICTION_AGE_BARS",
    "PredictionSelection",
    "SignalLogRead",
    "read_signal_log",
    "sanitize_record",
    "select_predictions",
]

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
_REQUIRED = (("symbol", normalize_symbol), ("timeframe", normalize_timeframe), ("ts", normalize_ts))
_KEY_SEPARATORS = re.compile(r"[\s\-]+")
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


@lru_cache(maxsize=4096)
def _key_info(key: str) -> tuple[str, str | None, int]:
    """(normalized key, the field it is an alias of or None, the alias' rank)."""
    name = _KEY_SEPARATORS.sub("_", key.strip().lower())
    return (name, *_ALIAS.get(name, (None, 0)))


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _short(value: Any, width: int = 40) -> str:
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__name__}>"
    return text if len(text) <= width else text[: width - 3] + "..."


def _confidence(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    percent = False
    if isinstance(value, str):
        text = value.strip()
        if text.endswith("%"):
            percent, text = True, text[:-1].strip()
        if not _NUMBER.fullmatch(text):
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


def sanitize_record(raw: Any) -> tuple[dict[str, Any] | None, str | None, str]:
    """(record, None, "") for a usable prediction, else (None, reason, detail).

    reason is missing_/bad_ symbol, timeframe or ts (checked in that order), or not_an_object;
    detail is a short repr of the offending value.
    """
    if not isinstance(raw, dict):
        return None, "not_an_object", _short(raw)
    chosen: dict[str, tuple[int, str, Any]] = {}  # field -> (rank, key, value)
    extra: dict[str, Any] = {}
    for key, value in raw.items():
        name, field_name, rank = _key_info(key if isinstance(key, str) else str(key))
        if field_name is None:
            extra[name] = value
            continue
        current = chosen.get(field_name)
        # Several aliases of one field: a filled value beats an empty one, then the lower rank.
        if current is not None and (_blank(value), rank) >= (_blank(current[2]), current[0]):
            extra[name] = value
            continue
        if current is not None:
            extra[current[1]] = current[2]
        chosen[field_name] = (rank, name, value)

    required = {}
    for field_name, normalize in _REQUIRED:
        value = chosen[field_name][2] if field_name in chosen else None
        if _blank(value):
            return None, f"missing_{field_name}", ""
        required[field_name] = normalize(value)
        if required[field_name] is None:
            return None, f"bad_{field_name}", _short(value)
    raw_label = chosen["label"][2] if "label" in chosen else None
    return (
        {
            **required,
            "label": normalize_label(raw_label),
            "raw_label": raw_label,
            "confidence": _confidence(chosen["confidence"][2]) if "confidence" in chosen else None,
            "extra": extra,
        },
        None,
        "",
    )


# ---------------------------------------------------------------------------------------------
# Choosing the predictions a signal may use
# ---------------------------------------------------------------------------------------------

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


def _aware(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _iso(moment: Any) -> str:
    return f"{_aware(moment).astimezone(UTC):%Y-%m-%dT%H:%MZ}" if isinstance(moment, datetime) else repr(moment)


def _series_key(symbol: Any, timeframe: Any) -> tuple[str, str] | None:
    symbol, timeframe = normalize_symbol(symbol), normalize_timeframe(timeframe)
    return None if symbol is None or timeframe is None else (symbol, timeframe)


def _candle_length(timeframe: str) -> timedelta:
    """A normalized timeframe's length ("5m" -> 5 minutes); months and years have none."""
    if timeframe.endswith(("M", "y")):
        raise ValueError(f"{timeframe!r} is not a timeframe of fixed length like 5m, 1h or 4h")
    return timedelta(seconds=timeframe_seconds(timeframe))


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
    sanitized records (no datetime ts) are skipped.
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
        published[key] = (caller_key, moment, moment - max_age_bars * _candle_length(key[1]))
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
WRAPPER_KEYS = ("signals", "predictions", "records", "data", "items")
_WRAPPER_KEY_SET = frozenset(WRAPPER_KEYS)
_SYMBOL_KEYS = frozenset(_FIELD_ALIASES["symbol"])
_DECODER = json.JSONDecoder()
_JSON_SPACE = " \t\r\n"  # not str.strip()'s: \x1c-\x1f and \v are junk to JSON
_BETWEEN_VALUES = re.compile(r"[ \t\r\n,\]]*")  # what a document leaves between its values: not junk
_CUT_TOKEN = re.compile(r"[-+.\w]{0,10}")  # what a cut number or literal (tr, -Inf, 0.) leaves
_FIRST_WINDOW = 1024
_SCAN = _DECODER.scan_once


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
    truncated_tail: bool = False  # the last value was incomplete (the writer was mid-write)
    invalid_utf8_lines: int = 0  # lines decoded with U+FFFD replacements
    skipped_head_bytes: int = 0  # bytes before the window read when the file exceeds max_bytes
    records_dropped: int = 0  # usable records let go by max_records (the oldest in file order)
    error: str | None = None  # why the file was not (fully) read: not a regular file, an OS error


class _Collector:
    def __init__(self, result: SignalLogRead, max_records: int | None) -> None:
        self.result = result
        self.records: list | deque = deque(maxlen=max_records) if max_records else []
        self.seen = 0  # usable records, kept or not

    def reject(self, reason: str, line: int, detail: str = "") -> None:
        self.result.rejected += 1
        self.result.reasons[reason] += 1
        if len(self.result.examples) < MAX_EXAMPLES:
            self.result.examples.append(f"line {line}: {reason} {detail}".rstrip())

    def value(self, value: Any, line: int) -> None:
        """A parsed JSON value: a record, a list of them, or a {"signals": [...]} wrapper."""
        if isinstance(value, dict):
            items = _wrapped(value)
            if items is None:
                self.record(value, line)
                return
            value = items
        if not isinstance(value, list):
            self.reject("not_an_object", line, _short(value))
            return
        for item in value:
            if isinstance(item, dict):
                self.record(item, line)
            else:
                self.reject("not_an_object", line, _short(item))

    def record(self, raw: dict, line: int) -> None:
        record, reason, detail = sanitize_record(raw)
        if record is None:
            self.reject(reason, line, detail)
        else:
            self.seen += 1
            self.records.append(record)


def _wrapped(value: dict) -> list | None:
    """The list inside {"signals": [...]} (or another of WRAPPER_KEYS), unless it is a record."""
    if _WRAPPER_KEY_SET.isdisjoint(value):
        return None
    items = next((value[key] for key in WRAPPER_KEYS if isinstance(value.get(key), list)), None)
    if items is None or any(isinstance(key, str) and _key_info(key)[0] in _SYMBOL_KEYS for key in value):
        return None
    return items


def _decode(text: str, start: int) -> tuple[bool, Any, int]:
    """(True, value, end) for the JSON value at `start`, else (False, cut, where it failed).

    cut: the value runs into the end of `text`. The decoder sees a growing window, not the whole
    text: its errors count the lines before their position, so decoding at every line of a long
    run of garbage would be quadratic. The window grows (x4) only while its end may be the error.
    """
    size = _FIRST_WINDOW
    while True:
        window = text[start : start + size]
        try:
            value, end = _SCAN(window, 0)
        except StopIteration as stop:  # no value where one must start
            pos, unterminated = stop.value, False
        except json.JSONDecodeError as error:
            pos, unterminated = error.pos, error.msg.startswith("Unterminated string")
        except (ValueError, RecursionError):
            return False, False, start
        else:
            return True, value, start + end
        if start + size < len(text) and (unterminated or pos >= len(window) - 16):
            size *= 4
            continue
        rest = window[pos:].strip(_JSON_SPACE)
        return False, unterminated or bool(_CUT_TOKEN.fullmatch(rest)), start + pos


def _read_run(lines: list[str], first_line: int, at_eof: bool, out: _Collector) -> None:
    """Consecutive lines that do not parse alone: values spanning lines, several values on a
    line, garbage, a value cut off. Where no value parses, the rest of its line is rejected
    (garbage before a `{` on a line is skipped to it); a line is counted once."""
    text = "\n".join(lines)
    starts = [0, *accumulate(len(line) + 1 for line in lines)]
    pos, counted = 0, -1  # the last line rejected as junk or a broken value

    def reject(reason: str, line: int, detail: str) -> None:
        nonlocal counted
        if line != counted:
            out.reject(reason, line, detail)
            counted = line

    while True:
        pos = _BETWEEN_VALUES.match(text, pos).end()
        if pos >= len(text):
            return
        index = bisect_right(starts, pos) - 1
        line, line_end = first_line + index, starts[index] + len(lines[index])
        if text[pos] not in "{[":
            brace = text.find("{", pos, line_end)
            stop = line_end if brace < 0 else brace
            piece = text[pos:stop].strip(_JSON_SPACE)
            try:  # a bare JSON scalar (42, null, "x") is JSON, just not an object
                reject("not_an_object", line, _short(json.loads(piece)))
            except (ValueError, RecursionError):
                reject("junk", line, _short(piece))
            pos = stop
            continue
        ok, value, end = _decode(text, pos)
        if ok:
            out.value(value, line)
            pos = end
            continue
        detail = _short(text[pos : pos + 60], 50)
        if value and at_eof:  # cut off at the end of the file: the writer is mid-write
            out.reject("truncated_tail", line, detail)
            out.result.truncated_tail = True
            return
        reject("unterminated_object" if value else "malformed_object", line, detail)
        pos = line_end + 1


# ---------------------------------------------------------------------------------------------
# Opening: a regular file only, never blocking
# ---------------------------------------------------------------------------------------------

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
    all; `records_dropped` counts the others).
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
    try:
        with handle:
            _read(handle, result, collector, max_bytes)
    except Exception as error:  # defensive: reading is meant to be total
        result.error = result.error or f"{type(error).__name__}: {error}"
    result.records = list(collector.records)
    result.records_dropped = collector.seen - len(result.records)
    return result


def _read(handle, result: SignalLogRead, collector: _Collector, max_bytes: int) -> None:
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
        data = handle.read(remaining)
    except OSError as error:  # the file vanished or a disk error: nothing read
        result.error = f"{type(error).__name__}: {error}"
        return
    result.bytes_read += len(data)
    if data.startswith(b"\xef\xbb\xbf") and not result.skipped_head_bytes:
        data = data[3:]  # a UTF-8 byte order mark
    run: list[str] = []  # consecutive lines that do not parse alone
    run_first = 0
    for number, raw in enumerate(data.split(b"\n"), start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            line = raw.decode("utf-8", "replace")
            result.invalid_utf8_lines += 1
        stripped = line.strip(_JSON_SPACE)
        if not stripped:
            if run:
                run.append("")
            continue
        if stripped[0] + stripped[-1] in ("{}", "[]"):
            try:
                value, end = _SCAN(stripped, 0)
            except (StopIteration, ValueError, RecursionError):
                end = -1
            if end == len(stripped):  # the fast path: one JSON value on the line
                if run:
                    _read_run(run, run_first, False, collector)
                    run = []
                collector.value(value, number)
                continue
        if not run:
            run_first = number
        run.append(line.rstrip("\r"))
    if run:
        _read_run(run, run_first, True, collector)
