"""Errors that several modules raise (data, tasks, trials, studies, the command line); each message is one line
for the user. They live here, importing nothing, so that no module needs another just for its error."""
from __future__ import annotations


class Interrupted(Exception):
    """The user stopped the work (Ctrl-C); the message says what was kept and how to resume."""


class TrialError(RuntimeError):
    """A trial failed while training; it is recorded as `failed` and the message says what was kept."""


class DataError(ValueError):
    """Bad or missing input data; the message is one line naming the file, the line and the problem."""


class ConfigError(ValueError):
    """A config file or flag combination that cannot describe a trial."""


class StoreError(RuntimeError):
    """The store file cannot be opened or written, or is not a steadytune store; the message is one line."""


class CheckpointError(FileNotFoundError):
    """Snapshots or saved states are missing or damaged, or cannot be written; the message is one line."""
