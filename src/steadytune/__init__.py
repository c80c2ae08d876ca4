"""steadytune: measurable, stable fine-tuning of pretrained transformer encoders on small datasets."""
import os
import threading
import time
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("steadytune")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0+unknown"

# The pid of a study driver, set in the environment its spawned workers inherit (study.Executor).
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
    except PermissionError:
        return False
    return False


# Started on the package's first import, before the seconds (minutes, on a loaded machine) a spawned worker spends
# importing torch and the rest: a worker whose driver is killed then exits at any stage, never left orphaned.
if (_driver := os.environ.pop(WATCHED_DRIVER, "")).isdigit():  # consumed: nothing this process starts inherits it
    if int(_driver) == os.getppid():
        threading.Thread(target=_exit_when_orphaned, args=(int(_driver),), daemon=True,
                         name="steadytune-orphan-watch").start()
    elif _gone(int(_driver)):  # the driver died before this worker got this far
        os._exit(1)
