"""What a trial produces: its curve points, per-example predictions and outcome, and the statuses it ends in.

Training writes them and the store records them; they live here, below both, so that training needs no store.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np


class TrialStatus(StrEnum):
    """Where a trial stands in the store. Members equal their strings, which is how the store holds them."""

    RUNNING = "running"  # claimed and training, or interrupted before it could record an end
    COMPLETE = "complete"
    DIVERGED = "diverged"  # a loss or gradient norm that is not finite: a result (a failed run), not an error
    STOPPED = "stopped"  # paused at an early-stopping cut, continuable from its saved state
    FAILED = "failed"  # ended by an error; not a result
    FORECAST_STOPPED = "forecast-stopped"  # paused at the cut and flagged by the forecaster: never continued


TERMINAL_STATUSES = tuple(status for status in TrialStatus if status is not TrialStatus.RUNNING)
# Trials whose final dev score is a result of the grid (a diverged run counts as a failed run).
RESULT_STATUSES = (TrialStatus.COMPLETE, TrialStatus.DIVERGED)


@dataclass(frozen=True)
class CurvePoint:
    step: int
    epoch: float
    split: str  # "train", "dev", "test", or "diag" (training/diagnostics.py)
    metric: str
    value: float


@dataclass(frozen=True, eq=False)
class Predictions:
    """One evaluation's predictions (or the gold labels) of every example of a split, in example order."""

    split: str               # dev or test
    point: str               # final, best, or gold
    step: int | None
    values: np.ndarray       # class ids (integers) or regression values


@dataclass(frozen=True)
class TrialOutcome:
    """What a finished trial reports; the store adds ids and timestamps."""

    status: TrialStatus
    steps_done: int
    total_steps: int
    metric: str
    final_metrics: dict[str, float]
    best_metrics: dict[str, float]
    best_step: int | None
    baseline_metric: float
    wall_seconds: float
    error: str | None = None
    threads: int | None = None     # torch CPU threads: results differ in the low bits between thread counts
    device: str | None = None
    data_hash: str | None = None   # identity of the trial's data (inputs.TrialInputs.data_hash)
    predictions: tuple[Predictions, ...] = ()  # per-example, for instability analyses
    files: tuple[tuple[str, str], ...] = ()  # (path, sha256) of the files beside the store the trial wrote
    cache_entries: tuple[tuple[str, str], ...] = ()  # (name, checksum) of the tokenization cache entries it used
    host: str | None = None        # where it trained
    driver: str | None = None      # the driver that ran it (host:pid:id), which claimed it
    slurm_job: str | None = None   # its SLURM job, array job_task for an array

    @classmethod
    def failed(cls, error: str, metric: str = "", steps_done: int = 0, total_steps: int = 0,
               baseline_metric: float = float("nan"), wall_seconds: float = 0.0, **provenance) -> TrialOutcome:
        """A trial ended by an error at `steps_done`: no scores (its curve so far is kept by the store)."""
        return cls(status=TrialStatus.FAILED, steps_done=steps_done, total_steps=total_steps, metric=metric,
                   final_metrics={}, best_metrics={}, best_step=None, baseline_metric=baseline_metric,
                   wall_seconds=wall_seconds, error=error, **provenance)
