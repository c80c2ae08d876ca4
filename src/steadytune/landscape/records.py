"""Landscapes in the store: each one a row of `landscapes` (its key, kind and spec) and its finished cells, one row
per (cell, value) in `landscape_cells`. Every finished cell is written as soon as it is computed, so an interrupted
landscape resumes with the missing cells only, and two processes can share a store (one surface each).
"""
from __future__ import annotations

import json
import time
from collections.abc import Iterable

import pandas as pd

from ..storage.store import Store

# (i, j, a, b, {name: value}) of one finished cell of the grid.
CellValues = tuple[int, int, float, float, dict[str, float]]


def landscape_id(store: Store, key: str, kind: str, spec: dict) -> int:
    """The id of the landscape with this key, created on first use."""
    with store.transaction("creating a landscape") as db:
        db.execute("INSERT INTO landscapes (key, kind, spec_json, created_at) VALUES (?, ?, ?, ?)"
                   " ON CONFLICT (key) DO NOTHING", (key, kind, json.dumps(spec, sort_keys=True), time.time()))
        return db.execute("SELECT id FROM landscapes WHERE key = ?", (key,)).fetchone()[0]


def find_landscape(store: Store, key: str) -> int | None:
    """The id of the landscape with this key, or None; reads only."""
    with store.reading() as db:
        row = db.execute("SELECT id FROM landscapes WHERE key = ?", (key,)).fetchone()
    return None if row is None else row[0]


def landscape_specs(store: Store, kind: str) -> list[tuple[int, dict]]:
    """(id, spec) of every landscape of a kind, oldest first; a spec that is not a JSON object is left out."""
    with store.reading() as db:
        rows = db.execute("SELECT id, spec_json FROM landscapes WHERE kind = ? ORDER BY id", (kind,)).fetchall()
    specs = []
    for found, text in rows:
        try:
            spec = json.loads(text)
        except (TypeError, ValueError):
            continue
        if isinstance(spec, dict):
            specs.append((found, spec))
    return specs


def add_cells(store: Store, landscape: int, cells: Iterable[CellValues]) -> None:
    with store.transaction("writing landscape cells") as db:
        db.executemany("INSERT INTO landscape_cells (landscape_id, i, j, a, b, name, value)"
                       " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (landscape_id, i, j, name) DO UPDATE SET"
                       " a = excluded.a, b = excluded.b, value = excluded.value",
                       ((landscape, i, j, a, b, name, value) for i, j, a, b, values in cells
                        for name, value in values.items()))


def landscape_cells(store: Store, landscape: int) -> pd.DataFrame:
    """One row per finished cell: i, j, a, b and one column per stored value."""
    with store.reading():
        frame = store.frame("SELECT i, j, a, b, name, value FROM landscape_cells WHERE landscape_id = ?", (landscape,))
    if frame.empty:
        return pd.DataFrame(columns=["i", "j", "a", "b"])
    wide = frame.pivot_table(index=["i", "j", "a", "b"], columns="name", values="value").reset_index()
    wide.columns.name = None
    return wide.sort_values(["j", "i"]).reset_index(drop=True)
