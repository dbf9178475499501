"""External predictions: sanitizing records, choosing the ones a signal may use, and the tolerant
log reader on the files README's Signals section promises (JSON lines, a whole document, a mix,
a truncated tail, garbage, FIFOs and directories, the caps), plus random mutations of a valid
file that must never raise. The vocabulary itself is tested in test_vocabulary.py."""

from __future__ import annotations

import inspect
import json
import math
import os
import random
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tracer_assets.signals import predictions
from tracer_assets.signals.predictions import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_RECORDS,
    MAX_EXAMPLES,
    MAX_PREDICTION_AGE_BARS,
    SignalLogRead,
    read_signal_log,
    sanitize_record,
    select_predictions,
)
from tracer_assets.vocabulary import (
    LABELS,
    label_score,
    normalize_label,
    normalize_symbol,
    normalize_timeframe,
    normalize_ts,
)

T0 = 1_700_000_000  # 2023-11-14 22:13:20 UTC
RECORD_KEYS = {"symbol", "timeframe", "ts", "label", "raw_label", "confidence", "extra"}
EXPECTED_T0 = datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)


def rec(i: int = 0, **fields) -> dict:
    record = {"symbol": "BTC/USDT", "timeframe": "1h", "ts": T0 + i * 3600, "label": "bull", "confidence": 0.7}
    record.update(fields)
    return record


def jsonl(records: list[dict]) -> str:
    return "".join(json.dumps(record) + "\n" for record in records)


def write(tmp_path: Path, data: str | bytes, name: str = "macro_signal.log") -> Path:
    path = tmp_path / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def assert_sane(result: SignalLogRead) -> None:
    """What holds for any read, whatever the file held."""
    assert isinstance(result, SignalLogRead)
    assert result.rejected == sum(result.reasons.values())
    assert len(result.examples) <= MAX_EXAMPLES
    for record in result.records:
        assert set(record) == RECORD_KEYS
        assert "/" in record["symbol"] and record["symbol"] == record["symbol"].upper()
        assert normalize_timeframe(record["timeframe"]) == record["timeframe"]
        assert isinstance(record["ts"], datetime) and record["ts"].utcoffset() == timedelta(0)
        assert record["label"] in LABELS
        assert record["confidence"] is None or 0.0 <= record["confidence"] <= 1.0
        assert isinstance(record["extra"], dict)


# ---------------------------------------------------------------------------------------------
# Sanitizing
# ---------------------------------------------------------------------------------------------


def test_sanitize_key_aliases_and_forms():
    record, reason, _ = sanitize_record(
        {
            " Pair ": "eth-usdt",
            "TF": "4H",
            "Time-Stamp": "ignored: not an alias",
            "ts": "2023-11-14T22:13:20Z",
            "Signal": "Strong Sell",
            "Probability": "85%",
            "Model Name": "macro-v2",
        }
    )
    assert reason is None
    assert record == {
        "symbol": "ETH/USDT",
        "timeframe": "4h",
        "ts": EXPECTED_T0,
        "label": "strong_bear",
        "raw_label": "Strong Sell",
        "confidence": 0.85,
        "extra": {"time_stamp": "ignored: not an alias", "model_name": "macro-v2"},
    }


@pytest.mark.parametrize(
    ("keys", "field"),
    [
        (("symbol", "pair", "ticker", "coin"), "symbol"),
        (("timeframe", "tf", "interval", "time frame", "Time-Frame"), "timeframe"),
        (("ts", "timestamp", "time", "datetime", "date", "TIMESTAMP"), "ts"),
        (("label", "signal", "prediction", "direction", "Prediction"), "label"),
        (("confidence", "prob", "probability", "score", "Confidence"), "confidence"),
    ],
)
def test_every_alias_is_read(keys, field):
    values = {"symbol": "BTCUSDT", "timeframe": "1h", "ts": T0, "label": "bull", "confidence": 0.5}
    expected = {"symbol": "BTC/USDT", "timeframe": "1h", "ts": EXPECTED_T0, "label": "bull", "confidence": 0.5}
    for key in keys:
        raw = {name: value for name, value in values.items() if name != field}
        raw[key] = values[field]
        record, reason, _ = sanitize_record(raw)
        assert reason is None, key
        assert record[field] == expected[field], key


def test_canonical_name_beats_alias_and_filled_beats_empty():
    record, _, _ = sanitize_record(
        {
            "pair": "ETHUSDT",
            "symbol": "BTCUSDT",
            "timeframe": "",
            "tf": "5m",
            "ts": T0,
            "prediction": 2,
            "label": "bear",
        }
    )
    assert record["symbol"] == "BTC/USDT"
    assert record["timeframe"] == "5m"
    assert record["label"] == "bear" and record["raw_label"] == "bear"
    assert record["extra"] == {"pair": "ETHUSDT", "timeframe": "", "prediction": 2}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (0.0, 0.0),
        (0.42, 0.42),
        (1, 1.0),  # exactly 1 is certainty, not 1 %
        (85, 0.85),  # above 1 up to 100: a percentage
        (100, 1.0),
        ("0.3", 0.3),
        ("85%", 0.85),
        ("0.5 %", 0.005),
        (101, None),
        (-0.1, None),
        (float("nan"), None),
        ("high", None),
        (True, None),
        (None, None),
        ([0.5], None),
    ],
)
def test_confidence_rules(raw, expected):
    record, _, _ = sanitize_record(rec(confidence=raw))
    assert record is not None  # a bad confidence never rejects the record
    if expected is None:
        assert record["confidence"] is None
    else:
        assert record["confidence"] == pytest.approx(expected)


def test_label_kept_raw_and_missing_label_is_other():
    record, _, _ = sanitize_record(rec(label=-1))
    assert (record["label"], record["raw_label"]) == ("bear", -1)
    raw = rec()
    del raw["label"]
    record, _, _ = sanitize_record(raw)
    assert (record["label"], record["raw_label"]) == ("other", None)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"symbol": None}, "missing_symbol"),
        ({"symbol": "  "}, "missing_symbol"),
        ({"symbol": "BTCXYZ"}, "bad_symbol"),
        ({"symbol": 7}, "bad_symbol"),
        ({"timeframe": None}, "missing_timeframe"),
        ({"timeframe": "7x"}, "bad_timeframe"),
        ({"timeframe": "0h"}, "bad_timeframe"),
        ({"ts": None}, "missing_ts"),
        ({"ts": "soon"}, "bad_ts"),
        ({"ts": 0}, "bad_ts"),
    ],
)
def test_sanitize_rejects_with_a_reason(change, reason):
    raw = rec(**change)
    record, got, detail = sanitize_record(raw)
    assert record is None and got == reason
    assert len(detail) <= 40


def test_sanitize_rejects_missing_fields_and_non_objects():
    assert sanitize_record({"timeframe": "1h", "ts": T0})[1] == "missing_symbol"
    assert sanitize_record({"symbol": "BTCUSDT", "ts": T0})[1] == "missing_timeframe"
    assert sanitize_record({"symbol": "BTCUSDT", "tf": "1h"})[1] == "missing_ts"
    assert sanitize_record([1, 2])[1] == "not_an_object"
    assert sanitize_record({})[1] == "missing_symbol"
    assert sanitize_record({1: "x", None: "y"})[1] == "missing_symbol"


# ---------------------------------------------------------------------------------------------
# select_predictions: what a signal may use
# ---------------------------------------------------------------------------------------------

CANDLE = datetime(2024, 9, 6, 4, 40, tzinfo=UTC)  # the newest closed 5m candle (open time)
NEWEST = {
    ("BTC/USDT", "5m"): CANDLE,
    ("ETH/USDT", "5m"): CANDLE,
    ("BTC/USDT", "1h"): datetime(2024, 9, 6, 3, tzinfo=UTC),
}


def records_of(*raw: dict) -> list[dict]:
    return [sanitize_record(r)[0] for r in raw]


def p5(ts, label="bull", symbol="BTC/USDT", timeframe="5m", **fields) -> dict:
    return {
        "symbol": symbol,
        "timeframe": timeframe,
        "ts": ts.isoformat() if isinstance(ts, datetime) else ts,
        "label": label,
        **fields,
    }


def test_a_prediction_dated_after_the_newest_candle_never_wins():
    """The tester's case: a line dated 2099 overrode a newer line and pinned BTC 5m to strong_bull."""
    records = records_of(
        p5(CANDLE - timedelta(minutes=5), "bear"),
        p5("2099-01-01T00:00:00Z", "strong_bull"),
        p5(CANDLE + timedelta(minutes=5), "strong_bull"),  # the candle still open: after the newest closed one
    )
    chosen = select_predictions(records, NEWEST)
    assert chosen.used[("BTC/USDT", "5m")]["label"] == "bear"
    assert chosen.counts() == {
        "used": 1,
        "rejected_future": 2,
        "rejected_unconfigured": 0,
        "rejected_no_signal": 0,
        "ignored_stale": 0,
        "superseded": 0,
    }
    assert any("2099-01-01T00:00Z: after the newest closed candle 2024-09-06T04:40Z" in e for e in chosen.examples)


def test_a_prediction_dated_at_the_candle_is_used_and_only_future_ones_are_rejected():
    chosen = select_predictions(records_of(p5(CANDLE, "bull"), p5(CANDLE + timedelta(seconds=1), "bear")), NEWEST)
    assert chosen.used[("BTC/USDT", "5m")]["label"] == "bull" and chosen.rejected_future == 1


def test_predictions_older_than_the_bounded_age_are_ignored():
    assert MAX_PREDICTION_AGE_BARS == 3
    oldest_used = CANDLE - MAX_PREDICTION_AGE_BARS * timedelta(minutes=5)
    chosen = select_predictions(
        records_of(
            p5(oldest_used, "bear"),  # exactly 3 candles old: still used
            p5(oldest_used - timedelta(seconds=1), "strong_bull", symbol="ETH/USDT"),  # older: stale
            p5(datetime(2024, 9, 5, 23, tzinfo=UTC), "bull", timeframe="1h"),  # 4 hours before 03:00 on 1h
            p5(datetime(2024, 9, 6, 0, tzinfo=UTC), "bear", timeframe="1h"),  # 3 hours: used
        ),
        NEWEST,
    )
    assert {key: r["label"] for key, r in chosen.used.items()} == {
        ("BTC/USDT", "5m"): "bear",
        ("BTC/USDT", "1h"): "bear",
    }
    assert chosen.ignored_stale == 2
    assert select_predictions(records_of(p5(CANDLE - timedelta(minutes=5))), NEWEST, max_age_bars=0).ignored_stale == 1
    with pytest.raises(ValueError, match="max_age_bars"):
        select_predictions([], NEWEST, max_age_bars=-1)


def test_unconfigured_symbols_and_timeframes_are_rejected_not_used():
    records = records_of(
        p5(CANDLE, "strong_bull", symbol="SOL/USDT"),  # symbol not configured
        p5(CANDLE, "strong_bull", timeframe="2h"),  # timeframe not configured
        p5(CANDLE, "strong_bull", symbol="BTC/USDT:USDT"),  # the swap is another market
        p5(CANDLE, "strong_bear", timeframe="15m"),  # configured, but no signal published for it
    )
    configured = [("BTC/USDT", tf) for tf in ("5m", "15m", "1h")] + [("ETH/USDT", "5m")]
    chosen = select_predictions(records, NEWEST, configured)
    assert chosen.used == {}
    assert (chosen.rejected_unconfigured, chosen.rejected_no_signal) == (3, 1)
    # Without the configured list, whatever has no signal is unconfigured.
    assert select_predictions(records, NEWEST).rejected_unconfigured == 4


def test_newest_keys_compare_normalized_and_used_keeps_the_callers_keys():
    newest = {("btc/usdt", "60m"): datetime(2024, 9, 6, 3)}  # naive: UTC
    chosen = select_predictions(records_of(p5(datetime(2024, 9, 6, 3, tzinfo=UTC), "bear", timeframe="1H")), newest)
    assert list(chosen.used) == [("btc/usdt", "60m")]
    with pytest.raises(ValueError, match="no \\(symbol, timeframe\\)"):
        select_predictions([], {("not a symbol", "5m"): CANDLE})
    with pytest.raises(ValueError, match="fixed length"):
        select_predictions([], {("BTC/USDT", "1M"): CANDLE})


def test_every_record_lands_in_exactly_one_bucket(tmp_path):
    rng = random.Random(7)
    raw = []
    for _ in range(500):
        raw.append(
            p5(
                CANDLE + timedelta(minutes=5 * rng.randint(-8, 3)),
                rng.choice(["bull", "bear", "strong_bull"]),
                symbol=rng.choice(["BTC/USDT", "ETH/USDT", "SOL/USDT"]),
                timeframe=rng.choice(["5m", "1h", "4h"]),
            )
        )
    records = read_signal_log(write(tmp_path, jsonl(raw))).records
    chosen = select_predictions(records, NEWEST, [*NEWEST, ("ETH/USDT", "1h")])
    assert sum(chosen.counts().values()) == len(records) == 500
    length = {"5m": timedelta(minutes=5), "1h": timedelta(hours=1)}
    for key, record in chosen.used.items():
        assert NEWEST[key] - MAX_PREDICTION_AGE_BARS * length[key[1]] <= record["ts"] <= NEWEST[key]
    # The one used per series is the newest usable one.
    usable = [
        r
        for r in records
        if (r["symbol"], r["timeframe"]) in NEWEST and r["ts"] <= NEWEST[(r["symbol"], r["timeframe"])]
    ]
    for key in chosen.used:
        assert chosen.used[key]["ts"] == max(r["ts"] for r in usable if (r["symbol"], r["timeframe"]) == key)
    assert len(chosen.examples) <= 10


# ---------------------------------------------------------------------------------------------
# The reader: files that are fine, empty or missing
# ---------------------------------------------------------------------------------------------


def test_missing_file_is_an_empty_result(tmp_path):
    result = read_signal_log(tmp_path / "nope" / "macro_signal.log")
    assert (result.records, result.rejected, result.bytes_read, result.exists) == ([], 0, 0, False)
    assert result.error is None


@pytest.mark.parametrize("content", [b"", b"\n", b"\n\n   \n\t\r\n", b"\xef\xbb\xbf"])
def test_empty_file(tmp_path, content):
    result = read_signal_log(write(tmp_path, content))
    assert result.exists and result.records == [] and result.rejected == 0
    assert result.bytes_read == len(content)


def test_unreadable_paths_do_not_raise(tmp_path):
    assert read_signal_log(tmp_path).error  # a directory
    assert read_signal_log(None).error
    assert read_signal_log(3).error  # not adopted as a file descriptor
    assert read_signal_log(str(tmp_path / "x.log")).exists is False
    assert read_signal_log(bytes(tmp_path / "x.log")).exists is False


def read_or_hang(path, seconds: float = 10.0) -> SignalLogRead:
    """read_signal_log in a thread; fails the test (and unblocks the reader) if it hangs."""
    box: list = []
    reader = threading.Thread(target=lambda: box.append(read_signal_log(path)), daemon=True)
    reader.start()
    reader.join(seconds)
    if reader.is_alive():  # blocked in open(): a writer end lets it go, then the test fails
        descriptor = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        os.close(descriptor)
        reader.join(seconds)
        pytest.fail(f"read_signal_log({path}) blocked for {seconds}s")
    return box[0]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_fifo_is_never_opened_and_never_blocks(tmp_path):
    """A FIFO with no writer blocks open() forever: the step hung while holding the DuckDB pool."""
    fifo = tmp_path / "macro_signal.log"
    os.mkfifo(fifo)
    result = read_or_hang(fifo)
    assert result.records == [] and result.bytes_read == 0 and result.exists
    assert result.error == "not a regular file: a FIFO (named pipe); not opened"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_fifo_swapped_in_after_the_check_is_closed_unread(tmp_path, monkeypatch):
    fifo = tmp_path / "macro_signal.log"
    os.mkfifo(fifo)
    regular = write(tmp_path, jsonl([rec(1)]), name="regular.log")
    real_stat = os.stat
    # The check sees a regular file; by the time it is opened, it is a FIFO.
    monkeypatch.setattr(
        predictions.os,
        "stat",
        lambda path, *a, **k: real_stat(regular) if str(path) == str(fifo) else real_stat(path, *a, **k),
    )
    result = read_or_hang(fifo)
    assert result.records == [] and result.error == "not a regular file: a FIFO (named pipe); closed unread"


def test_a_directory_or_a_device_is_reported_and_not_opened(tmp_path, monkeypatch):
    opened = []
    real_open = os.open
    monkeypatch.setattr(predictions.os, "open", lambda *a, **k: opened.append(a[0]) or real_open(*a, **k))
    result = read_signal_log(tmp_path)
    assert (result.records, result.exists, result.error) == ([], True, "not a regular file: a directory; not opened")
    if os.path.exists("/dev/zero"):  # endless: reading it would never stop
        assert read_signal_log("/dev/zero").error == "not a regular file: a character device; not opened"
    assert opened == []


def test_a_file_that_cannot_be_opened_is_reported(tmp_path, monkeypatch):
    path = write(tmp_path, jsonl([rec(1)]))

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(args[0]))

    monkeypatch.setattr(predictions.os, "open", refuse)  # as root, chmod 000 would not stop a read
    result = read_signal_log(path)
    assert result.records == [] and result.exists
    assert result.error.startswith("PermissionError: [Errno 13] Permission denied")


def test_records_are_capped_by_default_and_the_drop_is_counted(tmp_path):
    defaults = {name: p.default for name, p in inspect.signature(read_signal_log).parameters.items()}
    assert defaults["max_records"] == DEFAULT_MAX_RECORDS == 500_000  # README: the newest 500,000 records
    assert defaults["max_bytes"] == DEFAULT_MAX_BYTES == 64 * 1024 * 1024  # README: the newest 64 MiB
    result = read_signal_log(write(tmp_path, jsonl([rec(i) for i in range(50)])), max_records=10)
    assert (len(result.records), result.records_dropped) == (10, 40)
    assert read_signal_log(write(tmp_path, jsonl([rec(i) for i in range(50)])), max_records=None).records_dropped == 0


def test_jsonl(tmp_path):
    path = write(tmp_path, jsonl([rec(i) for i in range(10)]))
    result = read_signal_log(path)
    assert len(result.records) == 10 and result.rejected == 0
    assert result.bytes_read == path.stat().st_size
    assert [r["ts"] for r in result.records] == [EXPECTED_T0 + timedelta(hours=i) for i in range(10)]
    assert not result.truncated_tail
    assert_sane(result)


def test_crlf_bom_blank_lines_and_two_objects_on_a_line(tmp_path):
    text = "\r\n".join(json.dumps(rec(i)) for i in range(4)) + "\r\n\r\n\r\n"
    text += json.dumps(rec(4)) + json.dumps(rec(5)) + "\n"
    result = read_signal_log(write(tmp_path, b"\xef\xbb\xbf" + text.encode()))
    assert len(result.records) == 6 and result.rejected == 0


# ---------------------------------------------------------------------------------------------
# Whole documents, pretty-printed, mixed
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("indent", [None, 2])
def test_whole_json_list(tmp_path, indent):
    result = read_signal_log(write(tmp_path, json.dumps([rec(i) for i in range(5)], indent=indent)))
    assert len(result.records) == 5 and result.rejected == 0


@pytest.mark.parametrize("indent", [None, 4])
@pytest.mark.parametrize("key", ["signals", "predictions", "records", "data"])
def test_wrapped_document(tmp_path, key, indent):
    document = {"generated_at": "2024-01-01", key: [rec(i) for i in range(3)]}
    result = read_signal_log(write(tmp_path, json.dumps(document, indent=indent)))
    assert len(result.records) == 3 and result.rejected == 0


def test_one_object_document(tmp_path):
    result = read_signal_log(write(tmp_path, json.dumps(rec(), indent=2)))
    assert len(result.records) == 1 and result.rejected == 0


def test_pretty_printed_objects_with_braces_and_escapes_in_strings(tmp_path):
    tricky = rec(note='a } and a { and a \\" quote "} {"', meta={"nested": {"deeper": [1, {"x": "}"}]}})
    objects = [json.dumps(rec(i), indent=2) for i in range(3)] + [json.dumps(tricky, indent=2)]
    result = read_signal_log(write(tmp_path, "\n".join(objects) + "\n"))
    assert len(result.records) == 4 and result.rejected == 0
    assert result.records[3]["extra"]["note"] == tricky["note"]
    assert result.records[3]["extra"]["meta"] == tricky["meta"]


def test_mixed_json_and_jsonl(tmp_path):
    parts = [
        json.dumps(rec(0)),
        json.dumps(rec(1), indent=4),
        json.dumps(rec(2)),
        json.dumps([rec(3), rec(4)]),
        json.dumps([rec(5), rec(6)], indent=1),
        json.dumps({"signals": [rec(7)]}, indent=2),
        json.dumps(rec(8)),
    ]
    result = read_signal_log(write(tmp_path, "\n".join(parts) + "\n"))
    assert [r["ts"] for r in result.records] == [EXPECTED_T0 + timedelta(hours=i) for i in range(9)]
    assert result.rejected == 0


def test_non_objects_are_rejected(tmp_path):
    text = f'42\nnull\n"bull"\n[1, {{"symbol": "BTCUSDT", "tf": "1h", "ts": {T0}}}]\n'
    result = read_signal_log(write(tmp_path, text))
    assert len(result.records) == 1
    assert result.reasons == {"not_an_object": 4}


# ---------------------------------------------------------------------------------------------
# Truncated files: the writer is mid-write
# ---------------------------------------------------------------------------------------------

GOOD = jsonl([rec(i, label="strong bull", note="x") for i in range(5)])
NEXT = json.dumps(rec(5, label="bear", note="the line being written"))


@pytest.mark.parametrize(
    "cut",
    [
        NEXT.index("bear") + 2,  # inside a string value
        NEXT.index("note") + 2,  # inside a key
        NEXT.index('"note"') + len('"note"'),  # after a key, before the colon
        NEXT.index('"note"') + len('"note":'),  # after the colon
        NEXT.index(str(T0 + 5 * 3600)) + 4,  # inside a number
        NEXT.index(', "confidence"') + 1,  # after a comma
        1,  # just the brace
        len(NEXT) - 1,  # all but the closing brace
    ],
)
def test_truncated_last_line_keeps_every_complete_record(tmp_path, cut):
    result = read_signal_log(write(tmp_path, GOOD + NEXT[:cut]))
    assert len(result.records) == 5
    assert all(r["label"] == "strong_bull" for r in result.records)
    assert result.truncated_tail
    assert result.rejected == 1 and result.reasons == {"truncated_tail": 1}
    assert result.examples[0].startswith("line 6: truncated_tail")


def test_complete_last_line_without_newline_is_kept(tmp_path):
    result = read_signal_log(write(tmp_path, GOOD + NEXT))
    assert len(result.records) == 6 and result.rejected == 0 and not result.truncated_tail


def test_line_cut_in_the_middle_of_the_file(tmp_path):
    """A writer that died mid-line and a new one that appended after it."""
    lines = GOOD.splitlines()
    cut_string = NEXT[: NEXT.index("bear") + 2]
    cut_value = NEXT[: NEXT.index('"ts":') + 5]
    text = "\n".join([lines[0], cut_string, lines[1], cut_value, *lines[2:]]) + "\n"
    result = read_signal_log(write(tmp_path, text))
    assert len(result.records) == 5
    assert result.reasons == {"unterminated_object": 2}
    assert not result.truncated_tail
    assert [e.split(":")[0] for e in result.examples] == ["line 2", "line 4"]


@pytest.mark.parametrize("shape", ["list", "wrapper"])
def test_a_whole_document_cut_mid_write_is_one_truncated_tail(tmp_path, shape):
    """Items are not salvaged from a cut document: the complete lines before it are kept."""
    items = [rec(i, meta={"features": [1, 2, {"a": None}]}) for i in range(6)]
    document = items if shape == "list" else {"signals": items}
    text = json.dumps(document, indent=2)
    result = read_signal_log(write(tmp_path, GOOD + text[: text.rindex('"symbol"')]))
    assert len(result.records) == 5
    assert result.truncated_tail and result.reasons == {"truncated_tail": 1}
    assert result.examples[0].startswith(f"line 6: truncated_tail '{text[0]}")


def test_truncation_at_every_position_keeps_every_complete_line(tmp_path):
    lines = [json.dumps(rec(i, label=["bull", -2, True][i % 3])) + "\n" for i in range(6)]
    text = "".join(lines)
    ends = [sum(len(line) for line in lines[: k + 1]) for k in range(len(lines))]
    rng = random.Random(11)
    for cut in sorted(rng.sample(range(len(text) + 1), 120)) + [0, len(text)]:
        result = read_signal_log(write(tmp_path, text[:cut]))
        complete = sum(1 for end in ends if end - 1 <= cut)  # "}" written, newline maybe not
        assert len(result.records) == complete, cut
        assert result.rejected <= 1
        assert_sane(result)


# ---------------------------------------------------------------------------------------------
# Garbage
# ---------------------------------------------------------------------------------------------


def test_binary_garbage_lines_are_skipped_and_counted(tmp_path):
    rng = random.Random(1234)
    garbage = [rng.randbytes(rng.randint(1, 200)).replace(b"\n", b"") or b"\xff" for _ in range(40)]
    garbage += [b"\x00" * 64, b"\x00", b"\x00{\x00}\x00", b'{\x00"symbol": 1}']
    valid = [json.dumps(rec(i)).encode() for i in range(len(garbage))]
    data = b"".join(v + b"\n" + g + b"\n" for v, g in zip(valid, garbage))
    result = read_signal_log(write(tmp_path, data))
    assert len(result.records) == len(valid)
    assert result.rejected >= len(garbage)
    assert set(result.reasons) <= {"junk", "malformed_object", "unterminated_object", "not_an_object", "missing_symbol"}
    assert result.reasons["junk"] > 0
    assert len(result.examples) == MAX_EXAMPLES  # capped
    assert result.bytes_read == len(data)
    assert_sane(result)


def test_nul_bytes(tmp_path):
    text = GOOD.encode() + b"\x00\x00\x00\x00\n" + b"\x00" * 4096 + b"\n" + NEXT.encode() + b"\n"
    result = read_signal_log(write(tmp_path, text))
    assert len(result.records) == 6
    assert result.reasons == {"junk": 2}


def test_control_characters_python_strips_but_json_does_not(tmp_path):
    """str.strip() removes \x1c-\x1f and \v; JSON calls them junk, glued to a record too."""
    text = GOOD.encode() + b"\x1d\n\x1c\x1f \x0b\n" + NEXT.encode() + b"\x1e\n"
    result = read_signal_log(write(tmp_path, text))
    assert len(result.records) == 6
    assert result.reasons == {"junk": 3}


def test_a_file_of_nul_bytes_as_after_a_crash(tmp_path):
    """A crash can leave a run of NULs where the last block was (ext4 delayed allocation)."""
    result = read_signal_log(write(tmp_path, GOOD.encode() + b"\x00" * 10_000))
    assert len(result.records) == 5 and result.reasons == {"junk": 1}


def test_garbage_glued_to_a_record(tmp_path):
    text = b"\xff\xfe\x00garbage" + json.dumps(rec(0)).encode() + b"\n" + json.dumps(rec(1)).encode() + b"trailing\n"
    result = read_signal_log(write(tmp_path, text))
    assert len(result.records) == 2
    assert result.reasons == {"junk": 2}


def test_invalid_utf8_is_replaced(tmp_path):
    broken = json.dumps(rec(0, note="caf\u00e9")).encode().replace(b"\\u00e9", b"\xe9\xff")
    result = read_signal_log(write(tmp_path, broken + b"\n" + json.dumps(rec(1)).encode() + b"\n"))
    assert len(result.records) == 2
    assert result.records[0]["extra"]["note"] == "caf\ufffd\ufffd"
    assert result.invalid_utf8_lines == 1
    bad_symbol = b'{"symbol": "BTC\xffUSDT", "tf": "1h", "ts": 1700000000}\n'
    result = read_signal_log(write(tmp_path, bad_symbol))
    assert result.reasons == {"bad_symbol": 1}


def test_rejected_records_are_counted_with_reasons(tmp_path):
    lines = [
        rec(0),
        rec(1, symbol="???"),
        rec(2, timeframe="7 fortnights"),
        rec(3, ts="not a time"),
        {"timeframe": "1h", "ts": T0},
        rec(4, tf="ignored alias: timeframe wins"),
        "this is not json",
        "{broken json}",
        '{"unclosed": "string',
        rec(5),
    ]
    text = "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
    result = read_signal_log(write(tmp_path, text))
    assert len(result.records) == 3
    assert result.reasons == {
        "bad_symbol": 1,
        "bad_timeframe": 1,
        "bad_ts": 1,
        "missing_symbol": 1,
        "junk": 1,
        "malformed_object": 1,
        "unterminated_object": 1,
    }
    assert result.rejected == 7
    assert result.examples[0] == "line 2: bad_symbol '???'"
    assert "line 3: bad_timeframe '7 fortnights'" in result.examples
    assert all(len(example) < 120 for example in result.examples)


def test_broken_object_with_balanced_braces_is_malformed(tmp_path):
    text = json.dumps(rec(0)) + "\n" + '{"symbol": "BTCUSDT", "tf": "1h", oops: 1}\n' + json.dumps(rec(1)) + "\n"
    result = read_signal_log(write(tmp_path, text))
    assert len(result.records) == 2 and result.reasons == {"malformed_object": 1}


# ---------------------------------------------------------------------------------------------
# Limits
# ---------------------------------------------------------------------------------------------


def test_max_bytes_reads_the_tail_from_a_line_start(tmp_path):
    path = write(tmp_path, jsonl([rec(i) for i in range(100)]))
    size = path.stat().st_size
    result = read_signal_log(path, max_bytes=size // 4)
    assert 0 < len(result.records) < 100 and result.rejected == 0
    assert result.records[-1]["ts"] == EXPECTED_T0 + timedelta(hours=99)
    assert result.skipped_head_bytes >= size - size // 4
    assert result.bytes_read == size // 4


def test_max_records_keeps_the_last(tmp_path):
    result = read_signal_log(write(tmp_path, jsonl([rec(i) for i in range(50)])), max_records=10)
    assert [r["ts"] for r in result.records] == [EXPECTED_T0 + timedelta(hours=i) for i in range(40, 50)]


@pytest.mark.parametrize(
    "content",
    [
        b"{" * 200_000,
        b"{\n" * 100_000,
        b'{"' * 30_000,
        b'{"a":[' * 20_000,
        b"[" * 200_000,
        b'"' * 200_000,
        b'{"a": "\\' * 20_000,
        b"}" * 200_000,
    ],
    ids=["braces", "brace-lines", "brace-quote", "open-lists", "brackets", "quotes", "escapes", "closes"],
)
def test_pathological_content_stays_linear(tmp_path, content):
    result = read_signal_log(write(tmp_path, content))
    assert result.records == [] and result.rejected >= 1
    assert_sane(result)


def test_50_mb_file(tmp_path):
    """Many valid lines in the shapes producers write, a garbage line every 997."""
    symbols = ["BTCUSDT", "ETH/USDT", "sol-usdt", "XRP_USDT", "binance:DOGEUSDT"]
    timeframes = ["1H", "15m", "240m", "5m"]
    labels = ['"Strong Bull"', '"bear"', "-1", "2", "true", '"neutral"', '"+1"']
    rng = random.Random(50)
    garbage = [rng.randbytes(120).replace(b"\n", b"") for _ in range(16)] + [b"\x00" * 100]
    template = (
        '{"pair": "%s", "tf": "%s", "timestamp": %d, "signal": %s, "confidence": %d, '
        '"model": "macro-orchestrator-v2", "features": {"rsi": 41.5, "trend": "up"}}\n'
    )
    chunks: list[bytes] = []
    size = valid = bad = 0
    i = 0
    target = 50 * 1024 * 1024
    while size < target:
        if i % 997 == 996:
            line = garbage[bad % len(garbage)] + b"\n"
            bad += 1
        else:
            line = (
                template
                % (
                    symbols[i % 5],
                    timeframes[i % 4],
                    (T0 + i) * 1000,
                    labels[i % 7],
                    i % 101,
                )
            ).encode()
            valid += 1
            newest = T0 + i
        chunks.append(line)
        size += len(line)
        i += 1
    path = tmp_path / "big.log"
    path.write_bytes(b"".join(chunks))
    del chunks

    result = read_signal_log(path)

    assert result.bytes_read == path.stat().st_size >= target
    assert len(result.records) == valid > 250_000
    assert result.rejected >= bad
    assert set(result.reasons) <= {"junk", "malformed_object", "unterminated_object", "not_an_object"}
    assert len({(r["symbol"], r["timeframe"]) for r in result.records}) == 20  # 5 symbols x 4 timeframes
    assert result.records[-1]["ts"] == datetime.fromtimestamp(newest, UTC)
    sample = result.records[:200] + result.records[-200:]
    assert {r["label"] for r in sample} == {"strong_bull", "bear", "bull", "other"}
    assert_sane(SignalLogRead(path="", records=sample))


# ---------------------------------------------------------------------------------------------
# Never an exception: random mutations of a valid file
# ---------------------------------------------------------------------------------------------


def _valid_file() -> bytes:
    parts = [
        jsonl([rec(i, label=["bull", -2, True, "Strong Sell"][i % 4]) for i in range(8)]),
        json.dumps([rec(10), rec(11, symbol="ETH-USDT")], indent=2) + "\n",
        json.dumps({"signals": [rec(12, tf="4H", timeframe=None)]}, indent=1) + "\n",
        json.dumps(rec(13, note='braces } { and "quotes" \\ and \u00e9')) + "\n",
    ]
    return "".join(parts).encode()


def _mutate(data: bytes, rng: random.Random) -> bytes:
    data = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        kind = rng.randrange(8)
        at = rng.randrange(len(data) + 1)
        if kind == 0:  # truncate
            del data[at:]
        elif kind == 1:  # delete a slice
            del data[at : at + rng.randint(1, 50)]
        elif kind == 2:  # random bytes
            data[at:at] = rng.randbytes(rng.randint(1, 40))
        elif kind == 3:  # JSON's own characters, where they hurt
            data[at:at] = bytes(rng.choice(b'{}[]":,\\\n\x00') for _ in range(rng.randint(1, 8)))
        elif kind == 4 and data:  # flip bytes
            for _ in range(rng.randint(1, 10)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        elif kind == 5:  # duplicate a slice elsewhere
            piece = data[at : at + rng.randint(1, 200)]
            where = rng.randrange(len(data) + 1)
            data[where:where] = piece
        elif kind == 6:  # an invalid UTF-8 sequence
            data[at:at] = rng.choice([b"\xff", b"\xc3", b"\xe2\x82", b"\xed\xa0\x80", b"\xf4\x90\x80\x80"])
        elif data:  # swap two halves: objects out of order, cut in odd places
            data = data[at:] + data[:at]
    return bytes(data)


def test_valid_file_reads_whole(tmp_path):
    result = read_signal_log(write(tmp_path, _valid_file()))
    assert len(result.records) == 12 and result.rejected == 0
    assert result.records[10]["timeframe"] == "4h"  # "tf" filled beats "timeframe": null
    assert result.records[11]["extra"]["note"] == 'braces } { and "quotes" \\ and \u00e9'


def test_random_mutations_never_raise(tmp_path):
    rng = random.Random(20240601)
    valid = _valid_file()
    path = tmp_path / "mutated.log"
    for round_ in range(400):
        data = _mutate(valid, rng)
        path.write_bytes(data)
        result = read_signal_log(path)
        assert_sane(result)
        assert result.error is None, round_
        assert result.bytes_read == len(data)
        assert len(result.records) <= 12 * 4  # duplication can repeat records, not invent many
        select_predictions(result.records, {("BTC/USDT", "1h"): EXPECTED_T0 + timedelta(hours=12)})
        for record in result.records:
            assert label_score(record["label"]) in (-2, -1, 0, 1, 2)


def test_random_values_never_raise():
    rng = random.Random(99)
    pool = [
        None,
        True,
        False,
        0,
        -1,
        2,
        1.5,
        math.nan,
        math.inf,
        "",
        " ",
        "bull",
        "1h",
        "BTCUSDT",
        "\x00",
        "2024-01-01",
        "9" * 30,
        [],
        {},
        [1],
        {"a": 1},
        b"\xff",
        -(10**30),
        10**30,
    ]
    keys = ["symbol", "pair", "tf", "timeframe", "ts", "time", "label", "signal", "confidence", "score", "x", ""]
    for _ in range(2000):
        raw = {rng.choice(keys): rng.choice(pool) for _ in range(rng.randint(0, 8))}
        record, reason, _ = sanitize_record(raw)
        assert (record is None) != (reason is None)
        for value in raw.values():
            assert normalize_label(value) in LABELS
            normalize_symbol(value)
            normalize_timeframe(value)
            normalize_ts(value)
