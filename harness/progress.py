"""Live progress of a run: counters fed by the history writer, and a task that prints them.

`CountingWriter` is the run's one `HistoryWriter`: every event (workload and nemesis)
passes through it, and it keeps running totals and the set of faults in force. The
`show_progress` task only reads those totals and prints them; it never writes to the
history, and it wakes on a fixed schedule of trio time, so in the simulation it is the
same task in every run of a seed and cannot change what the history records. Whether a
line is actually printed (terminal or not, wall-time rate limit) has no effect on trio.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

import trio

from history.writer import HistoryWriter

# Nemesis f -> (fault label it starts, or None) and (label it ends, or None).
_STARTS = {
    "start-partition": "partition",
    "start-link-fault": "link",
    "clock-skew": "clock",
    "clock-strobe": "clock",
    "start-disk-fault": "disk",
}
_ENDS = {
    "stop-partition": "partition",
    "stop-link-fault": "link",
    "clock-reset": "clock",
    "stop-disk-fault": "disk",
}
_NODE_STARTS = {"kill": "down", "power-loss": "down", "pause": "paused"}
_NODE_ENDS = {"restart": "down", "resume": "paused"}
# Client endpoints paused (`pause-client`) are listed under `clients`, not `nodes`.
_CLIENT_STARTS = {"pause-client": "client paused"}
_CLIENT_ENDS = {"resume-client": "client paused"}


@dataclass
class RunCounters:
    """Running totals of a run, read by the progress printer and the summary."""

    events: int = 0
    invokes: int = 0
    ok: int = 0
    fail: int = 0
    info: int = 0
    nemesis: int = 0
    phase: str = "setup"
    active: dict[str, set[str]] = field(default_factory=dict)

    def faults_active(self) -> str:
        """The faults in force, e.g. "partition, down n2", or "none"."""
        parts = [f"{label} {','.join(sorted(nodes))}" if nodes != {""} else label
                 for label, nodes in sorted(self.active.items()) if nodes]
        return "; ".join(parts) or "none"

    def observe(self, process: int | str, type: str, f: str, value: Any,
                error: str | None) -> None:
        """Account for one event written to the history."""
        self.events += 1
        if process == "nemesis":
            self.nemesis += 1
            if error is None:
                self._observe_fault(f, value)
            return
        if type == "invoke":
            self.invokes += 1
        elif type == "ok":
            self.ok += 1
        elif type == "fail":
            self.fail += 1
        else:
            self.info += 1

    def _observe_fault(self, f: str, value: Any) -> None:
        nodes = value.get("nodes", []) if isinstance(value, dict) else []
        if f in _STARTS:
            target = value.get("node", "") if isinstance(value, dict) else ""
            self.active.setdefault(_STARTS[f], set()).add(target or "")
        elif f in _ENDS:
            if f in ("clock-reset", "stop-disk-fault"):
                self.active.get(_ENDS[f], set()).difference_update(nodes)
            else:
                self.active.pop(_ENDS[f], None)
        elif f == "disk-corrupt" and isinstance(value, dict):
            # The node is killed, its files damaged; `restart` brings it back.
            self.active.setdefault("down", set()).add(str(value.get("node", "")))
        elif f in _NODE_STARTS:
            self.active.setdefault(_NODE_STARTS[f], set()).update(nodes)
        elif f in _NODE_ENDS:
            self.active.get(_NODE_ENDS[f], set()).difference_update(nodes)
        elif f in _CLIENT_STARTS:
            self.active.setdefault(_CLIENT_STARTS[f], set()).update(value.get("clients", []))
        elif f in _CLIENT_ENDS:
            self.active.get(_CLIENT_ENDS[f], set()).difference_update(value.get("clients", []))


class CountingWriter(HistoryWriter):
    """A HistoryWriter that also keeps `RunCounters` up to date."""

    def __init__(self, stream: IO[bytes], counters: RunCounters) -> None:
        super().__init__(stream)
        self.counters = counters
        # Called after every event (the sim samples the cluster's view at events).
        self.after_event: Callable[[], None] | None = None

    def append(self, process: int | str, type: str, f: str, value: Any = None, *,
               time: int, error: str | None = None, assignment: list[str] | None = None,
               generation: int | None = None) -> int:
        """Write one event (see HistoryWriter.append) and count it."""
        index = super().append(process, type, f, value, time=time, error=error,
                               assignment=assignment, generation=generation)
        self.counters.observe(process, type, f, value, error)
        if self.after_event is not None:
            self.after_event()
        return index


class StatusLine:
    """The one line of live status on a terminal, redrawn in place.

    Each draw clears the line and writes the text cut to the terminal's width (read at
    every draw, so a resize is followed): a line longer than the terminal would wrap, and
    the carriage return of the next draw would leave its first row behind. Anything else
    written to the same terminal calls `clear` first (`ConsoleLogHandler` does), so the
    status never shares a row with other output.
    """

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.shown = False

    def draw(self, text: str) -> None:
        """Replace the status line with `text`, cut to fit the terminal."""
        self.stream.write("\r\x1b[2K" + fit(text, shutil.get_terminal_size((80, 24)).columns))
        self.stream.flush()
        self.shown = True

    def clear(self) -> None:
        """Erase the status line (before other output, and at the end)."""
        if self.shown:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()
            self.shown = False


def fit(text: str, columns: int) -> str:
    """`text` cut to one row of `columns` (the last column left free, since a terminal
    that writes there may wrap), ending with "..." when cut."""
    room = max(columns - 1, 10)
    return text if len(text) <= room else text[:room - 3] + "..."


# The status line on screen now, if any: log records printed on the console clear it
# first (a log handler is installed once, a status line lives for one run).
_current: StatusLine | None = None


class ConsoleLogHandler(logging.StreamHandler):
    """Log records on the console, each on its own line: the live status line is
    cleared before one is written and redrawn at the next tick."""

    def emit(self, record: logging.LogRecord) -> None:
        if _current is not None and _current.stream is self.stream:
            _current.clear()
        super().emit(record)


def configure_console_logging(level: int, stream: IO[str]) -> None:
    """Show log records of `level` and above, and Python warnings, on `stream` through
    a `ConsoleLogHandler` (replacing one installed before). Brokers' own records never
    get here: the sim's go to nodes/nK.log, a broker process writes into its folder."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, ConsoleLogHandler):
            root.removeHandler(handler)
    handler = ConsoleLogHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(level)
    # Python warnings (a client library's DeprecationWarning, ...) would otherwise be
    # written straight to stderr, into the middle of the status line.
    logging.captureWarnings(True)


def status_text(counters: RunCounters, elapsed: float, unit: str, rate: float) -> str:
    """One status line: the faults in force come before the counters' tail, so a narrow
    terminal cuts counters, not which faults are on."""
    return (f"[{elapsed:6.1f} {unit}] {counters.phase:<11} faults: {counters.faults_active()}"
            f" | ok {counters.ok} ({rate:.0f}/s) fail {counters.fail} info {counters.info}")


async def show_progress(
    counters: RunCounters,
    *,
    origin: float,
    simulated: bool,
    stream: IO[str] | None = None,
    tick_s: float = 1.0,
) -> None:
    """Print elapsed time, active faults and op counts every `tick_s` of trio time, forever.

    On a terminal the line is redrawn in place (at most 5 times per wall second, see
    `StatusLine`); into a pipe or file a plain line is printed every 10 ticks; with no
    `stream` nothing is printed, but the task still wakes on the same schedule, so a
    simulated run's history is the same whether or not anyone watches it. The caller
    cancels this task.
    """
    global _current
    out = stream
    status = StatusLine(out) if out is not None and out.isatty() else None
    unit = "sim s" if simulated else "s"
    last_ok, last_print = 0, 0.0
    tick = 0
    if status is not None:
        _current = status
    try:
        while True:
            await trio.sleep(tick_s)
            tick += 1
            if out is None:
                continue
            rate = (counters.ok - last_ok) / tick_s
            last_ok = counters.ok
            line = status_text(counters, trio.current_time() - origin, unit, rate)
            if status is not None:
                now = time.monotonic()
                if now - last_print >= 0.2:
                    last_print = now
                    status.draw(line)
            elif tick % 10 == 0:
                out.write(line + "\n")
                out.flush()
    finally:
        if status is not None:
            status.clear()
            if _current is status:
                _current = None
