"""The one stateful piece: a SQLite file, or a PostgreSQL database for drivers on several machines (same schema,
same statements: connections.py adapts them), holding studies, trials, their curves and who runs what.

Durability rules, all kept here:
- Every write is one transaction, and writers take the lock up front (SQLite's BEGIN IMMEDIATE, a PostgreSQL
  advisory lock), so concurrent drivers queue instead of failing half-way. SQLite's WAL mode lets readers
  (`steadytune runs`, reports) look while a study writes.
- A trial's status becomes terminal (complete, diverged, stopped, failed) in the same transaction that
  writes its last curve rows, so a trial marked `complete` always has all of its rows, and a crash
  leaves it `running`: visible, never counted as a result, and re-run by a resumed study.
- Before a driver runs a trial it *claims* it (studies/claims.py: the protocol, leases and owners); the claim
  is dropped here, in the transaction that records the trial's result.
- Read-only commands open the file read-only (`readonly=True`): no WAL switch, no schema write, so a
  store on a read-only mount or in a folder one may not write can still be read.
- SQLite errors (read-only file, disk full, a damaged file) become one-line `StoreError`s that say
  what happened; the transaction that failed is rolled back, so what was stored before is kept.
- A trial's dev (and test) predictions at its final and best evaluation, and the gold labels, are written
  with its terminal status, as raw little-endian arrays of a whitelisted dtype (class ids as int16,
  regression values as float32), never a pickle; reading checks dtype and length.
"""
from __future__ import annotations

import functools
import json
import math
import os
import sqlite3
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import StoreError
from ..training.layout import StoreFiles
from ..training.records import RESULT_STATUSES, TERMINAL_STATUSES, CurvePoint, TrialOutcome, TrialStatus
from .connections import (
    TYPES,
    PostgresConnection,
    SqliteConnection,
    database_name,
    is_postgres,
    postgres_errors,
    split_postgres_url,
    without_password,
)

Connection = SqliteConnection | PostgresConnection

SCHEMA = """
CREATE TABLE IF NOT EXISTS studies (
    id {id},
    name {text} NOT NULL UNIQUE,
    spec_json {text} NOT NULL,
    created_at {real} NOT NULL,
    cancelled_at {real}    -- `study cancel`: no driver claims another of its trials
);
CREATE TABLE IF NOT EXISTS trials (
    id {id},
    study_id INTEGER REFERENCES studies(id),
    trial_key {text} NOT NULL,
    task {text} NOT NULL,
    model {text} NOT NULL,
    recipe {text},
    wi_seed INTEGER NOT NULL,
    do_seed INTEGER NOT NULL,
    dropout_seed INTEGER NOT NULL,
    config_json {text} NOT NULL,
    status {text} NOT NULL CHECK (status IN ({statuses})),
    started_at {real} NOT NULL,
    finished_at {real},
    wall_seconds {real},
    steps_done INTEGER,
    total_steps INTEGER,
    metric {text},
    final_metric {real},
    best_metric {real},
    best_step INTEGER,
    baseline_metric {real},
    final_metrics_json {text},
    best_metrics_json {text},
    error {text},
    threads INTEGER,
    device {text},
    data_hash {text},
    host {text},           -- where it trained
    driver {text},         -- the driver that ran it: host:pid:id
    slurm_job {text}       -- its SLURM job (array job_task), if it ran in one
);
CREATE INDEX IF NOT EXISTS trials_key ON trials(trial_key);
CREATE INDEX IF NOT EXISTS trials_study ON trials(study_id);
CREATE TABLE IF NOT EXISTS curves (
    trial_id INTEGER NOT NULL REFERENCES trials(id) ON DELETE CASCADE,
    step INTEGER NOT NULL,
    epoch {real} NOT NULL,
    split {text} NOT NULL,
    metric {text} NOT NULL,
    value {real},
    PRIMARY KEY (trial_id, split, metric, step)
){without_rowid};
CREATE TABLE IF NOT EXISTS landscapes (
    id {id},
    key {text} NOT NULL UNIQUE,
    kind {text} NOT NULL,
    spec_json {text} NOT NULL,
    created_at {real} NOT NULL
);
CREATE TABLE IF NOT EXISTS landscape_cells (
    landscape_id INTEGER NOT NULL REFERENCES landscapes(id) ON DELETE CASCADE,
    i INTEGER NOT NULL,
    j INTEGER NOT NULL,
    a {real} NOT NULL,
    b {real} NOT NULL,
    name {text} NOT NULL,
    value {real},
    PRIMARY KEY (landscape_id, i, j, name)
){without_rowid};
CREATE TABLE IF NOT EXISTS predictions (
    trial_id INTEGER NOT NULL REFERENCES trials(id) ON DELETE CASCADE,
    split {text} NOT NULL,   -- dev or test
    point {text} NOT NULL,   -- final, best, or gold (the labels)
    step INTEGER,          -- the evaluation's step (NULL for gold)
    dtype {text} NOT NULL,   -- int16 (class ids) or float32 (regression values)
    count INTEGER NOT NULL,
    data {blob} NOT NULL,    -- `count` values in example order, little-endian
    PRIMARY KEY (trial_id, split, point)
){without_rowid};
CREATE TABLE IF NOT EXISTS files (
    name {text} PRIMARY KEY,  -- a file beside the store, relative to the store's folder
    sha256 {text} NOT NULL,   -- of its bytes, recorded when it was written
    recorded_at {real} NOT NULL
){without_rowid};
CREATE TABLE IF NOT EXISTS store_meta (
    key {text} PRIMARY KEY,
    value {text} NOT NULL
){without_rowid};
CREATE TABLE IF NOT EXISTS claims (
    trial_key {text} NOT NULL,
    scope INTEGER NOT NULL,  -- the study id, 0 for trials run outside a study
    owner {text} NOT NULL,
    expires_at {real} NOT NULL,
    claimed_at {real},
    step INTEGER,            -- where the trial stands, as its worker last reported (at each evaluation)
    total_steps INTEGER,
    PRIMARY KEY (trial_key, scope)
){without_rowid};
CREATE TABLE IF NOT EXISTS drivers (
    owner {text} PRIMARY KEY,  -- host:pid:id, as in claims
    scope INTEGER NOT NULL,    -- the study it runs, 0 for `train`
    started_at {real} NOT NULL,
    seen_at {real} NOT NULL    -- its last heartbeat: alive while within a lease of now
){without_rowid};
"""


def schema_sql(dialect: str) -> str:
    """The schema's statements in one database's column types."""
    return SCHEMA.format(**TYPES[dialect], statuses=", ".join(f"'{status}'" for status in TrialStatus))


# Columns added after the first release, by table; older stores get them when opened for writing.
ADDED_COLUMNS = {
    "trials": {"threads": "INTEGER", "device": "TEXT", "data_hash": "TEXT", "host": "{text}", "driver": "{text}",
               "slurm_job": "{text}"},
    "claims": {"claimed_at": "{real}", "step": "INTEGER", "total_steps": "INTEGER"},
    "studies": {"cancelled_at": "{real}"},
}
TABLES = ("studies", "trials", "curves")  # what a store must hold; later tables are created on first write

CACHE_RECORD = "tokenization-cache:"  # the prefix of cache entries' names in the files table


# dtype name -> numpy dtype of stored predictions; anything else read back is refused.
PREDICTION_DTYPES = {"int16": np.dtype("<i2"), "float32": np.dtype("<f4")}


def _encode_predictions(values: np.ndarray) -> tuple[str, bytes]:
    if np.issubdtype(values.dtype, np.integer):
        if values.size and (values.min() < 0 or values.max() > np.iinfo(np.int16).max):
            raise ValueError("class ids must lie in 0..32767")
        return "int16", values.astype(PREDICTION_DTYPES["int16"]).tobytes()
    return "float32", values.astype(PREDICTION_DTYPES["float32"]).tobytes()


def best_and_final(rows: Iterable[tuple[int, str, str, float | None]], metric: str
                   ) -> tuple[tuple[int, dict[str, float]] | None, tuple[int, dict[str, float]] | None]:
    """(step, metrics) of the best and of the last dev evaluation in curve rows (step, split, metric, value), as a
    trial tracks them while it trains: the first step with the highest dev `metric`; test metrics as test_<name>.
    Metrics of extra evaluated models (name.suffix, stabilizers) are not part of either."""
    by_step: dict[int, dict[str, float]] = {}
    for step, split, name, value in rows:
        if "." not in name:  # a NaN score is stored as NULL
            by_step.setdefault(int(step), {})[name if split == "dev" else f"test_{name}"] = (
                float("nan") if value is None else float(value))
    best, final, best_value = None, None, -math.inf
    for step in sorted(by_step):
        metrics = by_step[step]
        if metric not in metrics:
            continue
        final = (step, metrics)
        if metrics[metric] > best_value:  # NaN never is
            best, best_value = (step, metrics), metrics[metric]
    return best, final


def describe_sqlite_error(path: Path, err: Exception | str, doing: str) -> str:
    """One line saying what went wrong with the file, in words a user can act on."""
    text = str(err)
    if "readonly" in text or "read-only" in text:
        return (f"{path}: cannot write to the store ({text}) while {doing}; nothing was changed. Read-only commands "
                f"(runs, report, export, diagnose) can still read it")
    if "disk is full" in text or "disk I/O error" in text:
        return f"{path}: disk full (or I/O error: {text}) while {doing}; that write was rolled back"
    if "malformed" in text or "not a database" in text or "file is encrypted" in text:
        return (f"{path}: the store file is damaged ({text}); earlier results may be recoverable with "
                f"`sqlite3 {path} .recover`")
    return f"{path}: store error while {doing} ({text})"


class ConnectionLost(StoreError):
    """A PostgreSQL store's server stopped answering: restarted, stopped, or the network cut."""


def resilient(operation):
    """Run a store operation again once a lost PostgreSQL server answers again: with backoff, for up to the store's
    `reconnect_seconds` (0: not at all), saying so in one line when the connection is lost and when it is back.

    Each operation is one transaction or one read, re-run whole, so each is written to be repeated. A transaction
    cut off by the loss was rolled back by the server. One whose commit went through just before the connection
    dropped writes nothing new the second time: its rows are upserts, and `record_trial` finds its own result."""
    @functools.wraps(operation)
    def run(owner, *args, **kwargs):
        store = getattr(owner, "store", owner)  # a Store, or an object working through one (studies/claims.py)
        lost_at, attempt = None, 0
        try:
            while True:
                try:
                    result = operation(owner, *args, **kwargs)
                except ConnectionLost as err:
                    if store.reconnect_seconds <= 0:
                        raise
                    now = time.monotonic()
                    if lost_at is None:
                        lost_at = now
                        store.say(f"{err}; reconnecting for up to {store.reconnect_seconds:g} s")
                    if now - lost_at >= store.reconnect_seconds:
                        raise ConnectionLost(f"{store.label}: the database did not answer for "
                                             f"{store.reconnect_seconds:g} s; gave up (what was recorded before stays;"
                                             f" run the same command again to go on)") from None
                    time.sleep(min(0.5 * 2 ** attempt, 10.0))
                    attempt += 1
                    store.reconnect()
                    store.replaying = True
                    continue
                if lost_at is not None:
                    store.say(f"{store.label}: reconnected after {time.monotonic() - lost_at:.0f} s; going on")
                return result
        finally:
            if lost_at is not None:
                store.replaying = False
    return run


class Store:
    def __init__(self, location: Path | str, readonly: bool = False, create: bool = True,
                 reconnect_seconds: float = 0):
        """A SQLite file (a path) or a PostgreSQL database (a `postgresql://` URL).

        `readonly` opens without writing anything; `create=False` refuses a missing file instead of creating it.
        `path` is where files beside the store go (checkpoints, autosaved states, kept weights): next to a
        SQLite file, or for PostgreSQL in the URL's `files=DIR` folder; `label` names the store in messages.
        `reconnect_seconds`: how long an operation on a PostgreSQL store waits for a lost server to come back
        (drivers wait minutes; a reader fails at once)."""
        self.readonly = readonly
        self.reconnect_seconds = reconnect_seconds
        self.replaying = False  # an operation is being re-run after a lost connection (resilient)
        self.say: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True)
        # What a worker opens: the URL without its password, which reaches workers through libpq's PGPASSWORD
        # (share_password_with_workers), so that no job, queue or spilled Ray object ever carries it.
        self.worker_location, self._password = (without_password(location) if is_postgres(location)
                                                else (str(location), None))
        if is_postgres(location):
            self._url, self.label, files = split_postgres_url(str(location))
            self.path = files / f"{database_name(self._url)}.postgres"
            self._conn = self._open_postgres(create)
            return
        self._url = None
        self.path = Path(location)
        self.label = str(self.path)
        if self.path.parent and not self.path.parent.exists():
            raise StoreError(f"{self.path}: folder {self.path.parent} does not exist")
        if self.path.is_dir():
            raise StoreError(f"{self.path}: is a folder, not a store file")
        if (readonly or not create) and not self.path.is_file():
            raise StoreError(f"{self.path}: store file does not exist")
        try:
            self._conn = self._open_readonly() if readonly else self._open_writable()
        except sqlite3.DatabaseError as err:
            described = describe_sqlite_error(self.path, err, "opening it")
            raise StoreError(described if "damaged" in described else
                             f"{self.path}: not a usable steadytune store ({err})") from None

    @property
    def layout(self) -> StoreFiles:
        """Where the files beside this store live (states, snapshots, saved encoders)."""
        return StoreFiles(self.path)

    def share_password_with_workers(self) -> None:
        """Local worker processes inherit this process's environment: give them the URL's password as libpq's
        PGPASSWORD. Workers elsewhere (Ray nodes) read theirs from their own PGPASSWORD or ~/.pgpass."""
        if self._password is not None:
            os.environ["PGPASSWORD"] = self._password

    def connect(self):
        """A new connection to the same database (for another thread: connections stay in theirs)."""
        if self._url is not None:
            return PostgresConnection.open(self._url, readonly=False)
        return SqliteConnection.open(self.path, readonly=False, timeout=30)

    def _create_schema(self, conn) -> None:
        conn.begin_write()
        try:
            for statement in schema_sql(conn.dialect).split(";"):
                if statement.strip():
                    conn.execute(statement)
            for table, added in ADDED_COLUMNS.items():
                present = conn.columns(table)
                for column, kind in added.items():
                    if column not in present:
                        conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind.format(**TYPES[conn.dialect])}")
            # Trials started before this moment wrote their files before the store recorded their hashes.
            conn.execute("INSERT INTO store_meta (key, value) VALUES ('files_recorded_since', ?) ON CONFLICT (key)"
                         " DO NOTHING", (repr(time.time()),))
            # What names this store wherever it is opened from (a path, a URL with or without its password).
            conn.execute("INSERT INTO store_meta (key, value) VALUES ('store_id', ?) ON CONFLICT (key) DO NOTHING",
                         (uuid.uuid4().hex,))
        except BaseException:
            conn.rollback()
            raise
        conn.commit()

    def _open_postgres(self, create: bool):
        try:
            conn = PostgresConnection.open(self._url, readonly=self.readonly)
        except RuntimeError as err:
            raise StoreError(str(err)) from None
        except postgres_errors() as err:
            raise StoreError(f"{self.label}: cannot connect ({_one_line(err)})") from None
        try:
            if not self.readonly and create:
                self._create_schema(conn)
            missing = [t for t in TABLES if t not in conn.tables()]
        except postgres_errors() as err:
            conn.close()
            raise StoreError(f"{self.label}: store error while opening it ({_one_line(err)})") from None
        if missing:
            conn.close()
            raise StoreError(f"{self.label}: not a steadytune store (no {', '.join(missing)} table)")
        return conn

    def _open_writable(self) -> SqliteConnection:
        # SQLite needs to write the file and create its -wal and -shm files beside it; without that it says
        # only "unable to open database file", so name the cause first (os.access also sees read-only mounts).
        folder = self.path.parent if str(self.path.parent) else Path(".")
        unwritable = [p for p in (self.path, folder) if p.exists() and not os.access(p, os.W_OK)]
        if unwritable:
            raise StoreError(describe_sqlite_error(self.path, f"{unwritable[0]} is read-only", "opening it for writing"))
        try:
            conn = SqliteConnection.open(self.path, readonly=False)
            self._create_schema(conn)
        except sqlite3.OperationalError as err:
            raise StoreError(describe_sqlite_error(self.path, err, "opening it for writing")) from None
        return conn

    def _open_readonly(self) -> SqliteConnection:
        try:
            conn = SqliteConnection.open(self.path, readonly=True)
            tables = conn.tables()
        except sqlite3.OperationalError:
            # A WAL store whose folder we may not write cannot get its shared-memory file: read it as an
            # immutable file instead (nobody can be writing it through that folder either).
            conn = SqliteConnection.open(self.path, readonly=True, immutable=True)
            tables = conn.tables()
        missing = [t for t in TABLES if t not in tables]
        if missing:
            conn.close()
            raise StoreError(f"{self.path}: not a steadytune store (no {', '.join(missing)} table)")
        return conn

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _describe(self, err: BaseException, doing: str) -> str:
        if self._url is not None:
            return f"{self.label}: store error while {doing} ({_one_line(err)})"
        return describe_sqlite_error(self.path, err, doing)

    def _failure(self, err: BaseException, doing: str) -> StoreError:
        if self._conn.lost:
            return ConnectionLost(f"{self.label}: lost the connection to the database while {doing} "
                                  f"({_one_line(err)})")
        return StoreError(self._describe(err, doing))

    def reconnect(self) -> bool:
        """Open a new connection in place of a lost one; False while the server does not answer yet."""
        try:
            conn = PostgresConnection.open(self._url, readonly=self.readonly, timeout=10)
        except postgres_errors():
            return False
        try:
            self._conn.close()
        except postgres_errors():
            pass
        self._conn = conn
        return True

    @contextmanager
    def transaction(self, doing: str = "writing") -> Iterator[SqliteConnection | PostgresConnection]:
        """One writing transaction: writers queue for the lock up front, and a failure rolls everything back. Public
        for the modules that own a table's logic (studies/claims.py); `doing` names the work in an error."""
        conn = self._conn
        try:
            conn.begin_write()
            try:
                yield conn
            except BaseException:
                conn.rollback()
                raise
            conn.commit()
        except conn.errors as err:
            conn.rollback()
            raise self._failure(err, doing) from None

    @contextmanager
    def reading(self) -> Iterator[SqliteConnection | PostgresConnection]:
        """The connection, for reads: a database error becomes one StoreError line."""
        try:
            yield self._conn
        except (*self._conn.errors, pd.errors.DatabaseError) as err:
            raise self._failure(err, "reading") from None

    def frame(self, sql: str, params: tuple = ()) -> pd.DataFrame:
        """A query's rows as a DataFrame, typed as pandas.read_sql_query types them (one path for both databases)."""
        cursor = self._conn.execute(sql, params)
        columns = [c[0] for c in cursor.description]
        return pd.DataFrame.from_records(cursor.fetchall(), columns=columns, coerce_float=True)

    # --- studies -------------------------------------------------------------------------------
    @resilient
    def study_id(self, name: str, spec: dict) -> int:
        """Id of the study with this name, created on first use."""
        with self.transaction("creating a study") as db:
            row = db.execute("SELECT id FROM studies WHERE name = ?", (name,)).fetchone()
            if row:
                return row[0]
            return db.execute("INSERT INTO studies (name, spec_json, created_at) VALUES (?, ?, ?) RETURNING id",
                              (name, json.dumps(spec, sort_keys=True), time.time())).fetchone()[0]

    @resilient
    def study_names(self) -> dict[int, str]:
        with self.reading():
            return dict(self._conn.execute("SELECT id, name FROM studies").fetchall())

    # --- trials --------------------------------------------------------------------------------
    @resilient
    def start_trial(self, config: dict, trial_key: str, dropout_seed: int, study_id: int | None = None) -> int:
        """A trial about to train: status 'running' until finish_trial."""
        with self.transaction("starting a trial") as db:
            return self._insert_trial(db, config, trial_key, dropout_seed, study_id, time.time())

    @resilient
    def record_trial(self, config: dict, trial_key: str, dropout_seed: int, study_id: int | None,
                     outcome: TrialOutcome, points: Iterable[CurvePoint], started_at: float | None = None) -> int:
        """A finished attempt, all in one transaction, replacing unfinished attempts of the same trial in the study
        (interrupted, failed or stopped early), so a trial never appears twice; its claim is dropped with it."""
        with self.transaction("recording a trial") as db:
            if self.replaying and outcome.status in RESULT_STATUSES:  # its first try may have committed
                found = db.execute("SELECT id FROM trials WHERE trial_key = ? AND study_id IS NOT DISTINCT FROM ? AND"
                                   " status IN (?, ?)", (trial_key, study_id, *RESULT_STATUSES)).fetchone()
                if found is not None:
                    return found[0]
            db.execute("DELETE FROM trials WHERE trial_key = ? AND study_id IS NOT DISTINCT FROM ? AND status IN"
                       " (?, ?, ?)", (trial_key, study_id, TrialStatus.RUNNING, TrialStatus.FAILED, TrialStatus.STOPPED))
            trial_id = self._insert_trial(db, config, trial_key, dropout_seed, study_id,
                                          time.time() if started_at is None else started_at)
            self._finish(db, trial_id, outcome, points)
        return trial_id

    @staticmethod
    def _insert_trial(db: Connection, config: dict, trial_key: str, dropout_seed: int,
                      study_id: int | None, started_at: float) -> int:
        return db.execute(
            "INSERT INTO trials (study_id, trial_key, task, model, recipe, wi_seed, do_seed, dropout_seed,"
            " config_json, status, started_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (study_id, trial_key, config["task"], config["model"], config.get("recipe"), config["wi_seed"],
             config["do_seed"], dropout_seed, json.dumps(config, sort_keys=True), TrialStatus.RUNNING, started_at),
        ).fetchone()[0]

    @resilient
    def add_points(self, trial_id: int, points: Iterable[CurvePoint]) -> None:
        with self.transaction("writing curve points") as db:
            self._insert_points(db, trial_id, points)

    @resilient
    def finish_trial(self, trial_id: int, outcome: TrialOutcome, points: Iterable[CurvePoint] = ()) -> None:
        """Write the last curve rows and the terminal status atomically."""
        with self.transaction("finishing a trial") as db:
            self._finish(db, trial_id, outcome, points)

    def _finish(self, db: Connection, trial_id: int, outcome: TrialOutcome, points: Iterable[CurvePoint]) -> None:
        if outcome.status not in TERMINAL_STATUSES:
            raise ValueError(f"not a terminal status: {outcome.status}")
        self._insert_points(db, trial_id, points)
        outcome = self._with_curve_metrics(db, trial_id, outcome)
        self._record_files(db, [(self.file_name(path), sha256) for path, sha256 in outcome.files])
        # A cache entry's first use is its record: a later change to it is caught, and the entry rebuilt.
        db.executemany("INSERT INTO files (name, sha256, recorded_at) VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING",
                       [(CACHE_RECORD + name, checksum, time.time()) for name, checksum in outcome.cache_entries])
        db.execute(
            "UPDATE trials SET status=?, finished_at=?, wall_seconds=?, steps_done=?, total_steps=?, metric=?,"
            " final_metric=?, best_metric=?, best_step=?, baseline_metric=?, final_metrics_json=?,"
            " best_metrics_json=?, error=?, threads=?, device=?, data_hash=?, host=?, driver=?, slurm_job=? WHERE id=?",
            (str(outcome.status), time.time(), outcome.wall_seconds, outcome.steps_done, outcome.total_steps,
             outcome.metric, outcome.final_metrics.get(outcome.metric), outcome.best_metrics.get(outcome.metric),
             outcome.best_step, outcome.baseline_metric, json.dumps(outcome.final_metrics),
             json.dumps(outcome.best_metrics), outcome.error, outcome.threads, outcome.device, outcome.data_hash,
             outcome.host, outcome.driver, outcome.slurm_job, trial_id),
        )
        rows = []
        for predictions in outcome.predictions:
            if predictions.point == "best" and predictions.step != outcome.best_step:
                continue  # of another evaluation than the curve's best: not this trial's best predictions
            values = np.asarray(predictions.values)
            dtype, data = _encode_predictions(values)
            rows.append((trial_id, predictions.split, predictions.point, predictions.step, dtype, values.size, data))
        db.executemany("INSERT INTO predictions (trial_id, split, point, step, dtype, count, data)"
                       " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (trial_id, split, point) DO UPDATE SET"
                       " step = excluded.step, dtype = excluded.dtype, count = excluded.count, data = excluded.data",
                       rows)
        if outcome.status != TrialStatus.STOPPED:  # a stopped trial stays claimed until its continuation is recorded
            db.execute("DELETE FROM claims WHERE (trial_key, scope) IN (SELECT trial_key, coalesce(study_id, 0)"
                       " FROM trials WHERE id = ?)", (trial_id,))

    @staticmethod
    def _with_curve_metrics(db: Connection, trial_id: int, outcome: TrialOutcome) -> TrialOutcome:
        """The outcome with its best and final evaluations read from the trial's stored curve: a resumed trial's
        worker took them from a state file, and what the store can recompute it never takes from a file."""
        if outcome.status not in (*RESULT_STATUSES, TrialStatus.STOPPED) or not outcome.metric:
            return outcome
        rows = db.execute("SELECT step, split, metric, value FROM curves WHERE trial_id = ? AND split IN ('dev', "
                          "'test') ORDER BY step", (trial_id,)).fetchall()
        best, final = best_and_final(rows, outcome.metric)
        if best is None:
            return outcome
        best_step, best_metrics = best
        return replace(outcome, best_step=best_step, best_metrics=best_metrics,
                       final_metrics=final[1] if outcome.status != TrialStatus.DIVERGED else {})

    @staticmethod
    def _record_files(db: Connection, files: list[tuple[str, str]]) -> None:
        db.executemany("INSERT INTO files (name, sha256, recorded_at) VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE"
                       " SET sha256 = excluded.sha256, recorded_at = excluded.recorded_at",
                       [(name, sha256, time.time()) for name, sha256 in files])

    # --- files beside the store ----------------------------------------------------------------
    def file_name(self, path: Path | str) -> str:
        """How the store names a file beside it: relative to its folder (so a moved folder keeps its records)."""
        path, folder = Path(path).resolve(), self.path.parent.resolve()
        return path.relative_to(folder).as_posix() if path.is_relative_to(folder) else path.as_posix()

    @resilient
    def record_files(self, files: Iterable[tuple[Path | str, str]]) -> None:
        """Record (path, sha256) of files just written beside the store (an autosaved state)."""
        named = [(self.file_name(path), sha256) for path, sha256 in files]
        with self.transaction("recording file hashes") as db:
            self._record_files(db, named)

    @resilient
    def recorded_hash(self, path: Path | str) -> str | None:
        """The sha256 the store recorded when the file was written; None if it recorded none."""
        with self.reading():
            if "files" not in self._conn.tables():
                return None
            row = self._conn.execute("SELECT sha256 FROM files WHERE name = ?", (self.file_name(path),)).fetchone()
        return row[0] if row else None

    @resilient
    def cache_records(self) -> dict[str, str]:
        """Tokenization cache entry name -> the checksum recorded when a trial of this store first used it."""
        with self.reading():
            if "files" not in self._conn.tables():
                return {}
            rows = self._conn.execute("SELECT name, sha256 FROM files WHERE name LIKE ?", (CACHE_RECORD + "%",))
            return {name[len(CACHE_RECORD):]: sha256 for name, sha256 in rows.fetchall()}

    @resilient
    def files_recorded_since(self) -> float:
        """When this store began recording its files' hashes: trials started before wrote theirs unrecorded."""
        with self.reading():
            if "store_meta" not in self._conn.tables():
                return float("inf")
            row = self._conn.execute("SELECT value FROM store_meta WHERE key = 'files_recorded_since'").fetchone()
        try:
            return float(row[0]) if row else float("inf")
        except (TypeError, ValueError):
            return float("inf")

    @resilient
    def remember(self, key: str, value: str) -> None:
        """Keep a small record in the store (store_meta), such as a policy's decision, so a resumed run reads it."""
        with self.transaction("recording a decision") as db:
            db.execute("INSERT INTO store_meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING", (key, value))

    @resilient
    def recalled(self, key: str) -> str | None:
        with self.reading() as db:
            row = db.execute("SELECT value FROM store_meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    @property
    def store_id(self) -> str:
        """This store's own id, kept in it: the same through any path or URL it is opened by. A store last written by
        a version before the id existed (and opened read-only since) is named by its label instead."""
        with self.reading():
            row = (self._conn.execute("SELECT value FROM store_meta WHERE key = 'store_id'").fetchone()
                   if "store_meta" in self._conn.tables() else None)
        return row[0] if row and isinstance(row[0], str) else self.label

    @staticmethod
    def _insert_points(db: Connection, trial_id: int, points: Iterable[CurvePoint]) -> None:
        db.executemany("INSERT INTO curves (trial_id, step, epoch, split, metric, value) VALUES (?, ?, ?, ?, ?, ?)"
                       " ON CONFLICT (trial_id, split, metric, step) DO UPDATE SET epoch = excluded.epoch,"
                       " value = excluded.value",
                       ((trial_id, p.step, p.epoch, p.split, p.metric, p.value) for p in points))

    @resilient
    def latest_trial(self, trial_key: str, study_id: int | None) -> dict | None:
        """The newest attempt of a trial in a study (None: the trials run outside any study)."""
        with self.reading():
            cursor = self._conn.execute("SELECT * FROM trials WHERE trial_key = ? AND study_id IS NOT DISTINCT FROM ?"
                                        " ORDER BY id DESC"
                                      " LIMIT 1", (trial_key, study_id))
            row = cursor.fetchone()
        return dict(zip([c[0] for c in cursor.description], row)) if row else None

    @resilient
    def latest_statuses(self, study_id: int | None) -> dict[str, str]:
        """trial key -> the status of its latest attempt, for every trial of a study."""
        with self.reading() as db:
            return dict(db.execute("SELECT trial_key, status FROM trials WHERE study_id IS NOT DISTINCT FROM ? ORDER"
                                   " BY id", (study_id,)).fetchall())

    @resilient
    def dev_score_at(self, trial_id: int, step: int) -> float | None:
        """The trial's primary dev metric at its latest evaluation at or before `step`."""
        with self.reading():
            row = self._conn.execute("SELECT c.value FROM curves c JOIN trials t ON t.id = c.trial_id WHERE"
                                   " c.trial_id = ? AND c.split = 'dev' AND c.metric = t.metric AND c.step <= ?"
                                   " ORDER BY c.step DESC LIMIT 1", (trial_id, step)).fetchone()
        return row[0] if row else None

    @resilient
    def trial_config(self, trial_id: int) -> tuple[dict, str, str]:
        """A trial's resolved config, trial key and status."""
        row = self.trial_row(trial_id)
        return json.loads(row["config_json"]), row["trial_key"], row["status"]

    @resilient
    def trial_row(self, trial_id: int) -> dict:
        with self.reading():
            cursor = self._conn.execute("SELECT * FROM trials WHERE id = ?", (trial_id,))
            row = cursor.fetchone()
        if row is None:
            raise StoreError(f"{self.path} has no trial {trial_id}")
        return dict(zip([c[0] for c in cursor.description], row))

    @resilient
    def outcome(self, trial_id: int) -> TrialOutcome:
        """A recorded trial's outcome, as it was reported when it finished."""
        row = self.trial_row(trial_id)
        if row["status"] not in TERMINAL_STATUSES:
            raise StoreError(f"{self.path}: trial {trial_id} has not finished ({row['status']})")
        return TrialOutcome(status=row["status"], steps_done=row["steps_done"] or 0, total_steps=row["total_steps"] or 0,
                            metric=row["metric"] or "", final_metrics=json.loads(row["final_metrics_json"] or "{}"),
                            best_metrics=json.loads(row["best_metrics_json"] or "{}"), best_step=row["best_step"],
                            baseline_metric=row["baseline_metric"], wall_seconds=row["wall_seconds"] or 0.0,
                            error=row["error"], threads=row.get("threads"), device=row.get("device"),
                            data_hash=row.get("data_hash"))

    @resilient
    def thread_counts(self, study_id: int | None) -> dict[int, int]:
        """Torch thread counts of the study's finished trials, with how many trials ran with each."""
        with self.reading():
            rows = self._conn.execute("SELECT threads, count(*) FROM trials WHERE study_id IS NOT DISTINCT FROM ? AND threads IS NOT NULL"
                                    " AND status IN (?, ?, ?) GROUP BY threads",
                                    (study_id, *RESULT_STATUSES, TrialStatus.STOPPED)).fetchall()
        return dict(rows)

    @resilient
    def forecast_stop(self, trial_id: int, note: str) -> None:
        """A trial paused at the forecaster's fraction and flagged: terminal `forecast-stopped`, its curve kept, its
        claim dropped (its replacement is another trial)."""
        if not self.holds_forecast_stops():
            raise StoreError(f"{self.label} was created before forecast-stopped trials existed; run --policy replace "
                             f"on a new store")
        with self.transaction("recording a forecast stop") as db:
            db.execute("UPDATE trials SET status = ?, error = ? WHERE id = ? AND status = ?",
                       (TrialStatus.FORECAST_STOPPED, note, trial_id, TrialStatus.STOPPED))
            db.execute("DELETE FROM claims WHERE (trial_key, scope) IN (SELECT trial_key, coalesce(study_id, 0)"
                       " FROM trials WHERE id = ?)", (trial_id,))

    @resilient
    def holds_forecast_stops(self) -> bool:
        """Whether the trials table admits the forecast-stopped status (SQLite stores made before it do not)."""
        query = ("SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'trials'::regclass AND contype"
                 " = 'c'" if self._url is not None else "SELECT sql FROM sqlite_master WHERE type = 'table' AND name ="
                 " 'trials'")
        with self.reading():
            rows = self._conn.execute(query).fetchall()
        return any(TrialStatus.FORECAST_STOPPED in row[0] for row in rows)

    # --- reading -------------------------------------------------------------------------------
    @resilient
    def trials(self) -> pd.DataFrame:
        """One row per trial; the resolved config flattened into `cfg.*` columns (a flat results table)."""
        with self.reading():
            frame = self.frame("SELECT * FROM trials ORDER BY id")
        for column in ADDED_COLUMNS["trials"]:  # an older store opened read-only
            if column not in frame:
                frame[column] = None
        configs = pd.json_normalize([json.loads(c) for c in frame["config_json"]]) if len(frame) else pd.DataFrame()
        configs.columns = [f"cfg.{c}" for c in configs.columns]
        return pd.concat([frame.drop(columns=["config_json"]), configs], axis=1)

    @resilient
    def predictions(self, trial_ids: Iterable[int] | None = None) -> pd.DataFrame:
        """Long format: trial_id, split, point, step, example, value (class id or regression value).

        Rows are checked as they are read (a known dtype, a length that matches the count); a store without the
        table (older, or read-only) has none."""
        query, params = "SELECT trial_id, split, point, step, dtype, count, data FROM predictions", ()
        if trial_ids is not None:
            params = tuple(int(t) for t in trial_ids)
            query += f" WHERE trial_id IN ({','.join('?' * len(params))})"
        with self.reading():
            if "predictions" not in self._conn.tables():
                rows = []
            else:
                rows = self._conn.execute(query + " ORDER BY trial_id, split, point", params).fetchall()
        frames = []
        for trial_id, split, point, step, dtype, count, data in rows:
            kind = PREDICTION_DTYPES.get(dtype)
            if kind is None or not isinstance(data, bytes) or len(data) != int(count) * kind.itemsize:
                raise StoreError(f"{self.path}: the stored predictions of trial {trial_id} ({split}, {point}) are damaged")
            values = np.frombuffer(data, dtype=kind)
            frames.append(pd.DataFrame({"trial_id": trial_id, "split": split, "point": point, "step": step,
                                        "example": np.arange(values.size), "value": values.astype(float)}))
        if not frames:
            return pd.DataFrame(columns=["trial_id", "split", "point", "step", "example", "value"])
        return pd.concat(frames, ignore_index=True)

    @resilient
    def curves(self, trial_ids: Iterable[int] | None = None) -> pd.DataFrame:
        query = "SELECT * FROM curves"
        params: tuple = ()
        if trial_ids is not None:
            ids = tuple(trial_ids)
            query += f" WHERE trial_id IN ({','.join('?' * len(ids))})"
            params = ids
        with self.reading():
            return self.frame(query + " ORDER BY trial_id, split, metric, step", params)


def store_folder_made(location: str | Path) -> str | Path:
    """A SQLite store's folder, created if missing (`runs/` the first time); a URL as it is. For the commands that
    write a store: readers still say in one line that a store is missing."""
    if not is_postgres(location):
        Path(location).parent.mkdir(parents=True, exist_ok=True)
    return location


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())


def export(store: Store, what: str, fmt: str, out: Path) -> int:
    """Write trials, curves or predictions as CSV or Parquet; returns the number of rows written."""
    frame = {"trials": store.trials, "curves": store.curves, "predictions": store.predictions}[what]()
    if fmt == "csv":
        frame.to_csv(out, index=False)
    else:
        frame.to_parquet(out, index=False)
    return len(frame)
