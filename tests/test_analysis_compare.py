"""Recipe comparison: Table 1, Levene, permutation test, bootstrap CI, ASO, and seeds needed for power."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests

from steadytune.analysis import (
    NotEnoughData,
    adjust_pvalues,
    arm_labels,
    aso,
    bootstrap_diff_ci,
    build_results,
    compare_pairs,
    levene_by_task,
    permutation_test,
    recipe_table,
    seeds_needed,
    violation_ratio,
)

RNG = np.random.default_rng(0)
STABLE = 0.70 + RNG.normal(0, 0.01, 20)  # Mosbach-like: tight
UNSTABLE = np.concatenate([0.66 + RNG.normal(0, 0.03, 15), np.full(5, 0.527)])  # spread, with collapsed runs


def two_recipe_results():
    rows = []
    for recipe, scores in (("mosbach2021", STABLE), ("devlin2019", UNSTABLE)):
        for k, value in enumerate(scores):
            rows.append(dict(id=len(rows) + 1, task="rte", recipe=recipe, status="complete", wi_seed=k, do_seed=1,
                             metric="accuracy", final_metric=value, best_metric=value, baseline_metric=0.527,
                             total_steps=10))
    curves = pd.DataFrame(columns=["trial_id", "step", "epoch", "split", "metric", "value"])
    return build_results(pd.DataFrame(rows), curves)


def test_table_one_layout_and_levene():
    results = two_recipe_results()
    table = recipe_table(results).set_index("arm")
    row = table.loc["devlin2019"]
    assert (row["runs"], row["failed"]) == (20, 5)  # the collapsed runs sit exactly at the majority baseline
    assert row["std"] == pytest.approx(np.std(UNSTABLE, ddof=1)) and row["mean"] == pytest.approx(UNSTABLE.mean())
    assert row["median"] == pytest.approx(np.median(UNSTABLE)) and row["max"] == pytest.approx(UNSTABLE.max())
    assert table.loc["mosbach2021", "failed"] == 0
    levene = levene_by_task(results).iloc[0]
    expected = stats.levene(UNSTABLE, STABLE)
    assert levene["W"] == pytest.approx(expected.statistic) and levene["p"] == pytest.approx(expected.pvalue)
    assert levene["p"] < 0.01


def test_permutation_test_exact_small_case_and_planted_shift():
    # {1, 2} vs {3, 4}: of the 6 relabelings 1 is as low as the observed -2 and all 6 are as high: p = 2 * 1/6
    assert permutation_test([1, 2], [3, 4]) == 1 / 3
    assert permutation_test([3, 4], [1, 2], alternative="greater") == 1 / 6
    assert permutation_test(STABLE, STABLE - 0.03) < 0.001
    same = permutation_test(STABLE[:10], STABLE[10:])
    assert same > 0.05
    with pytest.raises(ValueError, match="alternative"):
        permutation_test([1, 2], [3, 4], alternative="bigger")


@pytest.mark.parametrize("n, m", [(5, 5), (4, 6), (3, 7)])
@pytest.mark.parametrize("alternative", ["two-sided", "greater", "less"])
def test_permutation_test_equals_scipy_where_it_is_exact(n, m, alternative):
    rng = np.random.default_rng(n * 10 + m)
    a, b = rng.normal(0.7, 0.03, n), rng.normal(0.68, 0.03, m)
    reference = stats.permutation_test((a, b), lambda x, y, axis: x.mean(axis=axis) - y.mean(axis=axis),
                                       permutation_type="independent", vectorized=True, n_resamples=9999,
                                       alternative=alternative)
    assert permutation_test(a, b, alternative=alternative) == pytest.approx(reference.pvalue, rel=1e-12)


def test_random_permutations_beyond_the_exact_case_agree_with_scipy_within_noise():
    a, b = STABLE[:9], STABLE[9:18] - 0.01  # C(18, 9) = 48620 relabelings > 9999: random ones
    reference = stats.permutation_test((a, b), lambda x, y, axis: x.mean(axis=axis) - y.mean(axis=axis),
                                       vectorized=True, n_resamples=9999, rng=np.random.default_rng(1)).pvalue
    assert permutation_test(a, b) == pytest.approx(reference, abs=4 * np.sqrt(reference * (1 - reference) / 9999) + 1e-3)


def test_p_values_outside_the_unit_interval_are_refused():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        adjust_pvalues([0.2, 1.3])
    with pytest.raises(ValueError):
        adjust_pvalues([-0.01])


def test_corrections_are_statsmodels_multipletests():
    raw = [0.01, 0.04, 0.03, 0.2, np.nan]
    for method in ("holm", "fdr_bh"):
        adjusted = adjust_pvalues(raw, method)
        assert adjusted[:4] == pytest.approx(multipletests(raw[:4], method=method)[1])
        assert np.isnan(adjusted[4])
    assert adjust_pvalues(raw, "holm")[0] == pytest.approx(0.04)  # 4 tests: the smallest times 4
    with pytest.raises(ValueError, match="correction"):
        adjust_pvalues(raw, "bonferroni-ish")


def test_bootstrap_interval_covers_the_planted_difference():
    lo, hi = bootstrap_diff_ci(STABLE + 0.05, STABLE)
    assert lo == pytest.approx(0.05, abs=0.01) and hi == pytest.approx(0.05, abs=0.01) and lo <= 0.05 <= hi
    lo, hi = bootstrap_diff_ci(STABLE, UNSTABLE)
    assert 0 < lo < STABLE.mean() - UNSTABLE.mean() < hi


@pytest.mark.parametrize("method", ["percentile", "bca"])
def test_bootstrap_interval_is_scipys(method):
    reference = stats.bootstrap((STABLE, UNSTABLE), lambda x, y, axis: x.mean(axis=axis) - y.mean(axis=axis),
                                n_resamples=10000, method="BCa" if method == "bca" else "percentile",
                                rng=np.random.default_rng(0)).confidence_interval
    assert bootstrap_diff_ci(STABLE, UNSTABLE, method=method) == pytest.approx((reference.low, reference.high))
    assert bootstrap_diff_ci([0.5, 0.5], [0.4, 0.4], method=method) == pytest.approx((0.1, 0.1))  # degenerate


def test_violation_ratio_by_hand_and_symmetry():
    # quantiles of a: 1, 2, 3, 4 on each quarter; b is 2.5 everywhere -> b - a = 1.5, .5, -.5, -1.5;
    # the violation (b above a) holds (2.25 + 0.25) of the total (2.25 + 0.25 + 0.25 + 2.25): 0.5
    assert float(violation_ratio(np.array([1.0, 2, 3, 4]), np.full(4, 2.5))) == pytest.approx(0.5, abs=0.02)
    assert float(violation_ratio(STABLE + 1, STABLE)) == 0.0  # a dominates b everywhere
    # b dominates a everywhere: 1, less deepsig's first point of the violation integral (198 of 199 equal parts)
    assert float(violation_ratio(STABLE, STABLE + 1)) == pytest.approx(198 / 199)
    forward, backward = violation_ratio(STABLE, UNSTABLE), violation_ratio(UNSTABLE, STABLE)
    assert forward + backward == pytest.approx(1.0, abs=0.02)  # up to the two skipped first points


def test_aso_confidence_correction():
    clearly = aso(STABLE + 0.05, STABLE, num_bootstrap_iterations=300)
    assert clearly < 0.2
    reverse = aso(STABLE, STABLE + 0.05, num_bootstrap_iterations=300)
    assert reverse > 0.5
    ratio = float(violation_ratio(STABLE, UNSTABLE))
    corrected = aso(STABLE, UNSTABLE, num_bootstrap_iterations=300)
    assert ratio <= corrected < 0.5  # the correction only raises the bound; still A is better


def test_seeds_needed():
    power, needed = seeds_needed(STABLE + 0.05, STABLE, n_resamples=100, n_perm=99)
    assert needed is not None and needed <= 4 and power["power"].iloc[-1] == 1.0
    # resampling power is the power to detect the *observed* difference: none here, so about alpha
    power, needed = seeds_needed(STABLE[:10], STABLE[:10], n_resamples=200, n_perm=99)
    assert needed is None and power["power"].max() < 0.15
    assert power["n"].tolist() == list(range(2, 11))


def test_compare_pairs_names_the_better_recipe():
    table, power = compare_pairs(two_recipe_results())
    row = table.iloc[0]
    assert (row["A"], row["B"]) == ("devlin2019", "mosbach2021")  # by name, never by which mean is higher
    assert row["mean A - B"] < 0 and row["permutation p"] < 0.01 and row["Levene p"] < 0.01
    assert row["ASO eps_min B>A"] < 0.2 and row["ASO eps_min A>B"] > 0.5 and row["better"] == "B"
    assert row["permutation p (Holm)"] == row["permutation p"]  # one pair: nothing to correct
    assert isinstance(row["seeds for power 0.8"], (int, np.integer))
    assert set(power.columns) == {"n", "power", "task", "pair"}
    one_recipe = two_recipe_results()
    one_recipe = build_results(one_recipe.all_trials[one_recipe.all_trials["recipe"] == "devlin2019"], one_recipe.curves)
    with pytest.raises(NotEnoughData):
        compare_pairs(one_recipe)


def test_settings_that_vary_within_a_recipe_make_separate_arms():
    trials = pd.DataFrame({"task": ["rte"] * 4 + ["mrpc"], "recipe": [None, None, "r", "r", None],
                           "cfg.lr": [1e-5, 2e-5, 2e-5, 2e-5, 1e-5], "cfg.wi_seed": [1, 2, 3, 4, 5],
                           "cfg.model": ["m"] * 5})
    # lr names the arms of the recipe-less trials on rte, so it names them on mrpc too: one name across tasks
    assert arm_labels(trials).tolist() == ["(no recipe) lr=1e-05", "(no recipe) lr=2e-05", "r", "r",
                                           "(no recipe) lr=1e-05"]


def test_a_field_set_for_some_trials_and_missing_for_others_labels_arms_without_crashing():
    # One --max-train 100000 trial beside trials without it: the missing field is NaN in the join, which pandas 3's
    # astype(str) kept as a float, and every reader of the store ended in a TypeError.
    trials = pd.DataFrame({"task": ["rte"] * 3, "recipe": ["devlin2019"] * 3, "cfg.max_train": [np.nan, np.nan, 1e5],
                           "cfg.wi_seed": [1, 2, 3], "cfg.model": ["m"] * 3})
    assert arm_labels(trials).tolist() == ["devlin2019 max_train=none", "devlin2019 max_train=none",
                                           "devlin2019 max_train=100000"]
