"""research.strategies: every strategy spec ever known, with its identity and history.

Pure. A spec's id is the first 16 hex digits of its content hash, so the same spec is the
same strategy wherever it comes from. Syncing the built-in library:
- a built-in not stored yet is inserted (origin `builtin`, version 1, or the stored
  version + 1 when an older spec of that name exists);
- an active stored spec of origin `builtin` whose name is still built in but whose hash
  is not is archived with the reason "superseded by <new id>";
- a stored built-in whose name left the library is archived ("no longer built in");
- designed and tuned strategies are left as they are.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime

from tracer_assets.research.spec import StrategySpec

STRATEGY_COLUMNS = (
    "strategy_id",
    "name",
    "version",
    "spec",
    "content_hash",
    "origin",
    "parent",
    "status",
    "status_reason",
    "created_at",
    "updated_at",
)


def strategy_id(spec: StrategySpec) -> str:
    return spec.content_hash()[:16]


def sync_builtins(
    stored: Iterable[Mapping], builtins: Iterable[StrategySpec], now: datetime
) -> tuple[list[dict], list[dict]]:
    """(rows to insert, {strategy_id, status, status_reason, updated_at} updates)."""
    stored = list(stored)
    by_id = {row["strategy_id"]: row for row in stored}
    builtins = list(builtins)
    builtin_ids = {strategy_id(spec): spec for spec in builtins}
    builtin_names = {spec.name: strategy_id(spec) for spec in builtins}
    inserts, updates = [], []
    for sid, spec in builtin_ids.items():
        if sid in by_id:
            continue
        versions = [row["version"] for row in stored if row["name"] == spec.name]
        previous = [row for row in stored if row["name"] == spec.name and row["origin"] == "builtin"]
        inserts.append(
            {
                "strategy_id": sid,
                "name": spec.name,
                "version": max(versions, default=0) + 1,
                "spec": spec.canonical_json(),
                "content_hash": spec.content_hash(),
                "origin": "builtin",
                "parent": max(previous, key=lambda r: r["version"])["strategy_id"] if previous else None,
                "status": "active",
                "status_reason": "built-in library",
                "created_at": now,
                "updated_at": now,
            }
        )
    for row in stored:
        if row["origin"] != "builtin" or row["status"] != "active" or row["strategy_id"] in builtin_ids:
            continue
        replacement = builtin_names.get(row["name"])
        reason = f"superseded by {replacement}" if replacement else "no longer built in"
        updates.append(
            {"strategy_id": row["strategy_id"], "status": "archived", "status_reason": reason, "updated_at": now}
        )
    return inserts, updates
