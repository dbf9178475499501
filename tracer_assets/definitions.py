"""The one Definitions object of the Tracer code location.

Everything is built from the settings read once from the environment
(tracer_assets/settings.py), so `dagster dev`, `dagster asset materialize` and the tests
all see the same graph for the same environment.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable

import dagster as dg

from tracer_assets.failures import run_failure_notifier
from tracer_assets.features.assets import build_indicators_asset
from tracer_assets.llm.resource import API_KEY_VARIABLE, AnthropicResource
from tracer_assets.market.assets import build_candles_asset
from tracer_assets.market.keys import CANDLES_KEY
from tracer_assets.market.partitions import candle_partitions
from tracer_assets.ml.assets import build_ml_assets
from tracer_assets.ml.keys import PREDICTIONS_KEY
from tracer_assets.policies import STEP_VALUES_IO
from tracer_assets.ranking.assets import build_ranking_assets
from tracer_assets.reports.assets import REPORT_JOB, build_report_assets, research_report_sensors
from tracer_assets.research.assets import build_research_assets
from tracer_assets.research.design_assets import build_design_assets
from tracer_assets.resources.exchange import ExchangeResource
from tracer_assets.resources.notifier import NotifierResource
from tracer_assets.resources.step_values import StepValuesIOManager
from tracer_assets.resources.warehouse import TracerDuckDB
from tracer_assets.schedules import TICK_GROUPS, TICK_JOB, build_tick
from tracer_assets.settings import Settings, load_settings
from tracer_assets.signals.assets import build_signal_assets
from tracer_assets.signals.keys import SIGNALS_KEY
from tracer_assets.sql.assets import build_sql_assets
from tracer_assets.trading.assets import build_trading_assets, trading_mode
from tracer_assets.trading.orders import Mode
from tracer_assets.trading.resources import BrokerResource, LiveBrokerResource, PaperBrokerResource
from tracer_assets.trading.secrets import API_KEY_VAR, SECRET_VAR, check_secrets
from tracer_assets.trading.sensors import DECISION_JOB, build_decision_job, build_signal_sensor
from tracer_assets.trading.signal_checks import blocking_check_names

MARKET_DATA_JOB = "market_data_job"
# The models' predictions of the newest candles are part of every tick (the rest of ml is daily).
TICK_EXTRA_KEYS = (PREDICTIONS_KEY,)
RESEARCH_JOB = "research_job"
__all__ = [
    "defs",
    "build_definitions",
    "tick_inputs",
    "MARKET_DATA_JOB",
    "TICK_JOB",
    "DECISION_JOB",
    "RESEARCH_JOB",
    "REPORT_JOB",
]


def tick_inputs(assets: Iterable[dg.AssetsDefinition]) -> tuple[list[dg.AssetKey], dict[dg.AssetKey, str | None]]:
    """The tick's asset keys (its groups), and the SQL views among them with their code versions."""
    assets = list(assets)
    tick_keys = [
        key
        for asset in assets
        for key in asset.keys
        if asset.group_names_by_key[key] in TICK_GROUPS or key in TICK_EXTRA_KEYS
    ]
    views = {
        key: asset.code_versions_by_key[key]
        for asset in assets
        for key in asset.keys
        if key in tick_keys and asset.metadata_by_key[key].get("materialized") == "view"
    }
    return tick_keys, views


def llm_resource(settings: Settings) -> AnthropicResource:
    """The anthropic client. Its key (EnvVar) is required only when the LLM decides: otherwise
    the resource exists without one, and nothing asks it anything."""
    key = dg.EnvVar(API_KEY_VARIABLE) if settings.trading.decider == "llm" else None
    return AnthropicResource(
        api_key=key,
        model=settings.llm.anthropic_model,
        base_url=settings.llm.anthropic_base_url,
        timeout_seconds=settings.llm.llm_timeout_seconds,
    )


# The designer and the reviewer write longer answers than a decision, with no tick waiting.
RESEARCH_LLM_MAX_TOKENS = 4096
RESEARCH_LLM_TIMEOUT_SECONDS = 120.0


def research_llm_resource(settings: Settings, environ) -> AnthropicResource:
    """The same client for research: keyed when ANTHROPIC_API_KEY is set, and then the designer
    and the reviewer ask Claude; without it they work offline (rules), and nothing is asked."""
    key = dg.EnvVar(API_KEY_VARIABLE) if environ.get(API_KEY_VARIABLE, "").strip() else None
    return AnthropicResource(
        api_key=key,
        model=settings.llm.anthropic_model,
        base_url=settings.llm.anthropic_base_url,
        timeout_seconds=RESEARCH_LLM_TIMEOUT_SECONDS,
        max_tokens=RESEARCH_LLM_MAX_TOKENS,
    )


def broker_resource(settings: Settings) -> BrokerResource:
    """The paper account, or the keyed live one only in LIVE mode: its keys (EnvVar) are not
    required otherwise."""
    if trading_mode(settings)[0] is not Mode.LIVE:
        return PaperBrokerResource()
    return LiveBrokerResource(
        exchange=settings.market.exchange,
        api_urls=dict(settings.market.exchange_urls),
        sandbox=settings.trading.sandbox,
        api_key=dg.EnvVar(API_KEY_VAR),
        secret=dg.EnvVar(SECRET_VAR),
    )


# What the research job's step processes fork from, imported once: every domain's assets and
# their libraries (4 s of imports per step otherwise). Not this module: building the
# definitions runs polars, and a polars thread pool started before a fork hangs the child.
PRELOADED_MODULES = (
    "dagster",
    *(f"tracer_assets.{domain}.assets" for domain in ("market", "sql", "features", "signals", "research", "ml")),
    *(f"tracer_assets.{domain}.assets" for domain in ("ranking", "reports", "trading")),
    "tracer_assets.research.design_assets",
    # The heavy libraries the steps use: the modules above import them only where they are used
    # (so a run process that imports the definitions does not pay ~3 s for them), and a step
    # forked from here still finds them imported. Importing them starts no thread pool.
    "lightgbm",
    "sklearn.linear_model",
    "sklearn.metrics",
    "scipy.stats",
    "matplotlib.backends.backend_agg",
    "matplotlib.dates",
    "matplotlib.figure",
    "matplotlib.ticker",
)


def research_executor(settings: Settings) -> dg.ExecutorDefinition:
    """Independent research steps (backtests and training; design, tuning and training) run side
    by side, one process each, TRACER_RESEARCH_WORKERS at a time, forked from a server that
    has imported PRELOADED_MODULES."""
    return dg.multiprocess_executor.configured(
        {
            "max_concurrent": settings.research.workers,
            "start_method": {"forkserver": {"preload_modules": list(PRELOADED_MODULES)}},
        }
    )


def configure_logging(settings: Settings) -> None:
    """DEBUG=1: the tracer_assets loggers log at debug level, to stderr (runs show it in their logs)."""
    logger = logging.getLogger("tracer_assets")
    logger.setLevel(logging.DEBUG if settings.debug else logging.NOTSET)
    if settings.debug and not any(getattr(h, "tracer_debug", False) for h in logger.handlers):
        handler = logging.StreamHandler()
        handler.tracer_debug = True
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)


def build_definitions(settings: Settings) -> dg.Definitions:
    configure_logging(settings)
    check_secrets(settings, os.environ)  # a malformed secret in use stops the load here, not a run after its decisions
    partitions = candle_partitions(settings)
    candles = build_candles_asset(settings, partitions)
    sql_assets = build_sql_assets(settings, partitions, {tuple(CANDLES_KEY.path)})
    indicators = build_indicators_asset(settings, partitions)
    signal_assets = build_signal_assets(settings)
    research_assets = build_research_assets(settings) + build_design_assets(settings)
    ml_assets = build_ml_assets(settings)
    ranking_assets = build_ranking_assets(settings)
    report_assets = build_report_assets(settings, RESEARCH_JOB)
    trading_assets = build_trading_assets(settings, tuple(blocking_check_names(signal_assets, SIGNALS_KEY)))
    assets = [
        candles,
        *sql_assets,
        indicators,
        *signal_assets,
        *research_assets,
        *ml_assets,
        *ranking_assets,
        *report_assets,
        *trading_assets,
    ]
    tick_job, tick_schedule = build_tick(settings, partitions, *tick_inputs(assets))
    decision_job = build_decision_job([key for asset in trading_assets for key in asset.keys])
    market_data_job = dg.define_asset_job(
        MARKET_DATA_JOB,
        selection=dg.AssetSelection.groups("market"),
        description="Candles of the selected days, their resampled timeframes and the market.ohlcv view.",
    )
    research_job = dg.define_asset_job(
        RESEARCH_JOB,
        selection=dg.AssetSelection.groups("research", "ml", "ranking") - dg.AssetSelection.assets(PREDICTIONS_KEY),
        executor_def=research_executor(settings),
        description=(
            "The daily research pipeline: strategy registry, walk-forward backtests, backtest_results.json; the ML "
            "dataset, models and ensembles; the rankings of strategies, models and ensembles."
        ),
    )
    report_job = dg.define_asset_job(
        REPORT_JOB,
        selection=dg.AssetSelection.groups("reports"),
        description=(
            "The daily report and its AI review of the latest research run; launched when a research run ends, "
            "whether it succeeded or failed."
        ),
    )
    research_schedule = dg.ScheduleDefinition(
        name="daily_research",
        cron_schedule="0 0 * * *",
        execution_timezone="UTC",
        job=research_job,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Research at 00:00 UTC over the candles stored so far.",
    )
    database = str(settings.duckdb_path)
    return dg.Definitions(
        assets=assets,
        jobs=[market_data_job, tick_job, decision_job, research_job, report_job],
        schedules=[tick_schedule, research_schedule],
        sensors=[
            build_signal_sensor(decision_job),
            run_failure_notifier,
            *research_report_sensors(research_job, report_job),
        ],
        # Steps run in the run's own process: no per-step interpreter start-up, and DuckDB's
        # single writer is guarded by the "duckdb" pool either way.
        executor=dg.in_process_executor,
        resources={
            "exchange": ExchangeResource.from_settings(settings),
            "duckdb": TracerDuckDB(database=database),
            "notifier": NotifierResource.from_env(os.environ),
            "llm": llm_resource(settings),
            "llm_research": research_llm_resource(settings, os.environ),
            "broker": broker_resource(settings),
            STEP_VALUES_IO: StepValuesIOManager(),
        },
    )


defs = build_definitions(load_settings())
