"""Asset check results from the domains' pure check outcomes (name, passed, metadata)."""

import dagster as dg


def check_result(outcome, asset_key: dg.AssetKey) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        asset_key=asset_key, check_name=outcome.name, passed=outcome.passed, metadata=outcome.metadata
    )
