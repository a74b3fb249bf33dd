"""Broker logs of a simulated cluster, each line in the log file of the node that wrote it.

Every node of a `SimCluster` serves from a task that sets `CURRENT_NODE`; trio copies
the context into every task a node spawns, so a log record knows its node without the
broker knowing it is simulated. `node_log_files` routes the `faultline` loggers' records
to `<dir>/<node>.log` for the duration of a run, stamped with simulated time, and keeps
them off the console (whose every line is for a person watching the run).
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import trio

CURRENT_NODE: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "faultline_sim_node", default=None
)

# Records written outside any node's tasks (the harness, clients) go to this file.
UNATTRIBUTED = "harness"


class _NodeFileHandler(logging.Handler):
    """Appends each record to the file of the node whose task logged it."""

    def __init__(self, directory: Path) -> None:
        super().__init__(level=logging.INFO)
        self.directory = directory
        self.streams: dict[str, IO[str]] = {}

    def emit(self, record: logging.LogRecord) -> None:
        try:
            name = CURRENT_NODE.get() or UNATTRIBUTED
            stream = self.streams.get(name)
            if stream is None:
                # Line-buffered: the runner appends each node's end-of-run summary to
                # the same file while this handler still holds it open.
                stream = self.streams[name] = open(  # noqa: SIM115 (closed in close())
                    self.directory / f"{name}.log", "a", buffering=1, encoding="utf-8")
            try:
                at = f"{trio.current_time():10.3f}"
            except RuntimeError:  # outside the simulation's trio run
                at = " " * 10
            stream.write(f"[{at} sim s] {record.levelname} {record.name}: "
                         f"{record.getMessage()}\n")
        except Exception:
            self.handleError(record)

    def close(self) -> None:
        for stream in self.streams.values():
            stream.close()
        self.streams.clear()
        super().close()


@contextmanager
def node_log_files(directory: Path) -> Iterator[None]:
    """Route the `faultline` loggers to per-node files in `directory` while inside."""
    directory.mkdir(parents=True, exist_ok=True)
    logger = logging.getLogger("faultline")
    handler = _NodeFileHandler(directory)
    saved = (logger.level, logger.propagate)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
        handler.close()
