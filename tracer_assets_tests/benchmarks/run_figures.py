"""Figures the benchmarks read off a finished Dagster run (imported by the bench_*.py scripts,
which run with this folder on sys.path)."""

from __future__ import annotations

import dagster as dg


def seconds_inside_steps(instance: dg.DagsterInstance, run_id: str) -> float:
    """The run's steps' own durations, summed: our code, without the run's set-up and bookkeeping."""
    return (
        sum(
            record.dagster_event.event_specific_data.duration_ms
            for record in instance.all_logs(run_id)
            if record.dagster_event and record.dagster_event.event_type == dg.DagsterEventType.STEP_SUCCESS
        )
        / 1000
    )
