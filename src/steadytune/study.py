"""Seed studies: a grid of tasks x recipes x WI seeds x DO seeds, run resumably.

A study is identified by its spec. Re-running it skips trials already finished in the store and
re-runs only missing or interrupted ones, which, being deterministic, give identical results.
Trials run in worker processes or as Ray tasks; the driver alone writes the store, so a trial's
rows arrive in one transaction with its final status and a killed study leaves no half results.
With early stopping (Dodge et al.), each task x recipe group starts T trials, trains them to a
fraction F, continues the top P from their saved state, and records the rest as `stopped`.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .config import ConfigError, RunOptions, TrialConfig, build_config, format_validation_error, load_config_file
from .early_stopping import EarlyStop, cut_step, survivors
from .recipes import recipe_overrides
from .store import CurvePoint, Store, TrialOutcome

STUDY_KEYS = ("name", "tasks", "recipes", "wi_seeds", "do_seeds", "early_stop")


def parse_seeds(value: Any) -> list[int]:
    """'1-25', '1,3,5', '1-3,7', 4, or a list of ints."""
    if isinstance(value, int):
        return [value]
    if isinstance(value, list):
        return [int(v) for v in value]
    seeds: list[int] = []
    for part in str(value).replace(" ", "").split(","):
        low, _, high = part.partition("-")
        seeds += list(range(int(low), int(high) + 1)) if high else [int(low)]
    return seeds


class StudySpec(BaseModel):
    """What a study runs. `config` holds TrialConfig values shared by all trials (model, data, epochs, ...)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = Field(None, description="Study name; default: derived from the spec's content.")
    tasks: list[str] = Field(["rte"], description="Tasks to run.")
    recipes: list[str | None] = Field([None], description="Recipes to compare (none = the defaults).")
    wi_seeds: list[int] = Field([1], description="Weight-initialization seeds.")
    do_seeds: list[int] = Field([1], description="Data-order seeds.")
    early_stop: str | None = Field(None, description="start=T,fraction=F,keep=P (Dodge et al.), per task x recipe.")
    config: dict[str, Any] = Field(default_factory=dict, description="TrialConfig values for every trial.")

    @field_validator("wi_seeds", "do_seeds", mode="before")
    @classmethod
    def _seeds(cls, value: Any) -> list[int]:
        return parse_seeds(value)

    @field_validator("tasks", "recipes", mode="before")
    @classmethod
    def _lists(cls, value: Any) -> list:
        return [v.strip() for v in value.split(",")] if isinstance(value, str) else value

    def early_stopping(self) -> EarlyStop | None:
        return EarlyStop.parse(self.early_stop) if self.early_stop else None

    def study_name(self) -> str:
        if self.name:
            return self.name
        digest = hashlib.sha256(json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()
        return f"study-{digest[:10]}"


GRID_FIELDS = {"task": "tasks", "recipe": "recipes", "wi_seed": "wi_seeds", "do_seed": "do_seeds"}


def load_spec(path: Path | None, overrides: dict[str, Any]) -> StudySpec:
    """A spec from a YAML/TOML file (study keys at the top, anything else is trial config) plus CLI values."""
    raw = load_config_file(path) if path else {}
    config = {k: v for k, v in raw.items() if k not in STUDY_KEYS and k != "config"}
    config.update(raw.get("config") or {})
    config.update({k: v for k, v in overrides.items() if k not in STUDY_KEYS and v is not None})
    study = {k: raw[k] for k in STUDY_KEYS if k in raw}
    study.update({k: v for k, v in overrides.items() if k in STUDY_KEYS and v is not None})
    where = f"study spec {path}" if path else "study"
    for field, grid in GRID_FIELDS.items():
        if field in config:
            raise ConfigError(f"{where}: {field} is set by the grid; use {grid} (--{grid.replace('_', '-')})")
    try:
        spec = StudySpec(**study, config=config)
        spec.early_stopping()
    except ValidationError as err:
        raise ConfigError(f"{where}: {format_validation_error(err)}") from None
    except ValueError as err:
        raise ConfigError(f"{where}: {err}") from None
    return spec


@dataclass(frozen=True)
class PlannedTrial:
    group: tuple[str, str | None]  # (task, recipe): the unit early stopping ranks within
    config: TrialConfig


def expand(spec: StudySpec) -> list[PlannedTrial]:
    """Every trial of the grid; precedence: recipe < spec config < grid values (task, seeds)."""
    trials = []
    for task in spec.tasks:
        for recipe in spec.recipes:
            for wi_seed in spec.wi_seeds:
                for do_seed in spec.do_seeds:
                    config = build_config(recipe_overrides(recipe) if recipe else {}, spec.config,
                                          {"task": task, "wi_seed": wi_seed, "do_seed": do_seed})
                    trials.append(PlannedTrial((task, recipe), config))
    stop = spec.early_stopping()
    if stop is not None:
        group_size = len(spec.wi_seeds) * len(spec.do_seeds)
        if stop.start > group_size:
            raise ConfigError(f"--early-stop start={stop.start} but each task x recipe has only {group_size} "
                              f"seed pairs; add seeds or lower start")
        by_group: dict = {}
        for trial in trials:
            by_group.setdefault(trial.group, []).append(trial)
        trials = [t for group in by_group.values() for t in group[:stop.start]]
    return trials


# --- execution ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Job:
    """One unit of work for a worker: run `config` to `stop_at` (None = the end), optionally from/to a saved state."""

    config: dict
    options: dict
    store_path: str | None = None  # resolves --init-from trial ids
    stop_at_fraction: float | None = None
    state_in: str | None = None
    state_out: str | None = None


@dataclass(frozen=True)
class JobResult:
    outcome: TrialOutcome
    points: list[CurvePoint]


def execute(job: Job) -> JobResult:
    """Run one job in this process. Errors become a `failed` outcome, never an exception: a study goes on."""
    from .trial import Trial

    config, options = TrialConfig(**job.config), RunOptions(**job.options)
    try:
        trial = Trial(config, options, Path(job.store_path) if job.store_path else None)
        if job.state_in:
            trial.restore_state(Path(job.state_in))
        stop_at = None
        if job.stop_at_fraction is not None:
            stop_at = cut_step(trial.total_steps, job.stop_at_fraction)
            trial.eval_at.add(stop_at)  # the cut ranks on a dev score taken exactly there
        points: list[CurvePoint] = []
        outcome, pending = trial.run(points.extend, stop_at=stop_at)
        if job.state_out and outcome.status == "stopped":
            trial.save_state(Path(job.state_out))
        return JobResult(outcome, points + pending)
    except Exception as err:  # noqa: BLE001 - any failure of one trial is recorded, not raised
        return JobResult(TrialOutcome(status="failed", steps_done=0, total_steps=0, metric="", final_metrics={},
                                      best_metrics={}, best_step=None, baseline_metric=float("nan"),
                                      wall_seconds=0.0, error=f"{type(err).__name__}: {err}"), [])


class Executor:
    """Runs jobs concurrently and yields (tag, result) as they finish."""

    def __init__(self, workers: int, ray_address: str | None = None, cpus_per_trial: float = 1,
                 gpus_per_trial: float = 0):
        self.workers, self.ray_address = workers, ray_address
        self.cpus_per_trial, self.gpus_per_trial = cpus_per_trial, gpus_per_trial

    def run(self, jobs: list[tuple[Any, Job]]) -> Iterator[tuple[Any, JobResult]]:
        if not jobs:
            return
        if self.ray_address:
            yield from self._run_ray(jobs)
        elif self.workers == 1:
            for tag, job in jobs:
                yield tag, execute(job)
        else:
            yield from self._run_processes(jobs)

    def _run_processes(self, jobs):
        # spawn, not fork: torch's thread pools do not survive a fork.
        with ProcessPoolExecutor(self.workers, mp_context=get_context("spawn"), initializer=_init_worker,
                                 initargs=(self.threads_per_worker(),)) as pool:
            pending: dict[Future, Any] = {pool.submit(execute, job): tag for tag, job in jobs}
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    yield pending.pop(future), future.result()

    def _run_ray(self, jobs):
        try:
            import ray
        except ImportError:
            raise ConfigError("--ray-address needs Ray: pip install 'steadytune[ray]'") from None
        if not ray.is_initialized():
            ray.init(address=self.ray_address, log_to_driver=False)
        remote = ray.remote(execute).options(num_cpus=self.cpus_per_trial, num_gpus=self.gpus_per_trial)
        pending = {remote.remote(job): tag for tag, job in jobs}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                yield pending.pop(ref), ray.get(ref)

    def threads_per_worker(self) -> int:
        """Torch threads per trial: the Ray CPUs it reserves, or this machine's cores split between N workers."""
        if self.ray_address:
            return max(1, int(self.cpus_per_trial))
        return max(1, (os.cpu_count() or 1) // self.workers)


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)


@dataclass
class StudyEvents:
    """Callbacks for a progress display."""

    on_start: Callable[[int], None] = lambda total: None
    on_result: Callable[[PlannedTrial, TrialOutcome], None] = lambda trial, outcome: None


class StudyRunner:
    def __init__(self, spec: StudySpec, store: Store, options: RunOptions, executor: Executor):
        if options.save_model:
            raise ConfigError("--save-model applies to `steadytune train`; a study does not save encoders")
        self.spec, self.store, self.executor = spec, store, executor
        self.study_id = store.study_id(spec.study_name(), spec.model_dump(mode="json"))
        self.trials = expand(spec)
        self.states_dir = store.path.parent / f"{store.path.stem}-states"
        if options.threads is None and (executor.ray_address or executor.workers > 1):
            options = options.model_copy(update={"threads": executor.threads_per_worker()})
        self.options = options
        self.full_trials_spent = 0.0

    def run(self, events: StudyEvents | None = None) -> dict[str, Any]:
        events = events or StudyEvents()
        stop = self.spec.early_stopping()
        todo = [t for t in self.trials if self._status(t) not in ("complete", "diverged", "stopped")]
        events.on_start(len(todo) + (0 if stop is None else len(self._groups()) * stop.keep))
        self._execute([(t, self._job(t, stop_at_fraction=stop.fraction if stop else None, save_state=stop is not None))
                       for t in todo], events)
        if stop is not None:
            self._continue_survivors(stop, events)
        statuses = [self._status(t) for t in self.trials]
        return {"study": self.spec.study_name(), "trials": len(self.trials), "ran": len(todo),
                "full_trials_spent": self.full_trials_spent,
                **{s: statuses.count(s) for s in ("complete", "stopped", "diverged", "failed")}}

    def _status(self, trial: PlannedTrial) -> str | None:
        row = self.store.latest_trial(trial.config.trial_key(), self.study_id)
        return row["status"] if row else None

    def _state_path(self, trial: PlannedTrial) -> Path:
        return self.states_dir / f"study{self.study_id}-{trial.config.trial_key()}.pt"

    def _job(self, trial: PlannedTrial, stop_at_fraction: float | None = None, save_state: bool = False,
             resume: bool = False) -> Job:
        if save_state or resume:
            self.states_dir.mkdir(parents=True, exist_ok=True)
        return Job(trial.config.model_dump(mode="json"), self.options.model_dump(mode="json"),
                   store_path=str(self.store.path), stop_at_fraction=stop_at_fraction,
                   state_in=str(self._state_path(trial)) if resume else None,
                   state_out=str(self._state_path(trial)) if save_state else None)

    def _execute(self, work: list[tuple[PlannedTrial, Job]], events: StudyEvents) -> None:
        """Run jobs; each result is written when it arrives, so the store only ever holds finished attempts."""
        tagged = []
        for trial, job in work:
            row = self.store.latest_trial(trial.config.trial_key(), self.study_id) if job.state_in else None
            # Continuing a stopped attempt updates its row; anything else is recorded as a new attempt.
            tagged.append(((trial, row["id"] if row else None, row["steps_done"] if row else 0), job))
        for (trial, trial_id, start_step), result in self.executor.run(tagged):
            config = trial.config
            if trial_id is None:
                self.store.record_trial(config.model_dump(mode="json"), config.trial_key(),
                                        config.effective_dropout_seed, self.study_id, result.outcome, result.points)
            else:
                self.store.finish_trial(trial_id, result.outcome, result.points)
            if result.outcome.total_steps:
                self.full_trials_spent += (result.outcome.steps_done - start_step) / result.outcome.total_steps
            events.on_result(trial, result.outcome)

    def _groups(self) -> dict[tuple, list[PlannedTrial]]:
        groups: dict[tuple, list[PlannedTrial]] = {}
        for trial in self.trials:
            groups.setdefault(trial.group, []).append(trial)
        return groups

    def _continue_survivors(self, stop: EarlyStop, events: StudyEvents) -> None:
        """Rank each group on the dev score at the cut (read back from the store, so a resumed study
        makes the same choice) and run the top P to the end."""
        work, kept = [], set()
        for members in self._groups().values():
            rows = [self.store.latest_trial(t.config.trial_key(), self.study_id) for t in members]
            scores = [self.store.dev_score_at(row["id"], cut_step(row["total_steps"], stop.fraction))
                      if row is not None and row["total_steps"] else None for row in rows]
            for index in survivors(scores, stop.keep):
                trial, row = members[index], rows[index]
                kept.add(trial)
                if row is not None and row["status"] == "stopped":
                    # From the saved state; if it was lost, from scratch (deterministic: same result).
                    work.append((trial, self._job(trial, resume=self._state_path(trial).exists())))
        self._execute(work, events)
        for trial in self.trials:
            if trial not in kept or self._status(trial) != "stopped":
                self._state_path(trial).unlink(missing_ok=True)
