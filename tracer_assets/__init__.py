"""Tracer: crypto trading research and automated trading as Dagster assets in DuckDB."""
