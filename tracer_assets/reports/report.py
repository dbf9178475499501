"""The daily report as data: the pydantic models of the JSON written each day, how a report is
built from the day's inputs, its trends against earlier reports, its file on disk, and its
Markdown summary for the UI. Pure Python; the report's assets gather the inputs.

Conventions the callers keep:
- scores are "higher is better" (the ranking's order); a NaN or infinite number becomes None;
- an account's `drawdown` is its fall from the peak as a fraction (0.12 = 12% below the peak);
  left None, it is computed from `equity` and `peak_equity` when both are known;
- the paper account is the one whose mode is `DRY` (trading's paper mode) or `PAPER`;
- a trend's earlier values are the `today` values those reports recorded, so each figure is
  computed once, on its own day, from that day's full inputs (the report itself lists only the
  top items).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections.abc import Iterable, Sequence
from decimal import Decimal
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal

import polars as pl
from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError, field_validator, model_validator

from tracer_assets.files import write_atomically
from tracer_assets.ranking.retention import KEPT

__all__ = [
    "REPORT_SCHEMA_VERSION",
    "TREND_METRICS",
    "AccountHealth",
    "Activity",
    "DailyReport",
    "DataHealth",
    "RankedItem",
    "SelectedVariant",
    "StepStatus",
    "Trend",
    "build_report",
    "load_previous_reports",
    "report_markdown",
    "report_path",
    "trends",
    "write_report_json",
]

REPORT_SCHEMA_VERSION = 1
PAPER_MODES = ("DRY", "PAPER")
RANKING_SCHEMA = {
    "item_id": pl.String,
    "name": pl.String,
    "rank": pl.Int64,
    "score": pl.Float64,
    "status": pl.String,
    "decision": pl.String,
    "reason": pl.String,
}
RANKING_COLUMNS = tuple(RANKING_SCHEMA)
REPORT_FILE = re.compile(r"^(\d{4}-\d{2}-\d{2})\.json$")

# The trends, in the order the report lists them: (metric, label in the Markdown).
TREND_METRICS: tuple[tuple[str, str], ...] = (
    ("best_strategy_score", "best strategy score"),
    ("mean_kept_strategy_score", "mean score of kept strategies"),
    ("best_model_score", "best model score"),
    ("best_ensemble_score", "best ensemble score"),
    ("kept_strategies", "kept strategies"),
    ("paper_equity", "paper equity"),
    ("trials_total", "trials in total"),
)


def _finite_or_none(value: Any) -> Any:
    """NaN and infinity mean "not known" in a report: stored as null, never as a bad number.
    Decimals (the trading domain's money) become floats; anything else is left to pydantic."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float | Decimal):
        number = float(value)
        return number if math.isfinite(number) else None
    return value


Number = Annotated[float | None, BeforeValidator(_finite_or_none)]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class StepStatus(_Frozen):
    step: str
    status: Literal["succeeded", "failed", "skipped", "not_run"]
    reason: str | None = None
    seconds: Number = None


class Activity(_Frozen):
    designed: int
    rejected: int
    tuned: int
    tuning_trials: int
    archived: int
    restored: int
    trials_total: int


class RankedItem(_Frozen):
    rank: int
    item_id: str
    name: str
    score: Number = None
    status: str
    decision: str
    reason: str | None = None


class SelectedVariant(_Frozen):
    strategy_id: str
    name: str
    origin: str
    parents: list[str]
    oos_score: Number = None
    sharpe: Number = None
    deflated_sharpe: Number = None
    trials: int


class AccountHealth(_Frozen):
    mode: str
    equity: Number = None
    peak_equity: Number = None
    drawdown: Number = None
    exposure: Number = None
    open_positions: int
    day_pnl: Number = None
    as_of: dt.datetime | None = None


class DataHealth(_Frozen):
    gaps: int
    missing_candles: int
    failed_checks: list[str]
    stale_assets: list[str]
    newest_candle: dt.datetime | None = None


class ForwardParity(_Frozen):
    """The forward test of the kept strategies over the last days against the backtest engine
    (trading/forward.py): closed trades identical, and what differs, named."""

    start: dt.datetime
    end: dt.datetime
    timeframe: str
    identical: int
    compared: int
    open_at_end: int
    differences: list[str]  # the first few, "SYMBOL entry TS: why"
    skipped: str | None = None  # why it could not run (then the counts are 0)


class Trend(_Frozen):
    metric: str
    today: Number = None
    previous: Number = None
    change: Number = None
    history: list[Number]  # the earlier reports' values, oldest first


class DailyReport(_Frozen):
    schema_version: int
    date: dt.date
    generated_at: dt.datetime
    research_run_id: str | None
    steps: list[StepStatus]
    failures: list[StepStatus]  # the failed steps, derived from `steps`
    activity: Activity
    strategies: list[RankedItem]
    models: list[RankedItem]
    ensembles: list[RankedItem]
    selected_variants: list[SelectedVariant]
    portfolio: list[AccountHealth]
    data: DataHealth
    trends: list[Trend]
    plots: dict[str, str]  # plot name -> PNG file name, relative to the report's directory
    parity: ForwardParity | None = None  # added after version 1's first reports: optional

    @field_validator("plots")
    @classmethod
    def _plots_stay_in_the_report_dir(cls, plots: dict[str, str]) -> dict[str, str]:
        for name, file in plots.items():
            relative = PurePosixPath(file)
            if not file or relative.is_absolute() or ".." in relative.parts:
                raise ValueError(f"plot {name!r}: {file!r} is not a file name relative to the report's directory")
        return plots

    @model_validator(mode="after")
    def _consistent(self) -> DailyReport:
        if self.schema_version != REPORT_SCHEMA_VERSION:
            raise ValueError(f"schema_version {self.schema_version}: this code reads version {REPORT_SCHEMA_VERSION}")
        failed = [step for step in self.steps if step.status == "failed"]
        if self.failures != failed:
            raise ValueError(
                f"failures {[s.step for s in self.failures]} are not the failed steps {[s.step for s in failed]}"
            )
        return self


# ---------------------------------------------------------------------------------------------
# Building


def build_report(
    *,
    day: dt.date,
    generated_at: dt.datetime,
    research_run_id: str | None,
    steps: list[dict],
    activity: dict,
    strategies: pl.DataFrame,
    models: pl.DataFrame,
    ensembles: pl.DataFrame,
    selected_variants: list[dict],
    portfolio: list[dict],
    data: dict,
    previous: list[dict],
    top: int,
    plots: dict[str, str],
    parity: dict | None = None,
) -> DailyReport:
    """The day's report. The ranking frames list every ranked item (columns item_id, name, rank,
    score, status, decision, reason); the report lists the kept ones, best rank first, at most
    `top`. `previous`: earlier reports' JSON dicts (any order); one that is not a valid report,
    or not dated before `day`, is skipped. Invalid inputs raise pydantic's ValidationError."""
    if top < 0:
        raise ValueError(f"top must be 0 or more, not {top}")
    step_statuses = [StepStatus.model_validate(step) for step in steps]
    activity_counts = Activity.model_validate(activity)
    accounts = [AccountHealth.model_validate(_with_drawdown(account)) for account in portfolio]
    today = {
        "best_strategy_score": _best(_kept_scores(strategies)),
        "mean_kept_strategy_score": _mean(_kept_scores(strategies)),
        "best_model_score": _best(_kept_scores(models)),
        "best_ensemble_score": _best(_kept_scores(ensembles)),
        "kept_strategies": float(_kept(strategies).height),
        "paper_equity": _paper_equity(accounts),
        "trials_total": float(activity_counts.trials_total),
    }
    return DailyReport(
        schema_version=REPORT_SCHEMA_VERSION,
        date=day,
        generated_at=generated_at,
        research_run_id=research_run_id,
        steps=step_statuses,
        failures=[step for step in step_statuses if step.status == "failed"],
        activity=activity_counts,
        strategies=_top_kept(strategies, top),
        models=_top_kept(models, top),
        ensembles=_top_kept(ensembles, top),
        selected_variants=[SelectedVariant.model_validate(variant) for variant in selected_variants],
        portfolio=accounts,
        data=DataHealth.model_validate(data),
        trends=trends(today, _earlier_reports(previous, day)),
        plots=dict(plots),
        parity=None if parity is None else ForwardParity.model_validate(parity),
    )


def _kept(frame: pl.DataFrame) -> pl.DataFrame:
    """The kept rows of a ranking frame, best rank first; a frame with no rows (even no columns:
    nothing ranked yet) has none."""
    if frame.is_empty():
        return pl.DataFrame(schema=RANKING_SCHEMA)
    missing = [column for column in RANKING_COLUMNS if column not in frame.columns]
    if missing:
        raise ValueError(f"a ranking frame lacks the columns {missing}; it has {frame.columns}")
    return frame.filter(pl.col("status") == KEPT).sort("rank").select(RANKING_COLUMNS)


def _top_kept(frame: pl.DataFrame, top: int) -> list[RankedItem]:
    return [RankedItem.model_validate(row) for row in _kept(frame).head(top).iter_rows(named=True)]


def _kept_scores(frame: pl.DataFrame) -> list[float]:
    scores = (_finite_or_none(score) for score in _kept(frame).get_column("score").to_list())
    return [score for score in scores if score is not None]


def _best(scores: Sequence[float]) -> float | None:
    return max(scores) if scores else None


def _mean(scores: Sequence[float]) -> float | None:
    return sum(scores) / len(scores) if scores else None


def _with_drawdown(account: dict) -> dict:
    """The account with its drawdown computed from equity and peak when the caller left it out."""
    if account.get("drawdown") is not None:
        return account
    equity, peak = _finite_or_none(account.get("equity")), _finite_or_none(account.get("peak_equity"))
    if not isinstance(equity, float) or not isinstance(peak, float) or peak <= 0:
        return account
    return {**account, "drawdown": max(0.0, 1.0 - equity / peak)}


def _paper_equity(accounts: Iterable[AccountHealth]) -> float | None:
    return next((a.equity for a in accounts if a.mode.upper() in PAPER_MODES), None)


# ---------------------------------------------------------------------------------------------
# Trends


def _earlier_reports(previous: Iterable[Any], day: dt.date) -> list[DailyReport]:
    """The valid reports dated before `day`, oldest first. A report that does not validate (hand
    edited, an older schema, cut short) is skipped: one bad file must not stop today's report."""
    reports = []
    for candidate in previous:
        try:
            report = DailyReport.model_validate(candidate)
        except ValidationError:
            continue
        if report.date < day:
            reports.append(report)
    return sorted(reports, key=lambda report: report.date)


def trends(today: dict[str, float | None], earlier: Sequence[DailyReport]) -> list[Trend]:
    """One trend per metric of TREND_METRICS: today's value against the earlier reports (oldest
    first), whose values are the `today` each of them recorded."""
    recorded = [{trend.metric: trend.today for trend in report.trends} for report in earlier]
    result = []
    for metric, _ in TREND_METRICS:
        history = [values.get(metric) for values in recorded]
        now = today.get(metric)
        before = history[-1] if history else None
        change = now - before if now is not None and before is not None else None
        result.append(Trend(metric=metric, today=now, previous=before, change=change, history=history))
    return result


# ---------------------------------------------------------------------------------------------
# Files


def report_path(directory: Path, day: dt.date) -> Path:
    return Path(directory) / f"{day.isoformat()}.json"


def write_report_json(report: DailyReport, directory: Path) -> Path:
    """The report as `<directory>/<YYYY-MM-DD>.json`, pretty-printed, written atomically."""
    return write_atomically(report_path(directory, report.date), report.model_dump_json(indent=2) + "\n")


def load_previous_reports(directory: Path, before: dt.date, limit: int) -> list[dict]:
    """The JSON dicts of up to `limit` valid reports dated before `before`, newest first. Only
    files named `YYYY-MM-DD.json` are read; unreadable or invalid ones are skipped."""
    directory = Path(directory)
    if limit <= 0 or not directory.is_dir():
        return []
    found = []
    for path, day in sorted(_dated_files(directory), key=lambda item: item[1], reverse=True):
        if day >= before:
            continue
        loaded = _read_report(path)
        if loaded is not None:
            found.append(loaded)
            if len(found) == limit:
                break
    return found


def _dated_files(directory: Path) -> list[tuple[Path, dt.date]]:
    files = []
    for path in directory.iterdir():
        match = REPORT_FILE.match(path.name)
        if match is None or not path.is_file():
            continue
        try:
            files.append((path, dt.date.fromisoformat(match.group(1))))
        except ValueError:  # named like a date but not one (2024-13-45)
            continue
    return files


def _read_report(path: Path) -> dict | None:
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
        DailyReport.model_validate(loaded)
    except (OSError, UnicodeDecodeError, ValueError):  # JSONDecodeError and ValidationError are ValueErrors
        return None
    return loaded


# ---------------------------------------------------------------------------------------------
# Markdown


def report_markdown(report: DailyReport) -> str:
    """A readable summary: failures first, then activity, the kept items, the selected variants,
    the accounts, the data and the trends. The caller appends the plots."""
    run = f" · research run `{report.research_run_id}`" if report.research_run_id else ""
    parts = [f"# Daily report {report.date.isoformat()}", f"Generated {_when(report.generated_at)}{run}."]
    if report.failures:
        parts += [f"## Failures ({len(report.failures)})", _failures_table(report.failures)]
    parts += ["## Steps", _steps_table(report.steps)]
    parts += ["## Activity", _activity_table(report.activity)]
    for title, items in (("strategies", report.strategies), ("models", report.models), ("ensembles", report.ensembles)):
        parts += [f"## Top {title}", _ranked_table(items) if items else f"_No kept {title}._"]
    parts += ["## Selected variants", _variants_table(report.selected_variants)]
    parts += ["## Portfolio", _portfolio_table(report.portfolio)]
    parts += ["## Data", _data_lines(report.data)]
    if report.parity is not None:
        parts += ["## Backtest-to-paper parity", _parity_lines(report.parity)]
    parts += ["## Trends", _trends_table(report.trends)]
    return "\n\n".join(parts) + "\n"


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dt.datetime):
        return _when(value)
    # A pipe or a line break in a reason would break the table's row.
    return str(value).replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _when(moment: dt.datetime) -> str:
    if moment.tzinfo is None:
        return moment.strftime("%Y-%m-%d %H:%M")
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _formatted(value: float | None, pattern: str) -> str | None:
    return None if value is None else pattern.format(value)


def _percent(value: float | None) -> str | None:
    return _formatted(value, "{:.1%}")


def _money(value: float | None) -> str | None:
    return _formatted(value, "{:,.2f}")


def _seconds(value: float | None) -> str | None:
    return _formatted(value, "{:.1f} s")


def _failures_table(failures: Sequence[StepStatus]) -> str:
    return _table(["step", "reason"], [(f"**{s.step}**", s.reason or "no reason recorded") for s in failures])


def _steps_table(steps: Sequence[StepStatus]) -> str:
    if not steps:
        return "_No step recorded._"
    return _table(
        ["step", "status", "time", "reason"], [(s.step, s.status, _seconds(s.seconds), s.reason) for s in steps]
    )


def _activity_table(activity: Activity) -> str:
    header = ["designed", "rejected", "tuned", "tuning trials", "archived", "restored", "trials in total"]
    a = activity
    return _table(header, [(a.designed, a.rejected, a.tuned, a.tuning_trials, a.archived, a.restored, a.trials_total)])


def _ranked_table(items: Sequence[RankedItem]) -> str:
    return _table(
        ["rank", "name", "score", "decision", "reason"],
        [(i.rank, i.name, i.score, i.decision, i.reason) for i in items],
    )


def _variants_table(variants: Sequence[SelectedVariant]) -> str:
    if not variants:
        return "_No variant selected._"
    header = ["name", "origin", "parents", "OOS score", "Sharpe", "deflated Sharpe", "trials"]
    rows = [
        (v.name, v.origin, ", ".join(v.parents) or None, v.oos_score, v.sharpe, v.deflated_sharpe, v.trials)
        for v in variants
    ]
    return _table(header, rows)


def _portfolio_table(accounts: Sequence[AccountHealth]) -> str:
    if not accounts:
        return "_No account yet._"
    header = ["mode", "equity", "peak", "drawdown", "exposure", "open positions", "day P&L", "as of"]
    rows = [
        (
            a.mode,
            _money(a.equity),
            _money(a.peak_equity),
            _percent(a.drawdown),
            _percent(a.exposure),
            a.open_positions,
            _money(a.day_pnl),
            a.as_of,
        )
        for a in accounts
    ]
    return _table(header, rows)


def _data_lines(data: DataHealth) -> str:
    return "\n".join(
        [
            f"- gaps: {data.gaps}, missing candles: {data.missing_candles}",
            f"- failed checks: {', '.join(data.failed_checks) or 'none'}",
            f"- stale assets: {', '.join(data.stale_assets) or 'none'}",
            f"- newest candle: {_when(data.newest_candle) if data.newest_candle else 'none'}",
        ]
    )


def _parity_lines(parity: ForwardParity) -> str:
    window = f"{_when(parity.start)} to {_when(parity.end)}, {parity.timeframe}"
    if parity.skipped:
        return f"Forward test {window}: not run ({parity.skipped})."
    lines = [
        f"Forward test of the kept strategies, {window}: **{parity.identical} of {parity.compared}** closed "
        "trades identical to the backtest engine's (entry and exit candle, fill prices, fees, exit reason); "
        f"{parity.open_at_end} open at the end. Sizes differ by design."
    ]
    lines += [f"- {note}" for note in parity.differences]
    return "\n".join(lines)


def _arrow(change: float | None) -> str:
    if change is None:
        return ""
    return "↑" if change > 0 else "↓" if change < 0 else "→"


COUNT_METRICS = ("kept_strategies", "trials_total")


def _trend_value(metric: str, value: float | None, sign: str = "") -> str | None:
    if metric in COUNT_METRICS:
        return _formatted(value, "{:" + sign + ".0f}")
    if metric == "paper_equity":
        return _formatted(value, "{:" + sign + ",.2f}")
    return _formatted(value, "{:" + sign + ".4g}")


def _trends_table(trend_rows: Sequence[Trend]) -> str:
    labels = dict(TREND_METRICS)
    rows = [
        (
            labels.get(t.metric, t.metric),
            _trend_value(t.metric, t.today),
            _trend_value(t.metric, t.previous),
            None if t.change is None else f"{_trend_value(t.metric, t.change, '+')} {_arrow(t.change)}",
            len(t.history),
        )
        for t in trend_rows
    ]
    return _table(["metric", "today", "previous", "change", "reports compared"], rows)
