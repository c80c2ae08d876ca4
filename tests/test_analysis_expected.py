"""Expected validation performance: hand-computed values, brute force, large N, and per-frequency scores."""
from __future__ import annotations

from itertools import combinations, product

import numpy as np
import pandas as pd
import pytest

from steadytune.analysis import build_results, expected_max, expected_max_curves, expected_max_table, frequency_scores

SCORES = [0.5, 0.6, 0.7, 0.9]


def test_hand_computed_with_replacement():
    table = expected_max(SCORES, replace=True)
    # n = 2: P(max = i-th) = (i/4)^2 - ((i-1)/4)^2 = 1/16, 3/16, 5/16, 7/16
    e2 = 0.5 * 1 / 16 + 0.6 * 3 / 16 + 0.7 * 5 / 16 + 0.9 * 7 / 16
    assert e2 == pytest.approx(0.75625)
    sd2 = np.sqrt(sum(p * (v - e2) ** 2 for p, v in zip((1 / 16, 3 / 16, 5 / 16, 7 / 16), SCORES)))
    assert sd2 == pytest.approx(0.136788, abs=1e-6)
    assert table["n"].tolist() == [1, 2, 3, 4]
    assert table.loc[1, "expected"] == pytest.approx(e2) and table.loc[1, "sd"] == pytest.approx(sd2)
    # n = 1 is the mean, with the population sd
    assert table.loc[0, "expected"] == pytest.approx(0.675) and table.loc[0, "sd"] == pytest.approx(np.std(SCORES))
    # n = 4: weights (i/4)^4 - ((i-1)/4)^4 = 1/256, 15/256, 65/256, 175/256
    assert table.loc[3, "expected"] == pytest.approx((0.5 * 1 + 0.6 * 15 + 0.7 * 65 + 0.9 * 175) / 256)


def test_hand_computed_without_replacement():
    table = expected_max(SCORES, replace=False)
    # n = 2: CDF C(i,2)/C(4,2) = 0, 1/6, 3/6, 1 -> weights 0, 1/6, 2/6, 3/6
    assert table.loc[1, "expected"] == pytest.approx((0.6 * 1 + 0.7 * 2 + 0.9 * 3) / 6)  # 0.78333
    # n = 3: CDF 0, 0, 1/4, 1 -> 0.7/4 + 0.9*3/4 = 0.85
    assert table.loc[2, "expected"] == pytest.approx(0.85)
    assert table.loc[0, "expected"] == pytest.approx(np.mean(SCORES))
    assert table.loc[3, "expected"] == pytest.approx(0.9) and table.loc[3, "sd"] == pytest.approx(0.0, abs=1e-12)


def test_matches_brute_force_enumeration():
    scores = np.array([0.61, 0.55, 0.7, 0.7, 0.58, 0.66])  # with a tie
    for n in range(1, 5):
        with_replacement = [max(draw) for draw in product(scores, repeat=n)]
        without = [max(draw) for draw in combinations(scores, n)]
        got_with = expected_max(scores, n=[n], replace=True).iloc[0]
        got_without = expected_max(scores, n=[n], replace=False).iloc[0]
        assert got_with["expected"] == pytest.approx(np.mean(with_replacement))
        assert got_with["sd"] == pytest.approx(np.std(with_replacement))
        assert got_without["expected"] == pytest.approx(np.mean(without))
        assert got_without["sd"] == pytest.approx(np.std(without))


def test_large_n_without_replacement_is_finite_and_monotone():
    scores = np.random.default_rng(0).normal(0.7, 0.05, 1000)
    table = expected_max(scores, replace=False)
    assert len(table) == 1000 and np.isfinite(table[["expected", "sd"]].to_numpy()).all()
    assert (np.diff(table["expected"]) >= -1e-12).all()
    assert table["expected"].iloc[0] == pytest.approx(scores.mean())
    assert table["expected"].iloc[-1] == pytest.approx(scores.max())
    with_replacement = expected_max(scores, n=50, replace=True)
    assert len(with_replacement) == 50 and (np.diff(with_replacement["expected"]) > 0).all()


def test_bootstrap_interval_and_bad_n():
    table = expected_max(SCORES, bootstrap=500)
    assert (table["lo"] <= table["expected"] + 1e-12).all() and (table["expected"] <= table["hi"] + 0.05).all()
    assert (table["lo"] >= 0.5).all() and (table["hi"] <= 0.9).all()
    flat = expected_max([0.6] * 5, bootstrap=100)
    assert flat["lo"].tolist() == pytest.approx([0.6] * 5) and flat["hi"].tolist() == pytest.approx([0.6] * 5)
    with pytest.raises(ValueError, match="without replacement"):
        expected_max(SCORES, n=5, replace=False)
    with pytest.raises(ValueError, match="non-empty"):
        expected_max([])


def _trial(trial_id: int, recipe: str = "r", **extra) -> dict:
    row = dict(id=trial_id, task="rte", recipe=recipe, status="complete", wi_seed=trial_id, do_seed=1,
               metric="accuracy", final_metric=np.nan, best_metric=np.nan, baseline_metric=0.5, total_steps=40)
    row.update(extra)
    return row


def _dev(trial_id: int, values: list[float], per_epoch: int = 10, every: int = 5) -> list[dict]:
    return [dict(trial_id=trial_id, step=every * (k + 1), epoch=every * (k + 1) / per_epoch, split="dev",
                 metric="accuracy", value=v) for k, v in enumerate(values)]


def test_scores_at_the_three_eval_frequencies():
    # evaluations at epochs 0.5, 1, 1.5, 2, 2.5, 3, 3.5, 4 (last)
    trials = pd.DataFrame([_trial(1), _trial(2, status="diverged", final_metric=np.nan), _trial(3, final_metric=0.7,
                                                                                               best_metric=0.75)])
    curves = pd.DataFrame(_dev(1, [0.9, 0.6, 0.95, 0.7, 0.6, 0.8, 0.6, 0.65])  # best 0.95 at epoch 1.5 (not per epoch)
                          + _dev(2, [0.55, 0.52])  # diverged after epoch 1: last value counts
                          + [dict(trial_id=1, step=40, epoch=4.0, split="dev", metric="loss", value=0.1)])
    scores = frequency_scores(trials, curves)
    assert scores.loc[1].tolist() == pytest.approx([0.65, 0.8, 0.95])  # final, best at epochs 1..4, best of all
    assert scores.loc[2].tolist() == pytest.approx([0.52, 0.52, 0.55])  # 0.55 was at epoch 0.5
    assert scores.loc[3].tolist() == pytest.approx([0.7, 0.7, 0.75])  # no curve: stored final / best metric


def test_curves_per_frequency_and_table():
    rng = np.random.default_rng(1)
    rows, dev = [], []
    for trial_id in range(1, 13):
        rows.append(_trial(trial_id))
        dev += _dev(trial_id, list(rng.uniform(0.5, 0.8, 8)))
    results = build_results(pd.DataFrame(rows), pd.DataFrame(dev))
    curves = expected_max_curves(results)
    assert set(curves["frequency"]) == {"final", "epoch", "all"} and len(curves) == 3 * 12
    at_n = curves[curves["n"] == 12].set_index("frequency")["expected"]
    assert at_n["final"] <= at_n["epoch"] <= at_n["all"]  # more evaluation points, higher expected best
    table = expected_max_table(curves)
    assert list(table.columns) == ["task", "arm", "frequency", "N", "E[max 1]", "E[max 5]", "E[max 10]", "E[max N]"]


def _allentune_samplemax(scores, with_replacement: bool) -> tuple[list[float], list[float]]:
    """allentune's formula (commands/plot.py, `samplemax`), written out in plain loops as the reference: for each
    n, the CDF of the max at the i-th smallest score, its differences as probabilities, the mean, and the
    square root of the probability-weighted squared deviations."""
    from scipy.special import comb

    values, total = sorted(scores), len(scores)
    means, spreads = [], []
    for n in range(1, total + 1):
        cdf = [(i / total) ** n if with_replacement else comb(i, n) / comb(total, n) for i in range(1, total + 1)]
        pdf = [cdf[0]] + [cdf[i] - cdf[i - 1] for i in range(1, total)]
        mean = sum(v * p for v, p in zip(values, pdf))
        means.append(mean)
        spreads.append(sum((v - mean) ** 2 * p for v, p in zip(values, pdf)) ** 0.5)
    return means, spreads


@pytest.mark.parametrize("replace", [True, False])
def test_equals_allentunes_formula(replace):
    scores = np.random.default_rng(3).normal(0.7, 0.05, 23)
    ours = expected_max(scores, replace=replace)
    means, spreads = _allentune_samplemax(scores, replace)
    assert ours["expected"].to_numpy() == pytest.approx(means, rel=1e-12)
    assert ours["sd"].to_numpy() == pytest.approx(spreads, rel=1e-9, abs=1e-12)
