"""How far each trial of a study trains, and which go on: full training, Dodge et al.'s cut, and the forecaster's.

- full: every trial to its end.
- dodge: each task x recipe group starts T trials, trains them to a fraction F, continues the top P from their saved
  state, and records the rest as `stopped` (the rule itself: analysis/early_stopping.py, which the simulator shares).
- replace: every trial to the forecaster's fraction; one it flags is `forecast-stopped` and the next unused WI seed of
  its cell takes its place; the others continue to the end.
- dodge+replace: Dodge's cut, where a trial the forecaster flags is forecast-stopped and never continued.

Every decision reads only what the store holds (the curves at the cut), never the driver's memory, so a study that is
killed and resumed, or run by several drivers, makes the same decisions.
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

from ..analysis.early_stopping import EarlyStop, cut_step, survivors
from ..errors import ConfigError
from ..storage.store import Store
from ..training.records import RESULT_STATUSES, TrialStatus
from .jobs import Job
from .spec import ONLINE, PlannedTrial, StudySpec, planned_trial

# Statuses after which a trial is not run again in the first pass: it has a result or waits at its cut (and, with a
# forecaster, is forecast-stopped): a trial at its end or cut.
FIRST_PASS_DONE = (*RESULT_STATUSES, TrialStatus.STOPPED)
FORECAST_PASS_DONE = (*FIRST_PASS_DONE, TrialStatus.FORECAST_STOPPED)
MAX_REPLACEMENTS = 2  # per requested trial of a cell, under --policy replace


class Driver(Protocol):
    """What a policy drives: a study's runner (runner.StudyRunner), which claims, runs and records the jobs."""

    store: Store
    trials: list[PlannedTrial]
    study_id: int
    executor: Any

    def status(self, trial: PlannedTrial) -> TrialStatus | None: ...
    def latest(self, trial: PlannedTrial) -> dict | None: ...
    def state_path(self, trial: PlannedTrial) -> Path: ...
    def drop_state(self, trial: PlannedTrial) -> None: ...
    def job(self, trial: PlannedTrial, stop_at_fraction: float | None = None, save_state: bool = False,
            resume: bool = False) -> Job: ...
    def execute(self, work: Iterable[tuple[PlannedTrial, Job]], done: tuple[TrialStatus, ...], events: Any) -> None: ...


class Policy:
    """Full training: every trial of the grid to its end."""

    first_pass_done: tuple[TrialStatus, ...] = FIRST_PASS_DONE

    def todo(self, runner: Driver) -> list[PlannedTrial]:
        return [t for t in runner.trials if runner.status(t) not in self.first_pass_done]

    def planned(self, runner: Driver) -> int:
        """How many trainings this run will start, for a progress display."""
        return len(self.todo(runner))

    def run(self, runner: Driver, events: Any) -> None:
        runner.execute([(t, runner.job(t)) for t in self.todo(runner)], self.first_pass_done, events)


class Forecast:
    """A fitted failure forecaster and the threshold at which it flags a trial."""

    def __init__(self, spec: StudySpec, store: Store):
        from ..forecast.model import Forecaster, resolve

        if not store.holds_forecast_stops():
            raise ConfigError(f"{store.label} was created before forecast-stopped trials existed; run --policy "
                              f"{spec.policy} on a new store")
        self.model = Forecaster.load(resolve(spec.forecaster))
        self.name, self.threshold = spec.forecaster, spec.forecast_threshold

    @property
    def fraction(self) -> float:
        return self.model.fraction

    def stop_if_flagged(self, runner: Driver, trial: PlannedTrial) -> bool:
        """A trial stopped at the forecaster's fraction and flagged by it becomes forecast-stopped (and its state is
        dropped). The decision reads only the stored curve, so a resumed study makes the same one."""
        row = runner.latest(trial)
        if row is None or row["status"] != TrialStatus.STOPPED:
            return False
        probability = failure_probability(runner.store, row, self.model)
        if probability < self.threshold:
            return False
        forecast_stop(runner, trial, row, probability)
        return True


class Dodge(Policy):
    """Dodge et al.'s cut, per task x recipe group; with a forecaster (dodge+replace), a trial it flags at the cut is
    forecast-stopped and never continued."""

    def __init__(self, stop: EarlyStop, forecast: Forecast | None = None):
        self.stop, self.forecast = stop, forecast
        if forecast is not None:
            self.first_pass_done = FORECAST_PASS_DONE
            if abs(forecast.fraction - stop.fraction) > 1e-9:
                raise ConfigError(f"--policy dodge+replace cuts once: --early-stop fraction={stop.fraction:g} must "
                                  f"equal the fraction {forecast.fraction:g} the forecaster {forecast.name} was fit at")

    def planned(self, runner: Driver) -> int:
        return len(self.todo(runner)) + len(_groups(runner.trials)) * self.stop.keep

    def run(self, runner: Driver, events: Any) -> None:
        runner.execute([(t, runner.job(t, stop_at_fraction=self.stop.fraction, save_state=True))
                        for t in self.todo(runner)], self.first_pass_done, events)
        if self.forecast is not None:
            for trial in runner.trials:
                self.forecast.stop_if_flagged(runner, trial)
        self._continue_survivors(runner, events)

    def _continue_survivors(self, runner: Driver, events: Any) -> None:
        """Rank each group on the dev score at the cut (read back from the store, so a resumed study makes the same
        choice) and run the top P to the end."""
        work, kept = [], set()
        for members in _groups(runner.trials).values():
            rows = [runner.latest(t) for t in members]
            # A forecast-stopped trial is never continued (--policy dodge+replace): the top P come from the others.
            ranked = [i for i, row in enumerate(rows) if row is None or row["status"] != TrialStatus.FORECAST_STOPPED]
            scores = [runner.store.dev_score_at(rows[i]["id"], cut_step(rows[i]["total_steps"], self.stop.fraction))
                      if rows[i] is not None and rows[i]["total_steps"] else None for i in ranked]
            for index in (ranked[i] for i in survivors(scores, min(self.stop.keep, len(ranked)))):
                trial, row = members[index], rows[index]
                kept.add(trial)
                if row is not None and row["status"] == TrialStatus.STOPPED:
                    # From the saved state; if it was lost or is damaged, from scratch (deterministic: same result).
                    work.append((trial, runner.job(trial, resume=runner.state_path(trial).exists())))
        runner.execute(work, RESULT_STATUSES, events)
        for trial in runner.trials:
            if trial not in kept or runner.status(trial) != TrialStatus.STOPPED:
                runner.drop_state(trial)


class Replace(Policy):
    """Every trial to the forecaster's fraction (its state saved), then a decision read from its stored curve:
    flagged, it becomes forecast-stopped and the next unused WI seed of its cell (same task, recipe, DO and adapter
    seed) takes its place; otherwise it continues to the end. A cell gets at most MAX_REPLACEMENTS replacements per
    requested trial, so a forecaster that flags everything cannot run on."""

    first_pass_done = FORECAST_PASS_DONE

    def __init__(self, spec: StudySpec, forecast: Forecast):
        self.spec, self.forecast = spec, forecast

    def run(self, runner: Driver, events: Any) -> None:
        replacements = Replacements(self.spec, runner.trials)
        batch = list(runner.trials)
        while batch:
            first = [(t, runner.job(t, stop_at_fraction=self.forecast.fraction, save_state=True)) for t in batch
                     if runner.status(t) not in FORECAST_PASS_DONE]
            runner.execute(first, FORECAST_PASS_DONE, events)
            continuing, added = [], []
            for trial in batch:
                flagged = self.forecast.stop_if_flagged(runner, trial)
                if not flagged and runner.status(trial) == TrialStatus.STOPPED:
                    continuing.append((trial, runner.job(trial, resume=runner.state_path(trial).exists())))
                if runner.status(trial) == TrialStatus.FORECAST_STOPPED:
                    added += filter(None, [replacements.next_for(trial)])
            runner.execute(continuing, RESULT_STATUSES, events)
            runner.trials += added
            batch = added


class OnlineReplace(Policy):
    """--policy replace --forecaster online (forecast/online.py): trials in an order that spreads their seeds, trained
    fully until the study's own forecaster passes its self-check at a planned look; from then on, as `Replace`,
    with the forecaster refitted on the complete runs before each batch. Until it acts, it says why, once per look."""

    first_pass_done = FORECAST_PASS_DONE

    def __init__(self, spec: StudySpec, settings):
        self.spec, self.settings = spec, settings
        self.check = None  # the look that passed

    def run(self, runner: Driver, events: Any) -> None:
        from collections import deque

        from ..forecast.online import planned_looks, spread_order

        replacements = Replacements(self.spec, runner.trials)
        cells = [(t.config.wi_seed, t.config.do_seed) for t in runner.trials]
        queue = deque(runner.trials[i] for i in spread_order(cells))
        looks = deque(planned_looks(self.settings))
        width = max(1, runner.executor.workers)  # a batch: as many trials as run at once
        self._look(runner, looks, events)
        while queue:
            batch = [queue.popleft() for _ in range(min(width, len(queue)))]
            if self.check is None:
                runner.execute([(t, runner.job(t)) for t in batch if runner.status(t) not in FORECAST_PASS_DONE],
                               FORECAST_PASS_DONE, events)
                self._look(runner, looks, events)
                continue
            runner.execute([(t, runner.job(t, stop_at_fraction=self.settings.fraction, save_state=True))
                            for t in batch if runner.status(t) not in FORECAST_PASS_DONE], FORECAST_PASS_DONE, events)
            forecaster = self._fit(runner)
            continuing = []
            for trial in batch:
                row = runner.latest(trial)
                if row is None or row["status"] != TrialStatus.STOPPED:
                    continue
                probability = self._decision(runner, trial, row, forecaster)
                if probability < self.settings.threshold:
                    continuing.append((trial, runner.job(trial, resume=runner.state_path(trial).exists())))
                    continue
                forecast_stop(runner, trial, row, probability, f" (online: {forecaster.fitted_on})")
                replacement = replacements.next_for(trial)
                if replacement is not None:
                    runner.trials.append(replacement)
                    queue.append(replacement)
            runner.execute(continuing, RESULT_STATUSES, events)

    def _decision(self, runner: Driver, trial: PlannedTrial, row: dict, forecaster) -> float:
        """P(failed) of a trial at its cut: the one recorded when it was first decided (a resumed study, which may
        have refitted its forecaster since, decides the same), else from `forecaster`, then recorded."""
        key = f"online-decision:study{runner.study_id}:{trial.config.trial_key()}"
        recorded = runner.store.recalled(key)
        if recorded is not None:
            return float(json.loads(recorded)["probability"])
        probability = failure_probability(runner.store, row, forecaster)
        runner.store.remember(key, json.dumps({"probability": probability, "forecaster": forecaster.fitted_on,
                                               "coef": list(forecaster.coef), "intercept": forecaster.intercept}))
        return probability

    def _complete(self, runner: Driver):
        """The study's complete runs, oldest first, with their features at the decision fraction and outcomes."""
        from ..analysis.failures import failed
        from ..forecast.features import feature_table

        trials = runner.store.trials()
        trials = trials[(trials["study_id"] == runner.study_id) & trials["status"].isin(RESULT_STATUSES)]
        trials = trials.sort_values("id").reset_index(drop=True)
        table = feature_table(trials, runner.store.curves(trials["id"].tolist()), self.settings.fraction)
        return table, failed(trials, "final_metric").to_numpy(bool), trials["wi_seed"].to_numpy()

    def _look(self, runner: Driver, looks, events: Any) -> None:
        """At each planned look the complete runs have reached: the self-check, on the first runs that completed
        (read from the store, so a resumed study checks the same runs)."""
        import numpy as np

        from ..forecast.online import self_check

        while self.check is None and looks:
            table, failed, wi = self._complete(runner)
            if len(failed) < looks[0]:
                return
            runs = looks.popleft()
            check = self_check(table.iloc[:runs], failed[:runs], wi[:runs], self.settings,
                               np.random.default_rng(runs))  # seeded by the look: a resumed study checks the same
            events.on_note(f"online forecaster: {check.reason}")
            if check.passed:
                self.check = check

    def _fit(self, runner: Driver):
        import pandas as pd

        from ..forecast.model import fit

        table, failed, _ = self._complete(runner)
        return fit(table, pd.Series(failed), self.settings.fraction,
                   f"{len(failed)} complete runs of this study ({int(failed.sum())} failed); self-check "
                   f"AUC {self.check.auc:.2f}, p {self.check.p:.3f}")


class Replacements:
    """The trials that take flagged ones' places: the next unused WI seed of the flagged trial's cell (same task,
    recipe, DO and adapter seed), at most MAX_REPLACEMENTS per requested trial of a cell, so a forecaster that flags
    everything cannot run on."""

    def __init__(self, spec: StudySpec, trials: list[PlannedTrial]):
        self.spec, self.used = spec, {}
        for trial in trials:
            self.used.setdefault(self._cell(trial), set()).add(trial.config.wi_seed)
        self.budget = {cell: MAX_REPLACEMENTS * len(seeds) for cell, seeds in self.used.items()}

    @staticmethod
    def _cell(trial: PlannedTrial) -> tuple:  # what a replacement keeps: all but the WI seed
        return trial.config.task, trial.group[1], trial.config.do_seed, trial.config.adapter_seed

    def next_for(self, trial: PlannedTrial) -> PlannedTrial | None:
        cell = self._cell(trial)
        if self.budget[cell] <= 0:
            return None
        self.budget[cell] -= 1
        seed = max(self.used[cell]) + 1
        self.used[cell].add(seed)
        return planned_trial(self.spec, trial.config.task, trial.group[1], seed, trial.config.do_seed,
                             trial.config.adapter_seed)


def failure_probability(store: Store, row: dict, forecaster) -> float:
    """P(failed) of a stored trial, from its stored curve up to the step it reached (the cut)."""
    import pandas as pd

    from ..analysis.failures import num_classes
    from ..forecast.features import trial_features

    config = json.loads(row["config_json"])
    features = trial_features(store.curves([row["id"]]), row["steps_done"], row["metric"], row["baseline_metric"],
                              num_classes(row["task"], config.get("label_names")))
    return float(forecaster.probability(pd.DataFrame([features]))[0])


def forecast_stop(runner: Driver, trial: PlannedTrial, row: dict, probability: float, how: str = "") -> None:
    """A trial paused at the cut and flagged: terminal forecast-stopped, with why; its saved state goes."""
    runner.store.forecast_stop(row["id"], f"forecast-stopped: P(failed) = {probability:.3f} at step "
                                          f"{row['steps_done']} of {row['total_steps']}{how}")
    runner.drop_state(trial)


def policy_for(spec: StudySpec, store: Store) -> Policy:
    """The spec's policy, its forecaster loaded and checked against the store."""
    if spec.policy == "replace" and spec.forecaster == ONLINE:
        from ..forecast.online import OnlineSettings

        if not store.holds_forecast_stops():
            raise ConfigError(f"{store.label} was created before forecast-stopped trials existed; run --policy "
                              f"replace on a new store")
        return OnlineReplace(spec, OnlineSettings(threshold=spec.forecast_threshold))
    forecast = Forecast(spec, store) if spec.forecasts() else None
    if spec.policy == "replace":
        return Replace(spec, forecast)
    stop = spec.early_stopping()
    return Dodge(stop, forecast) if stop is not None else Policy()


def _groups(trials: list[PlannedTrial]) -> dict[tuple, list[PlannedTrial]]:
    groups: dict[tuple, list[PlannedTrial]] = {}
    for trial in trials:
        groups.setdefault(trial.group, []).append(trial)
    return groups
