"""The signals domain's asset keys and tables."""

import dagster as dg

SIGNALS_KEY = dg.AssetKey(["signals", "signals"])
SIGNALS_TABLE = "signals.signals"
HISTORY_KEY = dg.AssetKey(["signals", "signal_history"])
HISTORY_TABLE = "signals.signal_history"
