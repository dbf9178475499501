"""Did the blocking checks of an asset pass in the run that materialized it?

A failed blocking check fails its step, but only after the asset's materialization has been
recorded (the check result is evaluated on what was written), so the signal sensor still sees
that materialization and launches a decision for it. The decision must HOLD unless every
blocking check of the asset passed in that very run: `unpassed_blocking_checks` says which did
not. It reads only the one run's check-evaluation events (one indexed query on the run's event
log), because it runs on every trading decision.
"""

from collections.abc import Iterable

import dagster as dg

SUMMARY_CHARS = 300  # a reason line stays readable in the decision record and notifications

_CHECK_EVENT_TYPES = {
    dg.DagsterEventType.ASSET_CHECK_EVALUATION,
    dg.DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED,
}


def blocking_check_names(
    assets_defs: dg.AssetsDefinition | Iterable[dg.AssetsDefinition], asset_key: dg.AssetKey
) -> list[str]:
    """Names of the blocking check specs targeting `asset_key`, sorted.

    Accepts one AssetsDefinition (e.g. `defs.get_assets_def(key)`) or several, e.g.
    `defs.resolve_asset_graph().assets_defs`, which also holds checks defined apart from the
    asset with @asset_check (AssetChecksDefinition is an AssetsDefinition).
    """
    if isinstance(assets_defs, dg.AssetsDefinition):
        assets_defs = [assets_defs]
    return sorted(
        {
            spec.name
            for assets_def in assets_defs
            for spec in assets_def.check_specs
            if spec.asset_key == asset_key and spec.blocking
        }
    )


def unpassed_blocking_checks(
    instance: dg.DagsterInstance, asset_key: dg.AssetKey, run_id: str, blocking_check_names: Iterable[str]
) -> list[str]:
    """One line per named check of `asset_key` that did not pass in run `run_id`; [] if all passed.

    A check passes only if the run evaluated it and no evaluation of it in the run failed: a
    step retried within the run can record a failed evaluation for one materialization and a
    passed one for the next, and run_id alone cannot tell which one a decision is about, so a
    failure anywhere in the run counts (holding is the safe side). A failed evaluation counts
    whatever its severity: WARN only lets downstream assets run, it does not make the signal good.
    """
    wanted = list(dict.fromkeys(blocking_check_names))  # keep the caller's order, once each
    if not wanted:
        return []
    evaluations: dict[str, list[dg.AssetCheckEvaluation]] = {name: [] for name in wanted}
    planned: set[str] = set()
    # The run's check events only, filtered by type in the query: not the run's whole log, and
    # not the check's history across runs (which has no run filter and grows with every tick).
    for entry in instance.all_logs(run_id, of_type=_CHECK_EVENT_TYPES):
        event = entry.dagster_event
        if event is None:
            continue
        if event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
            evaluation = event.asset_check_evaluation_data
            if evaluation.asset_key == asset_key and evaluation.check_name in evaluations:
                evaluations[evaluation.check_name].append(evaluation)
        else:
            planned_check = event.asset_check_planned_data
            if planned_check.asset_key == asset_key:
                planned.add(planned_check.check_name)

    short_run_id = run_id[:8]  # as the Dagster UI shows run ids
    lines = []
    for name in wanted:
        failed = [evaluation for evaluation in evaluations[name] if not evaluation.passed]
        if failed:
            lines.append(f"{name} failed: {_evaluation_summary(failed[-1])}")
        elif not evaluations[name]:
            why = "planned but never evaluated" if name in planned else "not planned in that run"
            lines.append(f"{name} has no evaluation in run {short_run_id} ({why})")
    return lines


def _evaluation_summary(evaluation: dg.AssetCheckEvaluation) -> str:
    """The evaluation's description, else its metadata as key=value pairs (sorted by key: the
    event log does not keep the order they were reported in), shortened."""
    if evaluation.description:
        text = evaluation.description
    elif evaluation.metadata:
        text = ", ".join(f"{key}={value.value}" for key, value in sorted(evaluation.metadata.items()))
    else:
        text = "no description or metadata"
    if evaluation.severity != dg.AssetCheckSeverity.ERROR:
        text = f"[severity {evaluation.severity.value}] {text}"
    return text if len(text) <= SUMMARY_CHARS else text[: SUMMARY_CHARS - 3] + "..."
