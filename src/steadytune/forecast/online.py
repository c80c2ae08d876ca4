"""The online failure forecaster: fitted on the study's own complete runs, trusted only once it checks out.

A forecaster fitted on other tasks did not carry over (docs/forecast/index.md): within one grid the signal was there
(AUC 0.92 at 30% of training), across tasks it was not. So a study fits its own:
- its first runs train fully, in an order that spreads the WI and DO seeds (`spread_order`), so they do not share
  one seed's luck;
- at a few planned looks (`planned_looks`: a number of complete runs), it checks itself: a label-permutation test of
  the leave-one-WI-seed-out AUC. Seeds are the independent units: a WI seed's runs share its head, so holding out one
  run at a time would let its siblings vouch for it, and a rank test of the left-out scores, which takes them as
  independent, acted on noise in 14% of simulated studies;
- it acts once a look's p-value is at most alpha / (number of looks), Bonferroni over the looks, and the AUC is at
  least `min_auc`. Until then the study trains fully and says why in one line.

The check scores runs with a shrunk LDA direction (closed form: 99 permutations cost little); the forecaster that
flags runs once the check has passed is the logistic one of forecast/model.py, fitted on every complete run.
`act_rate` measures by simulation how often the check acts at any look, with no signal and with a planted one;
tests/test_forecast_online.py holds the defaults to at most 5% on noise.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .features import FEATURES


@dataclass(frozen=True)
class OnlineSettings:
    fraction: float = 0.3  # where it decides: within a grid the signal was at 0.92 AUC at 30%, 0.65-0.76 at 20%
    first_look: int = 10  # complete runs at the first look
    look_every: int = 5  # complete runs between looks
    looks: int = 3  # looks at most: the Bonferroni divisor
    alpha: float = 0.05  # the chance, over all looks, that it acts on a forecaster with no signal
    min_auc: float = 0.7  # and the left-out AUC it must reach as well
    permutations: int = 99
    threshold: float = 0.5  # P(failed) at which a run is flagged, once it acts


@dataclass(frozen=True)
class Check:
    runs: int
    failed: int
    auc: float | None  # the left-out AUC (None: no two outcomes to tell apart)
    p: float | None  # its permutation p-value
    passed: bool
    reason: str  # one line: why it acts, or why not yet


def planned_looks(settings: OnlineSettings) -> list[int]:
    """The numbers of complete runs at which the study checks itself."""
    return [settings.first_look + k * settings.look_every for k in range(settings.looks)]


def spread_order(cells: list[tuple[int, int]]) -> list[int]:
    """Indices of (WI, DO) cells in an order whose first runs cover distinct WI and distinct DO seeds: the grid's
    diagonals one after another ((1,1), (2,2), ..., then (1,2), (2,3), ...), by rank of each seed."""
    wis = sorted({wi for wi, _ in cells})
    dos = sorted({do for _, do in cells})
    wi_rank, do_rank = {wi: i for i, wi in enumerate(wis)}, {do: i for i, do in enumerate(dos)}
    size = max(len(wis), len(dos), 1)

    def key(index: int) -> tuple[int, int, int]:
        wi, do = cells[index]
        return (do_rank[do] - wi_rank[wi]) % size, wi_rank[wi], index

    return sorted(range(len(cells)), key=key)


def left_out_scores(x: np.ndarray, failed: np.ndarray, wi: np.ndarray, shrink: float = 0.5) -> np.ndarray:
    """Each run's score on a shrunk LDA discriminant fitted without its WI seed's runs: its distance from that
    fold's boundary, in that fold's sd (NaN where the other seeds' runs hold one outcome only)."""
    scores = np.full(len(failed), np.nan)
    for seed in np.unique(wi):
        held = wi == seed
        f, rest = failed[~held], x[~held]
        if f.all() or not f.any():
            continue
        bad, good = rest[f].mean(axis=0), rest[~f].mean(axis=0)
        centered = np.where(f[:, None], rest - bad, rest - good)
        cov = centered.T @ centered / max(len(rest) - 2, 1)
        cov = (1 - shrink) * cov + shrink * np.eye(x.shape[1]) * max(np.trace(cov) / x.shape[1], 1e-12)
        direction = np.linalg.solve(cov, bad - good)
        # Distance from the fold's own boundary, in its own sd: scores of different folds are pooled for one AUC.
        spread = math.sqrt(max(float(direction @ cov @ direction), 1e-12))
        scores[held] = (x[held] - (bad + good) / 2) @ direction / spread
    return scores


def auc(scores: np.ndarray, failed: np.ndarray) -> float | None:
    """P(a failed run scores above a good one), ties half; None without both outcomes among the scored runs."""
    scored = ~np.isnan(scores)
    s, f = scores[scored], failed[scored]
    if f.all() or not f.any():
        return None
    ranks = pd.Series(s).rank().to_numpy()
    bad = int(f.sum())
    return float((ranks[f].sum() - bad * (bad + 1) / 2) / (bad * (len(f) - bad)))


def self_check(table: pd.DataFrame, failed: np.ndarray, wi: np.ndarray, settings: OnlineSettings,
               rng: np.random.Generator) -> Check:
    """The check at one look: the left-out AUC and its label-permutation p-value, against the Bonferroni bar."""
    failed, wi = np.asarray(failed, bool), np.asarray(wi)
    x = table[list(FEATURES)].to_numpy(dtype=float)
    x = (x - x.mean(axis=0)) / np.where(x.std(axis=0) > 0, x.std(axis=0), 1.0)
    runs, bad = len(failed), int(failed.sum())
    if bad == 0 or bad == runs or len(np.unique(wi)) < 3:
        return Check(runs, bad, None, None, False, f"{runs} complete run(s), {bad} failed, over "
                     f"{len(np.unique(wi))} WI seed(s): it needs both outcomes over 3 seeds to check itself")
    observed = auc(left_out_scores(x, failed, wi), failed)
    if observed is None:
        return Check(runs, bad, None, None, False, "no WI seed's runs can be scored by the others': not yet")
    null = [auc(left_out_scores(x, labels, wi), labels)
            for labels in (rng.permutation(failed) for _ in range(settings.permutations))]
    null = np.array([value for value in null if value is not None])
    p = float((1 + (null >= observed).sum()) / (1 + len(null)))
    bar = settings.alpha / settings.looks
    passed = p <= bar and observed >= settings.min_auc
    verdict = "it acts" if passed else "it does not act yet"
    return Check(runs, bad, observed, p, passed, f"left-out AUC {observed:.2f} on {runs} runs ({bad} failed), "
                 f"permutation p {p:.3f} against {bar:.3g} and AUC {settings.min_auc:g}: {verdict}")


def act_rate(grid: int, failure_rate: float, separation: float, settings: OnlineSettings, replications: int,
             seed: int = 0) -> float:
    """The share of simulated `grid` x `grid` studies in which the check acts at any planned look. Runs complete in
    `spread_order`; a WI seed shares a random offset (sd 0.5) across its runs; a failed run's features are shifted by
    `separation` sd (0: no signal, where any act is a false one)."""
    rng = np.random.default_rng(seed)
    cells = [(wi, do) for wi in range(grid) for do in range(grid)]
    order = spread_order(cells)
    acted = 0
    for _ in range(replications):
        wi = np.array([cells[i][0] for i in order])
        failed = rng.random(len(cells)) < failure_rate
        x = rng.normal(size=(len(cells), len(FEATURES))) + rng.normal(scale=0.5, size=(grid, len(FEATURES)))[wi]
        x[failed] += separation
        table = pd.DataFrame(x, columns=list(FEATURES))
        for runs in (n for n in planned_looks(settings) if n <= len(cells)):
            if self_check(table.iloc[:runs], failed[:runs], wi[:runs], settings, rng).passed:
                acted += 1
                break
    return acted / replications

