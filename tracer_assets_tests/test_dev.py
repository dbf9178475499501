"""`make dev`'s files (tracer_assets/dev.py): its own instance and DuckDB file, holding market
data only up to the replay clock, started afresh when an earlier session's clock ran past it;
research_job queued on an instance without a ranking of the strategies.
The clock itself is tested in test_replay_exchange.py."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
from conftest import clean_tracer_environment
from dagster._core.remote_origin import GrpcServerCodeLocationOrigin, RemoteJobOrigin, RemoteRepositoryOrigin

from tracer_assets import dev
from tracer_assets.definitions import RESEARCH_JOB
from tracer_assets.dev import (
    clock_environment,
    dev_files,
    history_range,
    newest_candle_close,
    prepare,
    research_state,
    start_research,
)
from tracer_assets.ranking.keys import MODEL_RANKING_KEY, STRATEGY_RANKING_KEY
from tracer_assets.settings import load_settings

DATA_END = datetime(2024, 9, 6, 4, 45, tzinfo=UTC)  # the common end of the bundled BTC and ETH
FIRST_DAY = "2024-07-28"  # the 200 4h candles a signal needs before the clocks below, and no more


def dev_environment(tmp_path, monkeypatch, **given: str) -> dict[str, str]:
    """What main() puts in the environment before prepare(): the files, then the clock."""
    clean_tracer_environment(monkeypatch)
    env = {"TRACER_SYMBOLS": "BTC/USDT", "TRACER_START_DATE": FIRST_DAY, **given, **dev_files(tmp_path / "replay")}
    env |= clock_environment(env, datetime.now(UTC))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def stored(database: str) -> tuple[int, datetime]:
    with duckdb.connect(database, read_only=True) as connection:
        count, newest = connection.execute("SELECT count(*), max(ts) FROM market.candles").fetchall()[0]
    return count, newest.astimezone(UTC)


def runs(env: dict[str, str]) -> int:
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        return len(instance.get_runs())


def test_make_dev_stores_history_up_to_its_clock_and_starts_afresh_after_a_later_clock(tmp_path, monkeypatch):
    folder = tmp_path / "replay"
    env = dev_environment(tmp_path, monkeypatch)
    prepare(folder, env)
    start = DATA_END - timedelta(days=3)
    # Every day from TRACER_START_DATE up to the clock's start, nothing after it.
    count, newest = stored(env["TRACER_DUCKDB_PATH"])
    assert newest == start - timedelta(minutes=5)
    assert count == (start - datetime(2024, 7, 28, tzinfo=UTC)) // timedelta(minutes=5)
    assert (folder / "dagster" / "dagster.yaml").exists() and runs(env) == 1

    # Launched again with the clock a day earlier: the file holds that clock's future, so it is
    # started afresh (its instance too) and filled up to the new start only.
    env = dev_environment(tmp_path, monkeypatch, TRACER_REPLAY_START="2024-09-02T00:00:00Z")
    prepare(folder, env)
    count, newest = stored(env["TRACER_DUCKDB_PATH"])
    assert newest == datetime(2024, 9, 1, 23, 55, tzinfo=UTC)
    assert count == 36 * 288 and runs(env) == 1


def test_a_file_with_candles_continues_from_its_newest_day(tmp_path, monkeypatch):
    env = dev_environment(tmp_path, monkeypatch)
    settings = load_settings(env)
    now = datetime(2024, 9, 4, 1, 0, tzinfo=UTC)
    assert history_range(settings, now, None) == (FIRST_DAY, "2024-09-04")
    assert history_range(settings, now, datetime(2024, 9, 3, 0, 0, tzinfo=UTC)) == ("2024-09-02", "2024-09-04")
    assert newest_candle_close(tmp_path / "none.duckdb", 300) is None


def test_research_is_queued_only_on_an_instance_without_a_ranking_of_the_strategies_or_a_queued_research_run(
    tmp_path, monkeypatch, capsys
):
    env = dev_environment(tmp_path, monkeypatch)
    os.makedirs(env["DAGSTER_HOME"])  # as prepare() leaves it
    queued = []
    # Not the real CLI (10 s to load the code location) nor the 4-minute run: what make dev would queue.
    monkeypatch.setattr(dev, "queue_research", lambda env: queued.append(env["DAGSTER_HOME"]) or "the-run")

    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        assert research_state(instance) is None
        instance.report_runless_asset_event(dg.AssetMaterialization(MODEL_RANKING_KEY))  # not the one trading reads
        instance.add_run(dg.DagsterRun(job_name=RESEARCH_JOB, status=dg.DagsterRunStatus.FAILURE))
        assert research_state(instance) is None
    start_research(env)
    assert queued == [env["DAGSTER_HOME"]]
    assert "research run the-run starts with the UI" in capsys.readouterr().out

    # An earlier launch queued one and was stopped before the daemon started it: the daemon will.
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        location = GrpcServerCodeLocationOrigin(host="localhost", port=4000, location_name="tracer")
        origin = RemoteJobOrigin(RemoteRepositoryOrigin(location, "__repository__"), RESEARCH_JOB)
        run = dg.DagsterRun(job_name=RESEARCH_JOB, status=dg.DagsterRunStatus.QUEUED, remote_job_origin=origin)
        instance.add_run(run)
        assert research_state(instance) == f"research run {run.run_id} is queued: the daemon starts it with the UI"
        instance.report_run_canceled(run)
        instance.report_runless_asset_event(dg.AssetMaterialization(STRATEGY_RANKING_KEY))
        assert research_state(instance).startswith("strategies ranked by research run")
    start_research(env)
    assert len(queued) == 1 and "make dev: strategies ranked by research run" in capsys.readouterr().out


def test_the_queued_research_run_has_the_code_location_the_report_sensors_watch(tmp_path, monkeypatch):
    # The CLI for real (about 10 s: it loads the code location); no daemon, so the run stays queued.
    env = dev_environment(tmp_path, monkeypatch)
    os.makedirs(env["DAGSTER_HOME"])
    (Path(env["DAGSTER_HOME"]) / "dagster.yaml").write_bytes((dev.REPO / ".dagster" / "dagster.yaml").read_bytes())
    run_id = dev.queue_research(env)
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        run = instance.get_run_by_id(run_id)
        assert run.job_name == RESEARCH_JOB and run.status == dg.DagsterRunStatus.QUEUED
        assert run.remote_job_origin.repository_origin.code_location_origin.location_name == "tracer"
        assert run.tags["tracer/launched_by"] == "make dev"
        assert research_state(instance) == f"research run {run_id} is queued: the daemon starts it with the UI"
