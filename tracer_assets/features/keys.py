"""The features domain's asset keys and tables."""

import dagster as dg

INDICATORS_KEY = dg.AssetKey(["features", "indicators"])
INDICATORS_TABLE = "features.indicators"
