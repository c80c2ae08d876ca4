"""The estimates behind the verdicts: an effect, its interval at any level, and one-sided p against any threshold.

Every claim is oriented so that its effect is positive when the paper is right. A verdict asks two one-sided
questions of one estimate: is the effect above the claim's null ("holds"), and is it below the smallest effect
that would still be the paper's ("does not hold")? So an estimate carries its one-sided confidence bounds at
every level, and both p-values are read off by inverting them (a p-value is the level at which the bound
reaches the threshold). The bounds come from tests with checked coverage at 5 runs per arm
(tests/test_reproduce_calibration.py), never from the share of bootstrap draws past a threshold:

- two arms, per task: Welch's t (scipy.stats.ttest_ind(equal_var=False) is the reference); tasks are strata,
  pooled with fixed weights n_A n_B / (n_A + n_B) (Cochran's; estimated inverse-variance weights from 5 runs
  bias the interval), the degrees of freedom by Satterthwaite's rule over every arm's variance term;
- failure rates: Wilson score bounds of each rate with Newcombe's continuity correction, combined into the
  Mantel-Haenszel-weighted difference over tasks by MOVER (Zou and Donner 2008), which carries each rate's
  asymmetric limits into the pooled ones (without the correction, MOVER ran liberal at 5 runs per arm);
- one sample: Student's t (scipy.stats.ttest_1samp); correlations: Fisher's z;
- statistics of a crossed WI x DO grid: a Wald interval with the standard error of a two-way bootstrap that
  resamples WI levels and DO levels (Owen 2007), since grid runs that share a seed are not independent.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import optimize, stats

LEVEL = 0.95
Bounds = Callable[[float], tuple[float, float]]  # alpha (<= 0.5) -> (lower, upper) one-sided bounds at 1 - alpha


@dataclass(frozen=True)
class TaskEffect:
    task: str
    effect: float
    low: float
    high: float


@dataclass(frozen=True)
class Estimate:
    """An effect with its one-sided bounds at every level (`bounds`), and the effect of each task pooled into it."""

    effect: float
    bounds: Bounds
    per_task: tuple[TaskEffect, ...] = field(default=())
    runs: int = 0  # runs per arm (the smallest arm), for the power of more runs
    se: float = math.nan  # the standard error where the bounds come from one (t, normal)

    @property
    def low(self) -> float:
        return self.bounds((1 - LEVEL) / 2)[0]

    @property
    def high(self) -> float:
        return self.bounds((1 - LEVEL) / 2)[1]

    def p_greater(self, threshold: float) -> float:
        """One-sided p of H0: effect <= threshold."""
        return _inverted(self, threshold, upper=False)

    def p_less(self, threshold: float) -> float:
        """One-sided p of H0: effect >= threshold."""
        return _inverted(self, threshold, upper=True)

    def runs_for_power(self, effect: float, null: float, power: float = 0.8, alpha: float = 0.05) -> int | None:
        """Runs per arm at which a one-sided test of `null` reaches `power` when the true effect is `effect`: the
        standard error scaled by sqrt(runs / n) (a normal approximation). None if the effect is not beyond null."""
        if not self.runs or not np.isfinite(effect) or effect <= null:
            return None
        se = self.se if np.isfinite(self.se) else (self.high - self.low) / (2 * stats.norm.ppf(0.5 + LEVEL / 2))
        if not np.isfinite(se) or se <= 0:
            return None
        z = stats.norm.ppf(1 - alpha) + stats.norm.ppf(power)
        return max(2, math.ceil(self.runs * (z * se / (effect - null)) ** 2))


def _inverted(estimate: Estimate, threshold: float, upper: bool) -> float:
    """The one-sided level at which the lower (upper) bound reaches `threshold`: the p of the test it inverts."""
    effect = estimate.effect
    if not np.isfinite(effect) or not np.isfinite(threshold) or not np.all(np.isfinite(estimate.bounds(0.25))):
        return math.nan
    beyond = effect > threshold if not upper else effect < threshold
    if effect == threshold:
        return 0.5

    def gap(alpha: float) -> float:
        low, high = estimate.bounds(alpha)
        return (high - threshold) if upper else (low - threshold)

    # On the effect's side the p is the alpha where the near bound crosses the threshold; on the far side it is one
    # minus the alpha where the other bound does. A bound that does not reach the point estimate at alpha = 0.5 (a
    # continuity correction) leaves the threshold inside its band: p is then 0.5, short of any decision.
    sign = -1 if upper else 1
    if beyond:
        if sign * gap(0.5) <= 0:
            return 0.5
        if sign * gap(1e-12) > 0:
            return 1e-12
        return float(optimize.brentq(gap, 1e-12, 0.5, xtol=1e-12))

    def far_gap(alpha: float) -> float:
        low, high = estimate.bounds(alpha)
        return (low - threshold) if upper else (high - threshold)

    if sign * far_gap(0.5) >= 0:
        return 0.5
    if sign * far_gap(1e-12) < 0:
        return 1 - 1e-12
    return float(1 - optimize.brentq(far_gap, 1e-12, 0.5, xtol=1e-12))


def t_bounds(effect: float, se: float, df: float) -> Bounds:
    def bounds(alpha: float) -> tuple[float, float]:
        if se == 0:
            return effect, effect
        if not np.isfinite(se):
            return -math.inf, math.inf
        half = stats.t.ppf(1 - alpha, df) * se
        return effect - half, effect + half
    return bounds


def normal_bounds(effect: float, se: float, transform: Callable[[float], float] = float) -> Bounds:
    """Bounds of a normal statistic (e.g. Fisher's z), mapped through a monotone `transform` (e.g. tanh)."""
    def bounds(alpha: float) -> tuple[float, float]:
        if not np.isfinite(se):
            return transform(-math.inf), transform(math.inf)
        half = stats.norm.ppf(1 - alpha) * se
        return transform(effect - half), transform(effect + half)
    return bounds


def welch(values: np.ndarray, in_b: np.ndarray, strata: np.ndarray) -> Estimate:
    """mean(B) - mean(A), per stratum by Welch's t and pooled over strata with weights n_A n_B / (n_A + n_B)."""
    values, in_b, strata = np.asarray(values, dtype=float), np.asarray(in_b, dtype=bool), np.asarray(strata)
    names = list(dict.fromkeys(strata.tolist()))
    weights, effects, terms, per_task = [], [], [], []
    for name in names:
        a, b = values[(strata == name) & ~in_b], values[(strata == name) & in_b]
        effect, var_a, var_b = float(b.mean() - a.mean()), float(a.var(ddof=1) / len(a)), float(b.var(ddof=1) / len(b))
        weights.append(len(a) * len(b) / (len(a) + len(b)))
        effects.append(effect)
        terms.append(((var_a, len(a) - 1), (var_b, len(b) - 1)))
        se = math.sqrt(var_a + var_b)
        df = _satterthwaite([(1.0, var_a, len(a) - 1), (1.0, var_b, len(b) - 1)])
        low, high = t_bounds(effect, se, df)((1 - LEVEL) / 2)
        per_task.append(TaskEffect(str(name), effect, low, high))
    w = np.asarray(weights) / np.sum(weights)
    pooled = float(np.dot(w, effects))
    parts = [(wi ** 2, var, df) for wi, pair in zip(w, terms) for var, df in pair]
    se = math.sqrt(sum(c * var for c, var, _ in parts))
    runs = int(min(min(((strata == n) & ~in_b).sum(), ((strata == n) & in_b).sum()) for n in names))
    return Estimate(pooled, t_bounds(pooled, se, _satterthwaite(parts)), tuple(per_task), runs, se)


def _satterthwaite(parts: Sequence[tuple[float, float, float]]) -> float:
    """Degrees of freedom of sum(c * var) for independent variance estimates var with df each."""
    total = sum(c * var for c, var, _ in parts)
    denominator = sum((c * var) ** 2 / df for c, var, df in parts if df > 0)
    return total ** 2 / denominator if denominator > 0 else math.inf


def median_deviations(values: np.ndarray, in_b: np.ndarray, strata: np.ndarray) -> np.ndarray:
    """|x - median of its own arm and stratum|: the Brown-Forsythe transform, whose group means Levene's test
    (center='median') compares."""
    out = np.empty_like(values, dtype=float)
    for s in np.unique(strata):
        for arm in (True, False):
            cell = (strata == s) & (in_b == arm)
            out[cell] = np.abs(values[cell] - np.median(values[cell]))
    return out


@functools.lru_cache(maxsize=None)
def median_deviation_factor(n: int) -> float:
    """E[mean |x - sample median|] / E|x - median| for n normal draws: the share of the spread that deviations
    from a sample's own median show (0.83 at n = 5, 0.93 at 10; 1 as n grows). Computed once by a seeded
    simulation of 200,000 samples, like the 1.4826 that makes a MAD consistent for the sd."""
    if n < 2:
        return 1.0
    draws = np.random.default_rng(0).standard_normal((200_000, n))
    shown = np.abs(draws - np.median(draws, axis=1, keepdims=True)).mean()
    return float(shown / math.sqrt(2 / math.pi))


def spread_reduction(values: np.ndarray, in_b: np.ndarray, strata: np.ndarray) -> Estimate:
    """(mean absolute deviation from the median in A) - (the same in B), > 0 when B is tighter: Welch's t on the
    Brown-Forsythe deviations, each arm's divided by `median_deviation_factor` of its size (so that the effect
    estimates the difference of the arms' spreads, not a difference shrunk by small samples), pooled over strata as
    `welch` pools."""
    values, in_b, strata = np.asarray(values, dtype=float), np.asarray(in_b, dtype=bool), np.asarray(strata)
    deviations = median_deviations(values, in_b, strata)
    for s in np.unique(strata):
        for arm in (True, False):
            cell = (strata == s) & (in_b == arm)
            deviations[cell] /= median_deviation_factor(int(cell.sum()))
    return negated(welch(deviations, in_b, strata))


def negated(estimate: Estimate) -> Estimate:
    def bounds(alpha: float) -> tuple[float, float]:
        low, high = estimate.bounds(alpha)
        return -high, -low
    return Estimate(-estimate.effect, bounds, tuple(TaskEffect(t.task, -t.effect, -t.high, -t.low)
                                                   for t in estimate.per_task), estimate.runs, estimate.se)


def wilson_interval(events: int, runs: int, alpha: float, continuity: bool = True) -> tuple[float, float]:
    """One-sided bounds at 1 - alpha of a proportion: Wilson's score interval, with Newcombe's (1998, method 4)
    continuity correction by default. Without it this is statsmodels' proportion_confint(method='wilson')."""
    z, p, n, c = stats.norm.ppf(1 - alpha), events / runs, runs, 1.0 if continuity else 0.0
    if not continuity:
        centre, half = (p + z * z / (2 * n)) / (1 + z * z / n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (
            1 + z * z / n)
        return max(0.0, centre - half), min(1.0, centre + half)
    low = 0.0 if events == 0 else (2 * n * p + z * z - c - z * math.sqrt(
        max(0.0, z * z - 2 - 1 / n + 4 * p * (n * (1 - p) + 1)))) / (2 * (n + z * z))
    high = 1.0 if events == runs else (2 * n * p + z * z + c + z * math.sqrt(
        max(0.0, z * z + 2 - 1 / n + 4 * p * (n * (1 - p) - 1)))) / (2 * (n + z * z))
    return max(0.0, low), min(1.0, high)


def risk_difference(tables: Sequence[tuple[str, int, int, int, int]]) -> Estimate:
    """Rate in B - rate in A over strata (task, events_b, runs_b, events_a, runs_a), pooled with Mantel-Haenszel
    weights n_A n_B / (n_A + n_B). Its bounds combine the continuity-corrected Wilson bounds of all 2 x strata rates
    by MOVER (per stratum, this is Newcombe's interval for a difference, his method 11 with the correction)."""
    weights = np.array([rb * ra / (rb + ra) for _, _, rb, _, ra in tables], dtype=float)
    weights /= weights.sum()
    rates_b = np.array([eb / rb for _, eb, rb, _, _ in tables])
    rates_a = np.array([ea / ra for _, _, _, ea, ra in tables])
    pooled = float(np.dot(weights, rates_b - rates_a))

    def spans(alpha: float, w: np.ndarray) -> tuple[float, float]:
        b = np.array([wilson_interval(eb, rb, alpha) for _, eb, rb, _, _ in tables])
        a = np.array([wilson_interval(ea, ra, alpha) for _, _, _, ea, ra in tables])
        below = math.sqrt(float(np.sum(w ** 2 * ((rates_b - b[:, 0]) ** 2 + (a[:, 1] - rates_a) ** 2))))
        above = math.sqrt(float(np.sum(w ** 2 * ((b[:, 1] - rates_b) ** 2 + (rates_a - a[:, 0]) ** 2))))
        return below, above

    def bounds(alpha: float) -> tuple[float, float]:
        below, above = spans(alpha, weights)
        return pooled - below, pooled + above

    per_task = []
    for j, (task, *_) in enumerate(tables):
        one = np.zeros(len(tables))
        one[j] = 1.0
        below, above = spans((1 - LEVEL) / 2, one)
        per_task.append(TaskEffect(task, rates_b[j] - rates_a[j], rates_b[j] - rates_a[j] - below,
                                   rates_b[j] - rates_a[j] + above))
    return Estimate(pooled, bounds, tuple(per_task), int(min(min(rb, ra) for _, _, rb, _, ra in tables)))


def one_sample_t(differences: np.ndarray) -> Estimate:
    """Mean of paired differences: Student's t (scipy.stats.ttest_1samp is the reference)."""
    differences = np.asarray(differences, dtype=float)
    n = len(differences)
    se = float(differences.std(ddof=1) / math.sqrt(n))
    return Estimate(float(differences.mean()), t_bounds(float(differences.mean()), se, n - 1), runs=n, se=se)


def tanh_of(estimate: Estimate) -> Estimate:
    """An estimate on Fisher's z shown as a correlation."""
    def bounds(alpha: float) -> tuple[float, float]:
        low, high = estimate.bounds(alpha)
        return math.tanh(low), math.tanh(high)
    return Estimate(math.tanh(estimate.effect), bounds, estimate.per_task, estimate.runs)


# Fieller, Hartley and Pearson (1957): the variance of atanh(Spearman's rho) is about 1.06 / (n - 3).
SPEARMAN_Z_VARIANCE = 1.06


def pooled_spearman(x: np.ndarray, y: np.ndarray, strata: np.ndarray) -> tuple[Estimate, list[tuple[object, int, float]]]:
    """Spearman's rho per stratum (scipy.stats.spearmanr), pooled on Fisher's z with weights n - 3, strata being
    independent (tasks). Strata with fewer than 4 pairs or constant values are left out. Also returns
    (stratum, n, rho) per stratum."""
    x, y, strata = np.asarray(x, dtype=float), np.asarray(y, dtype=float), np.asarray(strata)
    parts = []
    for s in np.unique(strata):
        keep = (strata == s) & np.isfinite(x) & np.isfinite(y)
        if keep.sum() < 4 or np.ptp(x[keep]) == 0 or np.ptp(y[keep]) == 0:
            continue
        parts.append((s, int(keep.sum()), float(stats.spearmanr(x[keep], y[keep]).statistic)))
    if not parts:
        return Estimate(math.nan, lambda alpha: (math.nan, math.nan)), parts
    weights = np.array([n - 3 for _, n, _ in parts], dtype=float) / SPEARMAN_Z_VARIANCE
    z = np.arctanh(np.clip([rho for _, _, rho in parts], -0.999999, 0.999999))
    pooled = float(np.sum(weights * z) / weights.sum())
    per_task = []
    for (s, n, rho), w in zip(parts, weights):
        low, high = normal_bounds(math.atanh(np.clip(rho, -0.999999, 0.999999)), 1 / math.sqrt(w),
                                  math.tanh)((1 - LEVEL) / 2)
        per_task.append(TaskEffect(str(s), rho, low, high))
    estimate = Estimate(math.tanh(pooled), normal_bounds(pooled, 1 / math.sqrt(weights.sum()), math.tanh),
                        tuple(per_task), min(n for _, n, _ in parts))
    return estimate, parts


def wald_from_draws(observed: float, draws: np.ndarray, runs: int, transform: Callable[[float], float] = float,
                    per_task: tuple[TaskEffect, ...] = ()) -> Estimate:
    """A normal interval around `observed` with the standard deviation of bootstrap draws as its standard error
    (on the scale the draws are on; `transform` maps the bounds, e.g. tanh from Fisher's z)."""
    draws = np.asarray(draws, dtype=float)
    draws = draws[np.isfinite(draws)]
    se = float(draws.std(ddof=1)) if len(draws) > 1 else math.inf
    return Estimate(transform(observed), normal_bounds(observed, se, transform), per_task, runs,
                    se if transform is float else math.nan)


def two_way_indices(wi: np.ndarray, do: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Row indices of a pigeonhole bootstrap draw of a crossed WI x DO design: WI levels and DO levels are each
    resampled with replacement, and every run in a drawn (WI, DO) cell is taken once per time both were drawn."""
    wi_levels, do_levels = np.unique(wi), np.unique(do)
    wi_count = np.bincount(rng.integers(0, len(wi_levels), len(wi_levels)), minlength=len(wi_levels))
    do_count = np.bincount(rng.integers(0, len(do_levels), len(do_levels)), minlength=len(do_levels))
    times = wi_count[np.searchsorted(wi_levels, wi)] * do_count[np.searchsorted(do_levels, do)]
    return np.repeat(np.arange(len(wi)), times)
