"""Shared fixtures: every test gets its own DuckDB file and Dagster instance in tmp_path,
built from the project's own instance config (.dagster/dagster.yaml)."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest

import tracer_assets
from tracer_assets.data import BUNDLED_REPLAY_DIR

REPO = Path(tracer_assets.__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("TRACER_SHARED_DATA", REPO.parent / "shared" / "data"))
TEST_SYMBOLS = "BTC/USDT,ETH/USDT"


def clean_tracer_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forget any Tracer/seed setting of the shell running the tests."""
    from tracer_assets.settings import SETTINGS_TABLE

    for name, _, _ in SETTINGS_TABLE:
        monkeypatch.delenv(name, raising=False)
    for name in list(os.environ):
        if name.startswith("TRACER_"):
            monkeypatch.delenv(name, raising=False)


@pytest.fixture
def tracer_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A private DuckDB file and Dagster home (with the project's dagster.yaml), two symbols."""
    clean_tracer_environment(monkeypatch)
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / ".dagster" / "dagster.yaml", home / "dagster.yaml")
    env = {
        "DAGSTER_HOME": str(home),
        "TRACER_DUCKDB_PATH": str(tmp_path / "tracer.duckdb"),
        "TRACER_SYMBOLS": TEST_SYMBOLS,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def rules_decider(tracer_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """For scenes staged for the rules decider (signal quality, conviction, ATR stops): a module
    marks itself with `pytestmark = pytest.mark.usefixtures("rules_decider")`."""
    monkeypatch.setenv("TRACER_DECIDER", "rules")


def copy_replay_files(target: Path, symbols: list[str], timeframe: str = "5m") -> Path:
    """A TRACER_REPLAY_DIR holding the bundled files of `symbols`."""
    target.mkdir(parents=True, exist_ok=True)
    for symbol in symbols:
        name = f"{symbol.replace('/', '_')}-{timeframe}.parquet"
        shutil.copy(BUNDLED_REPLAY_DIR / name, target / name)
    return target


def bundled_frame(symbol: str, timeframe: str = "5m") -> pl.DataFrame:
    return pl.read_parquet(BUNDLED_REPLAY_DIR / f"{symbol.replace('/', '_')}-{timeframe}.parquet")


def write_ohlcv(database: str, symbol: str = "BTC/USDT", timeframe: str = "1h", bars: int = 2000) -> None:
    """market.ohlcv as a table of the first `bars` bundled candles of one series (what the
    research assets read), in a new DuckDB file."""
    import duckdb

    candles = bundled_frame(symbol, timeframe).head(bars).rename({"date": "ts"})
    with duckdb.connect(database) as connection:
        connection.execute("CREATE SCHEMA market")
        connection.register("candles", candles.to_arrow())
        connection.execute(
            f"CREATE TABLE market.ohlcv AS SELECT '{symbol}' AS symbol, '{timeframe}' AS timeframe, ts, open, high, "
            "low, close, volume FROM candles"
        )


# --- a tick's history, shared by the tests that train or research on it -----------------------

HISTORY_START, HISTORY_END = "2024-05-01", "2024-07-14"  # 75 days: 450 4h candles, 320 of them warm-up
MODEL_TIMEFRAMES = ("1h", "4h")
QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
SMALL_ML = {
    "TRACER_ML_ROUNDS": "20",
    "TRACER_ML_FOLDS": "2",
    "TRACER_ML_HORIZONS": "4",
    "TRACER_ML_FEATURE_SETS": "full",
    "TRACER_ML_TIMEFRAMES": ",".join(MODEL_TIMEFRAMES),
}


@dataclass(frozen=True)
class History:
    database: Path
    signals_metadata: dict  # the signals materialization of the history's run (no models yet)


def evaluate_tick(defs, instance):
    """One evaluation of the trading_tick schedule on `instance`, as the daemon makes it (the
    exchange resource of `defs`): its run requests or its skip reason."""
    import dagster as dg

    with dg.build_schedule_context(
        instance=instance, resources={"exchange": defs.resources["exchange"]}, repository_def=defs.get_repository_def()
    ) as context:
        return defs.resolve_schedule_def("trading_tick").evaluate_tick(context)


def node_metadata(result, node: str) -> dict:
    return {key: value.value for key, value in result.asset_materializations_for_node(node)[0].metadata.items()}


@pytest.fixture(scope="session")
def history(tmp_path_factory) -> History:
    """HISTORY_START..HISTORY_END through the trading tick in one run (as `make demo` does), on
    a throwaway instance: the tests copy the DuckDB file and start on an instance of their own."""
    import dagster as dg
    from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

    from tracer_assets.definitions import TICK_JOB, build_definitions
    from tracer_assets.settings import load_settings

    scratch = tmp_path_factory.mktemp("ml_history")
    with pytest.MonkeyPatch.context() as monkeypatch:
        clean_tracer_environment(monkeypatch)
        for name, value in {
            "TRACER_DUCKDB_PATH": str(scratch / "history.duckdb"),
            "TRACER_SYMBOLS": TEST_SYMBOLS,
            **SMALL_ML,
        }.items():
            monkeypatch.setenv(name, value)
        job = build_definitions(load_settings()).resolve_job_def(TICK_JOB)
        with dg.DagsterInstance.ephemeral() as instance:
            result = job.execute_in_process(
                instance=instance,
                run_config=QUIET,
                tags={ASSET_PARTITION_RANGE_START_TAG: HISTORY_START, ASSET_PARTITION_RANGE_END_TAG: HISTORY_END},
            )
        assert result.success
        return History(scratch / "history.duckdb", node_metadata(result, "signals"))
