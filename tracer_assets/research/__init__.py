"""Strategy research: strategies as data (specs, rules), backtests."""
