"""`tracer health`: is Tracer healthy, and if not, why. For cron and container orchestrators, as
the seeds' watchdog and health-check scripts were. No Dagster assets here: `check_health` takes
an instance, an asset graph, the DuckDB file and `now`, and returns a `HealthReport`.

Unhealthy, each with a reason naming what is wrong:
- an asset with a freshness policy that never materialized, or whose newest materialization is
  as old as its fail window or older (the materialization's time, as Dagster's freshness
  evaluation measures it in 1.13; not the time of the data in it: the replay's 2024 candles
  materialized a minute ago are fresh, and the candles' own `last_candle_not_stale` check is
  what judges their time);
- the newest finished run of `trading_tick_job` or `decision_job` failed (its run id, failed
  step and the first line of the user's error);
- an asset check whose newest execution failed at ERROR severity (a WARN failure is a note);
- a daemon that ran on this instance and stopped (no heartbeat within Dagster's tolerance) or
  reports errors; a daemon that never ran is "not running", unhealthy only when
  `require_daemon` (`make demo` and cron runs need none).
Open positions (trading.positions, closed_at NULL, per mode) are reported, never judged.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import dagster as dg
import duckdb
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus
from dagster._daemon.controller import (
    DEFAULT_DAEMON_HEARTBEAT_TOLERANCE_SECONDS,
    DEFAULT_HEARTBEAT_INTERVAL_SECONDS,
    get_daemon_statuses,
)

from tracer_assets.notify import DeliveryResult, Notification, Notifier
from tracer_assets.run_errors import first_line, run_failure_reason
from tracer_assets.schedules import TICK_JOB
from tracer_assets.tables import table_exists
from tracer_assets.trading.keys import POSITIONS_TABLE
from tracer_assets.trading.sensors import DECISION_JOB

WATCHED_JOBS = (TICK_JOB, DECISION_JOB)
FINISHED = (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)
# A writer holds DuckDB's file lock for one short transaction at a time: wait that long at most.
LOCK_ATTEMPTS, LOCK_WAIT_SECONDS = 6, 0.5
MAX_REASONS_NOTIFIED = 20


@dataclass(frozen=True)
class AssetHealth:
    asset: str
    last_materialized: datetime | None
    fail_window: timedelta | None  # None: no time-window freshness policy
    state: str  # "fresh", "stale", "no policy", "unchecked" (a policy of another kind)


@dataclass(frozen=True)
class RunHealth:
    job: str
    run_id: str | None
    status: str  # the newest run's Dagster status, or "never run"
    partition: str | None
    started: datetime | None
    ended: datetime | None
    error: str | None  # for a failed run: its failed step and the first line of the user's error
    # The newest finished run when the newest run is still going (it decides the health).
    last_finished_run_id: str | None = None
    last_finished_status: str | None = None


@dataclass(frozen=True)
class DaemonHealth:
    daemon: str  # Dagster's daemon type: SENSOR, SCHEDULER, QUEUED_RUN_COORDINATOR, ...
    last_heartbeat: datetime | None
    running: bool
    error: str | None


@dataclass(frozen=True)
class CheckHealth:
    check: str  # "market/candles:sane_ohlc"
    # "passed", "failed", "warned" (failed at WARN severity), "in progress", "not evaluated" (its run
    # ended before it), "never executed"
    state: str
    run_id: str | None
    description: str | None


@dataclass(frozen=True)
class PositionHealth:
    mode: str
    symbol: str
    amount: Decimal | None
    entry_price: Decimal | None
    opened_at: datetime | None
    position_id: str | None


@dataclass(frozen=True)
class HealthReport:
    checked_at: datetime
    healthy: bool
    reasons: tuple[str, ...]  # why it is unhealthy, one line each
    notes: tuple[str, ...]  # worth knowing, not unhealthy
    assets: tuple[AssetHealth, ...]
    runs: tuple[RunHealth, ...]
    daemon: str  # "running", "not running" (never ran here), "stopped", "errors"
    daemons: tuple[DaemonHealth, ...]
    checks: tuple[CheckHealth, ...]
    positions: tuple[PositionHealth, ...]
    positions_state: str  # "read", "none yet: ...", "unknown: ..."
    database: str = ""
    dagster_home: str = ""

    def to_json(self) -> dict:
        """Plain JSON types: times as ISO 8601 UTC, windows in seconds, decimals as text."""
        return _plain(asdict(self))


def check_health(
    instance: dg.DagsterInstance,
    asset_graph,
    duckdb_path: str | Path,
    now: datetime,
    require_daemon: bool = False,
) -> HealthReport:
    """Everything `tracer health` reports, judged at `now` (timezone-aware)."""
    reasons: list[str] = []
    notes: list[str] = []
    assets = asset_freshness(instance, asset_graph, now)
    for row in assets:
        if row.state == "stale":
            reasons.append(_stale_reason(row, now))
    runs = last_runs(instance)
    for run in runs:
        decided_by = run.last_finished_status or run.status
        if decided_by == dg.DagsterRunStatus.FAILURE.value:
            run_id = run.last_finished_run_id or run.run_id
            reasons.append(f"{run.job}: the last run {run_id} failed: {run.error}")
    daemon, daemons, daemon_problems = daemon_health(instance, now)
    if daemon == "not running":
        text = f"daemon: not running (no daemon has ever run on this instance, {instance.root_directory})"
        (reasons if require_daemon else notes).append(text)
    else:
        reasons.extend(daemon_problems)
    checks = asset_checks(instance, asset_graph)
    for row in checks:
        detail = f" in run {row.run_id}" + (f": {row.description}" if row.description else "")
        if row.state == "failed":
            reasons.append(f"asset check {row.check} failed{detail}")
        elif row.state == "warned":
            notes.append(f"asset check {row.check} warns{detail}")
    positions, positions_state = open_positions(duckdb_path)
    if positions_state.startswith("unknown"):
        notes.append(f"open positions {positions_state}")
    return HealthReport(
        checked_at=now,
        healthy=not reasons,
        reasons=tuple(reasons),
        notes=tuple(notes),
        assets=tuple(assets),
        runs=tuple(runs),
        daemon=daemon,
        daemons=tuple(daemons),
        checks=tuple(checks),
        positions=tuple(positions),
        positions_state=positions_state,
        database=str(duckdb_path),
        dagster_home=str(instance.root_directory),
    )


# --- the parts ---------------------------------------------------------------------------------


def asset_freshness(instance: dg.DagsterInstance, asset_graph, now: datetime) -> list[AssetHealth]:
    """Every asset: its newest materialization and, under a time-window freshness policy, whether
    it is fresh. Dagster 1.13 measures the policy from the materialization's timestamp and calls
    an asset never materialized UNKNOWN; here it is stale (nothing was ever delivered)."""
    rows = []
    for key in sorted(asset_graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = asset_graph.get(key)
        policy = node.freshness_policy_or_from_metadata
        event = instance.get_latest_materialization_event(key)
        last = datetime.fromtimestamp(event.timestamp, tz=UTC) if event else None
        window = getattr(policy, "fail_window", None)
        if policy is None:
            state, fail_window = "no policy", None
        elif window is None:
            state, fail_window = "unchecked", None
        else:
            fail_window = window.to_timedelta()
            state = "stale" if last is None or now - last >= fail_window else "fresh"
        rows.append(AssetHealth(key.to_user_string(), last, fail_window, state))
    return rows


def last_runs(instance: dg.DagsterInstance, jobs=WATCHED_JOBS) -> list[RunHealth]:
    """The newest run of each job; when it is still going, the newest finished one too."""
    rows = []
    for job in jobs:
        newest = instance.get_run_records(dg.RunsFilter(job_name=job), limit=1)
        if not newest:
            rows.append(RunHealth(job, None, "never run", None, None, None, None))
            continue
        record = newest[0]
        run, earlier = record.dagster_run, None
        if run.status not in FINISHED:
            done = instance.get_run_records(dg.RunsFilter(job_name=job, statuses=list(FINISHED)), limit=1)
            earlier = done[0].dagster_run if done else None
        finished = run if run.status in FINISHED else earlier
        failed = finished is not None and finished.status == dg.DagsterRunStatus.FAILURE
        rows.append(
            RunHealth(
                job=job,
                run_id=run.run_id,
                status=run.status.value,
                partition=_partition(run),
                started=_time(record.start_time),
                ended=_time(record.end_time),
                error=run_failure_reason(instance, finished.run_id) if failed else None,
                last_finished_run_id=earlier.run_id if earlier else None,
                last_finished_status=earlier.status.value if earlier else None,
            )
        )
    return rows


def daemon_health(instance: dg.DagsterInstance, now: datetime) -> tuple[str, list[DaemonHealth], list[str]]:
    """("running" | "not running" | "stopped" | "errors", each required daemon, the problems).
    "not running": no daemon ever sent a heartbeat to this instance. "stopped": one did, and a
    required daemon has been silent past Dagster's own tolerance (30 min after its 30 s beat)."""
    heartbeats = instance.get_daemon_heartbeats()
    required = instance.get_required_daemon_types()
    if not heartbeats:
        return "not running", [DaemonHealth(d, None, False, None) for d in required], []
    statuses = get_daemon_statuses(
        instance,
        daemon_types=required,
        curr_time_seconds=now.timestamp(),
        ignore_errors=True,
        heartbeat_interval_seconds=DEFAULT_HEARTBEAT_INTERVAL_SECONDS,
        heartbeat_tolerance_seconds=DEFAULT_DAEMON_HEARTBEAT_TOLERANCE_SECONDS,
    )
    rows, problems = [], []
    for daemon in required:
        status = statuses[daemon]
        beat = status.last_heartbeat
        errors = list(beat.errors or []) if beat else []
        error = first_line(errors[0].message) if errors else None
        last = _time(beat.timestamp) if beat else None
        rows.append(DaemonHealth(daemon, last, bool(status.healthy), error))
        if not status.healthy:
            when = f"its last heartbeat {_when(last, now)}" if last else "it never sent a heartbeat"
            problems.append(f"daemon {daemon} stopped: {when}")
        elif error:
            problems.append(f"daemon {daemon} reports an error: {error}")
    state = "stopped" if any(not r.running for r in rows) else "errors" if problems else "running"
    return state, rows, problems


def asset_checks(instance: dg.DagsterInstance, asset_graph) -> list[CheckHealth]:
    """Every asset check and its newest execution; a failure at WARN severity is "warned"."""
    keys = sorted(asset_graph.asset_check_keys, key=lambda k: k.to_user_string())
    latest = instance.event_log_storage.get_latest_asset_check_execution_by_key(keys)
    rows = []
    for key in keys:
        record = latest.get(key)
        if record is None:
            rows.append(CheckHealth(key.to_user_string(), "never executed", None, None))
            continue
        evaluation = record.evaluation if record.status != AssetCheckExecutionRecordStatus.PLANNED else None
        description = (first_line(evaluation.description, empty="") or None) if evaluation else None
        if record.status == AssetCheckExecutionRecordStatus.SUCCEEDED:
            state = "passed"
        elif record.status == AssetCheckExecutionRecordStatus.FAILED:
            warn = evaluation is not None and evaluation.severity == dg.AssetCheckSeverity.WARN
            state = "warned" if warn else "failed"
        else:  # planned: its run is still going, or ended before the check ran
            run = instance.get_run_by_id(record.run_id)
            state = "not evaluated" if run is None or run.is_finished else "in progress"
        rows.append(CheckHealth(key.to_user_string(), state, record.run_id, description))
    return rows


def open_positions(duckdb_path: str | Path) -> tuple[list[PositionHealth], str]:
    """The open positions of every mode, read-only; ([], "none yet: ...") before the first one
    could exist, ([], "unknown: ...") when the file cannot be read (a writer holding its lock)."""
    path = Path(duckdb_path)
    if not path.exists():
        return [], f"none yet: no DuckDB file at {path}"
    try:
        connection = _connect_read_only(path)
    except duckdb.Error as error:
        return [], f"unknown: {path} could not be read: {first_line(str(error))}"
    try:
        connection.execute("SET TimeZone = 'UTC'")
        if not table_exists(connection, POSITIONS_TABLE):
            return [], f"none yet: no {POSITIONS_TABLE} table"
        rows = connection.execute(
            f"SELECT mode, symbol, amount, entry_price, opened_at, position_id FROM {POSITIONS_TABLE} "
            "WHERE closed_at IS NULL ORDER BY mode, opened_at, symbol"
        ).fetchall()
    except duckdb.Error as error:
        return [], f"unknown: {POSITIONS_TABLE} could not be read: {first_line(str(error))}"
    finally:
        connection.close()
    return [PositionHealth(*row) for row in rows], "read"


# --- notifying -----------------------------------------------------------------------------------


def health_notification(report: HealthReport) -> Notification:
    """The unhealthy reasons (stale assets, failed runs, failed checks, the daemon), one a line."""
    reasons = list(report.reasons[:MAX_REASONS_NOTIFIED])
    if len(report.reasons) > MAX_REASONS_NOTIFIED:
        reasons.append(f"... and {len(report.reasons) - MAX_REASONS_NOTIFIED} more")
    count = len(report.reasons)
    title = f"Tracer unhealthy: {count} problem{'s' if count != 1 else ''}"
    return Notification(title, "\n".join(reasons), "error")


def notify_unhealthy(report: HealthReport, notifier: Notifier) -> list[DeliveryResult]:
    """Send the reasons to every configured webhook when the report is unhealthy; never raises
    (Notifier.notify does not), [] when healthy or nothing is configured."""
    if report.healthy:
        return []
    return notifier.notify(health_notification(report))


# --- the table -----------------------------------------------------------------------------------


def render_text(report: HealthReport) -> str:
    """The report as a person reads it: the verdict and its reasons first, then each part."""
    now = report.checked_at
    count = len(report.reasons)
    verdict = "HEALTHY" if report.healthy else f"UNHEALTHY ({count} reason{'s' if count != 1 else ''})"
    lines = [f"tracer health at {_stamp(now)} UTC: {verdict}"]
    lines += [f"  - {reason}" for reason in report.reasons]
    lines += [f"  note: {note}" for note in report.notes]

    lines += ["", f"{'asset':<28}{'last materialized (UTC)':<26}{'age':<10}{'fail window':<13}state"]
    for row in report.assets:
        age = _age((now - row.last_materialized).total_seconds()) if row.last_materialized else "-"
        window = _age(row.fail_window.total_seconds()) if row.fail_window else "-"
        stamp = _stamp(row.last_materialized) if row.last_materialized else "never"
        state = row.state.upper() if row.state == "stale" else row.state
        lines.append(f"{row.asset:<28}{stamp:<26}{age:<10}{window:<13}{state}")

    lines += ["", f"{'job':<20}{'status':<12}{'partition':<24}{'ended (UTC)':<22}run"]
    for run in report.runs:
        ended = _stamp(run.ended) if run.ended else "-"
        lines.append(f"{run.job:<20}{run.status:<12}{run.partition or '-':<24}{ended:<22}{run.run_id or '-'}")
        if run.last_finished_run_id:
            lines.append(f"{'':<20}last finished: {run.last_finished_status} {run.last_finished_run_id}")
        if run.error:
            lines.append(f"{'':<20}error: {run.error}")

    lines += ["", f"daemon: {report.daemon}"]
    for row in report.daemons if report.daemon != "not running" else ():  # never ran: nothing per daemon
        beat = _when(row.last_heartbeat, now) if row.last_heartbeat else "no heartbeat"
        error = f"; error: {row.error}" if row.error else ""
        lines.append(f"  {row.daemon:<28}{'running' if row.running else 'not running':<13}{beat}{error}")

    counts = {}
    for row in report.checks:
        counts[row.state] = counts.get(row.state, 0) + 1
    summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
    lines += ["", f"asset checks: {len(report.checks)}" + (f" ({summary})" if summary else "")]
    for row in report.checks:
        if row.state in ("failed", "warned"):
            detail = f": {row.description}" if row.description else ""
            lines.append(f"  {row.state.upper():<8}{row.check} (run {row.run_id}){detail}")

    if report.positions_state != "read":
        lines += ["", f"open positions: {report.positions_state}"]
    else:
        per_mode = {}
        for row in report.positions:
            per_mode[row.mode] = per_mode.get(row.mode, 0) + 1
        summary = ", ".join(f"{mode} {n}" for mode, n in sorted(per_mode.items())) or "none"
        lines += ["", f"open positions: {summary}"]
        for row in report.positions:
            opened = _stamp(row.opened_at) if row.opened_at else "?"
            lines.append(
                f"  {row.mode:<6}{row.symbol:<14}{_decimal(row.amount):>20} at {_decimal(row.entry_price)} "
                f"since {opened} UTC"
            )
    return "\n".join(lines)


# --- helpers -------------------------------------------------------------------------------------


def _connect_read_only(path: Path) -> duckdb.DuckDBPyConnection:
    for attempt in range(LOCK_ATTEMPTS):
        try:
            return duckdb.connect(str(path), read_only=True)
        except duckdb.IOException:  # another process holds the write lock: it lets go within a transaction
            if attempt == LOCK_ATTEMPTS - 1:
                raise
            time.sleep(LOCK_WAIT_SECONDS)
    raise AssertionError("unreachable")


def _stale_reason(row: AssetHealth, now: datetime) -> str:
    window = _age(row.fail_window.total_seconds())
    if row.last_materialized is None:
        return f"{row.asset} is stale: never materialized (fail window {window})"
    return f"{row.asset} is stale: last materialized {_when(row.last_materialized, now)} (fail window {window})"


def _partition(run: dg.DagsterRun) -> str | None:
    tags = run.tags
    if tags.get("dagster/partition"):
        return tags["dagster/partition"]
    start, end = tags.get("dagster/asset_partition_range_start"), tags.get("dagster/asset_partition_range_end")
    return f"{start}...{end}" if start and end else None


def _time(timestamp: float | None) -> datetime | None:
    return datetime.fromtimestamp(timestamp, tz=UTC) if timestamp else None


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _when(moment: datetime, now: datetime) -> str:
    return f"{_stamp(moment)} UTC ({_age((now - moment).total_seconds())} ago)"


def _age(seconds: float) -> str:
    """12s, 5m 3s, 3h 2m, 2d 4h."""
    seconds = max(0, int(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h {minutes}m" if minutes else f"{hours}h"
    if minutes:
        return f"{minutes}m {secs}s" if secs else f"{minutes}m"
    return f"{secs}s"


def _decimal(value: Decimal | None) -> str:
    return "?" if value is None else format(value.normalize(), "f")


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Decimal):
        return _decimal(value)
    return value
