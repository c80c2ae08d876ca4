"""Almost stochastic order (ASO), as deepsig computes it: is recipe A better than recipe B across seeds?

Dror et al. 2019 ("Deep Dominance"), in the form of deepsig >= 1.2.4 (`deepsig/aso.py`, Ulmer et al. 2022),
which is the reference implementation; `tests/test_aso.py` runs both on the same data.

- The violation ratio eps_W2(F, G) is the share of the squared distance between the empirical quantile
  functions F^-1 (of A) and G^-1 (of B) where A's quantile is below B's: 0 when A stochastically dominates B,
  1 when B dominates A. The integral runs over t = dt, 2 dt, ..., 1 - dt; the violation part skips its
  first point, and identical distributions give 0.5, both as in deepsig.
- Its spread comes from bootstrap: resample n runs of A and m runs of B (the observed sizes) and recompute
  the ratio; sigma = sd of sqrt(nm / (n + m)) (ratio* - ratio).
- eps_min = ratio - sigma / sqrt(nm / (n + m)) * Phi^-1(1 - confidence), clipped to [0, 1]: an upper bound
  on the violation ratio at that confidence. With k comparisons the confidence is raised Bonferroni-style to
  confidence + (1 - confidence) / k, as deepsig does.

When to trust it: call A better than B only when eps_min < 0.2 (`BETTER_BELOW`). deepsig's README
recommends this threshold, because the original 0.5 has a high type I error with few seeds (Ulmer et al.
2022). Even at 0.2 it is not a 5% test with few runs: with A and B from one distribution, eps_min < 0.2
said "A better" in 5.6-6.7% of simulations at 5 runs per arm (deepsig gives the same on the same data) and
3.4% at 10 (`tests/test_aso.py` bounds these at 7% and 5%). So `compare.compare_pairs` also asks a
permutation test to reject before it calls one recipe better, and never picks the direction from the data.
The code is deepsig's computation vectorized over bootstrap
draws (one sort per draw, no Python loop), which makes it about two orders of magnitude faster
(`benchmarks/aso_speed.py`).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats

BETTER_BELOW = 0.2  # eps_min under this says "A is better than B" (deepsig's recommendation)


def _quantiles(sorted_scores: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Empirical quantile function F^-1(t) = the ceil(n t)-th smallest score, for rows of sorted scores."""
    n = sorted_scores.shape[-1]
    index = np.clip(np.ceil(n * t).astype(int) - 1, 0, n - 1)
    return sorted_scores[..., index]


def violation_ratio(a: np.ndarray, b: np.ndarray, dt: float = 0.005) -> np.ndarray:
    """eps_W2(F_a, F_b) for rows (..., n) and (..., m) of scores; 0.5 where the two quantile functions agree."""
    t = np.arange(dt, 1, dt)
    f = _quantiles(np.sort(a, axis=-1), t)
    g = _quantiles(np.sort(b, axis=-1), t)
    diff = g - f
    total = np.sum(diff ** 2 * dt, axis=-1)
    violated = np.where(f >= g, 0.0, diff)
    violation = np.sum(violated[..., 1:] ** 2 * dt, axis=-1)
    return np.divide(violation, total, out=np.full_like(total, 0.5), where=total != 0)


def aso(scores_a: Sequence[float], scores_b: Sequence[float], confidence_level: float = 0.95,
        num_comparisons: int = 1, num_bootstrap_iterations: int = 1000, dt: float = 0.005, seed: int = 0) -> float:
    """eps_min for "A (scores_a) is better than B": below BETTER_BELOW, A is better at `confidence_level`.

    `num_comparisons` > 1 applies deepsig's Bonferroni correction of the confidence level.
    """
    a, b = np.asarray(scores_a, dtype=float), np.asarray(scores_b, dtype=float)
    if a.size == 0 or b.size == 0:
        raise ValueError("both arms need at least one score")
    if not 0 < confidence_level < 1 or num_comparisons < 1 or num_bootstrap_iterations < 1:
        raise ValueError("confidence_level must lie in (0, 1); num_comparisons and the iterations must be >= 1")
    if num_comparisons > 1:
        confidence_level += (1 - confidence_level) / num_comparisons
    ratio = float(violation_ratio(a, b, dt))
    rng = np.random.default_rng(seed)
    sampled = violation_ratio(rng.choice(a, (num_bootstrap_iterations, a.size)),
                              rng.choice(b, (num_bootstrap_iterations, b.size)), dt)
    const = np.sqrt(a.size * b.size / (a.size + b.size))
    sigma = np.std(const * (sampled - ratio))
    return float(np.clip(ratio - sigma / const * stats.norm.ppf(1 - confidence_level), 0, 1))
