"""Comparing recipes (arms) the way seed variance demands.

- Mosbach et al.'s Table 1: std / mean / median / max and the failed-run count per task and arm, and
  Levene's test (scipy's median-centred, Brown-Forsythe form) for equal variances.
- "A is better than B": a permutation test of the difference in means and a bootstrap percentile
  interval for it; the almost stochastic order test of Dror et al. 2019 (epsilon_min, following
  del Barrio et al. 2018 and the authors' code: the violation ratio of the empirical quantile functions,
  corrected upward by a bootstrap estimate of its spread, so eps_min < 0.5 says A is better than B with
  confidence 1 - alpha, and smaller is stronger).
- "How many seeds would this need": resample n runs per arm with replacement and count how often the
  permutation test rejects at alpha; the smallest n with power >= 0.8.
"""
from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations

import numpy as np
import pandas as pd
from scipy import stats

from .failures import failed
from .results import NotEnoughData, Results, score_array


def recipe_table(results: Results, score: str = "final") -> pd.DataFrame:
    """Mosbach et al. Table 1 layout: per task and arm, std / mean / median / max of the score and failed runs."""
    frame = results.trials.assign(failed=failed(results.trials, score))
    table = frame.groupby(["task", "arm"]).agg(runs=(score, "size"), std=(score, "std"), mean=(score, "mean"),
                                               median=(score, "median"), max=(score, "max"), failed=("failed", "sum"))
    return table.reset_index()


def levene_by_task(results: Results, score: str = "final") -> pd.DataFrame:
    """Levene's test that every arm of a task has the same variance (tasks with two or more arms)."""
    rows = []
    for task, frame in results.trials.groupby("task"):
        groups = {arm: score_array(g, score) for arm, g in frame.groupby("arm")}
        groups = {arm: values for arm, values in groups.items() if values.size >= 2}
        if len(groups) < 2:
            continue
        statistic, p = stats.levene(*groups.values())
        rows.append({"task": task, "arms": len(groups), "W": float(statistic), "p": float(p)})
    if not rows:
        raise NotEnoughData("Levene's test needs a task with two or more arms of two or more runs each")
    return pd.DataFrame(rows)


_CHUNK_ELEMENTS = 4_000_000


def _permuted_differences(pooled: np.ndarray, n: int, n_perm: int, rng: np.random.Generator) -> np.ndarray:
    """mean of the first n minus mean of the rest, over n_perm random relabelings of each row: (R, n_perm)."""
    shuffled = rng.permuted(np.repeat(pooled[:, None, :], n_perm, axis=1), axis=2)
    return shuffled[:, :, :n].mean(axis=2) - shuffled[:, :, n:].mean(axis=2)


def _permutation_pvalues(a: np.ndarray, b: np.ndarray, n_perm: int, alternative: str,
                         rng: np.random.Generator) -> np.ndarray:
    """Permutation p-values of mean(a) - mean(b) for a batch: a (R, n), b (R, m) -> (R,)."""
    pooled = np.concatenate([a, b], axis=1)
    n = a.shape[1]
    observed = a.mean(axis=1) - b.mean(axis=1)
    rows_per_chunk = max(1, _CHUNK_ELEMENTS // (n_perm * pooled.shape[1]))  # bounds memory for large arms
    null = np.concatenate([_permuted_differences(pooled[start:start + rows_per_chunk], n, n_perm, rng)
                           for start in range(0, len(pooled), rows_per_chunk)])
    slack = 1e-12 * np.maximum(1.0, np.abs(observed))[:, None]  # equal sums must count as "as extreme"
    if alternative == "greater":
        extreme = null >= observed[:, None] - slack
    elif alternative == "less":
        extreme = null <= observed[:, None] + slack
    elif alternative == "two-sided":
        extreme = np.abs(null) >= np.abs(observed)[:, None] - slack
    else:
        raise ValueError(f"alternative must be two-sided, greater or less, not {alternative!r}")
    return (1 + extreme.sum(axis=1)) / (n_perm + 1)


def permutation_test(a: Sequence[float], b: Sequence[float], n_perm: int = 9999, alternative: str = "two-sided",
                     seed: int = 0) -> float:
    """p-value of mean(a) - mean(b) against random relabelings of the runs ('greater': a is better)."""
    a, b = np.asarray(a, dtype=float)[None, :], np.asarray(b, dtype=float)[None, :]
    return float(_permutation_pvalues(a, b, n_perm, alternative, np.random.default_rng(seed))[0])


def bootstrap_diff_ci(a: Sequence[float], b: Sequence[float], n_boot: int = 10000, level: float = 0.95,
                      seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of mean(a) - mean(b), resampling the runs of each arm."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    rng = np.random.default_rng(seed)
    diffs = rng.choice(a, (n_boot, a.size)).mean(axis=1) - rng.choice(b, (n_boot, b.size)).mean(axis=1)
    tail = (1 - level) / 2
    return float(np.quantile(diffs, tail)), float(np.quantile(diffs, 1 - tail))


def _quantiles(sorted_scores: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Empirical quantile function F^-1(t) = the ceil(n t)-th smallest score, for rows of sorted scores."""
    n = sorted_scores.shape[-1]
    index = np.clip(np.ceil(n * t).astype(int) - 1, 0, n - 1)
    return sorted_scores[..., index]


def violation_ratio(a: np.ndarray, b: np.ndarray, dt: float = 0.005) -> np.ndarray:
    """eps_W2(F_a, F_b): the share of the squared quantile distance where a's quantile is below b's.

    0 means a stochastically dominates b; 1 means b dominates a. Works on rows (..., n) of scores.
    """
    t = np.arange(0, 1, dt)
    diff = _quantiles(np.sort(b, axis=-1), t) - _quantiles(np.sort(a, axis=-1), t)
    total = (diff ** 2).sum(axis=-1) * dt
    violation = (np.clip(diff, 0, None) ** 2).sum(axis=-1) * dt
    return np.divide(violation, total, out=np.zeros_like(total), where=total > 0)


def aso(a: Sequence[float], b: Sequence[float], alpha: float = 0.05, num_samples: int = 1000,
        num_bootstrap: int = 1000, dt: float = 0.005, seed: int = 0) -> float:
    """Almost stochastic order (Dror et al. 2019): eps_min for "a is better than b" at confidence 1 - alpha.

    eps_min = eps_W2(F_n, G_m) + sqrt((n + m) / (n m)) * sigma * Phi^-1(1 - alpha), with sigma the spread of
    sqrt(k/2) (eps_W2(F*_k, G*_k) - eps_W2(F_n, G_m)) over bootstrap draws of k = num_samples scores from
    each empirical distribution; clipped to [0, 1].
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    ratio = float(violation_ratio(a, b, dt))
    rng = np.random.default_rng(seed)
    sampled = violation_ratio(rng.choice(a, (num_bootstrap, num_samples)), rng.choice(b, (num_bootstrap, num_samples)), dt)
    sigma = np.std(np.sqrt(num_samples / 2) * (sampled - ratio))
    scale = np.sqrt((a.size + b.size) / (a.size * b.size))
    return float(np.clip(ratio + scale * sigma * stats.norm.ppf(1 - alpha), 0, 1))


def seeds_needed(a: Sequence[float], b: Sequence[float], alpha: float = 0.05, target: float = 0.8,
                 n_values: Sequence[int] | None = None, n_resamples: int = 200, n_perm: int = 199,
                 seed: int = 0) -> tuple[pd.DataFrame, int | None]:
    """Power of the two-sided permutation test with n runs per arm (resampled with replacement), and
    the smallest n whose power reaches `target` (None if none of the n tried does).

    n_values default: 2..max(len(a), len(b)); beyond 12 values, 12 geometrically spaced ones (dense where
    the answer usually is).
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    largest = max(a.size, b.size)
    if n_values is None:
        n_values = (np.arange(2, largest + 1) if largest <= 13
                    else np.unique(np.geomspace(2, largest, 12).round().astype(int)))
    rng = np.random.default_rng(seed)
    rows = []
    for n in n_values:
        pvalues = _permutation_pvalues(rng.choice(a, (n_resamples, n)), rng.choice(b, (n_resamples, n)),
                                       n_perm, "two-sided", rng)
        rows.append({"n": int(n), "power": float((pvalues <= alpha).mean())})
    power = pd.DataFrame(rows)
    reached = power[power["power"] >= target]
    return power, (int(reached["n"].iloc[0]) if len(reached) else None)


def compare_pairs(results: Results, score: str = "final", alpha: float = 0.05,
                  seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every pair of arms within a task, the better-scoring one (by mean) as A.

    Returns the comparison table (difference, bootstrap CI, permutation p, Levene p, ASO eps_min, seeds
    needed) and the power curves (task, pair, n, power).
    """
    rows, curves = [], []
    for task, frame in results.trials.groupby("task"):
        arms = {arm: score_array(g, score) for arm, g in frame.groupby("arm")}
        arms = {arm: values for arm, values in arms.items() if values.size >= 2}
        for first, second in combinations(sorted(arms), 2):
            a, b = sorted((arms[first], arms[second]), key=np.mean, reverse=True)
            name_a, name_b = (first, second) if arms[first] is a else (second, first)
            lo, hi = bootstrap_diff_ci(a, b, seed=seed)
            power, needed = seeds_needed(a, b, alpha=alpha, seed=seed)
            rows.append({"task": task, "A (better mean)": name_a, "B": name_b, "runs A": a.size, "runs B": b.size,
                         "mean A - B": a.mean() - b.mean(), "95% CI": f"[{lo:.4f}, {hi:.4f}]",
                         "permutation p": permutation_test(a, b, seed=seed),
                         "Levene p": float(stats.levene(a, b).pvalue),
                         "ASO eps_min": aso(a, b, alpha=alpha, seed=seed),
                         "seeds for power 0.8": needed if needed is not None else f"> {power['n'].max()}"})
            curves.append(power.assign(task=task, pair=f"{name_a} vs {name_b}"))
    if not rows:
        raise NotEnoughData("comparisons need a task with two or more arms of two or more runs each")
    return pd.DataFrame(rows), pd.concat(curves, ignore_index=True)
