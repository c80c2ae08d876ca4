"""A study's driver: it claims each trial just before a worker is free for it, and records each result as it arrives.

Trials run in worker processes or as Ray tasks (executors.py); the driver alone writes the store, so a trial's rows
arrive in one transaction with its final status and a killed study leaves no half results. Re-running a study skips
trials already finished in the store and re-runs only missing or interrupted ones, which, being deterministic, give
identical results. Several drivers may run one study: claims (claims.py) give each trial to exactly one of them,
and a killed driver's trials are taken over. Ctrl-C stops the workers at once, keeps every trial already recorded,
and says how to resume. What is trained, and how far, is the policy's business (policies.py).

Nothing here imports torch: a driver plans, claims and records; its workers train.
"""
from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from contextlib import closing
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..config import RunOptions
from ..errors import ConfigError, Interrupted
from ..storage.store import Store
from ..training.records import RESULT_STATUSES, TrialOutcome, TrialStatus
from .claims import Claim, Claims
from .executors import Executor
from .jobs import Job, JobResult
from .policies import FIRST_PASS_DONE, FORECAST_PASS_DONE, policy_for
from .spec import PlannedTrial, StudySpec, expand


@dataclass
class StudyEvents:
    """Callbacks for a progress display."""

    on_start: Callable[[int], None] = lambda total: None
    on_result: Callable[[PlannedTrial, TrialOutcome], None] = lambda trial, outcome: None
    on_wait: Callable[[int], None] = lambda count: None  # trials another driver is running
    on_resume: Callable[[PlannedTrial, int], None] = lambda trial, step: None  # continued from a saved state
    on_state_refused: Callable[[PlannedTrial, str], None] = lambda trial, reason: None  # restarted: why
    # The whole study's trials at their end or cut, whichever driver ran them, and how many it has: after each result.
    on_progress: Callable[[int, int], None] = lambda done, total: None
    on_note: Callable[[str], None] = lambda line: None  # a policy's one-line news (the online forecaster's checks)


@dataclass(frozen=True)
class StudySummary:
    """What a run of a study did, and where the whole study stands in the store afterwards."""

    study: str
    trials: int  # of the whole study, replacements included
    ran: int  # trials this run recorded
    full_trials_spent: float  # this run's compute, in units of one trial trained from start to end
    statuses: dict[TrialStatus, int] = field(default_factory=dict)  # the study's trials by status
    cancelled: bool = False  # the study was cancelled (`study cancel`): trials not started were left

    def count(self, status: TrialStatus) -> int:
        return self.statuses.get(status, 0)


class StudyRunner:
    def __init__(self, spec: StudySpec, store: Store, options: RunOptions, executor: Executor,
                 poll_seconds: float = 2.0):
        if options.save_model:
            raise ConfigError("--save-model applies to `steadytune train`; a study does not save encoders")
        self.spec, self.store, self.executor = spec, store, executor
        self.study_id = store.study_id(spec.study_name(), spec.model_dump(mode="json"))
        self.trials = expand(spec)
        self.policy = policy_for(spec, store)
        store.share_password_with_workers()
        if options.threads is None:
            if executor.ray_address or executor.workers > 1:
                threads = executor.threads_per_worker()
            else:  # trials run in this process: torch's own default (imported here only, as they need it anyway)
                import torch

                threads = torch.get_num_threads()
            options = options.model_copy(update={"threads": threads})
        self.options = options
        self.poll_seconds = poll_seconds
        self.claims = Claims(store, self.study_id)
        self.cancelled = False
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

    def run(self, events: StudyEvents | None = None) -> StudySummary:
        events = events or StudyEvents()
        self.check_threads()
        events.on_start(self.policy.planned(self))
        events.on_progress(*self.progress())
        try:
            with self.claims:
                self.policy.run(self, events)
        except KeyboardInterrupt:
            raise Interrupted(self._interrupted()) from None
        statuses = Counter(self.status(t) for t in self.trials)
        return StudySummary(self.spec.study_name(), len(self.trials), sum(self.recorded.values()),
                            self.full_trials_spent, {s: statuses[s] for s in TrialStatus if s in statuses},
                            self.cancelled)

    def _interrupted(self) -> str:
        kept = ", ".join(f"{n} {status}" for status, n in self.recorded.items()) or "none"
        finished = sum(self.status(t) in FIRST_PASS_DONE for t in self.trials)
        return (f"interrupted: trials recorded by this run are kept ({kept}); {finished} of {len(self.trials)} trials "
                f"of study {self.spec.study_name()} are finished in {self.store.label}; queued and running trials were "
                f"cancelled. Run the same command again to resume")

    # --- what the policies use ---------------------------------------------------------------------
    def status(self, trial: PlannedTrial) -> TrialStatus | None:
        row = self.latest(trial)
        return TrialStatus(row["status"]) if row else None

    def latest(self, trial: PlannedTrial) -> dict | None:
        """The trial's latest attempt in the store."""
        return self.store.latest_trial(trial.config.trial_key(), self.study_id)

    def state_path(self, trial: PlannedTrial) -> Path:
        return self.store.layout.state(self.study_id, trial.config.trial_key())

    def drop_state(self, trial: PlannedTrial) -> None:
        self.state_path(trial).unlink(missing_ok=True)

    def job(self, trial: PlannedTrial, stop_at_fraction: float | None = None, save_state: bool = False,
            resume: bool = False) -> Job:
        """A trial's job: to `stop_at_fraction` (None: the end), saving its state there, or continuing from it."""
        autosave = self.options.checkpoint_every is not None
        if save_state or resume or autosave:
            self.store.layout.states.mkdir(parents=True, exist_ok=True)
        state = str(self.state_path(trial))
        # With autosaves, a trial continues from the state a killed or preempted run left, if there is one when the
        # job starts (a missing file means a fresh start).
        return Job(trial.config.model_dump(mode="json"), self.options.model_dump(mode="json"),
                   store_path=str(self.store.path), store_location=self.store.worker_location, study_id=self.study_id,
                   stop_at_fraction=stop_at_fraction, state_in=state if resume or autosave else None,
                   state_out=state if save_state else None, autosave=state if autosave else None,
                   experiment=self.spec.study_name())

    def execute(self, work: Iterable[tuple[PlannedTrial, Job]], done: tuple[TrialStatus, ...],
                events: StudyEvents) -> None:
        """Run jobs, each claimed only when a worker is free for it; each result is written when it arrives.
        Trials another driver holds are waited for, and taken over if its claim expires. With --pack K, a job
        takes up to K claimed trials that differ only in their seeds."""
        queue = deque(work)
        while queue:
            deferred: list[tuple[PlannedTrial, Job]] = []

            def claim(trial: PlannedTrial, job: Job) -> bool:
                answer = self.claims.take(trial.config.trial_key(), done)
                if answer is Claim.BUSY:
                    deferred.append((trial, job))
                if answer is Claim.CANCELLED:  # `study cancel`: the running trials finish, no other starts
                    self.cancelled = True
                    queue.clear()
                    deferred.clear()
                return answer is Claim.CLAIMED

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

    # --- inside execute ---------------------------------------------------------------------------
    def _pack_mates(self, trial: PlannedTrial, job: Job, queue: deque,
                    claim: Callable) -> list[tuple[PlannedTrial, Job]]:
        """Up to --pack - 1 more queued trials to train with this one: the same config but for the seeds, and the
        same kind of job (to the same cut, or continuing from saved states). Taken from the queue and claimed."""
        def kind(j: Job) -> tuple:
            return j.stop_at_fraction, j.state_in is not None, j.state_out is not None

        if self.options.pack <= 1:
            return []
        from ..packed.trial import pack_key

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
        row = self.latest(trial) if job.state_in else None
        # Continuing a stopped attempt updates its row; anything else is recorded as a new attempt.
        return (trial, row["id"] if row else None, row["steps_done"] if row else 0), job

    def _record(self, trial: PlannedTrial, trial_id: int | None, start_step: int, result: JobResult,
                events: StudyEvents) -> None:
        config = trial.config
        result = replace(result, outcome=replace(result.outcome, driver=self.claims.owner))
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
        if result.outcome.status in RESULT_STATUSES:  # finished: no state of it is needed any more
            self.drop_state(trial)
        if result.outcome.total_steps:
            self.full_trials_spent += (result.outcome.steps_done - start_step) / result.outcome.total_steps
        events.on_result(trial, result.outcome)
        events.on_progress(*self.progress())

    def progress(self) -> tuple[int, int]:
        """(trials of the study at their end or at a cut, trials of the study), read from the store: what every
        driver of the study has done, not this one alone."""
        latest = self.store.latest_statuses(self.study_id)
        return sum(latest.get(t.config.trial_key()) in FORECAST_PASS_DONE for t in self.trials), len(self.trials)
