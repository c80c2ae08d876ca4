"""Per-example predictions: stored with the trial, equal to its metrics, kept across a pause, validated, exported."""
from __future__ import annotations

import sqlite3

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from steadytune.cli import app
from steadytune.data.metrics import compute_metrics
from steadytune.storage.store import Store, StoreError, TrialOutcome
from steadytune.studies.single import run_stored
from steadytune.training.records import Predictions
from steadytune.training.trial import Trial


def _frame(store: Store, trial_id: int) -> dict[tuple[str, str], np.ndarray]:
    rows = store.predictions([trial_id])
    return {key: group.sort_values("example")["value"].to_numpy() for key, group in rows.groupby(["split", "point"])}


def test_a_trial_stores_final_and_best_predictions_that_give_its_metrics(tiny_trial_config, options, tmp_path):
    config = tiny_trial_config(epochs=2, evals_per_epoch=2, split_dev=True)
    with Store(tmp_path / "r.db") as store:
        trial_id, outcome, _ = run_stored(config, options, store)
        stored = _frame(store, trial_id)
        steps = store.predictions([trial_id]).groupby("point")["step"].first()
    trial = Trial(config, options)
    assert set(stored) == {(split, point) for split in ("dev", "test") for point in ("final", "best", "gold")}
    assert stored[("dev", "gold")].tolist() == trial.inputs.dev.labels.tolist()
    assert stored[("test", "gold")].tolist() == trial.inputs.test.labels.tolist()
    for point, metrics in (("final", outcome.final_metrics), ("best", outcome.best_metrics)):
        predicted = stored[("dev", point)].astype(np.int64)
        again = compute_metrics(trial.task, predicted, trial.inputs.dev.labels)
        assert again[outcome.metric] == pytest.approx(metrics[outcome.metric], abs=1e-12)
        test = compute_metrics(trial.task, stored[("test", point)].astype(np.int64), trial.inputs.test.labels)
        assert test[outcome.metric] == pytest.approx(metrics[f"test_{outcome.metric}"], abs=1e-12)
    assert steps["best"] == outcome.best_step and steps["final"] == outcome.steps_done and pd.isna(steps["gold"])


def test_regression_predictions_are_values(tiny_trial_config, options, tmp_path):
    with Store(tmp_path / "r.db") as store:
        trial_id, outcome, _ = run_stored(tiny_trial_config(task="stsb", evals_per_epoch=1), options, store)
        stored = _frame(store, trial_id)
    assert stored[("dev", "final")].dtype == float and not np.all(stored[("dev", "final")] == np.round(stored[("dev", "final")]))
    trial = Trial(tiny_trial_config(task="stsb", evals_per_epoch=1), options)
    again = compute_metrics(trial.task, stored[("dev", "final")].astype(np.float32), trial.inputs.dev.labels)
    assert again["pearson"] == pytest.approx(outcome.final_metrics["pearson"], abs=1e-6)


def test_a_paused_trial_keeps_its_best_predictions(tiny_trial_config, options, tmp_path):
    config = tiny_trial_config(epochs=2, evals_per_epoch=2, wi_seed=3)
    straight, _ = Trial(config, options).run(lambda points: None)
    first = Trial(config, options)
    first.run(lambda points: None, stop_at=5)
    first.save_state(tmp_path / "state.safetensors")
    second = Trial(config, options)
    second.restore_state(tmp_path / "state.safetensors")
    resumed, _ = second.run(lambda points: None)
    as_dict = lambda outcome: {(p.split, p.point, p.step): p.values.tolist() for p in outcome.predictions}
    assert as_dict(resumed) == as_dict(straight)


def test_damaged_predictions_are_refused_in_one_line(tmp_path):
    path = tmp_path / "r.db"
    outcome = TrialOutcome("complete", 1, 1, "accuracy", {"accuracy": 0.5}, {"accuracy": 0.5}, 1, 0.5, 1.0,
                           predictions=(Predictions("dev", "final", 1, np.array([0, 1, 1])),))
    with Store(path) as store:
        trial_id = store.start_trial({"task": "rte", "model": "m", "wi_seed": 1, "do_seed": 1}, "k", 1)
        store.finish_trial(trial_id, outcome)
        assert store.predictions()["value"].tolist() == [0.0, 1.0, 1.0]
    db = sqlite3.connect(path)
    db.execute("UPDATE predictions SET data = ?", (b"\x01\x00\x01",))  # 3 bytes for 3 int16 values
    db.commit()
    db.close()
    with Store(path, readonly=True) as store, pytest.raises(StoreError, match="predictions of trial 1 .* are damaged"):
        store.predictions()
    db = sqlite3.connect(path)
    db.execute("UPDATE predictions SET dtype = 'object', data = ?", (b"\x00" * 6,))
    db.commit()
    db.close()
    with Store(path, readonly=True) as store, pytest.raises(StoreError, match="damaged"):
        store.predictions()


def test_export_predictions(tiny_trial_config, options, tmp_path):
    with Store(tmp_path / "r.db") as store:
        run_stored(tiny_trial_config(evals_per_epoch=1), options, store)
    result = CliRunner().invoke(app, ["export", str(tmp_path / "r.db"), "--what", "predictions",
                                      "--out", str(tmp_path / "p.csv")])
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(tmp_path / "p.csv")
    assert list(frame.columns) == ["trial_id", "split", "point", "step", "example", "value"]
    assert set(frame["point"]) == {"final", "best", "gold"} and frame.groupby("point").size().nunique() == 1
