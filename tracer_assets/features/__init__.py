"""Features computed from stored candles (pure polars, no Dagster)."""
