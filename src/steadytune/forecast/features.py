"""What a trial has logged up to step s, as a fixed row of numbers a failure forecaster reads.

One function computes them from a trial's curve points up to s, whether the points come from the store
afterwards or from the running trial (a study's `replace` policy), so the two agree by construction.
The signals are Mosbach et al.'s: a failed run's training loss stays near ln(classes), the gradients of
its lower layers vanish early, and its predictions collapse onto one class; plus Dodge et al.'s dev score
at s where an evaluation has happened by then.

- loss_ratio: mean training loss over the last fifth of the logged steps up to s, over the reference
  loss (ln(classes), or the run's first loss where classes are unknown);
- loss_drop: first training loss minus that recent mean, over the reference;
- lower_grad_log_ratio: log10 of the lower third of the layers' gradient norm (their mean), latest over
  first logged (vanishing: strongly negative);
- grad_total_log: log10 of the latest total gradient norm before clipping;
- pooler_saturation, top_share: latest share of saturated pooler units, and of the batch's most
  predicted class;
- dev_margin, has_dev: the latest dev primary score at or before s minus the majority baseline (0 without
  an evaluation by then), and whether there was one.
A missing signal (diagnostics off) reads as the value of a run that shows nothing: ratio 1, log ratio 0.
"""
from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd

FEATURES = ("loss_ratio", "loss_drop", "lower_grad_log_ratio", "grad_total_log", "pooler_saturation", "top_share",
            "dev_margin", "has_dev")
_LAYER = re.compile(r"grad\.layer_(\d+)")
_TINY = 1e-12


def _latest(frame: pd.DataFrame, split: str, metric: str) -> float | None:
    rows = frame[(frame["split"] == split) & (frame["metric"] == metric)]
    return None if rows.empty else float(rows.sort_values("step")["value"].iloc[-1])


def trial_features(points: pd.DataFrame, step: int, metric: str, baseline: float,
                   classes: int | None) -> dict[str, float]:
    """Features of one trial from its curve points (columns step, split, metric, value) at or before `step`."""
    seen = points[points["step"] <= step]
    loss = seen[(seen["split"] == "train") & (seen["metric"] == "loss")].sort_values("step")["value"].to_numpy(float)
    loss = loss[np.isfinite(loss)]
    features = dict.fromkeys(FEATURES, 0.0)
    features["loss_ratio"] = 1.0
    if loss.size:
        reference = math.log(classes) if classes and classes > 1 else max(float(loss[0]), _TINY)
        recent = float(loss[-max(1, loss.size // 5):].mean())
        features["loss_ratio"] = recent / reference
        features["loss_drop"] = (float(loss[0]) - recent) / reference
    diag = seen[seen["split"] == "diag"]
    layers = sorted({int(m.group(1)) for m in map(_LAYER.fullmatch, diag["metric"].unique()) if m})
    if layers:
        lower = [f"grad.layer_{i}" for i in layers[:max(1, len(layers) // 3)]]
        by_step = diag[diag["metric"].isin(lower)].groupby("step")["value"].mean().sort_index()
        if len(by_step) >= 1:
            features["lower_grad_log_ratio"] = math.log10(max(by_step.iloc[-1], _TINY) / max(by_step.iloc[0], _TINY))
    total = _latest(diag, "diag", "grad.total")
    if total is not None:
        features["grad_total_log"] = math.log10(max(total, _TINY))
    for name, source in (("pooler_saturation", "pooler_saturation"), ("top_share", "pred_top_share")):
        value = _latest(diag, "diag", source)
        if value is not None and math.isfinite(value):
            features[name] = value
    dev = _latest(seen, "dev", metric)
    if dev is not None and math.isfinite(dev):
        features["dev_margin"], features["has_dev"] = dev - baseline, 1.0
    return features


def feature_table(trials: pd.DataFrame, curves: pd.DataFrame, fraction: float) -> pd.DataFrame:
    """One row per trial: id, task, total_steps, the step s where a study cuts at `fraction` (early_stopping.cut_step,
    where --policy replace decides), and its features there."""
    from ..analysis.early_stopping import cut_step
    from ..analysis.failures import num_classes

    labels = trials["cfg.label_names"] if "cfg.label_names" in trials else pd.Series(None, index=trials.index)
    by_trial = dict(tuple(curves.groupby("trial_id")))
    empty = curves.iloc[:0]
    rows = []
    for row, label_names in zip(trials.itertuples(), labels):
        step = cut_step(int(row.total_steps), fraction)
        rows.append({"id": row.id, "task": row.task, "total_steps": row.total_steps, "step": step,
                     **trial_features(by_trial.get(row.id, empty), step, row.metric, row.baseline_metric,
                                      num_classes(row.task, label_names))})
    return pd.DataFrame(rows, columns=["id", "task", "total_steps", "step", *FEATURES])
