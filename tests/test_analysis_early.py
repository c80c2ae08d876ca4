"""Early vs final: 'latest evaluation at or before F', the planner's budget, and planted answers it must recover."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from steadytune.analysis import (
    NotEnoughData,
    build_results,
    early_final_correlation,
    expected_max,
    plan_early_stopping,
    recommend,
    scores_at,
    simulate_early_stopping,
)

FRACTIONS = np.round(np.arange(1, 10) / 10, 6)


def test_scores_at_takes_the_latest_evaluation_at_or_before_f():
    trajectory = pd.DataFrame({"trial_id": [1, 1, 1, 2], "fraction": [0.2, 0.5, 1.0, 0.2], "value": [0.6, 0.7, 0.8, 0.4]})
    table = scores_at(trajectory, [0.1, 0.2, 0.49, 0.5, 0.99, 1.0])
    assert np.isnan(table.loc[1, 0.1])
    assert table.loc[1].tolist()[1:] == [0.6, 0.6, 0.7, 0.7, 0.8]
    assert table.loc[2].tolist()[1:] == [0.4] * 5  # a run that stopped early keeps its last value


def test_every_plan_is_affordable():
    rng = np.random.default_rng(0)
    final = rng.uniform(size=50)
    plans = simulate_early_stopping(final[:, None] * FRACTIONS[None, :], final, FRACTIONS, budget=5, n_sim=200)
    assert (plans["cost"] <= 5 + 1e-9).all() and (plans["P"] <= plans["T"]).all() and (plans["P"] >= 1).all()
    assert plans["cost"].to_numpy() == pytest.approx((plans["T"] * plans["F"] + plans["P"] * (1 - plans["F"])).to_numpy())
    assert plans["T"].max() == 40  # 8B; 12B = 60 exceeds B / F_min - (1 - F_min) / F_min = 41


def test_planted_predictive_early_scores_favour_an_early_cut():
    rng = np.random.default_rng(1)
    final = rng.uniform(0.5, 0.9, 200)
    early = final[:, None] * FRACTIONS[None, :]  # same ranking at every point: early perfectly predicts final
    budget = 4
    plans = simulate_early_stopping(early, final, FRACTIONS, budget)
    plain = expected_max(final, n=[budget])["expected"].iloc[0]
    # training B runs fully is also in the grid (T = P = B); the simulation must agree with the formula
    full = plans[(plans["T"] == budget) & (plans["P"] == budget)]["expected"]
    assert full.to_numpy() == pytest.approx(plain, abs=0.005)
    best = recommend(plans)
    assert best["F"] == pytest.approx(0.1) and best["T"] >= 4 * budget
    assert best["expected"] > plain + 0.02


def test_uninformative_early_scores_do_not_pay():
    rng = np.random.default_rng(2)
    final = rng.uniform(0.5, 0.9, 200)
    early = rng.uniform(size=(200, FRACTIONS.size))  # unrelated to the final score
    budget = 4
    best = recommend(simulate_early_stopping(early, final, FRACTIONS, budget))
    plain = expected_max(final, n=[budget])["expected"].iloc[0]
    assert best["expected"] <= plain + 0.01


def planted_results(runs: int = 30, noise: float = 0.0, total: int = 100, every: int = 10):
    """Runs whose dev score climbs to a planted quality, with optional evaluation noise; one diverged early."""
    rng = np.random.default_rng(3)
    trials, curves = [], []
    for trial_id in range(1, runs + 1):
        quality = rng.uniform(0.55, 0.85)
        status, last = ("diverged", 30) if trial_id == 1 else ("complete", total)
        trials.append(dict(id=trial_id, task="rte", recipe="r", status=status, wi_seed=trial_id, do_seed=1,
                           metric="accuracy", final_metric=np.nan, best_metric=np.nan, baseline_metric=0.527,
                           total_steps=total))
        for step in range(every, last + 1, every):
            value = quality - 0.2 * (1 - step / total) + (rng.normal(0, noise) if step < total else 0)
            curves.append(dict(trial_id=trial_id, step=step, epoch=step / 50, split="dev", metric="accuracy", value=value))
    trials.append({**trials[-1], "id": runs + 1, "status": "stopped"})  # stopped runs are not results
    curves.append(dict(trial_id=runs + 1, step=10, epoch=0.2, split="dev", metric="accuracy", value=0.9))
    return build_results(pd.DataFrame(trials), pd.DataFrame(curves))


def test_correlation_of_early_with_final():
    exact = early_final_correlation(planted_results()).set_index("fraction")
    assert len(exact) == 10 and exact.loc[1.0, "runs"] == 30
    assert exact.loc[[0.4, 0.5, 0.9, 1.0], "spearman rho"].to_numpy() == pytest.approx(1.0)
    noisy = early_final_correlation(planted_results(noise=0.05)).set_index("fraction")
    assert noisy.loc[0.1, "spearman rho"] < 0.95 and noisy.loc[1.0, "spearman rho"] == pytest.approx(1.0)


def test_planner_on_recorded_curves():
    [plan] = plan_early_stopping(planted_results(), budget=3, n_sim=500)
    assert plan.runs == 30 and plan.budget == 3
    assert set(plan.plans["F"]).issubset(set(np.round(np.arange(1, 10) / 10, 6)))
    assert plan.best["F"] <= 0.2 and plan.best["expected"] > plan.plain
    with pytest.raises(NotEnoughData):
        plan_early_stopping(planted_results(runs=2), budget=3)
