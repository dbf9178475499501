"""The daily report's review: an advisory reading of the report (a summary, the risks, what to
do), either asked of the LLM (the prompt and the answer's schema, validated by
`tracer_assets.llm.parse_validated`) or computed by fixed rules when no LLM is used. A review
changes nothing: no strategy, model, order or setting follows from it."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator

from tracer_assets.llm.answers import reject
from tracer_assets.reports.report import AccountHealth, DailyReport

__all__ = [
    "DEFLATED_SHARPE_MIN",
    "DRAWDOWN_LIMIT",
    "REVIEW_SYSTEM_PROMPT",
    "ReviewAnswer",
    "review_prompt",
    "rules_review",
]

SUMMARY_CHARS = 1500
ITEM_CHARS = 400
MAX_ITEMS = 8
DRAWDOWN_LIMIT = 0.10  # an account more than 10% below its peak is a risk
DEFLATED_SHARPE_MIN = 0.95  # below it, the selected variant may be the luck of the search
NO_RISK = "No risk flagged by the rules."


class ReviewAnswer(BaseModel):
    """The review's answer: every text stripped, none blank, each within its length."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    summary: str
    risks: list[str]
    recommendations: list[str]

    @field_validator("summary")
    @classmethod
    def _summary(cls, summary: str) -> str:
        return _checked_text("summary", summary, SUMMARY_CHARS)

    @field_validator("risks", "recommendations")
    @classmethod
    def _items(cls, items: list[str], info: ValidationInfo) -> list[str]:
        if not 1 <= len(items) <= MAX_ITEMS:
            raise reject(f"{info.field_name} has {len(items)} items; expected 1 to {MAX_ITEMS}")
        return [_checked_text(f"{info.field_name}[{index}]", item, ITEM_CHARS) for index, item in enumerate(items)]


def _checked_text(where: str, value: str, limit: int) -> str:
    text = value.strip()
    if not text:
        raise reject(f"{where} is blank")
    if len(text) > limit:
        raise reject(f"{where} has {len(text)} characters, more than {limit}")
    return text


# ---------------------------------------------------------------------------------------------
# The LLM's review

REVIEW_SYSTEM_PROMPT = f"""You are a senior quantitative researcher reviewing the daily report of Tracer, an automated \
research and trading system for crypto spot markets. Each day it designs, tunes, backtests (walk-forward, scored out \
of sample) and ranks trading strategies, trains and ranks ML models and ensembles, and trades the selected ones, on \
paper (mode DRY) unless live trading is switched on.

Your review is advisory only: it changes nothing. No strategy, model, order or setting follows from it; a person \
reads it.

Give a strategic analysis: what the day shows about the research's progress, where the results may be fragile (a \
selection made among many trials, a deflated Sharpe ratio below {DEFLATED_SHARPE_MIN}, scores at or below 0, \
drawdowns, failed steps, data gaps or stale data), and what to do next.

Conventions in the report: scores are higher-is-better; an account's drawdown is its fall from the peak as a fraction \
(0.12 = 12% below the peak); a deflated Sharpe ratio is the probability (0 to 1) that a selected variant's true Sharpe \
ratio beats what the best of its trials would show by luck; a trend's change is today minus the previous report; null \
means not known.

Answer with exactly one JSON object and nothing else, with exactly these fields:
{{"summary": "...", "risks": ["...", ...], "recommendations": ["...", ...]}}
- summary: plain text, at most {SUMMARY_CHARS} characters;
- risks: 1 to {MAX_ITEMS} items, each at most {ITEM_CHARS} characters, most serious first;
- recommendations: 1 to {MAX_ITEMS} items, each at most {ITEM_CHARS} characters, most useful first.
Quote the report's figures; do not invent any."""


def review_prompt(report: DailyReport) -> str:
    """The user message of the review: the report as JSON (without its plots' file names)."""
    body = report.model_dump_json(indent=2, exclude={"plots"})
    return (
        f"The daily report of {report.date.isoformat()} follows as JSON.\n\n"
        f"```json\n{body}\n```\n\n"
        "Review it as your instructions say: exactly one JSON object with the fields summary, risks and "
        "recommendations. The review is advisory: it changes nothing."
    )


# ---------------------------------------------------------------------------------------------
# The rules' review (no LLM)


def rules_review(report: DailyReport) -> ReviewAnswer:
    """A review by fixed rules over the report's figures: the same report, the same review."""
    risks_and_actions = [
        finding
        for finding in (
            _failed_steps(report),
            _no_edge(report),
            _drawdowns(report.portfolio),
            _stale_data(report),
            _failed_checks(report),
            _gaps(report),
            _lucky_selection(report),
        )
        if finding is not None
    ]
    risks = [risk for risk, _ in risks_and_actions] or [NO_RISK]
    recommendations = [action for _, action in risks_and_actions] or [
        "No action needed by the rules: keep the daily research running and read the trends tomorrow."
    ]
    return ReviewAnswer(
        summary=_clip(_summary(report), SUMMARY_CHARS),
        risks=[_clip(risk, ITEM_CHARS) for risk in risks[:MAX_ITEMS]],
        recommendations=[_clip(action, ITEM_CHARS) for action in recommendations[:MAX_ITEMS]],
    )


Finding = tuple[str, str]  # (risk, recommendation)


def _today(report: DailyReport, metric: str) -> float | None:
    return next((trend.today for trend in report.trends if trend.metric == metric), None)


def _best_strategy_score(report: DailyReport) -> float | None:
    # The trend holds the figure over every kept strategy; the list only the top ones.
    best = _today(report, "best_strategy_score")
    if best is None:
        scores = [item.score for item in report.strategies if item.score is not None]
        best = max(scores, default=None)
    return best


def _summary(report: DailyReport) -> str:
    a = report.activity
    kept = _today(report, "kept_strategies")
    kept_count = int(kept) if kept is not None else len(report.strategies)
    best = _best_strategy_score(report)
    sentences = [
        f"{report.date.isoformat()}: {kept_count} kept strategies, best score {_number(best)}.",
        (
            f"{a.designed} designed ({a.rejected} rejected), {a.tuned} tuned in {a.tuning_trials} tuning trials, "
            f"{a.archived} archived, {a.restored} restored; {a.trials_total} trials in total."
        ),
        f"Listed: models kept {len(report.models)}, ensembles kept {len(report.ensembles)}, "
        f"selected variants {len(report.selected_variants)}.",
    ]
    sentences += [f"{account.mode} equity {_money(account.equity)}." for account in report.portfolio]
    if report.failures:
        sentences.append(f"Failed steps ({len(report.failures)}): {_listed([s.step for s in report.failures])}.")
    else:
        sentences.append("No step failed.")
    return " ".join(sentences)


def _failed_steps(report: DailyReport) -> Finding | None:
    if not report.failures:
        return None
    details = "; ".join(f"{s.step} ({s.reason or 'no reason recorded'})" for s in report.failures)
    names = _listed([s.step for s in report.failures])
    return (
        f"{len(report.failures)} step(s) failed: {details}. Today's figures may be incomplete.",
        f"Fix and rerun the failed steps ({names}) before relying on today's ranking.",
    )


def _no_edge(report: DailyReport) -> Finding | None:
    best = _best_strategy_score(report)
    if best is not None and best > 0:
        return None
    risk = (
        "No kept strategy has an out-of-sample score."
        if best is None
        else f"The best kept strategy scores {_number(best)} (at most 0): nothing shows an edge out of sample."
    )
    return (
        risk,
        "Widen the research: new strategy families, features or timeframes, since nothing scores above 0.",
    )


def _drawdowns(accounts: Sequence[AccountHealth]) -> Finding | None:
    # The magnitude: a drawdown given as a negative fraction means the same fall.
    deep = [a for a in accounts if a.drawdown is not None and abs(a.drawdown) > DRAWDOWN_LIMIT]
    if not deep:
        return None
    falls = ", ".join(f"{a.mode} {abs(a.drawdown):.1%}" for a in deep)
    return (
        f"Drawdown beyond {DRAWDOWN_LIMIT:.0%} of the peak: {falls}.",
        f"Review the position sizes and risk limits of {_listed([a.mode for a in deep])} before adding exposure.",
    )


def _stale_data(report: DailyReport) -> Finding | None:
    if not report.data.stale_assets:
        return None
    assets = _listed(report.data.stale_assets)
    return (
        f"Stale: {assets} not materialized within their freshness window; what reads them acts on old data.",
        f"Materialize {assets} again and find why the schedule or sensor that should have did not.",
    )


def _failed_checks(report: DailyReport) -> Finding | None:
    if not report.data.failed_checks:
        return None
    checks = _listed(report.data.failed_checks)
    return (
        f"Failed data checks: {checks}.",
        f"Fix what the failed checks ({checks}) point at before trusting today's backtests.",
    )


def _gaps(report: DailyReport) -> Finding | None:
    data = report.data
    if data.gaps <= 0 and data.missing_candles <= 0:
        return None
    return (
        f"{data.gaps} gaps in the candles ({data.missing_candles} missing candles): backtests across them are biased.",
        "Backfill the missing candles and rerun the research on the complete history.",
    )


def _lucky_selection(report: DailyReport) -> Finding | None:
    weak = [
        v for v in report.selected_variants if v.deflated_sharpe is not None and v.deflated_sharpe < DEFLATED_SHARPE_MIN
    ]
    if not weak:
        return None
    figures = _listed([f"{v.name} {v.deflated_sharpe:.2f} after {v.trials} combinations tried" for v in weak])
    return (
        f"Deflated Sharpe below {DEFLATED_SHARPE_MIN} for {len(weak)} selected variant(s) ({figures}): "
        "the selection may be luck of the search.",
        "Treat those variants as unconfirmed: keep them on paper and let out-of-sample days accumulate before sizing "
        "up.",
    )


# ---------------------------------------------------------------------------------------------
# Wording


def _listed(names: Sequence[str], at_most: int = 5) -> str:
    shown = ", ".join(names[:at_most])
    return shown if len(names) <= at_most else f"{shown} and {len(names) - at_most} more"


def _number(value: float | None) -> str:
    return "none" if value is None else f"{value:.4g}"


def _money(value: float | None) -> str:
    return "not known" if value is None else f"{value:,.2f}"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
