"""reports/daily and reports/ai_review, and the sensors that run them after each research run.

The report describes one research run, whatever became of it: the report job runs after the
research run ends (`research_report_sensors`, for a success and for a failure), so a step that
failed there cannot keep the report from being written; it is named in it, with its error.
Run by hand (the UI, `dagster asset materialize`) it describes the latest finished research run.
"""

import json
import time
from datetime import UTC, datetime

import dagster as dg
import polars as pl
from dagster._core.execution.stats import StepEventStatus
from dagster_shared.check import CheckError

from tracer_assets.health import asset_checks, asset_freshness
from tracer_assets.llm.resource import AnthropicResource
from tracer_assets.market.keys import CANDLES_KEY, OHLCV_KEY
from tracer_assets.ml.keys import MODEL_RESULTS_KEY
from tracer_assets.policies import DAILY_FRESHNESS, DUCKDB_POOL, STEP_VALUES_IO
from tracer_assets.ranking.keys import ENSEMBLE_RANKING_KEY, MODEL_RANKING_KEY, STRATEGY_RANKING_KEY
from tracer_assets.reports import gather
from tracer_assets.reports.keys import (
    AI_REVIEW_KEY,
    AI_REVIEWS_TABLE,
    DAILY_REPORT_KEY,
    DAILY_REPORTS_SEED_VIEW,
    DAILY_REPORTS_TABLE,
    RESEARCH_RUN_TAG,
)
from tracer_assets.reports.plots import markdown_image, render_pngs, write_plots
from tracer_assets.reports.report import (
    DailyReport,
    build_report,
    load_previous_reports,
    report_markdown,
    write_report_json,
)
from tracer_assets.reports.review import REVIEW_SYSTEM_PROMPT, ReviewAnswer, review_prompt, rules_review
from tracer_assets.research.keys import BACKTESTS_KEY, DESIGNS_KEY, EQUITY_KEY, STRATEGIES_KEY, TUNING_KEY
from tracer_assets.resources.warehouse import TracerDuckDB
from tracer_assets.run_errors import step_failures
from tracer_assets.settings import Settings
from tracer_assets.tables import create_alias_view, ensure_table, table_exists, transaction
from tracer_assets.trading.forward_command import forward_run, parity_record, report_parity
from tracer_assets.trading.keys import PORTFOLIO_KEY

REPORT_JOB = "report_job"
STEP_STATUS = {
    StepEventStatus.SUCCESS: "succeeded",
    StepEventStatus.FAILURE: "failed",
    StepEventStatus.SKIPPED: "skipped",
    StepEventStatus.IN_PROGRESS: "not_run",  # the run ended while it ran: it did not finish
}


def research_run(instance: dg.DagsterInstance, tags: dict, research_job: str) -> dg.DagsterRun | None:
    """The run named by RESEARCH_RUN_TAG, else the newest finished run of the research job."""
    if tags.get(RESEARCH_RUN_TAG):
        return instance.get_run_by_id(tags[RESEARCH_RUN_TAG])
    finished = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]
    records = instance.get_run_records(dg.RunsFilter(job_name=research_job, statuses=finished), limit=1)
    return records[0].dagster_run if records else None


def step_statuses(instance: dg.DagsterInstance, run: dg.DagsterRun | None) -> list[dict]:
    """Each step of the run: status, seconds, and for a failure the user's error (not Dagster's wrapper)."""
    if run is None:
        return []
    errors = dict(step_failures(instance, run.run_id))
    steps = {}
    for stats in instance.get_run_step_stats(run.run_id):
        status = STEP_STATUS.get(stats.status, "not_run")
        seconds = stats.end_time - stats.start_time if stats.end_time and stats.start_time else None
        steps[stats.step_key] = {
            "step": stats.step_key,
            "status": status,
            "reason": errors.get(stats.step_key) if status == "failed" else None,
            "seconds": seconds,
        }
    # A step that never started has no statistics: it was skipped after a failure upstream, or
    # the run ended before it.
    plan = instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id)
    failed = ", ".join(sorted(errors))
    never_started = ("skipped", f"not executed after the failure of {failed}") if errors else (
        "not_run", "the run ended before it")  # fmt: skip
    for key in plan.step_keys_to_execute or [step.key for step in plan.steps]:
        if key not in steps:
            steps[key] = {"step": key, "status": never_started[0], "reason": never_started[1], "seconds": None}
    return sorted(steps.values(), key=lambda s: s["step"])


def code_location_graph(context: dg.AssetExecutionContext):
    """Every asset and check of the code location; a job executed in process without its
    repository (tests, scripts) knows only its own assets and their upstream."""
    try:
        return context.repository_def.asset_graph
    except CheckError:  # "No repository definition was set on the step context"
        return context.job_def.asset_layer.asset_graph


def build_report_assets(settings: Settings, research_job: str) -> list[dg.AssetsDefinition]:
    reports = settings.reports

    @dg.asset(
        key=DAILY_REPORT_KEY,
        deps=[
            STRATEGY_RANKING_KEY,
            MODEL_RANKING_KEY,
            ENSEMBLE_RANKING_KEY,
            DESIGNS_KEY,
            TUNING_KEY,
            EQUITY_KEY,
            MODEL_RESULTS_KEY,
            PORTFOLIO_KEY,
            CANDLES_KEY,
            OHLCV_KEY,  # with the two below: the forward test's candles, strategies and picks
            STRATEGIES_KEY,
            BACKTESTS_KEY,
        ],  # fmt: skip
        description=(
            "The day's report of the latest research run: each step's status (with the error of a failed one), "
            "what was designed, tuned, archived and restored, the kept strategies, models and ensembles, the "
            "deflated Sharpe ratio of the new variants, portfolio and data health, the parity of a forward test of "
            "the kept strategies over the last week with the backtest engine, trends against earlier "
            f"reports, and plots. Written to {reports.reports_dir}/YYYY-MM-DD.json (+ PNGs) and {DAILY_REPORTS_TABLE}."
        ),
        pool=DUCKDB_POOL,
        group_name="reports",
        kinds={"duckdb", "json"},
        freshness_policy=DAILY_FRESHNESS,
    )
    def daily(context: dg.AssetExecutionContext, duckdb: TracerDuckDB):
        now = datetime.now(UTC)
        run = research_run(context.instance, context.run.tags, research_job)
        run_id = run.run_id if run else None
        started = context.instance.get_run_record_by_id(run_id).start_time if run_id else None
        day = datetime.fromtimestamp(started, UTC).date() if started else now.date()
        graph = code_location_graph(context)
        with duckdb.get_connection() as connection:
            rankings = gather.rankings(connection)
            activity = gather.activity(connection, run_id)
            variants = gather.selected_variants(connection, run_id)
            accounts, equity = gather.portfolio(connection, now)
            data = gather.data_counts(connection)
            curves = gather.kept_equity_curves(connection)
            model_f1 = gather.model_f1(connection)
            replay = report_parity(connection, settings)
        # Outside the connection: the forward test of the kept strategies over the last days.
        if isinstance(replay, dict):
            parity = replay
        else:
            series, start, end = replay
            parity = parity_record(
                start, end, settings.market.base_timeframe, forward_run(settings, series, start, end)[1]
            )
        this = DAILY_REPORT_KEY.to_user_string()  # being written now: not stale for its own report
        checks = asset_checks(context.instance, graph)
        freshness = asset_freshness(context.instance, graph, now)
        data |= {
            "failed_checks": [c.check for c in checks if c.state in ("failed", "warned")],
            "stale_assets": [a.asset for a in freshness if a.state == "stale" and a.asset != this],
        }
        pngs = render_pngs(curves=curves, model_results=model_f1, portfolio=equity)
        plots = write_plots(reports.reports_dir, day.isoformat(), pngs)
        report = build_report(
            day=day, generated_at=now, research_run_id=run_id, steps=step_statuses(context.instance, run),
            activity=activity, strategies=rankings["strategies"], models=rankings["models"],
            ensembles=rankings["ensembles"], selected_variants=variants, portfolio=accounts, data=data,
            previous=load_previous_reports(reports.reports_dir, day, reports.trends), top=reports.top, plots=plots,
            parity=parity,
        )  # fmt: skip
        path = write_report_json(report, reports.reports_dir)
        row = pl.DataFrame(
            {
                "report_date": [day], "generated_at": [now], "run_id": [context.run.run_id],
                "research_run_id": [run_id], "path": [str(path)], "failures": [len(report.failures)],
                "report": [report.model_dump_json()],
            }
        )  # fmt: skip
        with duckdb.get_connection() as connection:
            ensure_table(connection, DAILY_REPORTS_TABLE, row)
            with transaction(connection):
                connection.execute(f"DELETE FROM {DAILY_REPORTS_TABLE} WHERE report_date = ?", [day])
                connection.register("report_row", row.to_arrow())
                connection.execute(f"INSERT INTO {DAILY_REPORTS_TABLE} BY NAME SELECT * FROM report_row")
                create_alias_view(connection, DAILY_REPORTS_SEED_VIEW, DAILY_REPORTS_TABLE)
        images = "\n\n".join(markdown_image(png, name) for name, png in pngs.items())
        return dg.MaterializeResult(
            metadata={
                "path": dg.MetadataValue.path(str(path)),
                "research_run": run_id or "none",
                "failed_steps": len(report.failures),
                "designed": report.activity.designed,
                "tuned": report.activity.tuned,
                "report": dg.MetadataValue.md(report_markdown(report) + "\n\n" + images),
            }
        )

    @dg.op(pool=DUCKDB_POOL, ins={"daily": dg.In(dg.Nothing)}, out=dg.Out(io_manager_key=STEP_VALUES_IO))
    def reports_read_for_review(context: dg.OpExecutionContext, duckdb: TracerDuckDB) -> str | None:
        """The report this run wrote; the newest one when the review runs on its own."""
        with duckdb.get_connection() as connection:
            if not table_exists(connection, DAILY_REPORTS_TABLE):
                return None
            rows = connection.execute(
                f"SELECT report FROM {DAILY_REPORTS_TABLE} "
                "ORDER BY run_id = ? DESC, report_date DESC, generated_at DESC LIMIT 1",
                [context.run.run_id],
            ).fetchall()
        return rows[0][0] if rows else None

    @dg.op(out=dg.Out(io_manager_key=STEP_VALUES_IO))
    def reports_review(context: dg.OpExecutionContext, report_json: str | None, llm_research: AnthropicResource):
        return review(report_json, llm_research if llm_research.api_key else None, context.log)

    @dg.op(pool=DUCKDB_POOL, out=dg.Out(dg.Nothing))
    def reports_write_review(context: dg.OpExecutionContext, duckdb: TracerDuckDB, outcome: dict):
        row = pl.DataFrame([{**outcome, "run_id": context.run.run_id}])
        with duckdb.get_connection() as connection:
            ensure_table(connection, AI_REVIEWS_TABLE, row)
            with transaction(connection):
                connection.register("review_row", row.to_arrow())
                connection.execute(f"INSERT INTO {AI_REVIEWS_TABLE} BY NAME SELECT * FROM review_row")
        answer = json.loads(outcome["answer"]) if outcome["answer"] else None
        shown = (
            f"**{outcome['status']}** ({outcome['source']}, {outcome['model'] or 'no model'})"
            + (f": {outcome['reason']}" if outcome["reason"] else "")
            + ("" if answer is None else f"\n\n{answer['summary']}\n\n**Risks**\n\n" + "\n".join(
                f"- {r}" for r in answer["risks"]) + "\n\n**Recommendations**\n\n" + "\n".join(
                f"- {r}" for r in answer["recommendations"]))
        )  # fmt: skip
        context.add_output_metadata(
            {"status": outcome["status"], "source": outcome["source"], "review": dg.MetadataValue.md(shown)}
        )

    @dg.graph_asset(
        key=AI_REVIEW_KEY,
        ins={"daily": dg.AssetIn(key=DAILY_REPORT_KEY, dagster_type=dg.Nothing)},
        group_name="reports",
        kinds={"duckdb"},
        description=(
            "Advisory: a strategic reading of the latest daily report (summary, risks, recommendations) by Claude "
            "with ANTHROPIC_API_KEY, by rules without. The answer is validated; prompt, answer, model and tokens "
            f"go to {AI_REVIEWS_TABLE}. It changes nothing, and a failed review is recorded as failed without "
            "failing the run."
        ),
    )
    def ai_review(daily):
        return reports_write_review(reports_review(reports_read_for_review(daily)))

    return [daily, ai_review]


def review(report_json: str | None, asker, log) -> dict:
    """The review's row. Never raises: whatever goes wrong is recorded as a failed review."""
    began = time.perf_counter()
    row = {
        "reviewed_at": datetime.now(UTC), "report_date": None, "status": "failed", "source": "rules",
        "model": None, "prompt": None, "answer": None, "reason": None, "input_tokens": None,
        "output_tokens": None, "seconds": None,
    }  # fmt: skip
    try:
        if report_json is None:
            row["reason"] = "no daily report to review yet: materialize reports/daily first"
            return row
        report = DailyReport.model_validate_json(report_json)
        row["report_date"] = report.date
        if asker is None:
            row |= {"status": "ok", "answer": rules_review(report).model_dump_json()}
            return row
        prompt = review_prompt(report)
        result = asker.ask(REVIEW_SYSTEM_PROMPT, [{"role": "user", "content": prompt}], ReviewAnswer)
        row |= {
            "source": "llm", "model": result.model, "prompt": prompt, "input_tokens": result.input_tokens,
            "output_tokens": result.output_tokens,
        }  # fmt: skip
        if result.ok:
            row |= {"status": "ok", "answer": result.answer.model_dump_json()}
        else:
            row["reason"] = result.reason
    except Exception as error:  # the review is advisory: its failure is recorded, never raised
        row["reason"] = f"review failed: {type(error).__name__}: {error}"[:500]
    finally:
        row["seconds"] = round(time.perf_counter() - began, 3)
        if row["status"] == "failed":
            log.warning(f"AI review failed: {row['reason']}")
    return row


def research_report_sensors(research_job, report_job) -> list[dg.SensorDefinition]:
    """When a research run ends (success or failure), a report run describing it (once per run)."""

    def sensor(status: dg.DagsterRunStatus):
        @dg.run_status_sensor(
            name=f"report_after_research_{status.value.lower()}",
            run_status=status,
            monitored_jobs=[research_job],
            request_job=report_job,
            default_status=dg.DefaultSensorStatus.RUNNING,
            description=f"A research run ended ({status.value}): write the daily report and its review about it.",
        )
        def report_after_research(context: dg.RunStatusSensorContext):
            run_id = context.dagster_run.run_id
            return dg.RunRequest(run_key=run_id, tags={RESEARCH_RUN_TAG: run_id})

        return report_after_research

    return [sensor(dg.DagsterRunStatus.SUCCESS), sensor(dg.DagsterRunStatus.FAILURE)]
