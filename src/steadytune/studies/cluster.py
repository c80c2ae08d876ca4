"""A study's cooperating drivers submitted as one SLURM job array, through submitit.

Each array job runs the same `steadytune study run` command (this one, less the options that submit it)
against one shared store. Drivers claim trials with leases, so the jobs share the work, a preempted or
timed-out job's trials are taken over when its claims expire, and with --checkpoint-every they continue
from their last autosave. No result travels back through submitit: every result is in the store.

submitit moves the job's command to the node as a pickle in its own jobs folder, written by this process
for this user's jobs; steadytune never reads a job's result pickle back.
"""
from __future__ import annotations

import os
import shlex
import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from ..config import ConfigError
from ..storage.connections import is_postgres, without_password

EXECUTORS = ("local", "slurm", "submitit-local")
DEFAULT_JOBS, DEFAULT_JOBS_FOLDER = 4, Path("steadytune-jobs")


@dataclass(frozen=True)
class JobArray:
    """What `--executor slurm` asks the cluster for: `jobs` drivers, each with these resources. Each field is the
    `study run` option of its name (`time_min`: --time-min)."""

    executor: str                 # slurm, or submitit-local (the same array as local processes, to try a setup)
    jobs: int = DEFAULT_JOBS
    jobs_folder: Path = DEFAULT_JOBS_FOLDER  # submitit's logs and job files
    time_min: int = 240
    mem_gb: float = 16
    cpus_per_job: int = 4
    gpus_per_job: int = 0
    partition: str | None = None
    array_parallelism: int | None = None  # at most this many jobs of the array run at once

    def changed(self) -> list[str]:
        """The options of this array given other values than their defaults, as flags."""
        return [_flag(f.name) for f in fields(self) if f.name != "executor" and getattr(self, f.name) != f.default]

    def check(self, store: str) -> None:
        if self.executor == "slurm" and not is_postgres(store):
            raise ConfigError("--executor slurm needs a PostgreSQL store (--store postgresql://USER@HOST/DB): a "
                              "SQLite file must not be shared over a network filesystem")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


# The options that submit the array (name -> takes a value); a job's own command is the rest.
SUBMIT_OPTIONS = {**{_flag(f.name): True for f in fields(JobArray)}, "--wait": False, "--dry-run": False}


def driver_command(argv: list[str]) -> list[str]:
    """The `steadytune study run ...` command each job runs: argv without the options that submit the array, and
    without the store URL's password. submitit writes the command into its job files and logs; the password reaches
    the jobs through the environment instead (PGPASSWORD, see `submit`), or their own ~/.pgpass."""
    command, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in SUBMIT_OPTIONS:
            skip = SUBMIT_OPTIONS[name] and "=" not in arg
            continue
        if name == "--store" and "=" in arg:
            arg = "--store=" + _secret_free(arg.split("=", 1)[1])
        elif command and command[-1] == "--store":
            arg = _secret_free(arg)
        command.append(arg)
    return [sys.executable, "-m", "steadytune", *command]


def _secret_free(location: str) -> str:
    return without_password(location)[0] if is_postgres(location) else location


def _submitit():
    try:
        import submitit
    except ImportError:
        raise ConfigError("--executor slurm needs submitit: pip install 'steadytune[slurm]'") from None
    return submitit


def sbatch_script(array: JobArray) -> str:
    """The sbatch script `--executor slurm` submits for this array, as submitit writes it (--dry-run prints it; the
    command in it runs each job's pickled `steadytune study run` command from the jobs folder)."""
    _submitit()
    from submitit.slurm.slurm import _convert_mem, _make_sbatch_string  # submitit's own (pinned: constraints.txt)

    folder = array.jobs_folder.resolve()
    command = " ".join(shlex.quote(part) for part in (sys.executable, "-u", "-m", "submitit.core._submit",
                                                       str(folder)))
    return _make_sbatch_string(command=command, folder=folder, job_name=JOB_NAME, partition=array.partition,
                               time=array.time_min, nodes=1, ntasks_per_node=1, cpus_per_task=array.cpus_per_job,
                               gpus_per_node=array.gpus_per_job or None, mem=_convert_mem(array.mem_gb),
                               map_count=array.jobs, array_parallelism=array.array_parallelism or array.jobs)


JOB_NAME = "steadytune-study"


def submit(array: JobArray, command: list[str]) -> list[Any]:
    """Submit the array; returns submitit's jobs (their ids, states and log paths)."""
    submitit = _submitit()
    from submitit.helpers import CommandFunction

    cluster = "local" if array.executor == "submitit-local" else "slurm"
    try:
        executor = submitit.AutoExecutor(folder=array.jobs_folder, cluster=cluster)
    except RuntimeError as err:  # submitit's "Could not detect srun": not a SLURM cluster
        raise ConfigError(f"--executor slurm: this machine cannot submit SLURM jobs ({' '.join(str(err).split())}); "
                          f"run it on a login node of the cluster, try the array here with --executor "
                          f"submitit-local, or print the sbatch script with --dry-run") from None
    parameters: dict[str, Any] = {"name": JOB_NAME, "timeout_min": array.time_min, "mem_gb": array.mem_gb,
                                  "cpus_per_task": array.cpus_per_job, "gpus_per_node": array.gpus_per_job,
                                  "tasks_per_node": 1, "nodes": 1}
    if array.partition:
        parameters["slurm_partition"] = array.partition
    if array.array_parallelism:
        parameters["slurm_array_parallelism"] = array.array_parallelism
    executor.update_parameters(**parameters)
    job = CommandFunction(command, cwd=os.getcwd())
    # Job files, pickles and logs readable by the submitting user alone: the umask reaches what submitit writes
    # here and what the jobs write (SLURM passes it on; local jobs inherit it).
    array.jobs_folder.mkdir(parents=True, exist_ok=True)
    array.jobs_folder.chmod(0o700)
    umask = os.umask(0o077)
    try:
        with executor.batch():
            jobs = [executor.submit(job) for _ in range(array.jobs)]
    finally:
        os.umask(umask)
    return jobs


def wait(jobs: list[Any], poll_seconds: float = 2.0) -> dict[str, str]:
    """Block until every job has ended; job id -> its final state as the scheduler reports it."""
    while not all(job.done() for job in jobs):
        time.sleep(poll_seconds)
    return {str(job.job_id): str(job.state) for job in jobs}
