"""Lines and grids of a landscape, evaluated cell by cell into the store.

A landscape is identified by the hash of everything that determines its values (trial keys, the
content hashes of the snapshots it starts from, directions, seeds, grid, data subsets), so cells
computed from one version of a snapshot are never reused for another. Finished cells are written in one
transaction per pass, so an interrupted surface resumes with the cells still missing.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..storage.store import Store
from .directions import Params
from .evaluation import LandscapeEvaluator
from .records import add_cells, landscape_cells, landscape_id


@dataclass(frozen=True)
class Cell:
    i: int
    j: int
    a: float
    b: float


def landscape_key(spec: dict) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def grid_cells(a_values: np.ndarray, b_values: np.ndarray) -> list[Cell]:
    return [Cell(i, j, float(a), float(b)) for j, b in enumerate(b_values) for i, a in enumerate(a_values)]


def compute(store: Store, kind: str, spec: dict, cells: list[Cell], point: Callable[[Cell], Params],
            evaluator: LandscapeEvaluator, progress: Callable[[int, int], None] | None = None) -> pd.DataFrame:
    """Evaluate the cells not yet in the store and return all of them (columns i, j, a, b, <split>_<value>)."""
    record = landscape_id(store, landscape_key(spec), kind, spec)
    done = {(row.i, row.j) for row in landscape_cells(store, record).itertuples()}
    todo = [cell for cell in cells if (cell.i, cell.j) not in done]
    if progress:
        progress(len(cells) - len(todo), len(cells))
    for start in range(0, len(todo), evaluator.points_per_pass):
        chunk = todo[start:start + evaluator.points_per_pass]
        values = evaluator([point(cell) for cell in chunk])
        add_cells(store, record, [(cell.i, cell.j, cell.a, cell.b, v) for cell, v in zip(chunk, values)])
        if progress:
            progress(len(cells) - len(todo) + start + len(chunk), len(cells))
    return landscape_cells(store, record)
