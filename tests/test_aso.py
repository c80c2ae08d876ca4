"""ASO against its reference implementation, deepsig 1.2.8, on the same data; and its type I error under H0."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from steadytune.analysis.aso import BETTER_BELOW, aso, violation_ratio

deepsig = pytest.importorskip("deepsig", reason="deepsig is the reference implementation (a dev dependency)")
from deepsig.aso import compute_violation_ratio  # noqa: E402

# (runs of A, runs of B, shift of A's mean, sd): A +2 points with sd 3 is the example.
DATA_SETS = [(5, 5, 2.0, 3.0), (25, 25, 2.0, 3.0), (5, 8, 0.0, 3.0), (10, 10, 5.0, 3.0), (12, 20, 1.0, 4.0)]
SEEDS = 12  # our eps_min over this many bootstrap seeds gives its noise
ITERATIONS = 500  # bootstrap iterations on both sides (deepsig's default 1,000 takes it ~5 s a call here)


def _scores(case: int):
    n, m, shift, sd = DATA_SETS[case]
    rng = np.random.default_rng(100 + case)
    return rng.normal(70 + shift, sd, n), rng.normal(70, sd, m)


@pytest.mark.parametrize("case", range(len(DATA_SETS)))
def test_violation_ratio_equals_deepsig_exactly(case):
    a, b = _scores(case)
    assert float(violation_ratio(a, b)) == compute_violation_ratio(a, b, dt=0.005)
    assert float(violation_ratio(b, a)) == compute_violation_ratio(b, a, dt=0.005)


def test_ties_and_identical_arms_as_deepsig():
    a = np.array([0.5, 0.5, 0.6, 0.6, 0.7])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deepsig warns about its division by zero
        assert float(violation_ratio(a, a.copy())) == compute_violation_ratio(a, a.copy(), dt=0.005) == 0.5
    b = np.array([0.5, 0.55, 0.55, 0.6])
    assert float(violation_ratio(a, b)) == compute_violation_ratio(a, b, dt=0.005)


def _ours_within_noise_of_deepsig(a, b, **options) -> np.ndarray:
    """Our eps_min over SEEDS bootstrap seeds, checked against deepsig's (one bootstrap draw with the same spread
    as ours): within 4 sd of a difference, plus a hair."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = deepsig.aso(a, b, num_bootstrap_iterations=ITERATIONS, seed=0, show_progress=False, **options)
    ours = np.array([aso(a, b, num_bootstrap_iterations=ITERATIONS, seed=seed, **options) for seed in range(SEEDS)])
    tolerance = 4 * ours.std() * np.sqrt(1 + 1 / ours.size) + 0.005
    assert abs(reference - ours.mean()) <= tolerance, (reference, ours.mean(), ours.std())
    return ours


@pytest.mark.parametrize("case", range(len(DATA_SETS)))
def test_eps_min_agrees_with_deepsig_within_the_bootstrap_noise(case):
    _ours_within_noise_of_deepsig(*_scores(case), confidence_level=0.95)


def test_bonferroni_raises_the_confidence_as_deepsig():
    a, b = _scores(3)  # A clearly ahead: eps_min well inside (0, 1), where the correction shows
    ours = _ours_within_noise_of_deepsig(a, b, num_comparisons=6)
    assert ours.mean() > np.mean([aso(a, b, seed=seed) for seed in range(SEEDS)])  # a stricter bound


@pytest.mark.parametrize("runs, at_most", [(5, 0.07), (10, 0.05)])
def test_type_one_error_at_the_recommended_threshold(runs, at_most):
    """A and B from one distribution: how often eps_min < 0.2 calls A better, over 1,000 simulated studies.

    At 10 runs per arm it stays under 5% (3.4% over 4,000 simulations). At 5 runs it is 5.6% over 4,000
    simulations, and deepsig itself gives the same on the same data (see the closing note of the statistics
    issue): the test bounds it at 7% rather than calling a faithful deepsig wrong.
    """
    rng = np.random.default_rng(runs)
    better = [aso(rng.normal(0, 1, runs), rng.normal(0, 1, runs), seed=k) < BETTER_BELOW for k in range(1000)]
    assert np.mean(better) <= at_most, np.mean(better)


def test_a_clear_difference_is_found():
    rng = np.random.default_rng(1)
    a, b = rng.normal(75, 2, 10), rng.normal(65, 2, 10)
    assert aso(a, b) < BETTER_BELOW and aso(b, a) > 0.9
