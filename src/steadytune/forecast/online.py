"""The online failure forecaster: fitted on the study's own complete runs, and trusted only once it checks out.

A forecaster fitted on other tasks did not carry over (forecast/index.md): within one grid the signal was there
(AUC 0.92 at 30% of training), across tasks it was not. So a study fits its own, as its runs complete:
- it waits for `min_runs` complete runs with both outcomes (failed and not), trained fully in an order that spreads
  the WI and DO seeds (`spread_order`), so the first runs do not share one seed's luck;
- it checks itself by leave-one-WI-seed-out AUC: for each WI seed, a forecaster fitted on the other seeds' runs
  scores that seed's runs. Seeds are the independent units: a WI seed's runs share its head, so holding out one
  run at a time would let its siblings vouch for it;
- it acts only when that AUC reaches `min_auc`; until then it says why in one line, and the study trains fully.

`check_rates` measures by simulation how often the self-check passes with no signal (the forecaster would act on
noise) and with a planted one; the test suite holds the defaults to it.

WIP, measured 2026-12-08 (100-150 replications each, 35% failures, 8 features, WI offsets of sd 0.5): one look at
12 runs with AUC >= 0.8 acts on noise in 13% of studies; at 16 runs, 2.7% (and on a 1-sd signal in 80%). Refitting
after every run of a 5 x 5 grid (`sequential_act_rate`) acts on noise in 29% (from 10 runs, AUC 0.8), 16% (10, 0.9)
and 10% (12, 0.9). A Mann-Whitney p-value of the left-out scores with Bonferroni over 3 planned looks still acts on
noise in 14%: a WI seed's left-out runs share its offset, so they are not independent. Next: a label-permutation
test of the left-out AUC at a few planned looks (its cost, ~100 permutations x the folds, is paid only at a look),
or a cheaper model for the check, calibrated by this simulation to act on noise in at most 5% of studies.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .features import FEATURES
from .model import Forecaster, ForecastError, fit


@dataclass(frozen=True)
class OnlineSettings:
    fraction: float = 0.3  # where it decides: within a grid the signal was at 0.92 AUC at 30%, 0.65-0.76 at 20%
    min_runs: int = 10  # complete runs, with both outcomes, before it fits
    min_auc: float = 0.8  # the leave-one-WI-seed-out AUC it must reach before it acts
    threshold: float = 0.5  # P(failed) at which a run is flagged


@dataclass(frozen=True)
class OnlineFit:
    forecaster: Forecaster | None  # None: it does not act yet
    auc: float | None  # the self-check's AUC, where there were enough runs to compute one
    runs: int
    failed: int
    reason: str | None  # why it does not act yet, in one line; None when it acts

    @property
    def acts(self) -> bool:
        return self.forecaster is not None


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


def leave_one_seed_out_auc(table: pd.DataFrame, failed: np.ndarray, wi_seeds: np.ndarray,
                           features: tuple[str, ...] = FEATURES) -> float | None:
    """AUC of P(failed) for each run from a forecaster fitted without its WI seed's runs; None when no two
    outcomes can be told apart (a fold with one outcome only is scored by the others' folds)."""
    from sklearn.metrics import roc_auc_score

    scores = np.full(len(failed), np.nan)
    for seed in np.unique(wi_seeds):
        held = wi_seeds == seed
        if failed[~held].all() or not failed[~held].any():
            continue
        model = fit(table[~held].reset_index(drop=True), pd.Series(failed[~held]), 1.0, "fold", features)
        scores[held] = model.probability(table[held])
    scored = ~np.isnan(scores)
    if failed[scored].all() or not failed[scored].any():
        return None
    return float(roc_auc_score(failed[scored], scores[scored]))


def fit_online(table: pd.DataFrame, failed: np.ndarray, wi_seeds: np.ndarray, settings: OnlineSettings,
               features: tuple[str, ...] = FEATURES) -> OnlineFit:
    """The study's forecaster from its complete runs (feature rows at `settings.fraction`), if it checks out."""
    failed, wi_seeds = np.asarray(failed, bool), np.asarray(wi_seeds)
    runs, bad = len(failed), int(failed.sum())
    if runs < settings.min_runs or bad == 0 or bad == runs:
        return OnlineFit(None, None, runs, bad, f"{runs} complete run(s), {bad} failed: it waits for "
                         f"{settings.min_runs} with both outcomes before it fits")
    if len(np.unique(wi_seeds)) < 3:
        return OnlineFit(None, None, runs, bad, f"the complete runs hold {len(np.unique(wi_seeds))} WI seed(s): "
                         f"its self-check holds one out at a time and needs 3")
    auc = leave_one_seed_out_auc(table, failed, wi_seeds, features)
    if auc is None or not math.isfinite(auc) or auc < settings.min_auc:
        shown = "undefined" if auc is None else f"{auc:.2f}"
        return OnlineFit(None, auc, runs, bad, f"its leave-one-WI-seed-out AUC on {runs} runs is {shown}, below "
                         f"{settings.min_auc:g}: it does not act yet")
    try:
        forecaster = fit(table, pd.Series(failed), settings.fraction,
                         f"{runs} complete runs of this study ({bad} failed), self-check AUC {auc:.2f}", features)
    except ForecastError as err:
        return OnlineFit(None, auc, runs, bad, str(err))
    return OnlineFit(forecaster, auc, runs, bad, None)


def check_rates(runs: int, failure_rate: float, separation: float, settings: OnlineSettings,
                replications: int = 200, seed: int = 0) -> dict[str, float]:
    """The self-check's error rates by simulation. Each replication is a study whose `runs` complete runs sit on a
    grid of WI x DO seeds (a WI seed shares a random offset across its runs, so seeds are the units, as in a real
    grid), where each feature of a failed run is shifted by `separation` standard deviations (0: no signal). Returns
    how often the forecaster acts, and, when it does, on `runs` fresh runs of the same study: the share of good runs
    it flags (each one a run stopped that would have been fine) and of failed runs it lets through."""
    rng = np.random.default_rng(seed)
    side = max(3, math.ceil(math.sqrt(runs)))
    acted, false_flags, missed = 0, [], []

    def study(offsets: np.ndarray) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
        wi = np.repeat(np.arange(side), side)[:runs]
        failed = rng.random(runs) < failure_rate
        x = rng.normal(size=(runs, len(FEATURES))) + offsets[wi]
        x[failed] += separation
        return pd.DataFrame(x, columns=list(FEATURES)), failed, wi

    for _ in range(replications):
        offsets = rng.normal(scale=0.5, size=(side, len(FEATURES)))
        table, failed, wi = study(offsets)
        result = fit_online(table, failed, wi, settings)
        if not result.acts:
            continue
        acted += 1
        fresh, fresh_failed, _ = study(offsets)
        flagged = result.forecaster.probability(fresh) >= settings.threshold
        if (~fresh_failed).any():
            false_flags.append(flagged[~fresh_failed].mean())
        if fresh_failed.any():
            missed.append((~flagged[fresh_failed]).mean())
    return {"acts": acted / replications,
            "good_flagged": float(np.mean(false_flags)) if false_flags else float("nan"),
            "failed_missed": float(np.mean(missed)) if missed else float("nan")}


def sequential_act_rate(grid: int, failure_rate: float, separation: float, settings: OnlineSettings,
                        replications: int = 200, seed: int = 0) -> dict[str, float]:
    """How often a study acts at any of its looks: a `grid` x `grid` WI x DO study whose runs complete one by one in
    `spread_order`, refitting after each from `settings.min_runs` on (as the online policy does). Failed runs'
    features are shifted by `separation` sd (0: no signal, so any act is a false one). Also returns the mean number
    of complete runs it had when it first acted."""
    rng = np.random.default_rng(seed)
    cells = [(wi, do) for wi in range(grid) for do in range(grid)]
    order = spread_order(cells)
    acted, first = 0, []
    for _ in range(replications):
        wi = np.array([cells[i][0] for i in order])
        failed = rng.random(len(cells)) < failure_rate
        x = rng.normal(size=(len(cells), len(FEATURES))) + rng.normal(scale=0.5, size=(grid, len(FEATURES)))[wi]
        x[failed] += separation
        table = pd.DataFrame(x, columns=list(FEATURES))
        for runs in range(settings.min_runs, len(cells) + 1):
            if fit_online(table.iloc[:runs], failed[:runs], wi[:runs], settings).acts:
                acted += 1
                first.append(runs)
                break
    return {"acts": acted / replications, "first_look": float(np.mean(first)) if first else float("nan")}
