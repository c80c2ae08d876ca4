"""The tests behind the verdicts, pooled over tasks.

Every claim is oriented so that its effect is positive when the paper is right. Tasks are strata: a
two-arm comparison permutes arm labels within each task and averages the per-task effect, so a task
with higher scores cannot fake a difference between arms. Each function returns the effect, a 95%
interval and a one-sided p in the claim's direction; the references they are tested against are named
where they are defined (scipy.stats, statsmodels).
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import stats

Statistic = Callable[[np.ndarray, np.ndarray, np.ndarray], float]  # (values, in_b, strata) -> effect
LEVEL = 0.95


@dataclass(frozen=True)
class Estimate:
    effect: float
    low: float
    high: float
    p: float  # one-sided, in the claim's direction (for an equivalence claim: the larger of its two one-sided p)


def mean_difference(values: np.ndarray, in_b: np.ndarray, strata: np.ndarray) -> float:
    """Mean over strata of mean(B) - mean(A)."""
    return float(np.mean([values[(strata == s) & in_b].mean() - values[(strata == s) & ~in_b].mean()
                          for s in np.unique(strata)]))


def median_deviations(values: np.ndarray, in_b: np.ndarray, strata: np.ndarray) -> np.ndarray:
    """|x - median of its own arm and stratum|: the Brown-Forsythe transform, whose group means Levene's test
    (center='median') compares."""
    out = np.empty_like(values, dtype=float)
    for s in np.unique(strata):
        for arm in (True, False):
            cell = (strata == s) & (in_b == arm)
            out[cell] = np.abs(values[cell] - np.median(values[cell]))
    return out


def spread_reduction(values: np.ndarray, in_b: np.ndarray, strata: np.ndarray) -> float:
    """Mean over strata of (mean absolute deviation from the median in A) - (the same in B): > 0 when B is tighter."""
    return -mean_difference(median_deviations(values, in_b, strata), in_b, strata)


def _relabelings(in_b: np.ndarray, strata: np.ndarray, n_perm: int, rng: np.random.Generator):
    """Arm labels permuted within strata: every distinct relabeling when there are at most n_perm of them (exact),
    else n_perm random ones. Returns (labelings, exact)."""
    groups = [np.flatnonzero(strata == s) for s in np.unique(strata)]
    sizes = [math.comb(len(g), int(in_b[g].sum())) for g in groups]
    if math.prod(sizes) <= n_perm:
        per_stratum = [list(itertools.combinations(g, int(in_b[g].sum()))) for g in groups]
        labelings = []
        for chosen in itertools.product(*per_stratum):
            labels = np.zeros(len(in_b), dtype=bool)
            for members in chosen:
                labels[list(members)] = True
            labelings.append(labels)
        return labelings, True
    labelings = []
    for _ in range(n_perm):
        labels = np.zeros(len(in_b), dtype=bool)
        for g in groups:
            labels[g] = in_b[g][rng.permutation(len(g))]
        labelings.append(labels)
    return labelings, False


def permutation_p(values: np.ndarray, in_b: np.ndarray, strata: np.ndarray, statistic: Statistic,
                  n_perm: int = 9999, seed: int = 0) -> float:
    """One-sided p of `statistic` >= observed under arm labels exchangeable within strata. Exact enumeration counts
    the observed labeling among the null (as scipy.stats.permutation_test does); Monte Carlo adds one to both counts."""
    rng = np.random.default_rng(seed)
    observed = statistic(values, in_b, strata)
    labelings, exact = _relabelings(in_b, strata, n_perm, rng)
    null = np.array([statistic(values, labels, strata) for labels in labelings])
    # Ties are the rule with discrete scores (accuracy on one dev set): compare with a relative tolerance.
    at_least = int(np.sum(null >= observed - 1e-12 * max(1.0, abs(observed))))
    return at_least / len(null) if exact else (at_least + 1) / (len(null) + 1)


def bootstrap_interval(values: np.ndarray, in_b: np.ndarray, strata: np.ndarray, statistic: Statistic,
                       n_boot: int = 4000, seed: int = 0) -> tuple[float, float]:
    """Percentile interval of `statistic`, resampling with replacement within each arm of each stratum."""
    rng = np.random.default_rng(seed)
    cells = [np.flatnonzero((strata == s) & (in_b == arm)) for s in np.unique(strata) for arm in (False, True)]
    draws = np.empty(n_boot)
    for k in range(n_boot):
        index = np.concatenate([rng.choice(cell, size=len(cell), replace=True) for cell in cells])
        draws[k] = statistic(values[index], in_b[index], strata[index])
    return percentile_interval(draws)


def percentile_interval(draws: np.ndarray) -> tuple[float, float]:
    tail = (1 - LEVEL) / 2 * 100
    low, high = np.nanpercentile(draws, [tail, 100 - tail])
    return float(low), float(high)


def two_arm(values: np.ndarray, in_b: np.ndarray, strata: np.ndarray, statistic: Statistic = mean_difference,
            n_perm: int = 9999, n_boot: int = 4000, seed: int = 0) -> Estimate:
    """Effect of arm B over arm A with a stratified permutation p and a stratified bootstrap interval."""
    values, in_b, strata = np.asarray(values, dtype=float), np.asarray(in_b, dtype=bool), np.asarray(strata)
    low, high = bootstrap_interval(values, in_b, strata, statistic, n_boot, seed)
    return Estimate(statistic(values, in_b, strata), low, high, permutation_p(values, in_b, strata, statistic,
                                                                              n_perm, seed))


# Fieller, Hartley and Pearson (1957): the variance of atanh(Spearman's rho) is about 1.06 / (n - 3).
SPEARMAN_Z_VARIANCE = 1.06


def pooled_spearman(x: np.ndarray, y: np.ndarray, strata: np.ndarray, null: float = 0.0,
                    margin: float | None = None) -> tuple[Estimate, list[tuple[object, int, float]]]:
    """Spearman's rho per stratum (scipy.stats.spearmanr), pooled on Fisher's z with weights n - 3.

    p is one-sided for rho > null; with `margin` it is the equivalence p for |rho| < margin (two one-sided tests).
    Strata with fewer than 4 pairs or constant values are left out. Also returns (stratum, n, rho) per stratum."""
    x, y, strata = np.asarray(x, dtype=float), np.asarray(y, dtype=float), np.asarray(strata)
    parts = []
    for s in np.unique(strata):
        keep = (strata == s) & np.isfinite(x) & np.isfinite(y)
        if keep.sum() < 4 or np.ptp(x[keep]) == 0 or np.ptp(y[keep]) == 0:
            continue
        parts.append((s, int(keep.sum()), float(stats.spearmanr(x[keep], y[keep]).statistic)))
    if not parts:
        return Estimate(math.nan, math.nan, math.nan, math.nan), parts
    weights = np.array([n - 3 for _, n, _ in parts], dtype=float) / SPEARMAN_Z_VARIANCE
    z = np.arctanh(np.clip([rho for _, _, rho in parts], -0.999999, 0.999999))
    pooled = float(np.sum(weights * z) / weights.sum())
    se = 1 / math.sqrt(weights.sum())
    half = stats.norm.ppf(0.5 + LEVEL / 2) * se
    if margin is None:
        p = float(stats.norm.sf((pooled - math.atanh(null)) / se))
    else:
        bound = math.atanh(margin)
        p = float(max(stats.norm.sf((pooled + bound) / se), stats.norm.cdf((pooled - bound) / se)))
    return Estimate(math.tanh(pooled), math.tanh(pooled - half), math.tanh(pooled + half), p), parts


def risk_difference(events_b: int, runs_b: int, events_a: int, runs_a: int) -> Estimate:
    """Rate in B - rate in A: Fisher's exact one-sided p (scipy) and Newcombe's hybrid score interval (statsmodels)."""
    from statsmodels.stats.proportion import confint_proportions_2indep

    table = [[events_b, runs_b - events_b], [events_a, runs_a - events_a]]
    p = float(stats.fisher_exact(table, alternative="greater").pvalue)
    low, high = confint_proportions_2indep(events_b, runs_b, events_a, runs_a, method="newcomb", compare="diff",
                                           alpha=1 - LEVEL)
    return Estimate(events_b / runs_b - events_a / runs_a, float(low), float(high), p)


def one_sample_t(differences: np.ndarray) -> Estimate:
    """Mean of paired differences > 0: scipy.stats.ttest_1samp, one-sided, with its t interval."""
    differences = np.asarray(differences, dtype=float)
    result = stats.ttest_1samp(differences, 0.0, alternative="greater")
    interval = stats.ttest_1samp(differences, 0.0).confidence_interval(LEVEL)
    return Estimate(float(differences.mean()), float(interval.low), float(interval.high), float(result.pvalue))


def bootstrap_estimate(observed: float, draws: np.ndarray, threshold: float = 0.0,
                       equivalence: tuple[float, float] | None = None) -> Estimate:
    """An estimate from bootstrap draws of an effect: the percentile interval, and as p the share of draws at or
    below `threshold` (the claim's null), or for an equivalence claim the larger share outside the margin."""
    draws = np.asarray(draws, dtype=float)
    draws = draws[np.isfinite(draws)]
    low, high = percentile_interval(draws)
    if equivalence is None:
        p = (np.sum(draws <= threshold) + 1) / (len(draws) + 1)
    else:
        p = (max(np.sum(draws <= equivalence[0]), np.sum(draws >= equivalence[1])) + 1) / (len(draws) + 1)
    return Estimate(float(observed), low, high, float(p))
