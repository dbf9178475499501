"""One wall-clock deadline for a whole Messages API call: connect, send, every read.

httpx's timeouts (the SDK's `timeout`) bound each connect, write and read separately, so a server
sending a piece every few seconds never trips them. `create_within` therefore runs the request on
its own short-lived HTTP connection in a worker thread, waits until the deadline at most, then
shuts that connection's socket down (which ends the worker's blocked read at once) and raises
`DeadlinePassed`. The caller (`call.ask_claude`) turns that into a failure, never an exception.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any

__all__ = ["DEADLINE_GRACE_S", "Deadline", "DeadlinePassed", "create_within", "deadline_reason"]

DEADLINE_GRACE_S = 1.0  # after the deadline, how long the worker may take to end once its socket is cut
_log = logging.getLogger(__name__)


class DeadlinePassed(TimeoutError):
    """The call had no complete answer when its deadline passed."""


def deadline_reason(timeout_s: float) -> str:
    return f"LLM timed out after {timeout_s} s (deadline hit before a complete answer)"


class Deadline:
    """One wall-clock deadline for a call, and the sockets of the connections the call opened.

    `attach` is an httpx request event hook: it gives the request httpcore's `trace` extension,
    through which every network stream the request opens (TCP, then TLS over it) is registered
    here as soon as it exists. `expire` shuts those sockets down: `shutdown` wakes a thread
    blocked in recv at once (closing the socket from another thread would not, on Linux), so
    the read fails, the SDK raises and the worker ends. A connection completed after the
    deadline (a slow name lookup) is shut down as soon as it is registered.
    """

    def __init__(self, seconds: float) -> None:
        self.at = time.monotonic() + seconds
        self._lock = threading.Lock()
        self._streams: list[Any] = []
        self._expired = False

    def remaining(self) -> float:
        return self.at - time.monotonic()

    def attach(self, request: Any) -> None:
        previous = request.extensions.get("trace")

        def trace(event: str, info: dict[str, Any]) -> None:
            self._traced(event, info)
            if previous is not None:
                previous(event, info)

        request.extensions = {**request.extensions, "trace": trace}

    def _traced(self, event: str, info: dict[str, Any]) -> None:
        stream = info.get("return_value")
        if not event.endswith(".complete") or not callable(getattr(stream, "get_extra_info", None)):
            return
        with self._lock:
            self._streams.append(stream)
            expired = self._expired
        if expired:
            _shut_down(stream)

    def expire(self) -> None:
        with self._lock:
            self._expired = True
            streams = list(self._streams)
        for stream in streams:
            _shut_down(stream)


def _shut_down(stream: Any) -> None:
    try:
        sock = stream.get_extra_info("socket")
        if sock is not None:
            sock.shutdown(socket.SHUT_RDWR)
    except OSError:  # already closed, or a TCP socket since wrapped by TLS (its TLS stream is registered too)
        pass


def create_within(client: Any, deadline: Deadline, **request: Any) -> Any:
    """`client.messages.create(**request)`, answered by the deadline or `DeadlinePassed`.

    The request goes through a copy of `client` (same key, base URL, headers, retries) on its
    own `anthropic.DefaultHttpxClient` (the SDK's defaults; proxies from the environment), so
    the deadline can cut its connection without touching the caller's; a custom `http_client`
    of `client` is not used. The httpx timeout is the time remaining. The call runs in a worker
    thread: the caller's thread waits for it until the deadline at most, whatever the worker is
    blocked in. At the deadline the worker's sockets are shut down and it is given
    `DEADLINE_GRACE_S` to end (it normally ends within milliseconds); it closes its own HTTP
    client on the way out, so no connection outlives the call.
    """
    import anthropic

    http_client = anthropic.DefaultHttpxClient(event_hooks={"request": [deadline.attach]})
    try:
        call_client = client.with_options(http_client=http_client)
    except BaseException:
        http_client.close()
        raise
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            with http_client:
                result["response"] = call_client.messages.create(**request, timeout=max(deadline.remaining(), 0.001))
        except BaseException as error:  # handed to the caller's thread
            result["error"] = error

    worker = threading.Thread(target=run, name="tracer-llm-call", daemon=True)
    worker.start()
    worker.join(max(deadline.remaining(), 0.0))
    if worker.is_alive():
        deadline.expire()
        worker.join(DEADLINE_GRACE_S)
        if worker.is_alive():  # e.g. blocked in a name lookup: it ends when that returns (daemon)
            _log.warning("LLM call thread still running %.1f s after its deadline was hit", DEADLINE_GRACE_S)
        raise DeadlinePassed()
    if "error" in result:
        raise result["error"]
    return result["response"]
