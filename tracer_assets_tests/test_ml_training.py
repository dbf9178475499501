"""Training the model grid on real candles: determinism, a label-shuffle null, purged folds,
a stacker that only ever learns from out-of-fold rows of earlier folds, the ensemble methods
on hand-built probabilities, and baselines scored on the model's own rows.

The data is a small real slice of the bundled Binance 5m candles (BTC, ETH, SOL, January to
May 2024) resampled to 1h (the model timeframe) and 4h (its context): about 10k labelled rows,
so one training (3 folds + the deployed model, 30 rounds) takes a second or two.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from datetime import UTC, datetime

import numpy as np
import polars as pl
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score

from tracer_assets.data import BUNDLED_REPLAY_DIR
from tracer_assets.features.indicators import compute_indicators
from tracer_assets.ml import settings as ml_settings
from tracer_assets.ml.dataset import add_labels, build_features
from tracer_assets.ml.ensembles import (
    Ensemble,
    build_ensembles,
    combine,
    fit_stacker,
    stacked_probabilities,
    stacker_training_rows,
)
from tracer_assets.ml.metrics import classification_metrics
from tracer_assets.ml.train import ModelSpec, Target, TrainedModel, epoch_seconds, prepare_target, train_model
from tracer_assets.vocabulary import CLASS_LABELS

SYMBOLS = ("BTC/USDT", "ETH/USDT", "SOL/USDT")
ALL_TIMEFRAMES = ("1h", "4h")
TIMEFRAME = "1h"
HORIZON = 4
FEE = 0.001
END = datetime(2024, 6, 1, tzinfo=UTC)
K = len(CLASS_LABELS)
FAST = {
    "TRACER_ML_TIMEFRAMES": TIMEFRAME,
    "TRACER_ML_HORIZONS": str(HORIZON),
    "TRACER_ML_FEATURE_SETS": "full,no_context,price",
    "TRACER_ML_ROUNDS": "30",
    "TRACER_ML_FOLDS": "3",
    # One thread: LightGBM's OpenMP threads spin when the machine is busy (a test run beside
    # others); the model is deterministic for any fixed thread count.
    "TRACER_ML_THREADS": "1",
}


MODEL_PREDICTORS = ("model", "majority", "last_return")
ENSEMBLE_PREDICTORS = ("ensemble", "majority", "last_return")


def quiet(_: str) -> None:
    pass


def settings(**overrides: str) -> ml_settings.MlSettings:
    return ml_settings.load({**FAST, **overrides}, ALL_TIMEFRAMES)


def resampled_candles() -> pl.DataFrame:
    """The 5m candles of SYMBOLS before END, resampled to every timeframe of ALL_TIMEFRAMES."""
    frames = []
    for symbol in SYMBOLS:
        raw = pl.read_parquet(BUNDLED_REPLAY_DIR / f"{symbol.replace('/', '_')}-5m.parquet")
        raw = raw.filter(pl.col("date") < END).sort("date")
        for timeframe in ALL_TIMEFRAMES:
            bars = raw.group_by_dynamic("date", every=timeframe, closed="left", label="left").agg(
                pl.col("open").first(),
                pl.col("high").max(),
                pl.col("low").min(),
                pl.col("close").last(),
                pl.col("volume").sum(),
            )
            frames.append(
                bars.rename({"date": "ts"})
                .with_columns(symbol=pl.lit(symbol), timeframe=pl.lit(timeframe))
                .select("symbol", "timeframe", "ts", "open", "high", "low", "close", "volume")
            )
    return pl.concat(frames)


@pytest.fixture(scope="module")
def target() -> Target:
    ml = settings()
    indicators = compute_indicators(resampled_candles())
    features = build_features(indicators, [TIMEFRAME], ALL_TIMEFRAMES)
    dataset = add_labels(features, [HORIZON], ml.label_thresholds, FEE, ALL_TIMEFRAMES)
    return prepare_target(dataset, TIMEFRAME, HORIZON, ml)


@pytest.fixture(scope="module")
def models(target: Target) -> dict[str, TrainedModel]:
    ml = settings()
    return {
        feature_set: train_model(target, ModelSpec(TIMEFRAME, HORIZON, feature_set), ALL_TIMEFRAMES, ml, quiet)
        for feature_set in ml.feature_sets
    }


@pytest.fixture(scope="module")
def ensembles(target: Target, models: dict[str, TrainedModel]) -> dict[str, Ensemble]:
    return {e.method: e for e in build_ensembles(target, list(models.values()), max_members=3)}


def result(rows: list[dict], predictor: str, fold: str) -> dict:
    return next(r for r in rows if r["predictor"] == predictor and r["fold"] == fold)


def test_the_slice_is_big_enough_to_mean_something(target: Target):
    """Guards the other tests: three symbols pooled, every class present, three folds of ~2.5k rows."""
    assert target.rows["symbol"].unique().sort().to_list() == sorted(SYMBOLS)
    assert target.rows.height > 9000
    assert (np.bincount(target.y, minlength=K) > 300).all()
    assert [f.number for f in target.folds] == [1, 2, 3]
    assert all(len(f.test) > 2000 for f in target.folds)


# ---------------------------------------------------------------------------------------------
# 1. Determinism
# ---------------------------------------------------------------------------------------------


def test_training_is_deterministic_and_the_seed_matters(target: Target, models: dict[str, TrainedModel]):
    spec = ModelSpec(TIMEFRAME, HORIZON, "price")
    first = models["price"]
    again = train_model(target, spec, ALL_TIMEFRAMES, settings(), quiet)

    assert again.content_hash == first.content_hash
    assert again.content_hash == hashlib.sha256(again.model_text.encode()).hexdigest()
    assert again.model_text == first.model_text
    assert again.data_fingerprint == first.data_fingerprint
    np.testing.assert_array_equal(again.oof, first.oof)  # NaN == NaN here: the same rows untested
    assert again.results == first.results

    reseeded = train_model(target, spec, ALL_TIMEFRAMES, settings(TRACER_ML_SEED="8"), quiet)
    assert reseeded.data_fingerprint == first.data_fingerprint  # same data, other seed
    assert reseeded.content_hash != first.content_hash
    assert reseeded.parameters["seed"] == 8 and first.parameters["seed"] == 7


# ---------------------------------------------------------------------------------------------
# 2. Label shuffle
# ---------------------------------------------------------------------------------------------


def oof_f1(y: np.ndarray, predicted: np.ndarray, tested: np.ndarray) -> float:
    return float(f1_score(y[tested], predicted[tested], labels=list(range(K)), average="macro", zero_division=0))


def test_shuffled_labels_score_within_the_chance_band(target: Target):
    """With the labels permuted, the out-of-fold F1 is what a predictor with no information scores.

    The chance band, on the same folds and rows:
    - upper edge: the highest of 20 random predictions drawn, per fold, with the fold's training
      class frequencies. Among predictors independent of the label, expected F1 macro is
      mean_i 2 p_i q_i / (p_i + q_i) for label shares p and prediction shares q, which is maximal
      at q = p, where it is mean_i p_i = 1/5: these draws are the best a no-information predictor
      can expect to do, and their spread is the sampling noise.
    - lower edge: the majority predictor (the training mode everywhere), less four standard
      deviations of the draws. That is what a no-information model collapses to (its probabilities
      stay near the prior, whose argmax is the mode), and F1 macro punishes it for never naming
      the other four classes.
    A model that learned from leaked labels scores above the band; one that sees a feature equal
    to the label plus noise does, by more than the band's width, so this test can fail.
    """
    ml = settings()
    spec = ModelSpec(TIMEFRAME, HORIZON, "price")
    rng = np.random.default_rng(20240601)
    y_true = target.y
    shuffled_y = rng.permutation(y_true)
    shuffled = Target(
        target.timeframe,
        target.horizon,
        target.rows.with_columns(label=pl.Series(shuffled_y, dtype=target.rows["label"].dtype)),
        target.folds,
    )
    model = train_model(shuffled, spec, ALL_TIMEFRAMES, ml, quiet)
    f1_shuffled = result(model.results, "model", "overall")["f1_macro"]
    tested = shuffled.fold_of_row() > 0
    assert f1_shuffled == pytest.approx(oof_f1(shuffled_y, model.oof.argmax(axis=1), tested))

    draws = []
    for _ in range(20):
        predicted = np.zeros(len(shuffled_y), dtype=np.int64)
        for fold in shuffled.folds:
            shares = np.bincount(shuffled_y[fold.train], minlength=K) / len(fold.train)
            predicted[fold.test] = rng.choice(K, size=len(fold.test), p=shares)
        draws.append(oof_f1(shuffled_y, predicted, tested))
    draws = np.array(draws)
    majority = result(model.results, "majority", "overall")["f1_macro"]
    lower, upper = majority - 4 * draws.std(), draws.max()
    assert 0.18 < draws.mean() < 0.22  # ~1/5, as the analytic bound says
    assert lower <= f1_shuffled <= upper, (lower, f1_shuffled, upper)
    # Nor do its probabilities beat the prior's (the majority baseline's smoothed training
    # frequencies) in log loss: the real models do, by about 0.018 here; a leak would too.
    log_loss = {p: result(model.results, p, "overall")["log_loss"] for p in ("model", "majority")}
    assert log_loss["model"] > log_loss["majority"] - 0.005, log_loss

    # The same training with one feature replaced by the true label plus noise: far above the band.
    planted_rows = target.rows.with_columns(ret_1=pl.Series(y_true + rng.normal(0.0, 1.0, len(y_true))))
    planted_target = Target(target.timeframe, target.horizon, planted_rows, target.folds)
    planted = train_model(planted_target, spec, ALL_TIMEFRAMES, ml, quiet)
    f1_planted = result(planted.results, "model", "overall")["f1_macro"]
    assert f1_planted > upper
    assert upper - lower < f1_planted - f1_shuffled, (lower, upper, f1_shuffled, f1_planted)


# ---------------------------------------------------------------------------------------------
# 3. Purged folds
# ---------------------------------------------------------------------------------------------


def test_training_rows_never_overlap_the_test_block(target: Target, models: dict[str, TrainedModel]):
    feature_time = epoch_seconds(target.rows["feature_time"])
    label_end = epoch_seconds(target.rows["label_end"])
    for fold in target.folds:
        test_start = int(feature_time[fold.test].min())
        test_label_end = int(label_end[fold.test].max())
        assert (fold.test_start, fold.test_label_end) == (test_start, test_label_end)
        train = fold.train
        assert not ((feature_time[train] <= test_label_end) & (label_end[train] >= test_start)).any()
        assert (label_end[train] < test_start).all()  # walk-forward: every label known before the test
        # The purge is needed and exact: the candidates (rows before the block) are train + purged,
        # and every purged row's label runs into the test block.
        candidates = np.flatnonzero(feature_time < test_start)
        np.testing.assert_array_equal(np.union1d(train, fold.purged), candidates)
        assert len(fold.purged) > 0
        assert (label_end[fold.purged] >= test_start).all()
        assert len(fold.embargoed) == 0
    for model in models.values():
        for fold in target.folds:
            for predictor in MODEL_PREDICTORS:
                row = result(model.results, predictor, str(fold.number))
                assert row["purged_rows"] == len(fold.purged) > 0
                assert row["train_rows"] == len(fold.train)
                assert row["embargoed_rows"] == 0
                assert (row["test_start"], row["test_end"]) == (fold.test_start, fold.test_end)


def test_a_fold_model_learns_nothing_from_rows_outside_its_training_set(
    target: Target, models: dict[str, TrainedModel]
):
    """Scramble the labels of every row outside fold k's training rows (its purged rows, its test
    block, the future): fold k's out-of-fold probabilities stay bit for bit the same, while a later
    fold, which trains on some of those rows, changes (so the scramble is not a no-op)."""
    ml = settings()
    spec = ModelSpec(TIMEFRAME, HORIZON, "price")
    clean = models["price"]
    y = target.y
    for fold in target.folds[:2]:
        outside = np.setdiff1d(np.arange(len(y)), fold.train)
        scrambled = y.copy()
        scrambled[outside] = (y[outside] + 1 + np.arange(len(outside)) % (K - 1)) % K  # always a different class
        rows = target.rows.with_columns(label=pl.Series(scrambled, dtype=target.rows["label"].dtype))
        scrambled_target = Target(target.timeframe, target.horizon, rows, target.folds)
        model = train_model(scrambled_target, spec, ALL_TIMEFRAMES, ml, quiet)
        np.testing.assert_array_equal(model.oof[fold.test], clean.oof[fold.test])
        later = target.folds[fold.number]  # the next fold: trains on this fold's purged rows and test block
        assert not np.array_equal(model.oof[later.test], clean.oof[later.test])


# ---------------------------------------------------------------------------------------------
# 4. The stacker only sees out-of-fold predictions of earlier folds
# ---------------------------------------------------------------------------------------------


def test_stacker_rows_are_earlier_out_of_fold_rows_with_known_labels(target: Target, ensembles: dict[str, Ensemble]):
    stacked = ensembles["stacked"]
    fold_of_row = target.fold_of_row()
    label_end = epoch_seconds(target.rows["label_end"])
    assert sorted(stacked.stacker_rows) == [f.number for f in target.folds[1:]]
    for fold in target.folds[1:]:
        rows = stacked.stacker_rows[fold.number]
        assert len(rows) > 1000
        assert ((fold_of_row[rows] >= 1) & (fold_of_row[rows] < fold.number)).all()  # not block 0, not fold k+
        assert (label_end[rows] < fold.test_start).all()
        assert np.intersect1d(rows, fold.test).size == 0
        np.testing.assert_array_equal(rows, stacker_training_rows(target, fold.number, fold_of_row))
        # Every earlier out-of-fold row whose label is known in time is used (nothing needlessly dropped).
        eligible = np.flatnonzero((fold_of_row >= 1) & (fold_of_row < fold.number) & (label_end < fold.test_start))
        np.testing.assert_array_equal(rows, eligible)


def test_members_are_nan_outside_out_of_fold_rows_and_the_stacker_fits(
    target: Target, models: dict[str, TrainedModel], ensembles: dict[str, Ensemble]
):
    """NaN on the rows never tested out of fold is a tripwire: LogisticRegression refuses NaN, so a
    stacker that read a block-0 row (or any in-sample prediction stored there) would crash."""
    fold_of_row = target.fold_of_row()
    for model in models.values():
        assert np.isnan(model.oof[fold_of_row == 0]).all()
        assert np.isfinite(model.oof[fold_of_row > 0]).all()
        np.testing.assert_allclose(model.oof[fold_of_row > 0].sum(axis=1), 1.0)
    with pytest.raises(ValueError, match="NaN"):
        fit_stacker(np.hstack([m.oof for m in models.values()]), target.y)
    stacked = ensembles["stacked"]
    assert stacked.stacker is not None and len(stacked.stacker["coef"][0]) == K * len(models)
    members = [models[model_id.rsplit("-", 1)[1]] for model_id in stacked.members]
    every_oof = np.flatnonzero(fold_of_row >= 1)
    assert stacked.stacker == fit_stacker(np.hstack([m.oof[every_oof] for m in members]), target.y[every_oof])


def test_corrupting_fold_k_predictions_changes_nothing_in_the_fold_k_stacker(
    target: Target, models: dict[str, TrainedModel], ensembles: dict[str, Ensemble]
):
    """Replace every member's probabilities on fold k and later with random ones: the stacker fitted
    for fold k is the one fitted on clean probabilities (its fold-k scores are those of the clean
    stacker applied to the corrupted inputs), and the stacked scores of earlier folds do not move."""
    clean = ensembles["stacked"]
    member_models = [models[model_id.rsplit("-", 1)[1]] for model_id in clean.members]
    fold_of_row = target.fold_of_row()
    y, forward = target.y, target.forward_return
    rng = np.random.default_rng(5)
    for fold in target.folds[1:]:
        corrupt_rows = fold_of_row >= fold.number
        corrupted = []
        for member in member_models:
            oof = member.oof.copy()
            oof[corrupt_rows] = rng.dirichlet(np.ones(K), size=int(corrupt_rows.sum()))
            corrupted.append(dataclasses.replace(member, oof=oof))
        rows = clean.stacker_rows[fold.number]
        clean_stacker = fit_stacker(np.hstack([m.oof[rows] for m in member_models]), y[rows])
        assert fit_stacker(np.hstack([m.oof[rows] for m in corrupted]), y[rows]) == clean_stacker

        dirty = {e.method: e for e in build_ensembles(target, corrupted, max_members=3)}["stacked"]
        assert dirty.members == clean.members
        np.testing.assert_array_equal(dirty.stacker_rows[fold.number], rows)
        test = np.flatnonzero(fold_of_row == fold.number)
        predicted, proba = combine("stacked", [m.oof[test] for m in corrupted], clean_stacker)
        expected = classification_metrics(y[test], proba, forward[test], predicted)
        got = result(dirty.results, "ensemble", str(fold.number))
        assert got["metrics"] == expected
        assert got["metrics"] != result(clean.results, "ensemble", str(fold.number))["metrics"]  # inputs did change
        for earlier in target.folds[1 : fold.number - 1]:
            assert result(dirty.results, "ensemble", str(earlier.number)) == result(
                clean.results, "ensemble", str(earlier.number)
            )


# ---------------------------------------------------------------------------------------------
# 5. combine on hand-built probabilities
# ---------------------------------------------------------------------------------------------


def members_for_vote() -> list[np.ndarray]:
    """Three members, three rows.

    Row 0: two members weakly say bear (1), one strongly says bull (3): the mean's argmax is bull,
    the vote is bear.
    Row 1: a 1-1-1 tie between strong_bear, bear and bull, each member also giving 0.29 to
    `other`, which therefore has the highest mean but no vote; the tie goes to bull (the tied class
    with the higher mean), never to `other`.
    Row 2: unanimous strong_bull.
    """
    a = [[0.10, 0.35, 0.20, 0.20, 0.15], [0.36, 0.00, 0.29, 0.00, 0.35], [0.0, 0.0, 0.0, 0.1, 0.9]]
    b = [[0.10, 0.35, 0.20, 0.20, 0.15], [0.00, 0.30, 0.29, 0.29, 0.12], [0.0, 0.0, 0.1, 0.0, 0.9]]
    c = [[0.00, 0.05, 0.05, 0.90, 0.00], [0.05, 0.05, 0.29, 0.31, 0.30], [0.0, 0.0, 0.0, 0.0, 1.0]]
    return [np.array(m, dtype=np.float64) for m in (a, b, c)]


def test_combine_mean_and_vote():
    members = members_for_vote()
    a, b, c = members
    for member in members:
        np.testing.assert_allclose(member.sum(axis=1), 1.0)
    assert [m[1].argmax() for m in members] == [0, 1, 3]

    predicted, proba = combine("mean", members)
    np.testing.assert_allclose(proba, (a + b + c) / 3)
    np.testing.assert_array_equal(predicted, ((a + b + c) / 3).argmax(axis=1))
    assert predicted.tolist() == [3, 2, 4]

    voted, vote_proba = combine("vote", members)
    np.testing.assert_allclose(vote_proba, (a + b + c) / 3)  # a vote reports the mean's probabilities
    mean_row1 = proba[1]
    assert mean_row1[3] > mean_row1[0] and mean_row1[3] > mean_row1[1]  # bull leads the tied classes
    assert voted.tolist() == [1, 3, 4]
    assert voted[0] != predicted[0]

    with pytest.raises(ValueError, match="stacker"):
        combine("stacked", members)
    with pytest.raises(ValueError, match="unknown ensemble method"):
        combine("median", members)


def softmax(logits: np.ndarray) -> np.ndarray:
    weights = np.exp(logits - logits.max(axis=1, keepdims=True))
    return weights / weights.sum(axis=1, keepdims=True)


def test_combine_stacked_applies_the_stored_stacker_and_maps_absent_classes_to_zero():
    rng = np.random.default_rng(3)
    members = [rng.dirichlet(np.ones(K), size=6) for _ in range(2)]
    x = np.hstack(members)
    stacker = {
        "classes": [0, 2, 4],  # bear and bull were absent from the stacker's training rows
        "coef": rng.normal(size=(3, 2 * K)).tolist(),
        "intercept": [0.3, -0.2, 0.1],
    }
    predicted, proba = combine("stacked", members, stacker)
    expected = softmax(x @ np.asarray(stacker["coef"]).T + np.asarray(stacker["intercept"]))
    np.testing.assert_allclose(proba[:, [0, 2, 4]], expected, rtol=1e-12)
    assert (proba[:, [1, 3]] == 0).all()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_array_equal(predicted, np.array([0, 2, 4])[expected.argmax(axis=1)])


@pytest.mark.parametrize("classes", [[0, 1, 2, 3, 4], [1, 2, 3], [2, 3]])
def test_stored_stacker_reproduces_sklearn_predict_proba(classes: list[int]):
    """The numbers stored by fit_stacker, applied with numpy, give sklearn's own probabilities
    (including its binary case, stored as one row of coefficients)."""
    rng = np.random.default_rng(len(classes))
    x = rng.dirichlet(np.ones(K), size=400)
    y = np.array(classes)[(x[:, : len(classes)].argmax(axis=1) + rng.integers(0, 2, 400)) % len(classes)]
    stacker = fit_stacker(x, y)
    assert stacker["classes"] == classes
    reference = LogisticRegression(max_iter=300).fit(x, y).predict_proba(x)
    proba = stacked_probabilities(x, stacker)
    np.testing.assert_allclose(proba[:, classes], reference, atol=1e-10)
    assert (np.delete(proba, classes, axis=1) == 0).all()


# ---------------------------------------------------------------------------------------------
# 6. Baselines on the same rows
# ---------------------------------------------------------------------------------------------


def test_baselines_are_scored_on_the_model_rows(
    target: Target, models: dict[str, TrainedModel], ensembles: dict[str, Ensemble]
):
    y = target.y
    tested = int((target.fold_of_row() > 0).sum())
    for model in models.values():
        for fold in target.folds:
            counts = {p: result(model.results, p, str(fold.number))["rows"] for p in MODEL_PREDICTORS}
            assert set(counts.values()) == {len(fold.test)}, counts
            # The majority baseline predicts the mode of the fold's TRAINING rows, not of its test rows.
            majority = json.loads(result(model.results, "majority", str(fold.number))["metrics"])
            predicted_counts = np.array(majority["confusion"]).sum(axis=0)
            assert predicted_counts[np.bincount(y[fold.train], minlength=K).argmax()] == len(fold.test)
        overall = {p: result(model.results, p, "overall")["rows"] for p in MODEL_PREDICTORS}
        assert set(overall.values()) == {tested}
    for ensemble in ensembles.values():
        for fold in target.folds[1:]:
            counts = {p: result(ensemble.results, p, str(fold.number))["rows"] for p in ENSEMBLE_PREDICTORS}
            assert set(counts.values()) == {len(fold.test)}, counts
        evaluated = sum(len(f.test) for f in target.folds[1:])
        assert {result(ensemble.results, p, "overall")["rows"] for p in ENSEMBLE_PREDICTORS} == {evaluated}
