"""What each study policy would have reached on a recorded complete grid, for a budget in full-trial units,
by resampling the grid's runs (no training). How a user picks a policy before spending compute.

- full: train B runs to the end; expected best = E[max of B] (analysis.expected, exact).
- dodge: Dodge et al.'s rule, start T, cut at F, continue the P best by dev score (analysis.early's
  simulation; the best affordable plan).
- replace: draw runs one after another; a run the forecaster flags at F is stopped there (cost F) and the
  next one takes its place; an unflagged run is trained fully (cost 1); until the budget is spent.
- dodge+replace: Dodge's rule whose flagged runs are stopped at the cut and never continued.
Each policy's expected failures count the failed runs among those it trains to the end. A draw in which a
policy trains no run to the end (every run flagged) scores the grid's worst final score: it found nothing. The same random
draws serve every policy and budget (common random numbers), so their differences are not simulation noise.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..analysis.early import recommend, simulate_early_stopping
from ..analysis.expected import expected_max

POLICIES = ("full", "dodge", "replace", "dodge+replace")


def _replace(final: np.ndarray, failed: np.ndarray, flagged: np.ndarray, fraction: float, budget: float,
             draws: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Best final score and failures among fully trained runs, per row of draws (runs in drawing order)."""
    cost = np.where(flagged[draws], fraction, 1.0)
    within = np.cumsum(cost, axis=1) <= budget + 1e-9
    trained = within & ~flagged[draws]
    best = np.where(trained, final[draws], final.min()).max(axis=1)
    return best, (trained & failed[draws]).sum(axis=1)


def _dodge_replace(final: np.ndarray, failed: np.ndarray, early: np.ndarray, flagged: np.ndarray, fraction: float, budget: float,
                   starts: list[int], draws: np.ndarray) -> pd.DataFrame:
    rows = []
    ranked = np.where(np.isnan(early) | flagged, -np.inf, early)  # flagged runs are never continued
    for t in starts:
        most_kept = min(t, int(np.floor((budget - t * fraction) / (1 - fraction) + 1e-9)))
        if most_kept < 1:
            continue
        picked = draws[:, :t]
        order = np.argsort(-ranked[picked], axis=1, kind="stable")
        eligible = np.take_along_axis(~flagged[picked], order, axis=1)
        scores = np.where(eligible, np.take_along_axis(final[picked], order, axis=1), final.min())
        best_so_far = np.maximum.accumulate(scores, axis=1)
        failures = np.cumsum(eligible & np.take_along_axis(failed[picked], order, axis=1), axis=1)
        for p in range(1, most_kept + 1):
            rows.append({"T": t, "F": fraction, "P": p, "cost": t * fraction + p * (1 - fraction),
                         "expected": best_so_far[:, p - 1].mean(), "sd": best_so_far[:, p - 1].std(),
                         "failures": failures[:, p - 1].mean()})
    return pd.DataFrame(rows, columns=["T", "F", "P", "cost", "expected", "sd", "failures"])


def simulate(final: np.ndarray, failed: np.ndarray, early: np.ndarray, flagged: np.ndarray, fraction: float,
             budget: int, n_sim: int = 2000, seed: int = 0) -> pd.DataFrame:
    """One row per policy: expected best final score, its sd, expected failures trained to the end, and cost
    (the budget spent, in full-trial units). `early`: each run's dev score at `fraction` (NaN: none yet)."""
    final, failed = np.asarray(final, float), np.asarray(failed, bool)
    early, flagged = np.asarray(early, float), np.asarray(flagged, bool)
    rng = np.random.default_rng(seed)
    starts = [budget * k for k in (1, 2, 3, 4, 6, 8)]
    longest = max(max(starts), int(np.ceil(budget / fraction)) + 1)
    draws = rng.integers(0, len(final), size=(n_sim, longest))
    full = expected_max(final, n=[budget]).iloc[0]
    rows = [{"policy": "full", "expected": full["expected"], "sd": full["sd"], "failures": budget * failed.mean(),
             "cost": float(budget)}]
    plans = simulate_early_stopping(early[:, None], final, [fraction], budget, starts, n_sim=n_sim, seed=seed)
    if not plans.empty:
        plan = recommend(plans, n_sim)
        kept = int(plan["P"])
        rows.append({"policy": "dodge", "expected": plan["expected"], "sd": plan["sd"],
                     "failures": kept * _kept_failure_rate(early, failed, draws[:, :int(plan["T"])], kept),
                     "cost": plan["cost"]})
    best, failures = _replace(final, failed, flagged, fraction, budget, draws)
    rows.append({"policy": "replace", "expected": best.mean(), "sd": best.std(), "failures": failures.mean(),
                 "cost": float(budget)})
    both = _dodge_replace(final, failed, early, flagged, fraction, budget, starts, draws)
    if not both.empty:
        plan = recommend(both, n_sim)
        rows.append({"policy": "dodge+replace", "expected": plan["expected"], "sd": plan["sd"],
                     "failures": plan["failures"], "cost": plan["cost"]})
    return pd.DataFrame(rows, columns=["policy", "expected", "sd", "failures", "cost"])


def _kept_failure_rate(early: np.ndarray, failed: np.ndarray, picked: np.ndarray, kept: int) -> float:
    """Share of failed runs among the `kept` best-ranked of each draw."""
    ranked = np.where(np.isnan(early), -np.inf, early)
    order = np.argsort(-ranked[picked], axis=1, kind="stable")[:, :kept]
    return float(np.take_along_axis(failed[picked], order, axis=1).mean())


def budget_curve(final: np.ndarray, failed: np.ndarray, early: np.ndarray, flagged: np.ndarray, fraction: float,
                 budgets: list[int], n_sim: int = 300, seed: int = 0) -> pd.DataFrame:
    """simulate() at each budget, stacked: budget, policy, expected, sd, failures, cost (for a plot)."""
    return pd.concat([simulate(final, failed, early, flagged, fraction, b, n_sim, seed).assign(budget=b)
                      for b in budgets], ignore_index=True)


def compute_to_reach(final: np.ndarray, failed: np.ndarray, early: np.ndarray, flagged: np.ndarray, fraction: float,
                     n_sim: int = 500, seed: int = 0) -> pd.DataFrame:
    """Per policy, the least budget (as a share of the grid's N full runs) whose expected best reaches the full
    grid's (E[max of N]); NaN where no budget up to N does."""
    runs = len(final)
    target = expected_max(final, n=[runs]).iloc[0]["expected"]
    reached: dict[str, float] = {}
    for budget in range(1, runs + 1):
        table = simulate(final, failed, early, flagged, fraction, budget, n_sim, seed)
        for row in table.itertuples():
            if row.policy not in reached and row.expected >= target - 1e-12:
                reached[row.policy] = row.cost / runs
        if len(reached) == len(POLICIES):
            break
    return pd.DataFrame({"policy": list(POLICIES), "compute_share": [reached.get(p, np.nan) for p in POLICIES]})
