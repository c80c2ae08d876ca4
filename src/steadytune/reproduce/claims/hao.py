"""Hao et al. 2019: flatter optima from pretrained starts, rollback of layer groups, aligned surfaces.
Arms: `pretrained` and `scratch`, trained with snapshots and measured by reproduce.landscapes."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ...analysis.results import NotEnoughData
from ..landscapes import CURVATURE_POINTS, PROBED_WIDTH, WIDTH_DELTA
from ..statistics import one_sample_t, tanh_of, welch
from .base import Claim, ClaimData, Evidence, learning_tasks, stacked


def _measured(data: ClaimData, arm: str, least: int = 2) -> pd.DataFrame:
    """The measured runs of an arm on the tasks where it learned."""
    frame = data.measures[data.measures["arm"] == arm] if not data.measures.empty else data.measures
    note = ""
    if arm not in data.arms:
        frame = frame.iloc[0:0]
    elif not frame.empty:
        kept, reasons = learning_tasks({arm: data.arms[arm].trials})
        frame = frame[frame["task"].isin(kept)]
        note = f" ({'; '.join(reasons)})" if reasons else ""
    if len(frame) < least:
        raise NotEnoughData(f"{len(frame)} measured {arm} run(s) of an arm that learned; needs {least}"
                            + (note or data.why_untrained(arm)))
    return frame


def flatter(data: ClaimData) -> Evidence:
    measured = {name: _measured(data, arm) for name, arm in (("pretrained", "pretrained"), ("from-scratch", "scratch"))}
    # Tested on the curvature: where a run stays within WIDTH_DELTA over the whole line, its width reads "at least
    # the line", which orders nothing (on MiniLM-L6's RTE runs, most of both arms); its curvature still does.
    curved = {name: frame[np.isfinite(frame["curvature"].to_numpy(dtype=float))] for name, frame in measured.items()}
    for name, frame in curved.items():
        if len(frame) < 2:
            raise NotEnoughData(f"{len(frame)} {name} run(s) with a measured line; needs 2")
    estimate = welch(*stacked(curved["pretrained"], curved["from-scratch"], "curvature"))
    flat = {name: int((frame["width"] >= PROBED_WIDTH - 1e-9).sum()) for name, frame in measured.items()}
    saturated = "".join(f"; {n} {name} run(s) within {WIDTH_DELTA} nats over the whole line" for name, n in flat.items()
                        if n)
    pretrained, scratch = curved["pretrained"], curved["from-scratch"]
    return Evidence(estimate, f"curvature of the training loss at the end along a filter-normalized random direction "
                    f"(a quadratic through the {CURVATURE_POINTS} line points nearest it), from scratch - pretrained; "
                    "Welch's t per task, pooled over tasks (one-sided tests)",
                    f"curvature {pretrained['curvature'].mean():.3f} pretrained vs {scratch['curvature'].mean():.3f} "
                    f"from scratch (n={len(pretrained)}, {len(scratch)}); width within {WIDTH_DELTA} nats "
                    f"{measured['pretrained']['width'].mean():.2f} vs {measured['from-scratch']['width'].mean():.2f}"
                    + saturated)


def high_layers(data: ClaimData) -> Evidence:
    frame = _measured(data, "pretrained")
    gap = frame["rollback_high"] - frame[["rollback_low", "rollback_middle"]].mean(axis=1)
    estimate = one_sample_t(gap.to_numpy())
    return Evidence(estimate, "dev-metric drop when the high third is rolled back, minus the mean drop for the low "
                    "and middle thirds, per run; one-sample t test (one-sided)",
                    f"drops: low {frame['rollback_low'].mean():+.3f}, middle {frame['rollback_middle'].mean():+.3f}, "
                    f"high {frame['rollback_high'].mean():+.3f} (n={len(frame)})")


def surfaces_align(data: ClaimData) -> Evidence:
    frame = _measured(data, "pretrained")
    values = frame["alignment"].to_numpy(dtype=float)
    values = values[np.isfinite(values)]
    if len(values) < 2:
        raise NotEnoughData("needs two or more runs whose surfaces vary")
    # On Fisher's z, so that the interval stays within (-1, 1) once transformed back.
    estimate = tanh_of(one_sample_t(np.arctanh(np.clip(values, -0.999999, 0.999999))))
    return Evidence(estimate, "Spearman rho of training loss with dev error over each run's 2-D random surface around "
                    "its end; one-sample t test over runs on Fisher's z (one-sided)",
                    f"rho per run {', '.join(f'{v:.2f}' for v in values)}")


CLAIMS = [
    Claim("hao-flatter", ("pretrained", "scratch"), "Hao 2019",
          "Pretrained starts end in wider, flatter optima than from-scratch ones",
          "wider, flatter optima from pretrained weights (Hao et al., Figs. 1-3)", "curvature from scratch - pretrained",
          flatter, smallest=0.0, smallest_source="stated default: any flattening (the paper gives no size)",
          revised="first tested on widths, which most MiniLM-L6 runs on RTE saturated in both arms (no answer); "
                  "the curvature's rule was fixed before any curvature was computed"),
    Claim("hao-high-layers", ("pretrained",), "Hao 2019",
          "Rolling back the high layers hurts most; low and middle barely",
          "rolling back low or middle layers barely hurts, high layers a lot", "drop high - mean drop low, middle",
          high_layers, smallest=0.01, smallest_source="stated default: one metric point"),
    Claim("hao-surfaces-align", ("pretrained",), "Hao 2019",
          "The training-loss and dev-error surfaces line up",
          "the two surfaces line up for fine-tuned BERT", "rho of train loss with dev error", surfaces_align,
          smallest=0.3, smallest_source="stated default: rho 0.3, Cohen's 'medium' correlation"),
]
