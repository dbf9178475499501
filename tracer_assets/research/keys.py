"""The research domain's asset keys and tables."""

import dagster as dg

STRATEGIES_KEY = dg.AssetKey(["research", "strategies"])
STRATEGIES_TABLE = "research.strategies"
BACKTESTS_KEY = dg.AssetKey(["research", "backtests"])
BACKTESTS_TABLE = "research.backtests"
EQUITY_KEY = dg.AssetKey(["research", "equity_curves"])
EQUITY_TABLE = "research.equity_curves"
