"""The files a store keeps beside itself, named in one place.

For a store `runs/study.db` (for PostgreSQL, `<files folder>/<database>.postgres`: the `files=DIR` of its URL):

    runs/study-states/study<id>-<trial key>.safetensors   a study's paused or autosaved trials (training/state_file.py)
    runs/study-checkpoints/<trial key>/step-<N>.safetensors  snapshots and kept weights (training/checkpoints.py)
    runs/study-models/trial-<id>/                       fine-tuned encoders (--save-model), for --init-from

Training writes all three, which is why this module lives here and not with the store: training may not import
storage. Every name read from a store file is checked first, since a damaged or forged store must not be able to
point a reader at another path. Each file's sha256 is recorded in the store (the `files` table).
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import CheckpointError

TRIAL_KEY = re.compile(r"[0-9a-f]{16}")  # what trial keys look like (config.TrialConfig.trial_key)
_STATE = re.compile(r"study(\d+)-([0-9a-f]{16})\.safetensors")


@dataclass(frozen=True)
class StoreFiles:
    """Where the files of the store at `store_path` live."""

    store_path: Path

    def _beside(self, kind: str) -> Path:
        return self.store_path.parent / f"{self.store_path.stem}-{kind}"

    @property
    def states(self) -> Path:
        return self._beside("states")

    @property
    def checkpoints(self) -> Path:
        """The folder of every trial's snapshot folder."""
        return self._beside("checkpoints")

    @staticmethod
    def state_of(path: Path) -> tuple[int, str] | None:
        """(study id, trial key) of a state file named as `state` names it; None for any other name."""
        match = _STATE.fullmatch(path.name)
        return (int(match.group(1)), match.group(2)) if match else None

    def state(self, study_id: int, trial_key: str) -> Path:
        """A study trial's saved state: its cut (early stopping) or its latest autosave."""
        return self.states / f"study{study_id}-{self._checked(trial_key)}.safetensors"

    def snapshots(self, trial_key: str) -> Path:
        """The folder of a trial's snapshots and kept weights: by trial key, so a rerun of one config overwrites
        identical files."""
        return self.checkpoints / self._checked(trial_key)

    def model(self, trial_id: int) -> Path:
        """The folder of a trial's fine-tuned encoder (--save-model)."""
        return self._beside("models") / f"trial-{int(trial_id)}"

    def _checked(self, trial_key: str) -> str:
        if not isinstance(trial_key, str) or not TRIAL_KEY.fullmatch(trial_key):
            raise CheckpointError(f"{self.store_path}: {trial_key!r} is not a trial key (16 hex digits); the store "
                                  f"may be damaged")
        return trial_key


def file_sha256(path: Path | str) -> str:
    """sha256 of a file's bytes: what the store records of each file written beside it."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def unrecorded(path: Path, recorded: str | None, what: str) -> str | None:
    """Why a file beside a store (a `what`: snapshot, state) is not the one the store recorded when it was written;
    None when its bytes are. Every reader of such a file asks this before trusting it."""
    if recorded is None:
        return f"{path}: the store holds no record of this {what} (not written by a run the store recorded)"
    try:
        actual = file_sha256(path)
    except OSError as err:
        return f"{path}: cannot read the {what} ({err.strerror or err})"
    if actual != recorded:
        return f"{path}: {what} differs from the one the store recorded when it was written (changed or replaced)"
    return None
