"""Where a campaign's runs execute: local worker processes, or a Dask cluster.

Both engines take `RunRequest`s and hand back `RunRecord`s in completion order through
one queue, so the campaign loop does not know which it drives:

- `LocalEngine`: `concurrent.futures.ProcessPoolExecutor` over freshly spawned worker
  processes (they ignore Ctrl-C; the campaign ends them itself);
- `DaskEngine`: a `distributed.Client` connected to a running scheduler, one task per
  run. Workers need faultline installed; start them with `--nthreads 1` (a worker
  process runs one simulated run at a time anyway).
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import signal
import traceback
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any, Protocol

from harness.campaign.task import RunRecord, RunRequest, execute
from harness.settings import ConfigError

# How long to keep trying to reach a Dask scheduler before calling it unreachable.
CONNECT_TIMEOUT_S = 10.0


class EngineError(RuntimeError):
    """The engine could not start (no scheduler at that address, no workers...)."""


class Engine(Protocol):
    """Runs requests somewhere and reports each record once it is done."""

    slots: int  # runs that can execute at once
    description: str

    def submit(self, request: RunRequest) -> None:
        """Start `request` as soon as a worker is free."""
        ...

    def next_done(self, timeout: float) -> RunRecord | None:
        """The next finished run, waiting up to `timeout` seconds (None if none)."""
        ...

    def close(self, *, abandon: bool) -> None:
        """Release the workers; `abandon` drops unfinished runs at once."""
        ...


def _lost(request: RunRequest, error: BaseException) -> RunRecord:
    detail = "".join(traceback.format_exception_only(type(error), error)).strip()
    return RunRecord(cell=request.cell, seed=request.seed, run_name=request.run_name,
                     valid=None, config=request.config,
                     error=f"the worker running it failed: {detail}")


class _Completions:
    """Finished futures, queued by their done-callbacks (which run on other threads)."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[RunRequest, Callable[[], Any]]] = (
            queue.SimpleQueue())

    def watch(self, request: RunRequest, future: Any) -> None:
        future.add_done_callback(lambda done: self._queue.put((request, done.result)))

    def next(self, timeout: float) -> RunRecord | None:
        try:
            request, result = self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
        try:
            record = result()
        except Exception as exc:
            return _lost(request, exc)
        return record if isinstance(record, RunRecord) else _lost(
            request, TypeError(f"a worker returned {type(record).__name__}"))


def _start_worker(log_dir: str | None) -> None:
    # Ctrl-C in a terminal reaches the whole process group; the campaign decides what
    # happens to the runs, so a worker must not die half-way through one by itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if log_dir is not None:
        # The console belongs to the campaign's progress line: whatever a worker or a
        # client library (librdkafka writes to fd 2 itself) prints goes to a file.
        path = os.path.join(log_dir, f"worker-{os.getpid()}.log")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)


class LocalEngine:
    """`workers` local processes, each running one run at a time; what they print goes
    to `log_dir/worker-<pid>.log` when `log_dir` is given."""

    def __init__(self, workers: int, log_dir: Path | None = None) -> None:
        if workers < 1:
            raise ConfigError(f"--workers must be at least 1, got {workers}")
        self.slots = workers
        self.description = f"{workers} local worker process{'es' if workers > 1 else ''}"
        if log_dir is not None:
            log_dir.mkdir(parents=True, exist_ok=True)
        self._executor = ProcessPoolExecutor(
            max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_worker, initargs=(None if log_dir is None else str(log_dir),))
        self._done = _Completions()

    def submit(self, request: RunRequest) -> None:
        """Queue `request` on the pool."""
        future: Future[RunRecord] = self._executor.submit(execute, request)
        self._done.watch(request, future)

    def next_done(self, timeout: float) -> RunRecord | None:
        """The next finished run, or None after `timeout` seconds."""
        return self._done.next(timeout)

    def close(self, *, abandon: bool) -> None:
        """Shut the pool down; when abandoning, end the workers mid-run."""
        if not abandon:
            self._executor.shutdown(wait=True)
            return
        self._executor.shutdown(wait=False, cancel_futures=True)
        for child in multiprocessing.active_children():
            child.terminate()
        for child in multiprocessing.active_children():
            child.join(timeout=5)


class DaskEngine:
    """A Dask distributed cluster reached through its scheduler's address."""

    def __init__(self, address: str, *, wait_for_workers_s: float = 60.0) -> None:
        try:
            from distributed import Client
        except ImportError:
            raise ConfigError("--scheduler needs Dask: pip install -e '.[distributed]'") from None
        try:
            self._client = Client(address, timeout=f"{CONNECT_TIMEOUT_S}s",
                                  set_as_default=False)
        except (OSError, TimeoutError) as exc:
            raise EngineError(f"cannot reach the Dask scheduler at {address}: {exc}") from None
        try:
            self._client.wait_for_workers(1, timeout=wait_for_workers_s)
        except TimeoutError:
            self._client.close()
            raise EngineError(f"the Dask scheduler at {address} has no workers (waited "
                              f"{wait_for_workers_s:g} s); start some with "
                              f"`dask worker {address} --nthreads 1`") from None
        self.slots = max(1, sum(self._client.nthreads().values()))
        workers = len(self._client.nthreads())
        self.description = (f"Dask scheduler {address}: {workers} worker"
                            f"{'s' if workers != 1 else ''}, {self.slots} thread"
                            f"{'s' if self.slots != 1 else ''}")
        self._futures: dict[str, Any] = {}
        self._done = _Completions()

    def submit(self, request: RunRequest) -> None:
        """Submit `request` as one task."""
        # Unique per submission: other campaigns may share the scheduler.
        future = self._client.submit(execute, request, pure=False,
                                     key=f"faultline-run-{request.run_name}-{uuid.uuid4().hex}")
        self._futures[request.run_name] = future
        self._done.watch(request, future)

    def next_done(self, timeout: float) -> RunRecord | None:
        """The next finished run, or None after `timeout` seconds."""
        record = self._done.next(timeout)
        if record is not None:
            self._futures.pop(record.run_name, None)
        return record

    def close(self, *, abandon: bool) -> None:
        """Cancel what is left (if abandoning) and disconnect."""
        if abandon and self._futures:
            self._client.cancel(list(self._futures.values()))
        self._futures.clear()
        self._client.close()
