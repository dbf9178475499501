"""Features computed from stored candles."""
