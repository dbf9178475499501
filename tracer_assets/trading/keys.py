"""The trading domain's asset keys, tables and run tags."""

import dagster as dg

DECISIONS_KEY = dg.AssetKey(["trading", "decisions"])
ORDERS_KEY = dg.AssetKey(["trading", "orders"])
POSITIONS_KEY = dg.AssetKey(["trading", "positions"])
PORTFOLIO_KEY = dg.AssetKey(["trading", "portfolio"])
DECISIONS_TABLE = "trading.decisions"
ORDERS_TABLE = "trading.orders"
POSITIONS_TABLE = "trading.positions"
PORTFOLIO_TABLE = "trading.portfolio"
PAPER_STATE_TABLE = "trading.paper_state"  # the paper broker's newest snapshot: internal state of trading/orders
# The run tag naming the signals materialization a decision run answers (set by signal_sensor).
SIGNAL_STORAGE_TAG = "tracer/signal_storage_id"
