"""How much of the spread comes from the weight-initialization (WI) seed and how much from data order (DO).

Dodge et al. 2020 vary both seeds over a grid. The ANOVA fits least squares on dummy variables, so it
also holds for grids with missing cells (Type II sums of squares: each factor's sum of squares is what
it adds to a model that already has the other); on a complete one-trial-per-cell grid this is the
classic two-way decomposition with main effects only (the interaction is the residual). With more than
one trial per cell the WI x DO interaction gets its own row. Its reference is statsmodels'
`anova_lm(typ=2)`, and tests/test_analysis_variance.py checks sums of squares, F and p against it.

The seeds a study draws are a sample of all seeds, so what a reader wants from a grid is a random-effects
answer: how much of a run's variance comes from WI, from DO, and from neither (`variance_components`).
On a complete grid with equal cell sizes these are the ANOVA (method of moments) estimators, which equal
REML there whenever they are positive; otherwise statsmodels' MixedLM fits them by REML, with WI and DO as
crossed variance components. Negative ANOVA estimates are reported as 0, as is usual. Where cells hold
replicates, the WI x DO interaction is a component of its own in both fits, as it is a row of the ANOVA, so it
does not land in the residual. A REML fit is only reported when it converged: MixedLM's optimizers are tried
in turn and the best converged fit kept; a design none converges on is reported as such, not as REML.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy import stats

from .results import NotEnoughData, Results

SEED_KINDS = {"wi_seed": "WI", "do_seed": "DO"}


def adapter_seeds_as_first_factor(group: pd.DataFrame) -> pd.DataFrame:
    """An adapter study varies the adapter seed where a full fine-tuning grid varies WI: with one WI seed and several
    adapter seeds, the adapter seed takes WI's place in the grid (marked in the frame's attrs as adapter_factor)."""
    column = "cfg.adapter_seed"
    if column not in group or group["wi_seed"].nunique() > 1 or group[column].nunique() < 2:
        return group
    swapped = group.assign(wi_seed=group[column].astype(int))
    swapped.attrs["adapter_factor"] = True
    return swapped


def seed_grid(frame: pd.DataFrame, score: str = "final") -> pd.DataFrame:
    """WI seeds (rows) x DO seeds (columns) of a score; the mean where a cell has several trials."""
    return frame.pivot_table(index="wi_seed", columns="do_seed", values=score, aggfunc="mean")


def _dummies(codes: np.ndarray) -> np.ndarray:
    """One column per level except the first (the intercept carries it)."""
    levels = np.unique(codes)
    return (codes[:, None] == levels[None, 1:]).astype(float)


def _rss(y: np.ndarray, *blocks: np.ndarray) -> tuple[float, int]:
    """Residual sum of squares of y on an intercept plus `blocks`, and the model's rank."""
    design = np.column_stack([np.ones_like(y), *blocks])
    coef, _, rank, _ = np.linalg.lstsq(design, y, rcond=None)
    residual = y - design @ coef
    return float(residual @ residual), int(rank)


def anova_two_way(frame: pd.DataFrame, score: str = "final",
                  factors: tuple[str, str] = ("wi_seed", "do_seed")) -> pd.DataFrame:
    """Two-way ANOVA of `score` on two seed factors: df, sum_sq, mean_sq, F, p and share of the total sum of squares.

    Rows: one per factor, the interaction when cells hold replicates, and Residual.
    """
    data = frame[[*factors, score]].dropna()
    y = data[score].to_numpy(dtype=float)
    a_codes, b_codes = (data[f].to_numpy() for f in factors)
    if min(len(np.unique(a_codes)), len(np.unique(b_codes))) < 2:
        raise NotEnoughData("no seed grid: both seeds need at least two values")
    a, b = _dummies(a_codes), _dummies(b_codes)
    rss_full, rank_full = _rss(y, a, b)
    rss_without_a, rank_without_a = _rss(y, b)
    rss_without_b, rank_without_b = _rss(y, a)
    effects = {factors[0]: (rss_without_a - rss_full, rank_full - rank_without_a),
               factors[1]: (rss_without_b - rss_full, rank_full - rank_without_b)}
    residual, residual_df = rss_full, len(y) - rank_full
    cells = pd.Series(list(zip(a_codes, b_codes))).astype(str).to_numpy()
    if len(np.unique(cells)) < len(y):  # replicates: the interaction is estimable
        rss_cells, rank_cells = _rss(y, _dummies(cells))
        effects["interaction"] = (rss_full - rss_cells, rank_cells - rank_full)
        residual, residual_df = rss_cells, len(y) - rank_cells
    if residual_df < 1:
        raise NotEnoughData("no residual degrees of freedom: the grid needs more trials than cells + 1")
    total = float(((y - y.mean()) ** 2).sum())
    residual_ms = residual / residual_df
    rows = []
    for name, (sum_sq, df) in effects.items():
        mean_sq = sum_sq / df
        f_value = mean_sq / residual_ms if residual_ms > 0 else np.inf
        rows.append({"source": SEED_KINDS.get(name, name), "df": df, "sum_sq": sum_sq, "mean_sq": mean_sq,
                     "F": f_value, "p": float(stats.f.sf(f_value, df, residual_df))})
    rows.append({"source": "Residual", "df": residual_df, "sum_sq": residual, "mean_sq": residual_ms,
                 "F": np.nan, "p": np.nan})
    table = pd.DataFrame(rows)
    table["share"] = table["sum_sq"] / total if total > 0 else np.nan
    return table


def variance_components(frame: pd.DataFrame, score: str = "final") -> pd.DataFrame:
    """WI, DO (and with replicates the WI x DO interaction) and residual variance of `score` as random effects:
    component, variance, sd, share, method."""
    data = frame[["wi_seed", "do_seed", score]].dropna()
    if min(data["wi_seed"].nunique(), data["do_seed"].nunique()) < 2:
        raise NotEnoughData("no seed grid: both seeds need at least two values")
    if (data.groupby("wi_seed")["do_seed"].nunique() < 2).all() or (
            data.groupby("do_seed")["wi_seed"].nunique() < 2).all():
        raise NotEnoughData("WI and DO are confounded: no WI seed ran with two DO seeds, or no DO seed with two WI "
                            "seeds, so their variances cannot be told apart")
    cells = data.groupby(["wi_seed", "do_seed"]).size()
    n_wi, n_do = data["wi_seed"].nunique(), data["do_seed"].nunique()
    replicated = bool((cells > 1).any())
    if data[score].nunique() == 1:
        # Every run scored the same (e.g. all at the majority baseline): no variance at all. Computed, the group
        # means' rounding would give each seed kind about 1e-32 and so half of a zero total.
        variances = {"WI": 0.0, "DO": 0.0, **({"WI x DO": 0.0} if replicated else {}), "residual": 0.0}
        method = "constant scores"
    elif len(cells) == n_wi * n_do and cells.nunique() == 1:
        variances, method = _anova_components(data, score, n_wi, n_do, int(cells.iloc[0])), "ANOVA (balanced grid)"
    else:
        variances, method = _reml_components(data, score, replicated), "REML (statsmodels MixedLM)"
    table = pd.DataFrame({"component": list(variances), "variance": list(variances.values())})
    total = table["variance"].sum()
    return table.assign(sd=np.sqrt(table["variance"]), share=table["variance"] / total if total > 0 else np.nan,
                        method=method)


def _anova_components(data: pd.DataFrame, score: str, n_wi: int, n_do: int, per_cell: int) -> dict[str, float]:
    """Method-of-moments estimators of the crossed model y = mu + WI + DO (+ WI x DO with replicates) + e on a
    balanced grid."""
    y = data[score].to_numpy(dtype=float)
    grand = y.mean()
    ss_wi = n_do * per_cell * ((data.groupby("wi_seed")[score].mean() - grand) ** 2).sum()
    ss_do = n_wi * per_cell * ((data.groupby("do_seed")[score].mean() - grand) ** 2).sum()
    ms_wi, ms_do = ss_wi / (n_wi - 1), ss_do / (n_do - 1)
    if per_cell > 1:
        cell_means = data.groupby(["wi_seed", "do_seed"])[score].transform("mean").to_numpy(dtype=float)
        ss_res = float(((y - cell_means) ** 2).sum())
        ss_cells = per_cell * float(((data.groupby(["wi_seed", "do_seed"])[score].mean() - grand) ** 2).sum())
        ms_res = ss_res / (len(y) - n_wi * n_do)
        ms_inter = (ss_cells - ss_wi - ss_do) / ((n_wi - 1) * (n_do - 1))
        # E[MS_WI] = s2 + r s2_int + r n_do s2_WI; E[MS_int] = s2 + r s2_int
        return {"WI": max(0.0, (ms_wi - ms_inter) / (n_do * per_cell)),
                "DO": max(0.0, (ms_do - ms_inter) / (n_wi * per_cell)),
                "WI x DO": max(0.0, (ms_inter - ms_res) / per_cell), "residual": max(0.0, ms_res)}
    ss_res = ((y - grand) ** 2).sum() - ss_wi - ss_do
    df_res = len(y) - n_wi - n_do + 1
    if df_res < 1:
        raise NotEnoughData("no residual degrees of freedom: the grid needs more trials than cells + 1")
    ms_res = ss_res / df_res
    # ss_res is a difference of sums, which rounding can take below 0
    return {"WI": max(0.0, (ms_wi - ms_res) / (n_do * per_cell)), "DO": max(0.0, (ms_do - ms_res) / (n_wi * per_cell)),
            "residual": max(0.0, ms_res)}


REML_METHODS = ("lbfgs", "bfgs", "powell", "nm")


def _reml_components(data: pd.DataFrame, score: str, interaction: bool = False) -> dict[str, float]:
    """REML fit of crossed WI and DO (and WI x DO) variance components (one group holding every trial): each of
    MixedLM's optimizers in turn, the converged fit with the highest restricted likelihood kept."""
    import statsmodels.formula.api as smf
    from statsmodels.tools.sm_exceptions import ConvergenceWarning

    frame = data.rename(columns={score: "y"}).assign(group=1)
    formulas = {"WI": "0 + C(wi_seed)", "DO": "0 + C(do_seed)"}
    if interaction:
        frame = frame.assign(cell=frame["wi_seed"].astype(str) + ":" + frame["do_seed"].astype(str))
        formulas["WI x DO"] = "0 + C(cell)"
    model = smf.mixedlm("y ~ 1", frame, groups="group", re_formula="0", vc_formula=formulas)
    best = None
    for method in REML_METHODS:
        with warnings.catch_warnings():  # judged below by `converged`, not by the warning
            warnings.simplefilter("ignore", ConvergenceWarning)
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("ignore", RuntimeWarning)
            try:
                fit = model.fit(reml=True, method=method)
            except (np.linalg.LinAlgError, ValueError):
                continue
        if fit.converged and np.isfinite(fit.llf) and (best is None or fit.llf > best.llf):
            best = fit
    if best is None:
        raise NotEnoughData("the REML fit of the seed variance components did not converge on this grid (a "
                            "degenerate or too sparse design)")
    components = dict(zip(model.exog_vc.names, np.asarray(best.vcomp, dtype=float)))
    return {**{name: max(0.0, components[name]) for name in formulas}, "residual": float(best.scale)}


def seed_means(frame: pd.DataFrame, seed_col: str, score: str = "final") -> pd.DataFrame:
    """Per seed value: mean, sd and count of the score over the other seed (sorted by mean, best first)."""
    summary = frame.groupby(seed_col)[score].agg(["mean", "std", "count"]).rename(columns={"std": "sd", "count": "n"})
    return summary.sort_values("mean", ascending=False).reset_index().rename(columns={seed_col: "seed"})


def seed_spread(results: Results, score: str = "final") -> pd.DataFrame:
    """How far apart the per-seed means are, per task, arm and seed kind: best/worst seed and the sd of means."""
    rows = []
    for (task, arm), frame in results.groups():
        for seed_col, kind in SEED_KINDS.items():
            means = seed_means(frame, seed_col, score)
            if len(means) < 2:
                continue
            rows.append({"task": task, "arm": arm, "seed": kind, "seeds": len(means),
                         "best seed": f"{means['seed'].iloc[0]} ({means['mean'].iloc[0]:.4f})",
                         "worst seed": f"{means['seed'].iloc[-1]} ({means['mean'].iloc[-1]:.4f})",
                         "range of means": means["mean"].iloc[0] - means["mean"].iloc[-1],
                         "sd of means": means["mean"].std()})
    if not rows:
        raise NotEnoughData("no seed took more than one value")
    return pd.DataFrame(rows)


def _seed_task_means(results: Results, seed_col: str, score: str) -> dict[str, pd.DataFrame]:
    """Per arm present on at least two tasks: seeds (rows) x tasks (columns) of the mean score."""
    means = results.trials.groupby(["arm", seed_col, "task"])[score].mean().unstack("task")
    tables = {arm: table.droplevel("arm").dropna(axis=1, how="all") for arm, table in means.groupby(level="arm")}
    return {arm: table for arm, table in tables.items() if table.shape[1] >= 2}


def seed_transfer(results: Results, seed_col: str = "wi_seed", score: str = "final") -> pd.DataFrame:
    """Spearman rank correlation of per-seed means between every pair of tasks (same arm): are good seeds good
    everywhere?"""
    rows = []
    for arm, table in _seed_task_means(results, seed_col, score).items():
        tasks = list(table.columns)
        for i, task_a in enumerate(tasks):
            for task_b in tasks[i + 1:]:
                pair = table[[task_a, task_b]].dropna()
                if len(pair) < 3:
                    continue
                with warnings.catch_warnings():  # constant means give nan, which is the honest answer
                    warnings.simplefilter("ignore")
                    rho, p = stats.spearmanr(pair[task_a], pair[task_b])
                rows.append({"arm": arm, "seed": SEED_KINDS[seed_col], "task A": task_a, "task B": task_b,
                             "seeds": len(pair), "spearman rho": float(rho), "p": float(p)})
    if not rows:
        raise NotEnoughData("seed transfer needs one arm run on two or more tasks with three or more shared seeds")
    return pd.DataFrame(rows)


def seed_extremes(results: Results, seed_col: str = "wi_seed", k: int | None = None, score: str = "final") -> pd.DataFrame:
    """Scores of the k best and k worst seeds, chosen by their mean on one task, on every task (Dodge et al.'s
    density figure).

    Long format: arm, chosen on, task, group ('best k' / 'worst k'), seed, value (one row per trial).
    k defaults to a quarter of the shared seeds, at most 3.
    """
    rows = []
    for arm, table in _seed_task_means(results, seed_col, score).items():
        shared = table.dropna()
        if len(shared) < 2:
            continue
        count = k or max(1, min(3, len(shared) // 4))
        trials = results.trials[(results.trials["arm"] == arm) & results.trials[seed_col].isin(shared.index)]
        for chosen_on in shared.columns:
            ranked = shared[chosen_on].sort_values(ascending=False).index
            for group, seeds in ((f"best {count}", ranked[:count]), (f"worst {count}", ranked[-count:])):
                picked = trials[trials[seed_col].isin(seeds)]
                rows.append(pd.DataFrame({"arm": arm, "chosen on": chosen_on, "task": picked["task"], "group": group,
                                          "seed": picked[seed_col], "value": picked[score]}))
    if not rows:
        raise NotEnoughData("seed densities need one arm run on two or more tasks with shared seeds")
    return pd.concat(rows, ignore_index=True)
