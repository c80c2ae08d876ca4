"""steadytune: measurable, stable fine-tuning of pretrained transformer encoders on small datasets.

The Python API, for notebooks (each function imports what it needs when called, so `import steadytune` stays
light; see docs/reference/api.md, whose examples a test runs):
- `open_store(location)`: a store's result trials, curves and predictions as DataFrames, for `steadytune.analysis`;
- `train(config)`: one trial, recorded in a store;
- `run_study(spec)`: a seed study, resumable like `steadytune study run`;
- `TrialStatus`: where a trial stands (complete, diverged, stopped, failed, forecast-stopped, running).
"""
from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .training.records import TrialStatus

__all__ = ["TrialStatus", "open_store", "run_study", "train"]

if TYPE_CHECKING:
    from .analysis.results import Results
    from .config import RunOptions, TrialConfig
    from .studies.runner import StudySummary
    from .studies.spec import StudySpec
    from .training.records import TrialOutcome

try:
    __version__ = version("steadytune")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0+unknown"

# The pid of a study driver, set in the environment only while it spawns a worker (studies.executors._Worker).
WATCHED_DRIVER = "STEADYTUNE_DRIVER_PID"


def _exit_when_orphaned(driver_pid: int) -> None:
    """A worker whose driver died has nobody to report to: exit now rather than finish the trial."""
    while True:
        time.sleep(0.5)
        if os.getppid() != driver_pid:
            os._exit(1)


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        pass
    return False


# Started on the package's first import, before the seconds (minutes, on a loaded machine) a spawned worker spends
# importing torch and the rest: a worker whose driver is killed then exits at any stage, never left orphaned.
if (_driver := os.environ.pop(WATCHED_DRIVER, "")).isdigit():  # consumed: nothing this process starts inherits it
    if int(_driver) == os.getppid():
        threading.Thread(target=_exit_when_orphaned, args=(int(_driver),), daemon=True,
                         name="steadytune-orphan-watch").start()
    elif _gone(int(_driver)):  # the driver died before this worker got this far
        os._exit(1)


def open_store(location: str | Path, studies: Sequence[str] = ()) -> Results:
    """The result trials of a store (a SQLite file or a postgresql:// URL), read-only: `.trials` (one row per
    result trial, with its `arm` and scores), `.curves`, `.predictions` and `.all_trials` as DataFrames, the input
    of every function of `steadytune.analysis`. `studies`: only those studies' trials."""
    from .analysis.results import load_results

    return load_results(location, studies=studies)


def train(config: TrialConfig | Mapping[str, Any], store: str | Path = "runs/steadytune.db",
          options: RunOptions | Mapping[str, Any] | None = None) -> TrialOutcome:
    """Train one trial and record it in `store`, as `steadytune train` does: a config the store has finished is
    not trained again (its recorded outcome is returned). `config` is a TrialConfig or its fields as a dict (the
    defaults are Devlin et al.'s); `options`: RunOptions or their fields (device, threads, cache_dir, ...)."""
    from .config import RunOptions, TrialConfig, build_config
    from .storage.store import Store, store_folder_made
    from .studies.single import run_stored

    config = config if isinstance(config, TrialConfig) else build_config(dict(config))
    options = options if isinstance(options, RunOptions) else RunOptions(**dict(options or {}))
    with Store(store_folder_made(store)) as db:
        return run_stored(config, options, db)[1]


def run_study(spec: StudySpec | Mapping[str, Any] | str | Path, store: str | Path = "runs/steadytune.db",
              options: RunOptions | Mapping[str, Any] | None = None, workers: int = 1) -> StudySummary:
    """Run a seed study (a StudySpec, its fields as a dict, or a YAML/TOML spec file) in `store`, in `workers`
    processes, as `steadytune study run` does: finished trials are skipped, so a second call resumes. Returns a
    StudySummary: the study's trials, how many this call ran, its compute, and `count(status)` of each TrialStatus."""
    from .config import RunOptions
    from .storage.store import Store, store_folder_made
    from .studies.executors import Executor
    from .studies.runner import StudyRunner
    from .studies.spec import StudySpec, load_spec

    if isinstance(spec, (str, Path)):
        spec = load_spec(Path(spec), {})
    elif not isinstance(spec, StudySpec):
        spec = StudySpec(**dict(spec))
    options = options if isinstance(options, RunOptions) else RunOptions(**dict(options or {}))
    with Store(store_folder_made(store)) as db:
        return StudyRunner(spec, db, options, Executor(workers=workers)).run()
