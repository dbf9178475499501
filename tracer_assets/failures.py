"""run_failure_notifier: a failed run of any Tracer job reaches the configured webhooks (Discord,
Telegram) with the job, the run, each failed step and its error. Delivery never raises (notify.py)."""

from __future__ import annotations

from collections.abc import Sequence

import dagster as dg

from tracer_assets.notify import Notification
from tracer_assets.resources.notifier import NotifierResource
from tracer_assets.run_errors import error_line

MAX_STEPS_SHOWN = 5


def failure_notification(job: str, run_id: str, steps: Sequence[tuple[str, str]], run_message: str) -> Notification:
    """The message: the job and run, then each failed step and the first line of its error."""
    lines = [f"run {run_id}"]
    lines += [
        f"step {step}: {error.strip().splitlines()[0] if error.strip() else 'failed'}"
        for step, error in steps[:MAX_STEPS_SHOWN]
    ]
    if len(steps) > MAX_STEPS_SHOWN:
        lines.append(f"... and {len(steps) - MAX_STEPS_SHOWN} more failed steps")
    if not steps:
        lines.append(run_message)
    return Notification(f"Tracer: {job} failed", "\n".join(lines), "error")


@dg.run_failure_sensor(
    name="run_failure_notifier",
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Every failed run: its job, run id, failed steps and their errors, to the configured webhooks.",
)
def run_failure_notifier(context: dg.RunFailureSensorContext, notifier: NotifierResource):
    steps = [
        (event.step_key or "?", error_line(event.step_failure_data.error))
        for event in context.get_step_failure_events()
    ]
    run = context.dagster_run
    message = failure_notification(run.job_name, run.run_id, steps, context.failure_event.message or "")
    for result in notifier.notifier().notify(message):
        if not result.ok:
            context.log.warning(f"failure notification not delivered: {result.error}")
