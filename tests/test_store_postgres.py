"""The PostgreSQL store: the same schema and behaviour as SQLite, checked against SQLite on the same writes.

A real server runs (see the `postgres_server` fixture); each test gets a fresh database.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner
from waiting import wait_for

from steadytune.cli import app
from steadytune.landscape.records import add_cells, find_landscape, landscape_cells, landscape_id
from steadytune.storage.connections import database_name, shown_location, split_postgres_url
from steadytune.storage.store import CurvePoint, Store, StoreError, TrialOutcome
from steadytune.studies.claims import Claim, Claims
from steadytune.training.records import Predictions, TrialStatus

REPO_ROOT = Path(__file__).parents[1]

runner = CliRunner()


def write_everything(store: Store) -> None:
    """One study, a finished and a running trial, curves with awkward floats, predictions, claims, a landscape."""
    study = store.study_id("s", {"tasks": ["rte"]})
    config = {"task": "rte", "model": "m", "wi_seed": 1, "do_seed": 2, "lr": 2e-5}
    finished = store.start_trial(config, "a" * 16, 7, study)
    store.add_points(finished, [CurvePoint(1, 0.1, "train", "loss", 0.1 + 0.2),
                                CurvePoint(1, 0.1, "diag", "grad_norm.layer_10", 1e-300)])
    outcome = TrialOutcome("complete", 4, 4, "accuracy", {"accuracy": 2 / 3}, {"accuracy": 0.7}, 2, 0.527, 1.5,
                           threads=1, device="cpu", data_hash="h",
                           predictions=(Predictions("dev", "final", 4, np.array([1, 0, 1], dtype=np.int64)),
                                        Predictions("dev", "gold", None, np.array([1, 1, 0])),
                                        Predictions("dev", "best", 2, np.array([0.25, -1.5], dtype=np.float64))))
    store.finish_trial(finished, outcome, [CurvePoint(4, 1.0, "dev", "accuracy", 2 / 3),
                                           CurvePoint(4, 1.0, "train", "loss", float("nan")),
                                           CurvePoint(2, 0.5, "diag", "grad_norm.layer_2", 3.0)])
    store.start_trial({**config, "wi_seed": 2}, "b" * 16, 8, study)
    landscape = landscape_id(store, "line-1", "line", {"points": 2})
    add_cells(store, landscape, [(0, 0, -0.5, 0.0, {"loss": 0.7}), (1, 0, 0.5, 0.0, {"loss": 0.6})])


def comparable(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=[c for c in ("started_at", "finished_at") if c in frame])


def test_every_read_gives_the_same_frames_from_postgresql_as_from_sqlite(postgres_url, tmp_path):
    with Store(tmp_path / "r.db") as lite, Store(postgres_url) as pg:
        write_everything(lite)
        write_everything(pg)
        pd.testing.assert_frame_equal(comparable(pg.trials()), comparable(lite.trials()))
        pd.testing.assert_frame_equal(pg.curves(), lite.curves())
        pd.testing.assert_frame_equal(pg.predictions(), lite.predictions())
        pd.testing.assert_frame_equal(landscape_cells(pg, 1), landscape_cells(lite, 1))
        assert pg.outcome(1) == lite.outcome(1) and pg.trial_config(2) == lite.trial_config(2)
        assert pg.dev_score_at(1, 3) is None and pg.dev_score_at(1, 9) == 2 / 3
        assert pg.thread_counts(1) == lite.thread_counts(1) == {1: 1}
        assert pg.latest_trial("b" * 16, 1)["status"] == "running"
        assert find_landscape(pg, "line-1") == 1 and landscape_id(pg, "line-1", "line", {}) == 1


def test_of_many_drivers_claiming_one_trial_at_once_exactly_one_gets_it(postgres_url):
    Store(postgres_url).close()  # the schema first, as the first driver would
    answers, start = [], threading.Barrier(8)

    def driver(number: int) -> None:
        with Store(postgres_url) as store:
            start.wait()
            answers.append(Claims(store, None, f"host:{number}:x").take("k" * 16, ()))

    threads = [threading.Thread(target=driver, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(answers) == [Claim.BUSY] * 7 + [Claim.CLAIMED]


def test_a_lease_keeps_postgresql_claims_alive_and_a_result_ends_them(postgres_url):
    now = [1000.0]
    with Store(postgres_url) as store:
        claims = Claims(store, None, "me", lease_seconds=60, clock=lambda: now[0])
        assert claims.take("c" * 16, ()) is Claim.CLAIMED
        now[0] += 50
        claims.renew()
        now[0] += 50
        assert claims.holder("c" * 16) == "me"
        trial = store.start_trial({"task": "rte", "model": "m", "wi_seed": 1, "do_seed": 1}, "c" * 16, 1)
        store.finish_trial(trial, TrialOutcome("complete", 1, 1, "accuracy", {}, {}, None, 0.5, 0.1))
        assert claims.holder("c" * 16) is None
        assert Claims(store, None, "other").take("c" * 16, (TrialStatus.COMPLETE,)) is Claim.DONE


def test_postgresql_errors_are_one_line_and_hide_the_password(postgres_url, postgres_server):
    with Store(postgres_url) as store:
        write_everything(store)
    with Store(postgres_url, readonly=True) as reader:
        assert len(reader.trials()) == 2
        with pytest.raises(StoreError, match="read-only transaction") as refused:
            reader.study_id("new", {})
    assert "\n" not in str(refused.value)
    missing = postgres_server.replace("/postgres?", "/no_such_database?").replace("steadytune@", "steadytune:s3cret@")
    with pytest.raises(StoreError, match="cannot connect") as failed:
        Store(missing)
    assert "\n" not in str(failed.value) and "s3cret" not in str(failed.value) and ":***@" in str(failed.value)
    assert shown_location("postgresql://u:pw@h/db?files=/x") == "postgresql://u:***@h/db"
    assert shown_location("postgresql://u@h/db?password=pw&sslmode=require") == \
        "postgresql://u@h/db?password=***&sslmode=require"
    assert database_name("postgresql://u@h/../../etc") == "_.._etc"  # names folders: no way out of files=DIR
    assert split_postgres_url("postgresql://u@h/db?sslmode=require&files=/shared/st")[2].as_posix() == "/shared/st"


def test_a_study_on_postgresql_records_what_it_records_on_sqlite(tiny_bert_dir, glue_dir, postgres_url, tmp_path):
    args = ["study", "run", "--name", "pg", "--tasks", "rte", "--wi-seeds", "1-2", "--do-seeds", "1",
            "--model", str(tiny_bert_dir), "--glue-dir", str(glue_dir), "--max-train", "32", "--batch-size", "8",
            "--max-length", "48", "--max-steps", "6", "--evals-per-epoch", "2", "--cache-dir", str(tmp_path / "c")]
    for store in (str(tmp_path / "r.db"), postgres_url):
        result = runner.invoke(app, [*args, "--store", store])
        assert result.exit_code == 0, result.output
        assert "2 complete" in result.output
    with Store(tmp_path / "r.db", readonly=True) as lite, Store(postgres_url, readonly=True) as pg:
        columns = ["trial_key", "status", "final_metric", "best_metric", "best_step", "final_metrics_json"]
        pd.testing.assert_frame_equal(pg.trials()[columns], lite.trials()[columns])
        pd.testing.assert_frame_equal(pg.curves(), lite.curves())
    planned = runner.invoke(app, ["study", "plan", *args[2:], "--store", postgres_url], env={"COLUMNS": "200"})
    assert planned.exit_code == 0 and "s/step (from postgresql://steadytune@/" in planned.output, planned.output
    listing = runner.invoke(app, ["runs", postgres_url], env={"COLUMNS": "200"})
    assert listing.exit_code == 0 and "2 trials" in listing.output and "complete" in listing.output
    report = runner.invoke(app, ["report", postgres_url, "--format", "md", "--out", str(tmp_path / "report")])
    assert report.exit_code == 0, report.output
    assert "Source: postgresql://steadytune@/" in (tmp_path / "report" / "report.md").read_text()


def test_a_password_in_the_url_never_travels_with_a_job(postgres_url, tiny_bert_dir, glue_dir, monkeypatch):
    """Jobs go through pipes to workers and, with Ray, into its object store (spilled to disk when memory is
    short): they carry the URL without its password, which local workers inherit as libpq's PGPASSWORD."""
    from steadytune.config import RunOptions
    from steadytune.storage.connections import without_password
    from steadytune.studies.executors import Executor
    from steadytune.studies.runner import StudyRunner
    from steadytune.studies.spec import StudySpec

    monkeypatch.delenv("PGPASSWORD", raising=False)
    secret_url = postgres_url.replace("steadytune@", "steadytune:s3cret@")
    assert "s3cret" in secret_url  # the test server trusts local connections: any password is accepted
    assert without_password("postgresql://u:p%40ss@h/db?password=q&files=/x") == ("postgresql://u@h/db?files=/x", "q")
    assert without_password("postgresql:///db") == ("postgresql:///db", None)
    with Store(secret_url) as store:
        spec = StudySpec(name="secret", tasks=["rte"], config={"model": str(tiny_bert_dir), "glue_dir": str(glue_dir)})
        runner = StudyRunner(spec, store, RunOptions(checkpoint_every=1.0), Executor(workers=2))
        job = runner.job(runner.trials[0])
        assert "s3cret" not in repr(job) and job.store_location == store.worker_location
        assert os.environ["PGPASSWORD"] == "s3cret"  # what spawned workers inherit
        with Store(job.store_location) as worker_side:  # what a worker opens
            assert worker_side.study_names() == store.study_names()


@pytest.mark.slow
def test_drivers_survive_a_database_restart_mid_study(tiny_bert_dir, glue_dir, tmp_path, postgres_server):
    """The database server is stopped (as a crash stops it) while a 2-worker study runs, and started again: the
    driver says so in one line, waits, reconnects and goes on; every trial is recorded once, bit-identical to an
    uninterrupted run, with no traceback."""
    import psycopg

    script = REPO_ROOT / ".ci" / "postgres"
    folder = tempfile.mkdtemp(prefix="pg.", dir="/tmp")  # a server of its own: the shared one serves other tests
    try:
        url = subprocess.run([str(script), "start", folder], capture_output=True, text=True, check=True).stdout.strip()
        store = f"{url}&files={quote(str(tmp_path))}"

        def study(where: str, *extra: str) -> list[str]:
            return ["study", "run", "--name", "restart", "--tasks", "rte", "--wi-seeds", "1-2", "--do-seeds", "1-2",
                    "--model", str(tiny_bert_dir), "--glue-dir", str(glue_dir), "--max-train", "32", "--batch-size",
                    "8", "--max-length", "48", "--max-steps", "60", "--evals-per-epoch", "1", "--threads", "1",
                    "--cache-dir", str(tmp_path / "cache"), "--store", where, *extra]

        def finished() -> int:
            try:
                with psycopg.connect(url, autocommit=True, connect_timeout=5) as db:
                    return db.execute("SELECT count(*) FROM trials WHERE status = 'complete'").fetchone()[0]
            except psycopg.Error:  # no schema yet, or the server is down
                return 0

        log = tmp_path / "driver.log"
        with open(log, "w") as out:
            driver = subprocess.Popen([sys.executable, "-m", "steadytune", *study(store, "--workers", "2",
                                                                                  "--reconnect-minutes", "3")],
                                      stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_for(lambda: finished() >= 1, 300, "a first trial recorded")
            subprocess.run([str(script), "stop", folder], check=True, capture_output=True)
            wait_for(lambda: "lost the connection" in log.read_text() or driver.poll() is not None, 300,
                       "the driver to notice the lost database")
            subprocess.run([str(script), "start", folder], check=True, capture_output=True)
            assert driver.wait(300) == 0, log.read_text()
        finally:
            if driver.poll() is None:
                os.killpg(driver.pid, signal.SIGKILL)
        text = log.read_text()
        print(text)  # what the docs quote
        assert "Traceback" not in text and "lost the connection" in text and "reconnected after" in text, text
        [line] = [line for line in text.splitlines() if "lost the connection" in line]  # said once, in one line
        with Store(store, readonly=True) as db:
            trials, curves = db.trials(), db.curves()
        assert len(trials) == 4 and trials.trial_key.is_unique and set(trials.status) == {"complete"}
        # Bit-identical to the same study run without an outage, in one process on SQLite.
        assert subprocess.run([sys.executable, "-m", "steadytune", *study(str(tmp_path / "calm.db"))],
                              capture_output=True).returncode == 0
        with Store(tmp_path / "calm.db", readonly=True) as calm:
            expected, expected_curves = calm.trials(), calm.curves()
        by_key = trials.set_index("trial_key").sort_index()
        assert by_key["final_metric"].equals(expected.set_index("trial_key").sort_index()["final_metric"])

        def keyed(frame, table):
            keys = table.set_index("id")["trial_key"]
            return (frame.assign(key=frame["trial_id"].map(keys)).drop(columns="trial_id")
                    .sort_values(["key", "split", "metric", "step"]).reset_index(drop=True))

        pd.testing.assert_frame_equal(keyed(curves, trials), keyed(expected_curves, expected))
    finally:
        subprocess.run([str(script), "stop", folder], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)



@pytest.mark.slow
def test_job_files_never_hold_the_password_and_only_their_owner_reads_them(postgres_url, tiny_bert_dir, glue_dir,
                                                                             tmp_path):
    """submitit used to write the URL with its password into `*_submitted.pkl` and the `*_log.out` line "The
    following command is sent", both world-readable."""
    secret_url = postgres_url.replace("steadytune@", "steadytune:s3cret@")
    jobs = tmp_path / "jobs"
    args = ["study", "run", "--name", "secret", "--tasks", "rte", "--wi-seeds", "1-2", "--model", str(tiny_bert_dir),
            "--glue-dir", str(glue_dir), "--max-train", "32", "--batch-size", "8", "--max-length", "48", "--max-steps",
            "20", "--evals-per-epoch", "0", "--threads", "1", "--cache-dir", str(tmp_path / "cache"), "--store",
            secret_url, "--executor", "submitit-local", "--jobs", "1", "--jobs-folder", str(jobs), "--wait"]
    env = {key: value for key, value in os.environ.items() if key != "PGPASSWORD"}
    done = subprocess.run([sys.executable, "-m", "steadytune", *args], capture_output=True, text=True, cwd=tmp_path,
                          env={**env, "COLUMNS": "200"}, timeout=600)
    assert done.returncode == 0 and "2 complete" in done.stdout, done.stdout + done.stderr
    assert "s3cret" not in done.stdout + done.stderr
    written = [path for path in tmp_path.rglob("*") if path.is_file()]  # job files, logs, and the store's own files
    assert any(path.name.endswith("_submitted.pkl") for path in written)
    assert [path for path in written if b"s3cret" in path.read_bytes()] == []
    assert [path for path in jobs.rglob("*") if path.stat().st_mode & 0o077] == []  # the owner's alone


def test_slurm_off_a_cluster_is_one_line_and_dry_run_prints_the_array(postgres_url, tiny_bert_dir, glue_dir, tmp_path):
    secret_url = postgres_url.replace("steadytune@", "steadytune:s3cret@")
    args = ["study", "run", "--tasks", "rte", "--wi-seeds", "1-4", "--model", str(tiny_bert_dir), "--glue-dir",
            str(glue_dir), "--store", secret_url, "--executor", "slurm",
            "--jobs", "4", "--partition", "gpu", "--mem-gb", "32", "--jobs-folder", str(tmp_path / "jobs")]
    refused = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert refused.exit_code == 2 and "cannot submit SLURM jobs" in refused.output and "--dry-run" in refused.output
    assert len(refused.output.strip().splitlines()) == 1 and "Traceback" not in refused.output
    # A subprocess: each job's command is this process's own command line, as the user typed it.
    shown = subprocess.run([sys.executable, "-m", "steadytune", *args, "--dry-run"], capture_output=True, text=True,
                           env={**os.environ, "COLUMNS": "200"})
    assert shown.returncode == 0, shown.stderr
    printed = shown.stdout
    for line in ("#SBATCH --array=0-3%4", "#SBATCH --partition=gpu", "#SBATCH --mem=32GB", "#SBATCH --ntasks-per-node=1"):
        assert line in printed
    [command] = [line for line in printed.splitlines() if line.startswith("# each job runs:")]
    assert "study run" in command and "--executor" not in command and "--dry-run" not in command
    assert "s3cret" not in printed
