"""`make demo`: the whole loop once on the persistent Dagster instance, offline by default:
market data, indicators and signals of the configured exchange (the bundled real Binance
candles) in one run; the research pipeline (strategy registry, walk-forward backtests, the
designer and the tuner, the ML dataset, models and ensembles, the rankings), then its daily
report and review; the next tick, whose signals carry the models' vote; then the
signal sensor's decision run (decision, risk-sized paper order, portfolio); a forward test of the
kept strategies over the last days (`tracer forward`).
Prints what each step built.

    python -m tracer_assets.demo [--start 2024-01-01] [--end 2024-09-06]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import duckdb
from dagster import BetaWarning, DagsterInstance

# The demo speaks for itself; Dagster's notes on beta parameters are for developers.
warnings.filterwarnings("ignore", category=BetaWarning)
import dagster as dg
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from tracer_assets.definitions import DECISION_JOB, REPORT_JOB, RESEARCH_JOB, TICK_JOB, defs
from tracer_assets.market.timeframes import timeframe_seconds
from tracer_assets.reports.keys import RESEARCH_RUN_TAG
from tracer_assets.settings import load_settings
from tracer_assets.signals.keys import SIGNALS_KEY
from tracer_assets.trading.decide import SignalEvent
from tracer_assets.trading.forward_command import DEFAULT_DAYS, ForwardError
from tracer_assets.trading.forward_command import run as forward_run
from tracer_assets.trading.keys import SIGNAL_STORAGE_TAG


def market_summary(database: str) -> str:
    """Tables, rows, date range and gaps, as a person wants to read them after a run."""
    with duckdb.connect(database, read_only=True) as connection:
        per_table = connection.execute(
            """SELECT 'market.ohlcv' AS table_name, timeframe, count(*) AS rows,
                      count(DISTINCT symbol) AS symbols, min(ts) AS first, max(ts) AS last
               FROM market.ohlcv GROUP BY timeframe"""
        ).fetchall()
        per_table.sort(key=lambda row: timeframe_seconds(row[1]))
        gaps = connection.execute(
            "SELECT symbol, timeframe, gap_start, gap_end, missing_candles FROM market.gaps ORDER BY gap_start, symbol"
        ).fetchall()
        tables = connection.execute(
            """SELECT table_schema || '.' || table_name, table_type FROM information_schema.tables
               WHERE table_schema NOT IN ('information_schema', 'pg_catalog') ORDER BY 1"""
        ).fetchall()
    lines = [f"DuckDB file: {database}", "", "tables:"]
    lines += [f"  {name:<28} {'view' if kind == 'VIEW' else 'table'}" for name, kind in tables]
    lines += [
        "",
        f"  {'timeframe':<10}{'rows':>10}{'symbols':>9}  {'first candle (UTC)':<20} {'last candle (UTC)':<20}",
    ]
    for _, timeframe, rows, symbols, first, last in per_table:
        lines.append(f"  {timeframe:<10}{rows:>10,}{symbols:>9}  {first:%Y-%m-%d %H:%M}     {last:%Y-%m-%d %H:%M}")
    lines += ["", f"gaps found: {len(gaps)}"]
    for symbol, timeframe, start, end, missing in gaps[:20]:
        lines.append(f"  {symbol} {timeframe}: {start:%Y-%m-%d %H:%M} -> {end:%Y-%m-%d %H:%M} ({missing} candles)")
    if len(gaps) > 20:
        lines.append(f"  ... {len(gaps) - 20} more in market.gaps")
    return "\n".join(lines)


def signals_summary(database: str) -> str:
    """The newest signal per symbol and timeframe, as a table."""
    with duckdb.connect(database, read_only=True) as connection:
        rows = connection.execute(
            """SELECT symbol, timeframe, ts, close, signal_quality, regime, regime_volatile, regime_confidence,
                      conviction, ml_label, ml_confidence, ensemble_label, ensemble_confidence
               FROM signals.signals"""
        ).fetchall()
    rows.sort(key=lambda r: (r[0], timeframe_seconds(r[1])))
    header = (
        f"  {'symbol':<10}{'tf':<5}{'candle (UTC)':<18}{'close':>12}{'quality':>9}  "
        f"{'regime':<14}{'conf':>5}{'conviction':>11}  {'ML vote':<12}{'conf':>5}  {'ensemble':<12}{'conf':>5}"
    )
    lines = ["newest signals:", header]
    for symbol, tf, ts, close, quality, regime, volatile, rconf, conviction, ml, mconf, label, lconf in rows:
        regime_text = regime + (" volatile" if volatile else "")
        ml_text = f"{ml:<12}{mconf:>5.2f}" if ml else f"{'-':<12}{'':>5}"
        lines.append(
            f"  {symbol:<10}{tf:<5}{ts:%Y-%m-%d %H:%M}  {close:>12.6g}{quality:>9.2f}  "
            f"{regime_text:<14}{rconf:>5.2f}{conviction:>11.2f}  {ml_text}  {label:<12}{lconf:>5.2f}"
        )
    return "\n".join(lines)


def research_summary(database: str, top: int = 10) -> str:
    """The best strategies by out-of-sample score (the figure the ranking uses)."""
    with duckdb.connect(database, read_only=True) as connection:
        rows = connection.execute(
            f"""SELECT name, symbol, timeframe, score, total_return, win_rate, trades, max_drawdown, parameters
                FROM research.backtests WHERE "window" = 'out_of_sample'
                ORDER BY score DESC NULLS LAST LIMIT {int(top)}"""
        ).fetchall()
        counts = connection.execute(
            """SELECT count(DISTINCT strategy_id), count(DISTINCT symbol || timeframe) FROM research.backtests"""
        ).fetchall()[0]
    lines = [
        f"best strategies by out-of-sample score ({counts[0]} strategies x {counts[1]} symbol-timeframes):",
        f"  {'strategy':<27}{'symbol':<11}{'tf':<5}{'score':>7}{'return':>9}{'win':>6}{'trades':>7}{'maxDD':>7}"
        "  chosen parameters",
    ]
    for name, symbol, tf, score, ret, win, trades, dd, params in rows:
        win_text = "-" if win is None else f"{win:.2f}"
        lines.append(
            f"  {name:<27}{symbol:<11}{tf:<5}{score:>7.2f}{ret:>9.2%}{win_text:>6}{trades:>7}{dd:>7.1%}  {params[:60]}"
        )
    return "\n".join(lines)


def ml_summary(database: str) -> str:
    """Each model's and ensemble's out-of-sample figures beside the baselines' on the same rows."""
    with duckdb.connect(database, read_only=True) as connection:
        models = connection.execute(
            """SELECT model_id, train_rows, f1_macro, majority_f1_macro, accuracy, majority_accuracy, log_loss, ic
               FROM ml.models ORDER BY model_id"""
        ).fetchall()
        baselines = dict(
            connection.execute(
                """SELECT model_id, log_loss FROM ml.model_results
                   WHERE fold = 'overall' AND predictor = 'majority'"""
            ).fetchall()
        )
        ensembles = connection.execute(
            """SELECT ensemble_id, rows, accuracy, majority_accuracy, f1_macro, majority_f1_macro, log_loss
               FROM ml.ensembles ORDER BY ensemble_id"""
        ).fetchall()
    lines = [
        "models, out of sample (purged walk-forward), beside the majority-class baseline in the same folds:",
        f"  {'model':<20}{'rows':>9}{'F1':>7}{'base':>7}{'acc':>7}{'base':>7}{'logloss':>9}{'base':>7}{'IC':>7}",
    ]
    for model_id, rows, f1, base_f1, accuracy, base_accuracy, log_loss, ic in models:
        ic_text = "-" if ic is None else f"{ic:.3f}"
        lines.append(
            f"  {model_id:<20}{rows:>9,}{f1:>7.3f}{base_f1:>7.3f}{accuracy:>7.3f}{base_accuracy:>7.3f}"
            f"{log_loss:>9.3f}{baselines.get(model_id, float('nan')):>7.3f}{ic_text:>7}"
        )
    lines += [
        "",
        "ensembles (folds 2..n, where the stacker has out-of-fold rows to learn from):",
        f"  {'ensemble':<20}{'rows':>9}{'acc':>7}{'base':>7}{'F1':>7}{'base':>7}{'logloss':>9}",
    ]
    for ensemble_id, rows, accuracy, base_accuracy, f1, base_f1, log_loss in ensembles:
        lines.append(
            f"  {ensemble_id:<20}{rows:>9,}{accuracy:>7.3f}{base_accuracy:>7.3f}{f1:>7.3f}{base_f1:>7.3f}"
            f"{log_loss:>9.3f}"
        )
    return "\n".join(lines)


def ranking_summary(database: str) -> str:
    """What each ranking kept and archived this run, and why the first archived one was."""
    lines = ["rankings (kept by out-of-sample figures; the rest archived with a reason, ranking.ranking_history):"]
    with duckdb.connect(database, read_only=True) as connection:
        for kind in ("strategies", "models", "ensembles"):
            rows = connection.execute(f"SELECT name, status, reason FROM ranking.{kind} ORDER BY rank").fetchall()
            kept = [name for name, status, _ in rows if status == "kept"]
            archived = [(name, reason) for name, status, reason in rows if status != "kept"]
            lines.append(f"  {kind}: {len(kept)} of {len(rows)} kept: {', '.join(kept)}")
            if archived:
                lines.append(f"    archived {len(archived)}, e.g. {archived[0][0]}: {archived[0][1]}")
    return "\n".join(lines)


def design_summary(database: str, run_id: str) -> str:
    """What the designer and the tuner proposed in this run, and what became of it."""
    with duckdb.connect(database, read_only=True) as connection:
        proposals = connection.execute(
            "SELECT source, status, name, reason FROM research.designs WHERE run_id = ? ORDER BY proposal_id",
            [run_id],
        ).fetchall()
        tuned = connection.execute(
            "SELECT parent_name, variant_name, parent_score, oos_score, registered FROM research.tuning "
            "WHERE run_id = ? ORDER BY parent_name",
            [run_id],
        ).fetchall()
        trials = connection.execute("SELECT count(*), sum(combinations) FROM research.trials").fetchall()[0]
    registered = [p for p in proposals if p[1] == "registered"]
    source = proposals[0][0] if proposals else "none"
    lines = [f"designer ({source}): {len(registered)} registered, {len(proposals) - len(registered)} rejected"]
    lines += [f"  + {name}: {reason}" for _, status, name, reason in registered]
    lines += [
        f"  - {name or '(no spec)'}: {reason}" for _, status, name, reason in proposals if status != "registered"
    ][:5]
    lines.append("tuner (registered only when the out-of-sample score beats the parent's):")
    for parent, variant, parent_score, oos, ok in tuned:
        verdict = "registered" if ok else "not registered"
        lines.append(f"  {parent} -> {variant}: {oos:.3f} vs {parent_score:.3f}, {verdict}")
    lines.append(f"trials recorded so far: {trials[0]} variants, {trials[1] or 0} parameter combinations")
    return "\n".join(lines)


def report_summary(database: str) -> str:
    """The daily report's headline figures and where its files are, and the review."""
    with duckdb.connect(database, read_only=True) as connection:
        path, report = connection.execute(
            "SELECT path, report FROM reports.daily_reports ORDER BY generated_at DESC LIMIT 1"
        ).fetchall()[0]
        review = connection.execute(
            "SELECT status, source, answer, reason FROM reports.ai_reviews ORDER BY reviewed_at DESC LIMIT 1"
        ).fetchall()[0]
    report = json.loads(report)
    lines = [f"daily report: {path} (+ {len(report['plots'])} PNG plots beside it)"]
    failures = report["failures"]
    lines.append(f"  failed steps: {len(failures)}" + "".join(f"\n    {f['step']}: {f['reason']}" for f in failures))
    for variant in report["selected_variants"]:
        dsr = variant["deflated_sharpe"]
        lines.append(
            f"  new {variant['origin']} strategy {variant['name']}: out-of-sample score {variant['oos_score']:.3f}, "
            f"deflated Sharpe {'-' if dsr is None else f'{dsr:.3f}'} over {variant['trials']} combinations tried"
        )
    status, source, answer, reason = review
    lines.append(f"review ({source}, {status}){': ' + reason if reason else ''}")
    if answer:
        answer = json.loads(answer)
        lines += textwrap.wrap(answer["summary"], 100, initial_indent="  ", subsequent_indent="  ")
        lines += [f"  risk: {risk}" for risk in answer["risks"]]
    return "\n".join(lines)


def run_research_job(instance: DagsterInstance) -> dg.DagsterRun | None:
    """research_job as the schedule runs it: its steps in parallel processes (the multiprocess
    executor; execute_in_process would run them one after another). Dagster's own output goes
    to a log file; each step is printed as it finishes."""
    log = Path(instance.root_directory) / "demo_research_run.log"
    earlier = {r.dagster_run.run_id for r in instance.get_run_records(dg.RunsFilter(job_name=RESEARCH_JOB))}
    command = [str(Path(sys.executable).with_name("dagster")), "job", "execute", "-m", "tracer_assets.definitions"]
    run, shown = None, set()
    with log.open("w") as output:
        process = subprocess.Popen([*command, "-j", RESEARCH_JOB], stdout=output, stderr=subprocess.STDOUT)
        while True:
            finished = process.poll() is not None
            if run is None:
                records = instance.get_run_records(dg.RunsFilter(job_name=RESEARCH_JOB), limit=1)
                if records and records[0].dagster_run.run_id not in earlier:
                    run = records[0].dagster_run
            for stats in instance.get_run_step_stats(run.run_id) if run else []:
                if stats.end_time and stats.step_key not in shown:
                    shown.add(stats.step_key)
                    seconds = stats.end_time - (stats.start_time or stats.end_time)
                    print(f"  {stats.step_key:<48} {stats.status.value.lower():<8} {seconds:6.1f}s", flush=True)
            if finished:
                break
            time.sleep(1.0)
    print(f"(Dagster's log of the run: {log})")
    return instance.get_run_by_id(run.run_id) if run else None


def trading_summary(database: str, event: SignalEvent) -> str:
    """The decisions of one signal event, its orders, and the newest portfolio row."""
    with duckdb.connect(database, read_only=True) as connection:
        decisions = connection.execute(
            """SELECT symbol, timeframe, action, confidence, reason FROM trading.decisions
               WHERE signal_storage_id = ? AND signal_run_id = ? ORDER BY symbol""",
            [event.storage_id, event.run_id],
        ).fetchall()
        orders = connection.execute(
            """SELECT client_order_id, symbol, side, amount, price, status, reason FROM trading.orders
               WHERE signal_storage_id = ? AND signal_run_id = ? ORDER BY symbol""",
            [event.storage_id, event.run_id],
        ).fetchall()
        portfolio = connection.execute(
            "SELECT quote_balance, positions_value, equity, realized_pnl, open_positions "
            "FROM trading.portfolio ORDER BY ts DESC LIMIT 1"
        ).fetchall()
    lines = [f"decisions on signal event {event.storage_id} (signals run {event.run_id}):"]
    for symbol, tf, action, confidence, reason in decisions:
        lines.append(f"  {symbol:<10}{tf or '-':<5}{action:<5}{confidence:>5.2f}")
        lines.append(textwrap.fill(reason, width=110, initial_indent=" " * 6, subsequent_indent=" " * 6))
    lines.append("orders:" if orders else "orders: none (nothing to buy or sell on this signal)")
    for cid, symbol, side, amount, price, status, reason in orders:
        lines.append(f"  {cid}  {side} {amount.normalize()} {symbol} at {price.normalize()}: {status} ({reason})")
    if portfolio:
        quote, value, equity, realized, open_positions = portfolio[0]
        lines.append(
            f"paper portfolio: {quote:.2f} USDT + positions {value:.2f} = equity {equity:.2f} USDT; "
            f"realized PnL {realized:.2f}; {open_positions} open position(s)"
        )
    return "\n".join(lines)


def run_signal_sensor(instance: DagsterInstance) -> list[dg.RunRequest]:
    """Evaluate signal_sensor once as the daemon's first tick does (no cursor: the newest signals)."""
    sensor = defs.resolve_sensor_def("signal_sensor")
    with dg.build_sensor_context(instance=instance, repository_def=defs.get_repository_def()) as context:
        result = sensor.evaluate_tick(context)
    return list(result.run_requests or [])


def main(argv: list[str] | None = None) -> int:
    settings = load_settings()
    job = defs.resolve_job_def(TICK_JOB)
    partitions = job.partitions_def
    keys = partitions.get_partition_keys()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--start", default=keys[0], help=f"first day (default {keys[0]})")
    parser.add_argument("--end", default=keys[-1], help=f"last day, inclusive (default {keys[-1]})")
    args = parser.parse_args(argv)
    for day in (args.start, args.end):
        if day not in keys:
            parser.error(f"{day} is not a partition of market/candles ({keys[0]} .. {keys[-1]})")

    if not os.environ.get("DAGSTER_HOME"):
        parser.error("DAGSTER_HOME is not set: run `make demo`, or export DAGSTER_HOME=$PWD/.dagster")
    market = settings.market
    print(
        f"Materializing {TICK_JOB}: {len(market.symbols)} symbols ({', '.join(market.symbols)}), "
        f"{market.base_timeframe} from {market.exchange}, resampled to {', '.join(market.timeframes)}, "
        f"indicators and signals, days {args.start} .. {args.end} in one run",
        flush=True,
    )
    began = time.perf_counter()
    with DagsterInstance.get() as instance:
        result = job.execute_in_process(
            instance=instance,
            tags={ASSET_PARTITION_RANGE_START_TAG: args.start, ASSET_PARTITION_RANGE_END_TAG: args.end},
            raise_on_error=False,
            # Progress and problems, not every engine event (those are in the UI).
            run_config={"loggers": {"console": {"config": {"log_level": "INFO"}}}},
        )
    if not result.success:
        print(f"\nThe run {result.run_id} failed; its events are in the UI (make dev) and above.", file=sys.stderr)
        return 1
    print(f"\nRun {result.run_id} succeeded in {time.perf_counter() - began:.1f}s.\n")
    database = str(settings.duckdb_path)
    print(market_summary(database))

    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    print(
        f"\nMaterializing {RESEARCH_JOB}: strategy registry, walk-forward backtests, the designer and the tuner, "
        "the ML dataset, models and ensembles, the rankings; steps side by side in parallel processes "
        "(a few minutes) ...",
        flush=True,
    )
    began = time.perf_counter()
    with DagsterInstance.get() as instance:
        research = run_research_job(instance)
    if research is None or research.status != dg.DagsterRunStatus.SUCCESS:
        run = research.run_id if research else "(none)"
        print(f"\nThe research run {run} failed; see the UI (make dev).", file=sys.stderr)
        return 1
    print(
        f"Run {research.run_id} succeeded in {time.perf_counter() - began:.1f}s "
        f"(results also in {settings.research.backtest_json_path}).\n"
    )
    print(research_summary(database))
    print("\n" + ml_summary(database))
    print("\n" + ranking_summary(database))
    print("\n" + design_summary(database, research.run_id))

    print("\nThe research run ended: its report and review, as the report sensor launches them ...", flush=True)
    with DagsterInstance.get() as instance:
        report = defs.resolve_job_def(REPORT_JOB).execute_in_process(
            instance=instance, tags={RESEARCH_RUN_TAG: research.run_id}, raise_on_error=False, run_config=quiet
        )
    if not report.success:
        print(f"\nThe report run {report.run_id} failed; see the UI (make dev).", file=sys.stderr)
        return 1
    print(report_summary(database))

    print(f"\nThe next tick ({args.end}) scores the newest candles with the ensembles ...", flush=True)
    with DagsterInstance.get() as instance:
        tick = job.execute_in_process(instance=instance, partition_key=args.end, raise_on_error=False, run_config=quiet)
    if not tick.success:
        print(f"\nThe tick run {tick.run_id} failed; see the UI (make dev).", file=sys.stderr)
        return 1
    print(signals_summary(database))

    print("\nThe signal sensor answers the newest signals: running decision_job as it would ...", flush=True)
    with DagsterInstance.get() as instance:
        requests = run_signal_sensor(instance)
        if not requests:
            print("signal_sensor asked for no run (no signals materialization).", file=sys.stderr)
            return 1
        request = requests[-1]
        decision = defs.resolve_job_def(DECISION_JOB).execute_in_process(
            instance=instance, tags=request.tags, raise_on_error=False, run_config=quiet
        )
    if not decision.success:
        print(f"\nThe decision run {decision.run_id} failed; see the UI (make dev).", file=sys.stderr)
        return 1
    print(
        f"Run {decision.run_id} ({request.run_key}) succeeded; "
        f"mode {'LIVE' if settings.trading.live_flags_on else 'DRY (paper)'}.\n"
    )
    with DagsterInstance.get() as instance:
        [signals] = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=SIGNALS_KEY, storage_ids=[int(request.tags[SIGNAL_STORAGE_TAG])]), limit=1
        ).records
    print(trading_summary(database, SignalEvent(signals.storage_id, signals.run_id)))
    print(f"Audit files: {settings.trading.log_dir}")

    print(
        f"\nA forward test: the last {DEFAULT_DAYS} days of {market.base_timeframe} candles replayed one by one "
        "through the same strategy decider, risk manager and paper broker (`tracer forward`) ...\n",
        flush=True,
    )
    try:
        options = dict(start=None, end=None, timeframe=None, symbols=None, strategy=None, open_limits=False)
        forward_run(argparse.Namespace(**options, output_dir=str(settings.duckdb_path.parent / "forward")), settings)
    except ForwardError as error:
        print(f"The forward test could not run: {error}", file=sys.stderr)
        return 1
    print(
        "\nOpen the UI on this instance with `make dev`, then http://127.0.0.1:3000 "
        "(Assets > market for lineage and checks, Runs for this run)."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
