"""The deflated Sharpe ratio against Bailey and López de Prado's own numerical example, and the
statistics Tracer feeds it."""

import math

import numpy as np
import pytest

from tracer_assets.research.selection import (
    ReturnStats,
    deflated_sharpe,
    expected_max_sharpe,
    return_stats,
    trial_sharpe_variance,
)

DAYS = 250  # the paper's year


def test_the_papers_numerical_example():
    # "The Deflated Sharpe Ratio" (2014), section 4: an annualized SR of 2.5 over 5 years of daily
    # returns (T = 1,250), skewness -3, kurtosis 10, selected from N = 100 trials whose annualized
    # Sharpe ratios have variance 0.5. The paper finds SR0 = 0.1132 per day and DSR = 0.9004.
    selected = ReturnStats(sharpe=2.5 / math.sqrt(DAYS), n_obs=1250, skew=-3.0, kurtosis=10.0)
    assert expected_max_sharpe(100, 0.5 / DAYS) == pytest.approx(0.1132, abs=5e-5)
    assert deflated_sharpe(selected, 100, 0.5 / DAYS) == pytest.approx(0.9004, abs=5e-5)


def test_more_trials_deflate_more_and_one_trial_is_the_probabilistic_sharpe_ratio():
    selected = ReturnStats(sharpe=0.05, n_obs=2000, skew=0.0, kurtosis=3.0)
    figures = [deflated_sharpe(selected, n, 0.001) for n in (1, 10, 100, 1000)]
    assert figures == sorted(figures, reverse=True) and figures[0] > 0.98 > figures[-1]
    # N = 1: SR0 = 0; with normal returns the PSR is Z(SR sqrt(T - 1) / sqrt(1 + SR^2 / 2)).
    expected = 0.5 * (1 + math.erf(0.05 * math.sqrt(1999) / math.sqrt(1 + 0.05**2 / 2) / math.sqrt(2)))
    assert figures[0] == pytest.approx(expected, rel=1e-12)


def test_return_stats_are_per_bar_with_pearson_kurtosis():
    rng = np.random.default_rng(3)
    returns = rng.normal(0.001, 0.01, 20_000)
    stats = return_stats(returns)
    assert stats.n_obs == 20_000
    assert stats.sharpe == pytest.approx(returns.mean() / returns.std(ddof=1))
    assert stats.kurtosis == pytest.approx(3.0, abs=0.1) and stats.skew == pytest.approx(0.0, abs=0.05)
    assert return_stats(np.array([0.01, np.nan])) is None  # too few
    assert return_stats(np.zeros(50)) is None  # never varies: no Sharpe ratio


def test_refusals_and_the_trials_variance():
    with pytest.raises(ValueError, match="n_trials=0: at least one trial"):
        expected_max_sharpe(0, 0.1)
    with pytest.raises(ValueError, match="sharpe_variance=-1"):
        expected_max_sharpe(5, -1.0)
    assert trial_sharpe_variance([0.1, None, 0.3, float("nan")]) == pytest.approx(0.02)
    assert trial_sharpe_variance([0.1]) == 0.0
