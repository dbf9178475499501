"""`make dev`: the Dagster UI (webserver + daemon) on a replay clock that moves, so every tick
has a new candle to fetch, new signals and a new decision to make.

Unless told otherwise (TRACER_REPLAY_START, TRACER_REPLAY_SPEED, TRACER_REPLAY_ANCHOR), the
clock starts DEV_DAYS before the end of the data, at a speed that brings a new base candle
every tick or so, anchored at launch: the anchor is computed once here and inherited by every
process `dagster dev` starts, so they agree on the time and a reloaded code server does not
jump. The instance and the DuckDB file are make dev's own (`--dir`, one folder per exchange),
and hold market data only up to the clock: a file with candles from the clock's future (an
earlier session's clock ran past this one's start) is started afresh. The days before the
clock (on a real exchange, HISTORY_DAYS of them) are materialized before the UI starts, under
the clock itself, so nothing past it can be stored. On a real exchange (TRACER_EXCHANGE) there
is no clock to set. On an instance without a ranking of the strategies (a new one, or one
whose research never got that far) research_job is queued, and the daemon starts it with the UI:
the decisions have strategies to trade within minutes rather than after the 00:00 UTC schedule.

    python -m tracer_assets.dev [--dir .tracer/dev] [--days 3] [dagster dev options, e.g. -p 3100]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
import warnings
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

from tracer_assets.market import settings as market_settings
from tracer_assets.market.keys import CANDLES_TABLE
from tracer_assets.settings import Settings

if TYPE_CHECKING:
    from dagster import DagsterInstance

REPO = Path(__file__).resolve().parents[1]
DEV_DAYS = 3
# On a real exchange, the days fetched into a new file: a 4h signal needs 200 candles, 33.3 days.
HISTORY_DAYS = 35
DAGSTER = str(Path(sys.executable).with_name("dagster"))
MAKE_DEFAULTED = ("DAGSTER_HOME", "TRACER_DUCKDB_PATH")
# The research run make dev queues on an instance without research: its tags, about how long it takes.
RESEARCH_TAGS = {"tracer/launched_by": "make dev"}
RESEARCH_MINUTES = 3  # 2 min 47 s on 2 cores, beside the first ticks


def replay_data_end(market: market_settings.MarketSettings) -> datetime:
    """Where the replay data ends for the configured symbols (the stopped clock's time)."""
    from tracer_assets.resources.replay_exchange import ReplayExchange

    replay = ReplayExchange(market.replay_dir, market.symbols, market.base_timeframe)
    return datetime.fromtimestamp(replay.data_end_ms / 1000, tz=UTC)


def dev_speed(settings: Settings) -> int:
    """Dataset seconds per wall second that close a new base candle every tick or sooner
    (2 for 5m candles and a tick every 3 minutes)."""
    from tracer_assets.policies import tick_interval

    tick = tick_interval(settings).total_seconds()
    return max(1, math.ceil(settings.market.base_timeframe_seconds / tick))


def clock_environment(env: Mapping[str, str], now: datetime, days: float = DEV_DAYS) -> dict[str, str]:
    """The replay clock settings make dev adds to `env`: only the ones not set there, none off replay."""
    from tracer_assets.policies import tick_interval
    from tracer_assets.settings import load_settings

    settings = load_settings(env)
    market = settings.market
    if not market.is_replay:
        return {}
    added = {}
    if market.replay_start is None:
        start = replay_data_end(market) - timedelta(days=days)
        added["TRACER_REPLAY_START"] = start.strftime("%Y-%m-%dT%H:%M:%SZ")
    if not env.get("TRACER_REPLAY_SPEED", "").strip():
        added["TRACER_REPLAY_SPEED"] = str(dev_speed(settings))
    if market.replay_anchor is None:
        added["TRACER_REPLAY_ANCHOR"] = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if not env.get("TRACER_MAX_SIGNAL_AGE_SECONDS", "").strip():
        # A signal may be as old as one tick of wall time, in the clock's seconds: on a fast clock
        # the loop's own minute (tick run, sensor, decision run) is many candles of market time.
        speed = float(added["TRACER_REPLAY_SPEED"]) if "TRACER_REPLAY_SPEED" in added else market.replay_speed
        allowed = tick_interval(settings).total_seconds() * speed
        if allowed > settings.trading.max_signal_age_seconds:
            added["TRACER_MAX_SIGNAL_AGE_SECONDS"] = f"{allowed:g}"
    return added


def dev_files(folder: Path) -> dict[str, str]:
    """Where make dev keeps its instance, DuckDB file and outputs."""
    return {
        "DAGSTER_HOME": str(folder / "dagster"),
        "TRACER_DUCKDB_PATH": str(folder / "tracer.duckdb"),
        "TRACER_LOG_DIR": str(folder / "logs"),
        "TRACER_REPORTS_DIR": str(folder / "reports"),
        "MACRO_BACKTEST_JSON_PATH": str(folder / "backtest" / "backtest_results.json"),
    }


def newest_candle_close(database: Path, base_seconds: int) -> datetime | None:
    """When the newest stored base candle closed; None for a file without candles."""
    if not database.exists():
        return None
    try:
        connection = duckdb.connect(str(database), read_only=True)
    except duckdb.IOException as exc:  # DuckDB's lock: its writer is another process
        raise SystemExit(f"make dev: cannot read {database} ({exc}); is another make dev running on it?") from exc
    with connection:
        found = connection.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema || '.' || table_name = ?",
            [CANDLES_TABLE],
        ).fetchall()[0][0]
        if not found:
            return None
        newest = connection.execute(f"SELECT max(ts) FROM {CANDLES_TABLE}").fetchall()[0][0]
    return None if newest is None else newest.astimezone(UTC) + timedelta(seconds=base_seconds)


def ensure_instance(home: Path, env: Mapping[str, str]) -> None:
    """The project's instance config and the pool's limit, as the Makefile's `instance` sets them."""
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():
        shutil.copy(REPO / ".dagster" / "dagster.yaml", home / "dagster.yaml")
    marker = home / ".duckdb_pool"
    if not marker.exists():
        subprocess.run([DAGSTER, "instance", "concurrency", "set", "duckdb", "1"], env=dict(env), check=True)
        marker.touch()


def history_range(settings: Settings, now: datetime, newest_close: datetime | None) -> tuple[str, str]:
    """The days to materialize before the UI starts, up to the exchange's day: from the newest
    stored day when the file has candles, else every day of the replay data before the clock
    (about 25 s for the bundled 8 months), or HISTORY_DAYS of a real exchange."""
    from tracer_assets.market.partitions import candle_partitions

    keys = candle_partitions(settings).get_partition_keys()
    if newest_close is not None:
        first = (newest_close - timedelta(seconds=1)).strftime("%Y-%m-%d")
    elif settings.market.is_replay:
        first = keys[0]
    else:
        first = (now - timedelta(days=HISTORY_DAYS)).strftime("%Y-%m-%d")
    return max(first, keys[0]), min(now.strftime("%Y-%m-%d"), keys[-1])


def materialize_history(settings: Settings, first: str, last: str) -> bool:
    """One tick job run over the days, on make dev's instance (DAGSTER_HOME of the environment)."""
    import dagster as dg
    from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

    warnings.filterwarnings("ignore", category=dg.BetaWarning)  # Dagster's notes on beta parameters
    from tracer_assets.definitions import TICK_JOB, build_definitions

    with dg.DagsterInstance.get() as instance:
        result = (
            build_definitions(settings)
            .resolve_job_def(TICK_JOB)
            .execute_in_process(
                instance=instance,
                tags={ASSET_PARTITION_RANGE_START_TAG: first, ASSET_PARTITION_RANGE_END_TAG: last},
                raise_on_error=False,
                run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
            )
        )
    return result.success


def prepare(folder: Path, env: dict[str, str]) -> None:
    """make dev's files: afresh when they hold candles past the exchange's clock; the instance;
    the history up to the clock. `env` is the environment make dev runs in (set in os.environ)."""
    from tracer_assets.resources.exchange import ExchangeResource
    from tracer_assets.settings import load_settings

    settings = load_settings(env)
    now = ExchangeResource.from_settings(settings).now()
    newest = newest_candle_close(settings.duckdb_path, settings.market.base_timeframe_seconds)
    if newest is not None and newest > now:
        print(
            f"make dev: {folder} holds candles closed up to {newest:%Y-%m-%d %H:%M}, after the clock's "
            f"{now:%Y-%m-%d %H:%M}: starting it afresh"
        )
        shutil.rmtree(folder)
        newest = None
    ensure_instance(Path(env["DAGSTER_HOME"]), env)
    first, last = history_range(settings, now, newest)
    print(f"make dev: materializing market data, indicators and signals for {first} .. {last} ...", flush=True)
    began = time.perf_counter()
    if not materialize_history(settings, first, last):
        raise SystemExit("make dev: the history run failed; its events are in the UI's runs")
    print(f"make dev: done in {time.perf_counter() - began:.0f} s", flush=True)


def research_state(instance: DagsterInstance) -> str | None:
    """Why make dev starts no research on this instance: the strategies are ranked (the newest
    materialization of ranking/strategies, the table the strategy decider reads), or a research
    run waits in the queue (queued by an earlier launch stopped before the daemon started it).
    None: neither, so the decisions would hold until 00:00 UTC: make dev queues research_job."""
    import dagster as dg

    from tracer_assets.definitions import RESEARCH_JOB
    from tracer_assets.ranking.keys import STRATEGY_RANKING_KEY

    ranking = instance.get_latest_materialization_event(STRATEGY_RANKING_KEY)
    if ranking is not None:
        ranked = datetime.fromtimestamp(ranking.timestamp, tz=UTC)
        return f"strategies ranked by research run {ranking.run_id} ({ranked:%Y-%m-%d %H:%M} UTC)"
    waiting = dg.RunsFilter(job_name=RESEARCH_JOB, statuses=[dg.DagsterRunStatus.QUEUED])
    queued = instance.get_run_records(waiting, limit=1)
    if queued:
        return f"research run {queued[0].dagster_run.run_id} is queued: the daemon starts it with the UI"
    return None


def queue_research(env: Mapping[str, str]) -> str:
    """research_job queued on the instance, as the daily_research schedule submits it: the
    daemon launches it once `dagster dev` is up, through the code location (the job's own
    executor: its steps in parallel processes forked from a forkserver), so it is one of the UI's
    runs, its end launches report_job as any research run's does, and Ctrl-C stops it with the UI
    (a run of `dagster job execute` has no code location: the report sensors never see it). Its
    run id; RuntimeError when the CLI could not queue it (about 10 s to load the code location)."""
    import uuid

    from tracer_assets.definitions import RESEARCH_JOB

    run_id = str(uuid.uuid4())
    command = [DAGSTER, "job", "launch", "-w", str(REPO / "workspace.yaml"), "-j", RESEARCH_JOB]
    command += ["--run-id", run_id, "--tags", json.dumps(RESEARCH_TAGS)]
    done = subprocess.run(command, env=dict(env), cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"`{' '.join(command)}` failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return run_id


def start_research(env: Mapping[str, str]) -> None:
    """research_job queued when the instance has neither a ranking of the strategies nor a queued
    research run. It reads the DuckDB file, which holds candles up to the clock only (prepare,
    then the ticks): nothing from the clock's future can reach the rankings."""
    import dagster as dg

    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        state = research_state(instance)
    if state is not None:
        print(f"make dev: {state}; research runs daily at 00:00 UTC (daily_research) or from the UI (research_job)")
        return
    print("make dev: no research on this instance yet: queueing research_job ...", flush=True)
    try:
        run_id = queue_research(env)
    except RuntimeError as failure:  # the UI starts anyway: the research can be launched from it
        print(f"make dev: {failure}\nmake dev: launch research_job from the UI", file=sys.stderr, flush=True)
        return
    print(
        f"make dev: research run {run_id} starts with the UI (about {RESEARCH_MINUTES} minutes, its steps and logs "
        "in the UI's Runs page); decisions hold until it has ranked the strategies",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=REPO / ".tracer" / "dev", help="make dev's files, per exchange")
    parser.add_argument("--days", type=float, default=DEV_DAYS, help="clock start: days before the end of the data")
    args, dagster_args = parser.parse_known_args(argv)

    env = dict(os.environ)
    market = market_settings.load(env)
    folder = args.dir.absolute() / market.exchange
    # The Makefile defaults DAGSTER_HOME and the DuckDB file to the demo's: make dev's are its own.
    files = dev_files(folder)
    env.update({name: value for name, value in files.items() if name in MAKE_DEFAULTED or not env.get(name)})
    env.update(clock_environment(env, datetime.now(UTC), args.days))
    os.environ.update(env)  # the history run below reads the settings, and Dagster DAGSTER_HOME, from here
    market = market_settings.load(env)
    if market.is_replay and market.replay_start is not None:
        print(
            f"make dev: replay clock at {market.replay_start:%Y-%m-%d %H:%M} UTC at launch "
            f"({market.replay_anchor:%H:%M:%S} UTC), {market.replay_speed:g}x; signals tradable for "
            f"{env.get('TRACER_MAX_SIGNAL_AGE_SECONDS') or 'two base candles'} s of its time"
        )
    print(f"make dev: instance {env['DAGSTER_HOME']}, DuckDB file {env['TRACER_DUCKDB_PATH']}", flush=True)
    prepare(folder, env)
    start_research(env)
    os.execve(DAGSTER, [DAGSTER, "dev", "-w", str(REPO / "workspace.yaml"), *dagster_args], env)


if __name__ == "__main__":
    sys.exit(main())
