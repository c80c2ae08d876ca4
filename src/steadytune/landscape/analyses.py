"""The three landscape analyses of a stored trial: a 1-D line, a 2-D surface with the trajectory, layer groups."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from ..storage.store import Store
from .compute import Cell, compute, grid_cells
from .directions import Plane, hao_plane, interpolate, mosbach_plane, random_plane
from .evaluation import LandscapeError
from .layers import group_contents, layer_groups, move_group
from .projection import project
from .sources import EvaluationSettings, TrialSnapshots, build_evaluator

Progress = Callable[[int, int], None]
DirectionKind = Literal["hao", "mosbach", "random"]


def line(store: Store, trial: TrialSnapshots, a_values: np.ndarray, settings: EvaluationSettings,
         progress: Progress | None = None) -> pd.DataFrame:
    """L(theta0 + a (theta1 - theta0)) from the trial's start to its end, on its train subset and dev set."""
    start, end = trial.start(), trial.end()
    evaluator = build_evaluator(trial.config, settings)
    evaluator.check(end, f"trial {trial.trial_id}'s snapshot")
    spec = {"kind": "line", "trial": trial.key, "steps": [0, trial.last_step], "snapshots": trial.identity(),
            "a": a_values.tolist(), **settings.spec()}
    cells = [Cell(i, 0, float(a), 0.0) for i, a in enumerate(a_values)]
    return compute(store, "line", spec, cells, lambda cell: interpolate(start, end, cell.a), evaluator, progress)


@dataclass(frozen=True)
class Surface:
    cells: pd.DataFrame       # i, j, a, b and the values
    trajectory: pd.DataFrame  # step, a, b, residual (share of the displacement off the plane)
    label1: str
    label2: str


def plane_for(kind: DirectionKind, trial: TrialSnapshots, other: TrialSnapshots | None, seed: int,
              frozen: frozenset[str] = frozenset()) -> Plane:
    if kind == "random":
        return random_plane(trial.end(), seed, frozen)
    if other is None:
        raise LandscapeError(f"--directions {kind} needs --other: "
                         + ("a run of the same model on another task" if kind == "hao" else "a successful run"))
    if kind == "hao":
        return hao_plane(trial.start(), trial.end(), other.end())
    return mosbach_plane(trial.start(), trial.end(), other.end())


def surface(store: Store, trial: TrialSnapshots, kind: DirectionKind, other: TrialSnapshots | None, seed: int,
            a_values: np.ndarray, b_values: np.ndarray, settings: EvaluationSettings,
            progress: Progress | None = None) -> Surface:
    """L(origin + a d1 + b d2) on a grid, and the trial's snapshots projected onto the plane."""
    evaluator = build_evaluator(trial.config, settings)
    frozen = frozenset(name for name, p in evaluator.model.named_parameters() if not p.requires_grad)
    plane = plane_for(kind, trial, other, seed, frozen)
    evaluator.check(plane.origin, f"trial {trial.trial_id}'s snapshot")
    spec = {"kind": "surface", "directions": kind, "trial": trial.key, "steps": [0, trial.last_step],
            "snapshots": trial.identity() + (other.identity(other.last_step) if other and kind != "random" else []),
            "other": other.key if other and kind != "random" else None, "seed": seed if kind == "random" else None,
            "a": a_values.tolist(), "b": b_values.tolist(), **settings.spec()}
    cells = compute(store, "surface", spec, grid_cells(a_values, b_values), lambda c: plane.point(c.a, c.b),
                    evaluator, progress)
    steps = sorted(trial.steps)
    coordinates = project([trial.params(step) for step in steps], plane.origin, plane.d1, plane.d2)
    trajectory = pd.DataFrame({"step": steps, "a": coordinates[:, 0], "b": coordinates[:, 1],
                               "residual": coordinates[:, 2]})
    return Surface(cells, trajectory, plane.label1, plane.label2)


def layer_curves(store: Store, trial: TrialSnapshots, a_values: np.ndarray, settings: EvaluationSettings,
                 progress: Progress | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Each layer group moved alone from its start (a = 0: rolled back) to its fine-tuned value (a = 1), the
    others fine-tuned; and the rollback table: change in train loss and dev metric when a group is rolled back."""
    start, end = trial.start(), trial.end()
    evaluator = build_evaluator(trial.config, settings)
    evaluator.check(end, f"trial {trial.trial_id}'s snapshot")
    groups = layer_groups(evaluator.model)
    groups["all"] = [name for names in groups.values() for name in names]
    names = list(groups)
    spec = {"kind": "layers", "trial": trial.key, "steps": [0, trial.last_step], "snapshots": trial.identity(),
            "groups": names,
            "a": a_values.tolist(), **settings.spec()}
    cells = [Cell(i, j, float(a), 0.0) for j in range(len(names)) for i, a in enumerate(a_values)]
    if not np.isclose(a_values, 0.0).any():
        raise LandscapeError("layer curves need a = 0 among their points (the rollback)")
    reference = Cell(-1, 0, 1.0, 0.0)  # the fine-tuned end itself
    frame = compute(store, "layers", spec, cells + [reference],
                    lambda c: end if c.i < 0 else move_group(end, start, groups[names[c.j]], c.a), evaluator, progress)
    frame["group"] = [names[j] for j in frame["j"]]
    curves = frame[frame["i"] >= 0].reset_index(drop=True)
    tuned = frame[frame["i"] < 0].iloc[0]
    at_zero = curves[np.isclose(curves["a"], 0.0)].set_index("group")
    holds = {**group_contents(evaluator.model), "all": "every parameter"}
    table = pd.DataFrame({
        "group": names,
        "holds": [holds[name] for name in names],
        "train_loss": [at_zero.loc[n, "train_loss"] for n in names],
        "delta_train_loss": [at_zero.loc[n, "train_loss"] - tuned["train_loss"] for n in names],
        "dev_metric": [at_zero.loc[n, "dev_metric"] for n in names],
        "delta_dev_metric": [at_zero.loc[n, "dev_metric"] - tuned["dev_metric"] for n in names],
    })
    fine_tuned = pd.DataFrame([{"group": "none", "holds": "", "train_loss": tuned["train_loss"],
                                "delta_train_loss": 0.0, "dev_metric": tuned["dev_metric"], "delta_dev_metric": 0.0}])
    return curves, pd.concat([fine_tuned, table], ignore_index=True)
