"""The online forecaster: its self-check, a decision whose error rates are measured by simulation, and the policy in a
study whose runs are made up, so that a failure and its early sign are planted."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from steadytune.forecast.features import FEATURES
from steadytune.forecast.online import OnlineSettings, act_rate, planned_looks, self_check, spread_order
from steadytune.training.records import TrialStatus


def binomial_margin(rate: float, replications: int) -> float:
    """Two Monte Carlo standard errors of a simulated rate."""
    return 2 * math.sqrt(max(rate * (1 - rate), 1e-4) / replications)


def test_the_first_runs_spread_over_the_seeds():
    cells = [(wi, do) for wi in range(1, 6) for do in range(1, 6)]
    order = [cells[i] for i in spread_order(cells)]
    first = order[:5]
    assert len({wi for wi, _ in first}) == 5 and len({do for _, do in first}) == 5  # a diagonal
    assert sorted(order) == sorted(cells)


def test_the_check_acts_on_noise_rarely_and_on_a_planted_signal_mostly():
    settings = OnlineSettings()
    assert planned_looks(settings) == [10, 15, 20]
    replications = 40
    noise = act_rate(5, 0.35, 0.0, settings, replications, seed=1)
    assert noise <= settings.alpha + binomial_margin(settings.alpha, replications)  # its false acts, over all looks
    planted = act_rate(5, 0.35, 1.5, settings, replications, seed=2)
    assert planted >= 0.7  # 91% at 150 replications


def test_a_check_says_why_in_one_line():
    rng = np.random.default_rng(0)
    table = pd.DataFrame(rng.normal(size=(12, len(FEATURES))), columns=list(FEATURES))
    one_outcome = self_check(table, np.zeros(12, bool), np.repeat(np.arange(4), 3), OnlineSettings(), rng)
    assert not one_outcome.passed and "needs both outcomes" in one_outcome.reason
    table = pd.DataFrame(rng.normal(size=(15, len(FEATURES))), columns=list(FEATURES))
    failed = np.arange(15) % 3 == 0
    table.loc[failed, "dev_margin"] -= 4.0  # failed runs stand far below the others at the cut
    planted = self_check(table, failed, np.repeat(np.arange(5), 3), OnlineSettings(permutations=199), rng)
    assert planted.passed and planted.auc == 1.0 and "it acts" in planted.reason and "\n" not in planted.reason


class MadeUpExecutor:
    """Trains nothing: each job's curve is made up from its seeds, so that whether a run fails, and whether its early
    curve shows it, is planted. Stands in for the worker processes of a real study."""

    workers, ray_address, total = 2, None, 100

    def __init__(self, fails, early_sign: bool):
        self.fails, self.early_sign = fails, early_sign

    def threads_per_worker(self) -> int:
        return 1

    def run(self, next_job):
        while (item := next_job()) is not None:
            yield item[0], self.result(item[1])

    def result(self, job):
        import time

        from steadytune.analysis.early_stopping import cut_step
        from steadytune.config import TrialConfig
        from steadytune.studies.jobs import JobResult
        from steadytune.training.records import CurvePoint, TrialOutcome

        config = TrialConfig(**job.config)
        fails = self.fails(config.wi_seed, config.do_seed)
        cut = cut_step(self.total, 0.3)
        start = cut if job.state_in and job.stop_at_fraction is None else 0
        stop = cut_step(self.total, job.stop_at_fraction) if job.stop_at_fraction else self.total
        points, dev = [], 0.5
        for step in range(start + 1, stop + 1):
            shows = fails and (self.early_sign or step > cut)
            points.append(CurvePoint(step, step / 10, "train", "loss", 0.69 if shows else 0.69 - 0.3 * step / 100))
            if step % 10 == 0:
                dev = 0.5 if shows else 0.5 + 0.3 * step / self.total + 0.001 * config.do_seed
                points.append(CurvePoint(step, step / 10, "dev", "accuracy", dev))
        status = TrialStatus.COMPLETE if stop == self.total else TrialStatus.STOPPED
        if job.state_out and status == TrialStatus.STOPPED:
            Path(job.state_out).write_bytes(b"a made-up state")  # what a worker saves at the cut
        outcome = TrialOutcome(status, stop, self.total, "accuracy", {"accuracy": dev}, {"accuracy": dev}, stop, 0.5,
                               1.0, threads=1)
        return JobResult(outcome, points, time.time())


def online_study(tmp_path, fails, early_sign: bool):
    from steadytune.config import RunOptions
    from steadytune.storage.store import Store
    from steadytune.studies.runner import StudyEvents, StudyRunner
    from steadytune.studies.spec import StudySpec

    spec = StudySpec(name="online", tasks=["rte"], wi_seeds="1-5", do_seeds="1-5", policy="replace",
                     config={"model": "made-up", "max_train": 32})
    notes: list[str] = []
    with Store(tmp_path / "online.db") as store:
        summary = StudyRunner(spec, store, RunOptions(), MadeUpExecutor(fails, early_sign)).run(
            StudyEvents(on_note=notes.append))
        trials = store.trials()
    return summary, trials, notes


def test_a_planted_signal_is_found_online_and_acted_on_only_after_the_check_passes(tmp_path):
    from steadytune.training.records import TrialStatus

    summary, trials, notes = online_study(tmp_path, lambda wi, do: (wi + do) % 3 == 0, early_sign=True)
    acted = [n for n in notes if "it acts" in n]
    assert len(acted) == 1 and all("does not act yet" in n for n in notes[:notes.index(acted[0])]), notes
    stopped = trials[trials["status"] == TrialStatus.FORECAST_STOPPED]
    assert len(stopped) > 0 and ((stopped["wi_seed"] + stopped["do_seed"]) % 3 == 0).all()  # only planted failures
    looked_at = int(acted[0].split(" on ")[1].split(" runs")[0])
    first = trials.sort_values("id").head(looked_at)
    assert (first["steps_done"] == MadeUpExecutor.total).all()  # before it acted, every run trained fully
    good = trials[(trials["wi_seed"] + trials["do_seed"]) % 3 != 0]
    assert (good["status"] == TrialStatus.COMPLETE).all()
    assert (stopped["steps_done"] == 30).all()  # each flagged run cost 30% of a run, at the cut
    complete = int((trials["status"] == TrialStatus.COMPLETE).sum())
    assert summary.full_trials_spent == pytest.approx(complete + 0.3 * len(stopped))


def test_with_no_early_signal_it_never_acts_and_equals_full_training(tmp_path):
    from steadytune.training.records import TrialStatus

    summary, trials, notes = online_study(tmp_path, lambda wi, do: (wi + do) % 3 == 0, early_sign=False)
    assert notes and all("does not act yet" in n or "needs both outcomes" in n for n in notes), notes
    assert len(trials) == 25 and set(trials["status"]) == {TrialStatus.COMPLETE}
    assert summary.full_trials_spent == 25


class Interrupting(MadeUpExecutor):
    """As MadeUpExecutor, but stops the study (as Ctrl-C or a kill would) after `after` results."""

    def __init__(self, fails, early_sign: bool, after: int):
        super().__init__(fails, early_sign)
        self.after = after

    def run(self, next_job):
        for count, item in enumerate(super().run(next_job)):
            if count == self.after:
                raise KeyboardInterrupt
            yield item


def test_an_interrupted_online_study_resumes_to_the_same_decisions(tmp_path):
    from steadytune.config import RunOptions
    from steadytune.errors import Interrupted
    from steadytune.storage.store import Store
    from steadytune.studies.runner import StudyRunner
    from steadytune.studies.spec import StudySpec

    def fails(wi: int, do: int) -> bool:
        return (wi + do) % 3 == 0

    (tmp_path / "calm").mkdir()
    _, calm, _ = online_study(tmp_path / "calm", fails, early_sign=True)
    spec = StudySpec(name="online", tasks=["rte"], wi_seeds="1-5", do_seeds="1-5", policy="replace",
                     config={"model": "made-up", "max_train": 32})

    def recorded(store) -> dict:
        with store.reading() as db:
            return dict(db.execute("SELECT key, value FROM store_meta WHERE key LIKE 'online-decision:%'").fetchall())

    seen: dict = {}
    for after in (20, 5, 3, 1000):  # interrupted three times, after the check passed, then run to its end
        with Store(tmp_path / "cut.db") as store:
            try:
                StudyRunner(spec, store, RunOptions(), Interrupting(fails, True, after)).run()
            except Interrupted:
                pass
            now = recorded(store)
        assert {key: now[key] for key in seen} == seen  # a decision once recorded is the one a resumed study uses
        seen = now
    with Store(tmp_path / "cut.db", readonly=True) as store:
        resumed = store.trials()

    def decisions(trials):
        return sorted(zip(trials["trial_key"], trials["status"]))

    assert decisions(resumed) == decisions(calm)
    decided = resumed[resumed["steps_done"].eq(30) | resumed["status"].eq("forecast-stopped")]
    assert len(seen) >= len(decided) > 0
