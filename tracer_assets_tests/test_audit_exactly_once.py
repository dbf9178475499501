"""Every committed decision and order reaches macro_ccxt_orders.log and
macro_ccxt_orders_audit.jsonl exactly once, even when the run is killed between its commit and
its audit lines, or between writing them and marking them written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter

import dagster as dg
import pytest
from test_trading_assets import (  # noqa: F401  (replay_clock is a fixture)
    decide,
    make_btc_1h_strongly_bullish,
    newest_signal_event,
    query,
    replay_clock,
)

from tracer_assets.pool import free_slot, holders
from tracer_assets.settings import load_settings
from tracer_assets.trading.keys import SIGNAL_STORAGE_TAG

# The decision job in a process that SIGKILLs itself at the `call`-th audit write of the run
# (1: the decisions step's, 2: the execution step's), before or after the lines are written.
KILLED_AT_AUDIT = """
import os, signal, sys
import dagster as dg
from tracer_assets.definitions import DECISION_JOB, build_definitions
from tracer_assets.settings import load_settings
from tracer_assets.trading.audit import AuditLog

call, when = int(sys.argv[3]), sys.argv[4]
original, calls = AuditLog.record_once, []

def record_once(self, decisions, orders):
    calls.append(1)
    if len(calls) == call and when == "before":
        os.kill(os.getpid(), signal.SIGKILL)
    written = original(self, decisions, orders)
    if len(calls) == call and when == "after":
        os.kill(os.getpid(), signal.SIGKILL)
    return written

AuditLog.record_once = record_once
with dg.DagsterInstance.get() as instance:
    job = build_definitions(load_settings()).resolve_job_def(DECISION_JOB)
    job.execute_in_process(instance=instance, tags={sys.argv[1]: sys.argv[2]})
"""


# The scenes here are staged for the rules decider.
pytestmark = pytest.mark.usefixtures("rules_decider")


@pytest.mark.slow
@pytest.mark.parametrize("call, when", [(1, "before"), (2, "before"), (2, "after")])
def test_a_kill_around_the_audit_write_leaves_every_row_in_both_files_exactly_once(
    tracer_env,
    replay_clock,  # noqa: F811  (the fixture imported from test_trading_assets)
    call,
    when,
):
    database = tracer_env["TRACER_DUCKDB_PATH"]
    storage_id = newest_signal_event()
    make_btc_1h_strongly_bullish(database, storage_id)
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_AT_AUDIT, SIGNAL_STORAGE_TAG, str(storage_id), str(call), when],
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -9, killed.stderr[-3000:]
    committed = query(database, "SELECT decision_id FROM trading.decisions")["decision_id"].to_list()
    assert len(committed) == 2  # the decisions were committed before the kill
    with dg.DagsterInstance.get() as instance:  # no daemon here: the operator's command frees the slot
        for holder in holders(instance):
            free_slot(instance, holder.run_id)

    decide(storage_id)  # the re-run: the decisions are reused, the order placed (or found) once

    orders = query(database, "SELECT client_order_id FROM trading.orders")["client_order_id"].to_list()
    assert len(orders) == 1
    logs = load_settings().trading.log_dir
    tsv = [line.split("\t") for line in (logs / "macro_ccxt_orders.log").read_text().splitlines()[1:]]
    jsonl = [json.loads(line) for line in (logs / "macro_ccxt_orders_audit.jsonl").read_text().splitlines()]
    tsv_keys = Counter(("order", row[7]) if row[7] else ("decision", row[8]) for row in tsv)
    json_keys = Counter((e["type"], e["client_order_id"] if e["type"] == "order" else e["decision_id"]) for e in jsonl)
    expected = Counter([("decision", d) for d in committed] + [("order", o) for o in orders])
    assert tsv_keys == expected
    assert json_keys == expected
    unmarked = query(
        database,
        "SELECT (SELECT count(*) FROM trading.decisions WHERE audited_at IS NULL) + "
        "(SELECT count(*) FROM trading.orders WHERE audited_at IS NULL) AS n",
    )["n"][0]
    assert unmarked == 0
