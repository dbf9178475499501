"""Shared fixtures: every test gets its own DuckDB file and Dagster instance in tmp_path,
built from the project's own instance config (.dagster/dagster.yaml)."""

from __future__ import annotations

import os
import shutil
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


def copy_replay_files(target: Path, symbols: list[str], timeframe: str = "5m") -> Path:
    """A TRACER_REPLAY_DIR holding the bundled files of `symbols`."""
    target.mkdir(parents=True, exist_ok=True)
    for symbol in symbols:
        name = f"{symbol.replace('/', '_')}-{timeframe}.parquet"
        shutil.copy(BUNDLED_REPLAY_DIR / name, target / name)
    return target


def bundled_frame(symbol: str, timeframe: str = "5m") -> pl.DataFrame:
    return pl.read_parquet(BUNDLED_REPLAY_DIR / f"{symbol.replace('/', '_')}-{timeframe}.parquet")
