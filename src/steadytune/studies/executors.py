"""Where jobs run: in this process, in spawned worker processes, or as Ray tasks.

A worker process exits within a second when its driver dies (it watches its parent from the first import of the
package on, see __init__.py, so also while it is still importing torch), instead of finishing its trial for nobody.
A worker that dies (an OOM kill, say) costs only its own job: it is retried up to `retries` times on a fresh worker,
then reported failed, and the study goes on.
"""
from __future__ import annotations

import os
import signal
import time
from collections import deque
from collections.abc import Callable, Iterator
from multiprocessing import get_context
from multiprocessing.connection import wait
from typing import Any

from .. import WATCHED_DRIVER
from ..errors import ConfigError
from ..training.records import TrialOutcome
from .jobs import Job, JobResult, execute

# Called when the executor has room for one more job: a (tag, job) pair, or None when none can start now.
NextJob = Callable[[], "tuple[Any, Job] | None"]


class Executor:
    """Runs jobs concurrently, pulling each from `next_job` only when a worker is free, and yields
    (tag, result) as they finish. A worker process that dies costs only its own job (retried up to
    `retries` times, then reported failed)."""

    def __init__(self, workers: int, ray_address: str | None = None, cpus_per_trial: float = 1,
                 gpus_per_trial: float = 0, retries: int = 1):
        self.workers, self.ray_address = workers, ray_address
        self.cpus_per_trial, self.gpus_per_trial = cpus_per_trial, gpus_per_trial
        self.retries = retries

    def run(self, next_job: NextJob) -> Iterator[tuple[Any, JobResult]]:
        if self.ray_address:
            yield from self._run_ray(next_job)
        elif self.workers == 1:
            while (item := next_job()) is not None:
                yield item[0], execute(item[1])
        else:
            yield from self._run_processes(next_job)

    def _run_processes(self, next_job: NextJob) -> Iterator[tuple[Any, JobResult]]:
        context = get_context("spawn")  # not fork: torch's thread pools do not survive a fork
        slots: list[_Worker | None] = [None] * self.workers
        retry: deque[tuple[Any, Job, int]] = deque()
        try:
            while True:
                for index, worker in enumerate(slots):
                    if worker is not None and worker.task is not None:
                        continue
                    if retry:
                        item = retry.popleft()
                    else:
                        fresh = next_job()
                        if fresh is None:
                            break
                        item = (*fresh, 0)
                    if worker is None or not worker.process.is_alive():
                        worker = slots[index] = _Worker(context, self.threads_per_worker())
                    worker.give(*item)
                busy = [w for w in slots if w is not None and w.task is not None]
                if not busy:
                    return
                wait([w.conn for w in busy] + [w.process.sentinel for w in busy])
                for index, worker in enumerate(slots):
                    if worker is None or worker.task is None:
                        continue
                    tag, job, attempt = worker.task
                    result = worker.result()
                    if result is not None:
                        yield tag, result
                    elif not worker.process.is_alive():
                        worker.process.join()
                        slots[index] = None
                        if attempt < self.retries:
                            retry.append((tag, job, attempt + 1))
                        else:
                            yield tag, JobResult(TrialOutcome.failed(_death(worker.process.exitcode, attempt + 1)), [],
                                                 worker.started_at)
        finally:
            for worker in slots:
                if worker is not None:
                    worker.stop()

    def _run_ray(self, next_job: NextJob) -> Iterator[tuple[Any, JobResult]]:
        try:
            import ray
        except ImportError:
            raise ConfigError("--ray-address needs Ray: pip install 'steadytune[ray]'") from None
        if not ray.is_initialized():
            ray.init(address=self.ray_address, log_to_driver=False)
        # Ray re-runs a task whose worker died (max_retries); trials are deterministic, so that is safe.
        remote = ray.remote(execute).options(num_cpus=self.cpus_per_trial, num_gpus=self.gpus_per_trial,
                                             max_retries=self.retries)
        self._check_ray_request(ray)
        pending: dict = {}
        try:
            while True:
                # Asked again before each hand-out: nodes that join the cluster later are used.
                while len(pending) < self._ray_capacity(ray) and (item := next_job()) is not None:
                    pending[remote.remote(item[1])] = (item[0], time.time())
                if not pending:
                    return
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    tag, started_at = pending.pop(ref)
                    try:
                        yield tag, ray.get(ref)
                    except ray.exceptions.RayError as err:
                        yield tag, JobResult(TrialOutcome.failed(f"Ray task lost: {str(err).splitlines()[0]}"), [],
                                             started_at)
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)

    def _check_ray_request(self, ray) -> None:
        """Refuse, in one line, a trial no node of the cluster can place: Ray would wait for it forever, silently."""
        nodes = [node.get("Resources", {}) for node in ray.nodes() if node.get("Alive")]
        for name, wanted, flag in (("CPU", self.cpus_per_trial, "--cpus-per-trial"),
                                   ("GPU", self.gpus_per_trial, "--gpus-per-trial")):
            largest = max((node.get(name, 0) for node in nodes), default=0)
            if wanted > largest:
                raise ConfigError(f"{flag} {wanted:g}: no node of the Ray cluster has {wanted:g} {name}(s) (the "
                                  f"largest has {largest:g}); ask for at most {largest:g}, or add a node that has them")

    def _ray_capacity(self, ray) -> int:
        """Trials the cluster can run at once: per live node, its CPUs (and GPUs) over what a trial asks for."""
        total = 0
        for node in ray.nodes():
            if not node.get("Alive"):
                continue
            resources = node.get("Resources", {})
            fits = [resources.get(name, 0) // wanted for name, wanted in (("CPU", self.cpus_per_trial),
                                                                          ("GPU", self.gpus_per_trial)) if wanted > 0]
            total += int(min(fits)) if fits else 1
        return max(1, total)

    def threads_per_worker(self) -> int:
        """Torch threads per trial: the Ray CPUs it reserves, or this machine's cores split between N workers."""
        if self.ray_address:
            return max(1, int(self.cpus_per_trial))
        return max(1, (os.cpu_count() or 1) // self.workers)


def _death(exitcode: int | None, attempts: int) -> str:
    how = (f"killed by signal {-exitcode}" + (" (SIGKILL: out of memory?)" if exitcode == -signal.SIGKILL else "")
           if exitcode is not None and exitcode < 0 else f"exit code {exitcode}")
    return f"WorkerDied: the worker process running this trial died ({how}), {attempts} attempt(s)"


class _Worker:
    """One spawned worker process and the job it is running, talking to the driver over a pipe."""

    def __init__(self, context, threads: int):
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_worker_main, args=(child, threads), daemon=True,
                                       name="steadytune-worker")
        os.environ[WATCHED_DRIVER] = str(os.getpid())  # the worker watches this driver from its first import on
        try:
            self.process.start()
        finally:
            del os.environ[WATCHED_DRIVER]
        child.close()
        self.task: tuple[Any, Job, int] | None = None
        self.started_at = 0.0

    def give(self, tag: Any, job: Job, attempt: int) -> None:
        self.task, self.started_at = (tag, job, attempt), time.time()
        self.conn.send(job)

    def result(self) -> JobResult | None:
        """The finished job's result if it has arrived (the worker is then free again)."""
        try:
            if not self.conn.poll():
                return None
            result = self.conn.recv()
        except (EOFError, OSError):
            return None
        self.task = None
        return result

    def stop(self) -> None:
        """End the process: politely when idle, at once when it is still computing (Ctrl-C, an error)."""
        if self.process.is_alive():
            if self.task is None:
                try:
                    self.conn.send(None)
                except OSError:
                    pass
                self.process.join(5)
            if self.process.is_alive():
                self.process.terminate()
                self.process.join(5)
            if self.process.is_alive():
                self.process.kill()
                self.process.join()
        self.conn.close()


def _worker_main(conn, threads: int) -> None:
    # Ctrl-C reaches the whole process group; the driver alone decides, and stops its workers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import torch  # here, in the worker: the driver never needs it

    torch.set_num_threads(threads)
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        try:
            conn.send(execute(job))
        except (BrokenPipeError, OSError):
            return
