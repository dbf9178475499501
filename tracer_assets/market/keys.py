"""The market domain's asset keys and tables (asset key prefix = DuckDB schema)."""

import dagster as dg

CANDLES_KEY = dg.AssetKey(["market", "candles"])
CANDLES_TABLE = "market.candles"
GAPS_TABLE = "market.gaps"  # written by market/candles, its internal record of missing candles
CANDLES_RESAMPLED_KEY = dg.AssetKey(["market", "candles_resampled"])
OHLCV_KEY = dg.AssetKey(["market", "ohlcv"])  # the view over every timeframe
OHLCV_TABLE = "market.ohlcv"
