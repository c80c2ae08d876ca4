"""The report on a synthetic store: every section, inline images (HTML), image files (Markdown), thin data, errors."""
from __future__ import annotations

import math
import re

import numpy as np
import pytest
from typer.testing import CliRunner

from steadytune.analysis import AnalysisError, load_results
from steadytune.cli import app
from steadytune.report import build_report
from steadytune.store import CurvePoint, Store, StoreError, TrialOutcome, export

TASKS = {"rte": ("accuracy", 0.527), "mrpc": ("f1", 0.812)}
RECIPES = {"devlin2019": 0.0, "mosbach2021": 0.04}
SEEDS = range(1, 5)
STEPS, PER_EPOCH, EVAL_EVERY = 30, 10, 5
SECTIONS = ["Expected validation performance", "Seed variance", "Seed transfer across tasks", "Failed runs",
            "Early vs final dev score", "Early-stopping planner", "Recipe comparison"]


def add_trial(store: Store, task: str, recipe: str, wi: int, do: int, quality: float, status: str = "complete",
              model: str = "minilm-l6", last_step: int = STEPS, stuck: bool = False) -> None:
    """One trial whose dev score climbs to `quality` (floored at the baseline) and whose loss falls unless stuck."""
    metric, baseline = TASKS[task]
    config = {"task": task, "model": model, "recipe": recipe, "wi_seed": wi, "do_seed": do, "lr": 2e-5,
              "epochs": 3.0, "evals_per_epoch": 2, "glue_dir": "/data/glue"}
    trial_id = store.start_trial(config, f"{task}-{recipe}-{wi}-{do}-{status}", dropout_seed=wi)
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
    outcome = TrialOutcome(status=status, steps_done=last_step, total_steps=STEPS, metric=metric, final_metrics=final,
                           best_metrics={metric: max(values)} if values else {}, best_step=None,
                           baseline_metric=baseline, wall_seconds=1.0)
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
    path = build_report(store_path, tmp_path / "out", "html", budget=3)
    text = path.read_text()
    assert path.name == "report.html"
    for title in SECTIONS:
        assert f"<h2>{title}</h2>" in text
    assert text.count('<img src="data:image/png;base64,') >= 12
    assert "Not available" not in text  # this store has data for every section
    assert "sentence-embedding checkpoint" in text
    assert "64 complete, 1 diverged" in text and "1 stopped" in text and "1 running" in text
    assert "rte (accuracy)" in text and "mrpc (f1)" in text
    assert "WI 5 (1..9)" in text  # result runs only: the diverged seed 9 counts, stopped 8 and running 7 do not
    assert not list((tmp_path / "out").glob("*.png"))  # self-contained


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
