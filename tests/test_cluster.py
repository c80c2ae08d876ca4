"""Studies as job arrays of cooperating drivers: the command each job runs, and a real array run through
submitit's local executor (no SLURM here), which starts the jobs as processes on this machine."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from steadytune.cli import app
from steadytune.storage.store import Store
from steadytune.studies.cluster import driver_command

runner = CliRunner()


def study_args(tiny_bert_dir, glue_dir, tmp_path, store: str) -> list[str]:
    return ["study", "run", "--name", "array", "--tasks", "rte", "--wi-seeds", "1-4", "--do-seeds", "1",
            "--model", str(tiny_bert_dir), "--glue-dir", str(glue_dir), "--max-train", "32", "--batch-size", "8",
            "--max-length", "48", "--max-steps", "30", "--evals-per-epoch", "0", "--threads", "1",
            "--store", store, "--cache-dir", str(tmp_path / "cache")]


def test_each_job_runs_the_study_command_without_the_options_that_submit_it():
    argv = ["study", "run", "--tasks", "rte", "--executor", "slurm", "--jobs=8", "--partition", "gpu", "--wait",
            "--time-min", "60", "--mem-gb=32", "--gpus-per-job", "1", "--cpus-per-job", "8", "--array-parallelism",
            "4", "--jobs-folder", "logs", "--store", "postgresql://u@h/db", "--workers", "2"]
    assert driver_command(argv) == [sys.executable, "-m", "steadytune", "study", "run", "--tasks", "rte", "--store",
                                    "postgresql://u@h/db", "--workers", "2"]


@pytest.mark.slow
def test_a_job_array_on_submitit_local_runs_each_trial_once(tiny_bert_dir, glue_dir, tmp_path):
    store = str(tmp_path / "runs" / "runs.db")  # its folder is made, as for any command that writes a store
    args = [*study_args(tiny_bert_dir, glue_dir, tmp_path, store), "--executor", "submitit-local", "--jobs", "2",
            "--jobs-folder", str(tmp_path / "jobs"), "--wait"]
    done = subprocess.run([sys.executable, "-m", "steadytune", *args], capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "COLUMNS": "200"}, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "submitted 2 driver job(s)" in done.stdout and "4 complete" in done.stdout
    with Store(store, readonly=True) as db:
        trials = db.trials()
    assert sorted(trials["status"]) == ["complete"] * 4 and trials["trial_key"].is_unique
    logs = "".join(path.read_text() for path in (tmp_path / "jobs").glob("*_log.out"))
    ran = [int(part.split()[0]) for part in logs.split("; ran ")[1:]]
    assert len(ran) == 2 and sum(ran) == 4  # each driver reports what it ran; together, every trial once

    clean = runner.invoke(app, study_args(tiny_bert_dir, glue_dir, tmp_path, str(tmp_path / "clean.db")))
    assert clean.exit_code == 0, clean.output
    with Store(tmp_path / "clean.db", readonly=True) as db:
        alone = db.trials().set_index("trial_key")
    assert (trials.set_index("trial_key").final_metric == alone.loc[trials["trial_key"], "final_metric"].values).all()


def test_submitting_refuses_what_cannot_work_in_one_line(tiny_bert_dir, glue_dir, tmp_path):
    base = study_args(tiny_bert_dir, glue_dir, tmp_path, str(tmp_path / "runs.db"))
    slurm_on_sqlite = runner.invoke(app, [*base, "--executor", "slurm"])
    assert slurm_on_sqlite.exit_code == 2 and "needs a PostgreSQL store" in slurm_on_sqlite.output
    partition_here = runner.invoke(app, [*base, "--partition", "gpu"])
    assert partition_here.exit_code == 2 and "--partition applies to --executor slurm" in partition_here.output
    unknown = runner.invoke(app, [*base, "--executor", "pbs"])
    assert unknown.exit_code == 2 and "--executor must be one of" in unknown.output
    assert not (tmp_path / "runs.db").exists()  # nothing was started
