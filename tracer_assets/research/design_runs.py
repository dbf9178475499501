"""One run of the designer or the tuner: what it reads, what it decides, what it writes.

Pure (no Dagster): `read_research_inputs` and `write_outcome` take a DuckDB connection,
`run_design` and `run_tuning` take what was read and return an `Outcome`; the assets
(design_assets.py) call them in their read, compute and write steps. The rules are in
docs/research.md.
"""

import hashlib
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import polars as pl

from tracer_assets.market.keys import OHLCV_TABLE
from tracer_assets.ranking.keys import STRATEGY_RANKING_TABLE
from tracer_assets.research import design, tuning
from tracer_assets.research.engine import FillRules
from tracer_assets.research.evaluation import Evaluation, SeriesKey, evaluate_candidate, portfolio_gaps
from tracer_assets.research.keys import (
    STRATEGIES_TABLE,
    TRIALS_TABLE,
)
from tracer_assets.research.registry import STRATEGY_COLUMNS, strategy_id
from tracer_assets.research.spec import StrategySpec, load_spec
from tracer_assets.settings import Settings
from tracer_assets.tables import ensure_table, insert_rows, table_exists, transaction

TOP_SHOWN = 3  # best and worst performers shown to the LLM
OFFLINE_DRAWS = 4  # offline candidates drawn per proposal wanted


@dataclass(frozen=True)
class ResearchInputs:
    """What the designer and the tuner read: the registry, the ranking, the candles."""

    registry: dict[str, dict]  # strategy_id -> {name, status, origin, spec}
    ranking: pl.DataFrame  # item_id, rank, score, status, reason (empty before the first ranking)
    series: dict[SeriesKey, pl.DataFrame]


def read_research_inputs(connection, timeframes) -> ResearchInputs:
    rows = connection.execute(f"SELECT strategy_id, name, status, origin, spec FROM {STRATEGIES_TABLE}").fetchall()
    registry = {sid: {"name": n, "status": s, "origin": o, "spec": load_spec(spec)} for sid, n, s, o, spec in rows}
    columns = {"item_id": pl.String, "rank": pl.Int64, "score": pl.Float64, "status": pl.String, "reason": pl.String}
    ranking = pl.DataFrame(schema=columns)
    if table_exists(connection, STRATEGY_RANKING_TABLE):
        ranking = connection.sql(f"SELECT {', '.join(columns)} FROM {STRATEGY_RANKING_TABLE}").pl()
    candles = connection.sql(
        f"SELECT symbol, timeframe, ts, open, high, low, close, volume FROM {OHLCV_TABLE} "
        "WHERE list_contains(?, timeframe) ORDER BY symbol, timeframe, ts",
        params=[list(timeframes)],
    ).pl()
    series = {
        (symbol, timeframe): frame.drop("symbol", "timeframe")
        for (symbol, timeframe), frame in candles.partition_by(["symbol", "timeframe"], as_dict=True).items()
    }
    return ResearchInputs(registry, ranking, series)


def kept_strategies(inputs: ResearchInputs) -> dict[str, StrategySpec]:
    """Active strategies the ranking keeps (every active one before the first ranking)."""
    active = {sid: row["spec"] for sid, row in inputs.registry.items() if row["status"] == "active"}
    if inputs.ranking.is_empty():
        return active
    kept = set(inputs.ranking.filter(pl.col("status") == "kept")["item_id"])
    return {sid: spec for sid, spec in active.items() if sid in kept}


def strategy_row(spec: StrategySpec, origin: str, parents: tuple[str, ...], reason: str, now: datetime) -> dict:
    return {
        "strategy_id": strategy_id(spec),
        "name": spec.name,
        "version": 1,
        "spec": spec.canonical_json(),
        "content_hash": spec.content_hash(),
        "origin": origin,
        "parent": ",".join(parents) or None,
        "status": "active",
        "status_reason": reason,
        "created_at": now,
        "updated_at": now,
    }


TRIAL_SCHEMA = {
    "trial_id": pl.String, "run_id": pl.String, "created_at": pl.Datetime("us", "UTC"), "kind": pl.String,
    "source": pl.String, "strategy_id": pl.String, "name": pl.String, "parents": pl.String, "spec": pl.String,
    "parameters": pl.String, "combinations": pl.Int64, "registered": pl.Boolean, "reason": pl.String,
    "is_series": pl.Int64, "is_score": pl.Float64, "is_sharpe": pl.Float64, "is_total_return": pl.Float64,
    "is_max_drawdown": pl.Float64, "is_trades": pl.Float64,
    "oos_series": pl.Int64, "oos_score": pl.Float64, "oos_sharpe": pl.Float64, "oos_total_return": pl.Float64,
    "oos_max_drawdown": pl.Float64, "oos_trades": pl.Float64,
    "bar_sharpe": pl.Float64, "bar_count": pl.Int64, "bar_skew": pl.Float64, "bar_kurtosis": pl.Float64,
}  # fmt: skip


def trial_row(
    run_id: str, now: datetime, kind: str, source: str, spec: StrategySpec, parents, evaluation: Evaluation,
    combinations: int, registered: bool, reason: str,
) -> dict:  # fmt: skip
    sid = strategy_id(spec)
    stats = evaluation.oos_returns
    row = {
        "trial_id": hashlib.sha256(f"{run_id}:{kind}:{sid}".encode()).hexdigest()[:16],
        "run_id": run_id, "created_at": now, "kind": kind, "source": source, "strategy_id": sid,
        "name": spec.name, "parents": json.dumps(list(parents)), "spec": spec.canonical_json(),
        "parameters": json.dumps({n: p.default for n, p in sorted(spec.parameters.items())}),
        "combinations": combinations, "registered": registered, "reason": reason,
        "bar_sharpe": stats.sharpe if stats else None, "bar_count": stats.n_obs if stats else None,
        "bar_skew": stats.skew if stats else None, "bar_kurtosis": stats.kurtosis if stats else None,
    }  # fmt: skip
    for prefix, figures in (("is", evaluation.in_sample), ("oos", evaluation.out_of_sample)):
        for name, value in figures.as_dict().items():
            if name != "win_rate":
                row[f"{prefix}_{name}"] = value
    return row


def _frame(rows: list[dict], schema: dict) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=schema, orient="row") if rows else pl.DataFrame(schema=schema)


DESIGN_SCHEMA = {
    "proposal_id": pl.String, "run_id": pl.String, "created_at": pl.Datetime("us", "UTC"), "source": pl.String,
    "status": pl.String, "reason": pl.String, "strategy_id": pl.String, "name": pl.String, "parents": pl.String,
    "note": pl.String, "proposal": pl.String, "raw_text": pl.String,
}  # fmt: skip
TUNING_SCHEMA = {
    "run_id": pl.String, "created_at": pl.Datetime("us", "UTC"), "parent_id": pl.String, "parent_name": pl.String,
    "parent_score": pl.Float64, "variant_id": pl.String, "variant_name": pl.String, "research_score": pl.Float64,
    "oos_score": pl.Float64, "combinations": pl.Int64, "registered": pl.Boolean, "reason": pl.String,
}  # fmt: skip
STRATEGY_SCHEMA = {
    "strategy_id": pl.String, "name": pl.String, "version": pl.Int64, "spec": pl.String, "content_hash": pl.String,
    "origin": pl.String, "parent": pl.String, "status": pl.String, "status_reason": pl.String,
    "created_at": pl.Datetime("us", "UTC"), "updated_at": pl.Datetime("us", "UTC"),
}  # fmt: skip


@dataclass(frozen=True)
class Outcome:
    """What one design or tuning run writes: its own rows, the trials, the strategies registered."""

    own: pl.DataFrame
    trials: pl.DataFrame
    strategies: pl.DataFrame
    seconds: float
    retired: tuple[tuple[str, str], ...] = ()  # (strategy_id, reason) leaving the active set


def write_outcome(connection, own_table: str, outcome: Outcome) -> None:
    """The run's rows, its trials, its new strategies and its retirements, in one transaction."""
    appended = [(own_table, outcome.own), (TRIALS_TABLE, outcome.trials)]
    for table, frame in appended:
        ensure_table(connection, table, frame)
    with transaction(connection):
        for table, frame in appended:
            insert_rows(connection, table, frame)
        if outcome.strategies.height:
            connection.register("registered", outcome.strategies.to_arrow())
            connection.execute(
                f"INSERT INTO {STRATEGIES_TABLE} ({', '.join(STRATEGY_COLUMNS)}) "
                f"SELECT {', '.join(STRATEGY_COLUMNS)} FROM registered "
                f"WHERE strategy_id NOT IN (SELECT strategy_id FROM {STRATEGIES_TABLE})"
            )
            connection.unregister("registered")
        for sid, reason in outcome.retired:
            connection.execute(
                f"UPDATE {STRATEGIES_TABLE} SET status = 'archived', status_reason = ?, updated_at = ? "
                "WHERE strategy_id = ? AND status = 'active'",
                [reason, datetime.now(UTC), sid],
            )


def retirements(inputs: ResearchInputs) -> list[tuple[str, str]]:
    """Designed and tuned strategies the ranking archived leave the registry's active set, so
    the daily backtests do not grow by every proposal ever made (built-ins stay: they can be
    restored by the ranking)."""
    archived = inputs.ranking.filter(pl.col("status") == "archived")
    reasons = dict(zip(archived["item_id"].to_list(), archived["reason"].to_list()))
    return [
        (sid, f"retired: archived by ranking/strategies ({reasons[sid]})")
        for sid, row in sorted(inputs.registry.items())
        if sid in reasons and row["status"] == "active" and row["origin"] in ("designed", "tuned")
    ]


def run_design(inputs: ResearchInputs, settings: Settings, asker, run_id: str, log) -> Outcome:
    """Candidates (LLM with a key, offline without), screened, the registered ones evaluated."""
    research = settings.research
    began, now = time.perf_counter(), datetime.now(UTC)
    rules = FillRules(fee=research.backtest_fee, slippage_bps=research.backtest_slippage_bps)
    kept = kept_strategies(inputs)
    gaps, measured = portfolio_gaps(kept, inputs.series, rules)
    performers = []
    if not measured.is_empty():
        means = measured.group_by("strategy_id").agg(
            pl.col(c).mean() for c in ("score", "sharpe", "total_return", "max_drawdown", "trades")
        )
        performers = means.sort(["score", "strategy_id"], descending=[True, False], nulls_last=True).to_dicts()
    shown = [{**row, "spec": json.loads(kept[row["strategy_id"]].canonical_json())} for row in performers]
    candidates: list[design.Candidate] = []
    if asker is not None:
        prompt = design.design_prompt(
            gaps.as_dict(), shown[:TOP_SHOWN], shown[-TOP_SHOWN:][::-1],
            sorted({t for _, t in inputs.series}), min(research.design_proposals, 5),
        )  # fmt: skip
        candidates = design.llm_candidates(asker, prompt, research.design_calls)
    if asker is None or all(c.data is None for c in candidates):
        if candidates:  # every LLM call failed (each stored as such): the day still gets its proposals
            log(f"no LLM call gave a proposal ({candidates[0].failure}): designing offline")
        parents = [(row["strategy_id"], kept[row["strategy_id"]]) for row in performers[:5]]
        # Mutations are cheap and many are near-copies the screen refuses: draw more, stop at enough.
        drawn = OFFLINE_DRAWS * research.design_proposals
        candidates += design.offline_candidates(parents, drawn, research.design_seed)
    log(f"{len(candidates)} candidates; gaps: {gaps.as_dict()}")
    retired = retirements(inputs)
    leaving = {sid for sid, _ in retired}
    screen = design.Screen(
        {sid: dict(row) for sid, row in inputs.registry.items()},
        {sid: row["spec"] for sid, row in inputs.registry.items() if row["status"] == "active" and sid not in leaving},
        inputs.series,
        research.design_max_correlation,
    )
    proposals, trials, strategies = [], [], []
    for k, candidate in enumerate(candidates):
        if len(strategies) >= research.design_proposals:
            break
        verdict = screen.check(candidate)
        log(f"[{k + 1}/{len(candidates)}] {verdict.status}: {verdict.reason}")
        if verdict.status == design.REGISTERED:
            evaluation = evaluate_candidate(verdict.spec, inputs.series, rules)
            trials.append(
                trial_row(
                    run_id,
                    now,
                    "designed",
                    candidate.source,
                    verdict.spec,
                    candidate.parents,
                    evaluation,
                    evaluation.combinations,
                    True,
                    verdict.reason,
                )  # fmt: skip
            )
            strategies.append(strategy_row(verdict.spec, "designed", candidate.parents, verdict.reason, now))
        proposals.append(
            {
                "proposal_id": hashlib.sha256(f"{run_id}:design:{k}".encode()).hexdigest()[:16],
                "run_id": run_id,
                "created_at": now,
                "source": candidate.source,
                "status": verdict.status,
                "reason": verdict.reason,
                "strategy_id": verdict.strategy_id,
                "name": verdict.spec.name if verdict.spec else None,
                "parents": json.dumps(list(candidate.parents)),
                "note": candidate.note,
                "proposal": json.dumps(candidate.data, default=str) if candidate.data else None,
                "raw_text": candidate.raw_text,
            }  # fmt: skip
        )
    return Outcome(
        _frame(proposals, DESIGN_SCHEMA), _frame(trials, TRIAL_SCHEMA), _frame(strategies, STRATEGY_SCHEMA),
        time.perf_counter() - began, tuple(retired),
    )  # fmt: skip


def run_tuning(inputs: ResearchInputs, settings: Settings, run_id: str, log) -> Outcome:
    """The bottom-ranked strategies swept over widened ranges on the research windows; a
    variant is registered only when its out-of-sample score beats its parent's."""
    research = settings.research
    began, now = time.perf_counter(), datetime.now(UTC)
    rules = FillRules(fee=research.backtest_fee, slippage_bps=research.backtest_slippage_bps)
    ranked = inputs.ranking.filter(pl.col("item_id").is_in(list(inputs.registry))).sort("rank", descending=True)
    parents = [
        (row["item_id"], row["score"])
        for row in ranked.iter_rows(named=True)
        if inputs.registry[row["item_id"]]["status"] == "active" and inputs.registry[row["item_id"]]["spec"].parameters
    ][: research.tune_strategies]
    tuned, trials, strategies = [], [], []
    for k, (parent_id, parent_score) in enumerate(parents):
        parent = inputs.registry[parent_id]["spec"]
        best, research_score, combinations = tuning.sweep(tuning.widened(parent), inputs.series, rules)
        variant = tuning.tuned_variant(parent, best)
        sid = strategy_id(variant)
        evaluation = evaluate_candidate(variant, inputs.series, rules)
        oos = evaluation.out_of_sample.score
        if sid in inputs.registry:
            registered, reason = False, f"already registered as {inputs.registry[sid]['name']} ({sid})"
        elif oos is None or parent_score is None or not oos > parent_score:
            registered, reason = (
                False,
                f"out-of-sample score {_shown(oos)} does not beat the parent's {_shown(parent_score)}",
            )
        else:
            registered, reason = True, f"out-of-sample score {_shown(oos)} beats the parent's {_shown(parent_score)}"
        log(f"[{k + 1}/{len(parents)}] {parent.name} -> {variant.name}: {reason}")
        trials.append(trial_row(run_id, now, "tuned", "sweep", variant, (parent_id,), evaluation, combinations,
                                registered, reason))  # fmt: skip
        if registered:
            strategies.append(strategy_row(variant, "tuned", (parent_id,), reason, now))
        tuned.append(
            {
                "run_id": run_id,
                "created_at": now,
                "parent_id": parent_id,
                "parent_name": parent.name,
                "parent_score": parent_score,
                "variant_id": sid,
                "variant_name": variant.name,
                "research_score": research_score,
                "oos_score": oos,
                "combinations": combinations,
                "registered": registered,
                "reason": reason,
            }  # fmt: skip
        )
    return Outcome(
        _frame(tuned, TUNING_SCHEMA), _frame(trials, TRIAL_SCHEMA), _frame(strategies, STRATEGY_SCHEMA),
        time.perf_counter() - began,
    )  # fmt: skip


def _shown(value: float | None) -> str:
    return "none" if value is None else f"{value:.4f}"
