"""Convergence speed: the step at which a run's training loss, smoothed, first reaches a threshold.

The blog on Zhang et al. in ../shared/seeds compared optimizers and re-initialization by how many steps
they take to reach a given training loss. A single step's loss is one batch's, and batches differ in
difficulty, so the loss is smoothed by a trailing mean over `window` steps (one epoch is a natural
choice: every example counted once) before it is compared with the threshold.
"""
from __future__ import annotations

import pandas as pd


def smoothed_training_loss(curves: pd.DataFrame, window: int) -> pd.DataFrame:
    """Per trial and step, the mean training loss of the last `window` steps (rows before a full window dropped)."""
    if window < 1:
        raise ValueError(f"window must be at least 1 step, got {window}")
    loss = curves[(curves["split"] == "train") & (curves["metric"] == "loss")].sort_values(["trial_id", "step"])
    smoothed = loss.groupby("trial_id")["value"].transform(lambda v: v.rolling(window, min_periods=window).mean())
    return loss.assign(smoothed=smoothed).dropna(subset=["smoothed"])[["trial_id", "step", "smoothed"]]


def final_smoothed_loss(curves: pd.DataFrame, window: int) -> pd.Series:
    """Per trial id: the smoothed training loss at its last step."""
    return smoothed_training_loss(curves, window).groupby("trial_id")["smoothed"].last()


def steps_to_loss(curves: pd.DataFrame, threshold: float, window: int) -> pd.Series:
    """Per trial id: the first step whose smoothed training loss is at or below `threshold`; NaN if none is."""
    smoothed = smoothed_training_loss(curves, window)
    reached = smoothed[smoothed["smoothed"] <= threshold].groupby("trial_id")["step"].min()
    return reached.reindex(smoothed["trial_id"].unique()).astype(float).rename("steps")

