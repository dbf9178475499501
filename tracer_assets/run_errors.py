"""What a failed run says, as its user wrote it, in one line: for health.py, and for whoever else
reports failures (the failure notification, the daily report's step statuses).

Dagster wraps an exception raised by an asset in its own error ("Error occurred while executing
op ...": DagsterExecutionStepExecutionError and the other DagsterUserCodeExecutionError classes),
with the user's exception as its cause. The user's error is the first one in the chain that is
not such a wrapper: a `dg.Failure` raised `from` another exception is the user's message, its
cause only the detail. A run can also fail with no step failing (killed, marked failed by run
monitoring or `tracer pool --free`): then its RUN_FAILURE event's message is all there is.
"""

from __future__ import annotations

import dagster as dg
from dagster._core.errors import DagsterUserCodeExecutionError
from dagster._core.events import DagsterEventType
from dagster._utils.error import SerializableErrorInfo

MAX_LINE_CHARS = 500


def _subclasses(cls: type) -> set[type]:
    found = set(cls.__subclasses__())
    for sub in list(found):
        found |= _subclasses(sub)
    return found


def dagster_wrappers() -> set[str]:
    """The class names of the errors Dagster wraps user code's exceptions in."""
    return {cls.__name__ for cls in {DagsterUserCodeExecutionError, *_subclasses(DagsterUserCodeExecutionError)}}


def user_error(error: SerializableErrorInfo | None) -> SerializableErrorInfo | None:
    """The error the user's code raised: Dagster's wrappers around it taken off."""
    wrappers = dagster_wrappers()
    while error is not None and error.cause is not None and error.cls_name in wrappers:
        error = error.cause
    return error


def first_line(text: str | None, limit: int = MAX_LINE_CHARS, empty: str = "failed") -> str:
    """The first line of `text`, cut to `limit` characters; a first line that ends with ":" (it
    announces what follows, e.g. "candles rejected, nothing was written:") takes the next one
    with it. `empty` when there is no text."""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    if not lines:
        return empty
    line, rest = lines[0], lines[1:]
    while line.endswith(":") and rest:
        line, rest = f"{line} {rest[0]}", rest[1:]
    return line[:limit]


def error_line(error: SerializableErrorInfo | None) -> str:
    """The first line of the user's error, its class without the module ("CandleValidationError:
    candles rejected, ..."), or "failed" when there is none."""
    error = user_error(error)
    if error is None:
        return "failed"
    message = error.message or ""
    prefix, separator, rest = message.partition(": ")
    if separator and (prefix == error.cls_name or prefix.endswith(f".{error.cls_name}")):
        message = f"{error.cls_name}: {rest}"
    return first_line(message)


def step_failures(instance: dg.DagsterInstance, run_id: str) -> list[tuple[str, str]]:
    """(step key, one line of the user's error) of each failed step of the run, in the order
    they failed."""
    failures = []
    for record in instance.all_logs(run_id, of_type=DagsterEventType.STEP_FAILURE):
        event = record.dagster_event
        failures.append((event.step_key or "?", error_line(event.step_failure_data.error)))
    return failures


def run_failure_message(instance: dg.DagsterInstance, run_id: str) -> str | None:
    """The first line of the run's failure message ("Execution of run for ... failed. ..."), if it failed."""
    records = instance.all_logs(run_id, of_type=DagsterEventType.RUN_FAILURE)
    if not records:
        return None
    event = records[-1].dagster_event
    return first_line(event.message if event else None)


def run_failure_reason(instance: dg.DagsterInstance, run_id: str) -> str:
    """Why the run failed, in one line: its first failed step and that step's error (and how many
    more failed), else the run's own failure message."""
    steps = step_failures(instance, run_id)
    if steps:
        step, error = steps[0]
        more = f" (and {len(steps) - 1} more failed steps)" if len(steps) > 1 else ""
        return f"step {step}: {error}{more}"
    return run_failure_message(instance, run_id) or "failed (no failure event recorded)"
