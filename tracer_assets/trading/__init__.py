"""Trading: decisions, risk, brokers and portfolio state (pure logic; Dagster wiring in assets.py)."""
