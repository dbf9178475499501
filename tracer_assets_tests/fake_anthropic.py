"""A local stand-in for Anthropic's Messages API, so tests drive the real `anthropic` client.

    with FakeAnthropic(api_key="sk-test-...") as server:
        client = anthropic.Anthropic(api_key=server.api_key, base_url=server.url, max_retries=0)
        server.reply_text('{"action": "HOLD", ...}')
        server.reply_status(500)
        server.reply_delay(2.0, "...")      # answers after 2 s: a client timeout below that fires
        server.reply_trickle("...", pieces=8, pause_s=1.0)  # headers at once, the body over 8 s
        server.reply_refusal()
        server.reply_content([], stop_reason="end_turn")   # any content blocks
        ...
        server.requests[0].body["system"]

`POST /v1/messages` only. Replies are scripted, first in first out; a request with none scripted
gets a 500 saying so (a test never passes on a default answer). A 200 reply is a JSON message, or,
when the request asks for `"stream": true`, the API's server-sent events (message_start,
content_block_start/delta/stop, message_delta, message_stop) in a chunked body. A trickled reply
(`reply_trickle`) sends its headers at once and its body in pieces with a pause before each; if the
client hangs up meanwhile, the server stops and records when (`RecordedRequest.hung_up_at`,
`pieces_sent`), so a test can see that a client really closed its connection. The key is checked the way the
API does: sent as `x-api-key` or as `Authorization: Bearer` (anthropic 2.11 sends the latter);
a missing or wrong key is a 401 authentication_error, a missing `anthropic-version` a 400.
Error bodies have Anthropic's shape: {"type": "error", "error": {"type", "message"}, "request_id"}.
"""

from __future__ import annotations

import itertools
import json
import select
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


@dataclass
class RecordedRequest:
    """One request as the server saw it (header names lower-cased)."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any  # the parsed JSON, or the raw text when it was not JSON
    pieces_sent: int = 0  # body pieces of a trickled reply written before it ended
    hung_up_at: float | None = None  # time.monotonic() when the client closed mid-trickle

    @property
    def streamed(self) -> bool:
        """The client asked for server-sent events."""
        return isinstance(self.body, dict) and self.body.get("stream") is True

    @property
    def prompt_text(self) -> str:
        """The system prompt and every user message's text, joined."""
        if not isinstance(self.body, dict):
            return ""
        parts = [self.body.get("system") if isinstance(self.body.get("system"), str) else ""]
        for message in self.body.get("messages", []):
            content = message.get("content")
            if isinstance(content, str):
                parts.append(content)
            elif isinstance(content, list):
                parts.extend(block.get("text", "") for block in content if isinstance(block, dict))
        return "\n".join(parts)


@dataclass
class _Reply:
    status: int = 200
    content: list[dict] = field(default_factory=list)
    stop_reason: str | None = "end_turn"
    error: dict | None = None
    delay_s: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    pieces: int = 1  # the body in this many writes ...
    pause_s: float = 0.0  # ... each after this pause (a trickle when pieces > 1)


class FakeAnthropic:
    """ThreadingHTTPServer on 127.0.0.1 (a free port) speaking the Messages API; a context manager."""

    def __init__(self, api_key: str = "sk-ant-test-0123456789abcdef", model: str = "claude-test") -> None:
        self.api_key = api_key
        self.model = model
        self.requests: list[RecordedRequest] = []
        self._replies: deque[_Reply] = deque()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._ids = itertools.count(1)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> FakeAnthropic:
        handler = type("Handler", (_Handler,), {"fake": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-anthropic", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes handlers sleeping in reply_delay
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeAnthropic:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # --- scripting ---------------------------------------------------------------------------

    def _push(self, reply: _Reply) -> None:
        with self._lock:
            self._replies.append(reply)

    def reply_text(self, text: str, stop_reason: str = "end_turn") -> None:
        """A 200 message whose content is one text block."""
        self._push(_Reply(content=[{"type": "text", "text": text}], stop_reason=stop_reason))

    def reply_content(self, content: list[dict], stop_reason: str | None = "end_turn") -> None:
        """A 200 message with these content blocks (empty, tool_use, several texts, ...)."""
        self._push(_Reply(content=list(content), stop_reason=stop_reason))

    def reply_status(self, status: int, message: str | None = None, error_type: str | None = None) -> None:
        """An error response with Anthropic's error body."""
        kind = error_type or ERROR_TYPES.get(status, "api_error")
        headers = {"retry-after": "1"} if status == 429 else {}
        self._push(_Reply(status=status, error={"type": kind, "message": message or f"fake {kind}"}, headers=headers))

    def reply_delay(self, seconds: float, text: str) -> None:
        """reply_text, sent after `seconds` (for client timeouts)."""
        self._push(_Reply(content=[{"type": "text", "text": text}], delay_s=seconds))

    def reply_trickle(self, text: str, pieces: int = 8, pause_s: float = 1.0, stop_reason: str = "end_turn") -> None:
        """reply_text with the headers sent at once and the body in `pieces` parts, each after
        `pause_s` (the last at pieces * pause_s): every read the client makes gets data well
        within a per-read timeout of more than `pause_s`, while the whole answer takes longer."""
        if pieces < 1 or pause_s < 0:
            raise ValueError(f"pieces must be >= 1 and pause_s >= 0, got {pieces}, {pause_s}")
        self._push(
            _Reply(content=[{"type": "text", "text": text}], stop_reason=stop_reason, pieces=pieces, pause_s=pause_s)
        )

    def reply_refusal(self, text: str = "") -> None:
        """A 200 message stopped by the safety classifiers: stop_reason "refusal"."""
        content = [{"type": "text", "text": text}] if text else []
        self._push(_Reply(content=content, stop_reason="refusal"))

    def _next_reply(self) -> _Reply | None:
        with self._lock:
            return self._replies.popleft() if self._replies else None

    def _record(self, request: RecordedRequest) -> RecordedRequest:
        with self._lock:
            self.requests.append(request)
        return request


class _Handler(BaseHTTPRequestHandler):
    fake: FakeAnthropic
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args) -> None:  # quiet: pytest shows failures anyway
        pass

    def _send(self, status: int, payload: dict, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.send_header("request-id", payload.get("request_id") or payload.get("id", "req_fake"))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout test)
            pass

    def _error(self, status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> None:
        request_id = f"req_fake_{next(self.fake._ids)}"
        self._send(
            status, {"type": "error", "error": {"type": kind, "message": message}, "request_id": request_id}, headers
        )

    def do_GET(self) -> None:
        self._error(404, "not_found_error", f"Not found: {self.path}")

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length).decode("utf-8", "replace")
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = raw
        headers = {name.lower(): value for name, value in self.headers.items()}
        record = self.fake._record(RecordedRequest("POST", self.path, headers, body))
        if self.path.split("?")[0] != "/v1/messages":
            self._error(404, "not_found_error", f"Not found: {self.path}")
            return
        sent_key = headers.get("x-api-key")
        authorization = headers.get("authorization", "")
        if sent_key is None and authorization.lower().startswith("bearer "):
            sent_key = authorization[7:]
        if not sent_key:
            self._error(401, "authentication_error", "x-api-key header is required")
            return
        if sent_key != self.fake.api_key:
            self._error(401, "authentication_error", "invalid x-api-key")
            return
        if not headers.get("anthropic-version"):
            self._error(400, "invalid_request_error", "anthropic-version: header is required")
            return
        if (
            not isinstance(body, dict)
            or not isinstance(body.get("messages"), list)
            or "max_tokens" not in body
            or "model" not in body
        ):
            self._error(400, "invalid_request_error", "model, max_tokens and messages are required")
            return
        reply = self.fake._next_reply()
        if reply is None:
            self._error(500, "api_error", "fake server: no scripted reply left")
            return
        if reply.delay_s and self.fake._stopping.wait(reply.delay_s):
            return  # the server is stopping: drop the answer
        if reply.error is not None:
            self._error(reply.status, reply.error["type"], reply.error["message"], reply.headers)
            return
        output_tokens = sum(len(block.get("text", "")) // 4 + 1 for block in reply.content)
        message = {
            "id": f"msg_fake_{next(self.fake._ids)}",
            "type": "message",
            "role": "assistant",
            "model": body.get("model", self.fake.model),
            "content": reply.content,
            "stop_reason": reply.stop_reason,
            "stop_sequence": None,
            "usage": {
                "input_tokens": len(raw) // 4,
                "output_tokens": output_tokens,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
            },
        }
        if body.get("stream") is True:
            self._send_pieces(record, _sse_events(message), "text/event-stream", reply, chunked=True)
        elif reply.pieces > 1:
            self._send_pieces(record, json.dumps(message).encode(), "application/json", reply, chunked=False)
        else:
            self._send(200, message)

    def _send_pieces(
        self, record: RecordedRequest, body: bytes, content_type: str, reply: _Reply, chunked: bool
    ) -> None:
        """Headers now; the body in reply.pieces writes, each after reply.pause_s (chunked for SSE)."""
        size = -(-len(body) // reply.pieces)  # ceiling: exactly `pieces` parts (fewer for a tiny body)
        parts = [body[i : i + size] for i in range(0, len(body), size)]
        try:
            self.send_response(200)
            self.send_header("content-type", content_type)
            if chunked:
                self.send_header("transfer-encoding", "chunked")
            else:
                self.send_header("content-length", str(len(body)))
            self.send_header("request-id", f"req_fake_{next(self.fake._ids)}")
            self.end_headers()
            self.wfile.flush()
            for part in parts:
                if reply.pause_s and self._client_gone(record, reply.pause_s):
                    self.close_connection = True
                    return
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part) if chunked else part)
                self.wfile.flush()
                record.pieces_sent += 1
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            record.hung_up_at = record.hung_up_at or time.monotonic()
            self.close_connection = True

    def _client_gone(self, record: RecordedRequest, seconds: float) -> bool:
        """Wait `seconds`; True at once if the client closes its end (recorded) or the server stops."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            if self.fake._stopping.is_set():
                return True
            readable, _, _ = select.select([self.connection], [], [], min(left, 0.05))
            if not readable:
                continue
            try:
                peeked = self.connection.recv(1, socket.MSG_PEEK)
            except OSError:
                peeked = b""
            if not peeked:  # end of stream: the client shut down or closed its socket
                record.hung_up_at = time.monotonic()
                return True
            time.sleep(min(left, 0.05))  # bytes of a next request: not ours to read now
        return False


def _sse_events(message: dict) -> bytes:
    """The message as the Messages API streams it: one text delta per text block; any other
    block whole in its content_block_start."""
    start = {
        **message,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {**message["usage"], "output_tokens": 1},
    }
    events: list[tuple[str, dict]] = [("message_start", {"type": "message_start", "message": start})]
    for index, block in enumerate(message["content"]):
        if block.get("type") == "text":
            events.append(
                (
                    "content_block_start",
                    {"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}},
                )
            )
            events.append(
                (
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "text_delta", "text": block.get("text", "")},
                    },
                )
            )
        else:
            events.append(
                ("content_block_start", {"type": "content_block_start", "index": index, "content_block": block})
            )
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    events.append(
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                "usage": {"output_tokens": message["usage"]["output_tokens"]},
            },
        )
    )
    events.append(("message_stop", {"type": "message_stop"}))
    return "".join(f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in events).encode()
