"""A run killed while it held the duckdb pool's slot, with no daemon to free it: the next run
says which run holds the slot and the command that frees it, `tracer pool` says the same, and
after `tracer pool --free RUN_ID` the waiting run goes on and succeeds."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import dagster as dg
import pytest

from tracer_assets.pool import holders

HOLD_AND_HANG = """
import time
import dagster as dg
from tracer_assets.definitions import MARKET_DATA_JOB, build_definitions
from tracer_assets.resources import warehouse
from tracer_assets.settings import load_settings

def hang(self):  # inside the writing step, holding the pool's slot
    print("holding", flush=True)
    time.sleep(3600)

warehouse.TracerDuckDB.get_connection = hang
with dg.DagsterInstance.get() as instance:
    build_definitions(load_settings()).resolve_job_def(MARKET_DATA_JOB).execute_in_process(
        instance=instance, partition_key="2024-09-01")
"""


def tracer(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tracer_assets.cli", *args], capture_output=True, text=True, timeout=120
    )


@pytest.mark.slow
def test_a_dead_runs_slot_is_named_with_the_command_that_frees_it(tracer_env):
    holder = subprocess.Popen([sys.executable, "-c", HOLD_AND_HANG], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with dg.DagsterInstance.get() as instance:
        [dead] = holders(instance)
    assert dead.status == "STARTED" and dead.process_alive is False and dead.looks_dead

    report = tracer("pool")
    assert report.returncode == 1, report.stdout + report.stderr
    assert dead.run_id in report.stdout and f"tracer pool --free {dead.run_id}" in report.stdout

    # The next writer, with no daemon: it waits for the slot, and its log says why and what to do.
    waiting = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dagster",
            "asset",
            "materialize",
            "-m",
            "tracer_assets.definitions",
            "--select",
            "market/candles",
            "--partition",
            "2024-09-02",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=os.environ.copy(),
    )
    try:
        hint = None
        deadline = time.monotonic() + 120
        while hint is None and time.monotonic() < deadline and waiting.poll() is None:
            time.sleep(0.5)
            with dg.DagsterInstance.get() as instance:
                for record in instance.get_run_records(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])):
                    if record.dagster_run.run_id == dead.run_id:
                        continue
                    for entry in instance.all_logs(record.dagster_run.run_id):
                        if "will wait for the duckdb pool" in (entry.user_message or ""):
                            hint = entry.user_message
        assert hint is not None, "the waiting run never said which run holds the slot"
        assert dead.run_id in hint and f"tracer pool --free {dead.run_id}" in hint
        assert waiting.poll() is None  # still waiting for the slot

        freed = tracer("pool", "--free", dead.run_id)
        assert freed.returncode == 0, freed.stderr
        assert "marked failed" in freed.stdout and "slot freed" in freed.stdout
        output, _ = waiting.communicate(timeout=180)
    finally:
        if waiting.poll() is None:
            waiting.kill()
    assert waiting.returncode == 0, output[-3000:]
    with dg.DagsterInstance.get() as instance:
        assert holders(instance) == []
        assert instance.get_run_by_id(dead.run_id).status == dg.DagsterRunStatus.FAILURE
    assert tracer("pool").stdout.strip() == "the duckdb pool's slot is free"


def test_free_refuses_a_run_that_does_not_exist(tracer_env):
    refused = tracer("pool", "--free", "no-such-run")
    assert refused.returncode == 1 and "no run no-such-run" in refused.stderr
