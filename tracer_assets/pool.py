"""Who holds the `duckdb` pool's slot, and freeing the slot of a run that died.

DuckDB has one writer, so every writing step waits for the pool's one slot. A run killed while
it held the slot (SIGKILL, OOM, a closed laptop) keeps it: under `make dev` the daemon's run
monitoring marks the run failed and frees the slot, but with no daemon (`dagster asset
materialize`, the demo, cron) every later writer waits forever on "Step blocked by limit for
pool duckdb". `holders` says which run holds it and whether its process still lives;
`free_slot` is what `tracer pool --free RUN_ID` does.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import dagster as dg
from dagster._core.events import DagsterEventType

from tracer_assets.policies import DUCKDB_POOL

FREE_COMMAND = "tracer pool --free {run_id}"


@dataclass(frozen=True)
class SlotHolder:
    run_id: str
    step_key: str
    job_name: str | None
    status: str  # the run's Dagster status, or "unknown" when the run is gone
    pid: int | None  # the run's process, as its "Executing steps in process" event recorded it
    process_alive: bool | None  # on this machine; None when the pid is unknown

    @property
    def looks_dead(self) -> bool:
        """The run ended (its slot leaked) or its process is gone from this machine."""
        finished = self.status not in ("STARTED", "STARTING", "QUEUED", "NOT_STARTED", "CANCELING")
        return finished or self.process_alive is False

    def describe(self) -> str:
        process = "pid unknown" if self.pid is None else f"pid {self.pid} {'alive' if self.process_alive else 'gone'}"
        state = "it looks dead" if self.looks_dead else "it looks alive: wait for it"
        return (
            f"run {self.run_id} ({self.job_name or 'unknown job'}, step {self.step_key}) holds the "
            f"{DUCKDB_POOL} pool's slot: status {self.status}, {process}; {state}"
        )


def holders(instance: dg.DagsterInstance, pool: str = DUCKDB_POOL) -> list[SlotHolder]:
    info = instance.event_log_storage.get_concurrency_info(pool)
    found = []
    for slot in info.claimed_slots:
        run = instance.get_run_by_id(slot.run_id)
        pid = _run_pid(instance, slot.run_id)
        found.append(
            SlotHolder(
                run_id=slot.run_id,
                step_key=slot.step_key,
                job_name=run.job_name if run else None,
                status=run.status.value if run else "unknown",
                pid=pid,
                process_alive=None if pid is None else _alive(pid),
            )
        )
    return found


def free_slot(instance: dg.DagsterInstance, run_id: str, force: bool = False) -> str:
    """Mark a dead run failed and free its pool slots; refuses a run whose process still lives
    on this machine unless `force`. Returns what was done."""
    run = instance.get_run_by_id(run_id)
    held = [h for h in holders(instance) if h.run_id == run_id]
    if not held and run is None:
        raise ValueError(f"no run {run_id} in this instance ({instance.root_directory}), and it holds no slot")
    if held and held[0].process_alive and not force:
        raise ValueError(
            f"{held[0].describe()}; its process is alive, so its slot is not freed (--force to free it anyway)"
        )
    done = []
    if run is not None and not run.is_finished:
        instance.report_run_failed(
            run, message="marked failed by `tracer pool --free`: its process died holding the duckdb slot"
        )
        done.append(f"run {run_id} marked failed")
    instance.event_log_storage.free_concurrency_slots_for_run(run_id)
    done.append(f"its {DUCKDB_POOL} slot freed" if held else "it held no slot")
    return "; ".join(done)


def blocked_hint(instance: dg.DagsterInstance, run_id: str) -> str | None:
    """For a run about to wait for the slot: which dead run holds it and the command that frees it."""
    dead = [h for h in holders(instance) if h.run_id != run_id and h.looks_dead]
    if not dead:
        return None
    return "; ".join(f"{h.describe()}. Free it with: {FREE_COMMAND.format(run_id=h.run_id)}" for h in dead)


def _run_pid(instance: dg.DagsterInstance, run_id: str) -> int | None:
    records = instance.get_records_for_run(run_id, of_type=DagsterEventType.ENGINE_EVENT, limit=50).records
    for record in records:
        metadata = getattr(record.event_log_entry.dagster_event.event_specific_data, "metadata", None) or {}
        pid = metadata.get("pid")
        if pid is not None:
            return int(pid.value)
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True
