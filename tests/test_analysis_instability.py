"""Per-example instability against brute force over pairs of runs, and statsmodels' Fleiss' kappa by hand."""
from __future__ import annotations

from itertools import combinations

import numpy as np
import pandas as pd
import pytest

from steadytune.analysis import build_results
from steadytune.analysis.instability import (
    arm_predictions,
    compare_churn,
    extreme_examples,
    flip_rates,
    instability_table,
    right_counts,
)
from steadytune.analysis.results import NotEnoughData

CURVES = pd.DataFrame(columns=["trial_id", "step", "epoch", "split", "metric", "value"])


def planted(runs: int = 8, examples: int = 300, churn: dict[str, float] | None = None, seed: int = 0):
    """Two arms on the same examples; in each run an example's prediction flips with the arm's churn."""
    churn = churn or {"stable": 0.05, "churny": 0.3}
    rng = np.random.default_rng(seed)
    gold = rng.integers(0, 2, examples)
    trials, rows = [], []
    for recipe, rate in churn.items():
        for run in range(runs):
            trial_id = len(trials) + 1
            predicted = np.where(rng.random(examples) < rate, 1 - gold, gold)
            trials.append(dict(id=trial_id, task="rte", recipe=recipe, status="complete", wi_seed=run, do_seed=1,
                               metric="accuracy", final_metric=float((predicted == gold).mean()), best_metric=np.nan,
                               baseline_metric=0.5, total_steps=10))
            for point, values in (("final", predicted), ("gold", gold)):
                rows.append(pd.DataFrame({"trial_id": trial_id, "split": "dev", "point": point, "step": 10,
                                          "example": np.arange(examples), "value": values.astype(float)}))
    return build_results(pd.DataFrame(trials), CURVES, pd.concat(rows, ignore_index=True)), gold


def test_flip_rates_and_disagreement_equal_brute_force_over_pairs():
    rng = np.random.default_rng(1)
    predictions = rng.integers(0, 3, (6, 50))
    pairs = list(combinations(range(6), 2))
    brute = np.mean([predictions[i] != predictions[j] for i, j in pairs], axis=0)
    assert flip_rates(predictions) == pytest.approx(brute)
    per_pair = np.mean([(predictions[i] != predictions[j]).mean() for i, j in pairs])
    assert flip_rates(predictions).mean() == pytest.approx(per_pair)


def test_fleiss_kappa_by_hand():
    # 4 examples, 3 runs, 2 classes: counts (3,0), (0,3), (2,1), (1,2)
    predictions = np.array([[0, 1, 0, 1], [0, 1, 0, 1], [0, 1, 1, 0]])
    results, _ = planted()
    arm = arm_predictions(results)[0]
    table = instability_table([type(arm)("t", "a", [1, 2, 3], predictions, np.array([0, 1, 0, 1]))]).iloc[0]
    p_i = np.array([1, 1, 1 / 3, 1 / 3])  # per-example agreement: (sum n_c^2 - n) / (n (n - 1))
    p_bar, p_e = p_i.mean(), 0.5 ** 2 + 0.5 ** 2
    assert table["Fleiss kappa"] == pytest.approx((p_bar - p_e) / (1 - p_e))
    assert table["every run right"] == 0.5 and table["no run right"] == 0.0 and table["examples that flip"] == 0.5


def test_instability_finds_the_churny_arm_and_compares_on_the_same_examples():
    results, gold = planted()
    arms = arm_predictions(results)
    table = instability_table(arms).set_index("arm")
    assert table.loc["stable", "pairwise disagreement"] == pytest.approx(2 * 0.05 * 0.95, abs=0.02)
    assert table.loc["churny", "pairwise disagreement"] == pytest.approx(2 * 0.3 * 0.7, abs=0.03)
    assert table.loc["stable", "Fleiss kappa"] > table.loc["churny", "Fleiss kappa"]
    counts = right_counts(arms)
    assert counts.groupby("arm")["examples"].sum().tolist() == [300, 300]
    comparison = compare_churn(arms).iloc[0]
    # C(16, 8) splits of the runs are more than 9,999: random ones, + 1 as scipy. Only the observed split and its
    # mirror (2 in 12,870) are as extreme, so p is a few in 10,000.
    assert 1 / 10_000 <= comparison["permutation p (runs)"] <= 5 / 10_000
    assert comparison["p (Holm)"] == comparison["permutation p (runs)"]
    assert {comparison["arm A"], comparison["arm B"]} == {"stable", "churny"}
    listed = extreme_examples(arms, shown=5).set_index(["arm", "examples"])
    stable = arms[[a.arm for a in arms].index("stable")]
    never = np.flatnonzero(stable.correct.sum(axis=0) == 0)
    assert listed.loc[("stable", "no run right"), "count"] == never.size
    every = np.flatnonzero(stable.correct.sum(axis=0) == len(stable.trial_ids))
    assert listed.loc[("stable", "every run right"), "indices"].startswith(", ".join(map(str, every[:5])))


def test_runs_on_other_examples_are_not_pooled_and_regression_is_left_out():
    results, _ = planted(runs=3)
    other = results.predictions.copy()
    first = other["trial_id"] == 1
    other.loc[first & (other["point"] == "gold") & (other["example"] == 0), "value"] = 7.0  # another dev set
    arms = arm_predictions(build_results(results.all_trials, CURVES, other))
    assert sorted(len(a.trial_ids) for a in arms) == [2, 3]  # trial 1 stands alone, so it is left out
    regression = results.all_trials.assign(metric="pearson")
    with pytest.raises(NotEnoughData, match="classification"):
        arm_predictions(build_results(regression, CURVES, results.predictions))
    with pytest.raises(NotEnoughData, match="no per-example predictions"):
        arm_predictions(build_results(results.all_trials, CURVES))
