"""End to end under `dagster dev`: a signals materialization made from a shell while the
server runs is answered by the signal sensor (run by the daemon), whose decision run
succeeds and records a BUY and its paper order.

The scene is set so the rules decider has a reason to buy BTC/USDT on 5m:
- 45 days of history and the tick of the last bundled day (2024-09-06) are materialized
  in-process while the server boots, on a throwaway Dagster instance, so the server's
  instance holds no signals materialization: on its first tick the sensor answers the
  newest one, which must be the one made while the server runs.
- An external prediction `strong_bull` (confidence 1.0) for BTC/USDT 5m in TRACER_SIGNAL_LOG.
  On that day the rules label BTC/USDT 5m `bull`, so the ensemble reads `strong_bull`.
- Research stats for BTC/USDT 5m written straight into `research.backtests` (positive PnL,
  win rate 0.6: a Bull regime). The research job would do it in ~11 s, but its result
  depends on the strategy library; this test is about sensor -> decision -> order.
- TB_MIN_SIGNAL_QUALITY=0, TB_MIN_CONVICTION_SCORE=0: the quality gates are tested elsewhere.
- The tick schedule is pointed at a cron that does not fire during the test, so the daemon
  adds no signals event of its own. (The daily research schedule, 00:00 UTC, has no
  setting: a run started across midnight would see it replace the research stats.)

The helpers here are reused by benchmarks/bench_decision.py.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import dagster as dg
import duckdb
import pytest
from conftest import REPO, TEST_SYMBOLS
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from tracer_assets.definitions import DECISION_JOB, TICK_JOB, build_definitions
from tracer_assets.settings import load_settings
from tracer_assets.signals.keys import HISTORY_KEY, SIGNALS_KEY
from tracer_assets.trading.keys import SIGNAL_STORAGE_TAG

DAGSTER = str(Path(sys.executable).with_name("dagster"))
QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
BUY_SYMBOL, BUY_TIMEFRAME = "BTC/USDT", "5m"
NEVER_CRON = "0 0 1 1 *"  # the tick schedule must not add signal events during the test
SERVER_START_SECONDS = 120
DECISION_SECONDS = 120


# The scenes here are staged for the rules decider.
pytestmark = pytest.mark.usefixtures("rules_decider")


def scene_environment(scratch: Path, dagster_home: Path) -> dict[str, str]:
    """The settings of the scene (paths in `scratch`); the caller puts them in the environment."""
    return {
        "DAGSTER_HOME": str(dagster_home),
        "TRACER_DUCKDB_PATH": str(scratch / "tracer.duckdb"),
        "TRACER_SYMBOLS": TEST_SYMBOLS,
        "TRACER_LOG_DIR": str(scratch / "logs"),
        "TRACER_SIGNAL_LOG": str(scratch / "macro_signal.log"),
        "MACRO_BACKTEST_JSON_PATH": str(scratch / "backtest_results.json"),
        "TRACER_TICK_CRON": NEVER_CRON,
        "TRACER_DECIDER": "rules",  # the scene is staged for the rules decider
        "TB_MIN_SIGNAL_QUALITY": "0",
        "TB_MIN_CONVICTION_SCORE": "0",
        # Room for a Kelly-sized buy: the strategy's edge (win rate 0.6, profit factor 1.8) is full
        # Kelly 0.267, used at half, so at most 13.3 of the 100 USDT order; any confidence clears 1 USDT.
        "ORDER_AMOUNT": "100",
        "MIN_ALLOWED_ORDER_AMOUNT": "1",
    }


def prepare_dagster_home(home: Path) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_bytes((REPO / ".dagster" / "dagster.yaml").read_bytes())
    return home


def set_the_scene(settings_env: dict[str, str]) -> None:
    """History, tick and research stats in the scene's DuckDB file (the environment must hold
    `settings_env`). Runs on an ephemeral instance: the server's instance stays without any
    signals materialization."""
    Path(settings_env["TRACER_SIGNAL_LOG"]).write_text(
        json.dumps(
            {
                "symbol": BUY_SYMBOL,
                "timeframe": BUY_TIMEFRAME,
                "label": "strong_bull",
                "confidence": 1.0,
                "ts": "2024-09-06T04:40:00Z",
            }
        )
        + "\n"
    )
    job = build_definitions(load_settings()).resolve_job_def(TICK_JOB)
    with dg.DagsterInstance.ephemeral() as instance:
        history = job.execute_in_process(
            instance=instance,
            run_config=QUIET,
            tags={
                ASSET_PARTITION_RANGE_START_TAG: "2024-07-23",
                ASSET_PARTITION_RANGE_END_TAG: "2024-09-05",
            },
        )
        assert history.success
        assert job.execute_in_process(instance=instance, run_config=QUIET, partition_key="2024-09-06").success
    with duckdb.connect(settings_env["TRACER_DUCKDB_PATH"]) as connection:
        # The research asset's table (tracer_assets/research/assets.py), one out-of-sample row.
        connection.execute("CREATE SCHEMA IF NOT EXISTS research")
        connection.execute(
            """CREATE TABLE research.backtests (strategy_id VARCHAR, name VARCHAR, symbol VARCHAR, timeframe VARCHAR,
               "window" VARCHAR, parameters VARCHAR, total_return DOUBLE, pnl DOUBLE, win_rate DOUBLE, trades BIGINT,
               sharpe DOUBLE, sortino DOUBLE, max_drawdown DOUBLE, profit_factor DOUBLE, exposure DOUBLE,
               expectancy DOUBLE, score DOUBLE, computed_at TIMESTAMPTZ)"""
        )
        connection.execute(
            "INSERT INTO research.backtests VALUES (?, ?, ?, ?, 'out_of_sample', '{}', 0.02, 200.0, 0.6, 10, 1.2, 1.5, "
            "0.05, 1.8, 0.3, 20.0, 1.0, ?)",
            ["e2e-strategy", "e2e_strategy", BUY_SYMBOL, BUY_TIMEFRAME, datetime.now(UTC)],
        )
        label = connection.execute(
            "SELECT ensemble_label FROM signals.signals WHERE symbol = ? AND timeframe = ?", [BUY_SYMBOL, BUY_TIMEFRAME]
        ).fetchall()
    # The scene's premise, checked rather than assumed: the prediction made the ensemble strong_bull.
    assert label == [("strong_bull",)], label


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class DevServer:
    """A started `dagster dev`; `wait_ready()` returns its URL once /server_info answers."""

    def __init__(self, process: subprocess.Popen, port: int, log_path: Path) -> None:
        self.process, self.url, self.log_path = process, f"http://127.0.0.1:{port}", log_path

    def wait_ready(self, timeout: float = SERVER_START_SECONDS) -> str:
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"dagster dev exited with {self.process.returncode}:\n{_tail(self.log_path)}")
            try:
                with urllib.request.urlopen(f"{self.url}/server_info", timeout=2) as answer:
                    if answer.status == 200:
                        return self.url
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"dagster dev did not answer /server_info in {timeout} s:\n{_tail(self.log_path)}")
            time.sleep(0.5)


@contextmanager
def dagster_dev(env: dict[str, str], workdir: Path) -> Iterator[DevServer]:
    """`dagster dev` (webserver + daemon) on a free port, started at once so the caller can
    prepare data while it boots. The whole process group is stopped on the way out."""
    port = free_port()
    log_path = workdir / "dagster_dev.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [DAGSTER, "dev", "-m", "tracer_assets.definitions", "-p", str(port), "-h", "127.0.0.1"],
            cwd=workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield DevServer(process, port, log_path)
    except BaseException:
        print(_tail(log_path))
        raise
    finally:
        stop_process_group(process)


def stop_process_group(process: subprocess.Popen, grace_seconds: float = 30) -> None:
    """SIGTERM to the group (dagster dev stops its webserver, daemon and code server), SIGKILL
    whatever is left after the grace period."""
    group = process.pid  # start_new_session: the group id is the leader's pid
    try:
        os.killpg(group, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout=grace_seconds)
    except subprocess.TimeoutExpired:
        pass
    deadline = time.monotonic() + grace_seconds
    while group_members(group) and time.monotonic() < deadline:
        time.sleep(0.2)
    if group_members(group):
        os.killpg(group, signal.SIGKILL)
        process.wait(timeout=10)
        time.sleep(0.5)
    left = group_members(group)
    assert not left, f"processes of dagster dev still running after SIGKILL: {left}"


def group_members(group: int) -> list[int]:
    """Live (not zombie) processes of a process group, from /proc."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def _tail(path: Path, chars: int = 6000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""


def newest_signals_storage_id(instance: dg.DagsterInstance) -> tuple[int, str]:
    record = instance.fetch_materializations(SIGNALS_KEY, limit=1).records[0]
    return record.storage_id, record.run_id


def wait_for_decision_run(
    instance: dg.DagsterInstance, storage_id: int, timeout: float = DECISION_SECONDS
) -> dg.DagsterRun:
    """The sensor's decision run for this signal event, once it has finished (fails if it failed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = instance.get_runs(dg.RunsFilter(job_name=DECISION_JOB, tags={SIGNAL_STORAGE_TAG: str(storage_id)}))
        if runs and runs[0].is_finished:
            assert len(runs) == 1, [r.run_id for r in runs]
            run = runs[0]
            if not run.is_success:
                errors = [
                    str(e.dagster_event.event_specific_data)
                    for e in instance.all_logs(run.run_id)
                    if e.dagster_event and e.dagster_event.is_failure
                ]
                raise AssertionError(f"decision run {run.run_id} ended {run.status}: {errors}")
            return run
        time.sleep(0.5)
    raise TimeoutError(f"no finished decision run for signal event {storage_id} within {timeout} s")


def read_rows(database: str, query: str, params: list, timeout: float = 30) -> list[dict]:
    """Rows from a read-only connection, retrying while a writer holds the file's lock."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with duckdb.connect(database, read_only=True) as connection:
                return connection.sql(query, params=params).pl().to_dicts()
        except duckdb.IOException as error:
            if "lock" not in str(error).lower() or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.mark.slow
def test_dagster_dev_answers_a_signals_materialization_with_a_decision_and_its_order(tracer_env, tmp_path, monkeypatch):
    home = prepare_dagster_home(Path(tracer_env["DAGSTER_HOME"]))
    settings_env = scene_environment(tmp_path, home)
    for name, value in settings_env.items():
        monkeypatch.setenv(name, value)
    env = dict(os.environ)
    database = settings_env["TRACER_DUCKDB_PATH"]

    with dagster_dev(env, tmp_path) as server, dg.DagsterInstance.get() as instance:
        set_the_scene(settings_env)  # while the server boots: it touches no DuckDB file
        server.wait_ready()
        assert instance.fetch_materializations(SIGNALS_KEY, limit=1).records == []
        # A shell materializes the signals while the server runs.
        done = subprocess.run(
            [
                DAGSTER,
                "asset",
                "materialize",
                "-m",
                "tracer_assets.definitions",
                "--select",
                f"{SIGNALS_KEY.to_user_string()},{HISTORY_KEY.to_user_string()}",
            ],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        storage_id, signals_run = newest_signals_storage_id(instance)
        run = wait_for_decision_run(instance, storage_id)
        assert instance.get_run_by_id(signals_run).tags.get("dagster/sensor_name") is None  # the shell's run
        # One decision run in all: the sensor answered the shell's event and nothing else.
        assert [r.run_id for r in instance.get_runs(dg.RunsFilter(job_name=DECISION_JOB))] == [run.run_id]

    assert run.tags["dagster/sensor_name"] == "signal_sensor"
    assert run.tags["dagster/run_key"] == f"signals:{storage_id}"
    decisions = read_rows(
        database, "SELECT * FROM trading.decisions WHERE signal_storage_id = ? ORDER BY symbol", [storage_id]
    )
    assert [(d["symbol"], d["action"], d["timeframe"]) for d in decisions] == [
        (BUY_SYMBOL, "BUY", BUY_TIMEFRAME),
        ("ETH/USDT", "HOLD", None),
    ]
    assert all(d["run_id"] == run.run_id and d["mode"] == "DRY" for d in decisions)
    buy = decisions[0]
    assert buy["stop_loss"] < buy["price"] < buy["take_profit"]

    orders = read_rows(database, "SELECT * FROM trading.orders", [])
    assert len(orders) == 1
    order = orders[0]
    assert (order["signal_storage_id"], order["decision_id"], order["run_id"]) == (
        storage_id,
        buy["decision_id"],
        run.run_id,
    )
    assert (order["symbol"], order["side"], order["mode"]) == (BUY_SYMBOL, "buy", "DRY")
    assert order["reason"] == "approved" and order["status"] in ("pending", "filled"), order
    # Sized by the risk manager between MIN_ALLOWED_ORDER_AMOUNT and half Kelly of ORDER_AMOUNT.
    assert Decimal(1) <= order["amount"] * order["price"] <= Decimal("13.34")
    edge = next(c for c in json.loads(order["risk_checks"]) if c["name"] == "strategy_edge")
    assert edge["passed"] and "Kelly f* 0.2666" in edge["detail"], edge
    # The decision read the signals that shell's run published: its candle is that run's BTC/USDT 5m signal.
    (published,) = read_rows(
        database,
        "SELECT ts FROM signals.signal_history WHERE run_id = ? AND symbol = ? AND timeframe = ?",
        [signals_run, BUY_SYMBOL, BUY_TIMEFRAME],
    )
    assert buy["ts"] == published["ts"]
    # The seed's audit trail has the order too.
    audit = [
        json.loads(line) for line in (tmp_path / "logs" / "macro_ccxt_orders_audit.jsonl").read_text().splitlines()
    ]
    assert [a["client_order_id"] for a in audit if a["type"] == "order"] == [order["client_order_id"]]
