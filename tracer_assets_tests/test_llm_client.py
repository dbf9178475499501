"""The shared LLM client (`tracer_assets.llm`): one validated call against a local Messages API
server, through the real anthropic client. Any schema works; nothing here is about trading.

Every failure is a result with `ok=False` and a reason, never an exception, and the key appears
in no result and in no validated answer.
"""

from __future__ import annotations

import json
import threading
import time
from decimal import Decimal
from typing import Any

import anthropic
import dagster as dg
import pytest
from fake_anthropic import FakeAnthropic
from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator

from tracer_assets.llm import (
    MAX_ANSWER_CHARS,
    RAW_TEXT_KEPT,
    AnswerRejected,
    Asker,
    LlmResult,
    ask_claude,
    extract_json_object,
    parse_validated,
    reject,
)
from tracer_assets.llm.resource import API_KEY_VARIABLE, DEFAULT_MODEL, AnthropicResource

API_KEY = "sk-ant-client-SECRET-93b1d0c4e8"
MODEL = "claude-sonnet-4-6"
SYSTEM = "You review a trading day. Answer with ONLY one JSON object."
MESSAGES = [{"role": "user", "content": "Day summary: 3 trades, PnL +12.5 USDT."}]


class Review(BaseModel):
    """A schema of another kind than a trading decision: what a daily review could return."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    verdict: str
    score: Decimal
    notes: list[str]

    @field_validator("verdict")
    @classmethod
    def _verdict(cls, value: str, info: ValidationInfo) -> str:
        allowed = (info.context or {}).get("verdicts", ("good", "bad"))
        if value not in allowed:
            raise reject(f"verdict {value!r} is not one of {', '.join(allowed)}")
        return value


class Broken(BaseModel):
    """A schema whose validator has a bug (raises something pydantic does not wrap)."""

    value: int

    @field_validator("value")
    @classmethod
    def _crash(cls, value: int) -> int:
        raise KeyError("a bug in the schema")


GOOD = '{"verdict": "good", "score": 0.875, "notes": ["two wins", "one small loss"]}'


@pytest.fixture
def server():
    with FakeAnthropic(api_key=API_KEY) as fake:
        yield fake


def _ask(server: FakeAnthropic, schema: type[BaseModel] = Review, timeout_s: float = 5.0, **kwargs) -> LlmResult:
    api_key = kwargs.pop("api_key", API_KEY)
    with anthropic.Anthropic(api_key=api_key, base_url=server.url, max_retries=0) as client:
        result = ask_claude(client, MODEL, SYSTEM, MESSAGES, schema, timeout_s=timeout_s, max_tokens=256, **kwargs)
    assert API_KEY not in repr(result)  # not in the reason, the raw text, the answer
    return result


def _assert_failed(result: LlmResult, reason_part: str) -> None:
    assert result.ok is False and result.answer is None
    assert result.reason is not None and reason_part in result.reason, result.reason
    assert result.model == MODEL and result.latency_s >= 0


def _llm_threads() -> list[str]:
    return [thread.name for thread in threading.enumerate() if thread.name.startswith("tracer-llm")]


# --- a valid answer ---------------------------------------------------------------------------------


def test_a_valid_answer_comes_back_as_the_validated_model(server):
    server.reply_text(f"Here is the review:\n```json\n{GOOD}\n```")
    result = _ask(server)
    assert result.ok and result.reason is None and isinstance(result.answer, Review)
    assert result.answer.verdict == "good" and result.answer.notes == ["two wins", "one small loss"]
    assert result.answer.score == Decimal("0.875") and isinstance(result.answer.score, Decimal)  # exact, no float
    assert result.raw_text.endswith("```") and result.model == MODEL
    assert result.input_tokens > 0 and result.output_tokens > 0 and 0 <= result.latency_s < 5
    (request,) = server.requests
    assert request.body["system"] == SYSTEM and request.body["messages"] == MESSAGES
    assert request.body["model"] == MODEL and request.body["max_tokens"] == 256


def test_the_validation_context_reaches_the_schema(server):
    server.reply_text(GOOD)
    _assert_failed(
        _ask(server, context={"verdicts": ("ok", "not ok")}), "invalid answer: verdict 'good' is not one of ok, not ok"
    )
    server.reply_text(GOOD.replace('"good"', '"ok"'))
    assert _ask(server, context={"verdicts": ("ok", "not ok")}).answer.verdict == "ok"


# --- garbage and schema-invalid answers ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        pytest.param("I think the day went well overall.", "no JSON object in the answer", id="prose"),
        pytest.param("\x00\x01 }{ ][ ::: \ufffd\ufffd", "no JSON object in the answer", id="binary-junk"),
        pytest.param('{"verdict": "good", "score": }', "invalid JSON: Expecting value at character 29", id="broken"),
        pytest.param('{"verdict": "good",', "invalid JSON: Expecting property name", id="truncated"),
        pytest.param("__import__('os').system('rm -rf /')", "no JSON object in the answer", id="code"),
        pytest.param("   ", "the answer is empty", id="blank"),
    ],
)
def test_a_garbage_answer_is_a_failure_with_the_text_kept(server, text, reason):
    server.reply_text(text)
    result = _ask(server)
    _assert_failed(result, "invalid answer: " + reason)
    assert result.raw_text == text  # kept for the audit trail


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        pytest.param('{"verdict": "good", "score": 1}', "missing field notes", id="missing"),
        pytest.param(GOOD[:-1] + ', "leverage": 10}', "unexpected field leverage", id="extra"),
        pytest.param(GOOD.replace("0.875", '"high"'), "score 'high': Input should be a valid decimal", id="type"),
        pytest.param(GOOD.replace('"good"', '"great"'), "verdict 'great' is not one of good, bad", id="custom"),
        pytest.param(GOOD.replace("0.875", "NaN"), "invalid JSON: NaN is not a number JSON allows", id="nan"),
        pytest.param(
            GOOD.replace("0.875", "-Infinity"), "invalid JSON: -Infinity is not a number JSON allows", id="infinity"
        ),
        pytest.param(GOOD[:-1] + ', "score": 1}', "invalid JSON: key 'score' appears twice", id="duplicate"),
    ],
)
def test_a_schema_invalid_answer_is_a_failure_naming_the_field(server, text, reason):
    server.reply_text(text)
    result = _ask(server)
    _assert_failed(result, "invalid answer: " + reason)
    assert result.raw_text == text


def test_an_overlong_answer_is_refused_before_parsing_and_kept_cut(server):
    text = GOOD[:-1] + ', "padding": "' + "x" * MAX_ANSWER_CHARS + '"}'
    server.reply_text(text)
    result = _ask(server)
    _assert_failed(result, f"invalid answer: the answer has {len(text)} characters, more than {MAX_ANSWER_CHARS}")
    assert result.raw_text == text[:RAW_TEXT_KEPT]


def test_a_bug_in_the_schema_is_a_failure_not_an_exception(server):
    server.reply_text('{"value": 3}')
    _assert_failed(_ask(server, schema=Broken), "LLM response unreadable: KeyError")


def test_an_answer_cut_at_max_tokens_is_a_failure_even_if_it_parses(server):
    server.reply_text(GOOD, stop_reason="max_tokens")
    result = _ask(server)
    _assert_failed(result, "LLM answer cut off at max_tokens (256)")
    assert result.raw_text == GOOD


# --- the call failing ---------------------------------------------------------------------------------


def test_http_errors_and_a_wrong_key_are_failures_without_retry(server):
    server.reply_status(529, "Overloaded")
    _assert_failed(_ask(server), "LLM HTTP 529 (overloaded): overloaded_error: Overloaded")
    assert len(server.requests) == 1
    _assert_failed(_ask(server, api_key="sk-ant-wrong-key-000000"), "LLM HTTP 401: authentication_error")


def test_the_key_is_redacted_from_reasons_the_text_and_the_answer(server):
    server.reply_status(400, f"bad request from key {API_KEY}")
    _assert_failed(_ask(server), "LLM HTTP 400: invalid_request_error: bad request from key [redacted]")
    server.reply_text(GOOD.replace('"two wins"', json.dumps(f"my key is {API_KEY}")))
    result = _ask(server)  # asserts the key is nowhere in the result
    assert result.ok and result.answer.notes[0] == "my key is [redacted]"


def test_the_deadline_covers_the_whole_call(server):
    server.reply_trickle(GOOD, pieces=6, pause_s=0.5)
    started = time.monotonic()
    result = _ask(server, timeout_s=1.0)
    _assert_failed(result, "LLM timed out after 1.0 s (deadline hit")
    assert time.monotonic() - started < 2.5 and result.raw_text is None
    assert _llm_threads() == []


@pytest.mark.parametrize("timeout_s", [0, -2.5, float("nan"), True])
def test_a_time_limit_that_is_not_a_positive_finite_number_is_a_failure(server, timeout_s):
    _assert_failed(_ask(server, timeout_s=timeout_s), "LLM time limit must be a positive finite number of seconds")
    assert server.requests == []


def test_nothing_listening_is_a_failure():
    stopped = FakeAnthropic(api_key=API_KEY).start()
    stopped.stop()
    _assert_failed(_ask(stopped), "LLM connection failed: ConnectError (127.0.0.1:")


# --- the pure parts ---------------------------------------------------------------------------------------


def test_extract_json_object_is_strict():
    assert extract_json_object('prose {"a": 1.10, "b": [1, {"c": null}]} more {"d": 2}') == {
        "a": Decimal("1.10"),
        "b": [1, {"c": None}],
    }
    assert extract_json_object("set {1, 2} then {}") == {}  # `{` must open an object: `{1` does not
    for text, message in [
        ("[1, 2, 3]", "no JSON object in the answer"),
        ('{"a": Infinity}', "invalid JSON: Infinity is not a number JSON allows"),
        ('{"a": 1, "a": 1}', "invalid JSON: key 'a' appears twice"),
        ('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}", "invalid JSON"),
    ]:
        with pytest.raises(AnswerRejected, match=message.replace("[", r"\[")):
            extract_json_object(text)


def test_parse_validated_names_the_problem():
    assert parse_validated(GOOD, Review).score == Decimal("0.875")
    with pytest.raises(AnswerRejected) as refused:
        parse_validated('{"verdict": "good", "score": [1], "notes": []}', Review)
    assert refused.value.reason.startswith("score [1]: ")


# --- the resource ----------------------------------------------------------------------------------------


def test_the_resource_asks_with_its_configuration(server, monkeypatch):
    monkeypatch.setenv(API_KEY_VARIABLE, API_KEY)
    definition = AnthropicResource.from_env_key(base_url=server.url, timeout_seconds=3.0, max_tokens=300)
    assert definition.model == DEFAULT_MODEL and definition.max_retries == 0
    with dg.build_resources({"llm": definition}) as resources:
        llm: Asker = resources.llm
        assert API_KEY not in repr(llm)
        server.reply_text(GOOD)
        result = llm.ask(SYSTEM, MESSAGES, Review, context={"verdicts": ("good",)})
    assert result.ok and result.answer.verdict == "good" and result.model == DEFAULT_MODEL
    assert server.requests[-1].body["max_tokens"] == 300 and server.requests[-1].body["model"] == DEFAULT_MODEL


@pytest.mark.parametrize(
    ("config", "reason"),
    [
        ({"api_key": ""}, f"LLM client not configured: the Anthropic API key is empty: set {API_KEY_VARIABLE}"),
        ({"model": " "}, "LLM client not configured: the Anthropic model id is empty"),
        ({"max_tokens": 0}, "LLM client not configured: max_tokens must be >= 1, got 0"),
        ({"base_url": "ftp://example"}, "LLM client not configured: base_url must be an http(s) URL"),
    ],
)
def test_a_misconfigured_resource_is_a_failure_naming_the_setting(config: dict[str, Any], reason):
    result = AnthropicResource(**{"api_key": API_KEY, **config}).ask(SYSTEM, MESSAGES, Review)
    assert result.ok is False and result.answer is None and reason in result.reason
    assert API_KEY not in repr(result)
