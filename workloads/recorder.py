"""`HistoryRecorder`: process numbers, unique values and invoke/completion pairs.

Workloads never write events themselves: they ask the recorder for a process number
and for message values, and record each operation as an invoke and exactly one
completion. `perform` wraps one client call in that discipline — the invoke is
written before the call starts, the completion when it ends — and turns the
session's outcome exceptions into `ok`, `fail` or `info`. The writer is shared with
the nemesis executor, whose events go through `writer` directly.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from history.writer import HistoryWriter
from workloads.adapters.session import OpFailed, OpUnknown, Rebalance

# Error strings land in every failed completion; a client's message can be long.
_ERROR_LIMIT = 300


class Retired(Exception):
    """The process's operation completed `info`: it must stop; a new process replaces it."""


class HistoryRecorder:
    """Allocates process numbers and unique values; writes invoke/completion pairs
    through a HistoryWriter."""

    def __init__(self, writer: HistoryWriter, now_ns: Callable[[], int]) -> None:
        self.writer = writer
        self._now_ns = now_ns
        self._next_process = 0
        self._next_value = 0
        # Completions by type, for the runner's live progress line.
        self.completions: Counter[str] = Counter()
        # Per log, one past the highest offset an `ok` send reported: the final read
        # must get there, whatever the end offsets said when it started.
        self.acknowledged_ends: dict[str, int] = {}

    def new_process(self) -> int:
        """A process number never used before in this run."""
        process = self._next_process
        self._next_process += 1
        return process

    def next_value(self) -> int:
        """A message value unique across the run."""
        value = self._next_value
        self._next_value += 1
        return value

    def invoke(self, process: int, f: str, value: Any) -> None:
        """Write the invocation of `f` by `process`."""
        self.writer.append(process, "invoke", f, value, time=self._now_ns())

    def complete(
        self,
        process: int,
        type: str,
        f: str,
        value: Any,
        *,
        error: str | None = None,
        **extra: Any,
    ) -> None:
        """Write the completion (`ok`, `fail` or `info`) of `process`'s pending `f`.

        `extra` carries the optional `assignment` and `generation` fields.
        """
        self.writer.append(process, type, f, value, time=self._now_ns(), error=error, **extra)
        self.completions[type] += 1
        if f == "send" and type == "ok" and isinstance(value, list):
            ends = self.acknowledged_ends
            for m in value:
                offset = m.get("offset")
                partition = m.get("partition")
                if offset is not None and partition is not None:
                    log = f"{m['topic']}/{partition}"
                    ends[log] = max(ends.get(log, 0), offset + 1)

    async def perform(
        self,
        process: int,
        f: str,
        value: Any,
        action: Callable[[], Awaitable[Any]],
        *,
        timeout_s: float,
        rebalance: Callable[[], Rebalance | None] | None = None,
    ) -> tuple[bool, Any]:
        """Record `action` as operation `f`: returns (True, completion value) on `ok`,
        (False, None) on `fail`, and raises `Retired` after writing `info`.

        `action` returns the completion value, raises `OpFailed` when it certainly did
        not happen and `OpUnknown` when it may have; running past `timeout_s` is
        unknown too. `rebalance` reports an assignment change seen during the call,
        written on the completion as `assignment` and `generation`.
        """
        self.invoke(process, f, value)
        result: Any = None
        error: str | None = None
        outcome = "info"
        try:
            with trio.move_on_after(timeout_s):
                try:
                    result = await action()
                    outcome = "ok"
                except OpFailed as exc:
                    outcome, error = "fail", describe(exc)
                except OpUnknown as exc:
                    outcome, error = "info", describe(exc)
        except trio.Cancelled:
            # Cut short from outside (a phase's deadline): whether it happened is
            # unknown, and the history must not end with the operation pending.
            self.complete(process, "info", f, value, error="cancelled: the phase ended first")
            raise
        if outcome == "info":
            if error is None:
                error = f"timeout: no outcome within {_seconds(timeout_s)} s"
            self.complete(process, "info", f, value, error=error)
            raise Retired(error)
        extra: dict[str, Any] = {}
        change = rebalance() if rebalance is not None else None
        if change is not None:
            extra = {"assignment": change.assignment}
            if change.generation is not None:
                extra["generation"] = change.generation
        if outcome == "fail":
            self.complete(process, "fail", f, value, error=error, **extra)
            return False, None
        self.complete(process, "ok", f, result, **extra)
        return True, result

    def crash(self, process: int, reason: str = "client crashed") -> None:
        """Record a `crash` of `process` (always `info`); the caller drops its client."""
        self.invoke(process, "crash", None)
        self.complete(process, "info", "crash", None, error=reason)


def describe(exc: BaseException) -> str:
    """`ExceptionName: message`, bounded, for a completion's `error` field."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return text if len(text) <= _ERROR_LIMIT else text[: _ERROR_LIMIT - 3] + "..."


def _seconds(value: float) -> str:
    return str(int(value)) if math.isclose(value, round(value)) else f"{value:.3g}"
