"""The ml domain's settings: the model grid, the labels, the validation and the vote in the signals."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from tracer_assets.config import Row, SettingsError, defaults, number, positive, text
from tracer_assets.market.timeframes import parse_timeframe_list

FEATURE_SETS = ("full", "no_context", "price")

TABLE: tuple[Row, ...] = (
    (
        "TRACER_ML_TIMEFRAMES",
        "the resampled timeframes (15m, 1h, 4h)",
        "Timeframes that get models (each one of the market's timeframes); the others get no ML vote.",
    ),
    (
        "TRACER_ML_HORIZONS",
        "4,12",
        "Label horizons in bars: a model per timeframe x horizon x feature set (docs/ml.md).",
    ),
    (
        "TRACER_ML_FEATURE_SETS",
        "full,no_context",
        "Feature sets of the grid: `full`, `no_context` (no higher-timeframe context), `price` (returns, volatility).",
    ),
    (
        "TRACER_ML_LABEL_THRESHOLDS",
        "0.5,1.5",
        "Net forward return, in units of the series' volatility over the horizon, from which a label is bull/bear "
        "and strong_bull/strong_bear.",
    ),
    ("TRACER_ML_FOLDS", "4", "Walk-forward test blocks (the data is cut into folds + 1 blocks by time)."),
    ("TRACER_ML_ROUNDS", "100", "LightGBM boosting rounds per model."),
    (
        "TRACER_ML_THREADS",
        "1",
        "LightGBM threads: fixed, so a training gives the same model wherever it runs; one leaves a core to the "
        "trading loop while the models train.",
    ),
    ("TRACER_ML_SEED", "7", "LightGBM's seed."),
    (
        "TRACER_ML_ENSEMBLE_MEMBERS",
        "3",
        "Models per ensemble: the best by out-of-sample F1 of one timeframe and horizon.",
    ),
    (
        "TRACER_MODEL_MAX_AGE_HOURS",
        "26",
        "A prediction from a model trained longer ago than this is not used by the signals (the reason is recorded).",
    ),
    ("TRACER_ML_VOTE_WEIGHT", "1", "Weight of the ML vote in the signals' ensemble label, times its confidence."),
)
DEFAULTS = defaults(TABLE)


@dataclass(frozen=True)
class MlSettings:
    timeframes: tuple[str, ...]
    horizons: tuple[int, ...]
    feature_sets: tuple[str, ...]
    label_thresholds: tuple[float, float]  # (bull/bear, strong) in volatility units
    folds: int
    rounds: int
    threads: int
    seed: int
    ensemble_members: int
    model_max_age_hours: float
    vote_weight: float


def _integers(env: Mapping[str, str], name: str) -> tuple[int, ...]:
    raw = text(env, name, DEFAULTS[name])
    try:
        values = tuple(int(part) for part in raw.split(",") if part.strip())
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a comma-separated list of whole numbers like '4,12'") from None
    if not values or any(value < 1 for value in values) or len(set(values)) != len(values):
        raise SettingsError(f"{name}={raw!r}: give distinct whole numbers of bars, each at least 1")
    return values


def _thresholds(env: Mapping[str, str]) -> tuple[float, float]:
    name = "TRACER_ML_LABEL_THRESHOLDS"
    raw = text(env, name, DEFAULTS[name])
    try:
        weak, strong = (float(part) for part in raw.split(","))
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not two numbers like '0.5,1.5'") from None
    if not 0 < weak < strong:
        raise SettingsError(f"{name}={raw!r}: need 0 < bull/bear threshold < strong threshold")
    return weak, strong


def _feature_sets(env: Mapping[str, str]) -> tuple[str, ...]:
    raw = text(env, "TRACER_ML_FEATURE_SETS", DEFAULTS["TRACER_ML_FEATURE_SETS"])
    chosen = tuple(dict.fromkeys(part.strip() for part in raw.split(",") if part.strip()))
    unknown = [name for name in chosen if name not in FEATURE_SETS]
    if not chosen or unknown:
        raise SettingsError(f"TRACER_ML_FEATURE_SETS={raw!r}: each must be one of {', '.join(FEATURE_SETS)}")
    return chosen


def _timeframes(env: Mapping[str, str], market_timeframes: tuple[str, ...]) -> tuple[str, ...]:
    """Default: the market's timeframes above the base (the base alone when there are none): a 5m
    model costs three 15m ones to train (docs/ml.md)."""
    raw = text(env, "TRACER_ML_TIMEFRAMES", None)
    if raw is None:
        return market_timeframes[1:] or market_timeframes
    try:
        chosen = tuple(parse_timeframe_list(raw))
    except ValueError as error:
        raise SettingsError(f"TRACER_ML_TIMEFRAMES={raw!r}: {error}") from None
    missing = [tf for tf in chosen if tf not in market_timeframes]
    if missing:
        raise SettingsError(
            f"TRACER_ML_TIMEFRAMES={raw!r}: {', '.join(missing)} not among the market's timeframes "
            f"({', '.join(market_timeframes)}; TRACER_BASE_TIMEFRAME and TRACER_TIMEFRAMES)"
        )
    return chosen


def load(env: Mapping[str, str], market_timeframes: tuple[str, ...]) -> MlSettings:
    def count(name: str) -> int:
        return positive(name, number(env, name, DEFAULTS[name], int))

    members = count("TRACER_ML_ENSEMBLE_MEMBERS")
    return MlSettings(
        timeframes=_timeframes(env, market_timeframes),
        horizons=_integers(env, "TRACER_ML_HORIZONS"),
        feature_sets=_feature_sets(env),
        label_thresholds=_thresholds(env),
        folds=count("TRACER_ML_FOLDS"),
        rounds=count("TRACER_ML_ROUNDS"),
        threads=count("TRACER_ML_THREADS"),
        seed=number(env, "TRACER_ML_SEED", DEFAULTS["TRACER_ML_SEED"], int),
        ensemble_members=members,
        model_max_age_hours=positive(
            "TRACER_MODEL_MAX_AGE_HOURS",
            number(env, "TRACER_MODEL_MAX_AGE_HOURS", DEFAULTS["TRACER_MODEL_MAX_AGE_HOURS"], float),
        ),
        vote_weight=positive(
            "TRACER_ML_VOTE_WEIGHT", number(env, "TRACER_ML_VOTE_WEIGHT", DEFAULTS["TRACER_ML_VOTE_WEIGHT"], float)
        ),
    )
