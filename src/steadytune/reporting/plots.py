"""Figures for the analyses: each function takes the analysis' DataFrame and returns a matplotlib Figure.

Figures are built with the object-oriented API (`matplotlib.figure.Figure`), which renders PNG through
the Agg backend without touching pyplot's global state, so reports can make many of them in one process.
"""
from __future__ import annotations

import textwrap

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from scipy.stats import gaussian_kde

from ..analysis.results import FREQUENCIES

_PANEL = (4.6, 3.6)  # inches per panel
# A report page is about 1,200 px wide: a figure of one panel still gets half of it, so its titles fit.
_MIN_WIDTH = 6.5
# Characters of a title that fit in one inch at matplotlib's default title sizes (12 pt suptitle, 12 pt axes).
_CHARS_PER_INCH = 10
_KIND_COLOURS = {"ok": "tab:blue", "generalization": "tab:orange", "optimization": "tab:red", "unknown": "tab:grey"}


def _panels(count: int, columns: int = 3, sharey: bool = False) -> tuple[Figure, np.ndarray]:
    cols = min(columns, count)
    rows = -(-count // cols)
    figure = Figure(figsize=(max(_PANEL[0] * cols, _MIN_WIDTH), _PANEL[1] * rows), layout="constrained")
    axes = np.atleast_1d(figure.subplots(rows, cols, squeeze=False, sharey=sharey)).ravel()
    for extra in axes[count:]:
        extra.set_visible(False)
    return figure, axes[:count]


def _wrapped(text: str, inches: float) -> str:
    """`text` broken into lines that fit `inches` of width, so a long title is wrapped instead of clipped."""
    return "\n".join(textwrap.wrap(text, max(20, int(inches * _CHARS_PER_INCH)))) or text


def _suptitle(figure: Figure, text: str) -> None:
    figure.suptitle(_wrapped(text, figure.get_figwidth()))


def _title(axis, text: str) -> None:
    """An axes title wrapped to the axes' share of the figure (arm names can be long)."""
    axis.set_title(_wrapped(text, axis.get_figure().get_figwidth() * axis.get_position().width))


def _ylabel_once(axes, text: str) -> None:
    """With a shared y axis the label goes on the first panel only: repeated, it runs into the panel to its left."""
    axes[0].set_ylabel(text)


def expected_max_figure(curves: pd.DataFrame, task: str, metric: str) -> Figure:
    """E[max of n runs] +- sd against n (log x), one curve per eval frequency, one panel per arm."""
    arms = sorted(curves["arm"].unique())
    figure, axes = _panels(len(arms), sharey=True)
    for axis, arm in zip(axes, arms):
        for frequency, label in FREQUENCIES.items():
            curve = curves[(curves["arm"] == arm) & (curves["frequency"] == frequency)]
            line, = axis.plot(curve["n"], curve["expected"], label=label)
            axis.fill_between(curve["n"], curve["expected"] - curve["sd"], curve["expected"] + curve["sd"],
                              color=line.get_color(), alpha=0.15)
        axis.set_xscale("log")
        _title(axis, arm)
        axis.set(xlabel="runs n (log scale)")
        axis.grid(alpha=0.3)
    _ylabel_once(axes, f"expected max dev {metric}")
    axes[0].legend(fontsize="small", loc="lower right")
    _suptitle(figure, f"{task}: expected validation performance (± sd)")
    return figure


def seed_heatmap_figure(grids: dict[str, pd.DataFrame], task: str, metric: str) -> Figure:
    """WI x DO grid of the final dev score, one panel per arm, on a shared colour scale."""
    values = np.concatenate([g.to_numpy(dtype=float).ravel() for g in grids.values()])
    low, high = np.nanmin(values), np.nanmax(values)
    figure, axes = _panels(len(grids), columns=2)
    for axis, (arm, grid) in zip(axes, grids.items()):
        image = axis.imshow(grid.to_numpy(dtype=float), vmin=low, vmax=high, cmap="viridis", aspect="auto")
        axis.set_xticks(range(grid.shape[1]), [str(s) for s in grid.columns], fontsize="x-small", rotation=90)
        axis.set_yticks(range(grid.shape[0]), [str(s) for s in grid.index], fontsize="x-small")
        _title(axis, arm)
        axis.set(xlabel="data-order (DO) seed", ylabel="weight-init (WI) seed")
    figure.colorbar(image, ax=list(axes), label=f"final dev {metric}")
    _suptitle(figure, f"{task}: final dev {metric} per seed pair")
    return figure


def seed_means_figure(means: dict[str, dict[str, pd.DataFrame]], task: str, metric: str) -> Figure:
    """Per-seed means (± sd over the other seed), WI and DO seeds each sorted best first, one panel per arm."""
    figure, axes = _panels(len(means), sharey=True)
    for axis, (arm, kinds) in zip(axes, means.items()):
        for offset, (kind, table) in zip((-0.1, 0.1), kinds.items()):
            axis.errorbar(np.arange(len(table)) + 1 + offset, table["mean"], yerr=table["sd"].fillna(0), fmt="o",
                          markersize=3, capsize=2, label=f"{kind} seeds")
        _title(axis, arm)
        axis.set(xlabel="seed rank (best first)")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(alpha=0.3)
    _ylabel_once(axes, f"mean final dev {metric}")
    axes[0].legend(fontsize="small")
    _suptitle(figure, f"{task}: per-seed mean of the final dev {metric} (± sd)")
    return figure


def seed_density_figure(extremes: pd.DataFrame, arm: str, metrics: dict[str, str]) -> Figure:
    """Density of the scores of the best and worst WI seeds (chosen on the row's task) on each task (column)."""
    chosen, tasks = sorted(extremes["chosen on"].unique()), sorted(extremes["task"].unique())
    figure = Figure(figsize=(_PANEL[0] * len(tasks), _PANEL[1] * len(chosen)), layout="constrained")
    axes = figure.subplots(len(chosen), len(tasks), squeeze=False)
    for row, chosen_on in enumerate(chosen):
        for col, task in enumerate(tasks):
            axis = axes[row, col]
            cell = extremes[(extremes["chosen on"] == chosen_on) & (extremes["task"] == task)].dropna(subset=["value"])
            low, high = cell["value"].min(), cell["value"].max()
            margin = max(high - low, 1e-3) * 0.5
            grid = np.linspace(low - margin, high + margin, 200)
            for group, scores in cell.groupby("group", sort=True):
                _density(axis, scores["value"].to_numpy(dtype=float), grid, label=group)
            _title(axis, f"chosen on {chosen_on}, scored on {task}")
            axis.set(xlabel=f"final dev {metrics[task]}", ylabel="density")
            axis.legend(fontsize="small")
    _suptitle(figure, f"{arm}: best vs worst WI seeds across tasks")
    return figure


def _density(axis, values: np.ndarray, grid: np.ndarray, label: str) -> None:
    """A Gaussian KDE over `grid`, or a rug of the values when they are too few or all equal for one."""
    if values.size >= 2 and np.ptp(values) > 0:
        axis.plot(grid, gaussian_kde(values)(grid), label=label)
    else:
        axis.plot(values, np.zeros_like(values), "|", markersize=15, label=label)


def loss_vs_dev_figure(kinds: pd.DataFrame) -> Figure:
    """Final training loss against final dev score per run, coloured by failure kind; one panel per task."""
    tasks = sorted(kinds["task"].unique())
    figure, axes = _panels(len(tasks))
    for axis, task in zip(axes, tasks):
        frame = kinds[kinds["task"] == task]
        for kind, colour in _KIND_COLOURS.items():
            group = frame[frame["kind"] == kind]
            if len(group):
                axis.scatter(group["final_loss"], group["dev"], s=14, alpha=0.7, color=colour, label=kind)
        axis.axhline(frame["baseline"].iloc[0], color="grey", linestyle="--", linewidth=1, label="majority baseline")
        _title(axis, task)
        axis.set(xlabel="final training loss (nats)", ylabel=f"final dev {frame['metric'].iloc[0]}")
        axis.legend(fontsize="small")
    _suptitle(figure, "Failed runs: optimization (loss stuck) vs generalization (loss low, dev poor)")
    return figure


def _lines_per_arm(table: pd.DataFrame, x, y, label, xlabel: str, ylabel: str, title: str, **limits) -> Figure:
    """One panel per task with one line per arm: x(frame), y(frame) of the arm's rows, labelled label(arm, frame)."""
    tasks = sorted(table["task"].unique())
    figure, axes = _panels(len(tasks), sharey=True)
    for axis, task in zip(axes, tasks):
        for arm, frame in table[table["task"] == task].groupby("arm"):
            axis.plot(x(frame), y(frame), marker="o", markersize=3, label=label(arm, frame))
        _title(axis, task)
        axis.set(xlabel=xlabel, **limits)
        axis.grid(alpha=0.3)
        axis.legend(fontsize="small")
    _ylabel_once(axes, ylabel)
    _suptitle(figure, title)
    return figure


def early_correlation_figure(correlation: pd.DataFrame) -> Figure:
    """Spearman rho of the dev score at each point of training with the final score, one line per arm; panel per task."""
    return _lines_per_arm(correlation, lambda f: f["fraction"] * 100, lambda f: f["spearman rho"], lambda arm, f: arm,
                          "training done (% of steps)", "Spearman rho with final dev score",
                          "How early can you tell? Early dev score vs final", ylim=(-1.05, 1.05))


def planner_figure(panels: dict[str, tuple[pd.DataFrame, float]], budget: int, task: str, metric: str) -> Figure:
    """Expected best dev score against the cut point F, one line per T (best affordable P), and plain training;
    one panel per arm, given as arm -> (simulated plans, E[max] of `budget` fully trained runs)."""
    figure, axes = _panels(len(panels), columns=2, sharey=True)
    for axis, (arm, (plans, plain)) in zip(axes, panels.items()):
        best = plans.loc[plans.groupby(["T", "F"])["expected"].idxmax()]
        for t, frame in best.groupby("T"):
            axis.plot(frame["F"] * 100, frame["expected"], marker="o", markersize=3, label=f"start T={t}")
        axis.axhline(plain, color="black", linestyle="--", label=f"train {budget} runs fully")
        _title(axis, arm)
        axis.set(xlabel="cut after (% of training)")
        axis.grid(alpha=0.3)
        axis.legend(fontsize="x-small", ncol=2)
    _ylabel_once(axes, f"expected best dev {metric}")
    _suptitle(figure, f"{task}: early stopping at a budget of {budget} full runs")
    return figure


def policies_figure(curves: dict[str, pd.DataFrame], metric: str) -> Figure:
    """Expected best dev score against the compute spent (full-trial units), one line per policy; one panel per
    held-out grid, given as name -> forecast.policies.budget_curve's frame."""
    figure, axes = _panels(len(curves), columns=2, sharey=False)
    for axis, (name, frame) in zip(axes, curves.items()):
        for policy, rows in frame.groupby("policy", sort=False):
            rows = rows.sort_values("cost")
            axis.plot(rows["cost"], rows["expected"], marker="o", markersize=3, label=policy)
        _title(axis, name)
        axis.set(xlabel="compute (full trials)")
        axis.grid(alpha=0.3)
        axis.legend(fontsize="x-small")
    _ylabel_once(axes, f"expected best dev {metric}")
    _suptitle(figure, "policies replayed on recorded grids (forecaster fit on the other grids)")
    return figure


def recipe_scores_figure(trials: pd.DataFrame, score: str) -> Figure:
    """Each arm's runs (points) with a box plot of their spread, one panel per task."""
    tasks = sorted(trials["task"].unique())
    figure, axes = _panels(len(tasks))
    for axis, task in zip(axes, tasks):
        frame = trials[trials["task"] == task]
        arms = sorted(frame["arm"].unique())
        data = [frame.loc[frame["arm"] == arm, score].dropna().to_numpy(dtype=float) for arm in arms]
        axis.boxplot(data, showfliers=False)
        jitter = np.random.default_rng(0)
        for position, values in enumerate(data, start=1):
            axis.scatter(position + jitter.uniform(-0.12, 0.12, values.size), values, s=10, alpha=0.6)
        axis.set_xticks(range(1, len(arms) + 1), arms, rotation=20, ha="right", fontsize="small")
        _title(axis, task)
        axis.set(xlabel="recipe", ylabel=f"final dev {frame['metric'].iloc[0]}")
        axis.grid(alpha=0.3, axis="y")
    _suptitle(figure, "Final dev score per recipe (one point per run)")
    return figure


def power_figure(power: pd.DataFrame, target: float = 0.8) -> Figure:
    """Power of the permutation test against runs per arm, one line per compared pair; panel per task."""
    tasks = sorted(power["task"].unique())
    figure, axes = _panels(len(tasks), sharey=True)
    for axis, task in zip(axes, tasks):
        for pair, frame in power[power["task"] == task].groupby("pair"):
            axis.plot(frame["n"], frame["power"], marker="o", markersize=3, label=pair)
        axis.axhline(target, color="grey", linestyle="--", linewidth=1, label=f"power {target}")
        _title(axis, task)
        axis.set(xlabel="runs (seeds) per recipe", ylim=(-0.02, 1.02))
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(alpha=0.3)
        axis.legend(fontsize="small")
    _ylabel_once(axes, "power at alpha 0.05")
    _suptitle(figure, "How many seeds would the comparison need?")
    return figure


def _depth_colours(parts: list[str]) -> dict[str, tuple]:
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    return {part: cmap(k / max(1, len(parts) - 1)) for k, part in enumerate(parts)}


def gradient_norms_figure(grads: pd.DataFrame, failed_ids: set[int], parts: list[str]) -> Figure:
    """Per-layer gradient norm before clipping over steps (median over trials, log scale), failed vs successful."""
    colours = _depth_colours(parts)
    groups = {"failed runs": grads[grads["trial_id"].isin(failed_ids)],
              "successful runs": grads[~grads["trial_id"].isin(failed_ids)]}
    figure, axes = _panels(2, columns=2, sharey=True)
    for axis, (title, frame) in zip(axes, groups.items()):
        runs = frame["trial_id"].nunique()
        for part in parts:
            median = frame[frame["part"] == part].groupby("step")["value"].median()
            if len(median):
                axis.plot(median.index, median.to_numpy(), color=colours[part], label=part, linewidth=1.2)
        if runs == 0:
            axis.text(0.5, 0.5, "none", transform=axis.transAxes, ha="center", va="center", color="grey")
        else:
            axis.set_yscale("log")
        _title(axis, f"{title} ({runs})")
        axis.set(xlabel="step")
        axis.grid(alpha=0.3)
    _ylabel_once(axes, "gradient L2 norm (median)")
    drawn = [axis for axis in axes if axis.get_lines()]
    if drawn:  # beside the panels, not over the curves: a 24-layer model has 27 parts
        figure.legend(*drawn[0].get_legend_handles_labels(), loc="outside right center", fontsize="x-small",
                      ncol=1 + len(parts) // 14)
    _suptitle(figure, "Per-layer gradient norm before clipping; vanishing lower layers mark optimization failures")
    return figure


def trial_diagnostics_figure(curves: pd.DataFrame, parts: list[str], title: str) -> Figure:
    """One trial: per-layer gradient norms, total norm before/after clipping, loss with saturation and collapse."""
    diag = curves[curves["split"] == "diag"]
    colours = _depth_colours(parts)
    figure, axes = _panels(3, columns=3)
    for part in parts:
        values = diag[diag["metric"] == f"grad.{part}"]
        axes[0].plot(values["step"], values["value"], color=colours[part], label=part, linewidth=1.1)
    for metric, label in (("grad.total", "before clipping"), ("grad.total_clipped", "after clipping")):
        values = diag[diag["metric"] == metric]
        axes[1].plot(values["step"], values["value"], label=label)
    loss = curves[(curves["split"] == "train") & (curves["metric"] == "loss")]
    axes[2].plot(loss["step"], loss["value"], color="grey", linewidth=0.6, label="training loss")
    for metric, label in (("pooler_saturation", "pooler tanh |a| ≥ 0.99"), ("pred_top_share", "top-class share")):
        values = diag[diag["metric"] == metric]
        if len(values):
            axes[2].plot(values["step"], values["value"], label=label)
    axes[0].set(yscale="log", title="per-layer gradient norm", xlabel="step")
    axes[1].set(yscale="log", title="total gradient norm", xlabel="step")
    axes[2].set(title="loss, saturation, class collapse", xlabel="step")
    for axis in axes:
        axis.grid(alpha=0.3)
        axis.legend(fontsize="x-small")
    _suptitle(figure, title)
    return figure


def right_counts_figure(counts: pd.DataFrame) -> Figure:
    """Share of examples against the share of runs that get them right, one line per arm; one panel per task.
    Mass at both ends means stable predictions; mass in the middle, examples that flip between seeds."""
    return _lines_per_arm(counts, lambda f: f["runs right"] / f["runs"], lambda f: f["examples"] / f["examples"].sum(),
                          lambda arm, f: f"{arm} ({int(f['runs'].iloc[0])} runs)",
                          "share of runs that get the example right", "share of dev examples",
                          "How many seeds get each example right", xlim=(-0.03, 1.03))
