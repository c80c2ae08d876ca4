"""The verdict machinery's error rates, measured by simulation (reproduce.calibration), and the analysis decisions
whose rates were wrong before: the direction of a comparison, churn over examples, seed transfer over task pairs.

Each rate is a share of seeded replications; the bounds allow the Monte Carlo error of that share (one-sided 95%)."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from steadytune.reproduce.calibration import CHECKED, LIMITS, rates

REPLICATIONS = 600
SLACK = 1.645 * math.sqrt(0.05 * 0.95 / REPLICATIONS)


@pytest.mark.parametrize("scenario", CHECKED, ids=lambda s: s.describe())
def test_verdicts_are_calibrated_at_5_and_10_runs_per_arm(scenario):
    measured = rates(scenario, REPLICATIONS, seed=1)
    assert measured.coverage >= 0.93, measured
    if scenario.at_sesoi:
        assert measured.does_not_hold <= 0.05 + SLACK, measured  # at a true effect equal to the SESOI
    else:
        assert measured.holds <= 0.05 + SLACK, measured  # under no effect


def test_the_reported_limit_is_what_five_runs_can_see():
    # One arm fails 30% of the time, the other never: in 17% of tasks the failing arm shows no failure in 5 runs, so
    # no interval from them covers; at 10 runs the same interval covers again. The docs state these figures.
    five, ten = (rates(scenario, 300, seed=1) for scenario in LIMITS[:2])
    assert five.coverage < 0.9 < ten.coverage


def test_choosing_the_direction_from_the_data_doubled_false_positives_and_no_longer_does():
    from steadytune.analysis.aso import BETTER_BELOW, aso
    from steadytune.analysis.compare import better_arm, permutation_test

    rng = np.random.default_rng(0)
    replications, from_the_data, now = 400, 0, 0
    for r in range(replications):
        a, b = rng.normal(0, 1, 5), rng.normal(0, 1, 5)  # one process: neither is better
        higher, lower = (a, b) if a.mean() >= b.mean() else (b, a)
        from_the_data += aso(higher, lower, seed=r) < BETTER_BELOW  # the old rule
        p = permutation_test(a, b)
        now += better_arm(p, aso(a, b, num_comparisons=2, seed=r), aso(b, a, num_comparisons=2, seed=r)) != "neither"
    assert from_the_data / replications > 0.09
    assert now / replications <= 0.05 + 1.645 * math.sqrt(0.05 * 0.95 / replications)


def _runs(rng, runs: int, difficulty: np.ndarray) -> np.ndarray:
    """Correct (1) or wrong (0) per run and example: each run has its own effect (its seed), sd 0.6 on the logit."""
    logits = difficulty[None, :] + rng.normal(0, 0.6, (runs, 1))
    return (rng.random(logits.shape) < 1 / (1 + np.exp(-logits))).astype(int)


def test_churn_is_compared_over_runs_not_examples():
    from steadytune.analysis.instability import churn_permutation_p, flip_rates

    rng = np.random.default_rng(0)
    replications, wilcoxon, runs = 200, 0, 0
    for _ in range(replications):
        difficulty = rng.normal(1, 1.5, 277)
        a, b = _runs(rng, 5, difficulty), _runs(rng, 5, difficulty)  # both arms from one process
        fa, fb = flip_rates(a), flip_rates(b)
        differs = fa != fb
        wilcoxon += stats.wilcoxon(fa[differs], fb[differs]).pvalue < 0.05  # the old test, over examples
        runs += churn_permutation_p(a, b) < 0.05
    assert wilcoxon / replications > 0.25
    assert runs / replications <= 0.05 + 1.645 * math.sqrt(0.05 * 0.95 / replications)
    # and it finds a real difference in churn
    difficulty = rng.normal(1, 1.5, 277)
    stable = (rng.random((5, 277)) < 1 / (1 + np.exp(-difficulty - 3))).astype(int)
    assert churn_permutation_p(stable, _runs(rng, 5, difficulty)) < 0.05


def test_seed_transfer_interval_covers_when_every_task_pair_shares_the_seeds():
    import pandas as pd

    from steadytune.analysis.results import Results
    from steadytune.reproduce.claims import ClaimData
    from steadytune.reproduce.claims.dodge import wi_transfer

    rho, tasks, seeds = 0.5, 4, 10
    truth = 6 / math.pi * math.asin(rho / 2)  # Spearman's rho of a bivariate normal with correlation rho
    from steadytune.reproduce.statistics import pooled_spearman

    rng = np.random.default_rng(2)
    replications, covered, as_strata = 100, 0, 0
    for _ in range(replications):
        quality = rng.normal(size=seeds)  # a seed's shared goodness, seen by every task
        rows = [{"id": k, "task": f"t{t}", "wi_seed": s, "do_seed": 1, "status": "complete",
                 "final": 0.7 + 0.05 * (math.sqrt(rho) * quality[s] + math.sqrt(1 - rho) * rng.normal()),
                 "baseline_metric": 0.5}
                for k, (t, s) in enumerate((t, s) for t in range(tasks) for s in range(seeds))]
        frame = pd.DataFrame(rows)
        data = ClaimData("published", [f"t{t}" for t in range(tasks)], {"grid": Results(frame, pd.DataFrame(), frame)})
        estimate = wi_transfer(data).estimate
        covered += estimate.low <= truth <= estimate.high
        # the old estimate: every task pair an independent stratum, Fisher-z weights
        means = frame.pivot_table(index="wi_seed", columns="task", values="final")
        pairs = [(means[a], means[b], k) for k, (a, b) in enumerate(
            (a, b) for i, a in enumerate(means.columns) for b in means.columns[i + 1:])]
        old, _ = pooled_spearman(np.concatenate([x for x, _, _ in pairs]), np.concatenate([y for _, y, _ in pairs]),
                                 np.concatenate([np.full(seeds, k) for _, _, k in pairs]))
        as_strata += old.low <= truth <= old.high
    assert as_strata / replications < 0.87
    assert covered / replications >= 0.9
