"""The one LLM client of the project: ask Claude, get an answer validated against a pydantic model.

    from tracer_assets.llm.resource import AnthropicResource  # the Dagster resource (imports Dagster)

    llm = AnthropicResource.from_env_key()  # key from ANTHROPIC_API_KEY through dg.EnvVar
    result = llm.ask(system, [{"role": "user", "content": user}], MyAnswer, context={...})
    if result.ok:
        result.answer  # a validated MyAnswer
    else:
        result.reason  # why not: HTTP error, deadline, refusal, invalid JSON, a field named ...

An answer is data, never code: the first JSON object of the text, decoded strictly and validated
field by field. Nothing the API, the network or the model does makes a call raise: it comes back
as a failed `LlmResult` with its reason, the key redacted from everything.

- `answers.py`: the JSON object in the text, strict decoding, validation against the model
- `deadline.py`: one wall-clock deadline for the whole call (worker thread, socket shutdown)
- `call.py`: `ask_claude(client, ...)`, the validated call over an `anthropic.Anthropic`, and `LlmResult`
- `resource.py`: `AnthropicResource`, the configured client as a Dagster resource

This package's `__init__` imports no Dagster, so pure code (the LLM decider) can use its parts.
"""

from tracer_assets.llm.answers import (
    MAX_ANSWER_CHARS,
    AnswerRejected,
    extract_json_object,
    parse_validated,
    reject,
    shown,
)
from tracer_assets.llm.call import RAW_TEXT_KEPT, Asker, LlmResult, ask_claude

__all__ = [
    "MAX_ANSWER_CHARS",
    "RAW_TEXT_KEPT",
    "AnswerRejected",
    "Asker",
    "LlmResult",
    "ask_claude",
    "extract_json_object",
    "parse_validated",
    "reject",
    "shown",
]
