"""Failed runs (Mosbach et al. 2021) and why they failed.

A run fails when its final dev primary metric is at or below the majority-class (or mean-predictor)
baseline; diverged runs fail by definition. Mosbach et al. separate *optimization* failures, whose
training loss never went down, from *generalization* failures, which reach a training loss as low as
the successful runs but a different dev score. Here a failed run is an optimization failure when its
final training loss (mean over the last 10% of its steps) is still at least `tolerance` (default 0.8)
times a reference loss: ln(number of classes), the loss of a uniform prediction, when the task's classes
are known, else the run's first logged training loss (regression tasks, unknown custom tasks). Diverged
runs are optimization failures; failed runs without a training curve are 'unknown'.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..data.tasks import get_task
from ..errors import DataError
from ..training.records import TrialStatus
from .results import Results

# Scores are floats computed from counts; a run exactly at the baseline must not escape by rounding.
_BASELINE_SLACK = 1e-9


def failed(frame: pd.DataFrame, score: str = "final") -> pd.Series:
    """True for runs at or below the majority baseline, and for diverged runs."""
    return (frame[score] <= frame["baseline_metric"] + _BASELINE_SLACK) | (frame["status"] == TrialStatus.DIVERGED)


def failure_rates(results: Results, score: str = "final") -> pd.DataFrame:
    """Runs, failed runs and the failure rate per task and arm."""
    frame = results.trials.assign(failed=failed(results.trials, score))
    table = frame.groupby(["task", "arm"]).agg(runs=("failed", "size"), failed=("failed", "sum"),
                                               diverged=("status", lambda s: int((s == TrialStatus.DIVERGED).sum())))
    table["rate"] = table["failed"] / table["runs"]
    return table.reset_index()


def training_losses(results: Results) -> pd.DataFrame:
    """Per trial id: first logged training loss and final training loss (mean over the last 10% of its steps)."""
    loss = results.curves[(results.curves["split"] == "train") & (results.curves["metric"] == "loss")]
    loss = loss.sort_values(["trial_id", "step"])
    last_step = loss.groupby("trial_id")["step"].transform("max")
    tail = loss[loss["step"] > last_step - np.maximum(1, np.ceil(0.1 * last_step))]
    return pd.DataFrame({"initial_loss": loss.groupby("trial_id")["value"].first(),
                         "final_loss": tail.groupby("trial_id")["value"].mean()})


def num_classes(task: str, label_names: object) -> int | None:
    """Classes of a registered GLUE task, or of a custom task's comma-separated label names; None for regression
    and tagging (whose stuck loss is not ln(tags): most words are O, and a CRF's loss is per sentence)."""
    if task == "ner":
        return None
    if isinstance(label_names, str) and label_names:
        return len(label_names.split(","))
    try:
        spec = get_task(task)
    except DataError:
        return None
    return None if spec.is_regression else spec.num_labels


def failure_kinds(results: Results, score: str = "final", tolerance: float = 0.8) -> pd.DataFrame:
    """Per result trial: dev score, baseline, training losses, reference loss and kind
    ('ok', 'optimization', 'generalization', or 'unknown' when a failed run has no training curve)."""
    frame = results.trials.join(training_losses(results), on="id")
    labels = frame["cfg.label_names"] if "cfg.label_names" in frame else pd.Series(None, index=frame.index)
    classes = [num_classes(t, l) for t, l in zip(frame["task"], labels)]
    reference = pd.Series([math.log(k) if k else np.nan for k in classes], index=frame.index).fillna(frame["initial_loss"])
    is_failed = failed(frame, score)
    diverged = frame["status"] == TrialStatus.DIVERGED
    stuck = diverged | (frame["final_loss"] >= tolerance * reference)
    kind = np.select([~is_failed, stuck, frame["final_loss"].isna()], ["ok", "optimization", "unknown"], "generalization")
    return pd.DataFrame({"id": frame["id"], "task": frame["task"], "arm": frame["arm"], "status": frame["status"],
                         "dev": frame[score], "baseline": frame["baseline_metric"], "metric": frame["metric"],
                         "initial_loss": frame["initial_loss"], "final_loss": frame["final_loss"],
                         "reference_loss": reference, "kind": kind})


def failure_kind_counts(kinds: pd.DataFrame) -> pd.DataFrame:
    """Counts of each kind per task and arm, with the median final training loss of ok and failed runs."""
    counts = kinds.pivot_table(index=["task", "arm"], columns="kind", values="id", aggfunc="count", fill_value=0)
    shown = ["ok", "optimization", "generalization"] + (["unknown"] if "unknown" in counts else [])
    counts = counts.reindex(columns=shown, fill_value=0)
    losses = kinds.assign(group=np.where(kinds["kind"] == "ok", "median train loss (ok)", "median train loss (failed)"))
    medians = losses.pivot_table(index=["task", "arm"], columns="group", values="final_loss", aggfunc="median")
    return counts.join(medians).reset_index()
