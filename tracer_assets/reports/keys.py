"""The reports domain's asset keys and tables."""

import dagster as dg

DAILY_REPORT_KEY = dg.AssetKey(["reports", "daily"])
DAILY_REPORTS_TABLE = "reports.daily_reports"
DAILY_REPORTS_SEED_VIEW = "daily_reports"
AI_REVIEW_KEY = dg.AssetKey(["reports", "ai_review"])
AI_REVIEWS_TABLE = "reports.ai_reviews"
# The research run a report describes (set by the sensor that launches the report run).
RESEARCH_RUN_TAG = "tracer/research_run"
