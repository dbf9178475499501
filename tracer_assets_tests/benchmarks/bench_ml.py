"""Benchmark: the ml domain on the bundled candles (6 default symbols, 2024-01-01 .. 2024-09-06).

The candles are built as the project builds them: the 5m files, rolled up to 15m, 1h and 4h with
complete buckets only (market/candles_resampled.sql, here in polars), and their indicators
(`compute_indicators`), once, in this process, written to a scratch parquet file. Each
measurement then runs in a fresh child process that reads those indicator rows (as the ml assets
read features.indicators) and reports its own peak RSS (getrusage in the child: imports, the
indicator rows and the work, nothing of the other measurements). No DuckDB and no Dagster: the
figures are the ml code's own (the research job runs in process, so its peak adds Dagster's).

1. One model: 5m, horizon 12, feature set `full` (TRACER_ML_TIMEFRAMES=5m,15m,1h,4h, default
   rounds and folds): the whole walk-forward (every fold + the deployed fit), and peak RSS.
   No target: it sizes the largest single model the settings allow.
2. The default grid (15m, 1h, 4h x horizons 4, 12 x full, no_context; the 4h duplicates skipped as
   the assets do) with its folds, then the ensembles from the stored frames (as ml/ensembles reads
   them): seconds for the dataset (features, labels, the no-lookahead guard), training, ensembles
   and in all; peak RSS. Targets on the 2-core reference machine: 3 minutes or less, 2 GiB or less.
   Also each model's and ensemble's out-of-sample figures beside the majority and last_return
   baselines (fold "overall"): what the closing note in docs/ml.md quotes.
3. Inference for one tick (6 symbols x 5m, 15m, 1h, 4h), with models of all four timeframes
   (the setup trains a horizon-4 grid, default rounds and folds, the 5m models on their newest
   60 days, so the trees are full size):
   (a) scoring, the ml/predictions asset's work after its reads: feature rows from the newest 640
   indicator rows per timeframe, then `predict.score` with each timeframe's best ensemble, models
   already loaded (target: 50 ms or less, median of 20); (b) `predict.load_models` from the model
   text, which each tick process pays once; and their sum.

    .venv/bin/python tracer_assets_tests/benchmarks/bench_ml.py

It takes several minutes (the 5m models are most of it).
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TARGET_GRID_SECONDS = 180.0
TARGET_GRID_RSS_MIB = 2048.0
TARGET_SCORING_MS = 50.0
SCORING_RUNS = 20
LOADING_RUNS = 10
SETUP_5M_DAYS = 60  # the inference set-up's 5m models learn from the newest 60 days
RESULT = "@@bench_ml@@ "  # a child's last line: its figures as JSON
PARTS = ("one_model", "grid", "inference")


# -- shared helpers (parent and children) -----------------------------------------------------


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def current_rss_mib() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def say(text: str) -> None:
    print(text, flush=True)


def build_indicators(path: Path) -> dict:
    """5m candles of the default symbols, rolled up like market/candles_resampled.sql (first open,
    max high, min low, last close, summed volume; only buckets with every 5m candle), with their
    indicators, to `path`."""
    import polars as pl

    from tracer_assets.data import BUNDLED_REPLAY_DIR
    from tracer_assets.features.indicators import compute_indicators
    from tracer_assets.market.timeframes import timeframe_seconds
    from tracer_assets.resources.replay_exchange import read_candle_file
    from tracer_assets.settings import DEFAULT_SYMBOLS, load_settings

    market = load_settings({}).market
    base_seconds = timeframe_seconds(market.base_timeframe)
    frames = []
    for symbol in DEFAULT_SYMBOLS:
        raw = read_candle_file(BUNDLED_REPLAY_DIR / f"{symbol.replace('/', '_')}-{market.base_timeframe}.parquet")
        base = raw.select(
            pl.lit(symbol).alias("symbol"),
            pl.lit(market.base_timeframe).alias("timeframe"),
            pl.from_epoch("ms", time_unit="ms").cast(pl.Datetime("us")).dt.replace_time_zone("UTC").alias("ts"),
            "open",
            "high",
            "low",
            "close",
            "volume",
        ).sort("ts")
        frames.append(base)
        for timeframe in market.timeframes:
            seconds = timeframe_seconds(timeframe)
            bucket = (pl.col("ts").dt.epoch("s") // seconds * seconds) * 1_000_000
            rolled = (
                base.group_by("symbol", bucket.alias("bucket"))
                .agg(
                    pl.col("open").first(),
                    pl.col("high").max(),
                    pl.col("low").min(),
                    pl.col("close").last(),
                    pl.col("volume").sum(),
                    pl.len().alias("n"),
                )
                .filter(pl.col("n") == seconds // base_seconds)
            )
            frames.append(
                rolled.select(
                    "symbol",
                    pl.lit(timeframe).alias("timeframe"),
                    pl.from_epoch("bucket", time_unit="us").dt.replace_time_zone("UTC").alias("ts"),
                    "open",
                    "high",
                    "low",
                    "close",
                    "volume",
                )
            )
    candles = pl.concat(frames)
    indicators = compute_indicators(candles)
    indicators.write_parquet(path)
    return {
        "rows_per_timeframe": dict(indicators.group_by("timeframe").len().sort("timeframe").rows()),
        "first": str(indicators["ts"].min()),
        "last": str(indicators["ts"].max()),
    }


def read_indicators(path: Path, timeframes):
    """The indicator rows of `timeframes` in (symbol, timeframe, ts) order, as the ml assets read them."""
    import polars as pl

    return pl.read_parquet(path).filter(pl.col("timeframe").is_in(list(timeframes))).sort("symbol", "timeframe", "ts")


def overall(results, predictor: str) -> dict:
    return next(r for r in results if r["fold"] == "overall" and r["predictor"] == predictor)


def train_grid(dataset, specs, ml, all_timeframes, clock: float):
    """ml_train_models: the targets in grid order, every model of a target on its rows and folds."""
    from tracer_assets.ml.tables import oof_frame
    from tracer_assets.ml.train import prepare_target, train_model

    trained, oof = [], []
    for target_key in dict.fromkeys((s.timeframe, s.horizon) for s in specs):
        target = prepare_target(dataset, *target_key, ml)
        mine = []
        for spec in (s for s in specs if (s.timeframe, s.horizon) == target_key):
            began = time.perf_counter()
            mine.append(train_model(target, spec, all_timeframes, ml, lambda _: None))
            row = overall(mine[-1].results, "model")
            say(
                f"  [{len(trained) + len(mine)}/{len(specs)}] {spec.model_id}: {target.rows.height:,} rows, "
                f"{time.perf_counter() - began:.1f} s, out-of-sample f1 {row['f1_macro']:.3f} "
                f"({time.perf_counter() - clock:.0f} s in)"
            )
        trained += mine
        oof.append(oof_frame(target, mine))
    import polars as pl

    return trained, pl.concat(oof)


def _number(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


# -- the children -----------------------------------------------------------------------------


def one_model(indicators_path: Path) -> dict:
    from tracer_assets.ml import settings as ml_settings
    from tracer_assets.ml.dataset import add_labels, build_features, context_timeframes
    from tracer_assets.ml.train import ModelSpec, prepare_target, train_model
    from tracer_assets.settings import load_settings

    settings = load_settings({})
    all_timeframes = settings.market.all_timeframes
    ml = ml_settings.load({"TRACER_ML_TIMEFRAMES": ",".join(all_timeframes)}, all_timeframes)
    spec = ModelSpec("5m", 12, "full")
    indicators = read_indicators(indicators_path, ["5m", *context_timeframes("5m", all_timeframes)])
    began = time.perf_counter()
    dataset = add_labels(
        build_features(indicators, [spec.timeframe], all_timeframes),
        [spec.horizon],
        ml.label_thresholds,
        settings.research.backtest_fee,
        all_timeframes,
    )
    del indicators
    target = prepare_target(dataset, spec.timeframe, spec.horizon, ml)
    del dataset
    dataset_seconds = time.perf_counter() - began
    rss_before = current_rss_mib()
    say(
        f"  {spec.model_id}: {target.rows.height:,} rows, {len(target.folds)} folds, {ml.rounds} rounds; "
        f"dataset + folds {dataset_seconds:.1f} s, RSS before training {_number(rss_before, 0)} MiB"
    )
    clock = time.perf_counter()

    def log(message: str) -> None:
        say(f"    {message} ({time.perf_counter() - clock:.1f} s)")

    model = train_model(target, spec, all_timeframes, ml, log)
    seconds = time.perf_counter() - clock
    row = overall(model.results, "model")
    say(
        f"  walk-forward ({len(target.folds)} folds + the deployed fit on {model.train_rows:,} rows): {seconds:.1f} s, "
        f"out-of-sample f1 {row['f1_macro']:.3f}"
    )
    return {
        "model_id": spec.model_id,
        "rows": target.rows.height,
        "fold_train_rows": [len(f.train) for f in target.folds],
        "dataset_seconds": round(dataset_seconds, 2),
        "walk_forward_seconds": round(seconds, 2),
        "rss_before_training_mib": rss_before and round(rss_before, 1),
        "peak_rss_mib": round(peak_rss_mib(), 1),
    }


def grid(indicators_path: Path) -> dict:
    import polars as pl

    from tracer_assets.market.timeframes import timeframe_seconds as tf_seconds
    from tracer_assets.ml.assets import GUARD_BARS, _complete_samples, _distinct_specs, _newest_samples
    from tracer_assets.ml.dataset import (
        add_labels,
        build_features,
        context_timeframes,
        feature_columns,
        feature_lookahead_mismatches,
    )
    from tracer_assets.ml.ensembles import build_ensembles
    from tracer_assets.ml.tables import ensembles_frame, models_frame, results_frame, stored_models
    from tracer_assets.ml.train import code_version, model_grid, prepare_target
    from tracer_assets.settings import load_settings

    settings = load_settings({})
    ml, all_timeframes, fee = settings.ml, settings.market.all_timeframes, settings.research.backtest_fee
    read_timeframes = sorted(
        {*ml.timeframes, *(h for tf in ml.timeframes for h in context_timeframes(tf, all_timeframes))},
        key=all_timeframes.index,
    )
    indicators = read_indicators(indicators_path, read_timeframes)
    say(f"  grid {', '.join(ml.timeframes)} x h{', h'.join(map(str, ml.horizons))} x {', '.join(ml.feature_sets)}")

    # ml/dataset: features and labels, then the no-lookahead guard on the newest candles.
    clock = began = time.perf_counter()
    dataset = add_labels(
        build_features(indicators, ml.timeframes, all_timeframes), ml.horizons, ml.label_thresholds, fee, all_timeframes
    )
    features_seconds = time.perf_counter() - began
    began = time.perf_counter()
    newest = indicators["ts"].max()
    candles = pl.concat(
        indicators.filter(
            (pl.col("timeframe") == tf) & (pl.col("ts") >= newest - pl.duration(seconds=GUARD_BARS * tf_seconds(tf)))
        ).select("symbol", "timeframe", "ts", "open", "high", "low", "close", "volume")
        for tf in read_timeframes
    )
    del indicators

    def features_of(frame: pl.DataFrame) -> pl.DataFrame:
        from tracer_assets.features.indicators import compute_indicators

        return build_features(compute_indicators(frame), ml.timeframes, all_timeframes)

    samples = _newest_samples(candles, ml.timeframes)
    columns = sorted(
        {c for tf in ml.timeframes for fs in ml.feature_sets for c in feature_columns(tf, fs, all_timeframes)}
    )
    mismatches = feature_lookahead_mismatches(candles, features_of, samples, columns, all_timeframes)
    checked = _complete_samples(features_of(candles), samples)
    guard_seconds = time.perf_counter() - began
    if mismatches or not checked:
        raise SystemExit(f"no_lookahead failed: {len(mismatches)} mismatches, {checked} samples with features")
    dataset_seconds = features_seconds + guard_seconds
    say(
        f"  dataset: {dataset.height:,} rows, features + labels {features_seconds:.1f} s, no-lookahead guard "
        f"({len(samples)} samples, passed) {guard_seconds:.1f} s"
    )

    # ml/models: every distinct model of the grid, walk-forward.
    began = time.perf_counter()
    specs = _distinct_specs(model_grid(ml), all_timeframes)
    trained, oof = train_grid(dataset, specs, ml, all_timeframes, clock)
    trained_at = datetime.now(UTC)
    models = models_frame(trained, trained_at, "bench", code_version())
    results = results_frame(trained, trained_at, "bench")
    training_seconds = time.perf_counter() - began
    say(f"  training: {len(trained)} models, {training_seconds:.1f} s")

    # ml/ensembles, from the frames ml/models stores (the model text is not read).
    began = time.perf_counter()
    stored = models.drop("model_text")
    ensembles = []
    for timeframe, horizon in stored.select("timeframe", "horizon").unique().sort("timeframe", "horizon").rows():
        target = prepare_target(dataset, timeframe, horizon, ml)
        members = stored_models(target, stored, results, oof)
        ensembles += build_ensembles(target, members, ml.ensemble_members)
    frame = ensembles_frame(ensembles, dict(stored.select("model_id", "trained_at").rows()), datetime.now(UTC), "b")
    ensembles_seconds = time.perf_counter() - began
    say(f"  ensembles: {frame.height}, {ensembles_seconds:.1f} s")
    total = dataset_seconds + training_seconds + ensembles_seconds
    peak = peak_rss_mib()
    say(
        f"  in all {total:.1f} s (target <= {TARGET_GRID_SECONDS:.0f} s: "
        f"{'met' if total <= TARGET_GRID_SECONDS else 'NOT met'}), "
        f"wall from the first step {time.perf_counter() - clock:.1f} s; "
        f"peak RSS {peak:.0f} MiB (target <= {TARGET_GRID_RSS_MIB:.0f} MiB: "
        f"{'met' if peak <= TARGET_GRID_RSS_MIB else 'NOT met'})"
    )

    say("  out of sample, fold 'overall' (model / majority / last_return):")
    say(f"    {'model':<18} {'rows':>7}  {'F1 macro':^20}  {'accuracy':^20}  {'log loss':^20}  {'IC':^13}")
    model_figures = {}
    for model in trained:
        rows = {p: overall(model.results, p) for p in ("model", "majority", "last_return")}
        figures = {f"{p}_{m}": rows[p][m] for p in rows for m in ("f1_macro", "accuracy", "log_loss", "ic")}
        model_figures[model.spec.model_id] = {"rows": rows["model"]["rows"], **figures}
        cells = [" / ".join(_number(rows[p][m]) for p in rows) for m in ("f1_macro", "accuracy", "log_loss")] + [
            f"{_number(rows['model']['ic'])} / {_number(rows['last_return']['ic'])}"
        ]
        say(f"    {model.spec.model_id:<18} {rows['model']['rows']:>7,}  " + "  ".join(f"{c:^20}" for c in cells))
    say("  ensembles, folds 2..n (ensemble / majority / last_return):")
    say(f"    {'ensemble':<16} {'members':>7} {'rows':>7}  {'accuracy':^20}  {'F1 macro':^20}  {'log loss':>8}")
    ensemble_figures = {}
    for row in frame.sort("timeframe", "horizon", "method").iter_rows(named=True):
        ensemble_figures[row["ensemble_id"]] = {
            k: row[k]
            for k in ("rows", "accuracy", "majority_accuracy", "last_return_accuracy", "f1_macro",
                      "majority_f1_macro", "last_return_f1_macro", "log_loss", "ic")
        }  # fmt: skip
        accuracy = " / ".join(_number(row[k]) for k in ("accuracy", "majority_accuracy", "last_return_accuracy"))
        f1 = " / ".join(_number(row[k]) for k in ("f1_macro", "majority_f1_macro", "last_return_f1_macro"))
        say(
            f"    {row['ensemble_id']:<16} {len(json.loads(row['members'])):>7} {row['rows']:>7,}  "
            f"{accuracy:^20}  {f1:^20}  {_number(row['log_loss']):>8}"
        )
    return {
        "models": len(trained),
        "ensembles": frame.height,
        "dataset_rows": dataset.height,
        "features_labels_seconds": round(features_seconds, 2),
        "guard_seconds": round(guard_seconds, 2),
        "dataset_seconds": round(dataset_seconds, 2),
        "training_seconds": round(training_seconds, 2),
        "ensembles_seconds": round(ensembles_seconds, 2),
        "total_seconds": round(total, 2),
        "peak_rss_mib": round(peak, 1),
        "model_metrics": model_figures,
        "ensemble_metrics": ensemble_figures,
    }


def inference(indicators_path: Path) -> dict:
    import polars as pl

    from tracer_assets.market.timeframes import timeframe_seconds as tf_seconds
    from tracer_assets.ml import settings as ml_settings
    from tracer_assets.ml.assets import _distinct_specs
    from tracer_assets.ml.dataset import BASE_FEATURES, FEATURE_WARMUP_BARS, add_labels, build_features
    from tracer_assets.ml.ensembles import build_ensembles
    from tracer_assets.ml.predict import PREDICTION_COLUMNS, best_ensembles, load_models, newest_rows, score
    from tracer_assets.ml.tables import ensembles_frame, models_frame
    from tracer_assets.ml.train import code_version, model_grid, prepare_target
    from tracer_assets.settings import load_settings

    settings = load_settings({})
    all_timeframes = settings.market.all_timeframes
    env = {"TRACER_ML_TIMEFRAMES": ",".join(all_timeframes), "TRACER_ML_HORIZONS": "4"}
    ml = ml_settings.load(env, all_timeframes)
    indicators = read_indicators(indicators_path, all_timeframes)

    # Set-up (not measured): a horizon-4 grid of all four timeframes, trained like ml/models; the
    # 5m models on their newest SETUP_5M_DAYS only (still 100k rows: every tree is full size).
    clock = time.perf_counter()
    dataset = add_labels(
        build_features(indicators, ml.timeframes, all_timeframes),
        ml.horizons,
        ml.label_thresholds,
        settings.research.backtest_fee,
        all_timeframes,
    )
    newest = dataset["ts"].max()
    dataset = dataset.filter((pl.col("timeframe") != "5m") | (pl.col("ts") > newest - pl.duration(days=SETUP_5M_DAYS)))
    specs = _distinct_specs(model_grid(ml), all_timeframes)
    say(f"  set-up: training {len(specs)} models ({', '.join(s.model_id for s in specs)}), not measured")
    trained, _ = train_grid(dataset, specs, ml, all_timeframes, clock)
    trained_at = datetime.now(UTC)
    ensembles = []
    for timeframe, horizon in dict.fromkeys((s.timeframe, s.horizon) for s in specs):
        target = prepare_target(dataset, timeframe, horizon, ml)
        mine = [m for m in trained if (m.spec.timeframe, m.spec.horizon) == (timeframe, horizon)]
        ensembles += build_ensembles(target, mine, ml.ensemble_members)
    del dataset
    frame = ensembles_frame(ensembles, {m.spec.model_id: trained_at for m in trained}, trained_at, "bench")
    models = models_frame(trained, trained_at, "bench", code_version())
    say(f"  set-up done in {time.perf_counter() - clock:.0f} s")

    # What ml/predictions reads: the best ensembles, their members' rows, the newest indicators.
    best = best_ensembles(frame)
    member_ids = sorted({m for row in best.values() for m in json.loads(row["members"])})
    model_rows = (
        models.filter(pl.col("model_id").is_in(member_ids)).select("model_id", "features", "model_text").to_dicts()
    )
    bars = 2 * FEATURE_WARMUP_BARS
    # read_recent_indicators: per timeframe, the rows within `bars` bars of its newest.
    recent = pl.concat(
        mine.filter(pl.col("ts") > pl.col("ts").max() - pl.duration(seconds=bars * tf_seconds(tf)))
        for tf, mine in ((tf, indicators.filter(pl.col("timeframe") == tf)) for tf in all_timeframes)
    )
    del indicators
    text_mib = sum(len(r["model_text"]) for r in model_rows) / 2**20
    trees = {m.spec.model_id: m.model_text.count("\nTree=") for m in trained if m.spec.model_id in member_ids}
    chosen = [f"{tf}: {row['ensemble_id']} ({len(json.loads(row['members']))} members)" for tf, row in best.items()]
    say(f"  best ensembles: {', '.join(chosen)}")
    say(
        f"  {len(model_rows)} member models, {text_mib:.1f} MiB of model text, trees per model "
        f"{sorted(set(trees.values()))}; {recent.height:,} indicator rows ({bars} per series)"
    )

    def features() -> pl.DataFrame:
        rows = newest_rows(build_features(recent, [tf for tf in ml.timeframes if tf in best], all_timeframes))
        return rows.drop_nulls(list(BASE_FEATURES))

    def scored(rows: pl.DataFrame, loaded) -> pl.DataFrame:
        parts = [score(rows.filter(pl.col("timeframe") == tf), best[tf], loaded) for tf in best if tf in ml.timeframes]
        return pl.concat([p for p in parts if p.height]).select(PREDICTION_COLUMNS)

    def median_ms(work, runs: int) -> float:
        work()  # warm caches first
        times = []
        for _ in range(runs):
            began = time.perf_counter()
            work()
            times.append(time.perf_counter() - began)
        return statistics.median(times) * 1000

    loading_ms = median_ms(lambda: load_models(model_rows), LOADING_RUNS)
    loaded = load_models(model_rows)
    rows = features()
    result = scored(rows, loaded)
    expected = recent["symbol"].n_unique() * len(all_timeframes)
    if result.height != expected:
        raise SystemExit(f"scored {result.height} series, expected {expected}")
    scoring_ms = median_ms(lambda: scored(features(), loaded), SCORING_RUNS)
    features_ms = median_ms(features, SCORING_RUNS)
    score_only_ms = median_ms(lambda: scored(rows, loaded), SCORING_RUNS)
    say(
        f"  (a) scoring {result.height} series: {scoring_ms:.1f} ms (median of {SCORING_RUNS}; features "
        f"{features_ms:.1f} ms + predict.score {score_only_ms:.1f} ms) (target <= {TARGET_SCORING_MS:.0f} ms: "
        f"{'met' if scoring_ms <= TARGET_SCORING_MS else 'NOT met'})"
    )
    say(f"  (b) loading {len(model_rows)} boosters from their text: {loading_ms:.1f} ms (median of {LOADING_RUNS})")
    say(f"  (a) + (b): {scoring_ms + loading_ms:.1f} ms")
    return {
        "series": result.height,
        "member_models": len(model_rows),
        "model_text_mib": round(text_mib, 2),
        "scoring_ms": round(scoring_ms, 2),
        "features_ms": round(features_ms, 2),
        "score_only_ms": round(score_only_ms, 2),
        "loading_ms": round(loading_ms, 2),
        "peak_rss_mib": round(peak_rss_mib(), 1),
    }


# -- the parent -------------------------------------------------------------------------------


def run_child(part: str, indicators_path: Path) -> dict:
    """`part` in a fresh interpreter; its lines echoed as they come, its figures from its last line."""
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("TRACER_")}, "PYTHONWARNINGS": "ignore"}
    began = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, __file__, part, str(indicators_path)], cwd=REPO, env=env, stdout=subprocess.PIPE, text=True
    )
    figures = None
    assert child.stdout is not None
    for line in child.stdout:
        if line.startswith(RESULT):
            figures = json.loads(line[len(RESULT) :])
        else:
            print(line, end="", flush=True)
    if child.wait() != 0 or figures is None:
        raise SystemExit(f"the {part} measurement failed (exit status {child.returncode})")
    figures["child_wall_seconds"] = round(time.perf_counter() - began, 2)
    say(
        f"  ({part}: child process {figures['child_wall_seconds']:.1f} s wall, "
        f"peak RSS {figures['peak_rss_mib']:.0f} MiB)"
    )
    return figures


def main() -> int:
    warnings.filterwarnings("ignore")
    began = time.perf_counter()
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="tracer-bench-ml-") as scratch:
        path = Path(scratch) / "indicators.parquet"
        setup = build_indicators(path)
        say(
            f"candles + indicators {setup['first']} .. {setup['last']}, rows {setup['rows_per_timeframe']}: "
            f"{time.perf_counter() - began:.1f} s (set-up, not measured)"
        )
        say("1. one model, 5m horizon 12 `full`, every fold and the deployed fit:")
        one = run_child("one_model", path)
        say("2. the default grid and its ensembles:")
        whole = run_child("grid", path)
        say("3. inference, one tick of 6 symbols x 4 timeframes:")
        tick = run_child("inference", path)
    wall = time.perf_counter() - began
    load = os.getloadavg()
    say(
        f"benchmark wall time {wall:.0f} s; load average at the start {load_start[0]:.1f}, at the end "
        f"{load[0]:.1f} (1 min) on {os.cpu_count()} CPUs: others' work on the machine slows every figure"
    )
    grid_ok = whole["total_seconds"] <= TARGET_GRID_SECONDS
    rss_ok = whole["peak_rss_mib"] <= TARGET_GRID_RSS_MIB
    print(
        json.dumps(
            {
                "benchmark": "ml_training_and_inference",
                "one_model_id": one["model_id"],
                "one_model_rows": one["rows"],
                "one_model_walk_forward_seconds": one["walk_forward_seconds"],
                "one_model_peak_rss_mib": one["peak_rss_mib"],
                "grid_models": whole["models"],
                "grid_ensembles": whole["ensembles"],
                "grid_dataset_seconds": whole["dataset_seconds"],
                "grid_training_seconds": whole["training_seconds"],
                "grid_ensembles_seconds": whole["ensembles_seconds"],
                "grid_total_seconds": whole["total_seconds"],
                "grid_peak_rss_mib": whole["peak_rss_mib"],
                "target_grid_seconds": TARGET_GRID_SECONDS,
                "target_grid_rss_mib": TARGET_GRID_RSS_MIB,
                "grid_seconds_within_target": grid_ok,
                "grid_rss_within_target": rss_ok,
                "tick_series": tick["series"],
                "tick_scoring_ms": tick["scoring_ms"],
                "tick_features_ms": tick["features_ms"],
                "tick_score_only_ms": tick["score_only_ms"],
                "tick_loading_ms": tick["loading_ms"],
                "tick_scoring_plus_loading_ms": round(tick["scoring_ms"] + tick["loading_ms"], 2),
                "target_scoring_ms": TARGET_SCORING_MS,
                "scoring_within_target": tick["scoring_ms"] <= TARGET_SCORING_MS,
                "inference_peak_rss_mib": tick["peak_rss_mib"],
                "wall_seconds": round(wall, 1),
                "load_average_start": round(load_start[0], 2),
                "load_average_end": round(load[0], 2),
                "cpus": os.cpu_count(),
                "model_metrics": whole["model_metrics"],
                "ensemble_metrics": whole["ensemble_metrics"],
            }
        )
    )
    return 0


def child_main(part: str, indicators_path: str) -> int:
    warnings.filterwarnings("ignore")
    figures = {"one_model": one_model, "grid": grid, "inference": inference}[part](Path(indicators_path))
    print(RESULT + json.dumps(figures, default=str), flush=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] in PARTS:
        sys.exit(child_main(sys.argv[1], sys.argv[2]))
    sys.exit(main())
