"""A job: one trial (or a pack of trials) for a worker to run, and how a worker runs it.

A job carries plain values (a config, options, paths), never a connection or a password, so it can travel to a
worker process or a Ray node. A worker continues a trial from its saved state when the state's bytes hash to what the
store recorded, and from the start otherwise (the same result: trials are deterministic). It never raises: an
error becomes a `failed` outcome, so a study goes on.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..analysis.early_stopping import cut_step
from ..config import RunOptions, TrialConfig
from ..errors import ConfigError, StoreError
from ..storage.store import Store
from ..training.layout import file_sha256, unrecorded
from ..training.records import CurvePoint, TrialOutcome, TrialStatus
from .claims import report_progress


@dataclass(frozen=True)
class Job:
    """One unit of work for a worker: run `config` to `stop_at` (None = the end), optionally from/to a saved state."""

    config: dict
    options: dict
    store_path: str | None = None  # resolves --init-from trial ids
    store_location: str | None = None  # the store (path or URL): where autosaves' hashes are recorded and looked up
    study_id: int | None = None  # whose claim the worker's progress is reported on (`study status`)
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
    by the time the trial is next resumed). A store that cannot be written now (its database restarting) leaves the
    state unrecorded, which a resume refuses and replaces by a start from scratch, with the same result: the trial
    itself goes on."""
    def record(path: Path, sha256: str) -> None:
        if job.store_location:
            try:
                with Store(job.store_location, create=False) as store:
                    store.record_files([(path, sha256)])
            except StoreError:
                pass
    return record


def with_saved_state(outcome: TrialOutcome, save: Callable[[Path], None], path: Path) -> TrialOutcome:
    """Save a stopped trial's state for its continuation; the outcome then carries the file's hash, which the store
    records with the trial's progress, in one transaction."""
    save(path)
    return replace(outcome, files=outcome.files + ((str(path), file_sha256(path)),))


@dataclass
class PreparedJob:
    """A job's trial, built and restored where its saved state can be used, with its cut and the points it
    carries."""

    trial: Any  # training.trial.Trial (imported by workers only: the driver needs no torch)
    stop_at: int | None  # the step of its early-stopping cut, or None: to the end
    points: list[CurvePoint]  # points a preempted run saved with its state, never recorded: they come first
    resumed_at: int  # the step it continues from (0: from the start)
    refused: str | None  # why its saved state was not used


def prepare(job: Job, options: RunOptions) -> PreparedJob:
    from ..training.trial import Trial

    config = TrialConfig(**job.config)
    store_path = Path(job.store_path) if job.store_path else None
    records = from_store(job, Store.cache_records)
    trial, refused = restored_or_fresh(lambda: Trial(config, options, store_path, records), job)
    stop_at = None if job.stop_at_fraction is None else cut_step(trial.total_steps, job.stop_at_fraction)
    if stop_at is not None:
        trial.eval_at.add(stop_at)  # the cut ranks on a dev score taken exactly there
    return PreparedJob(trial, stop_at, list(trial.restored_points), trial.step, refused)


class Progress:
    """A worker's report of where its trial stands, written onto its claim at each evaluation, for `study status`.
    Best effort: a store that cannot be written to now is not the trial's problem."""

    def __init__(self, job: Job):
        self.job, self.store = job, None
        self.key = TrialConfig(**job.config).trial_key()

    def __call__(self, points: list[CurvePoint], total_steps: int) -> None:
        if not self.job.store_location or not points:
            return
        try:
            if self.store is None:
                self.store = Store(self.job.store_location, create=False)
            report_progress(self.store, self.key, self.job.study_id, max(p.step for p in points), total_steps)
        except StoreError:
            pass

    def close(self) -> None:
        if self.store is not None:
            self.store.close()


def job_trackers(job: Job, options: RunOptions):
    from .trackers import trial_trackers

    return trial_trackers(options.track, job.experiment, job.config, TrialConfig(**job.config).trial_key())


def failed_result(err: Exception, started_at: float) -> JobResult:
    return JobResult(TrialOutcome.failed(f"{type(err).__name__}: {err}"), [], started_at)


def execute(job: Job) -> JobResult | list[JobResult]:
    """Run one job in this process (a pack job: one result per trial). Errors become a `failed` outcome, never an
    exception: a study goes on."""
    if job.pack:
        return execute_pack(job)
    started_at = time.time()
    options = RunOptions(**job.options)
    try:
        prepared = prepare(job, options)
        trial, points = prepared.trial, prepared.points
        if job.autosave and options.checkpoint_every:
            trial.autosave_to(Path(job.autosave), options.checkpoint_every, record_autosave(job))
        trackers, progress = job_trackers(job, options), Progress(job)
        trackers.log(points)

        def reached(new: list[CurvePoint]) -> None:
            points.extend(new)
            trackers.log(new)
            progress(new, trial.total_steps)

        try:
            outcome, pending = trial.run(reached, stop_at=prepared.stop_at)
        finally:
            progress.close()
        trackers.log(pending)
        trackers.finish(outcome)
        if job.state_out and outcome.status == TrialStatus.STOPPED:
            outcome = with_saved_state(outcome, lambda path: trial.save_state(path), Path(job.state_out))
        return JobResult(outcome, points + pending, started_at, prepared.resumed_at, prepared.refused)
    except Exception as err:  # noqa: BLE001 - any failure of one trial is recorded, not raised
        return failed_result(err, started_at)


def execute_pack(job: Job) -> list[JobResult]:
    """Train a pack job's trials as one pack (packed/), each from its saved state where it has one, to its cut or
    its end; a stopped one's state is saved for its continuation. It trains in passes of --pack-pass seeds, one after
    another (on a CPU by default one seed at a time, see CPU_PASS_SEEDS). A pack that cannot be built (the model is not
    a BERT, or the states stand at different steps) runs its jobs one after another instead."""
    from ..packed.model import NotPackable
    from ..packed.trial import PackedTrial, pack_refusal, seeds_per_pass
    from ..training.trial import pick_device

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
        prepared = [prepare(member_job, options) for member_job in jobs]
        pack = PackedTrial([member.trial for member in prepared], options)
    except NotPackable:
        return [execute(member_job) for member_job in jobs]
    except Exception as err:  # noqa: BLE001 - as execute: recorded, not raised
        return [failed_result(err, started_at) for _ in jobs]
    points = [member.points for member in prepared]
    trackers = [job_trackers(member_job, options) for member_job in jobs]
    progress = [Progress(member_job) for member_job in jobs]
    for tracker, earlier in zip(trackers, points):
        tracker.log(earlier)

    def reached(k: int, new: list[CurvePoint]) -> None:
        points[k].extend(new)
        trackers[k].log(new)
        progress[k](new, prepared[k].trial.total_steps)

    saved: dict[int, str] = {}

    def stopped(k: int) -> None:  # at its cut: its state, for the continuation
        if jobs[k].state_out:
            pack.save_member_state(k, Path(jobs[k].state_out))
            saved[k] = file_sha256(jobs[k].state_out)
    try:
        results = pack.run(reached, [member.stop_at for member in prepared], on_stop=stopped)
    except Exception as err:  # noqa: BLE001
        return [failed_result(err, started_at) for _ in jobs]
    finally:
        for report in progress:
            report.close()
    out = []
    for k, (outcome, pending) in enumerate(results):
        if k in saved:
            outcome = replace(outcome, files=outcome.files + ((jobs[k].state_out, saved[k]),))
        trackers[k].log(pending)
        trackers[k].finish(outcome)
        out.append(JobResult(outcome, points[k] + pending, started_at, prepared[k].resumed_at, prepared[k].refused))
    return out
