"""The research domain's asset keys and tables."""

import dagster as dg

STRATEGIES_KEY = dg.AssetKey(["research", "strategies"])
STRATEGIES_TABLE = "research.strategies"
BACKTESTS_KEY = dg.AssetKey(["research", "backtests"])
BACKTESTS_TABLE = "research.backtests"
# The seed project's name for it, kept as a view main.strategy_backtest_results (tables.create_alias_view).
BACKTESTS_SEED_VIEW = "strategy_backtest_results"
EQUITY_KEY = dg.AssetKey(["research", "equity_curves"])
EQUITY_TABLE = "research.equity_curves"
DESIGNS_KEY = dg.AssetKey(["research", "designs"])
DESIGNS_TABLE = "research.designs"
TUNING_KEY = dg.AssetKey(["research", "tuning"])
TUNING_TABLE = "research.tuning"
# Append-only: every variant the designer or the tuner evaluated (the count the deflated
# Sharpe ratio corrects for), written by research/designs and research/tuning.
TRIALS_TABLE = "research.trials"
