"""Benchmark: decision latency, two BTC/USDT + ETH/USDT figures on the scene of
test_trading_e2e.py (history to 2024-09-06, a strong_bull prediction and Bull research
stats for BTC/USDT 5m, quality gates at 0).

(a) Under `dagster dev` (webserver + daemon, the project's dagster.yaml): from a
    signals/signals materialization (its event's timestamp) to its decision recorded
    (the trading/decisions materialization of the sensor's run, written after the rows are
    in trading.decisions). Median of 5; target 10 s or less. Split into: the sensor's pickup
    (event -> run created), the queue and launch (created -> run started), and the run
    (started -> decisions recorded: the run process starting, then the decide step).
(b) The decision job's own work: `execute_in_process` of decision_job for one signal event
    (decisions, orders, positions, portfolio), on the same files with the server stopped.
    Median of 5 after one warm-up; target 1 s or less.

The signals are materialized in this process against the server's instance (same
DAGSTER_HOME), one at a time: each waits until the previous decision run has finished, as
DuckDB has one writer. The first decision buys BTC/USDT; the later ones hold it.

    .venv/bin/python tracer_assets_tests/benchmarks/bench_decision.py
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the e2e test's helpers beside the tests

RUNS = 5
TARGET_DAEMON_SECONDS = 10.0
TARGET_IN_PROCESS_SECONDS = 1.0
QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}


def clean_environment() -> None:
    """Forget any Tracer/seed setting of the shell (as the tests' conftest does)."""
    from tracer_assets.settings import SETTINGS_TABLE

    for name, _, _ in SETTINGS_TABLE:
        os.environ.pop(name, None)
    for name in list(os.environ):
        if name.startswith("TRACER_"):
            del os.environ[name]


def materialize_signals(instance, signals_job) -> int:
    """One signals/signals materialization (with its history rows); its storage id."""
    from tracer_assets.signals.keys import HISTORY_KEY, SIGNALS_KEY

    result = signals_job.execute_in_process(
        instance=instance, run_config=QUIET, asset_selection=[SIGNALS_KEY, HISTORY_KEY]
    )
    assert result.success
    records = instance.fetch_materializations(SIGNALS_KEY, limit=1).records
    assert records[0].run_id == result.run_id
    return records[0].storage_id


def under_dagster_dev(scratch: Path, signals_job) -> list[dict]:
    import dagster as dg
    from test_trading_e2e import dagster_dev, wait_for_decision_run

    from tracer_assets.signals.keys import SIGNALS_KEY
    from tracer_assets.trading.keys import DECISIONS_KEY

    laps = []
    with dagster_dev(dict(os.environ), scratch) as server, dg.DagsterInstance.get() as instance:
        server.wait_ready()
        for _ in range(RUNS):
            storage_id = materialize_signals(instance, signals_job)
            run = wait_for_decision_run(instance, storage_id)
            signal_at = (
                instance.fetch_materializations(
                    dg.AssetRecordsFilter(asset_key=SIGNALS_KEY, storage_ids=[storage_id]), limit=1
                )
                .records[0]
                .timestamp
            )
            decided = [
                r for r in instance.fetch_materializations(DECISIONS_KEY, limit=RUNS).records if r.run_id == run.run_id
            ]
            record = instance.get_run_record_by_id(run.run_id)
            laps.append(
                {
                    "latency": decided[0].timestamp - signal_at,
                    "sensor_pickup": record.create_timestamp.timestamp() - signal_at,
                    "queue_and_launch": record.start_time - record.create_timestamp.timestamp(),
                    "run_to_decision": decided[0].timestamp - record.start_time,
                }
            )
            print(
                f"signal event {storage_id}: decision recorded {laps[-1]['latency']:.2f} s later "
                f"(sensor {laps[-1]['sensor_pickup']:.2f} s, queue+launch {laps[-1]['queue_and_launch']:.2f} s, "
                f"run start -> decision {laps[-1]['run_to_decision']:.2f} s)"
            )
    return laps


def in_process(defs, signals_job) -> tuple[list[float], list[float]]:
    import dagster as dg
    from run_figures import seconds_inside_steps

    from tracer_assets.definitions import DECISION_JOB
    from tracer_assets.trading.keys import SIGNAL_STORAGE_TAG

    job = defs.resolve_job_def(DECISION_JOB)
    walls, insides = [], []
    with dg.DagsterInstance.get() as instance:
        for _ in range(RUNS + 1):  # the first warms caches and is not counted
            storage_id = materialize_signals(instance, signals_job)
            began = time.perf_counter()
            result = job.execute_in_process(
                instance=instance, run_config=QUIET, tags={SIGNAL_STORAGE_TAG: str(storage_id)}
            )
            walls.append(time.perf_counter() - began)
            assert result.success
            insides.append(seconds_inside_steps(instance, result.run_id))
    return walls[1:], insides[1:]


def main() -> int:
    warnings.filterwarnings("ignore")
    clean_environment()
    from test_trading_e2e import prepare_dagster_home, scene_environment, set_the_scene

    from tracer_assets.definitions import build_definitions
    from tracer_assets.settings import load_settings
    from tracer_assets.signals.keys import HISTORY_KEY, SIGNALS_KEY

    with tempfile.TemporaryDirectory(prefix="tracer-bench-decision-") as scratch_dir:
        scratch = Path(scratch_dir)
        env = scene_environment(scratch, prepare_dagster_home(scratch / "dagster_home"))
        os.environ.update(env)
        set_the_scene(env)
        defs = build_definitions(load_settings())
        signals_job = defs.resolve_implicit_job_def_def_for_assets([SIGNALS_KEY, HISTORY_KEY])
        laps = under_dagster_dev(scratch, signals_job)
        walls, insides = in_process(defs, signals_job)

    def median(name: str) -> float:
        return statistics.median(lap[name] for lap in laps)

    latency, wall, inside = median("latency"), statistics.median(walls), statistics.median(insides)
    print(
        f"(a) under dagster dev: signal -> decision recorded {latency:.2f} s (median of {RUNS}; "
        f"sensor pickup {median('sensor_pickup'):.2f} s, queue+launch {median('queue_and_launch'):.2f} s, "
        f"run start -> decision {median('run_to_decision'):.2f} s), target <= {TARGET_DAEMON_SECONDS:g} s"
    )
    print(
        f"(b) decision_job in-process: {wall:.2f} s whole, {inside:.2f} s inside the steps (median of {RUNS}), "
        f"target <= {TARGET_IN_PROCESS_SECONDS:g} s"
    )
    print(
        json.dumps(
            {
                "benchmark": "decision_latency",
                "symbols": 2,
                "runs": RUNS,
                "daemon_signal_to_decision_seconds": round(latency, 3),
                "daemon_sensor_pickup_seconds": round(median("sensor_pickup"), 3),
                "daemon_queue_and_launch_seconds": round(median("queue_and_launch"), 3),
                "daemon_run_start_to_decision_seconds": round(median("run_to_decision"), 3),
                "daemon_latencies_seconds": [round(lap["latency"], 3) for lap in laps],
                "in_process_decision_job_seconds": round(wall, 3),
                "in_process_steps_seconds": round(inside, 3),
                "target_daemon_seconds": TARGET_DAEMON_SECONDS,
                "target_in_process_seconds": TARGET_IN_PROCESS_SECONDS,
                "daemon_within_target": latency <= TARGET_DAEMON_SECONDS,
                "in_process_within_target": wall <= TARGET_IN_PROCESS_SECONDS,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
