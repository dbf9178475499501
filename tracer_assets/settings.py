"""Every setting Tracer reads from the environment, read once, each domain its own.

Each domain keeps its settings where it keeps its logic (`market/settings.py`,
`signals/settings.py`, `research/settings.py`, `ml/settings.py`, `ranking/settings.py`, `reports/settings.py`,
`trading/settings.py`, `llm/settings.py`): a table of names, defaults and meanings, a typed
frozen dataclass and its loader; `config.py` has the parsers they share. `Settings` is the
project's: its own few (the DuckDB file, the SQL models, DEBUG) and one object per domain. The
seeds' variable names (DRY_RUN, ORDER_AMOUNT, TB_MIN_SIGNAL_QUALITY, ...) are honoured as they
were; new ones are TRACER_*. README.md's table is generated from `SETTINGS_TABLE`
(`python -m tracer_assets.settings`), and a test keeps the two in step.

Secrets (exchange keys, LLM keys) are not settings: they are read through Dagster's `EnvVar`
where they are used, so they never sit in these objects, a log or metadata.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tracer_assets.config import Row, SettingsError, defaults, flag, text
from tracer_assets.llm import settings as llm_settings
from tracer_assets.llm.settings import LlmSettings
from tracer_assets.market import settings as market_settings
from tracer_assets.market.settings import DEFAULT_SYMBOLS, MarketSettings
from tracer_assets.ml import settings as ml_settings
from tracer_assets.ml.settings import MlSettings
from tracer_assets.ranking import settings as ranking_settings
from tracer_assets.ranking.settings import RankingSettings
from tracer_assets.reports import settings as reports_settings
from tracer_assets.reports.settings import ReportsSettings
from tracer_assets.research import settings as research_settings
from tracer_assets.research.settings import ResearchSettings
from tracer_assets.signals import settings as signals_settings
from tracer_assets.signals.settings import SignalsSettings
from tracer_assets.trading import settings as trading_settings
from tracer_assets.trading.settings import TradingSettings

__all__ = ["DEFAULT_SYMBOLS", "SETTINGS_TABLE", "Settings", "SettingsError", "load_settings", "settings_markdown"]

# The models folder sits beside the package in a checkout (the project installs editable).
CHECKOUT_SQL_DIR = Path(__file__).resolve().parents[1] / "dbt_like_sql"

CORE_TABLE: tuple[Row, ...] = (
    ("TRACER_DUCKDB_PATH", ".tracer/tracer.duckdb", "The one DuckDB file every asset lives in."),
    (
        "DAGSTER_HOME",
        ".dagster",
        "The Dagster instance (runs, schedules, sensors) the CLI and the UI share; `make` targets default it.",
    ),
    ("TRACER_SQL_DIR", "dbt_like_sql/ of the checkout", "Folder of the dbt-like SQL models (`<schema>/<table>.sql`)."),
    ("DEBUG", "0", "Seed flag: 1 turns on debug logging of the `tracer_assets` loggers (to stderr)."),
)
DEFAULTS = defaults(CORE_TABLE)
# (name, default as written in the README, meaning) of every setting, domain by domain.
SETTINGS_TABLE: tuple[Row, ...] = (
    *CORE_TABLE,
    *market_settings.TABLE,
    *signals_settings.TABLE,
    *research_settings.TABLE,
    *ml_settings.TABLE,
    *ranking_settings.TABLE,
    *reports_settings.TABLE,
    *trading_settings.TABLE,
    *llm_settings.TABLE,
)


@dataclass(frozen=True)
class Settings:
    duckdb_path: Path
    sql_dir: Path
    debug: bool
    market: MarketSettings
    signals: SignalsSettings
    research: ResearchSettings
    ml: MlSettings
    ranking: RankingSettings
    reports: ReportsSettings
    trading: TradingSettings
    llm: LlmSettings


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read and check every setting. Raises SettingsError naming the variable at fault."""
    env = dict(os.environ if environ is None else environ)
    market = market_settings.load(env)
    return Settings(
        duckdb_path=Path(text(env, "TRACER_DUCKDB_PATH", DEFAULTS["TRACER_DUCKDB_PATH"])).expanduser().absolute(),
        sql_dir=Path(text(env, "TRACER_SQL_DIR", str(CHECKOUT_SQL_DIR))).expanduser(),
        debug=flag(env, "DEBUG", DEFAULTS["DEBUG"] == "1"),
        market=market,
        signals=signals_settings.load(env),
        research=research_settings.load(env),
        ml=ml_settings.load(env, market.all_timeframes),
        ranking=ranking_settings.load(env),
        reports=reports_settings.load(env),
        trading=trading_settings.load(env, market.base_timeframe_seconds),
        llm=llm_settings.load(env),
    )


def settings_markdown() -> str:
    rows = ["| name | default | meaning |", "|---|---|---|"]
    rows += [
        f"| `{name}` | {default if default.startswith('(') or ' ' in default else f'`{default}`'} | {meaning} |"
        for name, default, meaning in SETTINGS_TABLE
    ]
    return "\n".join(rows)


if __name__ == "__main__":
    print(settings_markdown())
