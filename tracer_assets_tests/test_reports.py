"""The daily report: built from small hand-made inputs, written as `<date>.json` and read back
whole, its trends against earlier reports on disk, its failures and Markdown, the rules' review,
and the review answer's schema as the LLM client validates it."""

from __future__ import annotations

import json
import math
from datetime import UTC, date, datetime

import polars as pl
import pytest
from pydantic import ValidationError

from tracer_assets.config import SettingsError
from tracer_assets.llm import AnswerRejected, parse_validated
from tracer_assets.reports import settings
from tracer_assets.reports.report import (
    RANKING_SCHEMA,
    REPORT_SCHEMA_VERSION,
    DailyReport,
    build_report,
    load_previous_reports,
    report_markdown,
    write_report_json,
)
from tracer_assets.reports.review import NO_RISK, ReviewAnswer, review_prompt, rules_review

DAY = date(2024, 6, 3)
FAILED_REASON = "LightGBM ran out of memory"


def ranking(*rows: tuple) -> pl.DataFrame:
    return pl.DataFrame(list(rows), schema=RANKING_SCHEMA, orient="row")


def strategies_scoring(*scores: float) -> pl.DataFrame:
    """Kept strategies with these scores (best first), and one archived below them."""
    rows = [(f"s{i}", f"strategy {i}", i, score, "kept", "kept", f"rank {i}") for i, score in enumerate(scores, 1)]
    rows.append(("s9", "strategy 9", len(scores) + 1, -5.0, "archived", "archived", "below the cutoff"))
    return ranking(*rows)


def inputs(day: date = DAY, **changes) -> dict:
    """The keyword arguments of build_report for a plain day; `changes` replace some."""
    arguments = {
        "day": day,
        "generated_at": datetime(day.year, day.month, day.day, 0, 40, tzinfo=UTC),
        "research_run_id": "run-1",
        "steps": [
            {"step": "research/strategies", "status": "succeeded", "reason": None, "seconds": 12.5},
            {"step": "ml/models", "status": "failed", "reason": FAILED_REASON, "seconds": 3.0},
            {"step": "ranking/models", "status": "skipped", "reason": "upstream failed"},
        ],
        "activity": {
            "designed": 12,
            "rejected": 2,
            "tuned": 4,
            "tuning_trials": 80,
            "archived": 3,
            "restored": 1,
            "trials_total": 240,
        },
        # Out of rank order on purpose: the report sorts.
        "strategies": ranking(
            ("s3", "macd trend", 3, -0.25, "archived", "archived", "below the cutoff"),
            ("s2", "rsi bounce", 2, 0.5, "kept", "restored", "back in: rank 2 of 3"),
            ("s1", "ema cross", 1, 1.5, "kept", "kept", "rank 1 of 3"),
        ),
        "models": ranking(
            ("m1", "lgbm 1h", 1, 0.625, "kept", "kept", "rank 1 of 3"),
            ("m2", "lgbm 4h", 2, float("nan"), "kept", "kept", "kept to hold the minimum"),
            ("m3", "lgbm 1d", 3, 0.5, "archived", "archived", "below the cutoff"),
        ),
        "ensembles": pl.DataFrame(),  # nothing ranked yet
        "selected_variants": [
            {
                "strategy_id": "s1",
                "name": "ema cross",
                "origin": "tuned",
                "parents": ["s0"],
                "oos_score": 1.5,
                "sharpe": 1.25,
                "deflated_sharpe": 0.97,
                "trials": 240,
            }
        ],
        "portfolio": [
            {
                "mode": "DRY",
                "equity": 10250.0,
                "peak_equity": 10500.0,
                "exposure": 0.25,
                "open_positions": 2,
                "day_pnl": 50.0,
                "as_of": datetime(day.year, day.month, day.day, tzinfo=UTC),
            }
        ],
        "data": {
            "gaps": 0,
            "missing_candles": 0,
            "failed_checks": [],
            "stale_assets": [],
            "newest_candle": datetime(day.year, day.month, day.day, tzinfo=UTC),
        },
        "previous": [],
        "top": 10,
        "plots": {"equity": f"{day.isoformat()}-equity.png"},
    }
    return arguments | changes


def trend(report: DailyReport, metric: str):
    return next(t for t in report.trends if t.metric == metric)


# ---------------------------------------------------------------------------------------------
# Building, writing, reading


def test_a_report_lists_the_kept_items_best_first_and_round_trips_through_its_json_file(tmp_path):
    report = build_report(**inputs())
    assert report.schema_version == REPORT_SCHEMA_VERSION
    assert [(i.rank, i.item_id, i.score, i.decision) for i in report.strategies] == [
        (1, "s1", 1.5, "kept"),
        (2, "s2", 0.5, "restored"),
    ]
    # A NaN score is "not known"; the frame without columns lists nothing.
    assert [(i.item_id, i.score) for i in report.models] == [("m1", 0.625), ("m2", None)]
    assert report.ensembles == []
    # The drawdown left out is computed from equity and peak.
    assert report.portfolio[0].drawdown == pytest.approx(1 - 10250 / 10500)

    path = write_report_json(report, tmp_path)
    assert path == tmp_path / "2024-06-03.json"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["2024-06-03.json"]  # no temp file left
    assert DailyReport.model_validate_json(path.read_text()) == report
    assert json.loads(path.read_text())["plots"] == {"equity": "2024-06-03-equity.png"}
    assert path.read_text().startswith('{\n  "schema_version": 1,')  # pretty-printed


def test_top_cuts_the_lists_and_bad_inputs_are_refused():
    report = build_report(**inputs(top=1))
    assert [i.item_id for i in report.strategies] == ["s1"]
    assert [i.item_id for i in report.models] == ["m1"]
    # The trends count every kept strategy, not only the listed ones.
    assert trend(report, "kept_strategies").today == 2.0
    with pytest.raises(ValidationError, match="status"):
        build_report(**inputs(steps=[{"step": "x", "status": "exploded"}]))
    with pytest.raises(ValueError, match="lacks the columns"):
        build_report(**inputs(strategies=pl.DataFrame({"item_id": ["s1"], "score": [1.0]})))
    with pytest.raises(ValidationError, match="relative"):
        build_report(**inputs(plots={"equity": "/etc/passwd"}))


def test_failures_are_the_failed_steps_and_the_markdown_shows_them_first_with_their_reason():
    report = build_report(**inputs())
    assert [s.step for s in report.failures] == ["ml/models"]
    assert report.failures == [s for s in report.steps if s.status == "failed"]

    markdown = report_markdown(report)
    assert markdown.startswith("# Daily report 2024-06-03")
    assert "## Failures (1)" in markdown
    assert f"| **ml/models** | {FAILED_REASON} |" in markdown
    assert markdown.index("## Failures") < markdown.index("## Activity") < markdown.index("## Top strategies")
    assert "| 1 | ema cross | 1.5 | kept | rank 1 of 3 |" in markdown
    assert "_No kept ensembles._" in markdown

    tampered = report.model_dump() | {"failures": []}
    with pytest.raises(ValidationError, match="not the failed steps"):
        DailyReport.model_validate(tampered)


def test_trends_compare_with_earlier_reports_on_disk_and_skip_invalid_ones(tmp_path):
    earlier = [
        (date(2024, 6, 1), strategies_scoring(1.0), 100, 10000.0),
        (date(2024, 6, 2), strategies_scoring(1.25, 0.75, 0.5), 160, 10125.0),
    ]
    for day, strategies, trials, equity in earlier:
        account = inputs(day)["portfolio"][0] | {"equity": equity}
        activity = inputs(day)["activity"] | {"trials_total": trials}
        report = build_report(**inputs(day, strategies=strategies, activity=activity, portfolio=[account]))
        write_report_json(report, tmp_path)
    # Neither a report nor earlier than today: never read.
    (tmp_path / "2024-05-31.json").write_text("{ not json")
    (tmp_path / "2024-05-30.json").write_text(json.dumps({"schema_version": 1, "date": "2024-05-30"}))
    (tmp_path / "notes.json").write_text("{}")
    write_report_json(build_report(**inputs(date(2024, 6, 4))), tmp_path)

    previous = load_previous_reports(tmp_path, before=DAY, limit=7)
    assert [p["date"] for p in previous] == ["2024-06-02", "2024-06-01"]  # newest first
    assert [p["date"] for p in load_previous_reports(tmp_path, before=DAY, limit=1)] == ["2024-06-02"]
    assert load_previous_reports(tmp_path / "missing", before=DAY, limit=7) == []

    # An invalid earlier report handed in directly is skipped too, not a crash.
    report = build_report(**inputs(previous=[*previous, {"garbage": True}]))
    expected = {
        # metric: (history oldest first, today, change)
        "best_strategy_score": ([1.0, 1.25], 1.5, 0.25),
        "mean_kept_strategy_score": ([1.0, 0.8333333333333334], 1.0, 1.0 - 2.5 / 3),
        "best_model_score": ([0.625, 0.625], 0.625, 0.0),
        "best_ensemble_score": ([None, None], None, None),
        "kept_strategies": ([1.0, 3.0], 2.0, -1.0),
        "paper_equity": ([10000.0, 10125.0], 10250.0, 125.0),
        "trials_total": ([100.0, 160.0], 240.0, 80.0),
    }
    assert [t.metric for t in report.trends] == list(expected)
    for metric, (history, today, change) in expected.items():
        got = trend(report, metric)
        assert (got.history, got.today, got.previous, got.change) == (history, today, history[-1], change), metric

    markdown = report_markdown(report)
    assert "| best strategy score | 1.5 | 1.25 | +0.25 ↑ | 2 |" in markdown
    assert "| kept strategies | 2 | 3 | -1 ↓ | 2 |" in markdown
    assert "| paper equity | 10,250.00 | 10,125.00 | +125.00 ↑ | 2 |" in markdown


def test_the_first_report_has_trends_without_history():
    report = build_report(**inputs())
    best = trend(report, "best_strategy_score")
    assert (best.today, best.previous, best.change, best.history) == (1.5, None, None, [])
    assert math.isclose(trend(report, "mean_kept_strategy_score").today, 1.0)


def test_settings_defaults_and_refusals():
    loaded = settings.load({})
    assert loaded.reports_dir.is_absolute() and loaded.reports_dir.parts[-2:] == (".tracer", "reports")
    assert (loaded.top, loaded.trends) == (10, 7)
    assert settings.load({"TRACER_REPORT_TOP": "3", "TRACER_REPORT_TRENDS": "14"}).top == 3
    with pytest.raises(SettingsError, match="TRACER_REPORT_TOP=0"):
        settings.load({"TRACER_REPORT_TOP": "0"})
    with pytest.raises(SettingsError, match="TRACER_REPORT_TRENDS"):
        settings.load({"TRACER_REPORT_TRENDS": "many"})


# ---------------------------------------------------------------------------------------------
# Review


def test_the_rules_flag_a_failed_step_a_negative_best_score_and_a_deep_drawdown():
    account = inputs()["portfolio"][0] | {"equity": 8000.0, "peak_equity": 10000.0}
    variant = inputs()["selected_variants"][0] | {"deflated_sharpe": 0.4}
    report = build_report(
        **inputs(strategies=strategies_scoring(-0.25, -1.0), portfolio=[account], selected_variants=[variant])
    )
    review = rules_review(report)
    risks = "\n".join(review.risks)
    assert f"ml/models ({FAILED_REASON})" in risks
    assert "-0.25" in risks
    assert "DRY 20.0%" in risks
    assert "Deflated Sharpe below 0.95" in risks and "ema cross 0.40 after 240 combinations tried" in risks
    actions = "\n".join(review.recommendations)
    assert "rerun the failed steps (ml/models)" in actions
    assert "Widen the research" in actions
    assert "2 kept strategies, best score -0.25" in review.summary
    assert "Failed steps (1): ml/models." in review.summary
    # What the rules write passes the LLM answer's own validation.
    assert parse_validated(review.model_dump_json(), ReviewAnswer) == review


def test_the_rules_flag_the_data_and_say_so_when_nothing_fired():
    data = inputs()["data"] | {"gaps": 2, "missing_candles": 7, "stale_assets": ["ETH/USDT"], "failed_checks": ["c1"]}
    risks = rules_review(build_report(**inputs(data=data))).risks
    assert any("2 gaps in the candles (7 missing candles)" in r for r in risks)
    assert any("ETH/USDT" in r for r in risks)
    assert any("Failed data checks: c1" in r for r in risks)

    steps = [{"step": "research/strategies", "status": "succeeded", "reason": None, "seconds": 1.0}]
    clean = rules_review(build_report(**inputs(steps=steps)))
    assert clean.risks == [NO_RISK]
    assert len(clean.recommendations) == 1
    assert "No step failed." in clean.summary


def test_the_review_prompt_holds_the_report_without_its_plots():
    report = build_report(**inputs())
    prompt = review_prompt(report)
    body = prompt.split("```json\n", 1)[1].split("\n```", 1)[0]
    assert json.loads(body) == report.model_dump(mode="json", exclude={"plots"})
    assert "advisory" in prompt


def answer(**fields) -> str:
    valid = {"summary": "A quiet day.", "risks": ["Few trials."], "recommendations": ["Run more trials."]}
    return "Here is my review:\n" + json.dumps({**valid, **fields})


def test_a_review_answer_is_stripped_and_garbage_is_refused_naming_the_field():
    parsed = parse_validated(answer(summary="  A quiet day. \n", risks=[" Few trials. "]), ReviewAnswer)
    assert (parsed.summary, parsed.risks) == ("A quiet day.", ["Few trials."])

    refusals = {
        "missing field recommendations": '{"summary": "s", "risks": ["r"]}',
        "unexpected field mood": answer(mood="calm"),
        "summary is blank": answer(summary="   "),
        "summary has 1501 characters, more than 1500": answer(summary="x" * 1501),
        "risks has 9 items; expected 1 to 8": answer(risks=[f"risk {i}" for i in range(9)]),
        "recommendations has 0 items; expected 1 to 8": answer(recommendations=[]),
        "recommendations[1] is blank": answer(recommendations=["do this", " \t"]),
        "risks[0] has 401 characters, more than 400": answer(risks=["r" * 401]),
    }
    for reason, text in refusals.items():
        with pytest.raises(AnswerRejected) as refused:
            parse_validated(text, ReviewAnswer)
        assert refused.value.reason == reason
    with pytest.raises(AnswerRejected, match="^summary 3: Input should be a valid string"):
        parse_validated(answer(summary=3), ReviewAnswer)


def test_the_forward_tests_parity_is_in_the_report_with_its_differences(tmp_path):
    """A real forward test of ema_cross on BTC/USDT 1h with room for one open position: its
    comparison with the engine goes into the report, the refusals named."""
    from datetime import timedelta
    from decimal import Decimal

    from conftest import bundled_frame

    from tracer_assets.research.engine import FillRules
    from tracer_assets.research.spec import builtin_spec
    from tracer_assets.trading.accounts import REPLAY_MARKET
    from tracer_assets.trading.forward import ForwardSeries, compare_with_backtest, forward_test
    from tracer_assets.trading.forward_command import parity_record
    from tracer_assets.trading.paper import PaperBroker
    from tracer_assets.trading.risk import MarketRules, RiskLimits
    from tracer_assets.trading.strategy_call import PickedStrategy

    spec = builtin_spec("ema_cross")
    picked = PickedStrategy("ema_cross", spec, {n: p.default for n, p in spec.parameters.items()}, None)
    candles = bundled_frame("BTC/USDT", "1h").rename({"date": "ts"}).head(3000)
    series = [ForwardSeries("BTC/USDT", "1h", picked, candles)]
    start, end = candles["ts"][1000], candles["ts"][2999]
    limits = RiskLimits(Decimal(5), Decimal(100), Decimal(100), Decimal(300), Decimal(1000), timedelta(days=2))
    broker = PaperBroker("USDT", Decimal(10_000), None, Decimal("0.001"), Decimal(5))
    run = forward_test(
        series, start, end, broker, limits, lambda s: MarketRules(symbol=s, **REPLAY_MARKET), Decimal(50)
    )
    parity = compare_with_backtest(series, run, FillRules(fee=0.001, slippage_bps=5.0))
    report = build_report(**inputs(parity=parity_record(start, end, "1h", parity)))
    assert report.parity.compared == parity.compared > report.parity.identical == parity.matched > 0
    # No new position for two days after a losing trade: those entries are refused, named.
    assert any("loss_cooldown: cooling down after a loss" in note for note in report.parity.differences)
    text = report_markdown(report)
    assert f"**{parity.matched} of {parity.compared}** closed trades identical" in text
    assert DailyReport.model_validate_json(report.model_dump_json()) == report
    skipped = parity_record(start, end, "1h", None, skipped="no kept strategy")
    assert "not run (no kept strategy)" in report_markdown(build_report(**inputs(parity=skipped)))
