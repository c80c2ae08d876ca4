"""The reproduce tests against their references (scipy.stats, statsmodels) on the same data, and the verdict rules
on planted effects."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from steadytune.analysis.results import Results
from steadytune.reproduce.claims import CLAIMS, ClaimData
from steadytune.reproduce.landscapes import curvature, width
from steadytune.reproduce.statistics import (bootstrap_interval, mean_difference, median_deviations, one_sample_t,
                                             permutation_p, pooled_spearman, risk_difference, spread_reduction,
                                             two_arm)
from steadytune.reproduce.verdicts import DOES_NOT_HOLD, HOLDS, INCONCLUSIVE, verdict_table


def _two_groups(seed: int, n_a: int = 5, n_b: int = 6, shift: float = 0.3):
    rng = np.random.default_rng(seed)
    a, b = rng.normal(0, 1, n_a), rng.normal(shift, 1, n_b)
    values = np.concatenate([a, b])
    in_b = np.r_[np.zeros(n_a, bool), np.ones(n_b, bool)]
    return a, b, values, in_b, np.zeros(len(values), dtype=int)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exact_permutation_p_equals_scipy_on_one_stratum(seed):
    a, b, values, in_b, strata = _two_groups(seed)
    ours = permutation_p(values, in_b, strata, mean_difference, n_perm=9999)
    reference = stats.permutation_test((b, a), lambda x, y: np.mean(x) - np.mean(y), permutation_type="independent",
                                       alternative="greater", n_resamples=np.inf).pvalue
    assert ours == pytest.approx(reference, abs=1e-12)


def test_stratified_permutation_p_equals_brute_force_and_monte_carlo_agrees():
    rng = np.random.default_rng(3)
    strata = np.repeat([0, 1], 7)
    in_b = np.tile(np.r_[np.zeros(3, bool), np.ones(4, bool)], 2)
    values = rng.normal(0, 1, 14) + 0.8 * in_b + 5 * strata  # a task with higher scores, and an arm effect
    observed = mean_difference(values, in_b, strata)
    # Independent enumeration: every choice of 4 B's within each stratum of 7.
    null = []
    for first in itertools.combinations(range(7), 4):
        for second in itertools.combinations(range(7, 14), 4):
            labels = np.zeros(14, bool)
            labels[list(first) + list(second)] = True
            null.append(mean_difference(values, labels, strata))
    brute = np.mean(np.array(null) >= observed - 1e-12)
    assert permutation_p(values, in_b, strata, mean_difference, n_perm=10_000) == pytest.approx(brute, abs=1e-12)
    assert permutation_p(values, in_b, strata, mean_difference, n_perm=4000, seed=1) == pytest.approx(brute, abs=0.02)


def test_a_task_offset_alone_gives_no_effect_within_strata():
    strata = np.repeat(["rte", "mrpc"], 6)
    in_b = np.tile(np.r_[np.zeros(3, bool), np.ones(3, bool)], 2)
    values = np.where(strata == "rte", 0.6, 0.8) + np.tile([0.01, 0.02, 0.03], 4)
    assert mean_difference(values, in_b, strata) == pytest.approx(0.0, abs=1e-12)
    assert permutation_p(values, in_b, strata, mean_difference) > 0.4


def test_bootstrap_interval_matches_scipy_percentile_bootstrap():
    a, b, values, in_b, strata = _two_groups(4, 12, 12, 0.5)
    low, high = bootstrap_interval(values, in_b, strata, mean_difference, n_boot=20_000)
    reference = stats.bootstrap((b, a), lambda x, y, axis=-1: np.mean(x, axis=axis) - np.mean(y, axis=axis),
                                method="percentile", n_resamples=20_000, random_state=0).confidence_interval
    assert low == pytest.approx(reference.low, abs=0.03)
    assert high == pytest.approx(reference.high, abs=0.03)


def test_median_deviations_give_levenes_median_centred_statistic():
    a, b, values, in_b, strata = _two_groups(5, 8, 9, 0.0)
    b = b * 3
    values = np.concatenate([a, b])
    z = median_deviations(values, in_b, strata)
    assert stats.f_oneway(z[~in_b], z[in_b]).statistic == pytest.approx(stats.levene(a, b, center="median").statistic)
    # B is three times wider: its spread is not reduced.
    assert spread_reduction(values, in_b, strata) < 0


def test_pooled_spearman_per_stratum_rho_is_scipys_and_pooling_is_fisher_z():
    rng = np.random.default_rng(6)
    x = rng.normal(size=60)
    y = x + rng.normal(size=60)
    strata = np.repeat([0, 1], 30)
    estimate, parts = pooled_spearman(x, y, strata)
    rhos = [stats.spearmanr(x[strata == s], y[strata == s]).statistic for s in (0, 1)]
    assert [rho for _, _, rho in parts] == pytest.approx(rhos)
    assert estimate.effect == pytest.approx(math.tanh(np.mean(np.arctanh(rhos))))
    # One stratum of many pairs: the normal-approximation p is close to scipy's t-based p.
    big_x = rng.normal(size=400)
    big_y = 0.1 * big_x + rng.normal(size=400)
    single, _ = pooled_spearman(big_x, big_y, np.zeros(400))
    assert single.p == pytest.approx(stats.spearmanr(big_x, big_y, alternative="greater").pvalue, abs=0.01)


def test_risk_difference_uses_fisher_and_newcombe():
    from statsmodels.stats.proportion import confint_proportions_2indep

    estimate = risk_difference(8, 10, 2, 10)
    assert estimate.effect == pytest.approx(0.6)
    assert estimate.p == pytest.approx(stats.fisher_exact([[8, 2], [2, 8]], alternative="greater").pvalue)
    low, high = confint_proportions_2indep(8, 10, 2, 10, method="newcomb", compare="diff")
    assert (estimate.low, estimate.high) == pytest.approx((low, high))


def test_one_sample_t_is_scipys():
    values = np.array([0.02, 0.05, -0.01, 0.04, 0.03])
    estimate = one_sample_t(values)
    assert estimate.p == pytest.approx(stats.ttest_1samp(values, 0, alternative="greater").pvalue)
    interval = stats.ttest_1samp(values, 0).confidence_interval(0.95)
    assert (estimate.low, estimate.high) == pytest.approx((interval.low, interval.high))


def test_width_interpolates_the_crossings():
    a = np.linspace(-1, 1, 5)  # -1, -0.5, 0, 0.5, 1
    loss = np.array([1.0, 0.35, 0.3, 0.5, 2.0])
    # Left: within 0.4 at -0.5, crossing between -1 and -0.5 at 0.4 = 0.35 + (a + 0.5) * (1.0 - 0.35) / -0.5.
    left = -0.5 - 0.5 * (0.4 - 0.35) / (1.0 - 0.35)
    right = 0.5 * (0.4 - 0.3) / (0.5 - 0.3)
    assert width(a, loss) == pytest.approx(right - left)
    assert width(a, np.full(5, 0.3)) == pytest.approx(2.0)  # flat: the whole range


def _results(frame: pd.DataFrame) -> Results:
    return Results(trials=frame, curves=pd.DataFrame(columns=["trial_id", "step", "epoch", "split", "metric", "value"]),
                   all_trials=frame)


def _arm(scores, task="rte", baseline=0.5, start_id=0):
    n = len(scores)
    return pd.DataFrame({"id": range(start_id, start_id + n), "task": task, "wi_seed": range(1, n + 1), "do_seed": 1,
                         "status": "complete", "final": scores, "all": scores, "baseline_metric": baseline,
                         "total_steps": 100})


def _planted(devlin_scores, adamw_scores) -> dict[str, ClaimData]:
    arms = {"grid": _results(pd.concat([_arm(devlin_scores), _arm(devlin_scores, "mrpc", start_id=100)])),
            "adamw": _results(pd.concat([_arm(adamw_scores, start_id=200), _arm(adamw_scores, "mrpc", start_id=300)]))}
    return {"published": ClaimData("published", ["rte", "mrpc"], arms)}


def test_planted_failures_hold_and_identical_arms_do_not():
    claims = [CLAIMS["zhang-bertadam-failures"], CLAIMS["zhang-bertadam-scores"]]
    failing = [0.5] * 8 + [0.70, 0.72]  # BERTAdam at the majority baseline in 8 of 10 runs
    healthy = list(np.linspace(0.66, 0.74, 10))
    planted = verdict_table(claims, _planted(failing, healthy)).set_index("key")
    assert planted.loc["zhang-bertadam-failures", "verdict"] == HOLDS
    assert planted.loc["zhang-bertadam-scores", "verdict"] == HOLDS
    same = verdict_table(claims, _planted(healthy, healthy)).set_index("key")
    assert set(same["verdict"]) <= {DOES_NOT_HOLD, INCONCLUSIVE}
    assert same.loc["zhang-bertadam-scores", "effect"] == pytest.approx(0.0)


def test_failure_rates_are_pooled_over_the_tasks_both_arms_ran():
    # BERTAdam fails every RTE run and no MRPC run; AdamW, so far run on RTE only, fails every one too
    arms = {"grid": _results(pd.concat([_arm([0.5] * 5), _arm([0.7] * 5, "mrpc", start_id=100)])),
            "adamw": _results(_arm([0.5] * 5, start_id=200))}
    row = verdict_table([CLAIMS["zhang-bertadam-failures"]],
                        {"published": ClaimData("published", ["rte", "mrpc"], arms)}).iloc[0]
    assert row["ours"] == "failed 5/5 with BERTAdam vs 5/5 with AdamW" and row["effect"] == 0.0


def test_curvature_is_the_second_derivative_of_the_central_fit():
    a = np.round(np.linspace(-1, 1, 11), 10)
    assert curvature(a, 1.5 * a**2 + 0.2 * a + 0.7) == pytest.approx(3.0)  # exact on a quadratic
    loss = 0.69 + 0.4 * a**2 + 0.3 * a**4 - 0.1 * a**3
    central = np.abs(a) <= 0.4 + 1e-9
    assert curvature(a, loss) == pytest.approx(2 * np.polyfit(a[central], loss[central], 2)[0])
    # On three points it is the central difference
    assert curvature(a, loss, points=3) == pytest.approx((loss[6] - 2 * loss[5] + loss[4]) / 0.2**2)
    assert curvature(a, np.full(11, 0.69)) == pytest.approx(0.0, abs=1e-12)  # flat: 0, not "at least"
    assert np.isnan(curvature(a[:2], loss[:2]))


def _lines(pretrained: list[float], scratch: list[float], widths=(1.0, 1.0)) -> dict[str, ClaimData]:
    measures = pd.DataFrame([{"arm": arm, "task": "rte", "wi_seed": i, "curvature": c, "width": width}
                             for (arm, values), width in zip((("pretrained", pretrained), ("scratch", scratch)), widths)
                             for i, c in enumerate(values)])
    return {"learning": ClaimData("learning", ["rte"], {}, measures)}


def test_flatter_optima_are_tested_on_the_curvature_even_where_widths_saturate():
    flatter = verdict_table([CLAIMS["hao-flatter"]], _lines([0.1, 0.15, 0.12, 0.08, 0.11], [0.9, 1.1, 1.0, 0.8, 1.2],
                                                              widths=(2.0, 0.6))).iloc[0]
    assert flatter["verdict"] == HOLDS and flatter["effect"] == pytest.approx(1.0 - 0.112)
    assert flatter["ours"].endswith("; 5 pretrained run(s) within 0.1 nats over the whole line")
    sharper = verdict_table([CLAIMS["hao-flatter"]], _lines([0.9, 1.1, 1.0, 0.8, 1.2], [0.1, 0.15, 0.12, 0.08, 0.11]))
    assert sharper.iloc[0]["verdict"] == DOES_NOT_HOLD
    unmeasured = verdict_table([CLAIMS["hao-flatter"]], _lines([0.1, float("nan")], [0.9, 1.0])).iloc[0]
    assert unmeasured["verdict"] == "no answer: 1 pretrained run(s) with a measured line; needs 2"


def test_curvature_is_read_back_from_the_stored_line(tmp_path):
    from steadytune.config import RunOptions
    from steadytune.reproduce.design import SCALES
    from steadytune.reproduce.landscapes import _line_curvature, settings_for
    from steadytune.store import Store

    scale = SCALES["small"]
    a = np.round(np.linspace(-1, 1, scale.line_points), 10)
    spec = {"kind": "surface", "directions": "random", "trial": "k1", "seed": 0, "a": a.tolist(), "b": [0.0],
            "other": None, **settings_for(scale, RunOptions()).spec()}
    with Store(tmp_path / "s.db") as store:
        line = store.landscape("line-key", "surface", spec)
        store.add_landscape_cells(line, [(i, 0, float(x), 0.0, {"train_loss": 0.5 + 2.0 * x * x})
                                         for i, x in enumerate(a)])
        assert _line_curvature(store, "k1", scale) == pytest.approx(4.0)
        assert np.isnan(_line_curvature(store, "other-trial", scale))
        other = store.landscape("coarser", "surface", {**spec, "trial": "k2", "a": [-1.0, 0.0, 1.0]})
        store.add_landscape_cells(other, [(i, 0, x, 0.0, {"train_loss": 0.5}) for i, x in enumerate([-1.0, 0.0, 1.0])])
        assert np.isnan(_line_curvature(store, "k2", scale))  # another line is not this scale's
        store.add_landscape_cells(line, [(3, 0, float(a[3]), 0.0, {"train_loss": float("nan")})])
        assert np.isnan(_line_curvature(store, "k1", scale))  # damaged cells are refused


def test_a_claim_without_its_data_gets_a_one_line_reason():
    table = verdict_table([CLAIMS["zhang-reinit-mean"], CLAIMS["mosbach-optimization"]],
                          _planted([0.7] * 5, [0.7] * 5))
    assert table["verdict"].str.startswith("no answer: ").all()
    assert not table["verdict"].str.contains("\n").any()


def test_holm_runs_across_the_whole_table():
    data = _planted([0.5] * 8 + [0.70, 0.72], list(np.linspace(0.66, 0.74, 10)))
    data["learning"] = data["published"]
    table = verdict_table([CLAIMS["zhang-bertadam-failures"], CLAIMS["zhang-bertadam-scores"]], data)
    from statsmodels.stats.multitest import multipletests

    assert table["p holm"].to_numpy() == pytest.approx(multipletests(table["p"].to_numpy(), method="holm")[1])


def test_two_arm_orientation_is_b_over_a():
    a, b, values, in_b, strata = _two_groups(7, 6, 6, 2.0)
    estimate = two_arm(values, in_b, strata, n_boot=500)
    assert estimate.effect == pytest.approx(b.mean() - a.mean())
    assert estimate.low < estimate.effect < estimate.high and estimate.p < 0.05
