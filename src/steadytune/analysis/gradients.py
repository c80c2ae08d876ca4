"""Why runs failed, from the training diagnostics (Mosbach et al. 2021, their Fig. 4).

Failed runs of Mosbach et al. show *vanishing gradients*: early in training the gradient norms of the
lower layers collapse by orders of magnitude and the loss stops moving. Here the lower layers are the
embeddings and the bottom third of the transformer layers; a run is flagged when their combined
gradient norm, smoothed over 3 logged steps, falls within the first `early` share of training to
1/`factor` (default 1/100) of its value at the first logged step or less. Class collapse is a batch
predicted as one class (top-class share >= 0.95) over the last 3 logged steps after warmup; a trial
with fewer logged steps after warmup is not judged (the first batches of any run are untrained). In
tagging (task ner) a healthy run already tags ~95% of words O, so collapse there is (almost) every word
of the batch given one tag: share >= 0.995.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .failures import failure_kinds
from .results import Results

COLLAPSE_SHARE = 0.95
TAGGING_COLLAPSE_SHARE = 0.995
END_POINTS = 3  # logged steps after warmup that the end-of-training signals average over (and need)


def gradient_norms(curves: pd.DataFrame) -> pd.DataFrame:
    """Per-part gradient norms before clipping: trial_id, step, part, value (parts bottom to top)."""
    grads = curves[(curves["split"] == "diag") & curves["metric"].str.startswith("grad.")
                   & ~curves["metric"].str.startswith("grad.total")]
    return grads.assign(part=grads["metric"].str.removeprefix("grad."))[["trial_id", "step", "part", "value"]]


def part_order(parts) -> list[str]:
    """embeddings, layer_1 .. layer_N, pooler, head: the order of depth."""
    layers = sorted((p for p in set(parts) if p.startswith("layer_")), key=lambda p: int(p.split("_")[1]))
    return [p for p in ("embeddings",) if p in set(parts)] + layers + [p for p in ("pooler", "head") if p in set(parts)]


def lower_parts(parts) -> list[str]:
    """The embeddings and the bottom third of the transformer layers (at least one)."""
    layers = [p for p in part_order(parts) if p.startswith("layer_")]
    return ["embeddings"] + layers[:max(1, len(layers) // 3)]


def vanishing_gradients(results: Results, factor: float = 100.0, early: float = 0.3) -> pd.DataFrame:
    """Per result trial that has diagnostics: lower-layer gradient norm at the start, its smallest smoothed value
    in the first `early` share of training, the ratio of the two, and whether it vanished (ratio >= factor)."""
    grads = gradient_norms(results.curves)
    total_steps = results.trials.set_index("id")["total_steps"]
    rows = []
    for trial_id, frame in grads.groupby("trial_id"):
        lower = frame[frame["part"].isin(lower_parts(frame["part"]))]
        combined = lower.groupby("step")["value"].apply(lambda v: float(np.sqrt(np.sum(np.square(v))))).sort_index()
        smoothed = combined.rolling(3, min_periods=1, center=True).median()
        window = smoothed[smoothed.index <= max(early * total_steps.get(trial_id, combined.index.max()),
                                                combined.index.min())]
        ratio = combined.iloc[0] / max(window.min(), 1e-30)
        rows.append({"id": trial_id, "lower_norm_start": combined.iloc[0], "lower_norm_min_early": window.min(),
                     "collapse_ratio": ratio, "vanishing": bool(ratio >= factor)})
    return pd.DataFrame(rows, columns=["id", "lower_norm_start", "lower_norm_min_early", "collapse_ratio", "vanishing"])


def diagnosis(results: Results, factor: float = 100.0, early: float = 0.3) -> pd.DataFrame:
    """One row per result trial: failure kind, vanishing gradients, class collapse and pooler saturation at the end."""
    kinds = failure_kinds(results)
    last = end_of_training(results)
    table = kinds.merge(vanishing_gradients(results, factor, early), on="id", how="left")
    trials = results.trials.set_index("id")
    table["wi_seed"] = table["id"].map(trials["wi_seed"])
    table["do_seed"] = table["id"].map(trials["do_seed"])
    for column, metric in (("top_class_share_end", "pred_top_share"), ("pooler_saturation_end", "pooler_saturation")):
        table[column] = table["id"].map(last[metric]) if metric in last else np.nan
    tagging = table["id"].map(trials["task"]) == "ner"
    table["class_collapse"] = table["top_class_share_end"] >= np.where(tagging, TAGGING_COLLAPSE_SHARE, COLLAPSE_SHARE)
    return table


def warmup_steps(trials: pd.DataFrame) -> pd.Series:
    """Per trial id, the step where warmup ends (a fraction of the steps if < 1, else a step count)."""
    frame = trials.set_index("id")
    warmup = frame["cfg.warmup"].astype(float) if "cfg.warmup" in frame else pd.Series(0.0, index=frame.index)
    total = frame["total_steps"].astype(float)
    return warmup.where(warmup >= 1, warmup * total).fillna(0.0)


def end_of_training(results: Results) -> pd.DataFrame:
    """Per trial (rows) and diagnostic (columns): the mean of its last END_POINTS logged values after warmup,
    NaN where fewer were logged."""
    diag = results.curves[results.curves["split"] == "diag"]
    after = diag[diag["step"] > diag["trial_id"].map(warmup_steps(results.trials))]
    tails = after.sort_values("step").groupby(["trial_id", "metric"])["value"]
    return tails.apply(lambda v: v.tail(END_POINTS).mean() if len(v) >= END_POINTS else np.nan).unstack()
