"""Hao et al.'s three landscape measurements of one trained run, computed from its snapshots and kept in the store.

- width: along one filter-normalized random direction around the end (Li et al., so runs of different
  models are on one scale), the length of the interval around a = 0 where the training loss stays within
  WIDTH_DELTA of its value at the end; a in [-1, 1], crossings linearly interpolated;
- rollback: the drop in dev metric when the low, middle or high third of the layers is put back to its
  start values, the rest fine-tuned;
- alignment: Spearman's rho between training loss and dev error over a 2-D random-direction surface.

The cells are cached by the landscape machinery (keyed by the snapshots' hashes); the three numbers are
written once more under a key of the trial and settings alone, so the verdicts can be recomputed after
the snapshots, which are large, are deleted.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable

import numpy as np
import pandas as pd
from scipy import stats

from ..config import RunOptions
from ..landscape.analyses import layer_curves, surface
from ..landscape.layers import THIRDS
from ..landscape.sources import EvaluationSettings, TrialSnapshots
from ..store import Store
from .design import Scale

WIDTH_DELTA = 0.1  # nats of training loss above the end's
PROBED_WIDTH = 2.0  # the line and the surface span a, b in [-1, 1]
DIRECTION_SEED = 0
MEASURES = ("width", *(f"rollback_{group}" for group in THIRDS), "alignment")


def settings_for(scale: Scale, options: RunOptions) -> EvaluationSettings:
    return EvaluationSettings(scale.landscape_examples, scale.landscape_examples, 0, 32, 1, options)


def _record_key(trial_key: str, scale: Scale) -> str:
    spec = {"kind": "reproduce-hao", "trial": trial_key, "examples": scale.landscape_examples,
            "line": scale.line_points, "surface": scale.surface_points, "delta": WIDTH_DELTA, "seed": DIRECTION_SEED}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def width(a_values: np.ndarray, losses: np.ndarray, delta: float = WIDTH_DELTA) -> float:
    """Length of the interval around a = 0 with loss <= loss(0) + delta; edges interpolated, clipped to the range."""
    order = np.argsort(a_values)
    a, loss = np.asarray(a_values, dtype=float)[order], np.asarray(losses, dtype=float)[order]
    centre = int(np.argmin(np.abs(a)))
    limit = loss[centre] + delta

    def edge(step: int) -> float:
        k = centre
        while 0 <= k + step < len(a) and loss[k + step] <= limit:
            k += step
        if not 0 <= k + step < len(a):
            return float(a[k])
        outer = k + step  # first point above the limit: interpolate the crossing
        return float(a[k] + (a[outer] - a[k]) * (limit - loss[k]) / (loss[outer] - loss[k]))

    return edge(1) - edge(-1)


def alignment(cells: pd.DataFrame) -> float:
    """Spearman's rho between training loss and dev error over the surface's cells."""
    if cells["train_loss"].nunique() < 2 or cells["dev_error"].nunique() < 2:
        return float("nan")
    return float(stats.spearmanr(cells["train_loss"], cells["dev_error"]).statistic)


def measure(store: Store, trial_id: int, scale: Scale, options: RunOptions,
            progress: Callable[[int, int], None] | None = None) -> dict[str, float]:
    """The three measurements of a trial with snapshots; computed once, then read from the store."""
    snapshots = TrialSnapshots.load(store, trial_id)
    key = _record_key(snapshots.key, scale)
    found = recorded(store, snapshots.key, scale)
    if found is not None:
        return found
    settings = settings_for(scale, options)
    line = np.round(np.linspace(-PROBED_WIDTH / 2, PROBED_WIDTH / 2, scale.line_points), 10)
    cells = surface(store, snapshots, "random", None, DIRECTION_SEED, line, np.array([0.0]), settings, progress).cells
    values = {"width": width(cells["a"].to_numpy(), cells["train_loss"].to_numpy())}
    _, table = layer_curves(store, snapshots, np.array([0.0, 1.0]), settings, progress)
    drops = table.set_index("group")["delta_dev_metric"]
    values.update({f"rollback_{group}": float(-drops[group]) for group in THIRDS})
    grid = np.round(np.linspace(-PROBED_WIDTH / 2, PROBED_WIDTH / 2, scale.surface_points), 10)
    plane = surface(store, snapshots, "random", None, DIRECTION_SEED, grid, grid, settings, progress).cells
    values["alignment"] = alignment(plane)
    landscape_id = store.landscape(key, "reproduce-hao", {"trial": snapshots.key, "scale": scale.name})
    # An undefined value (the rank correlation of a flat surface) is left out and reads back as NaN.
    store.add_landscape_cells(landscape_id, [(0, 0, 0.0, 0.0, {"measured": 1.0, **{
        name: value for name, value in values.items() if np.isfinite(value)}})])
    return values


def recorded(store: Store, trial_key: str, scale: Scale) -> dict[str, float] | None:
    """The measurements stored for a trial key, or None; values outside their ranges are refused as damaged."""
    landscape_id = store.find_landscape(_record_key(trial_key, scale))
    if landscape_id is None:
        return None
    cells = store.landscape_cells(landscape_id)
    if len(cells) != 1 or "measured" not in cells:
        return None
    values = {name: float(cells[name].iloc[0]) if name in cells else float("nan") for name in MEASURES}
    limits = {"width": (0.0, 2.0), "alignment": (-1.0, 1.0), **{f"rollback_{g}": (-2.0, 2.0) for g in THIRDS}}
    if any(not low <= values[name] <= high for name, (low, high) in limits.items() if np.isfinite(values[name])):
        return None
    return values
