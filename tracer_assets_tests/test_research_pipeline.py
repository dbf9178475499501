"""The daily pipeline end to end on the real Dagster instance and a real DuckDB file: the designer
raises, only what depends on it stops, the rankings still complete, the sensor launches the report
run for the failed research run, the report names the failure, and the AI review (the local
Messages API server answering 500) is recorded as failed without failing its run."""

import json
import shutil

import dagster as dg
import duckdb
import pytest
from conftest import SMALL_ML
from dagster._core.events import DagsterEventType
from fake_anthropic import FakeAnthropic

from tracer_assets.definitions import REPORT_JOB, RESEARCH_JOB, build_definitions
from tracer_assets.reports.keys import RESEARCH_RUN_TAG
from tracer_assets.reports.report import DailyReport
from tracer_assets.research import design_assets
from tracer_assets.settings import load_settings

QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
API_KEY = "sk-ant-test-review-0123456789"
DESIGN_STEP = "research__designs.research_designs"


def step_statuses(instance: dg.DagsterInstance, run_id: str) -> dict[str, str]:
    return {stats.step_key: stats.status.value for stats in instance.get_run_step_stats(run_id)}


@pytest.mark.slow
def test_a_failing_designer_stops_only_its_dependents_and_the_report_names_it(
    tracer_env, history, monkeypatch, tmp_path
):
    shutil.copy(history.database, tracer_env["TRACER_DUCKDB_PATH"])
    reports_dir = tmp_path / "reports"
    for name, value in {
        **SMALL_ML,
        "TRACER_TUNE_STRATEGIES": "1",
        "TRACER_REPORTS_DIR": str(reports_dir),
        "MACRO_BACKTEST_JSON_PATH": str(tmp_path / "backtest_results.json"),
    }.items():
        monkeypatch.setenv(name, value)

    def broken_designer(*args, **kwargs):
        raise RuntimeError("the designer broke: proposal service down")

    monkeypatch.setattr(design_assets, "run_design", broken_designer)
    defs = build_definitions(load_settings())
    with dg.DagsterInstance.get() as instance:
        research = defs.resolve_job_def(RESEARCH_JOB).execute_in_process(
            instance=instance, run_config=QUIET, raise_on_error=False
        )
        assert not research.success
        steps = step_statuses(instance, research.run_id)
        assert steps[DESIGN_STEP] == "FAILURE"
        assert "research__designs.research_write_designs" not in steps  # never started
        assert [step for step, status in steps.items() if status == "FAILURE"] == [DESIGN_STEP]
        for independent in ("ranking__strategies", "ranking__models", "ranking__ensembles",
                            "research__tuning.research_write_tuning", "ensembles.ml_write_ensembles"):  # fmt: skip
            assert steps[independent] == "SUCCESS", independent

        # The research run failed: the failure sensor asks for the report run about it.
        [failure] = instance.all_logs(research.run_id, of_type=DagsterEventType.RUN_FAILURE)
        sensor = defs.resolve_sensor_def("report_after_research_failure")
        context = dg.build_run_status_sensor_context(
            sensor_name=sensor.name,
            dagster_instance=instance,
            dagster_run=instance.get_run_by_id(research.run_id),
            dagster_event=failure.dagster_event,
        )
        request = sensor(context)
        assert request.run_key == research.run_id and request.tags == {RESEARCH_RUN_TAG: research.run_id}

        # The review asks Claude, whose API answers 500.
        with FakeAnthropic(api_key=API_KEY) as server:
            server.reply_status(500, "overloaded upstream")
            monkeypatch.setenv("ANTHROPIC_API_KEY", API_KEY)
            monkeypatch.setenv("TRACER_ANTHROPIC_BASE_URL", server.url)
            report_defs = build_definitions(load_settings())
            report = report_defs.resolve_job_def(REPORT_JOB).execute_in_process(
                instance=instance, run_config=QUIET, tags=request.tags
            )
            assert len(server.requests) == 1
        assert report.success

    [path] = sorted(reports_dir.glob("????-??-??.json"))
    daily = DailyReport.model_validate_json(path.read_text())
    assert daily.research_run_id == research.run_id
    [failed] = daily.failures
    assert failed.step == DESIGN_STEP and failed.status == "failed"
    assert failed.reason.startswith("RuntimeError: the designer broke: proposal service down")
    statuses = {step.step: step.status for step in daily.steps}
    assert statuses["ranking__strategies"] == "succeeded"
    assert statuses["research__designs.research_write_designs"] == "skipped"
    assert daily.activity.designed == 0 and daily.activity.tuning_trials == 1
    assert daily.strategies and daily.models and daily.ensembles  # the rankings completed
    for plot in daily.plots.values():
        assert (reports_dir / plot).read_bytes().startswith(b"\x89PNG\r\n\x1a\n")

    database = tracer_env["TRACER_DUCKDB_PATH"]
    with duckdb.connect(database, read_only=True) as connection:
        stored = connection.execute("SELECT research_run_id, failures, report FROM main.daily_reports").fetchall()
        review = connection.execute("SELECT status, source, reason, answer, prompt FROM reports.ai_reviews").fetchall()
    assert [(run, failures) for run, failures, _ in stored] == [(research.run_id, 1)]
    assert json.loads(stored[0][2])["failures"][0]["step"] == DESIGN_STEP
    [(status, source, reason, answer, prompt)] = review
    assert (status, source, answer) == ("failed", "llm", None)
    assert reason.startswith("LLM HTTP 500") and "overloaded upstream" in reason
    assert DESIGN_STEP in prompt  # the review was asked about the report, failure included
