"""Seed variance: ANOVA against the closed-form balanced decomposition, replicates, seed means and transfer."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from steadytune.analysis import (
    NotEnoughData,
    anova_two_way,
    build_results,
    seed_extremes,
    seed_grid,
    seed_means,
    seed_spread,
    seed_transfer,
)

CURVE_COLUMNS = ["trial_id", "step", "epoch", "split", "metric", "value"]


def grid_frame(tasks=("rte",), seeds=8, wi_scale=0.05, noise=0.01, seed=0) -> pd.DataFrame:
    """A WI x DO grid per task; the WI effect (the same seeds good on every task) is planted, DO has none."""
    rng = np.random.default_rng(seed)
    wi_effect = wi_scale * np.linspace(-1, 1, seeds)
    rows = []
    for task in tasks:
        for wi in range(seeds):
            for do in range(seeds):
                rows.append(dict(id=len(rows) + 1, task=task, recipe="r", status="complete", wi_seed=wi + 1,
                                 do_seed=do + 1, metric="accuracy", final_metric=0.7 + wi_effect[wi] + rng.normal(0, noise),
                                 best_metric=np.nan, baseline_metric=0.5, total_steps=10))
    return pd.DataFrame(rows)


def results_of(trials: pd.DataFrame):
    return build_results(trials, pd.DataFrame(columns=CURVE_COLUMNS))


def classic_balanced_anova(grid: np.ndarray) -> dict[str, tuple[float, int, float, float]]:
    """Textbook two-way ANOVA without replication, from row and column means: (SS, df, F, p)."""
    a, b = grid.shape
    grand = grid.mean()
    ss_rows = b * ((grid.mean(axis=1) - grand) ** 2).sum()
    ss_cols = a * ((grid.mean(axis=0) - grand) ** 2).sum()
    ss_res = ((grid - grid.mean(axis=1, keepdims=True) - grid.mean(axis=0, keepdims=True) + grand) ** 2).sum()
    df_res = (a - 1) * (b - 1)
    out = {}
    for name, ss, df in (("WI", ss_rows, a - 1), ("DO", ss_cols, b - 1)):
        f_value = (ss / df) / (ss_res / df_res)
        out[name] = (ss, df, f_value, stats.f.sf(f_value, df, df_res))
    out["Residual"] = (ss_res, df_res, np.nan, np.nan)
    return out


def test_anova_matches_closed_form_and_finds_the_planted_wi_effect():
    trials = results_of(grid_frame()).trials
    table = anova_two_way(trials).set_index("source")
    expected = classic_balanced_anova(seed_grid(trials).to_numpy())
    for source, (ss, df, f_value, p) in expected.items():
        assert table.loc[source, "sum_sq"] == pytest.approx(ss, rel=1e-9)
        assert table.loc[source, "df"] == df
        if source != "Residual":
            assert table.loc[source, "F"] == pytest.approx(f_value, rel=1e-9)
            assert table.loc[source, "p"] == pytest.approx(p, rel=1e-6, abs=1e-300)
    assert table.loc["WI", "F"] > 100 and table.loc["WI", "p"] < 1e-3
    assert table.loc["DO", "p"] > 0.01
    assert table["share"].sum() == pytest.approx(1.0)
    assert table.loc["WI", "share"] > 0.9


def test_replicates_get_an_interaction_row_and_missing_cells_still_fit():
    trials = results_of(grid_frame(seeds=4)).trials
    replicate = trials["final"] + np.random.default_rng(3).normal(0, 0.01, len(trials))
    doubled = pd.concat([trials, trials.assign(final=replicate)])
    table = anova_two_way(doubled).set_index("source")
    assert list(table.index) == ["WI", "DO", "interaction", "Residual"]
    assert table.loc["interaction", "df"] == 9 and table.loc["Residual", "df"] == 16
    assert table["sum_sq"].sum() == pytest.approx(((doubled["final"] - doubled["final"].mean()) ** 2).sum())
    holed = anova_two_way(trials.iloc[1:]).set_index("source")  # one cell missing: Type II sums, df shrink
    assert holed.loc["Residual", "df"] == 15 - 1 - 3 - 3 and holed.loc["WI", "p"] < 1e-3


def test_anova_needs_a_grid():
    trials = results_of(grid_frame(seeds=4)).trials
    with pytest.raises(NotEnoughData, match="seed grid"):
        anova_two_way(trials[trials["do_seed"] == 1])


def test_seed_means_and_spread_find_the_best_seed():
    results = results_of(grid_frame(seeds=6))
    means = seed_means(results.trials, "wi_seed")
    assert means["seed"].iloc[0] == 6 and means["seed"].iloc[-1] == 1 and (means["n"] == 6).all()
    spread = seed_spread(results).set_index("seed")
    assert spread.loc["WI", "best seed"].startswith("6 (") and spread.loc["WI", "range of means"] > 0.08
    assert spread.loc["DO", "sd of means"] < spread.loc["WI", "sd of means"] / 5


def test_seed_transfer_across_tasks():
    results = results_of(grid_frame(tasks=("rte", "mrpc", "cola"), seeds=6))
    wi = seed_transfer(results, "wi_seed")
    assert len(wi) == 3 and (wi["spearman rho"] > 0.9).all()  # the planted good seeds are good everywhere
    do = seed_transfer(results, "do_seed")
    assert do["spearman rho"].abs().max() < wi["spearman rho"].min()
    extremes = seed_extremes(results, "wi_seed", k=2)
    for (chosen_on, task), cell in extremes.groupby(["chosen on", "task"]):
        by_group = cell.groupby("group")["value"]
        assert by_group.min()["best 2"] > by_group.max()["worst 2"]
        assert set(cell.loc[cell["group"] == "best 2", "seed"]) == {5, 6}
    with pytest.raises(NotEnoughData, match="two or more tasks"):
        seed_transfer(results_of(grid_frame(seeds=4)))


def _statsmodels_anova(frame: pd.DataFrame, interaction: bool) -> pd.DataFrame:
    import statsmodels.formula.api as smf
    from statsmodels.stats.anova import anova_lm

    formula = "final ~ C(wi_seed) * C(do_seed)" if interaction else "final ~ C(wi_seed) + C(do_seed)"
    data = pd.DataFrame({"final": frame["final"].to_numpy(dtype=float), "wi_seed": frame["wi_seed"].to_numpy(dtype=int),
                         "do_seed": frame["do_seed"].to_numpy(dtype=int)})
    return anova_lm(smf.ols(formula, data=data).fit(), typ=2)


@pytest.mark.parametrize("layout", ["balanced", "unbalanced", "replicates"])
def test_anova_equals_statsmodels_type_two(layout):
    trials = grid_frame(seeds=6, noise=0.02, seed=3)
    if layout == "unbalanced":  # missing cells: a grid with holes
        trials = trials.drop(index=[1, 8, 15, 22, 29]).reset_index(drop=True)
    if layout == "replicates":  # a second, unequal set of runs in some cells
        extra = trials.sample(14, random_state=1).assign(final_metric=lambda f: f["final_metric"] + 0.01)
        trials = pd.concat([trials, extra.assign(id=extra["id"] + 1000)], ignore_index=True)
    results = results_of(trials)
    ours = anova_two_way(results.trials).set_index("source")
    reference = _statsmodels_anova(results.trials, interaction=layout == "replicates")
    names = {"WI": "C(wi_seed)", "DO": "C(do_seed)", "interaction": "C(wi_seed):C(do_seed)", "Residual": "Residual"}
    assert list(ours.index) == [k for k in names if names[k] in reference.index]
    for source, row in ours.iterrows():
        expected = reference.loc[names[source]]
        assert row["sum_sq"] == pytest.approx(expected["sum_sq"], rel=1e-9)
        assert row["df"] == expected["df"]
        if source != "Residual":
            assert row["F"] == pytest.approx(expected["F"], rel=1e-9)
            assert row["p"] == pytest.approx(expected["PR(>F)"], rel=1e-7)


def test_variance_components_on_a_balanced_grid_equal_statsmodels_reml():
    from steadytune.analysis.variance import _reml_components, variance_components

    rng = np.random.default_rng(5)
    wi, do = rng.normal(0, 0.03, 8), rng.normal(0, 0.015, 7)
    frame = pd.DataFrame([dict(wi_seed=i, do_seed=j, final=0.7 + wi[i] + do[j] + rng.normal(0, 0.01))
                          for i in range(8) for j in range(7)])
    table = variance_components(frame).set_index("component")
    assert table["method"].iloc[0].startswith("ANOVA")
    reml = _reml_components(frame, "final")
    for component in ("WI", "DO", "residual"):
        assert table.loc[component, "variance"] == pytest.approx(reml[component], rel=2e-3)
    assert table["share"].sum() == pytest.approx(1.0)
    assert table.loc["WI", "variance"] > table.loc["DO", "variance"] > table.loc["residual", "variance"]


def test_a_grid_of_failed_runs_has_no_variance_and_says_so_without_a_warning():
    from steadytune.analysis.variance import variance_components

    # Every run at RTE's majority baseline: computed, the seed means' rounding gave WI and DO about 1e-32 each (half
    # of the total each, which the WI-vs-DO claim's bootstrap read as "comparable") and the residual about -1e-17
    frame = pd.DataFrame([dict(wi_seed=i, do_seed=j, final=0.5270758122743683) for i in range(5) for j in range(3)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        table = variance_components(frame).set_index("component")
    assert (table["variance"] == 0).all() and (table["sd"] == 0).all() and table["share"].isna().all()
    from steadytune.reproduce.claims.dodge import _wi_share

    assert np.isnan(_wi_share(np.full((5, 3), 0.5270758122743683)))


def test_variance_components_of_an_unbalanced_grid_come_from_reml_and_find_the_planted_seed():
    from steadytune.analysis.variance import variance_components

    trials = grid_frame(seeds=8, wi_scale=0.05, noise=0.01, seed=2).drop(index=[3, 17, 40]).rename(
        columns={"final_metric": "final"})
    table = variance_components(trials).set_index("component")
    assert table["method"].iloc[0].startswith("REML")
    assert table.loc["WI", "share"] > 0.8 and table.loc["DO", "share"] < 0.05  # the grid plants WI only
    with pytest.raises(NotEnoughData):
        variance_components(trials[trials["do_seed"] == 1])


def test_replicated_grids_give_the_interaction_its_own_component_in_both_fits():
    from steadytune.analysis.variance import variance_components

    rng = np.random.default_rng(4)
    wi, do, inter = rng.normal(0, 0.04, 5), rng.normal(0, 0.02, 4), rng.normal(0, 0.03, (5, 4))
    frame = pd.DataFrame([dict(wi_seed=i, do_seed=j, final=0.7 + wi[i] + do[j] + inter[i, j] + rng.normal(0, 0.005))
                          for i in range(5) for j in range(4) for _ in range(3)])
    balanced = variance_components(frame).set_index("component")
    assert balanced["method"].iloc[0].startswith("ANOVA")
    # the expected mean squares of the two-way random model with interaction, by hand
    grand = frame["final"].mean()
    cell = frame.groupby(["wi_seed", "do_seed"])["final"].mean()
    ms_res = ((frame["final"] - frame.groupby(["wi_seed", "do_seed"])["final"].transform("mean")) ** 2).sum() / (60 - 20)
    ms_wi = 12 * ((frame.groupby("wi_seed")["final"].mean() - grand) ** 2).sum() / 4
    ms_inter = (3 * ((cell - grand) ** 2).sum() - 12 * ((frame.groupby("wi_seed")["final"].mean() - grand) ** 2).sum()
                - 15 * ((frame.groupby("do_seed")["final"].mean() - grand) ** 2).sum()) / 12
    assert balanced.loc["WI x DO", "variance"] == pytest.approx((ms_inter - ms_res) / 3)
    assert balanced.loc["WI", "variance"] == pytest.approx(max(0.0, (ms_wi - ms_inter) / 12))
    assert balanced.loc["residual", "variance"] == pytest.approx(ms_res)
    # the planted interaction is found, not left in the residual (an additive fit put it there)
    assert balanced.loc["WI x DO", "variance"] > 5 * balanced.loc["residual", "variance"]
    unbalanced = variance_components(frame.drop(index=[0, 1, 2])).set_index("component")  # one cell missing
    assert unbalanced["method"].iloc[0].startswith("REML")
    assert unbalanced.loc["WI x DO", "variance"] > 5 * unbalanced.loc["residual", "variance"]
    assert unbalanced.loc["WI x DO", "variance"] == pytest.approx(balanced.loc["WI x DO", "variance"], rel=0.5)


def test_the_reml_fit_is_the_best_converged_one_of_every_optimizer():
    import statsmodels.formula.api as smf

    from steadytune.analysis.variance import REML_METHODS, variance_components

    rng = np.random.default_rng(7)
    wi, do = rng.normal(0, 0.5, 4), rng.normal(0, 0.3, 4)
    frame = pd.DataFrame([dict(wi_seed=i, do_seed=j, final=wi[i] + do[j] + rng.normal(0, 0.3))
                          for i in range(4) for j in range(4) for _ in range(2)]).drop(index=[0, 1])
    ours = variance_components(frame).set_index("component")["variance"]
    data = frame.rename(columns={"final": "y"}).assign(group=1, cell=frame["wi_seed"].astype(str) + ":"
                                                        + frame["do_seed"].astype(str))
    model = smf.mixedlm("y ~ 1", data, groups="group", re_formula="0",
                        vc_formula={"WI": "0 + C(wi_seed)", "DO": "0 + C(do_seed)", "WI x DO": "0 + C(cell)"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fits = [model.fit(reml=True, method=method) for method in REML_METHODS]
    best = max((f for f in fits if f.converged), key=lambda f: f.llf)
    assert ours["WI"] == pytest.approx(dict(zip(model.exog_vc.names, best.vcomp))["WI"], rel=1e-3)


def test_a_degenerate_design_is_one_line_not_a_linear_algebra_error():
    from steadytune.analysis.variance import variance_components

    # Each raised numpy's LinAlgError ("Singular matrix") from inside MixedLM.
    for design in (dict(wi_seed=[1, 1, 2, 2], do_seed=[1, 1, 2, 2], final=[0.1, 0.12, 0.3, 0.31]),
                   dict(wi_seed=[1, 2, 3], do_seed=[1, 2, 3], final=[0.1, 0.2, 0.3]),
                   dict(wi_seed=[1, 2], do_seed=[1, 2], final=[0.1, 0.2])):
        with pytest.raises(NotEnoughData) as err:
            variance_components(pd.DataFrame(design))
        assert "\n" not in str(err.value) and "confounded" in str(err.value)
