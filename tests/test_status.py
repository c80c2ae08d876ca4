"""A lab's view of a live study: `study status` with two drivers running it, `studies`, `runs --study`, and
`study cancel`, which stops every driver's further claims while running trials finish."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner
from waiting import wait_for

from steadytune.cli import app
from steadytune.storage.store import Store
from steadytune.studies.status import study_status

runner = CliRunner()


def status_of(store: Path):
    try:
        with Store(store, readonly=True) as db:
            [found] = study_status(db)
        return found
    except Exception:  # noqa: BLE001 - the drivers are still creating the store
        return None


@pytest.mark.slow
def test_status_of_a_live_two_driver_study_shows_its_running_trials_where_they_run(tiny_bert_dir, glue_dir, tmp_path):
    store = tmp_path / "lab.db"
    args = ["study", "run", "--name", "lab", "--tasks", "rte", "--wi-seeds", "1-6", "--model", str(tiny_bert_dir),
            "--glue-dir", str(glue_dir), "--max-train", "32", "--batch-size", "8", "--max-length", "48",
            "--max-steps", "120", "--evals-per-epoch", "2", "--threads", "1", "--store", str(store), "--cache-dir",
            str(tmp_path / "cache")]
    logs = [tmp_path / f"driver-{n}.log" for n in (1, 2)]
    drivers = []
    for log in logs:
        with open(log, "w") as out:
            drivers.append(subprocess.Popen([sys.executable, "-m", "steadytune", *args], stdout=out,
                                            stderr=subprocess.STDOUT, env={**os.environ, "COLUMNS": "200"}))
    try:
        # Both drivers alive, each running a trial whose worker has reported a step.
        live = wait_for(lambda: (s := status_of(store)) and len(s.drivers) == 2 and len(s.running) == 2
                        and all(t.step for t in s.running) and s, 300, "two running trials with their steps")
        host = socket.gethostname()
        assert {trial.driver for trial in live.running} == {f"{host}:{p.pid}" for p in drivers}
        assert live.planned == 6 and live.queued + live.count("complete") + 2 == 6
        shown = runner.invoke(app, ["study", "status", str(store)], env={"COLUMNS": "200"})
        assert shown.exit_code == 0, shown.output
        print(shown.output)  # what the docs quote
        assert "study lab:" in shown.output and "2 running" in shown.output and "2 driver(s) alive" in shown.output
        for trial in live.running:
            assert trial.trial_key in shown.output and f"{host}:" in shown.output
        assert "/120" in shown.output  # the step its worker reported

        # Cancelled: no driver starts another trial; the running ones finish and are recorded.
        cancelled = runner.invoke(app, ["study", "cancel", "lab", "--store", str(store)])
        assert cancelled.exit_code == 0 and "is cancelled" in cancelled.output, cancelled.output
        assert [driver.wait(300) for driver in drivers] == [0, 0]
    finally:
        for driver in drivers:
            if driver.poll() is None:
                driver.kill()
    after = status_of(store)
    assert after.cancelled and after.running == [] and after.drivers == []
    assert after.count("complete") < 6 and after.count("complete") + after.queued == 6  # the rest never started
    assert all("is cancelled" in log.read_text() and "Traceback" not in log.read_text() for log in logs)
    with Store(store, readonly=True) as db:
        trials = db.trials()
    assert set(trials["host"]) == {socket.gethostname()}  # where each trial ran
    assert trials["driver"].str.rpartition(":")[0].isin([f"{socket.gethostname()}:{p.pid}" for p in drivers]).all()

    listed = runner.invoke(app, ["studies", str(store)], env={"COLUMNS": "200"})
    assert listed.exit_code == 0 and "lab" in listed.output and "cancelled" in listed.output, listed.output
    only = runner.invoke(app, ["runs", str(store), "--study", "lab"], env={"COLUMNS": "200"})
    assert only.exit_code == 0 and f"{len(trials)} trials" in only.output, only.output
    unknown = runner.invoke(app, ["runs", str(store), "--study", "nope"])
    assert unknown.exit_code == 2 and "no study named 'nope'" in unknown.output
    # Undone, the same command resumes the study to its end.
    assert runner.invoke(app, ["study", "cancel", "lab", "--store", str(store), "--undo"]).exit_code == 0
    resumed = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert resumed.exit_code == 0 and "6 complete" in resumed.output, resumed.output
