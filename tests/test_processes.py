"""Processes die: kill -9 of a driver or a worker, Ctrl-C, and two drivers on one store, with real signals.

Each test runs `python -m steadytune` in its own process group, as a user's shell would, and checks the
store and the process table afterwards. Trials are the tiny BERT on 32 RTE examples; their length is set
with --max-steps so that a signal lands while they train.
"""
from __future__ import annotations

import importlib.util
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner
from waiting import wait_for

from steadytune.cli import app

pytestmark = pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads the process table from /proc")


def study_args(tiny_bert_dir, glue_dir, tmp_path, steps: int, seeds: str, *extra: str) -> list[str]:
    return ["study", "run", "--name", "signals", "--tasks", "rte", "--wi-seeds", seeds, "--do-seeds", "1",
            "--model", str(tiny_bert_dir), "--glue-dir", str(glue_dir), "--max-train", "32", "--batch-size", "8",
            "--max-length", "48", "--max-steps", str(steps), "--evals-per-epoch", "0", "--log-grads-every", "0",
            "--store", str(tmp_path / "runs.db"), "--cache-dir", str(tmp_path / "cache"), *extra]


_STARTED: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _no_process_outlives_its_test():
    """A failed test must not leave a trainer running (and slowing every later test): kill what it started."""
    yield
    while _STARTED:
        process = _STARTED.pop()
        if process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait()


def _as_in_a_terminal() -> None:
    # A shell without job control starts background commands with SIGINT ignored, and Python then installs
    # no KeyboardInterrupt handler; a command typed at a terminal has the default, which is what we test.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(args: list[str], tmp_path: Path, name: str, **env: str) -> subprocess.Popen:
    log = tmp_path / name
    process = subprocess.Popen([sys.executable, "-m", "steadytune", *args], stdout=open(f"{log}.out", "w"),
                               stderr=open(f"{log}.err", "w"), start_new_session=True, cwd=tmp_path,
                               env={**os.environ, "COLUMNS": "200", **env}, preexec_fn=_as_in_a_terminal)
    _STARTED.append(process)
    return process


def output(tmp_path: Path, name: str) -> str:
    return (tmp_path / f"{name}.out").read_text() + (tmp_path / f"{name}.err").read_text()


def workers_of(pid: int) -> list[int]:
    """The driver's spawned worker processes (not multiprocessing's resource tracker)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    found = []
    for child in map(int, children):
        try:
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                found.append(child)
        except OSError:
            pass
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def rows(store: Path, query: str = "SELECT trial_key, status, error FROM trials ORDER BY id") -> list[tuple]:
    if not store.exists():
        return []
    db = sqlite3.connect(store, timeout=30)
    try:
        return db.execute(query).fetchall()
    except sqlite3.OperationalError:  # the driver is still creating the schema
        return []
    finally:
        db.close()


def torch_loaded(pid: int) -> bool:
    try:
        return b"libtorch" in Path(f"/proc/{pid}/maps").read_bytes()
    except OSError:
        return False


def busy_workers(driver: subprocess.Popen, count: int) -> list[int]:
    """Wait until `count` workers are up and past importing torch: each holds its job by then (the driver hands it
    over as it starts the worker), so a worker killed now dies with its trial."""
    pids = wait_for(lambda: len(workers_of(driver.pid)) >= count and workers_of(driver.pid), 120,
                    f"{count} workers")
    wait_for(lambda: all(torch_loaded(pid) for pid in pids[:count]), 240, "the workers to import torch")
    return pids


def test_workers_of_a_driver_killed_while_they_import_exit_within_seconds(tiny_bert_dir, glue_dir, tmp_path):
    args = study_args(tiny_bert_dir, glue_dir, tmp_path, 600, "1-2", "--workers", "2")
    driver = start(args, tmp_path, "study")
    pids = wait_for(lambda: len(workers_of(driver.pid)) >= 2 and workers_of(driver.pid), 120, "2 workers")
    importing = [pid for pid in pids if not torch_loaded(pid)]
    os.kill(driver.pid, signal.SIGKILL)  # the driver alone: its workers are left behind
    driver.wait()
    assert importing, "the workers had finished importing torch before the driver was killed"
    # Within 2 s: importing alone takes about 4 s on an idle machine, and a worker watched only after it (as before)
    # outlived its driver by that long, by minutes under load.
    wait_for(lambda: not any(alive(pid) for pid in pids), 2, "the orphaned workers to exit")


@pytest.mark.slow
@pytest.mark.parametrize("retries", [0, 1])
def test_a_killed_worker_costs_only_its_own_trial(tiny_bert_dir, glue_dir, tmp_path, retries):
    args = study_args(tiny_bert_dir, glue_dir, tmp_path, 600, "1-2", "--workers", "2", "--retries", str(retries))
    driver = start(args, tmp_path, "study")
    victim = busy_workers(driver, 2)[0]
    os.kill(victim, signal.SIGKILL)  # what the kernel's OOM killer does
    assert driver.wait(240) == 0, output(tmp_path, "study")
    text = output(tmp_path, "study")
    assert "Traceback" not in text and "BrokenProcessPool" not in text
    recorded = rows(tmp_path / "runs.db")
    statuses = sorted(status for _, status, _ in recorded)
    if retries == 0:
        assert statuses == ["complete", "failed"]
        error = next(error for _, status, error in recorded if status == "failed")
        assert "worker process" in error and "signal 9" in error
        assert "failed: WorkerDied" in text
    else:
        assert statuses == ["complete", "complete"]  # the lost trial ran again on a fresh worker
    assert len(recorded) == 2


@pytest.mark.slow
def test_ctrl_c_stops_a_study_within_seconds_and_keeps_finished_trials(tiny_bert_dir, glue_dir, tmp_path):
    driver = start(study_args(tiny_bert_dir, glue_dir, tmp_path, 400, "1-6", "--workers", "2"), tmp_path, "study")
    store = tmp_path / "runs.db"
    wait_for(lambda: any(status == "complete" for _, status, _ in rows(store)), 240, "a finished trial")
    workers = workers_of(driver.pid)
    os.killpg(driver.pid, signal.SIGINT)  # Ctrl-C reaches the whole foreground process group
    pressed = time.monotonic()
    code = driver.wait(30)
    took = time.monotonic() - pressed
    text = output(tmp_path, "study")
    assert code == 130 and took < 10, (code, took, text)
    assert "interrupted" in text and "Run the same command again to resume" in text and "Traceback" not in text
    wait_for(lambda: not any(alive(pid) for pid in workers), 5, "workers to stop")
    kept = rows(store)
    assert kept and all(status == "complete" for _, status, _ in kept) and len(kept) < 6
    assert rows(store, "SELECT count(*) FROM claims") == [(0,)]  # released: a resume starts at once


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_ctrl_c_or_sigterm_in_train_records_the_trial_and_says_so(how, tiny_bert_dir, glue_dir, tmp_path):
    # SLURM preempts with SIGTERM: Python's default ended the process at once, printing only "Terminated" and
    # leaving the trial 'running' in the store. It is now handled as Ctrl-C.
    args = ["train", "--model", str(tiny_bert_dir), "--glue-dir", str(glue_dir), "--max-train", "32",
            "--batch-size", "8", "--max-length", "48", "--max-steps", "100000", "--evals-per-epoch", "0",
            "--store", str(tmp_path / "runs.db"), "--cache-dir", str(tmp_path / "cache")]
    trainer = start(args, tmp_path, "train")
    wait_for(lambda: rows(tmp_path / "runs.db"), 120, "the trial to start")  # its row exists once it trains
    if how == "ctrl-c":
        os.killpg(trainer.pid, signal.SIGINT)
    else:
        trainer.send_signal(signal.SIGTERM)  # to the process alone, as `kill PID` does
    assert trainer.wait(15) == 130
    text = output(tmp_path, "train")
    assert "interrupted at step" in text and "kept" in text and "Traceback" not in text
    [(_, status, error)] = rows(tmp_path / "runs.db")
    assert status == "failed" and "interrupted" in error


@pytest.mark.slow
def test_one_config_trained_twice_at_once_runs_once(tiny_bert_dir, glue_dir, tmp_path):
    args = ["train", "--model", str(tiny_bert_dir), "--glue-dir", str(glue_dir), "--max-train", "32",
            "--batch-size", "8", "--max-length", "48", "--max-steps", "600", "--evals-per-epoch", "0",
            "--store", str(tmp_path / "runs.db"), "--cache-dir", str(tmp_path / "cache"), "--threads", "1"]
    first, second = start(args, tmp_path, "a"), start(args, tmp_path, "b")
    codes = sorted([first.wait(300), second.wait(300)])
    assert codes == [0, 2], codes
    texts = output(tmp_path, "a") + output(tmp_path, "b")
    assert "being run by another process" in texts
    assert [status for _, status, _ in rows(tmp_path / "runs.db")] == ["complete"]


@pytest.mark.slow
def test_a_killed_reproduction_resumes_to_the_table_of_an_uninterrupted_one(tiny_bert_dir, glue_dir, tmp_path):
    def args(name: str) -> list[str]:
        return ["reproduce", "--model", str(tiny_bert_dir), "--tasks", "rte", "--scale", "smoke", "--settings",
                "published", "--claims", "hao-high-layers", "--glue-dir", str(glue_dir),
                "--store", str(tmp_path / f"{name}.db"), "--out", str(tmp_path / name), "--threads", "1"]

    store = tmp_path / "killed.db"
    first = start(args("killed"), tmp_path, "first")
    wait_for(lambda: sum(status == "complete" for _, status, _ in rows(store)) >= 1, 240, "a finished trial")
    os.killpg(first.pid, signal.SIGKILL)  # mid-study
    first.wait()
    second = start(args("killed"), tmp_path, "second")
    wait_for(lambda: "landscape measurements" in output(tmp_path, "second") or second.poll() is not None, 240,
             "the landscape stage")
    os.killpg(second.pid, signal.SIGKILL)  # while measuring (or just after)
    second.wait()
    third = start(args("killed"), tmp_path, "third")
    assert third.wait(300) == 0, output(tmp_path, "third")
    clean = CliRunner().invoke(app, args("clean"))  # the uninterrupted reference, in this process
    assert clean.exit_code == 0, clean.output
    killed, uninterrupted = (tmp_path / "killed" / "verdicts.csv").read_text(), (tmp_path / "clean" / "verdicts.csv")
    assert killed == uninterrupted.read_text()
    finished = rows(store, "SELECT study_id, trial_key FROM trials WHERE status = 'complete'")
    assert len(finished) == len(set(finished)) == 2  # the pretrained arm's runs, each once
    measured = rows(store, "SELECT COUNT(*) FROM landscapes WHERE kind = 'reproduce-hao'")[0][0]
    assert measured == 2


@pytest.mark.slow
def test_a_preempted_trial_continues_from_its_autosave_bit_identically(tiny_bert_dir, glue_dir, tmp_path):
    def args(store: str) -> list[str]:
        return ["study", "run", "--name", "preempt", "--tasks", "rte", "--wi-seeds", "1", "--model", str(tiny_bert_dir),
                "--glue-dir", str(glue_dir), "--max-train", "32", "--batch-size", "8", "--max-length", "48",
                "--max-steps", "400", "--evals-per-epoch", "1", "--store", str(tmp_path / store), "--cache-dir",
                str(tmp_path / "cache"), "--threads", "1", "--checkpoint-every", "0.02"]

    states = tmp_path / "killed-states"
    driver = start(args("killed.db"), tmp_path, "first")
    # Killed as soon as its first autosave is recorded in the store (a state the store never recorded is refused).
    recorded = "SELECT count(*) FROM files WHERE name LIKE '%states%'"
    wait_for(lambda: (rows(tmp_path / "killed.db", recorded) or [(0,)])[0][0], 240,
             "an autosaved state recorded in the store")
    os.killpg(driver.pid, signal.SIGKILL)  # preempted mid-trial
    driver.wait()
    assert rows(tmp_path / "killed.db", "SELECT COUNT(*) FROM trials")[0][0] == 0  # nothing was recorded
    resumed = start(args("killed.db"), tmp_path, "second")
    assert resumed.wait(300) == 0, output(tmp_path, "second")
    assert "continued from its saved state at step" in output(tmp_path, "second")
    whole = CliRunner().invoke(app, args("whole.db"))  # the uninterrupted reference needs no process of its own
    assert whole.exit_code == 0, whole.output
    query = "SELECT step, split, metric, value FROM curves ORDER BY split, metric, step"
    assert rows(tmp_path / "killed.db", query) == rows(tmp_path / "whole.db", query)
    assert len(rows(tmp_path / "killed.db", query)) > 200
    assert not any(states.glob("*.safetensors"))  # removed once the trial finished


def test_train_refuses_checkpoint_every_in_one_line(tiny_bert_dir, glue_dir, tmp_path):
    result = CliRunner().invoke(app, ["train", "--model", str(tiny_bert_dir), "--glue-dir", str(glue_dir),
                                      "--max-train", "16", "--store", str(tmp_path / "s.db"), "--checkpoint-every", "1"])
    assert result.exit_code == 2 and "--checkpoint-every applies to `study run`" in result.output


def chaos_module():
    """experiments/chaos_drivers.py, whose kill loop and checks the suite runs at a small scale."""
    spec = importlib.util.spec_from_file_location("chaos_drivers", Path(__file__).parents[1] / "experiments" /
                                                  "chaos_drivers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


CHAOS_TRIALS = 8


@pytest.fixture(scope="module")
def uninterrupted_study(tiny_bert_dir, glue_dir, tmp_path_factory) -> Path:
    """The chaos study run by one driver that nothing interrupts, in-process."""
    folder = tmp_path_factory.mktemp("uninterrupted")
    args = chaos_module().study_command(str(tiny_bert_dir), str(glue_dir), folder, str(folder / "reference.db"),
                                        CHAOS_TRIALS, 40)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return folder / "reference.db"


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_drivers_killed_at_random_record_every_trial_once_and_bit_identically(backend, request, tiny_bert_dir,
                                                                             glue_dir, tmp_path, uninterrupted_study):
    """Four cooperating drivers (two with two worker processes each) on one store; every few seconds one is
    kill -9'd and started again. Every trial ends complete exactly once, equal to an uninterrupted run's."""
    chaos = chaos_module()
    store = str(tmp_path / "chaos.db") if backend == "sqlite" else request.getfixturevalue("postgres_url")
    args = chaos.study_command(str(tiny_bert_dir), str(glue_dir), tmp_path, store, CHAOS_TRIALS, 40)
    run = chaos.chaos(args, tmp_path, drivers=4, seconds=0, kills_at_least=3)  # pauses of 2-4 s between kills
    assert run["exit_codes"] == {0: 0, 1: 0, 2: 0, 3: 0}, output(tmp_path, f"driver0-{run['kills']}")
    assert run["kills"] >= 3
    found = chaos.compare(store, uninterrupted_study)  # raises where a result or a curve differs
    assert found["statuses"] == {"complete": CHAOS_TRIALS} and found["rows"] == found["unique_keys"] == CHAOS_TRIALS
    wait_for(lambda: not any(chaos.session_members(s) for s in run["sessions"]), 20,
             "every driver's processes to exit")


def test_sigterm_stops_a_study_releases_its_claims_and_says_so(tiny_bert_dir, glue_dir, tmp_path):
    driver = start(study_args(tiny_bert_dir, glue_dir, tmp_path, 400, "1-6", "--workers", "2"), tmp_path, "study")
    store = tmp_path / "runs.db"
    wait_for(lambda: rows(store, "SELECT count(*) FROM claims") not in ([], [(0,)]), 240, "claimed trials")
    os.killpg(driver.pid, signal.SIGTERM)  # SLURM signals every process of the job
    code = driver.wait(30)
    text = output(tmp_path, "study")
    assert code == 130 and "interrupted" in text and "Traceback" not in text, (code, text)
    assert rows(store, "SELECT count(*) FROM claims") == [(0,)]
    assert all(status != "running" for _, status, _ in rows(store))
