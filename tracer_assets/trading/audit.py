"""The seed's audit files, the config hash, and the redaction that keeps secrets out of both.

Three files under TRACER_LOG_DIR (default .tracer/logs), as the macro orchestrator wrote them:
- `macro_ccxt_orders.log`: tab-separated, a header line, then one line per order with
  `ORDER_LOG_FIELDS`. Tabs, newlines and other control characters inside a value are escaped
  (`\\t`, `\\n`, `\\r`, `\\\\`, `\\xNN`), so one record is always exactly one line.
- `macro_ccxt_orders_audit.jsonl`: one JSON object per line, `"type": "order"` or
  `"type": "decision"`, the whole row (risk checks included). Decimals are written as exact
  strings without exponent, datetimes as ISO 8601 in UTC.
- `macro_diagnostics.json`: a snapshot rewritten atomically at the end of every cycle
  (cycles, successful cycles, last error, last decision); the counts survive restarts.

No secret reaches any of them (the redaction is `tracer_assets.redaction`'s): values under
secret-looking keys (`SECRET_KEY_PATTERN`) are replaced by "[redacted]", and every registered
secret value (`AuditLog(secrets=...)`: the exchange keys, the Anthropic key, webhook URLs, the
Telegram token) is cut out of every string, so a key echoed inside an exception message is
removed too.

Appends are line-atomic: each record is one `os.write` on a file opened with O_APPEND, under
an advisory `flock` (POSIX) that also makes "write the header when the file is new" safe when
two processes start at once.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import logging
import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path, PurePath

from tracer_assets.files import write_atomically
from tracer_assets.money import decimal_text
from tracer_assets.redaction import is_secret_key, prepare_secrets, redact_prepared, redact_text
from tracer_assets.trading.orders import Mode

try:  # POSIX; elsewhere appends rely on O_APPEND alone
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

log = logging.getLogger(__name__)

ORDERS_LOG = "macro_ccxt_orders.log"
AUDIT_JSONL = "macro_ccxt_orders_audit.jsonl"
DIAGNOSTICS_JSON = "macro_diagnostics.json"

ORDER_LOG_FIELDS: tuple[str, ...] = (
    "ts",
    "mode",
    "symbol",
    "side",
    "amount",
    "price",
    "status",
    "client_order_id",
    "decision_id",
    "signal_storage_id",
    "reason",
)
ORDER_LOG_HEADER = "\t".join(ORDER_LOG_FIELDS) + "\n"
MODES: tuple[str, ...] = tuple(Mode)

MAX_ERROR_CHARS = 2000  # of last_error kept in the diagnostics snapshot


# --- JSON conversion --------------------------------------------------------------------------


def utc_iso(value: datetime, field: str = "datetime") -> str:
    """ISO 8601 in UTC; a naive datetime is refused (its zone would be a guess)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{field}={value.isoformat()}: naive datetime, give it a time zone (UTC)")
    return value.astimezone(UTC).isoformat()


def to_jsonable(value: object, field: str = "row") -> object:
    """A copy made of dict/list/str/int/float/bool/None only, ready for `json.dumps`.

    Decimal -> exact string; datetime -> ISO UTC; date, Path, Enum -> text; non-finite floats
    -> "NaN"/"Infinity" (JSON has no such numbers); objects with `as_record()` (RiskVerdict)
    and dataclasses -> dicts; exceptions -> "TypeName: message". Anything else is refused with
    a TypeError naming the field.
    """
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value).replace("inf", "Infinity").replace("nan", "NaN")
    if isinstance(value, Decimal):
        return decimal_text(value)
    if isinstance(value, datetime):
        return utc_iso(value, field)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, enum.Enum):
        return to_jsonable(value.value, field)
    if isinstance(value, BaseException):
        return f"{type(value).__name__}: {value}"
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v, f"{field}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v, f"{field}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, (set, frozenset)):
        items = [to_jsonable(v, f"{field}[]") for v in value]
        return sorted(items, key=lambda item: json.dumps(item, sort_keys=True))
    as_record = getattr(value, "as_record", None)
    if callable(as_record):
        return to_jsonable(as_record(), field)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name), f"{field}.{f.name}") for f in dataclasses.fields(value)}
    raise TypeError(f"{field}: cannot write a {type(value).__name__} to the audit trail")


# --- config hash -------------------------------------------------------------------------------


def trading_config(settings) -> dict[str, object]:
    """What changes a trading decision, for `config_hash`: the trading and LLM settings objects
    whole (their paths aside: where files go changes no decision) and what the market settings
    say is traded (`MarketSettings.universe`)."""

    def plain(obj) -> dict[str, object]:
        return {k: v for k, v in dataclasses.asdict(obj).items() if not isinstance(v, PurePath)}

    return {"market": settings.market.universe, "trading": plain(settings.trading), "llm": plain(settings.llm)}


def _canonical(value: object, field: str) -> object:
    """Secret keys dropped; every number (int, float, Decimal) as its normalized decimal string,
    so 10, 10.0 and Decimal('10.00') hash alike; bools stay bools."""
    if isinstance(value, Mapping):
        return {str(k): _canonical(v, f"{field}.{k}") for k, v in value.items() if not is_secret_key(str(k))}
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float, Decimal)):
        number = value if isinstance(value, Decimal) else Decimal(repr(value) if isinstance(value, float) else value)
        if not number.is_finite():
            return str(number)
        text = decimal_text(number.normalize())
        return "0" if text in ("-0", "0") else text
    if isinstance(value, (list, tuple)):
        return [_canonical(v, f"{field}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, (set, frozenset)):
        items = [_canonical(v, f"{field}[]") for v in value]
        return sorted(items, key=lambda item: json.dumps(item, sort_keys=True))
    return _canonical(to_jsonable(value, field), field)


def config_hash(settings_like: Mapping[str, object]) -> str:
    """The first 16 hex digits of sha256 over the canonical JSON (sorted keys, no spaces) of the
    settings, with every secret-looking key (SECRET_KEY_PATTERN) removed at any depth.

    Pass `trading_config(settings)` for the settings that change trading. The same values in
    any key order give the same hash; a secret's value never changes it (it is not hashed).
    """
    if not isinstance(settings_like, Mapping):
        raise TypeError(f"config_hash needs a mapping of settings, got {type(settings_like).__name__}")
    canonical = json.dumps(
        _canonical(settings_like, "settings"), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


# --- the files ---------------------------------------------------------------------------------


def escape_field(text: str) -> str:
    """One TSV field on one line: backslash, tab, CR, LF and every other control or line-break
    character escaped (so `str.splitlines` cannot split a record either)."""
    out = []
    for char in text:
        if char == "\\":
            out.append("\\\\")
        elif char == "\t":
            out.append("\\t")
        elif char == "\n":
            out.append("\\n")
        elif char == "\r":
            out.append("\\r")
        elif ord(char) < 0x20 or ord(char) == 0x7F or 0x80 <= ord(char) < 0xA0:
            out.append(f"\\x{ord(char):02x}")
        elif char in "\u2028\u2029":
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return "".join(out)


def _tsv_value(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "1" if value else "0"
    return json.dumps(value, ensure_ascii=False) if isinstance(value, (dict, list)) else str(value)


@dataclass(frozen=True)
class DiagnosticsUpdate:
    """What `update_diagnostics` wrote; `warning` says why an unreadable old file was replaced."""

    snapshot: dict
    warning: str | None = None


class AuditLog:
    """Appends orders and decisions to the seed's files and keeps the diagnostics snapshot.

    `secrets` are the actual secret values in use (exchange key and secret, Anthropic key,
    webhook URL, Telegram token); None or "" entries mean "not configured" and are skipped.
    Every record is redacted of them before it is written. I/O errors (a full disk) raise
    OSError: the caller decides whether a failed audit write stops the cycle.
    """

    def __init__(
        self,
        log_dir: Path | str,
        secrets: Iterable[str | None] = (),
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.log_dir = Path(log_dir)
        self._secrets = prepare_secrets(secrets)
        self._clock = clock or (lambda: datetime.now(UTC))
        self.log_dir.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:  # the secrets stay out of any repr
        return f"AuditLog({str(self.log_dir)!r}, secrets=<{len(self._secrets)} forms>)"

    @property
    def orders_log_path(self) -> Path:
        return self.log_dir / ORDERS_LOG

    @property
    def audit_jsonl_path(self) -> Path:
        return self.log_dir / AUDIT_JSONL

    @property
    def diagnostics_path(self) -> Path:
        return self.log_dir / DIAGNOSTICS_JSON

    def redact(self, obj: object) -> object:
        """`redact` with this log's registered secrets."""
        return redact_prepared(obj, self._secrets)

    def _now(self) -> datetime:
        return self._clock().astimezone(UTC)

    def _clean(self, row: Mapping, kind: str) -> dict:
        if not isinstance(row, Mapping):
            raise TypeError(f"{kind} row: expected a mapping, got {type(row).__name__}")
        for reserved in ("type", "logged_at"):
            if reserved in row:
                raise ValueError(f"{kind} row: the key {reserved!r} is reserved for the audit record, rename it")
        mode = row.get("mode")
        if mode not in MODES:
            raise ValueError(f"{kind} row: mode={mode!r}, expected one of {', '.join(MODES)}")
        record = {"type": kind, "logged_at": utc_iso(self._now(), "logged_at")}
        record.update(to_jsonable(row, kind))
        return self.redact(record)

    def record_order(self, row: Mapping) -> None:
        """One line in macro_ccxt_orders.log (ORDER_LOG_FIELDS; `ts` defaults to now) and one
        JSON line (the whole row, `"type": "order"`) in macro_ccxt_orders_audit.jsonl."""
        record = self._clean(row, "order")
        _append(self.orders_log_path, self._tsv_line(record, row), header_if_new=ORDER_LOG_HEADER)
        _append(self.audit_jsonl_path, _json_line(record))

    def record_decision(self, row: Mapping) -> None:
        """One line in macro_ccxt_orders.log (the action as `side`, status `decision`, as the
        seed logged every action, HOLD included) and one JSON line (`"type": "decision"`)."""
        record = self._clean(row, "decision")
        _append(self.orders_log_path, self._tsv_line(record, row), header_if_new=ORDER_LOG_HEADER)
        _append(self.audit_jsonl_path, _json_line(record))

    def record_once(self, decisions: Iterable[Mapping], orders: Iterable[Mapping]) -> int:
        """Append every record that is not in a file yet, each file on its own; returns the lines
        written over both files. For a caller that writes the records it committed, then marks
        them logged: after a crash between the two, the records still unmarked are the ones
        appended last, so looking for them among each file's last lines finds them."""
        records = [
            (record, row)
            for kind, rows in (("decision", decisions), ("order", orders))
            for row in rows
            for record in [self._clean(row, kind)]
        ]
        if not records:
            return 0
        written = 0
        outputs = (
            (self.orders_log_path, ORDER_LOG_HEADER, _tsv_key, [self._tsv_line(rec, row) for rec, row in records]),
            (self.audit_jsonl_path, None, _json_key, [_json_line(rec) for rec, _ in records]),
        )
        for path, header, key_of, lines in outputs:
            present = {key_of(line) for line in _last_lines(path, len(lines))}
            for (record, _), line in zip(records, lines):
                if _record_key(record) not in present:
                    _append(path, line, header_if_new=header)
                    written += 1
        return written

    def _tsv_line(self, record: dict, row: Mapping) -> str:
        """A decision's line carries its action as `side` and `decision` as its status."""
        values = dict(record)
        if record["type"] == "decision":
            values.update(side=record.get("action"), status="decision", client_order_id=None, amount=None)
        else:
            for required in ("symbol", "side"):
                if not isinstance(row.get(required), str) or not row[required].strip():
                    raise ValueError(f"order row: {required}={row.get(required)!r}, expected a non-empty string")
        if values.get("ts") in (None, ""):
            values["ts"] = record["logged_at"]
        return "\t".join(escape_field(_tsv_value(values.get(name))) for name in ORDER_LOG_FIELDS) + "\n"

    def update_diagnostics(
        self, cycle_ok: bool, last_decision: Mapping | None = None, last_error: str | None = None
    ) -> DiagnosticsUpdate:
        """Count one cycle and rewrite macro_diagnostics.json atomically (temp file + os.replace).

        The counts continue from the file on disk, so they survive restarts. `last_decision`
        and `last_error` replace the stored ones when given, and are kept otherwise; a failed
        cycle without an error text records that it failed. A corrupt or unreadable old file
        is replaced with fresh counts and reported in `DiagnosticsUpdate.warning` and the log.
        """
        if not isinstance(cycle_ok, bool):
            raise TypeError(f"cycle_ok={cycle_ok!r}: expected a bool")
        with _locked(self.log_dir / f".{DIAGNOSTICS_JSON}.lock"):
            previous, warning = self._read_diagnostics()
            now = utc_iso(self._now(), "now")
            failures = 0 if cycle_ok else previous.get("consecutive_failures", 0) + 1
            snapshot = {
                "cycles": previous.get("cycles", 0) + 1,
                "successful_cycles": previous.get("successful_cycles", 0) + (1 if cycle_ok else 0),
                "consecutive_failures": failures,
                "last_cycle_at": now,
                "last_cycle_ok": cycle_ok,
                "last_error": previous.get("last_error"),
                "last_error_at": previous.get("last_error_at"),
                "last_decision": previous.get("last_decision"),
            }
            if last_error is not None or not cycle_ok:
                text = str(last_error) if last_error is not None else "cycle failed without an error message"
                # Redact before cutting: a cut through a secret would leave its first half.
                snapshot["last_error"] = redact_text(text, self._secrets)[:MAX_ERROR_CHARS]
                snapshot["last_error_at"] = now
            if last_decision is not None:
                snapshot["last_decision"] = to_jsonable(last_decision, "last_decision")
            snapshot = self.redact(snapshot)
            write_atomically(self.diagnostics_path, json.dumps(snapshot, indent=2, ensure_ascii=False) + "\n")
        if warning:
            log.warning(warning)
        return DiagnosticsUpdate(snapshot=snapshot, warning=warning)

    def read_diagnostics(self) -> dict:
        """The snapshot on disk ({} when there is none or it is unreadable)."""
        return self._read_diagnostics()[0]

    def _read_diagnostics(self) -> tuple[dict, str | None]:
        path = self.diagnostics_path
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}, None
        except (OSError, UnicodeDecodeError) as error:
            return {}, f"{path}: unreadable ({type(error).__name__}), replaced with fresh counts"
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            return {}, f"{path}: not valid JSON ({error.msg} at line {error.lineno}), replaced with fresh counts"
        if not isinstance(data, dict):
            return {}, f"{path}: expected a JSON object, found {type(data).__name__}, replaced with fresh counts"
        for name in ("cycles", "successful_cycles", "consecutive_failures"):
            value = data.get(name, 0)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                return {}, f"{path}: {name}={value!r} is not a count, replaced with fresh counts"
        if data.get("successful_cycles", 0) > data.get("cycles", 0):
            return {}, f"{path}: more successful cycles than cycles, replaced with fresh counts"
        return data, None


def _record_key(record: Mapping) -> tuple[str, object]:
    """What identifies an audit record: an order by its client id, a decision by its id."""
    if record.get("type") == "order":
        return "order", record.get("client_order_id")
    return "decision", record.get("decision_id")


def _json_key(line: str) -> tuple[str, object] | None:
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None
    return _record_key(record) if isinstance(record, dict) else None


def _tsv_key(line: str) -> tuple[str, object] | None:
    values = line.rstrip("\n").split("\t")
    if len(values) != len(ORDER_LOG_FIELDS) or values == list(ORDER_LOG_FIELDS):
        return None
    cid = values[ORDER_LOG_FIELDS.index("client_order_id")]
    return ("order", cid) if cid else ("decision", values[ORDER_LOG_FIELDS.index("decision_id")])


def _last_lines(path: Path, count: int, block: int = 1 << 16) -> list[str]:
    """The file's last `count` lines (fewer when it has fewer), read backwards from its end."""
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        return []
    with handle:
        position = handle.seek(0, os.SEEK_END)
        data = b""
        while position > 0 and data.count(b"\n") <= count:
            step = min(block, position)
            position -= step
            handle.seek(position)
            data = handle.read(step) + data
    return [line.decode("utf-8", "replace") for line in data.splitlines()[-count:]] if count > 0 else []


def _json_line(record: Mapping) -> str:
    # ensure_ascii keeps U+2028/U+2029 escaped too, so a JSON line is one line for every reader.
    return json.dumps(record, ensure_ascii=True, separators=(",", ":")) + "\n"


@contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    """An exclusive advisory lock between processes (POSIX); a no-op where flock is missing."""
    if fcntl is None:  # pragma: no cover - Windows
        yield
        return
    fd = os.open(lock_path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _append(path: Path, line: str, header_if_new: str | None = None) -> None:
    """Append one complete line in a single write on an O_APPEND descriptor, the header first
    when the file is empty (checked under the lock, so two writers cannot both add it)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        payload = line
        if header_if_new is not None and os.fstat(fd).st_size == 0:
            payload = header_if_new + line
        data = payload.encode("utf-8")
        written = os.write(fd, data)
        while written < len(data):  # only on a full disk or a signal; finish the line regardless
            written += os.write(fd, data[written:])
    finally:
        os.close(fd)
