"""Correcting a selection for the number of variants tried: the deflated Sharpe ratio.

Bailey and López de Prado, "The Deflated Sharpe Ratio" (2014). Of N variants tried, the best
one's Sharpe ratio is inflated by the search. The DSR is the probability that the selected
variant's true Sharpe ratio is above the one the best of N worthless variants would show
(SR0), given the length, skewness and kurtosis of its returns:

    SR0 = sqrt(V) ((1 - g) Z^-1(1 - 1/N) + g Z^-1(1 - 1/(N e)))     g: Euler-Mascheroni
    DSR = Z((SR - SR0) sqrt(T - 1) / sqrt(1 - skew SR + (kurtosis - 1) / 4 SR^2))

SR, SR0 and V (the variance of the trials' Sharpe ratios) are per bar, not annualized;
kurtosis is Pearson's (3 for normal returns). With one trial SR0 = 0 and the DSR is the
probabilistic Sharpe ratio against 0. Pure: numpy and scipy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

EULER_GAMMA = 0.5772156649015329


@dataclass(frozen=True)
class ReturnStats:
    """What the DSR needs of a return series: per-bar Sharpe ratio, length, skew, kurtosis."""

    sharpe: float
    n_obs: int
    skew: float
    kurtosis: float


def return_stats(returns: np.ndarray) -> ReturnStats | None:
    """Per-bar statistics of `returns`; None when there are fewer than 3 or they never vary."""
    values = np.asarray(returns, dtype=np.float64)
    values = values[np.isfinite(values)]
    # imported here: scipy.stats costs ~0.5 s to import, and every run process imports the definitions
    from scipy import stats

    if values.size < 3:
        return None
    std = float(values.std(ddof=1))
    if std == 0.0:
        return None
    return ReturnStats(
        sharpe=float(values.mean()) / std,
        n_obs=int(values.size),
        skew=float(stats.skew(values)),
        kurtosis=float(stats.kurtosis(values, fisher=False)),
    )


def expected_max_sharpe(n_trials: int, sharpe_variance: float) -> float:
    """SR0: the Sharpe ratio the best of `n_trials` variants with true Sharpe 0 is expected to show."""
    if n_trials < 1:
        raise ValueError(f"n_trials={n_trials}: at least one trial was made to select anything")
    if not math.isfinite(sharpe_variance) or sharpe_variance < 0:
        raise ValueError(f"sharpe_variance={sharpe_variance}: must be a finite number >= 0")
    if n_trials == 1:
        return 0.0
    from scipy import stats  # imported here: ~0.5 s, and every run process imports the definitions

    quantiles = stats.norm.ppf([1 - 1 / n_trials, 1 - 1 / (n_trials * math.e)])
    return math.sqrt(sharpe_variance) * ((1 - EULER_GAMMA) * quantiles[0] + EULER_GAMMA * quantiles[1])


def deflated_sharpe(selected: ReturnStats, n_trials: int, sharpe_variance: float) -> float:
    """The probability (0..1) that the selected variant's true per-bar Sharpe exceeds SR0."""
    from scipy import stats  # imported here: ~0.5 s, and every run process imports the definitions

    sr0 = expected_max_sharpe(n_trials, sharpe_variance)
    sr = selected.sharpe
    denominator = 1 - selected.skew * sr + (selected.kurtosis - 1) / 4 * sr * sr
    if selected.n_obs < 2 or denominator <= 0:
        raise ValueError(f"cannot deflate: {selected.n_obs} returns, variance term {denominator:.3g}")
    return float(stats.norm.cdf((sr - sr0) * math.sqrt(selected.n_obs - 1) / math.sqrt(denominator)))


def trial_sharpe_variance(sharpes: Sequence[float | None]) -> float:
    """V: the variance (ddof=1) of the trials' per-bar Sharpe ratios; 0 with fewer than two."""
    values = np.array([s for s in sharpes if s is not None and math.isfinite(s)], dtype=np.float64)
    return float(values.var(ddof=1)) if values.size >= 2 else 0.0
