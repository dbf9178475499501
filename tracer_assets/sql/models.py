"""dbt-like SQL models: one SELECT per .sql file, each file one DuckDB-backed asset.

A model's path under the models folder is its asset key and table (`market/ohlcv.sql` is
asset `market/ohlcv`, table `market.ohlcv`). Its upstream assets come from the SQL itself:
`{{ ref('market/candles') }}` renders as the table name and records the dependency. A
model configures itself with `{{ config(materialized=..., ...) }}`:

- `view`: CREATE OR REPLACE VIEW (cheap, always current);
- `table`: CREATE OR REPLACE TABLE, rebuilt whole;
- `incremental`: partitioned like its first ref; a run replaces the rows whose `time_column`
  lies in the run's partition window, in one transaction. The SQL reads only that window
  through `{{ window_start }}` / `{{ window_end }}` (SQL timestamp literals).

Templates are Jinja; the variables on offer are listed in `template_variables`. No Dagster
here.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import jinja2

MATERIALIZATIONS = ("view", "table", "incremental")
_KEY_PART = re.compile(r"^[a-z_][a-z0-9_]*$")


class SqlModelError(ValueError):
    """A model file that cannot become an asset; the message names the file."""


@dataclass(frozen=True)
class SqlModel:
    path: Path
    key: tuple[str, ...]  # ("market", "ohlcv")
    source: str
    refs: tuple[tuple[str, ...], ...]
    config: dict = field(default_factory=dict)

    @property
    def table(self) -> str:
        return ".".join(self.key)

    @property
    def materialized(self) -> str:
        return self.config.get("materialized", "view")

    @property
    def description(self) -> str:
        """The model's leading `--` comment lines."""
        lines = []
        for line in self.source.splitlines():
            stripped = line.strip()
            if stripped.startswith("--"):
                lines.append(stripped[2:].strip())
            elif stripped and not stripped.startswith("{{"):
                break
        return " ".join(lines)

    @property
    def code_version(self) -> str:
        return hashlib.sha256(self.source.encode()).hexdigest()[:16]


def _key_from_ref(name: str, where: Path) -> tuple[str, ...]:
    key = tuple(part for part in name.replace(".", "/").split("/") if part)
    if len(key) != 2 or not all(_KEY_PART.match(p) for p in key):
        raise SqlModelError(f"{where}: ref({name!r}) must name an asset as 'schema/table', e.g. ref('market/candles')")
    return key


class _Renderer:
    def __init__(self, variables: dict):
        self.env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True)
        self.variables = variables

    def render(self, path: Path, source: str, window: tuple[str, str] | None = None) -> tuple[str, list, dict]:
        refs: list[tuple[str, ...]] = []
        config: dict = {}

        def ref(name: str) -> str:
            key = _key_from_ref(name, path)
            if key not in refs:
                refs.append(key)
            return ".".join(key)

        def set_config(**kwargs) -> str:
            config.update(kwargs)
            return ""

        start, end = window or ("'-infinity'::TIMESTAMPTZ", "'infinity'::TIMESTAMPTZ")
        try:
            sql = self.env.from_string(source).render(
                ref=ref, config=set_config, window_start=start, window_end=end, **self.variables
            )
        except jinja2.TemplateError as exc:
            raise SqlModelError(f"{path}: {type(exc).__name__}: {exc}") from None
        return sql, refs, config


def template_variables(base_timeframe: str, base_seconds: int, resample: list[tuple[str, int]]) -> dict:
    """What a model can use besides ref/config/window_start/window_end."""
    return {
        "base_timeframe": base_timeframe,
        "base_seconds": base_seconds,
        # SQL VALUES rows: ('15m', 900), ('1h', 3600), ...
        "resample_timeframes": ", ".join(f"('{name}', {seconds})" for name, seconds in resample),
    }


def load_models(folder: Path, variables: dict) -> list[SqlModel]:
    """Every model under `folder`, checked: names, config, one statement, known refs."""
    if not folder.is_dir():
        raise SqlModelError(
            f"SQL models folder {folder} does not exist "
            "(set TRACER_SQL_DIR, or install the project editable from its checkout)"
        )
    renderer = _Renderer(variables)
    models = []
    for path in sorted(folder.rglob("*.sql")):
        relative = path.relative_to(folder).with_suffix("")
        key = tuple(relative.parts)
        if len(key) != 2 or not all(_KEY_PART.match(p) for p in key):
            raise SqlModelError(f"{path}: a model lives at <schema>/<table>.sql in lower_snake_case")
        source = path.read_text()
        sql, refs, config = renderer.render(path, source)
        if not sql.strip():
            raise SqlModelError(f"{path}: the file holds no SELECT")
        if ";" in sql.strip().rstrip(";"):
            raise SqlModelError(f"{path}: one SELECT per file, found several statements")
        unknown = set(config) - {"materialized", "time_column"}
        if unknown:
            raise SqlModelError(f"{path}: unknown config {sorted(unknown)}")
        if config.get("materialized", "view") not in MATERIALIZATIONS:
            raise SqlModelError(f"{path}: materialized must be one of {MATERIALIZATIONS}")
        if config.get("materialized") == "incremental" and (not refs or "time_column" not in config):
            raise SqlModelError(f"{path}: an incremental model needs a ref() to partition like and a time_column")
        models.append(SqlModel(path=path, key=key, source=source, refs=tuple(refs), config=config))
    for model in models:
        if model.key in model.refs:
            raise SqlModelError(f"{model.path}: a model cannot ref itself")
    return models


def render_model(model: SqlModel, variables: dict, window: tuple[str, str] | None = None) -> str:
    sql, _, _ = _Renderer(variables).render(model.path, model.source, window)
    return sql.strip().rstrip(";")


def materialize_statements(model: SqlModel, sql: str) -> list[str]:
    """The statements that (re)build a model from its rendered SELECT, before any window delete."""
    schema = model.key[0]
    if model.materialized == "view":
        return [f"CREATE SCHEMA IF NOT EXISTS {schema}", f"CREATE OR REPLACE VIEW {model.table} AS\n{sql}"]
    if model.materialized == "table":
        return [f"CREATE SCHEMA IF NOT EXISTS {schema}", f"CREATE OR REPLACE TABLE {model.table} AS\n{sql}"]
    return [
        f"CREATE SCHEMA IF NOT EXISTS {schema}",
        f"CREATE TABLE IF NOT EXISTS {model.table} AS SELECT * FROM ({sql}) LIMIT 0",
    ]
