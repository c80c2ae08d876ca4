"""Comparing recipes (arms) the way seed variance demands.

- Mosbach et al.'s Table 1: std / mean / median / max and the failed-run count per task and arm, and
  Levene's test (scipy's median-centred, Brown-Forsythe form) for equal variances.
- "A is better than B": a permutation test of the difference in means, computed as
  `scipy.stats.permutation_test` computes it (its p-value rules, exact over every relabeling when there are
  no more of them than permutations asked for, e.g. 252 for 5 vs 5; compared with scipy in
  tests/test_analysis_compare.py); a bootstrap interval of the difference from `scipy.stats.bootstrap`
  (percentile, or BCa); and the almost stochastic order test (aso.py, checked against deepsig).
- Multiple comparisons: the tests of one family (every pair of arms of a task; Levene's test over tasks) are
  corrected together with Holm's method or Benjamini-Hochberg (statsmodels' `multipletests`), and the
  tables show raw and adjusted p-values. ASO's confidence is raised Bonferroni-style over the pairs of a
  task and both directions of each, as deepsig's `multi_aso` does over its comparisons.
- "How many seeds would this need": resample n runs per arm with replacement and count how often the
  permutation test rejects at alpha; the smallest n with power >= 0.8.
"""
from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations
from math import comb

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.multitest import multipletests

from .aso import BETTER_BELOW, aso
from .failures import failed
from .results import NotEnoughData, Results, score_array

# Corrections for a family of tests, by the name statsmodels' multipletests gives them.
CORRECTIONS = {"holm": "Holm", "fdr_bh": "Benjamini-Hochberg"}
INTERVALS = ("percentile", "bca")


def adjust_pvalues(pvalues: Sequence[float], method: str = "holm") -> np.ndarray:
    """p-values of one family of tests adjusted for multiplicity (Holm or Benjamini-Hochberg); NaN stays NaN."""
    if method not in CORRECTIONS:
        raise ValueError(f"correction must be one of {', '.join(CORRECTIONS)}, not {method!r}")
    values = np.asarray(pvalues, dtype=float)
    if np.any((values < 0) | (values > 1)):
        raise ValueError(f"p-values must lie in [0, 1]; got {values[(values < 0) | (values > 1)].tolist()}")
    adjusted = np.full_like(values, np.nan)
    present = ~np.isnan(values)
    if present.any():
        adjusted[present] = multipletests(values[present], method=method)[1]
    return adjusted


def recipe_table(results: Results, score: str = "final") -> pd.DataFrame:
    """Mosbach et al. Table 1 layout: per task and arm, std / mean / median / max of the score and failed runs."""
    frame = results.trials.assign(failed=failed(results.trials, score))
    table = frame.groupby(["task", "arm"]).agg(runs=(score, "size"), std=(score, "std"), mean=(score, "mean"),
                                               median=(score, "median"), max=(score, "max"), failed=("failed", "sum"))
    return table.reset_index()


def levene_by_task(results: Results, score: str = "final", correction: str = "holm") -> pd.DataFrame:
    """Levene's test that every arm of a task has the same variance (tasks with two or more arms); the tasks
    form one family, corrected with `correction`."""
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
    table = pd.DataFrame(rows)
    table[f"p ({CORRECTIONS[correction]})"] = adjust_pvalues(table["p"], correction)
    return table


_CHUNK_ELEMENTS = 4_000_000


def _null_differences(a: np.ndarray, b: np.ndarray, n_perm: int,
                      rng: np.random.Generator) -> tuple[np.ndarray, bool]:
    """Null distribution of mean(a) - mean(b) for a batch a (R, n), b (R, m): (R, K), and whether it is exact.

    As scipy does: every relabeling (K = C(n+m, n)) when there are at most n_perm of them, else n_perm random ones.
    """
    pooled = np.concatenate([a, b], axis=1)
    n, total = a.shape[1], pooled.shape[1]
    if comb(total, n) <= n_perm:
        first = np.array(list(combinations(range(total), n)))
        rest = np.array([np.setdiff1d(np.arange(total), chosen) for chosen in first]).reshape(len(first), -1)
        return pooled[:, first].mean(axis=-1) - pooled[:, rest].mean(axis=-1), True
    rows_per_chunk = max(1, _CHUNK_ELEMENTS // (n_perm * total))  # bounds memory for large arms
    chunks = []
    for start in range(0, len(pooled), rows_per_chunk):
        block = pooled[start:start + rows_per_chunk]
        shuffled = rng.permuted(np.repeat(block[:, None, :], n_perm, axis=1), axis=2)
        chunks.append(shuffled[:, :, :n].mean(axis=2) - shuffled[:, :, n:].mean(axis=2))
    return np.concatenate(chunks), False


def _permutation_pvalues(a: np.ndarray, b: np.ndarray, n_perm: int, alternative: str,
                         rng: np.random.Generator) -> np.ndarray:
    """Permutation p-values of mean(a) - mean(b) for a batch: a (R, n), b (R, m) -> (R,), by scipy's rules:
    values within 100 ulp of the observed count as equal, a random null adds the observed labelling (+1), and
    the two-sided p is twice the smaller one-sided p, at most 1."""
    if alternative not in ("two-sided", "greater", "less"):
        raise ValueError(f"alternative must be two-sided, greater or less, not {alternative!r}")
    observed = a.mean(axis=1) - b.mean(axis=1)
    null, exact = _null_differences(a, b, n_perm, rng)
    gamma = np.abs(np.finfo(float).eps * 100 * observed)[:, None]
    adjustment = 0 if exact else 1
    draws = null.shape[1]
    greater = ((null >= observed[:, None] - gamma).sum(axis=1) + adjustment) / (draws + adjustment)
    less = ((null <= observed[:, None] + gamma).sum(axis=1) + adjustment) / (draws + adjustment)
    chosen = {"greater": greater, "less": less, "two-sided": 2 * np.minimum(greater, less)}[alternative]
    return np.clip(chosen, 0, 1)


def permutation_test(a: Sequence[float], b: Sequence[float], n_perm: int = 9999, alternative: str = "two-sided",
                     seed: int = 0) -> float:
    """p-value of mean(a) - mean(b) against relabelings of the runs ('greater': a is better); exact when the
    relabelings number n_perm or fewer."""
    a, b = np.asarray(a, dtype=float)[None, :], np.asarray(b, dtype=float)[None, :]
    return float(_permutation_pvalues(a, b, n_perm, alternative, np.random.default_rng(seed))[0])


def bootstrap_diff_ci(a: Sequence[float], b: Sequence[float], n_boot: int = 10000, level: float = 0.95,
                      method: str = "percentile", seed: int = 0) -> tuple[float, float]:
    """Bootstrap interval of mean(a) - mean(b), resampling the runs of each arm (`scipy.stats.bootstrap`);
    `method` percentile or bca (bias-corrected and accelerated). Degenerate data (every run equal) give the
    difference itself at both ends."""
    if method not in INTERVALS:
        raise ValueError(f"interval must be one of {', '.join(INTERVALS)}, not {method!r}")
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if np.ptp(a) == 0 and np.ptp(b) == 0:
        return float(a.mean() - b.mean()), float(a.mean() - b.mean())
    result = stats.bootstrap((a, b), lambda x, y, axis: x.mean(axis=axis) - y.mean(axis=axis), n_resamples=n_boot,
                             confidence_level=level, method="BCa" if method == "bca" else "percentile",
                             rng=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


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


def better_arm(p_adjusted: float, eps_ab: float, eps_ba: float, alpha: float = 0.05) -> str:
    """'A', 'B' or 'neither': the permutation test rejects at alpha and ASO finds near-dominance in that direction."""
    if not p_adjusted < alpha:
        return "neither"
    return "A" if eps_ab < BETTER_BELOW else "B" if eps_ba < BETTER_BELOW else "neither"


def compare_pairs(results: Results, score: str = "final", alpha: float = 0.05, correction: str = "holm",
                  interval: str = "percentile", seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every pair of arms within a task, A and B in the order of their names (never chosen by the data).

    Returns the comparison table (difference, bootstrap CI, two-sided permutation p raw and adjusted over the task's
    pairs, Levene p, ASO eps_min in both directions with the verdict, seeds needed) and the power curves (task,
    pair, n, power). ASO asks both "A better than B" and "B better than A", its confidence corrected for two
    comparisons per pair: choosing the direction after seeing which mean is higher doubled its false positives.
    Even so, ASO alone says "better" for 1 in 10 pairs of identical arms at 5 runs each, so a recipe is called
    better only when its eps_min < BETTER_BELOW *and* the two-sided permutation test (corrected over the task's
    pairs) rejects at alpha: the second bounds the false positives at alpha, the first asks for near-dominance.
    """
    rows, curves = [], []
    adjusted_name = f"permutation p ({CORRECTIONS[correction]})"
    for task, frame in results.trials.groupby("task"):
        arms = {arm: score_array(g, score) for arm, g in frame.groupby("arm")}
        arms = {arm: values for arm, values in arms.items() if values.size >= 2}
        pairs = list(combinations(sorted(arms), 2))
        task_rows = []
        for name_a, name_b in pairs:
            a, b = arms[name_a], arms[name_b]
            lo, hi = bootstrap_diff_ci(a, b, level=1 - alpha, method=interval, seed=seed)
            power, needed = seeds_needed(a, b, alpha=alpha, seed=seed)
            directions = 2 * len(pairs)
            eps_ab = aso(a, b, confidence_level=1 - alpha, num_comparisons=directions, seed=seed)
            eps_ba = aso(b, a, confidence_level=1 - alpha, num_comparisons=directions, seed=seed)
            task_rows.append({"task": task, "A": name_a, "B": name_b, "runs A": a.size, "runs B": b.size,
                              "mean A - B": a.mean() - b.mean(),
                              f"{1 - alpha:.0%} CI ({interval})": f"[{lo:.4f}, {hi:.4f}]",
                              "permutation p": permutation_test(a, b, seed=seed),
                              adjusted_name: np.nan,
                              "Levene p": float(stats.levene(a, b).pvalue),
                              "ASO eps_min A>B": eps_ab, "ASO eps_min B>A": eps_ba,
                              "better": "neither",
                              "seeds for power 0.8": needed if needed is not None else f"> {power['n'].max()}"})
            curves.append(power.assign(task=task, pair=f"{name_a} vs {name_b}"))
        adjusted = adjust_pvalues([row["permutation p"] for row in task_rows], correction)
        for row, value in zip(task_rows, adjusted):
            row[adjusted_name] = value
            row["better"] = better_arm(value, row["ASO eps_min A>B"], row["ASO eps_min B>A"], alpha)
        rows += task_rows
    if not rows:
        raise NotEnoughData("comparisons need a task with two or more arms of two or more runs each")
    return pd.DataFrame(rows), pd.concat(curves, ignore_index=True)
