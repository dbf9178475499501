"""unpassed_blocking_checks and blocking_check_names, on real in-process runs of a tiny
multi_asset (shaped like signals/signals: checks in check_specs, results with the
materialization) over a temporary SQLite instance, the storage the project runs on."""

# No `from __future__ import annotations`: Dagster reads the context annotation at definition time.
import dagster as dg
import pytest

from tracer_assets.trading.signal_checks import blocking_check_names, unpassed_blocking_checks

KEY = dg.AssetKey(["tiny", "signals"])
FAILURE_DESCRIPTION = "2 of 4 past signals changed when recomputed"


def tiny_asset(results: dict[str, bool], raise_before_checks: bool = False) -> dg.AssetsDefinition:
    """Two blocking checks and one non-blocking one, passing or failing as `results` says."""

    @dg.multi_asset(
        specs=[dg.AssetSpec(KEY)],
        check_specs=[
            dg.AssetCheckSpec("fresh_enough", asset=KEY, blocking=True),
            dg.AssetCheckSpec("no_lookahead", asset=KEY, blocking=True),
            dg.AssetCheckSpec("few_nulls", asset=KEY),  # not blocking
        ],
        can_subset=True,
    )
    def tiny(context: dg.AssetExecutionContext):
        if raise_before_checks:
            raise RuntimeError("the step died before evaluating its checks")
        selected = {check_key.name for check_key in context.selected_asset_check_keys}
        yield dg.MaterializeResult(
            asset_key=KEY,
            check_results=[
                dg.AssetCheckResult(
                    check_name=name,
                    passed=passed,
                    description=None if passed else FAILURE_DESCRIPTION,
                    metadata={"mismatches": 0 if passed else 2},
                )
                for name, passed in results.items()
                if name in selected
            ],
        )

    return tiny


@pytest.fixture
def instance():
    with dg.instance_for_test() as instance:
        yield instance


def test_blocking_check_names_of_an_assets_definition():
    tiny = tiny_asset({})
    assert blocking_check_names(tiny, KEY) == ["fresh_enough", "no_lookahead"]
    assert blocking_check_names([tiny], dg.AssetKey("other")) == []


def test_blocking_check_names_include_separate_asset_checks_of_the_asset_graph():
    @dg.asset_check(asset=KEY, blocking=True)
    def row_count_positive():
        return dg.AssetCheckResult(passed=True)

    defs = dg.Definitions(assets=[tiny_asset({})], asset_checks=[row_count_positive])
    assets_defs = defs.resolve_asset_graph().assets_defs
    assert blocking_check_names(assets_defs, KEY) == ["fresh_enough", "no_lookahead", "row_count_positive"]


def test_a_failed_blocking_check_is_named_with_its_description(instance):
    tiny = tiny_asset({"fresh_enough": True, "no_lookahead": False, "few_nulls": False})
    result = dg.materialize([tiny], instance=instance, raise_on_error=False)
    assert not result.success  # a failed blocking check fails the step...
    materializations = instance.fetch_materializations(KEY, limit=10).records
    assert [record.run_id for record in materializations] == [result.run_id]  # ...after materializing

    # The failed non-blocking check is not the caller's concern: it does not pass its name.
    unpassed = unpassed_blocking_checks(instance, KEY, result.run_id, blocking_check_names(tiny, KEY))
    assert unpassed == [f"no_lookahead failed: {FAILURE_DESCRIPTION}"]


def test_without_a_description_the_metadata_is_summarized(instance):
    @dg.asset(key=KEY, check_specs=[dg.AssetCheckSpec("no_lookahead", asset=KEY, blocking=True)])
    def tiny():
        return dg.MaterializeResult(
            check_results=[dg.AssetCheckResult(passed=False, metadata={"samples": 4, "mismatches": 2})]
        )

    result = dg.materialize([tiny], instance=instance, raise_on_error=False)
    assert unpassed_blocking_checks(instance, KEY, result.run_id, ["no_lookahead"]) == [
        "no_lookahead failed: mismatches=2, samples=4"
    ]


def test_all_passing_checks_give_an_empty_list(instance):
    tiny = tiny_asset({"fresh_enough": True, "no_lookahead": True, "few_nulls": False})
    result = dg.materialize([tiny], instance=instance)
    assert result.success
    assert unpassed_blocking_checks(instance, KEY, result.run_id, blocking_check_names(tiny, KEY)) == []


def test_a_check_left_out_of_the_run_has_no_evaluation(instance):
    tiny = tiny_asset({"fresh_enough": True, "no_lookahead": True})
    selection = dg.AssetSelection.assets(KEY).without_checks() | dg.AssetSelection.checks(
        dg.AssetCheckKey(KEY, "fresh_enough")
    )
    result = dg.materialize([tiny], instance=instance, selection=selection)
    assert result.success
    short_run_id = result.run_id[:8]
    assert unpassed_blocking_checks(instance, KEY, result.run_id, ["fresh_enough", "no_lookahead"]) == [
        f"no_lookahead has no evaluation in run {short_run_id} (not planned in that run)"
    ]


def test_a_check_planned_but_never_evaluated_has_no_evaluation(instance):
    tiny = tiny_asset({"fresh_enough": True, "no_lookahead": True}, raise_before_checks=True)
    result = dg.materialize([tiny], instance=instance, raise_on_error=False)
    assert not result.success
    short_run_id = result.run_id[:8]
    assert unpassed_blocking_checks(instance, KEY, result.run_id, ["fresh_enough", "no_lookahead"]) == [
        f"fresh_enough has no evaluation in run {short_run_id} (planned but never evaluated)",
        f"no_lookahead has no evaluation in run {short_run_id} (planned but never evaluated)",
    ]


def test_a_run_without_check_events_has_no_evaluation_of_any_check(instance):
    @dg.asset
    def unrelated():
        return 1

    checked = dg.materialize([tiny_asset({"fresh_enough": True, "no_lookahead": True})], instance=instance)
    other = dg.materialize([unrelated], instance=instance)
    assert unpassed_blocking_checks(instance, KEY, checked.run_id, ["no_lookahead"]) == []
    # The evaluations of another run do not count for this one.
    assert unpassed_blocking_checks(instance, KEY, other.run_id, ["no_lookahead"]) == [
        f"no_lookahead has no evaluation in run {other.run_id[:8]} (not planned in that run)"
    ]


def test_evaluations_of_another_asset_in_the_run_do_not_count(instance):
    result = dg.materialize([tiny_asset({"fresh_enough": True, "no_lookahead": True})], instance=instance)
    other_key = dg.AssetKey(["other", "asset"])
    assert unpassed_blocking_checks(instance, other_key, result.run_id, ["no_lookahead"]) == [
        f"no_lookahead has no evaluation in run {result.run_id[:8]} (not planned in that run)"
    ]


def test_no_names_means_nothing_to_report(instance):
    assert unpassed_blocking_checks(instance, KEY, "no-such-run", []) == []


def test_no_lookahead_is_a_blocking_check_of_the_real_signals_asset(tracer_env):
    # Imported here: the tiny-asset tests above do not depend on the project's definitions.
    from tracer_assets.definitions import build_definitions
    from tracer_assets.settings import load_settings
    from tracer_assets.signals.keys import SIGNALS_KEY

    defs = build_definitions(load_settings())
    assert "no_lookahead" in blocking_check_names(defs.get_assets_def(SIGNALS_KEY), SIGNALS_KEY)
    assert "no_lookahead" in blocking_check_names(defs.resolve_asset_graph().assets_defs, SIGNALS_KEY)
