"""A failed run reaches the configured webhooks: run_failure_notifier, evaluated on a real failed
run of a real instance, posts the job, the run, the failed step and its error to a local
Discord-compatible server."""

import dagster as dg
from test_audit_and_notify import FakeChatServer

from tracer_assets.failures import failure_notification, run_failure_notifier
from tracer_assets.resources.notifier import NotifierResource


@dg.asset(key=dg.AssetKey(["market", "broken"]))
def broken():
    raise ValueError("market.candles: BTC/USDT 2024-09-06T04:40Z: rule non_finite\nsecond line")


def test_a_failed_run_is_notified_with_its_step_and_error():
    with FakeChatServer() as chat, dg.DagsterInstance.ephemeral() as instance:
        result = dg.materialize([broken], instance=instance, raise_on_error=False)
        assert not result.success
        notifier = NotifierResource(discord_webhook_url=chat.discord_url)
        context = dg.build_run_status_sensor_context(
            sensor_name="run_failure_notifier",
            dagster_event=result.get_run_failure_event(),
            dagster_instance=instance,
            dagster_run=result.dagster_run,
            resources={"notifier": notifier},
        ).for_run_failure()
        run_failure_notifier(context)
        [request] = chat.requests
    content = request["body"]["content"]
    assert content.splitlines()[0] == f"[ERROR] Tracer: {result.dagster_run.job_name} failed"
    assert f"run {result.run_id}" in content
    assert "step market__broken: ValueError: market.candles: BTC/USDT 2024-09-06T04:40Z: rule non_finite" in content
    assert "second line" not in content


def test_the_message_names_at_most_five_steps_and_the_run_error_when_no_step_failed():
    steps = [(f"step_{n}", f"error {n}") for n in range(7)]
    text = failure_notification("research_job", "r1", steps, "").text
    assert "step step_4: error 4" in text and "step_5" not in text and "... and 2 more failed steps" in text
    assert failure_notification("trading_tick_job", "r2", [], "run canceled").text == "run r2\nrun canceled"
