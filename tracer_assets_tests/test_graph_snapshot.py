"""The whole graph as the UI shows it (asset keys, dependencies, groups, kinds, checks, jobs,
schedules, sensors), compared with a snapshot kept in the repository, so that any change to
the lineage is seen in review. After a deliberate change, write the new snapshot with

    TRACER_UPDATE_SNAPSHOT=1 .venv/bin/python -m pytest tracer_assets_tests/test_graph_snapshot.py

and commit it with the change."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tracer_assets.definitions import build_definitions
from tracer_assets.settings import load_settings

SNAPSHOT = Path(__file__).parent / "snapshots" / "graph.json"
UPDATE = os.environ.get("TRACER_UPDATE_SNAPSHOT") == "1"  # read before the fixture clears TRACER_*


def graph_snapshot() -> dict:
    repository = build_definitions(load_settings()).get_repository_def()
    graph = repository.asset_graph
    checks = {}
    for assets_def in {id(a): a for a in repository.assets_defs_by_key.values()}.values():
        for spec in assets_def.check_specs:
            checks.setdefault(spec.asset_key.to_user_string(), []).append(
                {"name": spec.name, "blocking": spec.blocking}
            )
    assets = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        name = key.to_user_string()
        assets[name] = {
            "group": node.group_name,
            "kinds": sorted(node.kinds),
            "deps": sorted(parent.to_user_string() for parent in node.parent_keys),
            "partitioned": node.partitions_def is not None,
            "checks": sorted(checks.get(name, []), key=lambda c: c["name"]),
        }
    jobs = {
        job.name: sorted(key.to_user_string() for key in job.asset_layer.selected_asset_keys)
        for job in repository.get_all_jobs()
        if not job.name.startswith("__")
    }
    return {
        "assets": assets,
        "jobs": jobs,
        "schedules": {s.name: {"cron": s.cron_schedule, "job": s.job_name} for s in repository.schedule_defs},
        "sensors": {s.name: {"job": s.job_name if s.has_jobs else None} for s in repository.sensor_defs},
    }


def test_the_graph_matches_its_snapshot(tracer_env):
    current = graph_snapshot()
    if UPDATE:
        SNAPSHOT.parent.mkdir(exist_ok=True)
        SNAPSHOT.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")
    expected = json.loads(SNAPSHOT.read_text())
    assert current == expected, (
        "the asset graph changed; if that is intended, rewrite the snapshot with "
        "TRACER_UPDATE_SNAPSHOT=1 and commit tracer_assets_tests/snapshots/graph.json"
    )
