"""Seed studies: a grid of tasks x recipes x WI seeds x DO seeds, run resumably.

A study is identified by its spec. Re-running it skips trials already finished in the store and
re-runs only missing or interrupted ones, which, being deterministic, give identical results.
Trials run in worker processes or as Ray tasks; the driver alone writes the store, so a trial's
rows arrive in one transaction with its final status and a killed study leaves no half results.
With early stopping (Dodge et al.), each task x recipe group starts T trials, trains them to a
fraction F, continues the top P from their saved state, and records the rest as `stopped`.

Processes die, and the design assumes it:
- a driver claims each trial in the store just before it hands it to a worker (storage/store.py: claims with
  an expiring lease), so several drivers on one study share its trials and none is run twice; a
  killed driver's claims expire and the others take its trials over;
- a worker exits within a second when its driver dies (it watches its parent from the first import of the
  package on, see __init__.py, so also while it is still importing torch), instead of finishing
  its trial for nobody;
- a worker that dies (an OOM kill, say) costs only its own trial: it is retried up to `retries` times
  on a fresh worker, then recorded as failed, and the study goes on;
- Ctrl-C stops the workers at once, keeps every trial already recorded, and says how to resume.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass, replace
from multiprocessing import get_context
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .. import WATCHED_DRIVER
from ..analysis.early_stopping import EarlyStop, cut_step, survivors
from ..config import (
    ConfigError,
    RunOptions,
    TrialConfig,
    build_config,
    check_keys,
    format_validation_error,
    load_config_file,
)
from ..data.tasks import canonical_task_name
from ..errors import Interrupted
from ..recipes import recipe_overrides
from ..storage.store import CurvePoint, Lease, Store, StoreError, TrialOutcome, new_owner
from ..training.checkpoints import file_sha256, unrecorded

STUDY_KEYS = ("name", "tasks", "recipes", "wi_seeds", "do_seeds", "adapter_seeds", "seed_pairs", "early_stop", "policy",
              "forecaster", "forecast_threshold")
POLICY_KEYS = ("policy", "forecaster", "forecast_threshold")


def parse_seeds(value: Any) -> list[int]:
    """'1-25', '1,3,5', '1-3,7', 4, or a list of ints; ranges run upwards and no seed is listed twice."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a seed")
    if isinstance(value, int):
        return [value]
    seeds: list[int] = []
    parts = value if isinstance(value, list) else str(value).replace(" ", "").split(",")
    for part in parts:
        if isinstance(part, int) and not isinstance(part, bool):
            seeds.append(part)
            continue
        low, dash, high = str(part).partition("-")
        if not low.isdigit() or (dash and not high.isdigit()):
            raise ValueError(f"{str(part)!r} is not a seed or a range of seeds (write e.g. '1-25', '1,3,5' or '1-3,7')")
        if dash and int(high) < int(low):
            raise ValueError(f"range {part!r} runs backwards; write {high}-{low}")
        seeds += list(range(int(low), int(high) + 1)) if dash else [int(low)]
    repeated = sorted(seed for seed, count in Counter(seeds).items() if count > 1)
    if repeated:
        raise ValueError(f"seed(s) {', '.join(map(str, repeated))} listed more than once")
    if not seeds:
        raise ValueError("no seeds given")
    return seeds


class StudySpec(BaseModel):
    """What a study runs. `config` holds TrialConfig values shared by all trials (model, data, epochs, ...)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    name: str | None = Field(None, description="Study name; default: derived from the spec's content.")
    tasks: list[str] = Field(["rte"], description="Tasks to run.")
    recipes: list[str | None] = Field([None], description="Recipes to compare (none = the defaults).")
    wi_seeds: list[int] = Field([1], description="Weight-initialization seeds.")
    do_seeds: list[int] = Field([1], description="Data-order seeds.")
    adapter_seeds: list[int] | None = Field(None, description="Adapter seeds (with --adapter lora), a third grid "
                                            "factor; default: each trial's WI seed.")
    seed_pairs: bool = Field(False, description="Pair the WI and DO seeds in order, (wi[0], do[0]), (wi[1], do[1]), "
                             "...: independent seed pairs instead of the crossed grid.")
    early_stop: str | None = Field(None, description="start=T,fraction=F,keep=P (Dodge et al.), per task x recipe.")
    policy: Literal["full", "dodge", "replace", "dodge+replace"] = Field(
        "full", description="full: every trial to the end. dodge: Dodge et al.'s cut (--early-stop). replace: each "
        "trial to the forecaster's fraction; one it flags is stored as forecast-stopped and the next unused WI seed "
        "takes its place. dodge+replace: Dodge's cut, where a trial the forecaster flags is forecast-stopped and "
        "never continued. A spec with --early-stop and no policy is dodge.")
    forecaster: str | None = Field(None, description="Forecaster file (`steadytune forecast fit`) for --policy "
                                   "replace or dodge+replace; 'default': the one that ships with steadytune.")
    forecast_threshold: float = Field(0.5, gt=0, le=1, description="Flag a trial when P(failed) is at least this.")
    config: dict[str, Any] = Field(default_factory=dict, description="TrialConfig values for every trial.")

    @field_validator("wi_seeds", "do_seeds", mode="before")
    @classmethod
    def _seeds(cls, value: Any) -> list[int]:
        return parse_seeds(value)

    @field_validator("adapter_seeds", mode="before")
    @classmethod
    def _adapter_seeds(cls, value: Any) -> list[int] | None:
        return None if value is None else parse_seeds(value)

    @field_validator("tasks", "recipes", mode="before")
    @classmethod
    def _lists(cls, value: Any) -> list:
        return [v.strip() for v in value.split(",")] if isinstance(value, str) else value

    @field_validator("tasks")
    @classmethod
    def _canonical_tasks(cls, tasks: list[str]) -> list[str]:
        names = [canonical_task_name(task) for task in tasks]
        repeated = sorted(name for name, count in Counter(names).items() if count > 1)
        if repeated:
            raise ValueError(f"task(s) {', '.join(repeated)} listed more than once (names are matched ignoring case, "
                             f"'-' and '_')")
        return names

    @field_validator("recipes")
    @classmethod
    def _distinct_recipes(cls, recipes: list[str | None]) -> list[str | None]:
        repeated = sorted(str(r) for r, count in Counter(recipes).items() if count > 1)
        if repeated:
            raise ValueError(f"recipe(s) {', '.join(repeated)} listed more than once")
        return recipes

    def early_stopping(self) -> EarlyStop | None:
        return EarlyStop.parse(self.early_stop) if self.early_stop else None

    @model_validator(mode="before")
    @classmethod
    def _early_stop_means_dodge(cls, values: Any) -> Any:
        """Specs written before policies said Dodge's rule with early_stop alone."""
        if isinstance(values, dict) and values.get("early_stop") and values.get("policy") is None:
            values = {**values, "policy": "dodge"}
        return values

    @model_validator(mode="after")
    def _pairs_match(self) -> StudySpec:
        if self.seed_pairs and len(self.wi_seeds) != len(self.do_seeds):
            raise ValueError(f"seed_pairs needs as many WI seeds as DO seeds ({len(self.wi_seeds)} vs "
                             f"{len(self.do_seeds)})")
        return self

    def seed_cells(self) -> list[tuple[int, int]]:
        """(WI, DO) of each trial per task and recipe: the pairs, or the crossed grid."""
        if self.seed_pairs:
            return list(zip(self.wi_seeds, self.do_seeds))
        return [(wi, do) for wi in self.wi_seeds for do in self.do_seeds]

    @model_validator(mode="after")
    def _policy_needs(self) -> StudySpec:
        if self.policy in ("dodge", "dodge+replace") and not self.early_stop:
            raise ValueError(f"--policy {self.policy} needs --early-stop start=T,fraction=F,keep=P")
        if self.policy == "full" and self.early_stop:
            raise ValueError("--early-stop is Dodge's cut: use --policy dodge (or leave --policy out)")
        if self.policy == "replace" and self.early_stop:
            raise ValueError("--policy replace trains every unflagged trial to the end; for Dodge's cut with the "
                             "forecaster, use --policy dodge+replace")
        if self.policy in ("replace", "dodge+replace") and not self.forecaster:
            raise ValueError(f"--policy {self.policy} needs --forecaster FILE (from `steadytune forecast fit`)")
        if self.policy in ("full", "dodge") and (self.forecaster or self.forecast_threshold != 0.5):
            raise ValueError("--forecaster and --forecast-threshold apply to --policy replace or dodge+replace")
        return self

    def forecasts(self) -> bool:
        return self.policy in ("replace", "dodge+replace")

    def study_name(self) -> str:
        if self.name:
            return self.name
        values = self.model_dump(mode="json")
        if values["adapter_seeds"] is None:  # specs written before adapters keep their names
            del values["adapter_seeds"]
        if not values["seed_pairs"]:  # and so do crossed specs written before seed pairs
            del values["seed_pairs"]
        if values["policy"] in ("full", "dodge"):  # and so do specs written before policies
            for key in POLICY_KEYS:
                del values[key]
        digest = hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()
        return f"study-{digest[:10]}"


GRID_FIELDS = {"task": "tasks", "recipe": "recipes", "wi_seed": "wi_seeds", "do_seed": "do_seeds",
               "adapter_seed": "adapter_seeds"}


def load_spec(path: Path | None, overrides: dict[str, Any]) -> StudySpec:
    """A spec from a YAML/TOML file (study keys at the top, anything else is trial config) plus CLI values."""
    raw = load_config_file(path) if path else {}
    if path:
        check_keys(raw, (*STUDY_KEYS, "config", *TrialConfig.model_fields), str(path))
        check_keys(raw.get("config") or {}, TrialConfig.model_fields, f"{path} (config)")
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
        # Name the flag if the bad value came from the command line, else the key as the file has it.
        from_flags = {k for k, v in overrides.items() if v is not None}
        raise ConfigError(f"{where}: {format_validation_error(err, flags=from_flags if path else None)}") from None
    except ValueError as err:
        raise ConfigError(f"{where}: {err}") from None
    return spec


@dataclass(frozen=True)
class PlannedTrial:
    group: tuple[str, str | None]  # (task, recipe): the unit early stopping ranks within
    config: TrialConfig


def planned_trial(spec: StudySpec, task: str, recipe: str | None, wi_seed: int, do_seed: int,
                  adapter_seed: int | None) -> PlannedTrial:
    """One cell of the grid; precedence: recipe < spec config < grid values (task, seeds)."""
    seeds = {"task": task, "wi_seed": wi_seed, "do_seed": do_seed}
    if adapter_seed is not None:
        seeds["adapter_seed"] = adapter_seed
    return PlannedTrial((task, recipe), build_config(recipe_overrides(recipe) if recipe else {}, spec.config, seeds))


def expand(spec: StudySpec) -> list[PlannedTrial]:
    """Every trial of the grid."""
    trials = [planned_trial(spec, task, recipe, wi_seed, do_seed, adapter_seed) for task in spec.tasks
              for recipe in spec.recipes for wi_seed, do_seed in spec.seed_cells()
              for adapter_seed in spec.adapter_seeds or [None]]
    stop = spec.early_stopping()
    if stop is not None:
        group_size = len(spec.seed_cells()) * len(spec.adapter_seeds or [None])
        if stop.start > group_size:
            raise ConfigError(f"--early-stop start={stop.start} but each task x recipe has only {group_size} "
                              f"seed pairs; add seeds or lower start")
        by_group: dict = {}
        for trial in trials:
            by_group.setdefault(trial.group, []).append(trial)
        trials = [t for group in by_group.values() for t in group[:stop.start]]
    return trials


def check_inputs(trials: list[PlannedTrial]) -> None:
    """Raise DataError or ModelError for data or a model the study's trials cannot load, before anything runs or
    is stored: a missing GLUE folder should be one error, not a failed trial per grid cell."""
    from ..models.loading import resolve_model
    from ..training.inputs import load_raw, resolve_task

    checked_models, checked_data = set(), set()
    for trial in trials:
        config = trial.config
        if config.model not in checked_models:
            resolve_model(config.model)
            checked_models.add(config.model)
        data_key = config.model_dump_json(include={"task", "glue_dir", "train_file", "dev_file", "text_column",
                                                   "text_pair_column", "label_column", "label_names", "metric"})
        if data_key not in checked_data:
            load_raw(config, resolve_task(config))
            checked_data.add(data_key)


# --- execution ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Job:
    """One unit of work for a worker: run `config` to `stop_at` (None = the end), optionally from/to a saved state."""

    config: dict
    options: dict
    store_path: str | None = None  # resolves --init-from trial ids
    store_location: str | None = None  # the store (path or URL): where autosaves' hashes are recorded and looked up
    stop_at_fraction: float | None = None
    state_in: str | None = None
    state_out: str | None = None
    state_sha256: str | None = None  # what state_in must hash to; None: the hash the store recorded for it
    autosave: str | None = None  # with RunOptions.checkpoint_every: where the running trial's state is saved
    experiment: str = "steadytune"  # what trackers (--track) file the trial under: the study's name
    pack: tuple[Job, ...] = ()  # jobs trained with this one as one pack (--pack): one result each


@dataclass(frozen=True)
class JobResult:
    outcome: TrialOutcome
    points: list[CurvePoint]
    started_at: float
    resumed_at: int = 0  # the step of a saved state the trial continued from (0: from the start)
    state_refused: str | None = None  # why a saved state was not used (damaged, foreign, not a state file)


def restored_or_fresh(make: Callable[[], Any], job: Job) -> tuple[Any, str | None]:
    """A trial continued from its saved state, or from the start (the same result) when the state is refused; and
    the reason it was refused, which the driver reports in one line. A state is used only if its bytes hash to what
    the store recorded when it was written: a file beside the store is never trusted on its own."""
    from ..training.state_file import StateFileError

    trial = make()
    if job.state_in and Path(job.state_in).exists():
        try:
            check_state_hash(Path(job.state_in),
                             job.state_sha256 or from_store(job, lambda store: store.recorded_hash(job.state_in)))
            trial.restore_state(Path(job.state_in))
        except StateFileError as err:
            return make(), str(err)
    return trial, None


def from_store(job: Job, read: Callable[[Store], Any]) -> Any:
    """What `read` finds in the job's store; None where the job has no store or it cannot be read (then a state is
    refused and the cache is checked by its own checksums)."""
    if not job.store_location:
        return None
    try:
        with Store(job.store_location, readonly=True, create=False) as store:
            return read(store)
    except StoreError:
        return None


def check_state_hash(path: Path, recorded: str | None) -> None:
    from ..training.state_file import StateFileError

    if reason := unrecorded(path, recorded, "state"):
        raise StateFileError(reason)


def record_autosave(job: Job) -> Callable[[Path, str], None]:
    """Where a worker's autosave is recorded: in the job's store, as soon as it is written (the driver may be gone
    by the time the trial is next resumed)."""
    def record(path: Path, sha256: str) -> None:
        if job.store_location:
            with Store(job.store_location, create=False) as store:
                store.record_files([(path, sha256)])
    return record


def with_saved_state(outcome: TrialOutcome, save: Callable[[Path], None], path: Path) -> TrialOutcome:
    """Save a stopped trial's state for its continuation; the outcome then carries the file's hash, which the store
    records with the trial's progress, in one transaction."""
    save(path)
    return replace(outcome, files=outcome.files + ((str(path), file_sha256(path)),))


def failed_outcome(error: str) -> TrialOutcome:
    """The outcome of a job that failed before its trial could report one."""
    return TrialOutcome(status="failed", steps_done=0, total_steps=0, metric="", final_metrics={}, best_metrics={},
                        best_step=None, baseline_metric=float("nan"), wall_seconds=0.0, error=error)


def execute(job: Job) -> JobResult | list[JobResult]:
    """Run one job in this process (a pack job: one result per trial). Errors become a `failed` outcome, never an
    exception: a study goes on."""
    from ..training.trial import Trial
    from .trackers import trial_trackers

    if job.pack:
        return execute_pack(job)
    started_at = time.time()
    config, options = TrialConfig(**job.config), RunOptions(**job.options)
    store_path = Path(job.store_path) if job.store_path else None
    try:
        records = from_store(job, Store.cache_records)
        trial, refused = restored_or_fresh(lambda: Trial(config, options, store_path, records), job)
        resumed_at = trial.step
        stop_at = None
        if job.stop_at_fraction is not None:
            stop_at = cut_step(trial.total_steps, job.stop_at_fraction)
            trial.eval_at.add(stop_at)  # the cut ranks on a dev score taken exactly there
        # Points a preempted run saved with its state were never recorded: they come first.
        points: list[CurvePoint] = list(trial.restored_points)
        if job.autosave and options.checkpoint_every:
            trial.autosave_to(Path(job.autosave), options.checkpoint_every, record_autosave(job))
        trackers = trial_trackers(options.track, job.experiment, job.config, config.trial_key())
        trackers.log(points)

        def reached(new: list[CurvePoint]) -> None:
            points.extend(new)
            trackers.log(new)

        outcome, pending = trial.run(reached, stop_at=stop_at)
        trackers.log(pending)
        trackers.finish(outcome)
        if job.state_out and outcome.status == "stopped":
            outcome = with_saved_state(outcome, lambda path: trial.save_state(path), Path(job.state_out))
        return JobResult(outcome, points + pending, started_at, resumed_at, refused)
    except Exception as err:  # noqa: BLE001 - any failure of one trial is recorded, not raised
        return JobResult(failed_outcome(f"{type(err).__name__}: {err}"), [], started_at)


def execute_pack(job: Job) -> list[JobResult]:
    """Train a pack job's trials as one pack (packed/), each from its saved state where it has one, to its cut or
    its end; a stopped one's state is saved for its continuation. It trains in passes of --pack-pass seeds, one after
    another (on a CPU by default one seed at a time, see CPU_PASS_SEEDS). A pack that cannot be built (the model is not
    a BERT, or the states stand at different steps) runs its jobs one after another instead."""
    from ..packed.model import NotPackable
    from ..packed.trial import PackedTrial, pack_refusal, seeds_per_pass
    from ..training.trial import Trial, pick_device
    from .trackers import trial_trackers

    started_at = time.time()
    jobs = [replace(job, pack=()), *job.pack]
    options = RunOptions(**job.options)
    try:
        size = seeds_per_pass(pick_device(options.device), options.pack_pass) or len(jobs)
    except ConfigError:  # no such device: each trial reports it as its failure
        size = len(jobs)
    if size < len(jobs):  # passes of at most `size` seeds, one after another; a lone seed trains as a single trial
        passes = [jobs[start:start + size] for start in range(0, len(jobs), size)]
        return [result for part in passes
                for result in (execute_pack(replace(part[0], pack=tuple(part[1:]))) if len(part) > 1
                               else [execute(part[0])])]
    try:
        if pack_refusal([TrialConfig(**j.config) for j in jobs], options):  # before any model is loaded
            raise NotPackable("refused")
        members, stop_at, points, resumed, refusals = [], [], [], [], []
        for member_job in jobs:
            config = TrialConfig(**member_job.config)
            records = from_store(member_job, Store.cache_records)
            trial, refused = restored_or_fresh(lambda: Trial(config, options, cache_records=records), member_job)
            refusals.append(refused)
            cut = None if member_job.stop_at_fraction is None else cut_step(trial.total_steps,
                                                                           member_job.stop_at_fraction)
            if cut is not None:
                trial.eval_at.add(cut)  # the cut ranks on a dev score taken exactly there
            members.append(trial)
            stop_at.append(cut)
            points.append(list(trial.restored_points))
            resumed.append(trial.step)
        pack = PackedTrial(members, options)
    except NotPackable:
        return [execute(member_job) for member_job in jobs]
    except Exception as err:  # noqa: BLE001 - as execute: recorded, not raised
        return [JobResult(failed_outcome(f"{type(err).__name__}: {err}"), [], started_at) for _ in jobs]
    trackers = [trial_trackers(options.track, j.experiment, j.config, TrialConfig(**j.config).trial_key()) for j in jobs]
    for tracker, earlier in zip(trackers, points):
        tracker.log(earlier)

    def reached(k: int, new: list[CurvePoint]) -> None:
        points[k].extend(new)
        trackers[k].log(new)

    saved: dict[int, str] = {}

    def stopped(k: int) -> None:  # at its cut: its state, for the continuation
        if jobs[k].state_out:
            pack.save_member_state(k, Path(jobs[k].state_out))
            saved[k] = file_sha256(jobs[k].state_out)
    try:
        results = pack.run(reached, stop_at, on_stop=stopped)
    except Exception as err:  # noqa: BLE001
        return [JobResult(failed_outcome(f"{type(err).__name__}: {err}"), [], started_at) for _ in jobs]
    out = []
    for k, (outcome, pending) in enumerate(results):
        if k in saved:
            outcome = replace(outcome, files=outcome.files + ((jobs[k].state_out, saved[k]),))
        trackers[k].log(pending)
        trackers[k].finish(outcome)
        out.append(JobResult(outcome, points[k] + pending, started_at, resumed[k], refusals[k]))
    return out


# Called when the executor has room for one more job: a (tag, job) pair, or None when none can start now.
NextJob = Callable[[], "tuple[Any, Job] | None"]


class Executor:
    """Runs jobs concurrently, pulling each from `next_job` only when a worker is free, and yields
    (tag, result) as they finish. A worker process that dies costs only its own job (retried up to
    `retries` times, then reported failed)."""

    def __init__(self, workers: int, ray_address: str | None = None, cpus_per_trial: float = 1,
                 gpus_per_trial: float = 0, retries: int = 1):
        self.workers, self.ray_address = workers, ray_address
        self.cpus_per_trial, self.gpus_per_trial = cpus_per_trial, gpus_per_trial
        self.retries = retries

    def run(self, next_job: NextJob) -> Iterator[tuple[Any, JobResult]]:
        if self.ray_address:
            yield from self._run_ray(next_job)
        elif self.workers == 1:
            while (item := next_job()) is not None:
                yield item[0], execute(item[1])
        else:
            yield from self._run_processes(next_job)

    def _run_processes(self, next_job: NextJob) -> Iterator[tuple[Any, JobResult]]:
        context = get_context("spawn")  # not fork: torch's thread pools do not survive a fork
        slots: list[_Worker | None] = [None] * self.workers
        retry: deque[tuple[Any, Job, int]] = deque()
        try:
            while True:
                for index, worker in enumerate(slots):
                    if worker is not None and worker.task is not None:
                        continue
                    if retry:
                        item = retry.popleft()
                    else:
                        fresh = next_job()
                        if fresh is None:
                            break
                        item = (*fresh, 0)
                    if worker is None or not worker.process.is_alive():
                        worker = slots[index] = _Worker(context, self.threads_per_worker())
                    worker.give(*item)
                busy = [w for w in slots if w is not None and w.task is not None]
                if not busy:
                    return
                wait([w.conn for w in busy] + [w.process.sentinel for w in busy])
                for index, worker in enumerate(slots):
                    if worker is None or worker.task is None:
                        continue
                    tag, job, attempt = worker.task
                    result = worker.result()
                    if result is not None:
                        yield tag, result
                    elif not worker.process.is_alive():
                        worker.process.join()
                        slots[index] = None
                        if attempt < self.retries:
                            retry.append((tag, job, attempt + 1))
                        else:
                            yield tag, JobResult(failed_outcome(_death(worker.process.exitcode, attempt + 1)), [],
                                                 worker.started_at)
        finally:
            for worker in slots:
                if worker is not None:
                    worker.stop()

    def _run_ray(self, next_job: NextJob) -> Iterator[tuple[Any, JobResult]]:
        try:
            import ray
        except ImportError:
            raise ConfigError("--ray-address needs Ray: pip install 'steadytune[ray]'") from None
        if not ray.is_initialized():
            ray.init(address=self.ray_address, log_to_driver=False)
        # Ray re-runs a task whose worker died (max_retries); trials are deterministic, so that is safe.
        remote = ray.remote(execute).options(num_cpus=self.cpus_per_trial, num_gpus=self.gpus_per_trial,
                                             max_retries=self.retries)
        capacity = max(1, int(ray.cluster_resources().get("CPU", 1) // max(self.cpus_per_trial, 1e-9)))
        pending: dict = {}
        try:
            while True:
                while len(pending) < capacity and (item := next_job()) is not None:
                    pending[remote.remote(item[1])] = (item[0], time.time())
                if not pending:
                    return
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    tag, started_at = pending.pop(ref)
                    try:
                        yield tag, ray.get(ref)
                    except ray.exceptions.RayError as err:
                        yield tag, JobResult(failed_outcome(f"Ray task lost: {str(err).splitlines()[0]}"), [],
                                             started_at)
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)

    def threads_per_worker(self) -> int:
        """Torch threads per trial: the Ray CPUs it reserves, or this machine's cores split between N workers."""
        if self.ray_address:
            return max(1, int(self.cpus_per_trial))
        return max(1, (os.cpu_count() or 1) // self.workers)


def _death(exitcode: int | None, attempts: int) -> str:
    how = (f"killed by signal {-exitcode}" + (" (SIGKILL: out of memory?)" if exitcode == -signal.SIGKILL else "")
           if exitcode is not None and exitcode < 0 else f"exit code {exitcode}")
    return f"WorkerDied: the worker process running this trial died ({how}), {attempts} attempt(s)"


class _Worker:
    """One spawned worker process and the job it is running, talking to the driver over a pipe."""

    def __init__(self, context, threads: int):
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_worker_main, args=(child, threads), daemon=True,
                                       name="steadytune-worker")
        os.environ[WATCHED_DRIVER] = str(os.getpid())  # the worker watches this driver from its first import on
        try:
            self.process.start()
        finally:
            del os.environ[WATCHED_DRIVER]
        child.close()
        self.task: tuple[Any, Job, int] | None = None
        self.started_at = 0.0

    def give(self, tag: Any, job: Job, attempt: int) -> None:
        self.task, self.started_at = (tag, job, attempt), time.time()
        self.conn.send(job)

    def result(self) -> JobResult | None:
        """The finished job's result if it has arrived (the worker is then free again)."""
        try:
            if not self.conn.poll():
                return None
            result = self.conn.recv()
        except (EOFError, OSError):
            return None
        self.task = None
        return result

    def stop(self) -> None:
        """End the process: politely when idle, at once when it is still computing (Ctrl-C, an error)."""
        if self.process.is_alive():
            if self.task is None:
                try:
                    self.conn.send(None)
                except OSError:
                    pass
                self.process.join(5)
            if self.process.is_alive():
                self.process.terminate()
                self.process.join(5)
            if self.process.is_alive():
                self.process.kill()
                self.process.join()
        self.conn.close()


def _worker_main(conn, threads: int) -> None:
    # Ctrl-C reaches the whole process group; the driver alone decides, and stops its workers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(threads)
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        try:
            conn.send(execute(job))
        except (BrokenPipeError, OSError):
            return


@dataclass
class StudyEvents:
    """Callbacks for a progress display."""

    on_start: Callable[[int], None] = lambda total: None
    on_result: Callable[[PlannedTrial, TrialOutcome], None] = lambda trial, outcome: None
    on_wait: Callable[[int], None] = lambda count: None  # trials another driver is running
    on_resume: Callable[[PlannedTrial, int], None] = lambda trial, step: None  # continued from a saved state
    on_state_refused: Callable[[PlannedTrial, str], None] = lambda trial, reason: None  # restarted: why


# Statuses after which a trial is not run again: in the first pass, and when survivors are continued.
FIRST_PASS_DONE = ("complete", "diverged", "stopped")
FORECAST_PASS_DONE = (*FIRST_PASS_DONE, "forecast-stopped")
MAX_REPLACEMENTS = 2  # per requested trial of a cell, under --policy replace
CONTINUATION_DONE = ("complete", "diverged")


class StudyRunner:
    def __init__(self, spec: StudySpec, store: Store, options: RunOptions, executor: Executor,
                 poll_seconds: float = 2.0):
        if options.save_model:
            raise ConfigError("--save-model applies to `steadytune train`; a study does not save encoders")
        self.spec, self.store, self.executor = spec, store, executor
        self.study_id = store.study_id(spec.study_name(), spec.model_dump(mode="json"))
        self.trials = expand(spec)
        self.states_dir = store.path.parent / f"{store.path.stem}-states"
        store.share_password_with_workers()
        if options.threads is None:
            threads = (executor.threads_per_worker() if executor.ray_address or executor.workers > 1
                       else torch.get_num_threads())
            options = options.model_copy(update={"threads": threads})
        self.options = options
        self.poll_seconds = poll_seconds
        self.owner = new_owner()
        self.full_trials_spent = 0.0
        self.recorded: Counter[str] = Counter()

    def check_threads(self) -> None:
        """Refuse to continue a study under another thread count: results differ in the low bits between them."""
        if self.options.device not in ("auto", "cpu") and not self.options.device.startswith("cpu"):
            return
        counts = self.store.thread_counts(self.study_id)
        others = {threads: n for threads, n in counts.items() if threads != self.options.threads}
        if others:
            ran = ", ".join(f"{n} with {threads}" for threads, n in sorted(others.items()))
            raise ConfigError(f"study {self.spec.study_name()}: its finished trials ran with other torch thread "
                              f"counts ({ran} thread(s)) than this run would use ({self.options.threads}); results "
                              f"differ in the low bits between thread counts, so one study keeps one. Pass "
                              f"--threads {max(others, key=others.get)} to continue it as it ran")

    def run(self, events: StudyEvents | None = None) -> dict[str, Any]:
        events = events or StudyEvents()
        self.check_threads()
        stop = self.spec.early_stopping()
        forecaster = self._forecaster(stop) if self.spec.forecasts() else None
        first_pass_done = FORECAST_PASS_DONE if forecaster else FIRST_PASS_DONE
        todo = [t for t in self.trials if self._status(t) not in first_pass_done]
        events.on_start(len(todo) + (0 if stop is None else len(self._groups()) * stop.keep))
        try:
            with Lease(self.store, self.owner):
                if self.spec.policy == "replace":
                    self._run_replacing(forecaster, events)
                else:
                    self._execute([(t, self._job(t, stop_at_fraction=stop.fraction if stop else None,
                                                 save_state=stop is not None)) for t in todo], first_pass_done, events)
                if self.spec.policy == "dodge+replace":
                    for trial in self.trials:
                        self._forecast_stop_if_flagged(trial, forecaster)
                if stop is not None:
                    self._continue_survivors(stop, events)
        except KeyboardInterrupt:
            raise Interrupted(self._interrupted()) from None
        finally:
            self.store.release_claims(self.owner)
        statuses = [self._status(t) for t in self.trials]
        return {"study": self.spec.study_name(), "trials": len(self.trials), "ran": sum(self.recorded.values()),
                "full_trials_spent": self.full_trials_spent,
                **{s: statuses.count(s) for s in ("complete", "stopped", "diverged", "failed", "forecast-stopped")}}

    def _interrupted(self) -> str:
        kept = ", ".join(f"{n} {status}" for status, n in self.recorded.items()) or "none"
        finished = sum(self._status(t) in FIRST_PASS_DONE for t in self.trials)
        return (f"interrupted: trials recorded by this run are kept ({kept}); {finished} of {len(self.trials)} trials "
                f"of study {self.spec.study_name()} are finished in {self.store.label}; queued and running trials were "
                f"cancelled. Run the same command again to resume")

    def _status(self, trial: PlannedTrial) -> str | None:
        row = self.store.latest_trial(trial.config.trial_key(), self.study_id)
        return row["status"] if row else None

    def _state_path(self, trial: PlannedTrial) -> Path:
        return self.states_dir / f"study{self.study_id}-{trial.config.trial_key()}.safetensors"

    def _job(self, trial: PlannedTrial, stop_at_fraction: float | None = None, save_state: bool = False,
             resume: bool = False) -> Job:
        autosave = self.options.checkpoint_every is not None
        if save_state or resume or autosave:
            self.states_dir.mkdir(parents=True, exist_ok=True)
        # With autosaves, a trial continues from the state a killed or preempted run left, if there is one when the
        # job starts (a missing file means a fresh start).
        return Job(trial.config.model_dump(mode="json"), self.options.model_dump(mode="json"),
                   store_path=str(self.store.path), store_location=self.store.worker_location,
                   stop_at_fraction=stop_at_fraction,
                   state_in=str(self._state_path(trial)) if resume or autosave else None,
                   state_out=str(self._state_path(trial)) if save_state else None,
                   autosave=str(self._state_path(trial)) if autosave else None, experiment=self.spec.study_name())

    def _execute(self, work: Iterable[tuple[PlannedTrial, Job]], done: tuple[str, ...], events: StudyEvents) -> None:
        """Run jobs, each claimed only when a worker is free for it; each result is written when it arrives.
        Trials another driver holds are waited for, and taken over if its claim expires. With --pack K, a job
        takes up to K claimed trials that differ only in their seeds."""
        queue = deque(work)
        while queue:
            deferred: list[tuple[PlannedTrial, Job]] = []

            def claim(trial: PlannedTrial, job: Job) -> bool:
                claimed = self.store.claim(trial.config.trial_key(), self.study_id, self.owner, done)
                if claimed == "busy":
                    deferred.append((trial, job))
                return claimed == "claimed"

            def next_job():
                while queue:
                    trial, job = queue.popleft()
                    if not claim(trial, job):
                        continue
                    mates = self._pack_mates(trial, job, queue, claim)
                    if not mates:
                        return self._tagged(trial, job)
                    members = [(trial, job), *mates]
                    return [self._tagged(t, j)[0] for t, j in members], replace(job, pack=tuple(j for _, j in mates))
                return None

            with closing(self.executor.run(next_job)) as results:
                for tag, result in results:
                    if isinstance(tag, list):  # a pack: one result per trial (one failure, if its worker died)
                        outcomes = result if isinstance(result, list) else [result] * len(tag)
                        for (trial, trial_id, start_step), outcome in zip(tag, outcomes):
                            self._record(trial, trial_id, start_step, outcome, events)
                    else:
                        self._record(*tag, result, events)
            if deferred:
                events.on_wait(len(deferred))
                time.sleep(self.poll_seconds)
                queue.extend(deferred)

    def _pack_mates(self, trial: PlannedTrial, job: Job, queue: deque, claim: Callable) -> list[tuple[PlannedTrial, Job]]:
        """Up to --pack - 1 more queued trials to train with this one: the same config but for the seeds, and the
        same kind of job (to the same cut, or continuing from saved states). Taken from the queue and claimed."""
        from ..packed.trial import pack_key

        def kind(j: Job) -> tuple:
            return j.stop_at_fraction, j.state_in is not None, j.state_out is not None

        if self.options.pack <= 1:
            return []
        key = pack_key(trial.config)
        fitting = [item for item in queue if pack_key(item[0].config) == key and kind(item[1]) == kind(job)]
        # Trials of one DO seed first (a column of the grid): their batches are the same at every step, so the pack
        # pads nothing; seeds of other DO orders pad each step to the longest of their batches.
        fitting.sort(key=lambda item: item[0].config.do_seed != trial.config.do_seed)
        mates: list[tuple[PlannedTrial, Job]] = []
        for item in fitting:
            if len(mates) == self.options.pack - 1:
                break
            queue.remove(item)
            if claim(*item):
                mates.append(item)
        return mates

    def _tagged(self, trial: PlannedTrial, job: Job) -> tuple[tuple, Job]:
        row = self.store.latest_trial(trial.config.trial_key(), self.study_id) if job.state_in else None
        # Continuing a stopped attempt updates its row; anything else is recorded as a new attempt.
        return (trial, row["id"] if row else None, row["steps_done"] if row else 0), job

    def _record(self, trial: PlannedTrial, trial_id: int | None, start_step: int, result: JobResult,
                events: StudyEvents) -> None:
        config = trial.config
        if trial_id is None:
            self.store.record_trial(config.model_dump(mode="json"), config.trial_key(), config.effective_dropout_seed,
                                    self.study_id, result.outcome, result.points, started_at=result.started_at)
        else:
            self.store.finish_trial(trial_id, result.outcome, result.points)
        self.recorded[result.outcome.status] += 1
        if result.resumed_at and start_step == 0:  # an early-stopping continuation resumes by design: not news
            events.on_resume(trial, result.resumed_at)
        if result.state_refused:
            events.on_state_refused(trial, result.state_refused)
        if result.outcome.status in CONTINUATION_DONE:  # finished: no state of it is needed any more
            self._state_path(trial).unlink(missing_ok=True)
        if result.outcome.total_steps:
            self.full_trials_spent += (result.outcome.steps_done - start_step) / result.outcome.total_steps
        events.on_result(trial, result.outcome)

    def _forecaster(self, stop: EarlyStop | None):
        from ..forecast.model import Forecaster, resolve

        if not self.store.holds_forecast_stops():
            raise ConfigError(f"{self.store.label} was created before forecast-stopped trials existed; run --policy "
                              f"{self.spec.policy} on a new store")
        forecaster = Forecaster.load(resolve(self.spec.forecaster))
        if stop is not None and abs(forecaster.fraction - stop.fraction) > 1e-9:
            raise ConfigError(f"--policy dodge+replace cuts once: --early-stop fraction={stop.fraction:g} must equal "
                              f"the fraction {forecaster.fraction:g} the forecaster {self.spec.forecaster} was fit at")
        return forecaster

    def _forecast_stop_if_flagged(self, trial: PlannedTrial, forecaster) -> bool:
        """A trial stopped at the forecaster's fraction and flagged by it becomes forecast-stopped (and its state is
        dropped). The decision reads only the stored curve, so a resumed study makes the same one."""
        row = self.store.latest_trial(trial.config.trial_key(), self.study_id)
        if row is None or row["status"] != "stopped":
            return False
        probability = self._failure_probability(row, forecaster)
        if probability < self.spec.forecast_threshold:
            return False
        self.store.forecast_stop(row["id"], f"forecast-stopped: P(failed) = {probability:.3f} at step "
                                            f"{row['steps_done']} of {row['total_steps']}")
        self._state_path(trial).unlink(missing_ok=True)
        return True

    def _run_replacing(self, forecaster, events: StudyEvents) -> None:
        """--policy replace: every trial to the forecaster's fraction (its state saved), then a decision read from
        its stored curve: flagged, it becomes forecast-stopped and the next unused WI seed of its cell (same task,
        recipe, DO and adapter seed) takes its place; otherwise it continues to the end. A cell gets at most
        MAX_REPLACEMENTS replacements per requested trial, so a forecaster that flags everything cannot run on."""
        def cell_of(trial: PlannedTrial) -> tuple:  # what a replacement keeps: all but the WI seed
            return trial.config.task, trial.group[1], trial.config.do_seed, trial.config.adapter_seed

        used: dict[tuple, set[int]] = {}
        for trial in self.trials:
            used.setdefault(cell_of(trial), set()).add(trial.config.wi_seed)
        budget = {cell: MAX_REPLACEMENTS * len(seeds) for cell, seeds in used.items()}
        batch = list(self.trials)
        while batch:
            first = [(t, self._job(t, stop_at_fraction=forecaster.fraction, save_state=True)) for t in batch
                     if self._status(t) not in FORECAST_PASS_DONE]
            self._execute(first, FORECAST_PASS_DONE, events)
            continuing, replacements = [], []
            for trial in batch:
                flagged = self._forecast_stop_if_flagged(trial, forecaster)
                if not flagged and self._status(trial) == "stopped":
                    continuing.append((trial, self._job(trial, resume=self._state_path(trial).exists())))
                if self._status(trial) == "forecast-stopped":
                    cell = cell_of(trial)
                    if budget[cell] > 0:
                        budget[cell] -= 1
                        seed = max(used[cell]) + 1
                        used[cell].add(seed)
                        replacements.append(planned_trial(self.spec, trial.config.task, trial.group[1], seed,
                                                          trial.config.do_seed, trial.config.adapter_seed))
            self._execute(continuing, CONTINUATION_DONE, events)
            self.trials += replacements
            batch = replacements

    def _failure_probability(self, row: dict, forecaster) -> float:
        from ..analysis.failures import num_classes
        from ..forecast.features import trial_features

        config = json.loads(row["config_json"])
        features = trial_features(self.store.curves([row["id"]]), row["steps_done"], row["metric"],
                                  row["baseline_metric"], num_classes(row["task"], config.get("label_names")))
        return float(forecaster.probability(pd.DataFrame([features]))[0])

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
            # A forecast-stopped trial is never continued (--policy dodge+replace): the top P come from the others.
            ranked = [i for i, row in enumerate(rows) if row is None or row["status"] != "forecast-stopped"]
            scores = [self.store.dev_score_at(rows[i]["id"], cut_step(rows[i]["total_steps"], stop.fraction))
                      if rows[i] is not None and rows[i]["total_steps"] else None for i in ranked]
            for index in (ranked[i] for i in survivors(scores, min(stop.keep, len(ranked)))):
                trial, row = members[index], rows[index]
                kept.add(trial)
                if row is not None and row["status"] == "stopped":
                    # From the saved state; if it was lost or is damaged, from scratch (deterministic: same result).
                    work.append((trial, self._job(trial, resume=self._state_path(trial).exists())))
        self._execute(work, CONTINUATION_DONE, events)
        for trial in self.trials:
            if trial not in kept or self._status(trial) != "stopped":
                self._state_path(trial).unlink(missing_ok=True)
