"""What a trial produces: its curve points, per-example predictions and outcome, and the statuses it ends in.

Training writes them and the store records them; they live here, below both, so that training needs no store.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TERMINAL_STATUSES = ("complete", "diverged", "stopped", "failed", "forecast-stopped")


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

    status: str
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
