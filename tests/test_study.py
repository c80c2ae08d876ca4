"""Seed studies: grid expansion, resume after a real kill, early stopping, worker processes, Ray."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from steadytune.analysis.early_stopping import EarlyStop, cut_step, survivors
from steadytune.config import ConfigError, RunOptions
from steadytune.storage.store import Store, StoreError
from steadytune.studies.executors import Executor
from steadytune.studies.runner import StudyEvents, StudyRunner
from steadytune.studies.spec import expand, load_spec, parse_seeds
from steadytune.training.records import TrialStatus


@pytest.fixture
def spec_file(tmp_path, tiny_bert_dir, glue_dir):
    def write(**values):
        spec = dict(model=str(tiny_bert_dir), glue_dir=str(glue_dir), max_train=16, batch_size=8, max_length=32,
                    epochs=1, evals_per_epoch=1, lr=1e-3)
        spec.update(values)
        path = tmp_path / "study.yaml"
        path.write_text(yaml.safe_dump(spec))
        return path
    return write


def options(tmp_path) -> RunOptions:
    return RunOptions(device="cpu", cache_dir=tmp_path / "cache")


def test_seed_ranges():
    assert parse_seeds("1-3,7") == [1, 2, 3, 7]
    assert parse_seeds(5) == [5]
    assert parse_seeds([2, 4]) == [2, 4]


def test_plan_expansion_and_precedence(spec_file):
    spec = load_spec(spec_file(tasks=["rte", "mrpc"], recipes=["devlin2019", "mosbach2021"], wi_seeds="1-2",
                               do_seeds="1-3", epochs=2), {"lr": 3e-5})
    trials = expand(spec)
    assert len(trials) == 2 * 2 * 2 * 3
    assert {(t.config.task, t.config.recipe) for t in trials} == {
        ("rte", "devlin2019"), ("rte", "mosbach2021"), ("mrpc", "devlin2019"), ("mrpc", "mosbach2021")}
    assert {(t.config.wi_seed, t.config.do_seed) for t in trials} == {(w, d) for w in (1, 2) for d in (1, 2, 3)}
    assert all(t.config.epochs == 2 for t in trials)  # spec beats recipe (mosbach2021 says 20)
    assert all(t.config.lr == 3e-5 for t in trials)   # CLI beats spec
    assert {t.config.optimizer for t in trials if t.config.recipe == "devlin2019"} == {"bertadam"}
    assert len({t.config.trial_key() for t in trials}) == len(trials)
    assert spec.study_name() == load_spec(spec_file(tasks=["rte", "mrpc"], recipes=["devlin2019", "mosbach2021"],
                                                    wi_seeds="1-2", do_seeds="1-3", epochs=2),
                                          {"lr": 3e-5}).study_name()


def test_spec_errors(spec_file):
    with pytest.raises(ConfigError, match="wi_seeds"):
        load_spec(spec_file(wi_seed=3), {})
    with pytest.raises(ConfigError, match="early"):
        load_spec(spec_file(early_stop="start=2,fraction=2,keep=1"), {})
    with pytest.raises(ConfigError, match="only 1 seed pairs"):
        expand(load_spec(spec_file(early_stop="start=4,fraction=0.5,keep=1"), {}))


def test_early_stopping_rules():
    stop = EarlyStop.parse("start=16,fraction=0.25,keep=4")
    assert stop.cost() == pytest.approx(16 * 0.25 + 4 * 0.75)
    assert cut_step(100, 0.25) == 25 and cut_step(3, 0.9) == 2 and cut_step(1, 0.5) == 1
    assert survivors([0.5, 0.9, float("nan"), 0.7, 0.9], 3) == [1, 3, 4]
    assert survivors([None, 0.1], 1) == [1]


def run_study(store_path, spec, tmp_path, **executor):
    with Store(store_path) as store:
        return StudyRunner(spec, store, options(tmp_path), Executor(**{"workers": 1, **executor})).run()


def test_study_runs_and_rerun_skips_finished(spec_file, tmp_path):
    spec = load_spec(spec_file(wi_seeds="1-2", do_seeds="1-2"), {})
    first = run_study(tmp_path / "s.db", spec, tmp_path)
    assert (first.ran, first.count(TrialStatus.COMPLETE)) == (4, 4)
    again = run_study(tmp_path / "s.db", spec, tmp_path)
    assert (again.ran, again.count(TrialStatus.COMPLETE)) == (0, 4)
    with Store(tmp_path / "s.db") as store:
        trials = store.trials()
    assert len(trials) == 4 and trials.trial_key.is_unique and set(trials.status) == {"complete"}


def test_progress_counts_the_studys_trials_whichever_driver_ran_them(spec_file, tmp_path):
    """A driver's bar counted its own trials: of two drivers sharing 8 trials, one ended at "5/8"."""
    first = load_spec(spec_file(wi_seeds="1-2", do_seeds="1"), {"name": "shared"})
    run_study(tmp_path / "s.db", first, tmp_path)  # another driver's share, recorded before this one starts
    seen: list[tuple[int, int]] = []
    with Store(tmp_path / "s.db") as store:
        grown = load_spec(spec_file(wi_seeds="1-4", do_seeds="1"), {"name": "shared"})
        summary = StudyRunner(grown, store, options(tmp_path), Executor(workers=1)).run(
            StudyEvents(on_progress=lambda done, total: seen.append((done, total))))
    assert summary.ran == 2 and seen == [(2, 4), (3, 4), (4, 4)]


def test_resume_after_kill_loses_and_duplicates_nothing(spec_file, tmp_path):
    spec_path = spec_file(wi_seeds="1-3", do_seeds="1-2", max_train=24)
    store_path = tmp_path / "killed.db"
    command = [sys.executable, "-m", "steadytune", "study", "run", str(spec_path), "--store", str(store_path),
               "--cache-dir", str(tmp_path / "cache")]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline:
            time.sleep(0.5)
            if store_path.exists():
                try:
                    with Store(store_path, readonly=True) as store:  # a reader must not slow the driver down
                        statuses = store.trials().status.tolist()
                except StoreError:  # the driver is still creating the schema
                    continue
                if statuses.count("complete") >= 2:  # the third trial is training now
                    break
        os.killpg(process.pid, signal.SIGKILL)  # kill -9, mid-trial
        process.wait()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    with Store(store_path) as store:
        before = store.trials()
    assert set(before.status) == {"complete"} and len(before) < 6  # the trial in progress left no rows
    survivors_before = before.set_index("trial_key").id

    spec = load_spec(spec_path, {})
    summary = run_study(store_path, spec, tmp_path)
    assert summary.count(TrialStatus.COMPLETE) == 6 and summary.ran == 6 - len(survivors_before)
    with Store(store_path) as store:
        after = store.trials()
    assert len(after) == 6 and after.trial_key.is_unique and set(after.status) == {"complete"}
    kept = after.set_index("trial_key").id
    assert all(kept[key] == trial_id for key, trial_id in survivors_before.items())  # not re-run

    # Resumed results equal an uninterrupted study's, trial by trial.
    run_study(tmp_path / "straight.db", spec, tmp_path)
    with Store(tmp_path / "straight.db") as store:
        straight = store.trials().set_index("trial_key")
    resumed = after.set_index("trial_key")
    assert (resumed.loc[straight.index, "best_metric"] == straight.best_metric).all()
    assert (resumed.loc[straight.index, "final_metric"] == straight.final_metric).all()


def test_early_stopping_keeps_exactly_the_top_p(spec_file, tmp_path):
    spec = load_spec(spec_file(wi_seeds="1-2", do_seeds="1-2", epochs=2, max_train=24,
                               early_stop="start=4,fraction=0.5,keep=2"), {})
    summary = run_study(tmp_path / "es.db", spec, tmp_path)
    assert (summary.count(TrialStatus.COMPLETE), summary.count(TrialStatus.STOPPED)) == (2, 2)
    assert summary.full_trials_spent == pytest.approx(4 * 0.5 + 2 * 0.5)
    with Store(tmp_path / "es.db") as store:
        trials = store.trials().set_index("id")
        cut = {tid: store.dev_score_at(tid, 3) for tid in trials.index}  # 6 steps in all, cut after 3
    kept = set(trials[trials.status == "complete"].index)
    ranked = sorted(cut, key=lambda tid: (-cut[tid], tid))
    assert kept == set(ranked[:2])
    assert (trials.loc[list(kept), "steps_done"] == 6).all()
    assert (trials[trials.status == "stopped"].steps_done == 3).all()
    assert not list((tmp_path / "es-states").glob("*.pt"))  # states are removed once the cut is final

    # A continued trial ends exactly where an uninterrupted run of it ends.
    plain = load_spec(spec_file(wi_seeds="1-2", do_seeds="1-2", epochs=2, max_train=24), {})
    run_study(tmp_path / "plain.db", plain, tmp_path)
    with Store(tmp_path / "plain.db") as store:
        straight = store.trials().set_index("trial_key")
    continued = trials.loc[list(kept)].set_index("trial_key")
    assert (continued.final_metric == straight.loc[continued.index, "final_metric"]).all()


@pytest.mark.slow
def test_worker_processes(spec_file, tmp_path):
    spec = load_spec(spec_file(wi_seeds="1-2", do_seeds="1"), {})
    summary = run_study(tmp_path / "w.db", spec, tmp_path, workers=2)
    assert summary.count(TrialStatus.COMPLETE) == 2
    single = run_study(tmp_path / "single.db", spec, tmp_path)
    assert single.count(TrialStatus.COMPLETE) == 2
    with Store(tmp_path / "w.db") as a, Store(tmp_path / "single.db") as b:
        left, right = a.trials().set_index("trial_key"), b.trials().set_index("trial_key")
    assert (left.best_metric == right.loc[left.index, "best_metric"]).all()


def ray_task_processes() -> list[int]:
    """Ray worker processes running a trial now (Ray titles them after the task's function)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if cmdline.read_bytes().startswith(b"ray::execute"):
                found.append(int(cmdline.parent.name))
        except OSError:
            pass
    return found


@pytest.mark.slow
def test_ray_on_a_local_cluster_reruns_the_trial_of_a_killed_worker(spec_file, tmp_path):
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    try:
        spec = load_spec(spec_file(wi_seeds="1-2", do_seeds="1", max_steps=300, evals_per_epoch=0), {})
        # A trial no node can place was left waiting forever, without a word: it is refused in one line.
        with pytest.raises(ConfigError, match="--cpus-per-trial 4: no node of the Ray cluster has 4 CPU"):
            run_study(tmp_path / "too-big.db", spec, tmp_path, ray_address="auto", cpus_per_trial=4)
        result: dict = {}
        study = threading.Thread(target=lambda: result.update(summary=run_study(
            tmp_path / "ray.db", spec, tmp_path, ray_address="auto", cpus_per_trial=1, retries=1)))
        study.start()
        # Waits on states, not on a clock: Ray starts slowly on a loaded machine, and a trial takes minutes there.
        while not (running := ray_task_processes()) and study.is_alive():
            time.sleep(0.2)
        assert running, f"the study ended before a Ray worker ran a trial: {result}"
        os.kill(running[0], signal.SIGKILL)  # a lost worker, as when a node is preempted
        study.join()
    finally:
        ray.shutdown()
    # The lost trial ran again (Ray's max_retries), and the study went on.
    assert result["summary"].count(TrialStatus.COMPLETE) == 2, result
    with Store(tmp_path / "ray.db") as store:
        trials = store.trials()
        assert len(store.curves()) > 0
    assert set(trials.status) == {"complete"} and trials.trial_key.is_unique


def test_save_model_is_refused_in_a_study(spec_file, tmp_path):
    spec = load_spec(spec_file(), {})
    with Store(tmp_path / "s.db") as store:
        with pytest.raises(ConfigError, match="save-model"):
            StudyRunner(spec, store, options(tmp_path).model_copy(update={"save_model": True}), Executor(workers=1))


def test_seed_pairs_zip_the_seeds_and_crossed_specs_keep_their_names():
    from steadytune.studies.spec import StudySpec, expand

    paired = StudySpec(tasks=["rte"], wi_seeds="1-3", do_seeds="4-6", seed_pairs=True)
    assert [(t.config.wi_seed, t.config.do_seed) for t in expand(paired)] == [(1, 4), (2, 5), (3, 6)]
    crossed = StudySpec(tasks=["rte"], wi_seeds="1-3", do_seeds="4-6")
    assert len(expand(crossed)) == 9
    # a spec written before seed pairs existed keeps its derived name
    assert crossed.study_name() == StudySpec.model_validate(
        {k: v for k, v in crossed.model_dump().items() if k != "seed_pairs"}).study_name()
    assert paired.study_name() != StudySpec(tasks=["rte"], wi_seeds="1-3", do_seeds="4-6").study_name()
    with pytest.raises(ValueError, match="as many WI seeds as DO seeds"):
        StudySpec(tasks=["rte"], wi_seeds="1-3", do_seeds="1-2", seed_pairs=True)
