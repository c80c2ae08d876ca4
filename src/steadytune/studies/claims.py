"""Who runs which trial: claims with an expiring lease, so drivers that share a store never run one trial twice.

Before a process trains a trial, it claims it: a row in the store's `claims` table naming its owner and an expiry.
The claim is checked and taken in one transaction with the check that the trial has no result yet, so of two
drivers asking at once exactly one gets it, and the store drops it in the transaction that records the result.
While a process works, a heartbeat thread renews its claims every third of the lease. A killed process stops
renewing and its claims lapse, so another driver takes its trials over: after the lease, or at once when the owner
ran on this host and its pid is gone. The `train` command and a study's runner take claims the same way (`Claims`).
"""
from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from enum import StrEnum

from ..storage.store import Store, resilient

# How long a claim lives without a heartbeat; a live driver renews it every third of that.
LEASE_SECONDS = float(os.environ.get("STEADYTUNE_LEASE_SECONDS", 60))


class Claim(StrEnum):
    """The answer to a claim."""

    CLAIMED = "claimed"  # this owner runs the trial now
    DONE = "done"  # its latest attempt already ended in one of the statuses asked about
    BUSY = "busy"  # another live owner holds it
    CANCELLED = "cancelled"  # its study was cancelled (`study cancel`): no more of its trials start


def new_owner() -> str:
    """A process's identity in `claims`: unique, and readable in messages (host and pid)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def owner_is_gone(owner: str) -> bool:
    """Whether a claim's owner is a process of this host that no longer exists (killed, say): its claims need not
    wait out their lease. Owners on other hosts, and live processes, are not gone."""
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)  # signal 0 only asks whether the process exists
    except ProcessLookupError:
        return True
    except PermissionError:  # it exists, as another user's
        pass
    return False


class Claims:
    """One owner's claims on the trials of one study (or of no study) in a store.

    Used as a context manager, it renews the owner's claims from a heartbeat thread while the block runs (on its
    own connection: connections stay in their thread) and releases every claim it still holds at the end, so other
    drivers can take those trials at once. `clock` is the time source of expiries (tests move it by hand).
    """

    def __init__(self, store: Store, study_id: int | None, owner: str | None = None,
                 lease_seconds: float = LEASE_SECONDS, clock: Callable[[], float] = time.time):
        self.store, self.scope = store, study_id or 0
        self.study_id = study_id
        self.owner = owner or new_owner()
        self.lease_seconds, self.clock = lease_seconds, clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @resilient
    def take(self, trial_key: str, done_statuses: Iterable[str]) -> Claim:
        """Claim the trial unless its latest attempt already ended in one of `done_statuses`, or its study is
        cancelled; renewing one's own claim is a claim. A claim whose owner's lease has lapsed, or whose owner is
        gone, is taken over."""
        done = tuple(done_statuses)
        now = self.clock()
        with self.store.transaction("claiming a trial") as db:
            study = (db.execute("SELECT cancelled_at FROM studies WHERE id = ?", (self.study_id,)).fetchone()
                     if self.study_id is not None else None)
            if study is not None and study[0] is not None:
                return Claim.CANCELLED
            row = db.execute("SELECT status FROM trials WHERE trial_key = ? AND study_id IS NOT DISTINCT FROM ?"
                             " ORDER BY id DESC LIMIT 1", (trial_key, self.study_id)).fetchone()
            if row is not None and row[0] in done:
                return Claim.DONE
            holder = db.execute("SELECT owner, expires_at FROM claims WHERE trial_key = ? AND scope = ?",
                                (trial_key, self.scope)).fetchone()
            if holder is not None and holder[0] != self.owner and holder[1] > now and not owner_is_gone(holder[0]):
                return Claim.BUSY
            db.execute("INSERT INTO claims (trial_key, scope, owner, expires_at, claimed_at) VALUES (?, ?, ?, ?, ?)"
                       " ON CONFLICT (trial_key, scope) DO UPDATE SET owner = excluded.owner, expires_at ="
                       " excluded.expires_at, claimed_at = excluded.claimed_at, step = NULL, total_steps = NULL",
                       (trial_key, self.scope, self.owner, now + self.lease_seconds, now))
            return Claim.CLAIMED

    @resilient
    def holder(self, trial_key: str) -> str | None:
        """Who holds a live claim on the trial, if anyone."""
        with self.store.reading() as db:
            row = db.execute("SELECT owner FROM claims WHERE trial_key = ? AND scope = ? AND expires_at > ?",
                             (trial_key, self.scope, self.clock())).fetchone()
        return row[0] if row else None

    def renew(self, conn=None) -> None:
        """Push the expiry of every claim of this owner one lease ahead, and say it is alive (the heartbeat)."""
        now = self.clock()
        statements = [("UPDATE claims SET expires_at = ? WHERE owner = ?", (now + self.lease_seconds, self.owner)),
                      ("UPDATE drivers SET seen_at = ? WHERE owner = ?", (now, self.owner))]
        if conn is not None:
            for sql, params in statements:
                conn.execute(sql, params)
            return
        with self.store.transaction("renewing claims") as db:
            for sql, params in statements:
                db.execute(sql, params)

    @resilient
    def release(self) -> None:
        """Drop every claim of this owner (it stops early), so others can run those trials at once, and its entry
        among the live drivers."""
        with self.store.transaction("releasing claims") as db:
            db.execute("DELETE FROM claims WHERE owner = ?", (self.owner,))
            db.execute("DELETE FROM drivers WHERE owner = ?", (self.owner,))

    @resilient
    def _arrive(self) -> None:
        now = self.clock()
        with self.store.transaction("registering a driver") as db:
            db.execute("INSERT INTO drivers (owner, scope, started_at, seen_at) VALUES (?, ?, ?, ?) ON CONFLICT"
                       " (owner) DO UPDATE SET seen_at = excluded.seen_at", (self.owner, self.scope, now, now))

    def __enter__(self) -> Claims:
        self._arrive()
        self._thread = threading.Thread(target=self._beat, name="steadytune-lease", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.release()

    def _beat(self) -> None:
        while not self._stop.wait(self.lease_seconds / 3):
            try:
                conn = self.store.connect()
                try:
                    self.renew(conn)
                finally:
                    conn.close()
            except Exception:  # noqa: BLE001 - any database error: the next beat tries again
                pass  # a claim that lapses meanwhile is only re-run, never lost


def report_progress(store: Store, trial_key: str, study_id: int | None, step: int, total_steps: int) -> None:
    """Where a claimed trial stands, as its worker reports it at each evaluation: `study status` shows it."""
    with store.transaction("reporting progress") as db:
        db.execute("UPDATE claims SET step = ?, total_steps = ? WHERE trial_key = ? AND scope = ?",
                   (step, total_steps, trial_key, study_id or 0))
