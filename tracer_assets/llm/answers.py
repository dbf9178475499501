"""Reading a model's answer: the first JSON object in its text, decoded strictly, validated
against a pydantic model. Pure Python; nothing here evaluates anything the model wrote.

The text is refused when it is empty or longer than `MAX_ANSWER_CHARS`. The object read is the
first `{` followed (after blanks) by `"` or `}`: fenced (```json ... ```) answers and answers
inside prose work. If that object is not valid JSON the answer is refused (the text after it is
not searched). Decoding is strict: numbers with a fraction become `Decimal` (never a float), and
NaN/Infinity constants and duplicate keys are refused, so an ambiguous answer never passes.

The validated model gets `context` as pydantic's validation context (`model_validate(obj,
context=...)`), so its validators can check the answer against what the model was shown. A
validator that raises `reject(message)` has `message` as the reason, word for word; other
validation errors read "<field> <value>: <pydantic's message>", "missing field <name>" or
"unexpected field <name>" (with `extra="forbid"`).
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticCustomError

__all__ = [
    "MAX_ANSWER_CHARS",
    "REJECTED",
    "AnswerRejected",
    "extract_json_object",
    "parse_validated",
    "reject",
    "shown",
    "validation_reason",
]

MAX_ANSWER_CHARS = 20_000  # a longer answer is not an answer: it is refused before parsing
REJECTED = "answer"  # the pydantic error type of `reject`: its message is the reason as written
_OBJECT_START = re.compile(r"\{\s*[\"}]")

Model = TypeVar("Model", bound=BaseModel)


class AnswerRejected(ValueError):
    """The model's answer is not valid; `reason` names the field and the value."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def shown(value: Any, width: int = 60) -> str:
    """A value as a reason quotes it: Decimals as written, others by repr, cut to `width`."""
    text = str(value) if isinstance(value, Decimal) else repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def reject(message: str) -> PydanticCustomError:
    """Raise this in a validator to make `message` the reason as written (a ValueError would
    get pydantic's "Value error, " prefixed and the field and value put before it)."""
    return PydanticCustomError(REJECTED, message)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"key {key!r} appears twice")
        result[key] = value
    return result


# Exact numbers (Decimal), no NaN/Infinity, no duplicate keys: an ambiguous answer is refused.
_DECODER = json.JSONDecoder(parse_float=Decimal, parse_constant=_reject_constant, object_pairs_hook=_unique_keys)


def extract_json_object(text: str) -> dict[str, Any]:
    """The first JSON object in `text` (see the module doc), parsed; AnswerRejected if none."""
    match = _OBJECT_START.search(text)
    if match is None:
        raise AnswerRejected("no JSON object in the answer")
    try:
        value, _ = _DECODER.raw_decode(text, match.start())
    except json.JSONDecodeError as error:
        raise AnswerRejected(f"invalid JSON: {error.msg} at character {error.pos}") from None
    except (ValueError, RecursionError) as error:
        raise AnswerRejected(f"invalid JSON: {error}") from None
    return value


def validation_reason(error: ValidationError) -> str:
    """The first problem of a validation error, as a reason naming the field and the value."""
    first = error.errors(include_url=False)[0]
    where = ".".join(str(part) for part in first.get("loc", ())) or "answer"
    kind = first.get("type")
    if kind == "missing":
        return f"missing field {where}"
    if kind == "extra_forbidden":
        return f"unexpected field {where}"
    if kind == REJECTED:
        return first["msg"]
    return f"{where} {shown(first.get('input'))}: {first['msg']}"


def parse_validated(text: str, schema: type[Model], context: dict[str, Any] | None = None) -> Model:
    """The model's text to a validated `schema` instance; AnswerRejected naming the problem
    otherwise. `context` is the validation context handed to the schema's validators."""
    if not isinstance(text, str) or not text.strip():
        raise AnswerRejected("the answer is empty")
    if len(text) > MAX_ANSWER_CHARS:
        raise AnswerRejected(f"the answer has {len(text)} characters, more than {MAX_ANSWER_CHARS}")
    obj = extract_json_object(text)
    if not isinstance(obj, dict):
        raise AnswerRejected("the answer is not a JSON object")
    try:
        return schema.model_validate(obj, context=context)
    except ValidationError as error:
        raise AnswerRejected(validation_reason(error)) from None
