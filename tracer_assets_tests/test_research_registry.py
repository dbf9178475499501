"""research.strategies: syncing the built-in library keeps history and never loses a strategy."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from tracer_assets.research.registry import strategy_id, sync_builtins
from tracer_assets.research.spec import builtin_spec, load_spec

NOW = datetime(2024, 9, 6, tzinfo=UTC)


def stored(inserts: list[dict], updates: list[dict] = ()) -> list[dict]:
    rows = {row["strategy_id"]: dict(row) for row in inserts}
    for update in updates:
        rows[update["strategy_id"]].update(update)
    return list(rows.values())


def test_a_new_library_is_inserted_once_and_a_second_sync_changes_nothing():
    ema, rsi = builtin_spec("ema_cross"), builtin_spec("rsi_mean_reversion")
    inserts, updates = sync_builtins([], [ema, rsi], NOW)
    assert updates == []
    assert [(row["name"], row["version"], row["origin"], row["status"], row["parent"]) for row in inserts] == [
        ("ema_cross", 1, "builtin", "active", None),
        ("rsi_mean_reversion", 1, "builtin", "active", None),
    ]
    assert inserts[0]["strategy_id"] == ema.content_hash()[:16]
    assert load_spec(inserts[0]["spec"]) == ema
    assert sync_builtins(stored(inserts), [ema, rsi], NOW) == ([], [])


def test_a_changed_builtin_archives_its_predecessor_and_becomes_the_next_version():
    ema = builtin_spec("ema_cross")
    first, _ = sync_builtins([], [ema], NOW)
    changed = load_spec({**json.loads(ema.canonical_json()), "description": "EMA cross, revised"})
    designed = {**first[0], "strategy_id": "designed0000000", "name": "my_design", "origin": "designed"}
    inserts, updates = sync_builtins([*stored(first), designed], [changed], NOW)
    assert [(row["strategy_id"], row["version"], row["parent"]) for row in inserts] == [
        (strategy_id(changed), 2, strategy_id(ema))
    ]
    assert updates == [
        {
            "strategy_id": strategy_id(ema),
            "status": "archived",
            "status_reason": f"superseded by {strategy_id(changed)}",
            "updated_at": NOW,
        }
    ]


def test_a_builtin_that_left_the_library_is_archived_with_the_reason():
    ema, rsi = builtin_spec("ema_cross"), builtin_spec("rsi_mean_reversion")
    first, _ = sync_builtins([], [ema, rsi], NOW)
    inserts, updates = sync_builtins(stored(first), [ema], NOW)
    assert inserts == []
    assert [(u["strategy_id"], u["status_reason"]) for u in updates] == [(strategy_id(rsi), "no longer built in")]
