"""Hao et al.'s three landscape measurements of one trained run, computed from its snapshots and kept in the store.

- width: along one filter-normalized random direction around the end (Li et al., so runs of different
  models are on one scale), the length of the interval around a = 0 where the training loss stays within
  WIDTH_DELTA of its value at the end; a in [-1, 1], crossings linearly interpolated;
- curvature: along the same line, the second derivative of the training loss at the end, from a quadratic
  fitted to the CURVATURE_POINTS points nearest a = 0. Unlike the width it cannot saturate: a run flat over
  the whole line has a width of "at least 2", which orders nothing, and a curvature near 0, which does;
- rollback: the drop in dev metric when the low, middle or high third of the layers is put back to its
  start values, the rest fine-tuned;
- alignment: Spearman's rho between training loss and dev error over a 2-D random-direction surface.

The cells are cached by the landscape machinery (keyed by the snapshots' hashes); the three numbers are
written once more under a key of the trial and settings alone, so the verdicts can be recomputed after
the snapshots, which are large, are deleted. The curvature is read from the line's own cells, which
outlive the snapshots too, so runs measured before it existed have it as well.
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
from ..landscape.records import add_cells, find_landscape, landscape_cells, landscape_id, landscape_specs
from ..landscape.sources import EvaluationSettings, TrialSnapshots
from ..storage.store import Store
from .design import Scale

WIDTH_DELTA = 0.1  # nats of training loss above the end's
PROBED_WIDTH = 2.0  # the line and the surface span a, b in [-1, 1]
DIRECTION_SEED = 0
CURVATURE_POINTS = 5  # at the small scale a in [-0.4, 0.4], where the width's crossings of pretrained runs lie
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


def curvature(a_values: np.ndarray, losses: np.ndarray, points: int = CURVATURE_POINTS) -> float:
    """d2 loss / da2 at a = 0: twice the leading coefficient of the least-squares quadratic through the `points`
    points nearest a = 0 (NaN with fewer than 3)."""
    a, loss = np.asarray(a_values, dtype=float), np.asarray(losses, dtype=float)
    nearest = np.argsort(np.abs(a), kind="stable")[:points]
    if len(nearest) < 3:
        return float("nan")
    coefficients, *_ = np.linalg.lstsq(np.vander(a[nearest], 3), loss[nearest], rcond=None)
    return float(2.0 * coefficients[0])


def _line(scale: Scale) -> np.ndarray:
    return np.round(np.linspace(-PROBED_WIDTH / 2, PROBED_WIDTH / 2, scale.line_points), 10)


def _line_curvature(store: Store, trial_key: str, scale: Scale) -> float:
    """The curvature from the stored cells of a trial's measured line; NaN when they are missing or damaged."""
    line = _line(scale)
    wanted = {"kind": "surface", "directions": "random", "trial": trial_key, "seed": DIRECTION_SEED,
              "a": line.tolist(), "b": [0.0], **settings_for(scale, RunOptions()).spec()}
    found = [found_id for found_id, spec in landscape_specs(store, "surface")
             if all(spec.get(name) == value for name, value in wanted.items())]
    if not found:
        return float("nan")
    cells = landscape_cells(store, found[-1])
    if "train_loss" not in cells or len(cells) != len(line):
        return float("nan")
    losses = cells["train_loss"].to_numpy(dtype=float)
    if not np.isfinite(losses).all() or (losses < 0).any():
        return float("nan")
    return curvature(cells["a"].to_numpy(dtype=float), losses)


def alignment(cells: pd.DataFrame) -> float:
    """Spearman's rho between training loss and dev error over the surface's cells."""
    if cells["train_loss"].nunique() < 2 or cells["dev_error"].nunique() < 2:
        return float("nan")
    return float(stats.spearmanr(cells["train_loss"], cells["dev_error"]).statistic)


def measure(store: Store, trial_id: int, scale: Scale, options: RunOptions,
            progress: Callable[[int, int], None] | None = None) -> None:
    """Measures a trial with snapshots once and keeps the numbers in the store, where `recorded` reads them."""
    snapshots = TrialSnapshots.load(store, trial_id)
    key = _record_key(snapshots.key, scale)
    if recorded(store, snapshots.key, scale) is not None:
        return
    settings = settings_for(scale, options)
    cells = surface(store, snapshots, "random", None, DIRECTION_SEED, _line(scale), np.array([0.0]), settings,
                    progress).cells
    values = {"width": width(cells["a"].to_numpy(), cells["train_loss"].to_numpy())}
    _, table = layer_curves(store, snapshots, np.array([0.0, 1.0]), settings, progress)
    drops = table.set_index("group")["delta_dev_metric"]
    values.update({f"rollback_{group}": float(-drops[group]) for group in THIRDS})
    grid = np.round(np.linspace(-PROBED_WIDTH / 2, PROBED_WIDTH / 2, scale.surface_points), 10)
    plane = surface(store, snapshots, "random", None, DIRECTION_SEED, grid, grid, settings, progress).cells
    values["alignment"] = alignment(plane)
    record = landscape_id(store, key, "reproduce-hao", {"trial": snapshots.key, "scale": scale.name})
    # An undefined value (the rank correlation of a flat surface) is left out and reads back as NaN.
    add_cells(store, record, [(0, 0, 0.0, 0.0, {"measured": 1.0, **{
        name: value for name, value in values.items() if np.isfinite(value)}})])


def recorded(store: Store, trial_key: str, scale: Scale) -> dict[str, float] | None:
    """The measurements stored for a trial key, or None; values outside their ranges are refused as damaged.
    The curvature comes from the line's cells."""
    record = find_landscape(store, _record_key(trial_key, scale))
    if record is None:
        return None
    cells = landscape_cells(store, record)
    if len(cells) != 1 or "measured" not in cells:
        return None
    values = {name: float(cells[name].iloc[0]) if name in cells else float("nan") for name in MEASURES}
    limits = {"width": (0.0, 2.0), "alignment": (-1.0, 1.0), **{f"rollback_{g}": (-2.0, 2.0) for g in THIRDS}}
    if any(not low <= values[name] <= high for name, (low, high) in limits.items() if np.isfinite(values[name])):
        return None
    return {**values, "curvature": _line_curvature(store, trial_key, scale)}
