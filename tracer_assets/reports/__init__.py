"""The daily report: what the research day did (steps, activity, the kept strategies, models and
ensembles, the selected variants, the accounts and the data), its trends against earlier reports,
plots, and an advisory review. Pure Python (polars, pydantic, matplotlib); no Dagster, no DuckDB:
the report's assets gather the inputs and call these functions."""
