"""Hao et al. 2019: flatter optima from pretrained starts, rollback of layer groups, aligned surfaces.
Arms: `pretrained` and `scratch`, trained with snapshots and measured by reproduce.landscapes."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ...analysis.results import NotEnoughData
from ..landscapes import PROBED_WIDTH, WIDTH_DELTA
from ..statistics import Estimate, one_sample_t, two_arm
from .base import Claim, ClaimData, Evidence, stacked


def _measured(data: ClaimData, arm: str, least: int = 2) -> pd.DataFrame:
    frame = data.measures[data.measures["arm"] == arm] if not data.measures.empty else data.measures
    if len(frame) < least:
        raise NotEnoughData(f"{len(frame)} measured {arm} run(s); needs {least} (train with snapshots, then measure)")
    return frame


def flatter(data: ClaimData) -> Evidence:
    pretrained, scratch = _measured(data, "pretrained"), _measured(data, "scratch")
    # The line spans a in [-1, 1]: a run flat over all of it has a width of at least 2, not 2. Where most runs of
    # an arm are, the line cannot order the arms.
    flat = {name: int((frame["width"] >= PROBED_WIDTH - 1e-9).sum()) for name, frame in
            (("pretrained", pretrained), ("from-scratch", scratch))}
    if any(2 * flat[name] > len(frame) for name, frame in (("pretrained", pretrained), ("from-scratch", scratch))):
        raise NotEnoughData(f"widths saturate: {flat['pretrained']} of {len(pretrained)} pretrained and "
                            f"{flat['from-scratch']} of {len(scratch)} from-scratch runs stay within {WIDTH_DELTA} "
                            f"nats over the whole probed line, a in [-1, 1]")
    estimate = two_arm(*stacked(scratch, pretrained, "width"))
    saturated = "; ".join(f"{n} {name} run(s) flat over the whole line" for name, n in flat.items() if n)
    return Evidence(estimate, f"width of the region within {WIDTH_DELTA} nats of the end's training loss along a "
                    "filter-normalized random direction, pretrained - from scratch; permutation test within tasks",
                    f"width {pretrained['width'].mean():.2f} pretrained vs {scratch['width'].mean():.2f} from scratch "
                    f"(n={len(pretrained)}, {len(scratch)})" + (f"; {saturated}" if saturated else ""))


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
    on_z = one_sample_t(np.arctanh(np.clip(values, -0.999999, 0.999999)))
    estimate = Estimate(float(np.tanh(on_z.effect)), float(np.tanh(on_z.low)), float(np.tanh(on_z.high)), on_z.p)
    return Evidence(estimate, "Spearman rho of training loss with dev error over each run's 2-D random surface around "
                    "its end; one-sample t test over runs on Fisher's z (one-sided)",
                    f"rho per run {', '.join(f'{v:.2f}' for v in values)}")


CLAIMS = [
    Claim("hao-flatter", ("pretrained", "scratch"), "Hao 2019",
          "Pretrained starts end in wider, flatter optima than from-scratch ones",
          "wider, flatter optima from pretrained weights (Hao et al., Figs. 1-3)", "width pretrained - from scratch",
          flatter, smallest=0.05),
    Claim("hao-high-layers", ("pretrained",), "Hao 2019",
          "Rolling back the high layers hurts most; low and middle barely",
          "rolling back low or middle layers barely hurts, high layers a lot", "drop high - mean drop low, middle",
          high_layers, smallest=0.01),
    Claim("hao-surfaces-align", ("pretrained",), "Hao 2019",
          "The training-loss and dev-error surfaces line up",
          "the two surfaces line up for fine-tuned BERT", "rho of train loss with dev error", surfaces_align,
          smallest=0.3),
]
