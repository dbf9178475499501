"""The way people run Tracer from a shell: `dagster definitions validate`, `dagster asset
materialize` in a subprocess, two runs at once on one DuckDB file and one instance, and the
real ccxt binance client (through TRACER_EXCHANGE / TRACER_EXCHANGE_URLS) against a local
server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import duckdb
import pytest
from conftest import REPO
from fake_binance import FakeBinance

from tracer_assets.definitions import MARKET_DATA_JOB, build_definitions
from tracer_assets.settings import SettingsError, load_settings

DAGSTER = str(Path(sys.executable).with_name("dagster"))
SELECT_PARTITIONED = "market/candles,market/candles_resampled"
RACE_WINDOW = 0.5  # seconds: two waiting steps taking a freed slot together


def dagster_cli(*args: str, env: dict[str, str], wait: bool = True):
    command = [DAGSTER, *args]
    if not wait:
        return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def rows_per_day(database: str) -> dict[str, int]:
    with duckdb.connect(database, read_only=True) as connection:
        return dict(
            connection.execute(
                "SELECT strftime(ts, '%Y-%m-%d'), count(*) FROM market.candles GROUP BY 1 ORDER BY 1"
            ).fetchall()
        )


def test_dagster_validates_the_workspace(tracer_env):
    done = dagster_cli("definitions", "validate", "-w", "workspace.yaml", env=dict(os.environ))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Validation successful" in done.stdout + done.stderr


def test_cli_materializes_a_range_of_days_and_the_view(tracer_env):
    env = dict(os.environ)
    done = dagster_cli(
        "asset",
        "materialize",
        "-m",
        "tracer_assets.definitions",
        "--select",
        SELECT_PARTITIONED,
        "--partition-range",
        "2024-05-01...2024-05-03",
        env=env,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    done = dagster_cli("asset", "materialize", "-m", "tracer_assets.definitions", "--select", "market/ohlcv", env=env)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]

    assert rows_per_day(env["TRACER_DUCKDB_PATH"]) == {f"2024-05-0{d}": 2 * 288 for d in (1, 2, 3)}
    with duckdb.connect(env["TRACER_DUCKDB_PATH"], read_only=True) as connection:
        assert dict(connection.execute("SELECT timeframe, count(*) FROM market.ohlcv GROUP BY 1").fetchall()) == {
            "5m": 1728,
            "15m": 576,
            "1h": 144,
            "4h": 36,
        }
    # Both runs are on the persistent instance the UI reads.
    with dg.DagsterInstance.get() as instance:
        runs = instance.get_runs()
        assert [run.is_success for run in runs] == [True, True]


def test_two_runs_started_at_once_both_succeed(tracer_env):
    env = dict(os.environ)
    # The instance is prepared as `make demo` / `make dev` prepare it: its storage exists and
    # the duckdb pool's limit is set. Left to first use, two processes starting together on
    # a brand-new instance race in its schema migration and can both initialize the pool.
    done = dagster_cli("instance", "concurrency", "set", "duckdb", "1", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    first = dagster_cli(
        "asset",
        "materialize",
        "-m",
        "tracer_assets.definitions",
        "--select",
        SELECT_PARTITIONED,
        "--partition-range",
        "2024-06-01...2024-06-03",
        env=env,
        wait=False,
    )
    second = dagster_cli(
        "asset",
        "materialize",
        "-m",
        "tracer_assets.definitions",
        "--select",
        SELECT_PARTITIONED,
        "--partition-range",
        "2024-06-04...2024-06-06",
        env=env,
        wait=False,
    )
    outputs = [process.communicate(timeout=300)[0] for process in (first, second)]
    assert [first.returncode, second.returncode] == [0, 0], "\n\n".join(o[-3000:] for o in outputs)
    assert rows_per_day(env["TRACER_DUCKDB_PATH"]) == {f"2024-06-0{d}": 2 * 288 for d in range(1, 7)}
    with dg.DagsterInstance.get() as instance:
        runs = instance.get_runs()
        assert len(runs) == 2 and all(run.is_success for run in runs)
        # The "duckdb" pool (limit 1 in dagster.yaml) lets one writing step run at a time,
        # across both runs: no two step intervals overlap ...
        steps = sorted(interval for run in runs for interval in _step_intervals(instance, run.run_id))
    assert len(steps) == 4
    for (a_start, a_end), (b_start, _) in zip(steps, steps[1:]):
        if a_end <= b_start:
            continue
        # ... but for Dagster's SQLite claim race: two steps waiting for the slot can both take
        # it when it frees (sql_event_log._claim_concurrency_slot selects a free slot, then
        # updates it by id; FOR UPDATE SKIP LOCKED does nothing in SQLite). Its signature: both
        # started together right after another step released the slot. DuckDB's file lock, and
        # the connection's retries on it, then keep the writes one at a time (both runs wrote
        # every row, above). A pool that did not hold at all would overlap anywhere else.
        released = [end for _, end in steps if end <= a_start]
        assert released and a_start - max(released) < RACE_WINDOW and b_start - a_start < RACE_WINDOW, steps


def _step_intervals(instance: dg.DagsterInstance, run_id: str) -> list[tuple[float, float]]:
    started, finished = {}, {}
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        if event is None:
            continue
        if event.event_type == dg.DagsterEventType.STEP_START:
            started[event.step_key] = record.timestamp
        elif event.event_type == dg.DagsterEventType.STEP_SUCCESS:
            finished[event.step_key] = record.timestamp
    return [(started[key], finished[key]) for key in started]


def test_ccxt_binance_through_the_asset_skips_a_failing_symbol(tracer_env, monkeypatch):
    """TRACER_EXCHANGE=binance with the real ccxt client against a local Binance: the failing
    symbol is skipped and reported, the others are stored, and the WARN check says so."""
    with FakeBinance() as server:
        server.fail_always("ETHUSDT", status=503)
        monkeypatch.setenv("TRACER_EXCHANGE", "binance")
        monkeypatch.setenv("TRACER_EXCHANGE_URLS", json.dumps({"*": server.url}))
        monkeypatch.setenv("TRACER_SYMBOLS", "BTC/USDT,ETH/USDT,SOL/USDT")
        monkeypatch.setenv("TRACER_START_DATE", "2024-01-01")
        monkeypatch.setenv("TRACER_END_DATE", "2024-01-10")
        monkeypatch.setenv("TRACER_FETCH_RETRIES", "2")
        monkeypatch.setenv("TRACER_FETCH_BACKOFF_SECONDS", "0.01")
        monkeypatch.setenv("TRACER_FETCH_PAGE_LIMIT", "100")
        defs = build_definitions(load_settings())
        with dg.DagsterInstance.get() as instance:
            result = defs.resolve_job_def(MARKET_DATA_JOB).execute_in_process(
                instance=instance, partition_key="2024-01-05"
            )
        assert result.success
        klines = server.requests(path="/api/v3/klines")
    assert len([r for r in klines if r.symbol == "BTCUSDT"]) == 3  # 288 candles in pages of 100
    assert len([r for r in klines if r.symbol == "ETHUSDT"]) == 3  # first try + 2 retries
    assert rows_per_day(tracer_env["TRACER_DUCKDB_PATH"]) == {"2024-01-05": 2 * 288}
    metadata = result.asset_materializations_for_node("market__candles")[0].metadata
    assert list(metadata["failed_symbols"].value) == ["ETH/USDT"]
    warn = [e for e in result.get_asset_check_evaluations() if e.check_name == "all_symbols_fetched"][0]
    assert not warn.passed and warn.severity == dg.AssetCheckSeverity.WARN


def test_an_unknown_exchange_id_is_refused_at_load_by_name(tracer_env, monkeypatch):
    monkeypatch.setenv("TRACER_EXCHANGE", "binanse")
    with pytest.raises(SettingsError, match="TRACER_EXCHANGE='binanse'.*did you mean binance"):
        build_definitions(load_settings())
