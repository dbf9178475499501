"""Benchmark: the whole daily research pipeline on the bundled candles (6 default symbols, the
5m base timeframe resampled to 15m, 1h and 4h), offline: the designer and the AI review work
by rules (ANTHROPIC_API_KEY is removed from the environment of everything launched).

Set-up (timed, not part of the figures): a scratch directory with a fresh Dagster instance
(the project's dagster.yaml, the "duckdb" pool set to 1 as `make instance` does), DuckDB file,
reports folder and backtest JSON, and an environment without any TRACER_*, ANTHROPIC_* or other
Tracer setting of the calling shell (the defaults apply: TRACER_RESEARCH_WORKERS=2). The tick job
then materializes market data, indicators and signals of every bundled day in one run, as
`make demo` does first (in a child process).

Measured: `dagster job execute -j research_job`, then `-j report_job` tagged with the research
run as the sensor launches it, each a subprocess, as the daemon runs them: the research job with
its multiprocess executor (a forkserver, one process per step, 2 at a time). For each, the wall
time and, sampled every 0.2 s, the total RSS of the process tree (the CLI process, the
forkserver and every step process; psutil) and the largest single process. RSS counts the pages
the step processes share with the forkserver they fork from once per process, so the total PSS
(shared pages split between their users) is printed beside it. Targets on the 2-core reference
machine: both jobs in 5 minutes or less, 2 GiB or less of total RSS.

Then, from the instance, each step's start and duration, the time per kind of work (backtests,
design, tuning, ML training, ...), and the chain of steps that set the wall time; from the report
JSON, what the run designed and tuned, and its failures. The last line is the figures as JSON.
Exit status 0 when the runs succeeded (whether or not a target is met), 1 when one failed.

    .venv/bin/python tracer_assets_tests/benchmarks/bench_pipeline.py [--keep]

It takes several minutes (--keep leaves the scratch directory, with the runs' logs, in place).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[2]
DAGSTER = Path(sys.executable).with_name("dagster")  # the venv's CLI
RESEARCH_JOB = "research_job"
REPORT_JOB = "report_job"
RESEARCH_RUN_TAG = "tracer/research_run"  # tracer_assets.reports.keys: the run a report describes
TARGET_SECONDS = 300.0
TARGET_RSS_MIB = 2048.0
SAMPLE_SECONDS = 0.2
PROGRESS_SECONDS = 30.0
MIB = 2**20

# The tick job over every bundled day in one run, as tracer_assets.demo.main does first.
TICK = """
import json, sys, time, warnings
warnings.filterwarnings("ignore")
from dagster import DagsterInstance
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG
from tracer_assets.definitions import TICK_JOB, defs
job = defs.resolve_job_def(TICK_JOB)
keys = job.partitions_def.get_partition_keys()
began = time.perf_counter()
with DagsterInstance.get() as instance:
    result = job.execute_in_process(
        instance=instance,
        tags={ASSET_PARTITION_RANGE_START_TAG: keys[0], ASSET_PARTITION_RANGE_END_TAG: keys[-1]},
        raise_on_error=False,
        run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
    )
print("@@tick@@ " + json.dumps({"job": TICK_JOB, "days": len(keys), "first": keys[0], "last": keys[-1],
      "run_id": result.run_id, "success": result.success, "seconds": time.perf_counter() - began}))
sys.exit(0 if result.success else 1)
"""

# Step-key prefixes -> the kind of work, for the time per kind.
KINDS = (
    ("research__strategies", "backtests"),
    ("backtests", "backtests"),
    ("research__designs", "design"),
    ("research__tuning", "tuning"),
    ("ml__dataset", "ml dataset"),
    ("models.", "ml training"),
    ("ensembles.", "ml ensembles"),
    ("ranking__", "ranking"),
    ("reports__daily", "report"),
    ("ai_review", "ai review"),
    ("reports__ai_review", "ai review"),
)


def say(text: str = "") -> None:
    print(text, flush=True)


def kind_of(step_key: str) -> str:
    return next((kind for prefix, kind in KINDS if step_key.startswith(prefix)), step_key.split(".")[0])


def load_average() -> float:
    return os.getloadavg()[0]


def clean_environment(scratch: Path) -> dict[str, str]:
    """The caller's environment without any Tracer setting or secret, and the scratch paths."""
    from tracer_assets.settings import SETTINGS_TABLE
    from tracer_assets.trading.secrets import SECRET_VARIABLES

    dropped = {name for name, _, _ in SETTINGS_TABLE} | set(SECRET_VARIABLES)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TRACER_", "ANTHROPIC_", "DAGSTER_")) and k not in dropped
    }
    return env | {
        "DAGSTER_HOME": str(scratch / "dagster_home"),
        "TRACER_DUCKDB_PATH": str(scratch / "tracer.duckdb"),
        "TRACER_REPORTS_DIR": str(scratch / "reports"),
        "MACRO_BACKTEST_JSON_PATH": str(scratch / "backtest_results.json"),
        "TRACER_LOG_DIR": str(scratch / "logs"),  # the trading audit files, never the checkout's
        "PYTHONWARNINGS": "ignore",
    }


def sample_tree(root: psutil.Process) -> list[tuple[psutil.Process, int, int, int, float]]:
    """(process, parent pid, RSS, PSS, CPU seconds) of `root` and each of its descendants."""
    try:
        processes = [root, *root.children(recursive=True)]
    except psutil.Error:
        return []
    rows = []
    for process in processes:
        try:
            with process.oneshot():
                info, cpu, ppid = process.memory_full_info(), process.cpu_times(), process.ppid()
        except psutil.Error:  # ended between the listing and the reading
            continue
        rows.append((process, ppid, info.rss, info.pss, cpu.user + cpu.system))
    return rows


def roles(rows: list, root: psutil.Process) -> dict[int, str]:
    """What each process of the tree is: the CLI, the forkserver, a step process, or its command line."""
    commands = {}
    for process, *_ in rows:
        try:
            commands[process.pid] = " ".join(process.cmdline())
        except psutil.Error:
            commands[process.pid] = "?"
    parents = {process.pid: ppid for process, ppid, *_ in rows}
    forkservers = {pid for pid, ppid in parents.items() if ppid == root.pid and "forkserver" in commands[pid]}
    named = {}
    for pid, ppid in parents.items():
        if pid == root.pid:
            named[pid] = "dagster CLI (runs the executor)"
        elif pid in forkservers:
            named[pid] = "forkserver"
        elif "resource_tracker" in commands[pid]:
            named[pid] = "multiprocessing resource tracker"
        elif ppid in forkservers:
            named[pid] = "step process (forked from the forkserver)"
        else:
            named[pid] = f"child of {ppid}: {commands[pid][:90]}"
    return named


def machine_busy_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, all CPUs."""
    times = psutil.cpu_times()
    total = sum(times)
    return total - times.idle - getattr(times, "iowait", 0.0), total


def run_job(job: str, env: dict[str, str], log_path: Path, tags: dict[str, str] | None = None) -> dict:
    """`dagster job execute` of `job` as a subprocess, its tree's memory sampled every SAMPLE_SECONDS."""
    command = [str(DAGSTER), "job", "execute", "-m", "tracer_assets.definitions", "-j", job]
    if tags:
        command += ["--tags", json.dumps(tags)]
    peak = {"rss": 0, "pss": 0, "largest": 0, "processes": 0, "rss_at": None, "largest_at": None}
    cpu_by_pid: dict[int, float] = {}
    snapshot: list[tuple[int, int, int, str]] = []
    samples = 0
    busy_before, total_before = machine_busy_seconds()
    launched_at = time.time()
    began = time.perf_counter()
    with log_path.open("w") as log:
        child = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        root = psutil.Process(child.pid)
        next_sample = began
        next_note = began + PROGRESS_SECONDS
        while child.poll() is None:
            rows = sample_tree(root)
            rss, pss = sum(r[2] for r in rows), sum(r[3] for r in rows)
            largest, count = max((r[2] for r in rows), default=0), len(rows)
            for process, _, _, _, cpu in rows:
                cpu_by_pid[process.pid] = max(cpu_by_pid.get(process.pid, 0.0), cpu)
            now = time.time()
            samples += 1
            if rss > peak["rss"]:
                peak |= {"rss": rss, "rss_at": now, "processes_at_peak": count}
                named = roles(rows, root)
                snapshot = [(p.pid, ppid, r, named[p.pid]) for p, ppid, r, _, _ in rows]
            if largest > peak["largest"]:
                peak |= {"largest": largest, "largest_at": now}
            peak["pss"] = max(peak["pss"], pss)
            peak["processes"] = max(peak["processes"], count)
            clock = time.perf_counter()
            if clock >= next_note:
                say(
                    f"    {clock - began:5.0f} s: {count} processes, {rss / MIB:,.0f} MiB RSS "
                    f"({pss / MIB:,.0f} MiB PSS), load {load_average():.1f}"
                )
                next_note += PROGRESS_SECONDS
            next_sample += SAMPLE_SECONDS
            time.sleep(max(0.0, next_sample - time.perf_counter()))
    seconds = time.perf_counter() - began
    busy_after, total_after = machine_busy_seconds()
    cpus = os.cpu_count() or 1
    return {
        "job": job,
        "command": " ".join(command),
        "exit_status": child.returncode,
        "seconds": seconds,
        "launched_at": launched_at,
        "ended_at": time.time(),
        "samples": samples,
        "peak_rss_mib": peak["rss"] / MIB,
        "peak_pss_mib": peak["pss"] / MIB,
        "largest_process_rss_mib": peak["largest"] / MIB,
        "max_processes": peak["processes"],
        "processes_at_peak": peak.get("processes_at_peak", 0),
        "peak_rss_at": peak["rss_at"],
        "largest_at": peak["largest_at"],
        "peak_processes": snapshot,
        "tree_cpu_seconds": sum(cpu_by_pid.values()),
        "tree_cpu_share": sum(cpu_by_pid.values()) / (seconds * cpus),
        "machine_cpu_share": (busy_after - busy_before) / max(total_after - total_before, 1e-9),
        "log": str(log_path),
    }


def newest_run(instance, job: str):
    import dagster as dg

    records = instance.get_run_records(dg.RunsFilter(job_name=job), limit=1)
    return records[0] if records else None


def run_errors(instance, run_id: str) -> list[str]:
    """The failed steps with the user's error (not Dagster's wrapper), and the run's own failure."""
    from dagster._core.events import DagsterEventType

    errors = []
    for record in instance.all_logs(run_id, of_type={DagsterEventType.STEP_FAILURE, DagsterEventType.RUN_FAILURE}):
        event = record.dagster_event
        if event.event_type == DagsterEventType.STEP_FAILURE:
            error = event.step_failure_data.error
            while error is not None and error.cause is not None:
                error = error.cause
            message = (error.message if error else "").strip() or "failed"
            errors.append(f"step {event.step_key}: {message.splitlines()[0][:500]}")
        else:
            errors.append(f"run: {(record.message or '').strip()[:500]}")
    return errors


def step_rows(instance, run_id: str) -> list[dict]:
    rows = []
    for stats in instance.get_run_step_stats(run_id):
        seconds = stats.end_time - stats.start_time if stats.start_time and stats.end_time else None
        rows.append(
            {
                "step": stats.step_key,
                "kind": kind_of(stats.step_key),
                "status": stats.status.value.lower() if stats.status else "not_run",
                "start": stats.start_time,
                "end": stats.end_time,
                "seconds": seconds,
            }
        )
    return sorted(rows, key=lambda r: (r["start"] is None, r["start"] or 0.0, r["step"]))


def step_dependencies(instance, run) -> dict[str, set[str]]:
    """Each step's upstream steps, from the run's execution plan snapshot."""
    snapshot = instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id)
    return {step.key: {key for i in step.inputs for key in i.upstream_step_keys} for step in snapshot.steps}


def chains(rows: list[dict], deps: dict[str, set[str]]) -> tuple[list[dict], float, list[str]]:
    """The chain that set the wall time (back from the last step to end, each time through the
    upstream step that ended last, with how long each step waited after it), and the longest
    chain by step durations alone (the wall time with unlimited workers and no waiting)."""
    done = {r["step"]: r for r in rows if r["start"] is not None and r["end"] is not None}
    if not done:
        return [], 0.0, []
    chain = []
    key = max(done, key=lambda k: done[k]["end"])
    while key is not None:
        upstream = [d for d in deps.get(key, ()) if d in done]
        before = max(upstream, key=lambda k: done[k]["end"]) if upstream else None
        wait = done[key]["start"] - done[before]["end"] if before else None
        chain.append({**done[key], "waited": wait, "after": before})
        key = before
    chain.reverse()
    longest: dict[str, tuple[float, list[str]]] = {}
    for key in sorted(done, key=lambda k: done[k]["start"]):  # a step starts after its upstream ends
        best = max((longest[d] for d in deps.get(key, ()) if d in longest), default=(0.0, []))
        longest[key] = (best[0] + done[key]["seconds"], [*best[1], key])
    seconds, steps = max(longest.values())
    return chain, seconds, steps


def steps_running(rows: list[dict], at: float | None) -> list[str]:
    if at is None:
        return []
    return [r["step"] for r in rows if r["start"] is not None and r["start"] <= at <= (r["end"] or float("inf"))]


def describe_run(instance, job: str, measured: dict) -> dict:
    """Print the run's steps, time per kind of work and critical chain; return its figures."""
    record = newest_run(instance, job)
    if record is None:
        say(f"  no {job} run in the instance")
        return {"run_id": None, "status": "missing", "steps": [], "errors": [f"no {job} run was recorded"]}
    run = record.dagster_run
    rows = step_rows(instance, run.run_id)
    start, end = record.start_time, record.end_time
    origin = start or measured["launched_at"]
    say(f"  run {run.run_id}: {run.status.value}, {len(rows)} steps")
    if start and end:
        first = min((r["start"] for r in rows if r["start"]), default=start)
        last = max((r["end"] for r in rows if r["end"]), default=end)
        say(
            f"  CLI launch -> run start {start - measured['launched_at']:.1f} s (interpreter, imports, definitions); "
            f"run start -> first step {first - start:.1f} s; steps {last - first:.1f} s; "
            f"last step -> run end {end - last:.1f} s; run end -> CLI exit {measured['ended_at'] - end:.1f} s"
        )
    say(f"  {'start':>7} {'seconds':>8}  {'status':<9} {'kind':<13} step")
    for r in rows:
        begin = "-" if r["start"] is None else f"+{r['start'] - origin:.1f}"
        seconds = "-" if r["seconds"] is None else f"{r['seconds']:.1f}"
        say(f"  {begin:>7} {seconds:>8}  {r['status']:<9} {r['kind']:<13} {r['step']}")
    kinds: dict[str, dict] = {}
    for r in rows:
        if r["seconds"] is None:
            continue
        k = kinds.setdefault(r["kind"], {"seconds": 0.0, "steps": 0, "first": r["start"], "last": r["end"]})
        k["seconds"] += r["seconds"]
        k["steps"] += 1
        k["first"], k["last"] = min(k["first"], r["start"]), max(k["last"], r["end"])
    busy = sum(k["seconds"] for k in kinds.values())
    say(f"  time per kind of work (step seconds summed; {busy:.0f} s of steps in all):")
    for name, k in sorted(kinds.items(), key=lambda item: -item[1]["seconds"]):
        say(
            f"    {name:<13} {k['seconds']:7.1f} s in {k['steps']} step(s) ({k['seconds'] / busy:5.1%}), "
            f"from +{k['first'] - origin:.0f} s to +{k['last'] - origin:.0f} s"
        )
    deps = step_dependencies(instance, run)
    chain, longest_seconds, longest = chains(rows, deps)
    if chain:
        waited = sum(c["waited"] or 0.0 for c in chain)
        worked = sum(c["seconds"] for c in chain)
        say(
            f"  the chain that set the wall time ({worked:.1f} s of steps + {waited:.1f} s waiting for a worker, "
            "the duckdb pool or a process start):"
        )
        for c in chain:
            wait = "" if c["waited"] is None else f", waited {c['waited']:.1f} s after {c['after']}"
            say(f"    +{c['start'] - origin:6.1f} s  {c['step']} {c['seconds']:.1f} s{wait}")
        say(
            f"  longest chain by step durations alone (the wall time with unlimited workers): {longest_seconds:.1f} s: "
            + " -> ".join(longest)
        )
    if measured["peak_rss_at"]:
        say(
            f"  at the peak total RSS (+{measured['peak_rss_at'] - origin:.0f} s, "
            f"{measured['processes_at_peak']} processes) these steps ran: "
            f"{', '.join(steps_running(rows, measured['peak_rss_at'])) or 'none (start-up or wind-down)'}"
        )
        say(
            f"  at the largest single process (+{measured['largest_at'] - origin:.0f} s): "
            f"{', '.join(steps_running(rows, measured['largest_at'])) or 'none (start-up or wind-down)'}"
        )
    errors = run_errors(instance, run.run_id)
    return {
        "run_id": run.run_id,
        "status": run.status.value,
        "steps": rows,
        "kinds": {name: round(k["seconds"], 2) for name, k in kinds.items()},
        "critical_chain": [c["step"] for c in chain],
        "critical_chain_wait_seconds": round(sum(c["waited"] or 0.0 for c in chain), 2),
        "longest_chain_seconds": round(longest_seconds, 2),
        "errors": errors,
    }


def print_memory(measured: dict) -> None:
    say(
        f"  wall {measured['seconds']:.1f} s (exit status {measured['exit_status']}); peak total RSS "
        f"{measured['peak_rss_mib']:,.0f} MiB over {measured['processes_at_peak']} processes (PSS "
        f"{measured['peak_pss_mib']:,.0f} MiB), largest single process {measured['largest_process_rss_mib']:,.0f} MiB, "
        f"up to {measured['max_processes']} processes ({measured['samples']} samples)"
    )
    say(
        f"  CPU: the process tree {measured['tree_cpu_seconds']:.0f} CPU-s = {measured['tree_cpu_share']:.0%} of "
        f"{os.cpu_count()} CPUs over its wall time; the whole machine {measured['machine_cpu_share']:.0%} busy "
        "(the difference is others' work)"
    )
    say("  processes at the peak total RSS:")
    for pid, ppid, rss, what in sorted(measured["peak_processes"], key=lambda p: -p[2]):
        say(f"    pid {pid:>7} (parent {ppid:>7}) {rss / MIB:7,.0f} MiB  {what}")


def setup(scratch: Path, env: dict[str, str]) -> dict:
    """A fresh instance (pool set as `make instance` does) and the tick job over every bundled day."""
    home = Path(env["DAGSTER_HOME"])
    home.mkdir()
    shutil.copy(REPO / ".dagster" / "dagster.yaml", home / "dagster.yaml")
    subprocess.run(
        [str(DAGSTER), "instance", "concurrency", "set", "duckdb", "1"],
        cwd=REPO,
        env=env,
        check=True,
        capture_output=True,
    )
    log = scratch / "tick.log"
    child = subprocess.run([sys.executable, "-c", TICK], cwd=REPO, env=env, capture_output=True, text=True)
    log.write_text(child.stdout + child.stderr)
    figures = next((json.loads(line[9:]) for line in child.stdout.splitlines() if line.startswith("@@tick@@ ")), None)
    if child.returncode != 0 or figures is None:
        print(child.stdout[-3000:], child.stderr[-6000:], file=sys.stderr)
        raise SystemExit(f"set-up failed: the tick run over the bundled days failed (exit status {child.returncode})")
    return figures


def read_report(env: dict[str, str], research_run_id: str | None) -> tuple[dict | None, Path | None]:
    """The daily report JSON that describes the research run (the newest one otherwise)."""
    reports = sorted(Path(env["TRACER_REPORTS_DIR"]).glob("*.json"), key=lambda p: p.stat().st_mtime)
    parsed = []
    for path in reports:
        try:
            parsed.append((json.loads(path.read_text()), path))
        except (OSError, ValueError):
            continue
    mine = [(report, path) for report, path in parsed if report.get("research_run_id") == research_run_id]
    return (mine or parsed or [(None, None)])[-1]


def read_review(database: str) -> dict | None:
    import duckdb

    try:
        with duckdb.connect(database, read_only=True) as connection:
            row = connection.execute(
                "SELECT status, source, model, reason, seconds FROM reports.ai_reviews "
                "ORDER BY reviewed_at DESC LIMIT 1"
            ).fetchone()
    except duckdb.Error:
        return None
    return dict(zip(("status", "source", "model", "reason", "seconds"), row)) if row else None


def main(argv: list[str]) -> int:
    warnings.filterwarnings("ignore")
    keep = "--keep" in argv
    load_start = load_average()
    began = time.perf_counter()
    scratch = Path(tempfile.mkdtemp(prefix="tracer-bench-pipeline-"))
    try:
        env = clean_environment(scratch)
        from tracer_assets.settings import load_settings

        settings = load_settings(env)
        market = settings.market
        say(
            f"pipeline on {len(market.symbols)} symbols ({', '.join(market.symbols)}), {market.base_timeframe} "
            f"resampled to {', '.join(market.timeframes)}; TRACER_RESEARCH_WORKERS={settings.research.workers}; "
            f"ANTHROPIC_API_KEY {'SET' if 'ANTHROPIC_API_KEY' in env else 'not set'} in the launched environment "
            f"(designer and review offline); scratch {scratch}"
        )
        say(f"load average at the start {load_start:.2f} (1 min) on {os.cpu_count()} CPUs")
        tick = setup(scratch, env)
        setup_seconds = time.perf_counter() - began
        say(
            f"set-up (not measured): fresh instance + {tick['job']} over {tick['days']} days "
            f"({tick['first']} .. {tick['last']}, run {tick['run_id']}, {tick['seconds']:.1f} s in the run): "
            f"{setup_seconds:.1f} s"
        )

        load_before = load_average()
        say(f"\n1. {RESEARCH_JOB} (load average {load_before:.2f}):")
        research = run_job(RESEARCH_JOB, env, scratch / "research_job.log")
        print_memory(research)
        import dagster as dg
        from dagster._core.instance.ref import InstanceRef

        with dg.DagsterInstance.from_ref(InstanceRef.from_dir(env["DAGSTER_HOME"])) as instance:
            record = newest_run(instance, RESEARCH_JOB)
        research_run_id = record.dagster_run.run_id if record else None

        say(f"\n2. {REPORT_JOB} (describing research run {research_run_id}):")
        report = run_job(
            REPORT_JOB,
            env,
            scratch / "report_job.log",
            tags={RESEARCH_RUN_TAG: research_run_id} if research_run_id else None,
        )
        print_memory(report)
        load_end = load_average()

        with dg.DagsterInstance.from_ref(InstanceRef.from_dir(env["DAGSTER_HOME"])) as instance:
            say(f"\n{RESEARCH_JOB} steps, by start (seconds from the run's start):")
            research_run = describe_run(instance, RESEARCH_JOB, research)
            say(f"\n{REPORT_JOB} steps:")
            report_run = describe_run(instance, REPORT_JOB, report)

        daily, daily_path = read_report(env, research_run_id)
        review = read_review(env["TRACER_DUCKDB_PATH"])
        activity = (daily or {}).get("activity", {})
        failures = (daily or {}).get("failures", [])

        total = research["seconds"] + report["seconds"]
        peak_rss = max(research["peak_rss_mib"], report["peak_rss_mib"])
        peak_pss = max(research["peak_pss_mib"], report["peak_pss_mib"])
        largest = max(research["largest_process_rss_mib"], report["largest_process_rss_mib"])
        seconds_ok, rss_ok = total <= TARGET_SECONDS, peak_rss <= TARGET_RSS_MIB
        succeeded = (
            research["exit_status"] == 0
            and report["exit_status"] == 0
            and research_run["status"] == "SUCCESS"
            and report_run["status"] == "SUCCESS"
        )
        wall = time.perf_counter() - began

        say("\nsummary:")
        for name, measured, described in ((RESEARCH_JOB, research, research_run), (REPORT_JOB, report, report_run)):
            say(f"  {name}: {measured['seconds']:.1f} s, {len(described['steps'])} steps, {described['status']}")
        say(
            f"  both: {total:.1f} s (target <= {TARGET_SECONDS:.0f} s: {'met' if seconds_ok else 'NOT met'}); "
            f"peak total RSS {peak_rss:,.0f} MiB (target <= {TARGET_RSS_MIB:.0f} MiB: "
            f"{'met' if rss_ok else 'NOT met'}; total PSS {peak_pss:,.0f} MiB); largest process {largest:,.0f} MiB"
        )
        if daily is None:
            say(f"  report JSON: none found in {env['TRACER_REPORTS_DIR']}")
        else:
            say(
                f"  report {daily_path.name} (research run {daily.get('research_run_id')}): "
                + ", ".join(f"{k} {v}" for k, v in activity.items())
                + f"; {len(daily.get('steps', []))} steps, {len(failures)} failed"
            )
            for failure in failures:
                say(f"    failed: {failure.get('step')}: {failure.get('reason')}")
        if review:
            say(
                f"  AI review: {review['status']} ({review['source']}, {review['model'] or 'no model'})"
                + (f": {review['reason']}" if review["reason"] else "")
            )
        for name, described in ((RESEARCH_JOB, research_run), (REPORT_JOB, report_run)):
            for error in described["errors"]:
                say(f"  {name} error: {error}")
        say(
            f"  benchmark wall time {wall:.0f} s (set-up {setup_seconds:.0f} s); load average at the start "
            f"{load_start:.2f}, before the research run {load_before:.2f}, at the end {load_end:.2f} (1 min) on "
            f"{os.cpu_count()} CPUs: others' work on the machine slows every figure"
        )
        if not succeeded:
            say(f"  a run FAILED: logs in {scratch} (kept)")
            keep = True
        print(
            json.dumps(
                {
                    "benchmark": "research_pipeline",
                    "symbols": len(market.symbols),
                    "timeframes": list(market.all_timeframes),
                    "tick_days": tick["days"],
                    "research_workers": settings.research.workers,
                    "setup_seconds": round(setup_seconds, 1),
                    "research_seconds": round(research["seconds"], 2),
                    "report_seconds": round(report["seconds"], 2),
                    "total_seconds": round(total, 2),
                    "peak_total_rss_mib": round(peak_rss, 1),
                    "peak_total_pss_mib": round(peak_pss, 1),
                    "largest_process_rss_mib": round(largest, 1),
                    "research_peak_total_rss_mib": round(research["peak_rss_mib"], 1),
                    "report_peak_total_rss_mib": round(report["peak_rss_mib"], 1),
                    "max_processes": max(research["max_processes"], report["max_processes"]),
                    "research_tree_cpu_seconds": round(research["tree_cpu_seconds"], 1),
                    "research_machine_cpu_share": round(research["machine_cpu_share"], 3),
                    "target_seconds": TARGET_SECONDS,
                    "target_rss_mib": TARGET_RSS_MIB,
                    "seconds_within_target": seconds_ok,
                    "rss_within_target": rss_ok,
                    "research_steps": len(research_run["steps"]),
                    "report_steps": len(report_run["steps"]),
                    "research_seconds_by_kind": research_run.get("kinds", {}),
                    "report_seconds_by_kind": report_run.get("kinds", {}),
                    "critical_chain": research_run.get("critical_chain", []),
                    "critical_chain_wait_seconds": research_run.get("critical_chain_wait_seconds"),
                    "longest_chain_seconds": research_run.get("longest_chain_seconds"),
                    "research_status": research_run["status"],
                    "report_status": report_run["status"],
                    "designed": activity.get("designed"),
                    "tuned": activity.get("tuned"),
                    "trials_total": activity.get("trials_total"),
                    "report_failures": [f.get("step") for f in failures],
                    "review_status": review and review["status"],
                    "review_source": review and review["source"],
                    "wall_seconds": round(wall, 1),
                    "load_average_start": round(load_start, 2),
                    "load_average_before_research": round(load_before, 2),
                    "load_average_end": round(load_end, 2),
                    "cpus": os.cpu_count(),
                }
            )
        )
        return 0 if succeeded else 1
    finally:
        if keep:
            say(f"scratch directory kept: {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
