"""How early a run's dev score tells its final one, and Dodge et al.'s early-stopping plan, simulated.

The plan: start T trials, train all of them to a fraction F of the schedule, keep the P best by dev
score at that point and train those to the end. Its cost in full-trial units is T*F + P*(1-F), which
must not exceed the budget B of trials one could have trained fully. The simulation resamples T of
the recorded trials (with replacement, many times), ranks them by their dev score at F (the latest
evaluation at or before step F * total_steps; a run that diverged before any evaluation ranks last)
and takes the best final score among the P kept; plain training is E[max of B] of the same scores.
Stopped trials are excluded (see results.py): they have no final score.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from ..training.records import TrialStatus
from .early_stopping import EarlyStop
from .expected import expected_max
from .results import NotEnoughData, Results, dev_trajectory

_FRACTION_DECIMALS = 6  # step / total_steps, rounded so equal eval points of different trials match


def scores_at(trajectory: pd.DataFrame, fractions: Sequence[float]) -> pd.DataFrame:
    """trial_id x fraction: the latest dev score at or before each fraction of training (NaN before the first)."""
    table = trajectory.assign(fraction=trajectory["fraction"].round(_FRACTION_DECIMALS)).pivot_table(
        index="trial_id", columns="fraction", values="value", aggfunc="last")
    wanted = np.round(np.asarray(fractions, dtype=float), _FRACTION_DECIMALS)
    columns = np.union1d(table.columns.to_numpy(dtype=float), wanted)
    return table.reindex(columns=columns).ffill(axis=1)[wanted]


def eval_fractions(trajectory: pd.DataFrame) -> np.ndarray:
    """The distinct evaluation points, as fractions of training."""
    return np.unique(trajectory["fraction"].round(_FRACTION_DECIMALS).to_numpy())


def early_final_correlation(results: Results, score: str = "final") -> pd.DataFrame:
    """Per task, arm and evaluation point: Spearman rho (and p) between the dev score there and the final score."""
    rows = []
    trajectory = dev_trajectory(results.trials, results.curves)
    for (task, arm), frame in results.groups():
        own = trajectory[trajectory["trial_id"].isin(frame["id"])]
        if len(frame) < 3 or own.empty:
            continue
        fractions = eval_fractions(own)
        early = scores_at(own, fractions)
        final = frame.set_index("id")[score]
        for fraction in fractions:
            pair = pd.concat([early[fraction], final], axis=1, join="inner").dropna()
            if len(pair) < 3:
                continue
            with warnings.catch_warnings():  # constant scores give nan: nothing can be told apart there
                warnings.simplefilter("ignore")
                rho, p = stats.spearmanr(pair.iloc[:, 0], pair.iloc[:, 1])
            rows.append({"task": task, "arm": arm, "fraction": fraction, "runs": len(pair),
                         "spearman rho": float(rho), "p": float(p)})
    if not rows:
        raise NotEnoughData("early-vs-final needs three or more runs with dev evaluations in one task and arm")
    return pd.DataFrame(rows)


def simulate_early_stopping(early: np.ndarray, final: np.ndarray, fractions: Sequence[float], budget: int,
                            starts: Sequence[int] | None = None, n_sim: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Expected best final score of every affordable (T, F, P), by resampling the recorded runs.

    early: runs x fractions dev scores at each F (NaN = no evaluation yet, ranks last); final: per run.
    starts: the T values to try (default B, 2B, 3B, 4B, 6B, 8B, 12B, 16B). The same draws serve every
    (T, F, P) (common random numbers), so differences between plans are not simulation noise.
    Columns: T, F, P, cost, expected, sd.
    """
    early, final = np.asarray(early, dtype=float), np.asarray(final, dtype=float)
    starts = sorted(set(starts or [budget * k for k in (1, 2, 3, 4, 6, 8, 12, 16)]))
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(final), size=(n_sim, max(starts)))
    ranked_early = np.where(np.isnan(early), -np.inf, early)
    rows = []
    for j, fraction in enumerate(fractions):
        if not 0 < fraction < 1:
            continue
        for t in starts:
            most_kept = min(t, int(np.floor((budget - t * fraction) / (1 - fraction) + 1e-9)))
            if most_kept < 1:
                continue
            picked = draws[:, :t]
            order = np.argsort(-ranked_early[picked, j], axis=1, kind="stable")
            best_so_far = np.maximum.accumulate(np.take_along_axis(final[picked], order, axis=1), axis=1)
            for p in range(1, most_kept + 1):
                outcome = best_so_far[:, p - 1]
                rows.append({"T": t, "F": float(fraction), "P": p, "cost": EarlyStop(t, float(fraction), p).cost(),
                             "expected": outcome.mean(), "sd": outcome.std()})
    return pd.DataFrame(rows, columns=["T", "F", "P", "cost", "expected", "sd"])


def recommend(plans: pd.DataFrame, n_sim: int = 2000) -> pd.Series:
    """The plan with the highest expected best score; among plans within one simulation standard error of it,
    the cheapest (then the earliest cut)."""
    top = plans.loc[plans["expected"].idxmax()]
    close = plans[plans["expected"] >= top["expected"] - top["sd"] / np.sqrt(n_sim)]
    return close.sort_values(["cost", "F", "T"]).iloc[0]


@dataclass(frozen=True)
class EarlyStoppingPlan:
    """The simulated plans of one task and arm, plain training's expectation and the recommended plan."""

    task: str
    arm: str
    budget: int
    runs: int
    plain: float  # E[max of B fully trained runs]
    plans: pd.DataFrame
    best: pd.Series


def plan_early_stopping(results: Results, budget: int, score: str = "final", n_sim: int = 2000,
                        seed: int = 0) -> list[EarlyStoppingPlan]:
    """simulate_early_stopping for every task and arm with enough runs, at the evaluation points every
    non-diverged run has reached."""
    trajectory = dev_trajectory(results.trials, results.curves)
    out = []
    for (task, arm), frame in results.groups():
        own = trajectory[trajectory["trial_id"].isin(frame["id"])]
        if len(frame) < 3 or own.empty:
            continue
        healthy = own[own["trial_id"].isin(frame.loc[frame["status"] == TrialStatus.COMPLETE, "id"])]
        first_eval = healthy.groupby("trial_id")["fraction"].min().max() if not healthy.empty else 1.0
        fractions = eval_fractions(own)
        fractions = fractions[(fractions >= round(first_eval, _FRACTION_DECIMALS)) & (fractions < 1)]
        if fractions.size == 0:
            continue
        early = scores_at(own, fractions).reindex(frame["id"])
        final = frame[score].to_numpy(dtype=float)
        plans = simulate_early_stopping(early.to_numpy(), final, fractions, budget, n_sim=n_sim, seed=seed)
        if plans.empty:
            continue
        plain = float(expected_max(final, n=[budget])["expected"].iloc[0])
        out.append(EarlyStoppingPlan(task, arm, budget, len(frame), plain, plans, recommend(plans, n_sim)))
    if not out:
        raise NotEnoughData("the early-stopping planner needs three or more runs with evaluations before the end")
    return out
