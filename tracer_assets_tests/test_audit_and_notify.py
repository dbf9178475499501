"""The seed's audit files, the config hash, redaction, and Discord/Telegram delivery.

Notifications go through the real urllib code to a local HTTP server on 127.0.0.1 that speaks
like Discord's webhook endpoint and Telegram's Bot API (started and stopped by each test).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
from collections import deque
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote

import pytest
from dagster import DagsterInvalidConfigError, EnvVar, asset, materialize

from tracer_assets import notify, redaction
from tracer_assets.notify import (
    DISCORD_LIMIT,
    TELEGRAM_LIMIT,
    DeliveryError,
    DeliveryResult,
    Notification,
    Notifier,
    format_decision_message,
    format_order_message,
    send_discord,
    send_telegram,
)
from tracer_assets.redaction import prepare_secrets, redact, redact_text
from tracer_assets.resources.notifier import NotifierResource
from tracer_assets.trading import audit
from tracer_assets.trading.audit import (
    AUDIT_JSONL,
    DIAGNOSTICS_JSON,
    ORDER_LOG_FIELDS,
    ORDERS_LOG,
    AuditLog,
    config_hash,
    trading_config,
)
from tracer_assets.trading.risk import Check, RiskVerdict

ANTHROPIC_KEY = "sk-ant-test-SECRET123"
EXCHANGE_SECRET = "exch-secret-0123456789abcdef"
DISCORD_ID = "112233445566778899"
DISCORD_TOKEN = "dIsCoRd-WeBhOoK-tOkEn_0123456789abcdefghijklmnopqrstuvwxyzABCDEF"
TELEGRAM_TOKEN = "123456789:AAE-telegram-secret-token_abcdefghijk"
CHAT_ID = "-1001234567890"


# --- a local Discord + Telegram ----------------------------------------------------------------


class FakeChatServer:
    """Discord's `POST /api/webhooks/<id>/<token>` (204) and Telegram's
    `POST /bot<token>/sendMessage` ({"ok": true}); a wrong token gets the service's 401/404.
    Scripted replies (first in, first out) override the next answer: a status with a body
    (which may echo the request path, as some proxies do), or a delay longer than the client's
    timeout. Every request is recorded."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.scripted: deque[dict] = deque()
        self.release = threading.Event()  # set at stop so delayed handlers end at once
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = raw.decode("utf-8", "replace")
                server.requests.append(
                    {"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body}
                )
                script = server.scripted.popleft() if server.scripted else None
                if script and "delay" in script:
                    server.release.wait(script["delay"])
                    return  # the client has given up by now; answering would hit a closed socket
                if script:
                    text = script["body"].replace("{path}", self.path)
                    return self._send(script["status"], text)
                if self.path == f"/api/webhooks/{DISCORD_ID}/{DISCORD_TOKEN}":
                    return self._send(204, "")
                if self.path.startswith("/api/webhooks/"):
                    return self._send(401, json.dumps({"message": "Invalid Webhook Token", "code": 50027}))
                if self.path == f"/bot{TELEGRAM_TOKEN}/sendMessage":
                    return self._send(
                        200,
                        json.dumps(
                            {"ok": True, "result": {"message_id": len(server.requests), "text": body.get("text")}}
                        ),
                    )
                return self._send(404, json.dumps({"ok": False, "error_code": 404, "description": "Not Found"}))

            def _send(self, status: int, text: str) -> None:
                data = text.encode("utf-8")
                self.send_response(status)
                if data:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if data:
                    self.wfile.write(data)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def discord_url(self) -> str:
        return f"{self.url}/api/webhooks/{DISCORD_ID}/{DISCORD_TOKEN}"

    def reply_status(self, status: int, body: str = "") -> None:
        self.scripted.append({"status": status, "body": body})

    def reply_delay(self, seconds: float) -> None:
        self.scripted.append({"delay": seconds})

    def __enter__(self) -> FakeChatServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


@pytest.fixture
def chat():
    with FakeChatServer() as server:
        yield server


@pytest.fixture
def refused_url():
    """An address on 127.0.0.1 where a socket is bound but not listening: connecting is refused."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


def assert_no_secret(text: str) -> None:
    for secret in (DISCORD_TOKEN, TELEGRAM_TOKEN, ANTHROPIC_KEY, EXCHANGE_SECRET, TELEGRAM_TOKEN.split(":")[1]):
        assert secret not in text, f"a secret leaked into: {text!r}"
    assert "/api/webhooks/" not in text


# --- notifications -----------------------------------------------------------------------------


def test_discord_message_arrives_as_webhook_json(chat):
    notifier = Notifier(discord_url=chat.discord_url)
    results = notifier.notify(Notification("DRY BUY BTC/USDT: filled", "amount 0.00158 at 63123.45", "info"))

    assert results == [DeliveryResult("discord", True, None)]
    [request] = chat.requests
    assert request["path"] == f"/api/webhooks/{DISCORD_ID}/{DISCORD_TOKEN}"
    assert request["headers"]["content-type"].startswith("application/json")
    assert not request["headers"]["user-agent"].startswith("Python-urllib")  # Cloudflare refuses that agent
    assert request["body"]["content"] == "[INFO] DRY BUY BTC/USDT: filled\namount 0.00158 at 63123.45"
    assert request["body"]["allowed_mentions"] == {"parse": []}


def test_telegram_message_arrives_at_send_message(chat):
    notifier = Notifier(telegram_token=TELEGRAM_TOKEN, telegram_chat_id=CHAT_ID, api_base=chat.url)
    results = notifier.notify(Notification("Order rejected", "daily loss limit reached", "warning"))

    assert results == [DeliveryResult("telegram", True, None)]
    [request] = chat.requests
    assert request["path"] == f"/bot{TELEGRAM_TOKEN}/sendMessage"
    assert request["body"] == {"chat_id": CHAT_ID, "text": "[WARNING] Order rejected\ndaily loss limit reached"}


def test_both_channels_get_the_order_message(chat):
    notifier = Notifier(
        discord_url=chat.discord_url, telegram_token=TELEGRAM_TOKEN, telegram_chat_id=CHAT_ID, api_base=chat.url
    )
    order = {
        "mode": "DRY",
        "side": "buy",
        "symbol": "BTC/USDT",
        "amount": Decimal("0.00158"),
        "price": Decimal("63123.45"),
        "status": "filled",
        "reason": "signal 7.5 Bull",
        "client_order_id": "tracer-42-BTCUSDT-ab12cd34",
    }
    results = notifier.notify(format_order_message(order))

    assert [(r.channel, r.ok) for r in results] == [("discord", True), ("telegram", True)]
    discord_text = chat.requests[0]["body"]["content"]
    telegram_text = chat.requests[1]["body"]["text"]
    assert discord_text == telegram_text
    assert discord_text.splitlines() == [
        "[INFO] DRY BUY BTC/USDT: filled",
        "amount 0.00158 at 63123.45",
        "reason: signal 7.5 Bull",
        "client order id: tracer-42-BTCUSDT-ab12cd34",
    ]
    rejected = format_order_message({**order, "status": "rejected", "reason": "max_open_positions: 3 open"})
    assert rejected.level == "warning"
    decision = format_decision_message(
        {"mode": "LIVE", "action": "hold", "symbol": None, "confidence": 0.4, "reason": "regime Flat"}
    )
    assert decision.render() == "[INFO] LIVE decision: HOLD\nconfidence 0.4\nreason: regime Flat"


def test_long_messages_are_cut_to_each_service_limit(chat):
    notifier = Notifier(
        discord_url=chat.discord_url, telegram_token=TELEGRAM_TOKEN, telegram_chat_id=CHAT_ID, api_base=chat.url
    )
    # "📈" is outside the BMP: 2 UTF-16 units, the way the services count.
    results = notifier.notify(Notification("report", "📈" * 3000))
    assert all(r.ok for r in results)

    content, text = chat.requests[0]["body"]["content"], chat.requests[1]["body"]["text"]
    assert len(content.encode("utf-16-le")) // 2 <= DISCORD_LIMIT
    assert len(text.encode("utf-16-le")) // 2 <= TELEGRAM_LIMIT
    assert content.endswith("…") and text.endswith("…")
    assert len(content) > DISCORD_LIMIT // 2 - 20  # cut near the limit, not far below it


FAILURES = {
    "HTTP 500 echoing the path": (
        lambda server: server.reply_status(500, '{"message": "boom at {path}", "description": "boom at {path}"}'),
        "HTTP 500",
    ),
    "timeout": (lambda server: server.reply_delay(5.0), "timed out"),
    "wrong reply shape": (lambda server: server.reply_status(200, "<html>{path}</html>"), None),
}


@pytest.mark.parametrize("channel", ["discord", "telegram"])
@pytest.mark.parametrize("failure", list(FAILURES))
def test_a_failed_delivery_is_reported_never_raised_and_redacted(chat, channel, failure, caplog):
    script, expected = FAILURES[failure]
    script(chat)
    if channel == "discord":
        notifier = Notifier(discord_url=chat.discord_url, timeout=0.5)
    else:
        notifier = Notifier(telegram_token=TELEGRAM_TOKEN, telegram_chat_id=CHAT_ID, api_base=chat.url, timeout=0.5)

    with caplog.at_level(logging.WARNING, logger="tracer_assets.notify"):
        results = notifier.notify(Notification("DRY SELL ETH/USDT", "stop hit"))

    [result] = results
    assert len(chat.requests) == 1
    if channel == "discord" and failure == "wrong reply shape":
        assert result.ok  # Discord only promises a 2xx; the body is not checked
        return
    assert result.channel == channel and result.ok is False
    assert result.error.startswith(f"{channel}: ")
    assert (expected or "not delivered") in result.error
    assert_no_secret(result.error)
    assert "not delivered" in caplog.text
    assert_no_secret(caplog.text)


@pytest.mark.parametrize("channel", ["discord", "telegram"])
def test_connection_refused_is_a_failed_delivery(refused_url, channel):
    if channel == "discord":
        notifier = Notifier(discord_url=f"{refused_url}/api/webhooks/{DISCORD_ID}/{DISCORD_TOKEN}", timeout=2)
    else:
        notifier = Notifier(telegram_token=TELEGRAM_TOKEN, telegram_chat_id=CHAT_ID, api_base=refused_url, timeout=2)
    [result] = notifier.notify("tick failed")
    assert result.ok is False
    assert "refused" in result.error.lower()
    assert_no_secret(result.error)


def test_a_wrong_token_is_reported_by_the_services_answer(chat):
    notifier = Notifier(
        discord_url=f"{chat.url}/api/webhooks/{DISCORD_ID}/wrong-{DISCORD_TOKEN[:30]}",
        telegram_token="999:wrong-token-abcdefghijkl",
        telegram_chat_id=CHAT_ID,
        api_base=chat.url,
    )
    results = notifier.notify("hello")
    assert [(r.channel, r.ok) for r in results] == [("discord", False), ("telegram", False)]
    assert results[0].error == "discord: HTTP 401: Invalid Webhook Token"
    assert results[1].error == "telegram: HTTP 404: Not Found"
    assert "wrong-token" not in results[1].error


def test_nothing_is_sent_without_configuration(chat):
    assert Notifier(api_base=chat.url).notify(Notification("DRY BUY BTC/USDT", "filled")) == []
    assert Notifier(discord_url="", telegram_token="", telegram_chat_id="", api_base=chat.url).notify("x") == []

    # Half a Telegram configuration: reported by the missing setting's name, nothing sent.
    [result] = Notifier(telegram_token=TELEGRAM_TOKEN, api_base=chat.url).notify("x")
    assert result == DeliveryResult("telegram", False, "telegram: TELEGRAM_CHAT_ID is not set (TELEGRAM_BOT_TOKEN is)")
    [result] = Notifier(discord_url="discord.com/api/webhooks/1/abcdefghijklmnop").notify("x")
    assert result == DeliveryResult("discord", False, "discord: the webhook URL is not an http(s) URL")
    assert chat.requests == []


def test_registered_secrets_never_leave_in_a_message(chat):
    notifier = Notifier(discord_url=chat.discord_url, secrets=[ANTHROPIC_KEY])
    # The key straddles Discord's 2000-character cut: redaction comes first, so not even
    # its first half is sent.
    reason = "LLM error: invalid x-api-key ".rjust(DISCORD_LIMIT - 10 - len("[INFO] HOLD\n"), "x") + ANTHROPIC_KEY
    assert Notification("HOLD", reason).render().index(ANTHROPIC_KEY) == DISCORD_LIMIT - 10
    [result] = notifier.notify(Notification("HOLD", reason))
    assert result.ok
    content = chat.requests[0]["body"]["content"]
    assert content.endswith("x-api-key [redacted]")
    assert "sk-ant" not in content
    assert_no_secret(content)


def test_send_functions_raise_redacted_errors(chat):
    chat.reply_status(500, '{"ok": false, "description": "Internal error at {path}"}')
    with pytest.raises(DeliveryError) as failed:
        send_telegram(TELEGRAM_TOKEN, CHAT_ID, "hello", timeout=2, api_base=chat.url)
    assert str(failed.value) == "telegram: HTTP 500: Internal error at /bot[redacted]/sendMessage"
    assert failed.value.__cause__ is None and failed.value.__suppress_context__  # no urllib error holding the URL

    chat.reply_status(502, "bad gateway for {path}")
    with pytest.raises(DeliveryError) as failed:
        send_discord(chat.discord_url, Notification("hello"), timeout=2)
    assert str(failed.value) == "discord: HTTP 502: bad gateway for [redacted]"


# --- the Dagster resource ----------------------------------------------------------------------


@asset
def notified(notifier: NotifierResource) -> list:
    """An asset that notifies, the way the trading assets will."""
    return notifier.notifier().notify(Notification("DRY BUY BTC/USDT", "filled"))


def _run_with(resource: NotifierResource) -> list[DeliveryResult]:
    result = materialize([notified], resources={"notifier": resource}, raise_on_error=True)
    return result.output_for_node("notified")


def test_resource_from_env_delivers_with_env_vars_and_hides_them(chat, monkeypatch):
    monkeypatch.setenv("DISCORD_WEBHOOK_URL", chat.discord_url)
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", TELEGRAM_TOKEN)
    monkeypatch.setenv("TELEGRAM_CHAT_ID", CHAT_ID)
    resource = NotifierResource.from_env(telegram_api_base=chat.url, timeout_seconds=2)
    assert_no_secret(repr(resource))

    results = _run_with(resource)
    assert [(r.channel, r.ok) for r in results] == [("discord", True), ("telegram", True)]
    assert chat.requests[1]["body"] == {"chat_id": CHAT_ID, "text": "[INFO] DRY BUY BTC/USDT\nfilled"}


def test_resource_from_env_without_variables_runs_and_sends_nothing(chat, monkeypatch):
    for name in ("DISCORD_WEBHOOK_URL", "TELEGRAM_BOT_TOKEN", "TELEGRAM_CHAT_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TELEGRAM_CHAT_ID", "")  # set but empty counts as unset
    assert _run_with(NotifierResource.from_env(telegram_api_base=chat.url)) == []
    assert chat.requests == []

    # Why from_env checks first: Dagster 1.13 fails the whole run on an EnvVar that is unset.
    with pytest.raises(DagsterInvalidConfigError, match="DISCORD_WEBHOOK_URL"):
        _run_with(NotifierResource(discord_webhook_url=EnvVar("DISCORD_WEBHOOK_URL")))


# --- audit files -------------------------------------------------------------------------------


T0 = datetime(2024, 9, 6, 4, 45, tzinfo=UTC)


def order_row(**changes) -> dict:
    verdict = RiskVerdict(
        approved=True,
        amount=Decimal("0.00158"),
        price=Decimal("63123.45"),
        cost=Decimal("99.7350510"),
        checks=(Check("min_order", True, "99.735051 >= 5"), Check("daily_trade_limit", True, "2 < 8")),
        reason="approved",
    )
    row = {
        "ts": datetime(2024, 9, 6, 6, 45, tzinfo=timezone(timedelta(hours=2))),  # 04:45 UTC
        "mode": "DRY",
        "symbol": "BTC/USDT",
        "side": "buy",
        "amount": Decimal("0.00158"),
        "price": Decimal("63123.45"),
        "fee": Decimal("1E-8"),
        "status": "filled",
        "client_order_id": "tracer-42-BTCUSDT-ab12cd34",
        "decision_id": "d-42",
        "signal_storage_id": 42,
        "run_id": "8c1f7a2e",
        "reason": "signal 7.5 Bull",
        "risk": verdict,
        "config_hash": "0123456789abcdef",
    }
    row.update(changes)
    return row


def read_tsv(path: Path) -> list[list[str]]:
    return [line.split("\t") for line in path.read_text(encoding="utf-8").split("\n")[:-1]]


def test_orders_log_has_a_header_and_one_line_per_order(tmp_path):
    audit = AuditLog(tmp_path / "logs", clock=lambda: T0)
    audit.record_order(order_row())
    audit.record_order(
        order_row(
            side="sell", amount=Decimal("0.00100"), status="rejected", ts=None, reason="max_open_positions: 3 open"
        )
    )

    rows = read_tsv(tmp_path / "logs" / ORDERS_LOG)
    assert rows[0] == list(ORDER_LOG_FIELDS)
    assert len(rows) == 3
    first = dict(zip(ORDER_LOG_FIELDS, rows[1]))
    assert first == {
        "ts": "2024-09-06T04:45:00+00:00",
        "mode": "DRY",
        "symbol": "BTC/USDT",
        "side": "buy",
        "amount": "0.00158",
        "price": "63123.45",
        "status": "filled",
        "client_order_id": "tracer-42-BTCUSDT-ab12cd34",
        "decision_id": "d-42",
        "signal_storage_id": "42",
        "reason": "signal 7.5 Bull",
    }
    second = dict(zip(ORDER_LOG_FIELDS, rows[2]))
    assert (second["side"], second["amount"], second["status"]) == ("sell", "0.00100", "rejected")
    assert second["ts"] == T0.isoformat()  # no ts given: the time it was logged


def test_a_value_with_tabs_and_newlines_stays_one_line(tmp_path):
    audit = AuditLog(tmp_path)
    reason = "line one\tcolumn\nline two\r\nthree\u2028four \\t literal"
    audit.record_order(order_row(reason=reason, symbol="BTC/USDT\n"))

    text = (tmp_path / ORDERS_LOG).read_text(encoding="utf-8")
    assert len(text.splitlines()) == 2 and text.count("\n") == 2
    fields = dict(zip(ORDER_LOG_FIELDS, text.split("\n")[1].split("\t")))
    assert len(text.split("\n")[1].split("\t")) == len(ORDER_LOG_FIELDS)
    assert fields["reason"] == "line one\\tcolumn\\nline two\\r\\nthree\\u2028four \\\\t literal"
    assert fields["symbol"] == "BTC/USDT\\n"
    # The JSON line keeps the value exactly, on one line too.
    [record] = [json.loads(line) for line in (tmp_path / AUDIT_JSONL).read_text(encoding="utf-8").splitlines()]
    assert record["reason"] == reason


def test_jsonl_parses_back_with_exact_decimals_and_risk_checks(tmp_path):
    audit = AuditLog(tmp_path, clock=lambda: T0)
    audit.record_decision(
        {
            "mode": "LIVE",
            "decision_id": "d-42",
            "signal_storage_id": 42,
            "run_id": "8c1f7a2e",
            "action": "BUY",
            "symbol": "BTC/USDT",
            "confidence": Decimal("0.750"),
            "reason": "conviction 8",
            "risk_checks_passed": ["min_order"],
            "risk_checks_failed": [],
            "config_hash": "0123456789abcdef",
            "decided_at": T0,
        }
    )
    audit.record_order(order_row())

    lines = (tmp_path / AUDIT_JSONL).read_text(encoding="utf-8").splitlines()
    decision, order = (json.loads(line) for line in lines)
    assert (decision["type"], order["type"]) == ("decision", "order")
    assert decision["confidence"] == "0.750" and decision["decided_at"] == "2024-09-06T04:45:00+00:00"
    assert decision["logged_at"] == "2024-09-06T04:45:00+00:00"
    assert order["amount"] == "0.00158" and Decimal(order["amount"]) == Decimal("0.00158")
    assert order["fee"] == "0.00000001"  # never "1E-8"
    assert order["ts"] == "2024-09-06T04:45:00+00:00"
    assert (order["mode"], order["signal_storage_id"], order["run_id"]) == ("DRY", 42, "8c1f7a2e")
    assert order["risk"]["cost"] == "99.735051"  # RiskVerdict.as_record writes it normalized
    assert order["risk"]["checks"] == [
        {"name": "min_order", "passed": True, "detail": "99.735051 >= 5"},
        {"name": "daily_trade_limit", "passed": True, "detail": "2 < 8"},
    ]


def test_bad_rows_are_refused_naming_the_field(tmp_path):
    audit = AuditLog(tmp_path)
    with pytest.raises(ValueError, match="mode='PAPER'"):
        audit.record_order(order_row(mode="PAPER"))
    with pytest.raises(ValueError, match=r"order\.ts=2024-09-06T04:45:00: naive datetime"):
        audit.record_order(order_row(ts=datetime(2024, 9, 6, 4, 45)))
    with pytest.raises(ValueError, match="side=None"):
        audit.record_order(order_row(side=None))
    with pytest.raises(ValueError, match="'type' is reserved"):
        audit.record_decision({"mode": "DRY", "type": "market"})
    with pytest.raises(TypeError, match=r"decision\.blob: cannot write a bytes"):
        audit.record_decision({"mode": "DRY", "blob": b"\x00"})
    with pytest.raises(ValueError, match="secrets\\[1\\]: a secret of 3 characters") as refused:
        AuditLog(tmp_path, secrets=[ANTHROPIC_KEY, "abc"])
    assert "abc" not in str(refused.value)
    assert not (tmp_path / ORDERS_LOG).exists()  # nothing half-written by a refused row


def test_diagnostics_count_cycles_across_restarts(tmp_path):
    clock = iter([T0, T0 + timedelta(minutes=3), T0 + timedelta(minutes=6)])
    first = AuditLog(tmp_path, clock=lambda: next(clock))
    first.update_diagnostics(True, last_decision={"action": "BUY", "amount": Decimal("0.00158")}, last_error=None)
    update = first.update_diagnostics(False, last_decision=None, last_error="fetch_ohlcv: NetworkError")
    assert update.warning is None

    restarted = AuditLog(tmp_path, clock=lambda: next(clock))  # a new process, the same folder
    update = restarted.update_diagnostics(True, last_decision={"action": "HOLD"}, last_error=None)

    on_disk = json.loads((tmp_path / DIAGNOSTICS_JSON).read_text(encoding="utf-8"))
    assert on_disk == update.snapshot
    assert on_disk["cycles"] == 3 and on_disk["successful_cycles"] == 2
    assert on_disk["consecutive_failures"] == 0 and on_disk["last_cycle_ok"] is True
    assert on_disk["last_cycle_at"] == "2024-09-06T04:51:00+00:00"
    assert on_disk["last_error"] == "fetch_ohlcv: NetworkError"  # kept until the next error
    assert on_disk["last_error_at"] == "2024-09-06T04:48:00+00:00"
    assert on_disk["last_decision"] == {"action": "HOLD"}
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == [DIAGNOSTICS_JSON]


@pytest.mark.parametrize("corrupt", ['{"cycles": 7, "successful', "[1, 2]", '{"cycles": "lots"}', "\xff\xfe"])
def test_corrupt_diagnostics_are_replaced_not_fatal(tmp_path, corrupt, caplog):
    (tmp_path / DIAGNOSTICS_JSON).write_bytes(corrupt.encode("latin-1"))
    with caplog.at_level(logging.WARNING, logger="tracer_assets.trading.audit"):
        update = AuditLog(tmp_path).update_diagnostics(True, None, None)
    assert update.warning and "replaced with fresh counts" in update.warning
    assert "replaced with fresh counts" in caplog.text
    on_disk = json.loads((tmp_path / DIAGNOSTICS_JSON).read_text(encoding="utf-8"))
    assert (on_disk["cycles"], on_disk["successful_cycles"]) == (1, 1)


def test_no_secret_reaches_any_file(tmp_path):
    webhook = f"https://discord.com/api/webhooks/{DISCORD_ID}/{DISCORD_TOKEN}"
    audit = AuditLog(tmp_path, secrets=[ANTHROPIC_KEY, webhook, TELEGRAM_TOKEN, EXCHANGE_SECRET, None, ""])
    audit.record_order(
        order_row(
            reason=f"anthropic said: invalid x-api-key {ANTHROPIC_KEY}",
            error=(
                f"POST /api/webhooks/{DISCORD_ID}/{DISCORD_TOKEN} failed; "
                f"url-encoded {quote(EXCHANGE_SECRET + '/x', safe='')}"
            ),
            exchange={"apiKey": "key-under-a-secret-name", "secret": EXCHANGE_SECRET, "timeout": 10000},
            notify_targets=[webhook, f"https://api.telegram.org/bot{TELEGRAM_TOKEN}/sendMessage"],
        )
    )
    audit.record_decision(
        {
            "mode": "LIVE",
            "reason": f"LLM failed: {ANTHROPIC_KEY}",
            "max_tokens": 512,
            "anthropic_api_key": ANTHROPIC_KEY,
        }
    )
    audit.update_diagnostics(
        False, last_decision={"reason": ANTHROPIC_KEY}, last_error="x" * 1990 + ANTHROPIC_KEY
    )  # straddles the 2000-character cut

    for path in tmp_path.iterdir():
        text = path.read_text(encoding="utf-8")
        assert_no_secret(text)
        assert "sk-ant-test" not in text and "key-under-a-secret-name" not in text, path.name
    records = [json.loads(line) for line in (tmp_path / AUDIT_JSONL).read_text(encoding="utf-8").splitlines()]
    assert records[0]["exchange"] == {"apiKey": "[redacted]", "secret": "[redacted]", "timeout": 10000}
    assert records[0]["reason"] == "anthropic said: invalid x-api-key [redacted]"
    assert records[1]["max_tokens"] == 512  # a count under a secret-looking name is not a secret
    assert records[1]["anthropic_api_key"] == "[redacted]"
    assert "sk-ant" not in repr(audit)


def test_redact_standalone_keeps_the_shape():
    row = {
        "api_key": "abc",
        "nested": ({"password": "hunter22", "n": 3},),
        "note": f"key={ANTHROPIC_KEY}",
        "token_count": 12,
        "webhook_url": None,
    }
    assert redact(row, secrets=[ANTHROPIC_KEY]) == {
        "api_key": "[redacted]",
        "nested": ({"password": "[redacted]", "n": 3},),
        "note": "key=[redacted]",
        "token_count": 12,
        "webhook_url": None,
    }
    assert row["api_key"] == "abc"  # a copy: the input is untouched


def test_one_redaction_serves_the_audit_and_the_notifications():
    # tracer_assets.redaction is the one implementation.
    assert audit.prepare_secrets is redaction.prepare_secrets and audit.redact_text is redaction.redact_text
    assert notify.prepare_secrets is redaction.prepare_secrets and notify.redact_text is redaction.redact_text


def test_a_short_secret_is_refused_skipped_or_kept_as_the_caller_says(tmp_path):
    with pytest.raises(ValueError, match="secrets\\[1\\]: a secret of 3 characters is too short to redact"):
        prepare_secrets([ANTHROPIC_KEY, "abc"])
    with pytest.raises(ValueError, match="too short"):
        AuditLog(tmp_path, secrets=[" abcdefg "])  # blanks around it do not count
    assert prepare_secrets([ANTHROPIC_KEY, "abc", None, "", 42], too_short="skip") == (ANTHROPIC_KEY,)
    kept = prepare_secrets(["abc"], too_short="keep")
    assert kept == ("abc",) and redact_text("token abc here", kept) == "token [redacted] here"


def test_a_secret_url_is_cut_in_every_form_it_shows_up_in():
    webhook = f"https://discord.com/api/webhooks/{DISCORD_ID}/{DISCORD_TOKEN}"
    prepared = prepare_secrets([webhook, f"http://user:{EXCHANGE_SECRET}@proxy:8080"])
    assert prepared == tuple(sorted(prepared, key=lambda s: (-len(s), s)))  # longest first
    for shown in (webhook, f"/api/webhooks/{DISCORD_ID}/{DISCORD_TOKEN}", DISCORD_TOKEN, quote(webhook, safe="")):
        assert redact_text(f"failed: {shown}!", prepared) == "failed: [redacted]!"
    assert EXCHANGE_SECRET not in redact_text(f"proxy password {EXCHANGE_SECRET}", prepared)


def test_config_hash_is_stable_and_blind_to_secrets():
    settings = {
        "exchange": "binance",
        "symbols": ("BTC/USDT", "ETH/USDT"),
        "dry_run": True,
        "max_order_amount": Decimal("100"),
        "macro_min_win_rate": 0.2,
        "api_key": "one-key-123456",
    }
    reordered = dict(reversed(list(settings.items())))
    digest = config_hash(settings)

    assert len(digest) == 16 and int(digest, 16) >= 0
    assert config_hash(reordered) == digest
    assert config_hash({**settings, "api_key": "another-key-98765"}) == digest
    assert config_hash({k: v for k, v in settings.items() if k != "api_key"}) == digest
    assert config_hash({**settings, "DISCORD_WEBHOOK_URL": "https://x/y", "nested": {"Secret": "s"}}) == config_hash(
        {**settings, "nested": {}}
    )
    assert config_hash({**settings, "max_order_amount": Decimal("100.00")}) == digest  # same amount
    assert config_hash({**settings, "max_order_amount": Decimal("101")}) != digest
    assert config_hash({**settings, "dry_run": False}) != digest
    assert config_hash({**settings, "symbols": ("ETH/USDT", "BTC/USDT")}) != digest  # order of symbols matters


def test_config_hash_of_real_settings_follows_trading_values_only():
    from tracer_assets.settings import load_settings

    base = {"TRACER_SYMBOLS": "BTC/USDT,ETH/USDT", "MAX_ORDER_AMOUNT": "100"}
    digest = config_hash(trading_config(load_settings(base)))
    assert (
        config_hash(trading_config(load_settings({**base, "DEBUG": "1", "TRACER_DUCKDB_PATH": "/tmp/other.duckdb"})))
        == digest
    )
    assert config_hash(trading_config(load_settings({**base, "ANTHROPIC_API_KEY": ANTHROPIC_KEY}))) == digest
    assert config_hash(trading_config(load_settings({**base, "MAX_ORDER_AMOUNT": "50"}))) != digest
    assert config_hash(trading_config(load_settings({**base, "DRY_RUN": "0"}))) != digest


WRITER = """
import sys
from decimal import Decimal
from tracer_assets.trading.audit import AuditLog
audit = AuditLog(sys.argv[1])
for i in range(int(sys.argv[3])):
    audit.record_order({"mode": "DRY", "symbol": "BTC/USDT", "side": "buy", "amount": Decimal(i),
                        "reason": sys.argv[2] * 6000, "signal_storage_id": i})
"""


@pytest.mark.slow
def test_two_processes_appending_at_once_keep_whole_lines(tmp_path):
    count = 150
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), letter, str(count)]) for letter in "AB"]
    assert [w.wait(timeout=120) for w in writers] == [0, 0]

    rows = read_tsv(tmp_path / ORDERS_LOG)
    assert rows[0] == list(ORDER_LOG_FIELDS) and rows.count(list(ORDER_LOG_FIELDS)) == 1
    assert len(rows) == 1 + 2 * count
    for row in rows[1:]:
        assert len(row) == len(ORDER_LOG_FIELDS)
        assert row[-1] in ("A" * 6000, "B" * 6000)
    records = [json.loads(line) for line in (tmp_path / AUDIT_JSONL).read_text(encoding="utf-8").splitlines()]
    assert len(records) == 2 * count
    assert os.stat(tmp_path / ORDERS_LOG).st_size > 2 * count * 6000
