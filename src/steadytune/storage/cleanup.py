"""`steadytune gc`: remove the files beside a store that no trial can use any more, and say how many bytes that freed.

What goes (training/layout.py names the folders):
- a study trial's saved state (its cut, or its latest autosave) once the trial's latest attempt in that study has
  ended for good (complete, diverged, forecast-stopped), or when the store holds no such study: the runner drops
  it then, and a driver killed in between leaves it behind;
- the snapshots of a trial key that has no result and no live claim: written by attempts that failed or were
  interrupted, which a rerun writes again, identically.

What stays: the state of a trial paused at its cut (`stopped`, to be continued), of one interrupted or failed
(its rerun continues from it), the snapshots of every trial with a result (landscapes and soups read them) or in
progress, saved encoders (`--init-from` names them by trial id), and any file this module does not recognize.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from ..training.layout import TRIAL_KEY
from ..training.records import RESULT_STATUSES, TrialStatus
from .store import Store

ENDED_FOR_GOOD = (*RESULT_STATUSES, TrialStatus.FORECAST_STOPPED)


@dataclass(frozen=True)
class Removable:
    path: Path
    size: int
    why: str


def removable(store: Store) -> list[Removable]:
    """The files beside the store that no trial can use, with why each can go."""
    with store.reading() as db:
        studies = {row[0] for row in db.execute("SELECT id FROM studies").fetchall()}
        latest = {(study, key): status for study, key, status in db.execute(
            "SELECT study_id, trial_key, status FROM trials ORDER BY id").fetchall()}
        claimed = {key for (key,) in db.execute("SELECT trial_key FROM claims WHERE expires_at > ?",
                                                 (time.time(),)).fetchall()}
    with_result = {key for (_, key), status in latest.items() if status in RESULT_STATUSES}
    continuing = {key for (_, key), status in latest.items() if status == TrialStatus.STOPPED}
    found = []
    states = store.layout.states
    for path in sorted(states.glob("study*-*.safetensors")) if states.is_dir() else []:
        named = store.layout.state_of(path)
        if named is None:
            continue
        study, key = named
        if study not in studies:
            found.append(Removable(path, path.stat().st_size, f"state of study {study}, which the store does not hold"))
        elif latest.get((study, key)) in ENDED_FOR_GOOD:
            found.append(Removable(path, path.stat().st_size, f"state of a trial that is {latest[(study, key)]}"))
    snapshots = store.layout.checkpoints
    for folder in sorted(snapshots.iterdir()) if snapshots.is_dir() else []:
        key = folder.name
        if not (folder.is_dir() and TRIAL_KEY.fullmatch(key)) or key in with_result | continuing | claimed:
            continue
        for path in sorted(folder.glob("step-*.safetensors")):
            found.append(Removable(path, path.stat().st_size, "snapshot of a trial with no result and none running"))
    return found


def collect(store: Store, dry_run: bool = False) -> list[Removable]:
    """Remove what `removable` finds (unless `dry_run`), with the store's records of those files."""
    found = removable(store)
    if dry_run or not found:
        return found
    for item in found:
        item.path.unlink(missing_ok=True)
        if item.path.parent != store.layout.states and not any(item.path.parent.iterdir()):
            item.path.parent.rmdir()  # a trial's snapshot folder, now empty
    with store.transaction("forgetting removed files") as db:
        db.executemany("DELETE FROM files WHERE name = ?", [(store.file_name(item.path),) for item in found])
    return found
