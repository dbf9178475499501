"""The Dagster UI in a real browser, checked as a person checks it: `dagster dev` (webserver and
daemon) on a private instance, Debian's Chromium driven by Playwright.

- the global asset lineage shows every asset group of the code location;
- the latest daily report's page shows its plots (the `report` metadata's Markdown, images inline);
- a backfill of three `market/candles` days launched from the asset's Materialize dialog completes,
  and the days' candles are in DuckDB.

Playwright cannot download its own browser here: it launches Debian's `chromium`
(`apt-get install chromium`, which .ci/run does). Outside CI the test skips, saying what is
missing, when Chromium or Playwright is not installed; in CI (CI=true) a missing one fails it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import duckdb
import psutil
import pytest
from conftest import REPO, TEST_SYMBOLS

from tracer_assets.definitions import REPORT_JOB, build_definitions
from tracer_assets.settings import load_settings

pytestmark = pytest.mark.slow

DAGSTER = str(Path(sys.executable).with_name("dagster"))
# Chromium as root in a container, offline: no sandbox, no GPU, none of its background connections.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# dagster dev started from a shell job or a CI runner may inherit SIGINT ignored; it then ignores
# SIGTERM too (Dagster maps SIGTERM to SIGINT's handler) and cannot be stopped cleanly.
EXEC_WITH_SIGINT = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execv(sys.argv[1], sys.argv[1:])"
)
REPORT_KEY = dg.AssetKey(["reports", "daily"])
CANDLES_KEY = dg.AssetKey(["market", "candles"])
# Three whole bundled days, away from the replay's last day, which the trading tick (on its
# schedule under `dagster dev`) writes: these rows can come only from the backfill.
BACKFILL_DAYS = ("2024-09-01", "2024-09-02", "2024-09-03")
CANDLES_PER_DAY = 288  # 5m candles
SERVER_START_SECONDS = 120
BACKFILL_SECONDS = 300
UI_TIMEOUT_MS = 60_000
RUNNING_BACKFILL = {"REQUESTED", "CANCELING", "FAILING"}


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def find_chromium() -> str | None:
    path = shutil.which("chromium") or "/usr/bin/chromium"
    return path if os.path.isfile(path) and os.access(path, os.X_OK) else None


@pytest.fixture
def chromium() -> str:
    """Debian's Chromium, with Playwright to drive it; skip or fail as the module says."""
    path = find_chromium()
    missing = [
        *([] if path else ["Debian's chromium (apt-get install chromium)"]),
        *([] if importlib.util.find_spec("playwright") else ["playwright (pip install -e '.[test]')"]),
    ]
    if not missing:
        return path
    if not in_ci():  # `make test` on a fresh machine: say what is missing, do not fail for it
        pytest.skip(f"the browser test needs {' and '.join(missing)} (.ci/run installs them; in CI this fails)")
    pytest.fail(
        f"the browser test needs {' and '.join(missing)}: not installed"
        + (" in CI (CI=true), where .ci/run installs it" if in_ci() else "")
    )


@dataclass(frozen=True)
class DagsterDev:
    url: str
    log: Path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def log_tail(log: Path, chars: int = 4000) -> str:
    return log.read_text(errors="replace")[-chars:] if log.exists() else "(no log)"


def stop_process_group(process: subprocess.Popen) -> None:
    """dagster dev stops its webserver and daemon on SIGINT; whatever it leaves (code servers,
    their workers) is terminated, then killed, by process group."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)
    for sig, grace in ((signal.SIGTERM, 15), (signal.SIGKILL, 15)):
        deadline = time.monotonic() + grace
        while True:
            alive = group_members(process.pid)
            if not alive:
                return
            if time.monotonic() > deadline:
                break
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, sig)
            time.sleep(0.5)
    raise AssertionError(f"dagster dev left processes behind: {group_members(process.pid)}")


def group_members(pgid: int) -> list[int]:
    """The live (not zombie) processes of a process group."""
    members = []
    for proc in psutil.process_iter(["pid", "status"]):
        with contextlib.suppress(psutil.Error):
            if os.getpgid(proc.info["pid"]) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                members.append(proc.info["pid"])
    return members


@contextlib.contextmanager
def dagster_dev(env: dict[str, str], log: Path) -> Iterator[DagsterDev]:
    """`dagster dev` (webserver + daemon) on 127.0.0.1, ready to serve; stopped however the block ends."""
    port = free_port()
    command = [DAGSTER, "dev", "-m", "tracer_assets.definitions", "-h", "127.0.0.1", "-p", str(port)]
    url = f"http://127.0.0.1:{port}"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-c", EXEC_WITH_SIGINT, *command],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + SERVER_START_SECONDS
        while True:
            if process.poll() is not None:
                raise AssertionError(f"dagster dev exited with {process.returncode}:\n{log_tail(log)}")
            try:
                with urllib.request.urlopen(f"{url}/server_info", timeout=5) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"dagster dev not serving after {SERVER_START_SECONDS} s:\n{log_tail(log)}")
            time.sleep(0.5)
        yield DagsterDev(url=url, log=log)
    finally:
        stop_process_group(process)


@contextlib.contextmanager
def screenshot_on_failure(page, path: Path) -> Iterator[None]:
    try:
        yield
    except BaseException:
        with contextlib.suppress(Exception):
            page.screenshot(path=str(path), full_page=True)
            print(f"screenshot of the failing page: {path}")
        raise


def report_images(instance: dg.DagsterInstance) -> int:
    """How many PNGs the latest reports/daily materialization's `report` Markdown carries inline."""
    event = instance.get_latest_materialization_event(REPORT_KEY)
    assert event is not None, "reports/daily was not materialized"
    report = event.asset_materialization.metadata["report"]
    assert isinstance(report, dg.MarkdownMetadataValue), type(report)
    return report.md_str.count("](data:image/png;base64,")


def wait_for_backfill(backfill_id: str, log: Path):
    deadline = time.monotonic() + BACKFILL_SECONDS
    with dg.DagsterInstance.get() as instance:
        while True:
            backfill = instance.get_backfill(backfill_id)
            assert backfill is not None, f"no backfill {backfill_id} on the instance"
            if backfill.status.value not in RUNNING_BACKFILL:
                runs = instance.get_runs(filters=dg.RunsFilter.for_backfill(backfill_id))
                return backfill, runs
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"backfill {backfill_id} still {backfill.status.value} after {BACKFILL_SECONDS} s:\n{log_tail(log)}"
                )
            time.sleep(2)


def candle_rows(database: str) -> dict[tuple[str, str], int]:
    """Rows per (day, symbol); retried while a run of the daemon holds DuckDB's write lock."""
    deadline = time.monotonic() + 60
    while True:
        try:
            with duckdb.connect(database, read_only=True) as connection:
                rows = connection.execute(
                    "SELECT strftime(ts, '%Y-%m-%d'), symbol, count(*) FROM market.candles GROUP BY 1, 2"
                ).fetchall()
            return {(day, symbol): count for day, symbol, count in rows}
        except duckdb.IOException:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def test_the_ui_shows_groups_report_plots_and_runs_a_backfill(chromium, tracer_env, tmp_path, monkeypatch):
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=UI_TIMEOUT_MS)

    for name, value in {
        "TRACER_REPORTS_DIR": str(tmp_path / "reports"),
        "TRACER_LOG_DIR": str(tmp_path / "logs"),
        "MACRO_BACKTEST_JSON_PATH": str(tmp_path / "backtest" / "backtest_results.json"),
    }.items():
        monkeypatch.setenv(name, value)
    env = dict(os.environ)
    # The pool's limit is set before any run, as `make dev` does (Makefile: .duckdb_pool).
    done = subprocess.run(
        [DAGSTER, "instance", "concurrency", "set", "duckdb", "1"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr

    # A report on the empty database: its plots then read "no data yet", but they are plots.
    defs = build_definitions(load_settings())
    graph = defs.resolve_asset_graph()
    groups = sorted({graph.get(key).group_name for key in graph.get_all_asset_keys()})
    assert {"market", "reports"} <= set(groups), groups
    with dg.DagsterInstance.get() as instance:
        assert defs.resolve_job_def(REPORT_JOB).execute_in_process(instance=instance).success
        images = report_images(instance)
    assert images >= 4, f"the report's Markdown carries {images} inline PNGs"

    with dagster_dev(env, tmp_path / "dagster_dev.log") as server, sync_playwright() as playwright:
        print(f"dagster dev on {server.url}, log: {server.log}")
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1600, "height": 1000})
            context.set_default_timeout(UI_TIMEOUT_MS)
            # The community newsletter prompt, once dismissed, is remembered in localStorage.
            context.add_init_script("window.localStorage.setItem('communityNux', '\"1\"')")
            page = context.new_page()
            page.add_locator_handler(page.get_by_role("button", name="Skip", exact=True), lambda skip: skip.click())

            # 1. The global asset lineage (the sidebar's "Lineage"): one node per group.
            with screenshot_on_failure(page, tmp_path / "1-lineage.png"):
                page.goto(f"{server.url}/asset-groups")
                expect(page.get_by_text("Global asset lineage")).to_be_visible()
                for group in groups:
                    node = page.locator(f'svg foreignObject.group [data-tooltip="{group}"]')
                    expect(node, f"group {group} in the lineage").to_be_visible()

            # 2. The daily report's page: its `report` metadata shown as Markdown, plots and all.
            with screenshot_on_failure(page, tmp_path / "2-report.png"):
                page.goto(f"{server.url}/assets/reports/daily")
                row = page.locator("tr").filter(has=page.locator("td").filter(has_text=re.compile(r"^\s*report\s*$")))
                row.get_by_text("Show Markdown").click()
                dialog = page.get_by_role("dialog")
                plots = dialog.locator('img[src^="data:image/png"]')
                expect(plots).to_have_count(images)
                page.wait_for_function(
                    "() => [...document.querySelectorAll('[role=dialog] img[src^=\"data:image/png\"]')]"
                    ".every(img => img.complete && img.naturalWidth > 0)"
                )
                widths = plots.evaluate_all("imgs => imgs.map(img => img.naturalWidth)")
                assert len(widths) >= 4 and all(width > 0 for width in widths), widths
                dialog.get_by_role("button", name="Close").click()

            # 3. A backfill of three candle days from the asset's Materialize dialog.
            with screenshot_on_failure(page, tmp_path / "3-materialize.png"):
                page.goto(f"{server.url}/assets/market/candles")
                # The button's accessible name: its icon's ("materialization"), then "Materialize…".
                page.get_by_role("button", name=re.compile(r"Materialize\b")).first.click()
                dialog = page.get_by_role("dialog")
                expect(dialog.get_by_text("Launch runs to materialize market / candles")).to_be_visible()
                dialog.get_by_role("button", name="Custom", exact=True).click()
                partitions = dialog.get_by_placeholder(re.compile(r"^ex: "))
                partitions.fill(f"[{BACKFILL_DAYS[0]}...{BACKFILL_DAYS[-1]}]")
                partitions.press("Enter")
                expect(dialog.get_by_text(f"{len(BACKFILL_DAYS)} partitions", exact=True)).to_be_visible()
                dialog.get_by_role("button", name="Launch backfill").click()
                toast = page.get_by_text(re.compile(r"Created backfill")).first
                backfill_id = re.search(r"Created backfill\s+(\w+)", toast.inner_text()).group(1)

            backfill, runs = wait_for_backfill(backfill_id, server.log)
            assert backfill.status.value == "COMPLETED_SUCCESS", (backfill.status, log_tail(server.log))
            assert backfill.tags.get("dagster/from_ui") == "true", backfill.tags
            target = backfill.asset_backfill_data.target_subset
            assert set(target.get_partitions_subset(CANDLES_KEY).get_partition_keys()) == set(BACKFILL_DAYS)
            # The single-run backfill policy: one run for the three days.
            assert [run.is_success for run in runs] == [True], [run.status for run in runs]
            assert runs[0].tags["dagster/asset_partition_range_start"] == BACKFILL_DAYS[0]
            assert runs[0].tags["dagster/asset_partition_range_end"] == BACKFILL_DAYS[-1]

            with screenshot_on_failure(page, tmp_path / "4-backfill.png"):
                page.goto(f"{server.url}/runs/b/{backfill_id}")
                expect(page.get_by_text("100% completed")).to_be_visible()
        finally:
            browser.close()

    rows = candle_rows(env["TRACER_DUCKDB_PATH"])
    expected = {(day, symbol): CANDLES_PER_DAY for day in BACKFILL_DAYS for symbol in TEST_SYMBOLS.split(",")}
    assert {key: rows.get(key) for key in expected} == expected
