"""signal_sensor: one decision run per signals/signals materialization, evaluated the way the
daemon evaluates it (`evaluate_tick` on a sensor context over a real instance).

Materializations are reported as runless asset events: the sensor reads only the event log,
so this is what a tick's materialization looks like to it, without running the tick.
"""

from __future__ import annotations

import dagster as dg
import pytest

from tracer_assets.definitions import DECISION_JOB, build_definitions
from tracer_assets.settings import load_settings
from tracer_assets.signals.keys import HISTORY_KEY, SIGNALS_KEY
from tracer_assets.trading.keys import SIGNAL_STORAGE_TAG
from tracer_assets.trading.sensors import MAX_EVENTS_PER_TICK


@pytest.fixture
def defs(tracer_env) -> dg.Definitions:
    return build_definitions(load_settings())


@pytest.fixture
def instance(tracer_env):
    with dg.DagsterInstance.get() as instance:
        yield instance


def materialize_signals(instance: dg.DagsterInstance, times: int = 1) -> list[int]:
    """Report `times` signals/signals materializations; their storage ids, oldest first."""
    for _ in range(times):
        instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=SIGNALS_KEY))
    records = instance.fetch_materializations(SIGNALS_KEY, limit=times).records  # newest first
    return sorted(r.storage_id for r in records)


def evaluate(defs: dg.Definitions, instance: dg.DagsterInstance, cursor: str | None):
    """One sensor tick on a fresh context: what the daemon does after a restart, from the stored cursor."""
    sensor = defs.resolve_sensor_def("signal_sensor")
    context = dg.build_sensor_context(instance=instance, repository_def=defs.get_repository_def(), cursor=cursor)
    return sensor.evaluate_tick(context)


def test_the_sensor_is_declared_as_the_daemon_needs_it(defs):
    sensor = defs.resolve_sensor_def("signal_sensor")
    assert sensor.minimum_interval_seconds < 5  # evaluated on every loop of the sensor daemon (5 s)
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert sensor.job_name == DECISION_JOB
    job = defs.resolve_job_def(DECISION_JOB)
    assert {key.to_user_string() for key in job.asset_layer.executable_asset_keys} == {
        "trading/decisions",
        "trading/orders",
        "trading/positions",
        "trading/portfolio",
    }


def test_nothing_materialized_yet_means_no_run_and_no_cursor(defs, instance):
    instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=HISTORY_KEY))  # not the signals
    tick = evaluate(defs, instance, cursor=None)
    assert tick.run_requests == []
    assert "no new signals/signals materialization" in tick.skip_message
    assert tick.cursor is None


def test_first_start_answers_only_the_newest_materialization(defs, instance):
    older, newest = materialize_signals(instance, times=2)
    tick = evaluate(defs, instance, cursor=None)
    assert [r.run_key for r in tick.run_requests] == [f"signals:{newest}"]
    assert tick.run_requests[0].tags[SIGNAL_STORAGE_TAG] == str(newest)
    assert tick.cursor == str(newest)
    assert f"signals:{older}" not in {r.run_key for r in tick.run_requests}


def test_one_run_per_materialization_and_none_repeated_after_a_restart(defs, instance):
    (first,) = materialize_signals(instance)
    cursor = evaluate(defs, instance, cursor=None).cursor
    assert cursor == str(first)

    # Three materializations within one sensor interval: three runs, not one.
    new_ids = materialize_signals(instance, times=3)
    assert min(new_ids) > first
    tick = evaluate(defs, instance, cursor=cursor)
    assert [r.run_key for r in tick.run_requests] == [f"signals:{i}" for i in new_ids]
    assert [r.tags[SIGNAL_STORAGE_TAG] for r in tick.run_requests] == [str(i) for i in new_ids]
    assert len({r.run_key for r in tick.run_requests}) == 3
    assert tick.cursor == str(new_ids[-1])

    # A restart: a new context from the stored cursor asks for nothing again.
    again = evaluate(defs, instance, cursor=tick.cursor)
    assert again.run_requests == []
    assert again.skip_message
    # ... and the next materialization after the restart is answered, once.
    (later,) = materialize_signals(instance)
    after = evaluate(defs, instance, cursor=again.cursor or tick.cursor)
    assert [r.run_key for r in after.run_requests] == [f"signals:{later}"]


def test_a_backlog_larger_than_one_tick_is_answered_over_several_ticks_without_a_gap(defs, instance):
    (first,) = materialize_signals(instance)
    backlog = materialize_signals(instance, times=MAX_EVENTS_PER_TICK + 2)
    ticks, cursor = [], str(first)
    while True:
        tick = evaluate(defs, instance, cursor=cursor)
        if not tick.run_requests:
            break
        ticks.append([int(r.tags[SIGNAL_STORAGE_TAG]) for r in tick.run_requests])
        cursor = tick.cursor
    assert [len(t) for t in ticks] == [MAX_EVENTS_PER_TICK, 2]
    assert [i for t in ticks for i in t] == backlog
    assert cursor == str(backlog[-1])
