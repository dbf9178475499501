"""ml/dataset, ml/models (+ model_results, oof_predictions), ml/ensembles and ml/predictions.

Training never holds the DuckDB writer: ml/models and ml/ensembles are graphs of steps,
a short read in the `duckdb` pool, the fit outside it, a short write in it. A tick or a
decision run that starts meanwhile waits seconds for a step, not minutes for the training.
"""

import json
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import dagster as dg
import polars as pl

from tracer_assets.checks import check_result
from tracer_assets.features.indicators import compute_indicators
from tracer_assets.features.keys import INDICATORS_KEY, INDICATORS_TABLE
from tracer_assets.features.store import read_recent_indicators, read_with_warmup
from tracer_assets.guards import guard_outcome
from tracer_assets.metadata import markdown_table
from tracer_assets.ml.dataset import (
    BASE_FEATURES,
    FEATURE_WARMUP_BARS,
    add_labels,
    build_features,
    context_timeframes,
    feature_columns,
    feature_lookahead_mismatches,
)
from tracer_assets.ml.ensembles import Ensemble, build_ensembles
from tracer_assets.ml.keys import (
    DATASET_KEY,
    DATASET_TABLE,
    ENSEMBLES_KEY,
    ENSEMBLES_SEED_VIEW,
    ENSEMBLES_TABLE,
    MODEL_RESULTS_KEY,
    MODEL_RESULTS_SEED_VIEW,
    MODEL_RESULTS_TABLE,
    MODELS_KEY,
    MODELS_TABLE,
    OOF_KEY,
    OOF_TABLE,
    PREDICTIONS_KEY,
    PREDICTIONS_TABLE,
)
from tracer_assets.ml.predict import (
    PREDICTION_COLUMNS,
    best_ensembles,
    load_models,
    newest_rows,
    ranking_statuses,
    score,
    select_ensembles,
)
from tracer_assets.ml.tables import ensembles_frame, models_frame, oof_frame, results_frame, stored_models
from tracer_assets.ml.train import TrainedModel, code_version, model_grid, prepare_target, train_model
from tracer_assets.policies import DAILY_FRESHNESS, DUCKDB_POOL, STEP_VALUES_IO
from tracer_assets.ranking.keys import ENSEMBLE_RANKING_KEY
from tracer_assets.resources.warehouse import TracerDuckDB
from tracer_assets.settings import Settings
from tracer_assets.tables import ensure_table, replace_table, table_exists, transaction
from tracer_assets.ui_tables import COLUMN_SCHEMA, column_schema

LOOKAHEAD_CUTS = (0, 7)  # bars before each series' newest, recomputed from cut history
GUARD_BARS = FEATURE_WARMUP_BARS + 80  # candles per timeframe the guard rebuilds from
_INSTANT = "TIMESTAMP WITH TIME ZONE"
# ml.models, every column (tables.models_frame): name, DuckDB type, description. The metrics are
# out of sample (the walk-forward's overall row); docs/ml.md defines them.
MODELS_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("model_id", "VARCHAR", "<timeframe>-h<horizon>-<feature set>"),
    ("target", "VARCHAR", "<timeframe>-h<horizon>: the label's timeframe and horizon (bars)"),
    ("timeframe", "VARCHAR", "Candle timeframe of the rows"),
    ("horizon", "BIGINT", "Bars ahead the label looks"),
    ("feature_set", "VARCHAR", "Which features: full, no_context or price"),
    ("f1_macro", "DOUBLE", "Out-of-sample F1 macro of the model"),
    ("accuracy", "DOUBLE", "Out-of-sample accuracy of the model"),
    ("log_loss", "DOUBLE", "Out-of-sample log loss of the model"),
    ("ic", "DOUBLE", "Spearman correlation of the expected score with the forward return; empty when undefined"),
    ("majority_f1_macro", "DOUBLE", "F1 macro of the majority-class baseline, same rows and folds"),
    ("majority_accuracy", "DOUBLE", "Accuracy of the majority-class baseline"),
    ("features", "VARCHAR", "The feature columns, JSON"),
    ("parameters", "VARCHAR", "LightGBM parameters, JSON"),
    ("train_start", _INSTANT, "Time of the first row of the deployed fit (UTC)"),
    ("train_end", _INSTANT, "Time of the last row of the deployed fit (UTC)"),
    ("train_rows", "BIGINT", "Rows of the deployed fit"),
    ("data_fingerprint", "VARCHAR", "Hash of the training data"),
    ("code_version", "VARCHAR", "Hash of the training code"),
    ("content_hash", "VARCHAR", "SHA-256 of model_text"),
    ("trained_at", _INSTANT, "When it was trained (UTC)"),
    ("run_id", "VARCHAR", "The research run that trained it"),
    ("model_text", "VARCHAR", "The LightGBM model, as text"),
)


def _metric_metadata(frame: pl.DataFrame, id_column: str) -> dict:
    """Numbers per model (Dagster charts them across runs)."""
    metadata = {}
    for row in frame.iter_rows(named=True):
        name = row[id_column].replace("-", "_")
        for metric in ("f1_macro", "accuracy", "log_loss"):
            if row.get(metric) is not None:
                metadata[f"{metric}__{name}"] = dg.MetadataValue.float(float(row[metric]))
    return metadata


def _read_indicators(connection, timeframes: list[str]) -> pl.DataFrame:
    frame = connection.sql(
        f"SELECT * FROM {INDICATORS_TABLE} WHERE list_contains(?, timeframe) ORDER BY symbol, timeframe, ts",
        params=[timeframes],
    ).pl()
    return frame.with_columns(pl.col("ts").dt.convert_time_zone("UTC"))


@dataclass
class Training:
    models: list[TrainedModel]
    oof: pl.DataFrame
    trained_at: datetime
    seconds: float


def build_ml_assets(settings: Settings) -> list[dg.AssetsDefinition]:
    ml = settings.ml
    all_timeframes = settings.market.all_timeframes
    # The model timeframes and every timeframe that gives them context.
    read_timeframes = sorted(
        {*ml.timeframes, *(h for tf in ml.timeframes for h in context_timeframes(tf, all_timeframes))},
        key=all_timeframes.index,
    )
    fee = settings.research.backtest_fee

    def features_of(candles: pl.DataFrame) -> pl.DataFrame:
        return build_features(compute_indicators(candles), ml.timeframes, all_timeframes)

    @dg.asset(
        key=DATASET_KEY,
        deps=[INDICATORS_KEY],
        description=(
            f"Features and labels per symbol and timeframe ({', '.join(ml.timeframes)}): indicators made comparable "
            "across symbols, lagged returns, volatility, volume, higher-timeframe context as of each bar's close; "
            f"labels for horizons {', '.join(map(str, ml.horizons))} bars (net of fees, in volatility units). "
            "Definitions in docs/ml.md."
        ),
        pool=DUCKDB_POOL,
        group_name="ml",
        kinds={"duckdb", "polars"},
        freshness_policy=DAILY_FRESHNESS,
        check_specs=[
            dg.AssetCheckSpec(
                "no_lookahead",
                asset=DATASET_KEY,
                blocking=True,
                description=(
                    "The newest feature rows of every symbol and timeframe, rebuilt from candles cut at their bar's "
                    "close (every timeframe), are identical to the rows built from the whole history."
                ),
            )
        ],
    )
    def dataset(context: dg.AssetExecutionContext, duckdb: TracerDuckDB):
        with duckdb.get_connection() as connection:
            indicators = _read_indicators(connection, read_timeframes)
            if indicators.is_empty():
                raise dg.Failure(
                    f"features.indicators has no {', '.join(read_timeframes)} rows: run the trading tick over a range "
                    "of days first (make demo does)"
                )
            frame = add_labels(
                build_features(indicators, ml.timeframes, all_timeframes),
                ml.horizons,
                ml.label_thresholds,
                fee,
                all_timeframes,
            )
            replace_table(connection, [(DATASET_TABLE, frame)])
            newest = indicators["ts"].max()
            candles = read_with_warmup(connection, read_timeframes, newest, newest + timedelta(days=1), GUARD_BARS)
        samples = _newest_samples(candles, ml.timeframes)
        columns = sorted(
            {c for tf in ml.timeframes for fs in ml.feature_sets for c in feature_columns(tf, fs, all_timeframes)}
        )
        mismatches = feature_lookahead_mismatches(candles, features_of, samples, columns, all_timeframes)
        checked = _complete_samples(features_of(candles), samples)
        outcome = guard_outcome("no_lookahead", mismatches, samples=len(samples), samples_with_features=checked)
        if not checked:  # nothing was compared: that is not a pass
            outcome = replace(outcome, passed=False, metadata={**outcome.metadata, "why": "no sample had features"})
        labelled = {h: frame[f"label_h{h}"].drop_nulls().len() for h in ml.horizons}
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": frame.height,
                "rows_per_timeframe": dict(frame.group_by("timeframe").len().rows()),
                "labelled_rows": {f"h{h}": n for h, n in labelled.items()},
                "features": len(columns),
                "newest_bar": str(newest),
            },
            check_results=[check_result(outcome, DATASET_KEY)],
        )

    @dg.op(
        pool=DUCKDB_POOL,
        ins={"after": dg.In(dg.Nothing)},
        out={f"rows_{tf}": dg.Out(io_manager_key=STEP_VALUES_IO) for tf in ml.timeframes},
    )
    def ml_read_dataset(duckdb: TracerDuckDB):
        """The dataset rows of each model timeframe (short, in the pool)."""
        with duckdb.get_connection() as connection:
            if not table_exists(connection, DATASET_TABLE):
                raise dg.Failure(f"{DATASET_TABLE} does not exist: materialize ml/dataset first")
            frame = connection.sql(
                f"SELECT * FROM {DATASET_TABLE} WHERE list_contains(?, timeframe)", params=[list(ml.timeframes)]
            ).pl()
        frame = frame.with_columns(pl.col("ts").dt.convert_time_zone("UTC"))
        for tf in ml.timeframes:
            yield dg.Output(frame.filter(pl.col("timeframe") == tf), f"rows_{tf}")

    def train_models_op(timeframe: str):
        """One step per model timeframe: the research job fits them side by side."""
        specs = [s for s in _distinct_specs(model_grid(ml), all_timeframes) if s.timeframe == timeframe]

        @dg.op(name=f"ml_train_models_{timeframe}", out=dg.Out(io_manager_key=STEP_VALUES_IO))
        def train(context: dg.OpExecutionContext, dataset: pl.DataFrame) -> Training:
            """Every model of the grid on this timeframe, walk-forward (outside the pool: the long part)."""
            began, trained, oof = time.perf_counter(), [], []
            for target_key in dict.fromkeys((s.timeframe, s.horizon) for s in specs):
                target = prepare_target(dataset, *target_key, ml)
                mine = []
                for spec in (s for s in specs if (s.timeframe, s.horizon) == target_key):
                    mine.append(train_model(target, spec, all_timeframes, ml, context.log.debug))
                    overall = next(r for r in mine[-1].results if r["fold"] == "overall" and r["predictor"] == "model")
                    context.log.info(
                        f"[{len(trained) + len(mine)}/{len(specs)}] {spec.model_id}: {target.rows.height:,} rows, "
                        f"out-of-sample f1 {overall['f1_macro']:.3f} ({time.perf_counter() - began:.0f} s)"
                    )
                trained += mine
                oof.append(oof_frame(target, mine))
            return Training(trained, pl.concat(oof), datetime.now(UTC), time.perf_counter() - began)

        return train

    @dg.op(
        pool=DUCKDB_POOL,
        out={
            "models": dg.Out(dg.Nothing),
            "model_results": dg.Out(dg.Nothing),
            "oof_predictions": dg.Out(dg.Nothing),
        },
    )
    def ml_write_models(context: dg.OpExecutionContext, duckdb: TracerDuckDB, trainings: list[Training]):
        """The three tables of every timeframe's models in one transaction (short, in the pool)."""
        run_id = context.run.run_id
        training = Training(
            [model for t in trainings for model in t.models],
            pl.concat([t.oof for t in trainings]),
            max(t.trained_at for t in trainings),
            sum(t.seconds for t in trainings),
        )
        models = models_frame(training.models, training.trained_at, run_id, code_version())
        results = results_frame(training.models, training.trained_at, run_id)
        with duckdb.get_connection() as connection:
            replace_table(
                connection,
                [(MODELS_TABLE, models), (MODEL_RESULTS_TABLE, results), (OOF_TABLE, training.oof)],
                alias_views=[(MODEL_RESULTS_SEED_VIEW, MODEL_RESULTS_TABLE)],
            )
        shown = models.select(
            "model_id", "train_rows", "f1_macro", "majority_f1_macro", "accuracy", "majority_accuracy", "log_loss", "ic"
        )
        context.add_output_metadata(
            {
                "dagster/row_count": models.height,
                "training_seconds": round(training.seconds, 1),  # summed over the timeframes' steps
                "best_f1_macro": float(models["f1_macro"].max()),
                "models": dg.MetadataValue.md(markdown_table(shown, "{:.3f}")),
                "code_version": code_version(),
                **_metric_metadata(models, "model_id"),
            },
            output_name="models",
        )
        context.add_output_metadata({"dagster/row_count": results.height}, output_name="model_results")
        context.add_output_metadata({"dagster/row_count": training.oof.height}, output_name="oof_predictions")

    @dg.graph_multi_asset(
        outs={
            "models": dg.AssetOut(
                key=MODELS_KEY,
                dagster_type=dg.Nothing,
                kinds={"duckdb", "lightgbm"},
                description=(
                    "LightGBM classifiers of the grid (timeframe x horizon x feature set, pooled across symbols), "
                    "deployed fits on every labelled row: model text, features, parameters, training window, the "
                    "data's fingerprint, code version, content hash and out-of-sample metrics beside the baselines'."
                ),
                metadata={COLUMN_SCHEMA: column_schema(MODELS_COLUMNS)},
            ),
            "model_results": dg.AssetOut(
                key=MODEL_RESULTS_KEY,
                dagster_type=dg.Nothing,
                kinds={"duckdb"},
                description="Per model, fold and predictor (the model, the majority class, the last return's sign).",
            ),
            "oof_predictions": dg.AssetOut(
                key=OOF_KEY,
                dagster_type=dg.Nothing,
                kinds={"duckdb"},
                description="Each model's out-of-fold class probabilities: what the ensembles are fitted on.",
            ),
        },
        ins={"dataset": dg.AssetIn(key=DATASET_KEY, dagster_type=dg.Nothing)},
        group_name="ml",
    )
    def models(dataset):
        rows = ml_read_dataset(dataset)
        trainings = [train_models_op(tf)(getattr(rows, f"rows_{tf}")) for tf in ml.timeframes]
        written_models, written_results, written_oof = ml_write_models(trainings)
        return {"models": written_models, "model_results": written_results, "oof_predictions": written_oof}

    @dg.op(
        pool=DUCKDB_POOL,
        ins={name: dg.In(dg.Nothing) for name in ("dataset", "models", "model_results", "oof_predictions")},
        out=dg.Out(io_manager_key=STEP_VALUES_IO),
    )
    def ml_read_for_ensembles(duckdb: TracerDuckDB) -> dict[str, pl.DataFrame]:
        with duckdb.get_connection() as connection:
            missing = [
                t
                for t in (DATASET_TABLE, MODELS_TABLE, MODEL_RESULTS_TABLE, OOF_TABLE)
                if not table_exists(connection, t)
            ]
            if missing:
                raise dg.Failure(f"{', '.join(missing)} missing: materialize ml/dataset and ml/models first")
            read = {
                "dataset": f"SELECT * FROM {DATASET_TABLE} WHERE list_contains(?, timeframe)",
                "models": f"SELECT * EXCLUDE (model_text) FROM {MODELS_TABLE} WHERE list_contains(?, timeframe)",
                "results": f"SELECT * FROM {MODEL_RESULTS_TABLE} WHERE list_contains(?, timeframe)",
                "oof": f"SELECT * FROM {OOF_TABLE} WHERE list_contains(?, timeframe)",
            }
            frames = {name: connection.sql(sql, params=[list(ml.timeframes)]).pl() for name, sql in read.items()}
        return {
            name: frame.with_columns(pl.col(c).dt.convert_time_zone("UTC") for c in ("ts",) if c in frame.columns)
            for name, frame in frames.items()
        }

    @dg.op(out=dg.Out(io_manager_key=STEP_VALUES_IO))
    def ml_fit_ensembles(context: dg.OpExecutionContext, stored: dict[str, pl.DataFrame]) -> list[Ensemble]:
        ensembles = []
        targets = stored["models"].select("timeframe", "horizon").unique().sort("timeframe", "horizon").rows()
        for timeframe, horizon in targets:
            target = prepare_target(stored["dataset"], timeframe, horizon, ml)
            members = stored_models(target, stored["models"], stored["results"], stored["oof"])
            ensembles += build_ensembles(target, members, ml.ensemble_members)
            context.log.info(f"{target.name}: ensembles over {min(len(members), ml.ensemble_members)} models")
        return ensembles

    @dg.op(pool=DUCKDB_POOL, out={"ensembles": dg.Out(dg.Nothing)})
    def ml_write_ensembles(context: dg.OpExecutionContext, duckdb: TracerDuckDB, ensembles: list[Ensemble], stored):
        trained_at = dict(stored["models"].select("model_id", "trained_at").rows())
        frame = ensembles_frame(ensembles, trained_at, datetime.now(UTC), context.run.run_id)
        with duckdb.get_connection() as connection:
            replace_table(connection, [(ENSEMBLES_TABLE, frame)], alias_views=[(ENSEMBLES_SEED_VIEW, ENSEMBLES_TABLE)])
        best = best_ensembles(frame)
        shown = frame.select(
            "ensemble_id", "rows", "accuracy", "majority_accuracy", "f1_macro", "majority_f1_macro", "log_loss"
        )
        context.add_output_metadata(
            {
                "dagster/row_count": frame.height,
                "best_per_timeframe": {tf: row["ensemble_id"] for tf, row in best.items()},
                "best_accuracy": float(frame["accuracy"].max()) if frame.height else 0.0,
                "ensembles": dg.MetadataValue.md(markdown_table(shown, "{:.3f}")),
                **_metric_metadata(frame, "ensemble_id"),
            },
            output_name="ensembles",
        )

    @dg.graph_multi_asset(
        outs={
            "ensembles": dg.AssetOut(
                key=ENSEMBLES_KEY,
                dagster_type=dg.Nothing,
                kinds={"duckdb", "scikit-learn"},
                description=(
                    "Per timeframe and horizon, over its best models by out-of-sample F1: mean probability, majority "
                    "vote and a stacked logistic regression fitted on out-of-fold predictions only; all evaluated "
                    "walk-forward on the same folds beside the baselines. The best per timeframe (out-of-sample F1 "
                    "macro) predicts."
                ),
            )
        },
        ins={
            "dataset": dg.AssetIn(key=DATASET_KEY, dagster_type=dg.Nothing),
            "models": dg.AssetIn(key=MODELS_KEY, dagster_type=dg.Nothing),
            "model_results": dg.AssetIn(key=MODEL_RESULTS_KEY, dagster_type=dg.Nothing),
            "oof_predictions": dg.AssetIn(key=OOF_KEY, dagster_type=dg.Nothing),
        },
        group_name="ml",
    )
    def ensembles(dataset, models, model_results, oof_predictions):
        stored = ml_read_for_ensembles(
            dataset=dataset, models=models, model_results=model_results, oof_predictions=oof_predictions
        )
        return {"ensembles": ml_write_ensembles(ml_fit_ensembles(stored), stored)}

    @dg.asset(
        key=PREDICTIONS_KEY,
        deps=[ENSEMBLES_KEY, ENSEMBLE_RANKING_KEY, MODELS_KEY, INDICATORS_KEY],
        description=(
            "Every tick: the newest closed candle of each symbol and model timeframe scored by that timeframe's best "
            "ensemble (out-of-sample F1) among those ranking/ensembles keeps or has not ranked yet (label, class "
            "probabilities, confidence, ensemble and model ids, when the models were trained); a timeframe whose "
            "ensembles are all archived is not scored. Append-only; signals/signals takes it as a weighted vote "
            "unless its models are too old."
        ),
        pool=DUCKDB_POOL,
        group_name="ml",
        kinds={"duckdb", "lightgbm"},
    )
    def predictions(context: dg.AssetExecutionContext, duckdb: TracerDuckDB):
        began = time.perf_counter()
        with duckdb.get_connection() as connection:
            if not table_exists(connection, ENSEMBLES_TABLE):
                context.log.warning(
                    "no ensembles yet (ml.ensembles missing): no ML vote until the research job trains them "
                    "(the daily_research schedule, or now: `dagster job execute -m tracer_assets.definitions "
                    "-j research_job`)"
                )
                return dg.MaterializeResult(metadata={"predicted": 0, "why": "no ensembles trained yet"})
            best, archived = select_ensembles(
                connection.sql(f"SELECT * FROM {ENSEMBLES_TABLE}").pl(), ranking_statuses(connection)
            )
            if archived:
                context.log.warning(f"no ML vote: {'; '.join(archived.values())}")
            if not best:
                why = "; ".join(archived.values()) or f"{ENSEMBLES_TABLE} is empty"
                return dg.MaterializeResult(metadata={"predicted": 0, "why": why, "not_predicting": archived})
            member_ids = sorted({m for row in best.values() for m in json.loads(row["members"])})
            model_rows = (
                connection.sql(
                    f"SELECT model_id, features, model_text FROM {MODELS_TABLE} WHERE list_contains(?, model_id)",
                    params=[member_ids],
                )
                .pl()
                .to_dicts()
            )
            recent = read_recent_indicators(connection, read_timeframes, 2 * FEATURE_WARMUP_BARS)
        loaded = load_models(model_rows)
        rows = newest_rows(build_features(recent, [tf for tf in ml.timeframes if tf in best], all_timeframes))
        rows = rows.drop_nulls(list(BASE_FEATURES))
        scored = [score(rows.filter(pl.col("timeframe") == tf), best[tf], loaded) for tf in best if tf in ml.timeframes]
        scored = [frame for frame in scored if frame.height]
        frame = pl.concat(scored) if scored else pl.DataFrame()
        if frame.is_empty():
            return dg.MaterializeResult(metadata={"predicted": 0, "why": "no series with complete features"})
        frame = frame.select(PREDICTION_COLUMNS).with_columns(
            pl.lit(context.run.run_id).alias("run_id"), pl.lit(datetime.now(UTC)).alias("predicted_at")
        )
        with duckdb.get_connection() as connection:
            ensure_table(connection, PREDICTIONS_TABLE, frame)
            with transaction(connection):
                connection.register("incoming", frame.to_arrow())
                # Append-only and idempotent: a tick run again adds no second row for a candle and ensemble.
                added = connection.execute(
                    f"""INSERT INTO {PREDICTIONS_TABLE} BY NAME
                        SELECT i.* FROM incoming AS i ANTI JOIN {PREDICTIONS_TABLE} AS p
                        ON p.symbol = i.symbol AND p.timeframe = i.timeframe AND p.ts = i.ts
                           AND p.ensemble_hash = i.ensemble_hash"""
                ).fetchall()[0][0]
                connection.unregister("incoming")
        return dg.MaterializeResult(
            metadata={
                "predicted": frame.height,
                "appended": int(added),
                "seconds": round(time.perf_counter() - began, 3),
                "ensembles": {tf: row["ensemble_id"] for tf, row in best.items()},
                "not_predicting": archived,
                "predictions": dg.MetadataValue.md(
                    markdown_table(frame.select("symbol", "timeframe", "ts", "label", "confidence"), "{:.3f}")
                ),
            }
        )

    # graph_multi_asset drops an AssetOut's freshness_policy (Dagster 1.13): set it on the specs.
    def daily(spec: dg.AssetSpec) -> dg.AssetSpec:
        fresh = spec.key in (MODELS_KEY, ENSEMBLES_KEY)
        return spec.replace_attributes(freshness_policy=DAILY_FRESHNESS) if fresh else spec

    return [dataset, models.map_asset_specs(daily), ensembles.map_asset_specs(daily), predictions]


def _distinct_specs(specs, all_timeframes):
    """The grid without models that would read the same columns as an earlier one (the top
    timeframe has no context, so its `full` and `no_context` models are the same model)."""
    seen, distinct = set(), []
    for spec in specs:
        key = (spec.timeframe, spec.horizon, tuple(feature_columns(spec.timeframe, spec.feature_set, all_timeframes)))
        if key not in seen:
            seen.add(key)
            distinct.append(spec)
    return distinct


def _newest_samples(candles: pl.DataFrame, timeframes) -> list[tuple]:
    """(symbol, timeframe, ts) LOOKAHEAD_CUTS bars before each model series' newest candle."""
    mine = candles.filter(pl.col("timeframe").is_in(list(timeframes)))
    back = pl.col("ts").rank("ordinal", descending=True).over("symbol", "timeframe") - 1
    return mine.filter(back.is_in(list(LOOKAHEAD_CUTS))).select("symbol", "timeframe", "ts").sort(pl.all()).rows()


def _complete_samples(features: pl.DataFrame, samples) -> int:
    """Samples whose row has every base feature (a guard over empty rows proves nothing)."""
    keys = pl.DataFrame(samples, schema=["symbol", "timeframe", "ts"], orient="row").with_columns(
        pl.col("ts").cast(features.schema["ts"])
    )
    return features.join(keys, on=["symbol", "timeframe", "ts"], how="semi").drop_nulls(list(BASE_FEATURES)).height
