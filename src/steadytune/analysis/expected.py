"""Expected validation performance (Dodge et al. 2019, "Show Your Work"; used by Dodge et al. 2020).

With N observed scores sorted ascending v(1) <= ... <= v(N), the best of n trials has
P(max <= v(i)) = (i/N)^n when trials are drawn with replacement, or C(i, n) / C(N, n) without;
E[max_n] = sum_i p_i v(i) with p_i the difference of consecutive CDF values, and its spread is
sqrt(sum_i p_i (v(i) - E)^2). Because the weights depend only on N and n, a bootstrap interval is one
matrix product over resampled, sorted score sets. The reference is allentune's formula (`samplemax`);
tests/test_analysis_expected.py compares both estimators with it.

Which estimator: with replacement is the default, as in Dodge et al. 2019 and 2020. Tang et al. 2020 showed
that it is biased low (it can draw one run several times); without replacement is unbiased for n <= N.
Dodge et al. 2021 compared the two and found the biased one less variable and less often wrong when it
ranks two models, which is what the curves are read for; the report takes `--without-replacement` for
the unbiased one.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.special import gammaln

from .results import FREQUENCIES, NotEnoughData, Results, score_array


def _log_comb(k: np.ndarray, n: np.ndarray) -> np.ndarray:
    """log C(k, n), -inf where k < n (so exp gives 0)."""
    with np.errstate(invalid="ignore"):
        value = gammaln(k + 1) - gammaln(n + 1) - gammaln(k - n + 1)
    return np.where(k >= n, value, -np.inf)


def max_weights(num_scores: int, ns: np.ndarray, replace: bool = True) -> np.ndarray:
    """P(the best of n draws is the i-th smallest score), shape (len(ns), num_scores)."""
    i = np.arange(0, num_scores + 1, dtype=float)[None, :]
    n = np.asarray(ns, dtype=float)[:, None]
    if replace:
        cdf = (i / num_scores) ** n
    else:
        cdf = np.exp(_log_comb(i, n) - _log_comb(np.array(float(num_scores)), n))
    return np.diff(cdf, axis=1)


def expected_max(scores: Sequence[float] | np.ndarray, n: int | Sequence[int] | None = None, replace: bool = True,
                 bootstrap: int = 0, level: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """E[max of n trials] and its sd for n = 1..N (or 1..n for an int n, or the listed n values).

    Columns n, expected, sd; with `bootstrap` > 0 also lo/hi, the percentile interval of E[max_n] over
    `bootstrap` resamples of the N scores (how sure we are of the curve itself, given only N runs).
    """
    values = np.sort(np.asarray(scores, dtype=float))
    if values.size == 0 or not np.isfinite(values).all():
        raise ValueError("expected_max needs a non-empty list of finite scores")
    total = values.size
    if n is None or np.isscalar(n):
        ns = np.arange(1, (total if n is None else int(n)) + 1)
    else:
        ns = np.asarray(n, dtype=int)
    if ns.size == 0 or ns.min() < 1 or (not replace and ns.max() > total):
        limit = "1 or more" if replace else f"1..{total} without replacement"
        raise ValueError(f"n must be {limit}")
    weights = max_weights(total, ns, replace)
    mean = weights @ values
    sd = np.sqrt(np.clip((weights * (values[None, :] - mean[:, None]) ** 2).sum(axis=1), 0, None))
    out = pd.DataFrame({"n": ns, "expected": mean, "sd": sd})
    if bootstrap > 0:
        rng = np.random.default_rng(seed)
        resampled = np.sort(rng.choice(values, size=(bootstrap, total), replace=True), axis=1)
        curves = resampled @ weights.T
        tail = (1 - level) / 2
        out["lo"], out["hi"] = np.quantile(curves, tail, axis=0), np.quantile(curves, 1 - tail, axis=0)
    return out


def expected_max_curves(results: Results, replace: bool = True, bootstrap: int = 0) -> pd.DataFrame:
    """expected_max per task, arm and eval frequency, n = 1..N of that group (long format)."""
    rows = []
    for (task, arm), frame in results.groups():
        for frequency in FREQUENCIES:
            scores = score_array(frame, frequency)
            if len(scores):  # a group whose runs recorded no finite score has no curve
                curve = expected_max(scores, replace=replace, bootstrap=bootstrap)
                rows.append(curve.assign(task=task, arm=arm, frequency=frequency))
    if not rows:
        raise NotEnoughData("no run recorded a finite score: there is no expected maximum to draw")
    return pd.concat(rows, ignore_index=True)


def expected_max_table(curves: pd.DataFrame, ns: Sequence[int] = (1, 5, 10)) -> pd.DataFrame:
    """E[max_n] +- sd at a few n (and at N, the size of each group) per task, arm and frequency."""
    rows = []
    for (task, arm, frequency), curve in curves.groupby(["task", "arm", "frequency"], sort=False):
        total = int(curve["n"].max())
        row = {"task": task, "arm": arm, "frequency": FREQUENCIES[frequency], "N": total}
        for n in sorted({*(k for k in ns if k < total), total}):
            point = curve[curve["n"] == n].iloc[0]
            row[f"E[max {n if n < total else 'N'}]"] = f"{point.expected:.4f} ± {point.sd:.4f}"
        rows.append(row)
    return pd.DataFrame(rows)
