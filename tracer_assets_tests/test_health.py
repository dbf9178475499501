"""`tracer health` on real parts: the Dagster instance of DAGSTER_HOME, the DuckDB file, the jobs run
in process, the installed `tracer` console script run as a subprocess, a local Discord-like server.

The healthy scene is the whole loop once, as `make demo` runs it (the research run, its report,
the next tick, the signal sensor's decision run): every asset with a freshness policy is then
materialized within its window. Freshness is measured, as Dagster 1.13 measures it, from when an
asset was materialized, not from the time of its data: the replay's 2024 candles materialized a
minute ago are fresh.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pytest
from conftest import QUIET, SMALL_ML, bundled_frame, copy_replay_files
from dagster._daemon.types import DaemonHeartbeat
from test_audit_and_notify import DISCORD_ID, DISCORD_TOKEN, FakeChatServer

from tracer_assets.definitions import DECISION_JOB, REPORT_JOB, RESEARCH_JOB, TICK_JOB, build_definitions, defs
from tracer_assets.health import check_health, open_positions, render_text
from tracer_assets.reports.keys import RESEARCH_RUN_TAG
from tracer_assets.run_errors import error_line, run_failure_reason, step_failures
from tracer_assets.settings import load_settings
from tracer_assets.trading.store import DDL

TRACER = str(Path(sys.executable).with_name("tracer"))
TICK_DAY = "2024-07-15"  # the day after the shared history
BROKEN_DAY = "2024-07-16"
POLICY_ASSETS = {  # every asset with a freshness policy (the loop's two ticks, research's day and two hours)
    "market/candles", "market/candles_resampled", "signals/signals", "research/strategies", "research/backtests",
    "research/designs", "research/tuning", "ml/dataset", "ml/models", "ml/ensembles", "ranking/strategies",
    "ranking/models", "ranking/ensembles", "reports/daily",
}  # fmt: skip


def tracer_health(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """The installed console script, with this test's environment (DAGSTER_HOME, TRACER_*)."""
    return subprocess.run(
        [TRACER, "health", *args], env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=180
    )


def line_of(output: str, start: str) -> str:
    [line] = [line for line in output.splitlines() if line.startswith(start)]
    return line


def run_the_loop_once(instance: dg.DagsterInstance) -> dict[str, dg.ExecuteInProcessResult]:
    """Research, its report, the next tick and the decision the signal sensor asks for."""
    definitions = build_definitions(load_settings())
    research = definitions.resolve_job_def(RESEARCH_JOB).execute_in_process(instance=instance, run_config=QUIET)
    report = definitions.resolve_job_def(REPORT_JOB).execute_in_process(
        instance=instance, run_config=QUIET, tags={RESEARCH_RUN_TAG: research.run_id}
    )
    tick = definitions.resolve_job_def(TICK_JOB).execute_in_process(
        instance=instance, run_config=QUIET, partition_key=TICK_DAY
    )
    sensor = definitions.resolve_sensor_def("signal_sensor")
    with dg.build_sensor_context(instance=instance, repository_def=definitions.get_repository_def()) as context:
        [request] = sensor.evaluate_tick(context).run_requests
    decision = definitions.resolve_job_def(DECISION_JOB).execute_in_process(
        instance=instance, run_config=QUIET, tags=request.tags
    )
    return {"research": research, "report": report, "tick": tick, "decision": decision}


@pytest.mark.slow
def test_the_loop_is_healthy_then_a_failed_tick_and_stale_data_are_named(tracer_env, history, monkeypatch, tmp_path):
    shutil.copy(history.database, tracer_env["TRACER_DUCKDB_PATH"])
    for name, value in {
        **SMALL_ML,
        "TRACER_TUNE_STRATEGIES": "1",
        "TRACER_REPORTS_DIR": str(tmp_path / "reports"),
        "MACRO_BACKTEST_JSON_PATH": str(tmp_path / "backtest_results.json"),
        "TRACER_LOG_DIR": str(tmp_path / "logs"),
    }.items():
        monkeypatch.setenv(name, value)
    with dg.DagsterInstance.get() as instance:
        runs = run_the_loop_once(instance)
    assert all(result.success for result in runs.values())

    healthy = tracer_health()
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    out = healthy.stdout
    assert out.splitlines()[0].endswith("UTC: HEALTHY")
    tick = line_of(out, "trading_tick_job")
    assert tick.split()[1:3] == ["SUCCESS", TICK_DAY] and tick.endswith(runs["tick"].run_id)
    decision = line_of(out, "decision_job")
    assert decision.split()[1] == "SUCCESS" and decision.endswith(runs["decision"].run_id)
    assert "note: daemon: not running (no daemon has ever run on this instance" in out
    for asset in POLICY_ASSETS:
        assert line_of(out, f"{asset} ").endswith(" fresh"), asset
    assert line_of(out, "features/indicators ").endswith(" no policy")

    as_json = tracer_health("--json")
    assert as_json.returncode == 0, as_json.stderr
    report = json.loads(as_json.stdout)
    assert report["healthy"] is True and report["reasons"] == [] and report["daemon"] == "not running"
    assert {row["asset"] for row in report["assets"] if row["fail_window"]} == POLICY_ASSETS
    assert {row["state"] for row in report["assets"] if row["fail_window"]} == {"fresh"}
    [tick_row] = [row for row in report["runs"] if row["job"] == TICK_JOB]
    assert (tick_row["run_id"], tick_row["status"], tick_row["error"]) == (runs["tick"].run_id, "SUCCESS", None)
    assert not [row for row in report["checks"] if row["state"] == "failed"]

    # The next tick fails: a candle of the exchange's day breaks OHLC, so the candles step refuses the batch.
    damaged = copy_replay_files(tmp_path / "damaged", ["ETH/USDT"])
    at = datetime.fromisoformat(f"{BROKEN_DAY}T12:00:00+00:00")
    broken_high = pl.when(pl.col("date") == at).then(pl.col("low") - 1.0).otherwise(pl.col("high"))
    bundled_frame("BTC/USDT").with_columns(high=broken_high).write_parquet(damaged / "BTC_USDT-5m.parquet")
    monkeypatch.setenv("TRACER_REPLAY_DIR", str(damaged))
    with dg.DagsterInstance.get() as instance:
        failed = (
            build_definitions(load_settings())
            .resolve_job_def(TICK_JOB)
            .execute_in_process(instance=instance, run_config=QUIET, partition_key=BROKEN_DAY, raise_on_error=False)
        )
    assert not failed.success

    with FakeChatServer() as chat:
        unhealthy = tracer_health("--notify", env={"DISCORD_WEBHOOK_URL": chat.discord_url})
        requests = list(chat.requests)
    assert unhealthy.returncode == 1, unhealthy.stdout + unhealthy.stderr
    lines = unhealthy.stdout.splitlines()
    assert lines[0].endswith("UTC: UNHEALTHY (1 reason)")
    reason = lines[1]
    assert reason.startswith(f"  - {TICK_JOB}: the last run {failed.run_id} failed: step market__candles: ")
    assert reason.endswith(  # the Failure's message, not Dagster's wrapper; its line ending in ":" and the next
        "step market__candles: Failure: candles rejected, nothing was written: "
        "BTC/USDT 5m at 2024-07-16T12:00:00Z: high < low [high_below_low]: open=63746.11, high=63733.53, "
        "low=63734.53, close=63800.01, volume=145.6239"
    )
    assert len(reason.splitlines()) == 1
    assert line_of(unhealthy.stdout, "trading_tick_job").split()[1:3] == ["FAILURE", BROKEN_DAY]
    assert "tracer health: --notify: discord: delivered" in unhealthy.stderr
    [request] = requests
    content = request["body"]["content"]
    assert content.splitlines()[0] == "[ERROR] Tracer unhealthy: 1 problem"
    assert f"{TICK_JOB}: the last run {failed.run_id} failed: step market__candles: " in content
    assert DISCORD_TOKEN not in unhealthy.stdout + unhealthy.stderr

    # Two days on, nothing has been materialized since: every asset with a policy is stale, by name.
    graph = defs.resolve_asset_graph()
    with dg.DagsterInstance.get() as instance:
        later = check_health(instance, graph, tracer_env["TRACER_DUCKDB_PATH"], datetime.now(UTC) + timedelta(days=2))
    assert not later.healthy
    stale = {row.asset for row in later.assets if row.state == "stale"}
    assert stale == POLICY_ASSETS
    candles = [r for r in later.reasons if r.startswith("market/candles is stale: last materialized ")]
    assert candles and candles[0].endswith("(fail window 6m)")
    assert any(r.startswith("research/backtests is stale: last materialized ") for r in later.reasons)


def test_a_new_instance_is_unhealthy_naming_each_asset_never_materialized(tracer_env):
    graph = defs.resolve_asset_graph()
    now = datetime.now(UTC)
    with dg.DagsterInstance.get() as instance:
        report = check_health(instance, graph, tracer_env["TRACER_DUCKDB_PATH"], now)
        strict = check_health(instance, graph, tracer_env["TRACER_DUCKDB_PATH"], now, require_daemon=True)
    assert not report.healthy
    never = sorted(r.split(" is stale")[0] for r in report.reasons if r.endswith("never materialized (fail window 6m)"))
    assert never == ["market/candles", "market/candles_resampled", "signals/signals"]
    assert "research/backtests is stale: never materialized (fail window 1d 2h)" in report.reasons
    assert len(report.reasons) == len(POLICY_ASSETS)  # the daemon that never ran is a note
    assert [run.status for run in report.runs] == ["never run", "never run"]
    assert report.daemon == "not running" and report.notes[0].startswith("daemon: not running")
    assert strict.reasons[-1].startswith("daemon: not running (no daemon has ever run on this instance")
    assert report.positions_state.startswith("none yet: no DuckDB file at ")
    assert {row.state for row in report.checks} == {"never executed"}
    text = render_text(report)
    assert text.splitlines()[0].endswith(f"UNHEALTHY ({len(POLICY_ASSETS)} reasons)")
    assert "market/candles is stale: never materialized (fail window 6m)" in text


def test_a_daemon_that_stopped_is_unhealthy_and_a_beating_one_is_running(tracer_env):
    graph = dg.Definitions(assets=[]).resolve_asset_graph()
    now = datetime.now(UTC)
    with dg.DagsterInstance.get() as instance:
        required = instance.get_required_daemon_types()
        for daemon in required:  # what a daemon writes every 30 s, written as the daemon writes it
            instance.add_daemon_heartbeat(DaemonHeartbeat(now.timestamp() - 5, daemon, "test-daemon", None))
        running = check_health(instance, graph, tracer_env["TRACER_DUCKDB_PATH"], now, require_daemon=True)
        instance.add_daemon_heartbeat(DaemonHeartbeat(now.timestamp() - 3 * 3600, "SENSOR", "test-daemon", None))
        stopped = check_health(instance, graph, tracer_env["TRACER_DUCKDB_PATH"], now)
    assert running.healthy and running.daemon == "running", running.reasons
    assert {row.daemon for row in running.daemons} == set(required)
    assert not stopped.healthy and stopped.daemon == "stopped"
    [reason] = stopped.reasons
    assert reason.startswith("daemon SENSOR stopped: its last heartbeat ") and reason.endswith("(3h ago)")


@dg.asset(key=dg.AssetKey(["health", "probe"]))
def probe():
    return dg.MaterializeResult(metadata={"rows": 1})


@dg.asset_check(asset=probe, description="an ERROR-severity check that fails")
def rows_present():
    return dg.AssetCheckResult(passed=False, description="no rows for BTC/USDT 5m\nsecond line")


@dg.asset_check(asset=probe)
def price_jump():
    return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.WARN, description="a 1000x close")


@dg.asset_check(asset=probe)
def sane():
    return dg.AssetCheckResult(passed=True)


def test_a_failed_error_check_is_unhealthy_and_a_warning_is_a_note(tracer_env):
    definitions = dg.Definitions(assets=[probe], asset_checks=[rows_present, price_jump, sane])
    with dg.DagsterInstance.get() as instance:
        result = dg.materialize([probe, rows_present, price_jump, sane], instance=instance, raise_on_error=False)
        report = check_health(
            instance, definitions.resolve_asset_graph(), tracer_env["TRACER_DUCKDB_PATH"], datetime.now(UTC)
        )
    states = {row.check: row.state for row in report.checks}
    assert states == {"health/probe:price_jump": "warned", "health/probe:rows_present": "failed",
                      "health/probe:sane": "passed"}  # fmt: skip
    assert report.reasons == (
        f"asset check health/probe:rows_present failed in run {result.run_id}: no rows for BTC/USDT 5m",
    )
    assert f"asset check health/probe:price_jump warns in run {result.run_id}: a 1000x close" in report.notes
    text = render_text(report)
    assert "asset checks: 3 (1 failed, 1 passed, 1 warned)" in text
    assert f"  FAILED  health/probe:rows_present (run {result.run_id}): no rows for BTC/USDT 5m" in text


def test_open_positions_per_mode_and_a_locked_file_is_unknown_not_unhealthy(tmp_path):
    database = tmp_path / "tracer.duckdb"
    assert open_positions(database) == ([], f"none yet: no DuckDB file at {database}")
    duckdb.connect(str(database)).close()
    assert open_positions(database) == ([], "none yet: no trading.positions table")
    opened = datetime(2024, 7, 15, 12, 5, tzinfo=UTC)
    with duckdb.connect(str(database)) as connection:
        connection.execute("CREATE SCHEMA trading")
        for statement in DDL:
            connection.execute(statement)
        connection.executemany(
            "INSERT INTO trading.positions (position_id, mode, symbol, amount, entry_price, opened_at, closed_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                ["p1", "DRY", "BTC/USDT", Decimal("0.00158"), Decimal("63123.45"), opened, None],
                ["p2", "DRY", "ETH/USDT", Decimal("0.5"), Decimal("3400"), opened, opened + timedelta(hours=1)],
                ["p3", "LIVE", "ETH/USDT", Decimal("0.01"), Decimal("3390.5"), opened, None],
            ],
        )
    positions, state = open_positions(database)
    assert state == "read"
    assert [(p.mode, p.symbol, p.amount, p.opened_at) for p in positions] == [
        ("DRY", "BTC/USDT", Decimal("0.00158"), opened),
        ("LIVE", "ETH/USDT", Decimal("0.01"), opened),
    ]

    # A writer in another process holds DuckDB's lock for longer than the health check waits.
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import duckdb, sys; c = duckdb.connect({str(database)!r}); print('held', flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        positions, state = open_positions(database)
    finally:
        holder.communicate("", timeout=30)
    assert positions == [] and state.startswith(f"unknown: {database} could not be read: ")


def test_usage_and_configuration_errors_exit_2(tracer_env):
    usage = tracer_health("--bogus")
    assert usage.returncode == 2 and "unrecognized arguments: --bogus" in usage.stderr
    config = tracer_health(env={"TRACER_TICK_CRON": "every three minutes"})
    assert config.returncode == 2, config.stdout + config.stderr
    assert config.stderr.startswith("tracer health: TRACER_TICK_CRON='every three minutes'") and config.stdout == ""


@pytest.mark.slow
def test_notify_sends_the_reasons_and_a_failed_delivery_never_changes_the_verdict(tracer_env):
    with FakeChatServer() as chat:
        sent = tracer_health("--notify", "--json", env={"DISCORD_WEBHOOK_URL": chat.discord_url})
        [request] = chat.requests
    assert sent.returncode == 1, sent.stderr
    report = json.loads(sent.stdout)
    assert report["notifications"] == [{"channel": "discord", "ok": True, "error": None}]
    content = request["body"]["content"]
    assert content.splitlines()[0] == f"[ERROR] Tracer unhealthy: {len(POLICY_ASSETS)} problems"
    assert "market/candles is stale: never materialized (fail window 6m)" in content.splitlines()

    # Nothing listens there: the delivery fails, is reported, and the verdict is the same.
    with FakeChatServer() as gone:
        url = f"{gone.url}/api/webhooks/{DISCORD_ID}/{DISCORD_TOKEN}"
    refused = tracer_health("--notify", env={"DISCORD_WEBHOOK_URL": url})
    assert refused.returncode == 1, refused.stderr
    assert "tracer health: --notify: discord: " in refused.stderr and "delivered" not in refused.stderr
    assert DISCORD_TOKEN not in refused.stdout + refused.stderr


@dg.asset(key=dg.AssetKey(["health", "raises"]))
def raises():
    raise ValueError("market.candles: BTC/USDT 2024-09-06T04:40Z: rule non_finite\nsecond line")


@dg.asset(key=dg.AssetKey(["health", "fails"]))
def fails():
    try:
        raise KeyError("the detail")
    except KeyError as error:
        raise dg.Failure(
            "candles rejected, nothing was written:\n  BTC/USDT 5m at 2024-07-16T12:00:00Z: [x]\nmore"
        ) from error


def test_the_users_error_in_one_line_without_dagsters_wrapper(tracer_env):
    with dg.DagsterInstance.get() as instance:
        raised = dg.materialize([raises], instance=instance, raise_on_error=False)
        failed = dg.materialize([fails], instance=instance, raise_on_error=False)
        run = instance.create_run_for_job(dg.define_asset_job("killed_job", selection=[raises]).resolve(
            asset_graph=dg.Definitions(assets=[raises]).resolve_asset_graph()))  # fmt: skip
        instance.report_run_failed(run, message="marked failed by `tracer pool --free`: its process died")
        assert step_failures(instance, raised.run_id) == [
            ("health__raises", "ValueError: market.candles: BTC/USDT 2024-09-06T04:40Z: rule non_finite")
        ]
        [(_, message)] = step_failures(instance, failed.run_id)
        assert message == "Failure: candles rejected, nothing was written: BTC/USDT 5m at 2024-07-16T12:00:00Z: [x]"
        assert run_failure_reason(instance, failed.run_id) == f"step health__fails: {message}"
        assert run_failure_reason(instance, run.run_id) == "marked failed by `tracer pool --free`: its process died"
    assert error_line(None) == "failed"


def test_a_tick_going_now_does_not_hide_the_failure_before_it(tracer_env):
    graph = dg.Definitions(assets=[]).resolve_asset_graph()
    tick_named = dg.define_asset_job(TICK_JOB, selection=[raises]).resolve(
        asset_graph=dg.Definitions(assets=[raises]).resolve_asset_graph()
    )
    with dg.DagsterInstance.get() as instance:
        failed = tick_named.execute_in_process(instance=instance, raise_on_error=False)
        going = instance.create_run_for_job(tick_named, status=dg.DagsterRunStatus.STARTED)
        report = check_health(instance, graph, tracer_env["TRACER_DUCKDB_PATH"], datetime.now(UTC))
    [tick] = [run for run in report.runs if run.job == TICK_JOB]
    assert (tick.run_id, tick.status) == (going.run_id, "STARTED")
    assert (tick.last_finished_run_id, tick.last_finished_status) == (failed.run_id, "FAILURE")
    assert report.reasons == (
        f"{TICK_JOB}: the last run {failed.run_id} failed: step health__raises: "
        "ValueError: market.candles: BTC/USDT 2024-09-06T04:40Z: rule non_finite",
    )
    assert f"last finished: FAILURE {failed.run_id}" in render_text(report)
