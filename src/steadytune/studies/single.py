"""One trial claimed, run and recorded: the `train` command (a study's trials go through studies.runner).

The trial is claimed in the store before it trains, as a study's are (claims.py), so a config already finished is
reused and one that another process runs is refused.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from ..config import RunOptions, TrialConfig
from ..errors import ConfigError, Interrupted, StoreError, TrialError
from ..storage.store import Store
from ..training.records import RESULT_STATUSES, CurvePoint, TrialOutcome, TrialStatus
from ..training.trial import ProgressCallback, Trial
from .claims import Claim, Claims
from .trackers import trial_trackers


def run_stored(config: TrialConfig, options: RunOptions, store: Store, study_id: int | None = None,
               progress: ProgressCallback | None = None,
               on_prepared: Callable[[Trial], None] | None = None) -> tuple[int, TrialOutcome, bool]:
    """Prepare, claim, run and record one trial; returns (trial id, outcome, reused).

    Bad input raises before anything is stored. A trial whose config already has a result in the store is
    not run again (reused=True) unless it is asked to save a model or snapshots; one that another process
    is running is refused. An error or Ctrl-C during training records the trial as `failed` with its curve
    so far and raises TrialError or Interrupted, whose message says what was kept. `on_prepared` sees the
    trial once its inputs are checked (to show notes such as a --max-train beyond the data).
    """
    if options.checkpoint_every is not None:
        raise ConfigError("--checkpoint-every applies to `study run`, whose trials continue from their saved state; "
                          "a single `train` is simply run again")
    trial = Trial(config, options, store.path, store.cache_records())
    if on_prepared is not None:
        on_prepared(trial)
    key, claims = config.trial_key(), Claims(store, study_id)
    wants_files = options.save_model or options.save_checkpoints > 0 or options.keep_weights
    claimed = claims.take(key, () if wants_files else RESULT_STATUSES)
    if claimed is Claim.DONE:
        row = store.latest_trial(key, study_id)
        return row["id"], store.outcome(row["id"]), True
    if claimed is Claim.BUSY:
        raise StoreError(f"{store.label}: this trial (key {key}) is being run by another process "
                         f"({claims.holder(key)}); its result will appear in the store")
    with claims:
        trial_id = store.start_trial(config.model_dump(mode="json"), key, config.effective_dropout_seed, study_id)
        trackers = None
        try:  # from the moment the trial has a row, whatever stops it (Ctrl-C included) is recorded
            trackers = trial_trackers(options.track, "steadytune", config.model_dump(mode="json"), key)

            def reached(points: list[CurvePoint]) -> None:
                store.add_points(trial_id, points)
                trackers.log(points)

            outcome, pending = trial.run(reached, progress)
            if options.save_model and outcome.status == TrialStatus.COMPLETE:
                trial.save_encoder(store.layout.model(trial_id))
        except BaseException as err:
            if trackers is not None:
                trackers.finish(trial.failed_outcome(err))
            raise _recorded_failure(store, trial, trial_id, err) from None
        outcome = replace(outcome, driver=claims.owner)
        store.finish_trial(trial_id, outcome, pending)
        trackers.log(pending)
        trackers.finish(outcome)
    return trial_id, outcome, False


def _recorded_failure(store: Store, trial: Trial, trial_id: int, err: BaseException) -> BaseException:
    """Record the trial as failed (if the store can still be written) and say what was kept."""
    interrupted = isinstance(err, KeyboardInterrupt)
    reason = "interrupted (Ctrl-C)" if interrupted else f"{type(err).__name__}: {err}"
    where = f"at step {trial.step}/{trial.total_steps}"
    try:
        store.finish_trial(trial_id, trial.failed_outcome(reason))
        kept = (f"trial {trial_id} is kept in {store.label} as 'failed' with its curve to the last evaluation; "
                f"run the same command again to train it anew")
    except StoreError:
        kept = (f"trial {trial_id} stays 'running' in {store.label} with its curve to the last evaluation (the store "
                f"could not be written); it is not counted as a result")
    if interrupted:
        return Interrupted(f"interrupted {where}: {kept}")
    if isinstance(err, StoreError):
        return StoreError(f"{err} (training stopped {where}); {kept}")
    return TrialError(f"trial failed {where} ({reason}); {kept}")
