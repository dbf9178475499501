"""The one validated call: a system prompt and messages in, an answer validated against a
pydantic model out, or a failure saying why. Pure Python (no Dagster); the client is passed in.

`ask_claude` never raises for anything the API, the network or the answer does: every failure
is an `LlmResult` with `ok=False` and a `reason` (the table in docs/trading.md, "Failure means
HOLD"). The time limit is one wall-clock deadline for the whole call, the parse included (see
`deadline.py`). The key (`client.api_key`, `client.auth_token`) is redacted from every reason
and from the answer text before it is parsed, so neither a result nor a validated answer can
carry it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from pydantic import BaseModel

from tracer_assets.llm.answers import AnswerRejected, parse_validated
from tracer_assets.llm.deadline import Deadline, DeadlinePassed, create_within, deadline_reason
from tracer_assets.redaction import prepare_secrets, redact_text

__all__ = ["RAW_TEXT_KEPT", "Asker", "LlmResult", "ask_claude", "client_secrets"]

RAW_TEXT_KEPT = 4000  # characters of the answer kept in the result for the audit trail
# Stop reasons after which the text is the model's complete answer.
_COMPLETE_STOPS = ("end_turn", "stop_sequence")

Model = TypeVar("Model", bound=BaseModel)


@dataclass(frozen=True)
class LlmResult(Generic[Model]):
    """One call's outcome. ok: `answer` is the validated model. Not ok: `answer` is None and
    `reason` says what failed ("LLM HTTP 500: ...", "invalid answer: missing field x", ...).

    `raw_text` is the answer's text (redacted, first RAW_TEXT_KEPT characters) when there was
    one; the token counts are the API's when it answered."""

    ok: bool
    answer: Model | None
    reason: str | None
    raw_text: str | None
    model: str
    latency_s: float
    input_tokens: int | None = None
    output_tokens: int | None = None


class Asker(Protocol):
    """What asks the model: `AnthropicResource`, or anything with the same `ask`."""

    def ask(
        self,
        system: str,
        messages: Sequence[Mapping[str, Any]],
        schema: type[Model],
        *,
        context: dict[str, Any] | None = None,
    ) -> LlmResult[Model]: ...


def client_secrets(client: Any) -> tuple[str, ...]:
    """The client's credentials, prepared for redaction. Only long ones: redacting a
    2-character test key would mangle ordinary words."""
    values = [getattr(client, "api_key", None), getattr(client, "auth_token", None)]
    return prepare_secrets(values, too_short="skip")


def _status_reason(error: Any) -> str:
    status = getattr(error, "status_code", None)
    body = getattr(error, "body", None)
    detail = ""
    if isinstance(body, Mapping):
        inner = body.get("error") if isinstance(body.get("error"), Mapping) else body
        kind, message = inner.get("type"), inner.get("message")
        detail = ": " + ": ".join(str(part) for part in (kind, message) if part)
    elif isinstance(body, str) and body:
        detail = ": " + body
    label = {429: " (rate limited)", 529: " (overloaded)"}.get(status, "")
    return f"LLM HTTP {status}{label}{detail}"[:300]


def _call_failure(error: Exception, timeout_s: float) -> str:
    """A reason for an exception of the call, by its anthropic class (imported lazily: the
    module stays importable and testable without the package)."""
    if isinstance(error, DeadlinePassed):
        return deadline_reason(timeout_s)
    try:
        import anthropic
    except ImportError:  # pragma: no cover - the client could not exist without it
        anthropic = None
    if anthropic is not None:
        if isinstance(error, anthropic.APITimeoutError):  # an httpx timeout: set to the time remaining
            return deadline_reason(timeout_s)
        if isinstance(error, anthropic.APIStatusError):
            return _status_reason(error)
        if isinstance(error, anthropic.APIConnectionError):
            cause = error.__cause__ or error.__context__
            url = getattr(getattr(error, "request", None), "url", None)
            # Host and port only: a proxy URL's user:password part must not reach the reason.
            where = ""
            if url is not None and getattr(url, "host", None):
                where = f" ({url.host}:{url.port})" if url.port else f" ({url.host})"
            return f"LLM connection failed: {type(cause).__name__ if cause else 'connection error'}{where}"
    return f"LLM call failed: {type(error).__name__}: {error}"[:300]


def _usage(response: Any) -> tuple[int | None, int | None]:
    usage = getattr(response, "usage", None)
    tokens = getattr(usage, "input_tokens", None), getattr(usage, "output_tokens", None)
    return tuple(t if isinstance(t, int) else None for t in tokens)  # type: ignore[return-value]


def ask_claude(
    client: Any,
    model: str,
    system: str,
    messages: Sequence[Mapping[str, Any]],
    schema: type[Model],
    *,
    timeout_s: float,
    max_tokens: int,
    context: dict[str, Any] | None = None,
) -> LlmResult[Model]:
    """Send `system` and `messages` to `model` through `client` (an `anthropic.Anthropic`),
    read the first JSON object of the answer and validate it against `schema` (with `context`
    as the validation context). Never raises for the call or the answer.

    `timeout_s` is one deadline for everything (connect, send, every read, the parse): an
    answer not complete and validated by then is a failure, returned at the deadline, not when
    the server finishes. An answer cut at `max_tokens` is a failure even if it parses."""
    secrets = client_secrets(client)
    started = time.monotonic()

    def result(
        reason: str | None, raw_text: str | None = None, response: Any = None, answer: Model | None = None
    ) -> LlmResult[Model]:
        input_tokens, output_tokens = _usage(response)
        return LlmResult(
            ok=answer is not None,
            answer=answer,
            reason=None if reason is None else redact_text(reason, secrets),
            raw_text=redact_text(raw_text, secrets)[:RAW_TEXT_KEPT] if raw_text else raw_text,
            model=model,
            latency_s=round(time.monotonic() - started, 3),
            input_tokens=input_tokens,
            output_tokens=output_tokens,
        )

    numeric = isinstance(timeout_s, (int, float)) and not isinstance(timeout_s, bool)
    if not (numeric and math.isfinite(timeout_s) and timeout_s > 0):
        return result(f"LLM time limit must be a positive finite number of seconds, got {timeout_s!r}")
    deadline = Deadline(timeout_s)
    try:
        response = create_within(
            client, deadline, model=model, max_tokens=max_tokens, system=system, messages=list(messages)
        )
    except Exception as error:  # any failure of the call is a result, never a crash of the caller
        return result(_call_failure(error, timeout_s))
    raw_text = None
    try:
        stop_reason = getattr(response, "stop_reason", None)
        blocks = list(getattr(response, "content", None) or [])
        texts = [
            block.text
            for block in blocks
            if getattr(block, "type", None) == "text" and isinstance(getattr(block, "text", None), str)
        ]
        raw_text = redact_text("".join(texts), secrets)  # before parsing: no answer field can carry the key
        if stop_reason == "refusal":
            return result("LLM refused to answer (stop_reason refusal)", raw_text, response)
        if stop_reason == "max_tokens":
            return result(f"LLM answer cut off at max_tokens ({max_tokens})", raw_text, response)
        if stop_reason not in _COMPLETE_STOPS:
            return result(f"LLM stopped with stop_reason {stop_reason!r}, not a complete answer", raw_text, response)
        if not blocks:
            return result("LLM answer was empty (no content)", None, response)
        if not texts:
            kinds = ", ".join(sorted({str(getattr(block, "type", "?")) for block in blocks}))
            return result(f"LLM answer had no text (content types: {kinds})", None, response)
        answer = parse_validated(raw_text, schema, context)
    except AnswerRejected as rejected:
        return result(f"invalid answer: {rejected.reason}", raw_text, response)
    except Exception as error:  # a response the SDK built but that has an unexpected shape, a schema's bug
        return result(f"LLM response unreadable: {type(error).__name__}: {error}"[:300], None, response)
    if deadline.remaining() < 0:  # the parse is inside the limit too
        return result(deadline_reason(timeout_s), raw_text, response)
    return result(None, raw_text, response, answer)
