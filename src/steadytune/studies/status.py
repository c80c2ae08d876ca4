"""Where a study stands while its drivers run: `steadytune study status` and `steadytune studies`.

Read from the store alone, so it works from any machine that can reach it: finished trials from `trials`, the
running ones from their live claims (their driver's host and pid, how long ago the lease was renewed, and the step
the worker last reported), the drivers alive from their heartbeats, and what is still queued from the study's spec.
"""
from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass, field

from ..errors import StoreError
from ..storage.store import Store
from ..training.records import TrialStatus
from .claims import LEASE_SECONDS, owner_is_gone
from .policies import FORECAST_PASS_DONE


@dataclass(frozen=True)
class RunningTrial:
    trial_key: str
    trial: str  # task and seeds, as the spec names the trial ("" for a trial the spec does not list)
    driver: str  # host:pid of the driver that claimed it
    running_for: float  # seconds since it was claimed
    lease_age: float  # seconds since its driver last renewed the claim
    step: int | None  # as its worker last reported (at an evaluation); None before the first
    total_steps: int | None


@dataclass(frozen=True)
class StudyStatus:
    name: str
    study_id: int
    planned: int  # trials the spec asks for (replacements of --policy replace come on top)
    statuses: dict[TrialStatus, int]  # latest attempt of each trial, by status
    running: list[RunningTrial]
    queued: int  # planned trials not started yet
    drivers: list[str]  # host:pid of each driver alive (heartbeat within a lease)
    eta_seconds: float | None  # from the recorded trials' times and the trials left; None before any finished
    cancelled: bool = False
    notes: list[str] = field(default_factory=list)

    def count(self, status: TrialStatus) -> int:
        return self.statuses.get(status, 0)


def planned_trials(spec_json: str) -> dict[str, str]:
    """trial key -> "task wi/do" of every trial a stored spec plans; {} for a spec this version cannot read."""
    from pydantic import ValidationError

    from ..config import ConfigError
    from .spec import StudySpec, expand

    try:
        spec = StudySpec(**json.loads(spec_json))
        trials = expand(spec)
    except (ValueError, TypeError, ValidationError, ConfigError):
        return {}
    return {t.config.trial_key(): f"{t.config.task} wi{t.config.wi_seed} do{t.config.do_seed}"
            + (f" {t.group[1]}" if t.group[1] else "") for t in trials}


def _driver(owner: str) -> str:
    return owner.rpartition(":")[0] or owner


def study_status(store: Store, names: list[str] | None = None, now: float | None = None) -> list[StudyStatus]:
    """The status of each study of the store (or of those named), oldest first."""
    now = time.time() if now is None else now
    with store.reading() as db:
        columns = db.columns("studies")
        studies = db.execute("SELECT id, name, spec_json" + (", cancelled_at" if "cancelled_at" in columns else "")
                             + " FROM studies ORDER BY id").fetchall()
        tables = db.tables()
    known = {row[1] for row in studies}
    missing = [name for name in names or [] if name not in known]
    if missing:
        raise StoreError(f"{store.label}: no study named {missing[0]!r} (studies: "
                         f"{', '.join(sorted(known)) or 'none'})")
    return [_one(store, row, tables, now) for row in studies if not names or row[1] in names]


def _one(store: Store, row: tuple, tables: set[str], now: float) -> StudyStatus:
    study_id, name, spec_json = row[:3]
    cancelled = len(row) > 3 and row[3] is not None
    planned = planned_trials(spec_json)
    with store.reading() as db:
        latest = dict(db.execute("SELECT trial_key, status FROM trials WHERE study_id = ? ORDER BY id",
                                 (study_id,)).fetchall())
        times = [r[0] for r in db.execute("SELECT wall_seconds FROM trials WHERE study_id = ? AND status = ? AND"
                                          " wall_seconds IS NOT NULL", (study_id, TrialStatus.COMPLETE)).fetchall()]
        claims = (db.execute("SELECT trial_key, owner, expires_at, claimed_at, step, total_steps FROM claims WHERE"
                             " scope = ? AND expires_at > ?", (study_id, now)).fetchall()
                  if "claimed_at" in db.columns("claims") else [])
        drivers = (db.execute("SELECT owner FROM drivers WHERE scope = ? AND seen_at > ? ORDER BY started_at",
                              (study_id, now - LEASE_SECONDS)).fetchall() if "drivers" in tables else [])
    statuses: dict[TrialStatus, int] = {}
    for status in latest.values():
        statuses[TrialStatus(status)] = statuses.get(TrialStatus(status), 0) + 1
    running = [RunningTrial(key, planned.get(key, ""), _driver(owner), now - (claimed_at or now),
                            now - (expires_at - LEASE_SECONDS), step, total)
               for key, owner, expires_at, claimed_at, step, total in claims
               if latest.get(key) not in FORECAST_PASS_DONE and not owner_is_gone(owner)]
    running_keys = {trial.trial_key for trial in running}
    queued = sum(key not in latest and key not in running_keys for key in planned)
    left = queued + statuses.get(TrialStatus.FAILED, 0) + sum(
        1 - (t.step or 0) / t.total_steps if t.total_steps else 1 for t in running)
    eta = statistics.median(times) * left / max(1, len(running)) if times and left and not cancelled else None
    notes = [] if planned else ["its spec was written by another version: trials not yet started are not counted"]
    return StudyStatus(name, study_id, len(planned), statuses, running, queued,
                       [_driver(owner) for (owner,) in drivers if not owner_is_gone(owner)], eta, cancelled, notes)


def cancel(store: Store, name: str, undo: bool = False) -> int:
    """Mark a study cancelled (no driver claims another of its trials; running ones finish), or no longer; returns
    its id."""
    with store.transaction("cancelling a study") as db:
        row = db.execute("SELECT id FROM studies WHERE name = ?", (name,)).fetchone()
        if row is None:
            names = [r[0] for r in db.execute("SELECT name FROM studies ORDER BY id").fetchall()]
            raise StoreError(f"{store.label}: no study named {name!r} (studies: {', '.join(names) or 'none'})")
        db.execute("UPDATE studies SET cancelled_at = ? WHERE id = ?", (None if undo else time.time(), row[0]))
    return row[0]
