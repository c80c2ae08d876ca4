"""The report on a synthetic store: every section, inline images (HTML), image files (Markdown), thin data, errors."""
from __future__ import annotations

import math
import re

import numpy as np
import pytest
from typer.testing import CliRunner

from steadytune.analysis import AnalysisError, load_results
from steadytune.cli import app
from steadytune.reporting.report import ReportSettings, build_report
from steadytune.storage.store import CurvePoint, Store, StoreError, TrialOutcome, export
from steadytune.training.records import Predictions

TASKS = {"rte": ("accuracy", 0.527), "mrpc": ("f1", 0.812)}
RECIPES = {"devlin2019": 0.0, "mosbach2021": 0.04}
SEEDS = range(1, 5)
STEPS, PER_EPOCH, EVAL_EVERY = 30, 10, 5
SECTIONS = ["Expected validation performance", "Seed variance", "Seed transfer across tasks", "Failed runs",
            "Early vs final dev score", "Early-stopping planner", "Forecasting failures: policies", "Recipe comparison",
            "Per-example instability"]
DEV_EXAMPLES = 60


def add_trial(store: Store, task: str, recipe: str, wi: int, do: int, quality: float, status: str = "complete",
              model: str = "minilm-l6", last_step: int = STEPS, stuck: bool = False, study_id: int | None = None) -> None:
    """One trial whose dev score climbs to `quality` (floored at the baseline) and whose loss falls unless stuck."""
    metric, baseline = TASKS[task]
    config = {"task": task, "model": model, "recipe": recipe, "wi_seed": wi, "do_seed": do, "lr": 2e-5,
              "epochs": 3.0, "evals_per_epoch": 2, "glue_dir": "/data/glue"}
    trial_id = store.start_trial(config, f"{task}-{recipe}-{wi}-{do}-{status}", dropout_seed=wi, study_id=study_id)
    points, values = [], []
    for step in range(1, last_step + 1):
        loss = math.log(2) if stuck else 0.2 + (math.log(2) - 0.2) * (1 - step / STEPS)
        points.append(CurvePoint(step, step / PER_EPOCH, "train", "loss", loss))
        if step % EVAL_EVERY == 0:
            value = baseline if stuck else max(baseline, quality - 0.1 * (1 - step / STEPS))
            values.append(value)
            points.append(CurvePoint(step, step / PER_EPOCH, "dev", metric, value))
    if status == "diverged":  # the trainer logs the non-finite loss that stopped it
        points.append(CurvePoint(last_step + 1, (last_step + 1) / PER_EPOCH, "train", "loss", math.nan))
    if status == "running":  # interrupted: curve rows but no outcome
        store.add_points(trial_id, points)
        return
    final = {metric: values[-1]} if status == "complete" else {}
    # Each run gets a dev example wrong with a chance that falls with its quality (its own draws per seed pair).
    gold = np.random.default_rng(len(task)).integers(0, 2, DEV_EXAMPLES)
    flips = np.random.default_rng([wi, do, len(recipe)]).random(DEV_EXAMPLES) < 1.2 - quality
    predictions = (Predictions("dev", "gold", None, gold), Predictions("dev", "final", last_step, np.where(flips, 1 - gold, gold)))
    outcome = TrialOutcome(status=status, steps_done=last_step, total_steps=STEPS, metric=metric, final_metrics=final,
                           best_metrics={metric: max(values)} if values else {}, best_step=None,
                           baseline_metric=baseline, wall_seconds=1.0,
                           predictions=predictions if status == "complete" else ())
    store.finish_trial(trial_id, outcome, points)


def synthetic_store(path, tasks=TASKS, recipes=RECIPES) -> None:
    """A 4 x 4 WI x DO grid per task and recipe with planted seed effects, failures and extra statuses."""
    rng = np.random.default_rng(0)
    wi_effect = {wi: 0.03 * (wi - 2.5) for wi in SEEDS}  # the same WI seeds are good on every task
    with Store(path) as store:
        for task in tasks:
            metric, baseline = TASKS[task]
            for recipe, lift in recipes.items():
                for wi in SEEDS:
                    for do in SEEDS:
                        quality = baseline + 0.08 + lift + wi_effect[wi] + rng.normal(0, 0.01)
                        add_trial(store, task, recipe, wi, do, quality, stuck=(recipe == "devlin2019" and wi == do == 1))
        add_trial(store, "rte", "devlin2019", 9, 9, 0.7, status="diverged", last_step=12)
        add_trial(store, "rte", "devlin2019", 8, 8, 0.7, status="stopped", last_step=10)
        add_trial(store, "rte", "devlin2019", 7, 7, 0.7, status="running", last_step=10)


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("report") / "runs.db"
    synthetic_store(path)
    return path


@pytest.fixture(scope="module")
def small_store(tmp_path_factory):
    """One task, one recipe: nothing to transfer or compare."""
    path = tmp_path_factory.mktemp("small") / "runs.db"
    synthetic_store(path, tasks={"rte": TASKS["rte"]}, recipes={"devlin2019": 0.0})
    return path


def test_html_report_has_every_section_and_inline_images(store_path, tmp_path):
    path = build_report(store_path, tmp_path / "out", "html", settings=ReportSettings(budget=3))
    text = path.read_text()
    assert path.name == "report.html"
    for title in SECTIONS:
        assert f"<h2>{title}</h2>" in text
    assert text.count('<img src="data:image/png;base64,') >= 14
    assert "Not available" not in text  # this store has data for every section
    assert "sentence-embedding checkpoint" in text
    assert "64 complete, 1 diverged" in text and "1 stopped" in text and "1 running" in text
    assert "rte (accuracy)" in text and "mrpc (f1)" in text
    assert "WI 5 (1..9)" in text  # result runs only: the diverged seed 9 counts, stopped 8 and running 7 do not
    assert not list((tmp_path / "out").glob("*.png"))  # self-contained
    assert "<th>task / arm</th>" not in text  # a pivot's column name is no column of its own
    assert "compute each policy needs to reach" in text and "<th>dodge+replace</th>" in text


def test_markdown_via_cli_on_an_export_pair_with_sections_lacking_data(small_store, tmp_path):
    with Store(small_store) as store:
        export(store, "trials", "parquet", tmp_path / "trials.parquet")
        export(store, "curves", "parquet", tmp_path / "curves.parquet")
    from_db, from_export = load_results(small_store), load_results(tmp_path / "trials.parquet")  # curves guessed
    assert from_db.trials["final"].tolist() == pytest.approx(from_export.trials["final"].tolist())

    runner = CliRunner()
    result = runner.invoke(app, ["report", str(tmp_path / "trials.parquet"), "--curves", str(tmp_path / "curves.parquet"),
                                 "--out", str(tmp_path / "cli"), "--format", "md"])
    assert result.exit_code == 0, result.output
    text = (tmp_path / "cli" / "report.md").read_text()
    for title in SECTIONS:
        assert f"## {title}" in text
    images = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", text)
    assert len(images) >= 6
    for name in images:
        assert (tmp_path / "cli" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| task | arm |" in text
    assert "Not available: seed transfer needs one arm run on two or more tasks" in text
    assert "Not available: comparisons need a task with two or more arms" in text
    assert "Not available: Levene's test needs a task with two or more arms" in text

    missing = runner.invoke(app, ["report", str(tmp_path / "nope.db")])
    assert missing.exit_code == 2 and "does not exist" in missing.output and "Traceback" not in missing.output
    lonely = tmp_path / "lonely_trials.csv"
    lonely.write_text("a,b\n1,2\n")
    result = runner.invoke(app, ["report", str(lonely)])
    assert result.exit_code == 2 and "--curves" in result.output


def test_a_report_of_chosen_studies_reads_only_their_trials(tmp_path):
    path = tmp_path / "runs.db"
    with Store(path) as store:
        grid, other = store.study_id("grid", {}), store.study_id("other", {})
        for wi in SEEDS:
            add_trial(store, "rte", "mosbach2021", wi, 1, 0.75, study_id=other)
            for do in SEEDS:
                add_trial(store, "rte", "devlin2019", wi, do, 0.7, study_id=grid)
    runner = CliRunner()
    result = runner.invoke(app, ["report", str(path), "--study", "grid", "--out", str(tmp_path / "r"), "--format", "md"])
    assert result.exit_code == 0, result.output
    text = (tmp_path / "r" / "report.md").read_text()
    assert "(studies grid)" in text and "Recipes / arms: devlin2019\n" in text.replace("  \n", "\n")
    assert "16 complete" in text and "mosbach2021" not in text
    unknown = runner.invoke(app, ["report", str(path), "--study", "nope"])
    assert unknown.exit_code == 2 and "has no study nope (its studies: grid, other)" in unknown.output
    with Store(path) as store:
        export(store, "trials", "csv", tmp_path / "trials.csv")
        export(store, "curves", "csv", tmp_path / "curves.csv")
    exported = runner.invoke(app, ["report", str(tmp_path / "trials.csv"), "--study", "grid"])
    assert exported.exit_code == 2 and "an export keeps no study names" in exported.output


def test_bad_inputs_raise_one_line_errors(tmp_path):
    with pytest.raises(StoreError, match="does not exist"):
        load_results(tmp_path / "missing.db")
    empty = tmp_path / "empty.db"
    Store(empty).close()
    with pytest.raises(AnalysisError, match="no complete or diverged trials"):
        load_results(empty)
    bad = tmp_path / "trials.csv"
    bad.write_text("x\n1\n")
    (tmp_path / "curves.csv").write_text("y\n2\n")
    with pytest.raises(AnalysisError, match="lacks column"):
        load_results(bad)
    with pytest.raises(AnalysisError, match="unknown report format"):
        build_report(empty, tmp_path, "pdf")  # type: ignore[arg-type]


def _own_file_trial(store: Store, train_file: str, data_hash: str, wi: int, recipe: str = "mine") -> None:
    config = {"task": "classification", "model": "m", "recipe": recipe, "wi_seed": wi, "do_seed": 1,
              "train_file": train_file, "max_train": 100000, "lr": 2e-5}
    trial_id = store.start_trial(config, f"{train_file}-{data_hash}-{wi}-{recipe}", dropout_seed=wi)
    outcome = TrialOutcome("complete", 10, 10, "accuracy", {"accuracy": 0.6 + wi / 100}, {"accuracy": 0.7}, 10, 0.5,
                           1.0, data_hash=data_hash)
    store.finish_trial(trial_id, outcome, [CurvePoint(10, 1.0, "dev", "accuracy", 0.6 + wi / 100)])


def test_arms_are_told_apart_by_data_identity_not_file_names(tmp_path):
    path = tmp_path / "own.db"
    with Store(path) as store:
        for wi in (1, 2):
            _own_file_trial(store, "/a/train.csv", "aaaaaa11", wi)   # the same data ...
            _own_file_trial(store, "/b/train.csv", "aaaaaa11", wi + 2)  # ... in another folder: one arm
            _own_file_trial(store, "/c/train.csv", "cccccc22", wi)   # other data under the same name: another arm
    results = load_results(path)
    arms = results.trials.groupby("arm")["id"].count().to_dict()
    assert arms == {"mine data=train.csv#aaaaaa": 4, "mine data=train.csv#cccccc": 2}
    text = build_report(path, tmp_path / "out", "md").read_text()
    assert "training subset of 100000" in text and "100000.0" not in text and "nan" not in text.split("## ")[0]


def test_names_from_the_store_cannot_inject_markup(tmp_path):
    path = tmp_path / "hostile.db"
    hostile = "<img src=x onerror=alert(1)>[click](http://evil.example)"
    with Store(path) as store:
        for wi in (1, 2):
            _own_file_trial(store, "/a/train.csv", "aaaaaa11", wi, recipe=hostile)
    html_text = build_report(path, tmp_path / "html", "html").read_text()
    assert "<img src=x" not in html_text and "&lt;img src=x onerror=alert(1)&gt;" in html_text
    md_text = build_report(path, tmp_path / "md", "md").read_text()
    assert "<img src=x" not in md_text and not re.search(r"(?<!\\)\]\(http://evil", md_text)  # no live link
    assert r"\[click\](http://evil.example)" in md_text


def layout_problems(figure) -> list[str]:
    """Parts of a drawn figure (each panel with its labels, the title, legends) that stick out of it or overlap."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    renderer, box = canvas.get_renderer(), figure.bbox
    parts = [(f"panel {axis.get_title()!r}", axis.get_tightbbox(renderer)) for axis in figure.axes if axis.get_visible()]
    if figure._suptitle is not None:
        parts.append(("title", figure._suptitle.get_window_extent(renderer)))
    parts += [("legend", legend.get_window_extent(renderer)) for legend in figure.legends]
    problems = [f"{name} sticks out" for name, extent in parts
                if extent.x0 < box.x0 - 1 or extent.x1 > box.x1 + 1 or extent.y0 < box.y0 - 1 or extent.y1 > box.y1 + 1]
    problems += [f"{a} overlaps {b}" for k, (a, extent) in enumerate(parts) for b, other in parts[k + 1:]
                 if extent.overlaps(other)]
    return problems


def test_no_figure_clips_its_titles_or_overlaps_its_labels(store_path, small_store):
    import sys
    from pathlib import Path

    from steadytune.analysis.gradients import gradient_norms, part_order
    from steadytune.reporting import plots
    from steadytune.reporting.report import Plot, build_sections

    sys.path.insert(0, str(Path(__file__).parent))
    from test_diagnostics import _synthetic_results

    figures = {f"{source.parent.name}/{block.name}": block.figure
               for source in (store_path, small_store) for section in build_sections(load_results(source), ReportSettings(budget=3))
               for block in section.blocks if isinstance(block, Plot)}
    diagnosed = _synthetic_results(1000.0)
    grads = gradient_norms(diagnosed.curves)
    figures["gradient-norms"] = plots.gradient_norms_figure(grads, {2}, part_order(grads["part"]))
    figures["trial"] = plots.trial_diagnostics_figure(diagnosed.curves[diagnosed.curves["trial_id"] == 2],
                                                      part_order(grads["part"]), "trial 2: rte, WI 2 / DO 1, failed")
    assert len(figures) >= 20
    assert {name: problems for name, figure in figures.items() if (problems := layout_problems(figure))} == {}
    assert all(figure.get_figwidth() >= 6.5 for figure in figures.values())  # half a report page or more


def test_a_seed_grid_section_names_the_arms_without_a_grid(tmp_path):
    path = tmp_path / "mixed.db"
    synthetic_store(path, tasks={"rte": TASKS["rte"]}, recipes={"devlin2019": 0.0})
    with Store(path) as store:
        add_trial(store, "rte", "mosbach2021", 1, 1, 0.7)  # one run of another recipe: no grid
    text = build_report(path, tmp_path / "out", "md").read_text()
    variance = text.split("## Seed variance")[1].split("## ")[0]
    assert "rte / mosbach2021: no WI x DO grid (1 WI and 1 DO seed(s)" in variance
    assert "Not available" not in variance and variance.count("![") == 2  # heatmap and means of devlin2019 only


def test_tests_are_corrected_and_aso_is_read_at_deepsigs_threshold(store_path, tmp_path):
    text = build_report(store_path, tmp_path / "holm", "md").read_text()
    comparison = text.split("## Recipe comparison")[1]
    assert "eps\\_min &lt; 0.2" in comparison and "Ulmer et al. 2022" in comparison
    assert "| permutation p | permutation p (Holm) |" in comparison and "ASO eps\\_min B&gt;A" in comparison
    assert "both directions are tested" in comparison
    assert "p (Holm)" in text.split("## Seed variance")[1].split("## ")[0]  # ANOVA F-tests, one family
    assert "Variance components (random effects)" in text and "ANOVA (balanced grid)" in text
    runner = CliRunner()
    result = runner.invoke(app, ["report", str(store_path), "--out", str(tmp_path / "bh"), "--format", "md",
                                 "--correction", "fdr_bh", "--interval", "bca", "--confidence", "0.9",
                                 "--without-replacement"])
    assert result.exit_code == 0, result.output
    text = (tmp_path / "bh" / "report.md").read_text()
    assert "permutation p (Benjamini-Hochberg)" in text and "90% CI (bca)" in text
    assert "sampling runs without replacement (unbiased" in text
    bad = runner.invoke(app, ["report", str(store_path), "--out", str(tmp_path / "x"), "--correction", "bonferroni"])
    assert bad.exit_code == 2 and "--correction must be one of holm, fdr_bh" in bad.output
