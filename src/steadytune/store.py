"""The one stateful piece: a SQLite file holding studies, trials and their curves.

WAL mode lets readers (`steadytune runs`, reports) look while a study writes; the busy timeout lets
several writer processes share the file. Every write is one transaction. A trial's status becomes
terminal (complete, diverged, stopped, failed) in the same transaction that writes its last curve
rows, so a trial marked `complete` always has all of its rows, and a crash leaves it `running`:
visible, never counted as a result, and re-run by a resumed study.
"""
from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

SCHEMA = """
CREATE TABLE IF NOT EXISTS studies (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    spec_json TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS trials (
    id INTEGER PRIMARY KEY,
    study_id INTEGER REFERENCES studies(id),
    trial_key TEXT NOT NULL,
    task TEXT NOT NULL,
    model TEXT NOT NULL,
    recipe TEXT,
    wi_seed INTEGER NOT NULL,
    do_seed INTEGER NOT NULL,
    dropout_seed INTEGER NOT NULL,
    config_json TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('running', 'complete', 'diverged', 'stopped', 'failed')),
    started_at REAL NOT NULL,
    finished_at REAL,
    wall_seconds REAL,
    steps_done INTEGER,
    total_steps INTEGER,
    metric TEXT,
    final_metric REAL,
    best_metric REAL,
    best_step INTEGER,
    baseline_metric REAL,
    final_metrics_json TEXT,
    best_metrics_json TEXT,
    error TEXT
);
CREATE INDEX IF NOT EXISTS trials_key ON trials(trial_key);
CREATE INDEX IF NOT EXISTS trials_study ON trials(study_id);
CREATE TABLE IF NOT EXISTS curves (
    trial_id INTEGER NOT NULL REFERENCES trials(id) ON DELETE CASCADE,
    step INTEGER NOT NULL,
    epoch REAL NOT NULL,
    split TEXT NOT NULL,
    metric TEXT NOT NULL,
    value REAL,
    PRIMARY KEY (trial_id, split, metric, step)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS landscapes (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    spec_json TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS landscape_cells (
    landscape_id INTEGER NOT NULL REFERENCES landscapes(id) ON DELETE CASCADE,
    i INTEGER NOT NULL,
    j INTEGER NOT NULL,
    a REAL NOT NULL,
    b REAL NOT NULL,
    name TEXT NOT NULL,
    value REAL,
    PRIMARY KEY (landscape_id, i, j, name)
) WITHOUT ROWID;
"""

TERMINAL_STATUSES = ("complete", "diverged", "stopped", "failed")


@dataclass(frozen=True)
class CurvePoint:
    step: int
    epoch: float
    split: str  # "train", "dev", "test", or "diag" (diagnostics.py)
    metric: str
    value: float


@dataclass(frozen=True)
class TrialOutcome:
    """What a finished trial reports; the store adds ids and timestamps."""

    status: str
    steps_done: int
    total_steps: int
    metric: str
    final_metrics: dict[str, float]
    best_metrics: dict[str, float]
    best_step: int | None
    baseline_metric: float
    wall_seconds: float
    error: str | None = None


class StoreError(RuntimeError):
    """The store file cannot be opened or is not a steadytune store."""


class Store:
    def __init__(self, path: Path | str):
        self.path = Path(path)
        if self.path.parent and not self.path.parent.exists():
            raise StoreError(f"{self.path}: folder {self.path.parent} does not exist")
        try:
            self._db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA busy_timeout=60000")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(SCHEMA)
        except sqlite3.DatabaseError as err:
            raise StoreError(f"{self.path}: not a usable steadytune store ({err})") from None

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        # BEGIN IMMEDIATE takes the write lock up front, so concurrent writers wait (busy timeout)
        # instead of failing half-way through a transaction.
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # --- studies -------------------------------------------------------------------------------
    def study_id(self, name: str, spec: dict) -> int:
        """Id of the study with this name, created on first use."""
        with self._transaction() as db:
            row = db.execute("SELECT id FROM studies WHERE name = ?", (name,)).fetchone()
            if row:
                return row[0]
            return db.execute("INSERT INTO studies (name, spec_json, created_at) VALUES (?, ?, ?)",
                              (name, json.dumps(spec, sort_keys=True), time.time())).lastrowid

    # --- trials --------------------------------------------------------------------------------
    def start_trial(self, config: dict, trial_key: str, dropout_seed: int, study_id: int | None = None) -> int:
        """A trial about to train: status 'running' until finish_trial."""
        with self._transaction() as db:
            return self._insert_trial(db, config, trial_key, dropout_seed, study_id)

    def record_trial(self, config: dict, trial_key: str, dropout_seed: int, study_id: int | None,
                     outcome: TrialOutcome, points: Iterable[CurvePoint]) -> int:
        """A finished attempt, all in one transaction, replacing unfinished attempts of the same trial in the study
        (interrupted, failed or stopped early), so a trial never appears twice."""
        with self._transaction() as db:
            db.execute("DELETE FROM trials WHERE trial_key = ? AND study_id IS ? AND status IN ('running', 'failed',"
                       " 'stopped')", (trial_key, study_id))
            trial_id = self._insert_trial(db, config, trial_key, dropout_seed, study_id)
            self._finish(db, trial_id, outcome, points)
        return trial_id

    @staticmethod
    def _insert_trial(db: sqlite3.Connection, config: dict, trial_key: str, dropout_seed: int,
                      study_id: int | None) -> int:
        return db.execute(
            "INSERT INTO trials (study_id, trial_key, task, model, recipe, wi_seed, do_seed, dropout_seed,"
            " config_json, status, started_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'running', ?)",
            (study_id, trial_key, config["task"], config["model"], config.get("recipe"), config["wi_seed"],
             config["do_seed"], dropout_seed, json.dumps(config, sort_keys=True), time.time()),
        ).lastrowid

    def add_points(self, trial_id: int, points: Iterable[CurvePoint]) -> None:
        with self._transaction() as db:
            self._insert_points(db, trial_id, points)

    def finish_trial(self, trial_id: int, outcome: TrialOutcome, points: Iterable[CurvePoint] = ()) -> None:
        """Write the last curve rows and the terminal status atomically."""
        with self._transaction() as db:
            self._finish(db, trial_id, outcome, points)

    def _finish(self, db: sqlite3.Connection, trial_id: int, outcome: TrialOutcome, points: Iterable[CurvePoint]) -> None:
        if outcome.status not in TERMINAL_STATUSES:
            raise ValueError(f"not a terminal status: {outcome.status}")
        self._insert_points(db, trial_id, points)
        db.execute(
            "UPDATE trials SET status=?, finished_at=?, wall_seconds=?, steps_done=?, total_steps=?, metric=?,"
            " final_metric=?, best_metric=?, best_step=?, baseline_metric=?, final_metrics_json=?,"
            " best_metrics_json=?, error=? WHERE id=?",
            (outcome.status, time.time(), outcome.wall_seconds, outcome.steps_done, outcome.total_steps,
             outcome.metric, outcome.final_metrics.get(outcome.metric), outcome.best_metrics.get(outcome.metric),
             outcome.best_step, outcome.baseline_metric, json.dumps(outcome.final_metrics),
             json.dumps(outcome.best_metrics), outcome.error, trial_id),
        )

    @staticmethod
    def _insert_points(db: sqlite3.Connection, trial_id: int, points: Iterable[CurvePoint]) -> None:
        db.executemany("INSERT OR REPLACE INTO curves (trial_id, step, epoch, split, metric, value)"
                       " VALUES (?, ?, ?, ?, ?, ?)",
                       ((trial_id, p.step, p.epoch, p.split, p.metric, p.value) for p in points))

    def latest_trial(self, trial_key: str, study_id: int | None) -> dict | None:
        """The newest attempt of a trial in a study (None: the trials run outside any study)."""
        cursor = self._db.execute("SELECT * FROM trials WHERE trial_key = ? AND study_id IS ? ORDER BY id DESC LIMIT 1",
                                  (trial_key, study_id))
        row = cursor.fetchone()
        return dict(zip([c[0] for c in cursor.description], row)) if row else None

    def dev_score_at(self, trial_id: int, step: int) -> float | None:
        """The trial's primary dev metric at its latest evaluation at or before `step`."""
        row = self._db.execute("SELECT c.value FROM curves c JOIN trials t ON t.id = c.trial_id WHERE c.trial_id = ?"
                               " AND c.split = 'dev' AND c.metric = t.metric AND c.step <= ? ORDER BY c.step DESC"
                               " LIMIT 1", (trial_id, step)).fetchone()
        return row[0] if row else None

    def trial_config(self, trial_id: int) -> tuple[dict, str, str]:
        """A trial's resolved config, trial key and status."""
        row = self._db.execute("SELECT config_json, trial_key, status FROM trials WHERE id = ?", (trial_id,)).fetchone()
        if row is None:
            raise StoreError(f"{self.path} has no trial {trial_id}")
        return json.loads(row[0]), row[1], row[2]

    # --- landscapes ----------------------------------------------------------------------------
    def landscape(self, key: str, kind: str, spec: dict) -> int:
        """The id of the landscape with this key, created on first use."""
        with self._transaction() as db:
            db.execute("INSERT OR IGNORE INTO landscapes (key, kind, spec_json, created_at) VALUES (?, ?, ?, ?)",
                       (key, kind, json.dumps(spec, sort_keys=True), time.time()))
            return db.execute("SELECT id FROM landscapes WHERE key = ?", (key,)).fetchone()[0]

    def add_landscape_cells(self, landscape_id: int, cells: Iterable[tuple[int, int, float, float, dict[str, float]]]) -> None:
        with self._transaction() as db:
            db.executemany("INSERT OR REPLACE INTO landscape_cells (landscape_id, i, j, a, b, name, value)"
                           " VALUES (?, ?, ?, ?, ?, ?, ?)",
                           ((landscape_id, i, j, a, b, name, value) for i, j, a, b, values in cells
                            for name, value in values.items()))

    def landscape_cells(self, landscape_id: int) -> pd.DataFrame:
        """One row per finished cell: i, j, a, b and one column per stored value."""
        frame = pd.read_sql_query("SELECT i, j, a, b, name, value FROM landscape_cells WHERE landscape_id = ?",
                                  self._db, params=(landscape_id,))
        if frame.empty:
            return pd.DataFrame(columns=["i", "j", "a", "b"])
        wide = frame.pivot_table(index=["i", "j", "a", "b"], columns="name", values="value").reset_index()
        wide.columns.name = None
        return wide.sort_values(["j", "i"]).reset_index(drop=True)

    # --- reading -------------------------------------------------------------------------------
    def trials(self) -> pd.DataFrame:
        """One row per trial; the resolved config flattened into `cfg.*` columns (a flat results table)."""
        frame = pd.read_sql_query("SELECT * FROM trials ORDER BY id", self._db)
        configs = pd.json_normalize([json.loads(c) for c in frame["config_json"]]) if len(frame) else pd.DataFrame()
        configs.columns = [f"cfg.{c}" for c in configs.columns]
        return pd.concat([frame.drop(columns=["config_json"]), configs], axis=1)

    def curves(self, trial_ids: Iterable[int] | None = None) -> pd.DataFrame:
        query = "SELECT * FROM curves"
        params: tuple = ()
        if trial_ids is not None:
            ids = tuple(trial_ids)
            query += f" WHERE trial_id IN ({','.join('?' * len(ids))})"
            params = ids
        return pd.read_sql_query(query + " ORDER BY trial_id, split, metric, step", self._db, params=params)


def export(store: Store, what: str, fmt: str, out: Path) -> int:
    """Write trials or curves as CSV or Parquet; returns the number of rows written."""
    frame = {"trials": store.trials, "curves": store.curves}[what]()
    if fmt == "csv":
        frame.to_csv(out, index=False)
    else:
        frame.to_parquet(out, index=False)
    return len(frame)
