"""The campaign's one live line, and a line for each run that fails.

On a terminal the line is redrawn in place; into a pipe or a CI log a line is printed
at most every `PIPE_EVERY_S` seconds and when the campaign ends. A run that violates
its configuration's expectation, or cannot run, is printed once, with what it found and
the command that reproduces it.
"""

from __future__ import annotations

import time
from typing import IO

from harness.campaign.results import (
    ERROR,
    HARNESS_ERROR,
    UNKNOWN,
    VIOLATED,
    CampaignResults,
    Judgement,
)
from harness.campaign.task import RunRecord

PIPE_EVERY_S = 30.0


class CampaignProgress:
    """Prints progress of a campaign of `total` runs to `stream`."""

    def __init__(self, stream: IO[str], total: int) -> None:
        self.stream = stream
        self.total = total
        self.tty = stream.isatty()
        self.started = time.monotonic()
        self.last_print = 0.0
        self.line_shown = False

    def update(self, results: CampaignResults, record: RunRecord | None,
               judgement: Judgement | None, replay: str | None = None) -> None:
        """Account for a finished run (or an idle tick, with None) and redraw."""
        if record is not None and judgement is not None and judgement.outcome in (
                VIOLATED, ERROR, UNKNOWN, HARNESS_ERROR):
            self._clear()
            label = results.cells[record.cell].cell.label
            if judgement.outcome == ERROR:
                what = (record.error or "").strip().splitlines()[-1][:200]
            elif judgement.outcome == HARNESS_ERROR:
                what = (f"{record.harness_errors} send(s) recorded fail were appended by a "
                        "broker: a faultline bug, not the configuration's (see results.json "
                        "harness_errors)")
            else:
                what = ", ".join(f"{kind} ×{record.counts.get(kind, 0)}"
                                 for kind in judgement.violations)
            self.stream.write(f"{judgement.outcome.upper()}: [{record.cell}] {label} seed "
                              f"{record.seed}: {what}\n  reproduce: {replay}\n")
            self.stream.flush()
        now = time.monotonic()
        if self.tty:
            if record is not None or now - self.last_print >= 0.5:
                self._draw(results, now)
        elif record is not None and now - self.last_print >= PIPE_EVERY_S:
            self.stream.write(self.line(results, now) + "\n")
            self.stream.flush()
            self.last_print = now

    def finish(self, results: CampaignResults) -> None:
        """The last progress line, kept on screen."""
        self._clear()
        self.stream.write(self.line(results, time.monotonic()) + "\n")
        self.stream.flush()

    def line(self, results: CampaignResults, now: float) -> str:
        """Runs done of total, failures so far per configuration, pace and ETA."""
        done = results.runs
        elapsed = now - self.started
        per_minute = done / elapsed * 60 if elapsed > 0 else 0.0
        left = self.total - done - results.not_started - sum(
            len(c.skipped_seeds) for c in results.cells)
        eta = f"{left / per_minute:.1f} min" if per_minute > 0 and left > 0 else "-"
        failing = [f"[{c.cell.index}] "
                   f"{sum(o in (VIOLATED, ERROR, HARNESS_ERROR) for o in c.outcomes())}"
                   f"/{len(c.runs)}" for c in results.cells
                   if any(o in (VIOLATED, ERROR, HARNESS_ERROR) for o in c.outcomes())]
        failures = ", ".join(failing) if failing else "none"
        return (f"campaign: {done}/{self.total} runs  {per_minute:.1f} runs/min  ETA {eta}  "
                f"elapsed {elapsed:.0f} s  failing: {failures}")

    def _draw(self, results: CampaignResults, now: float) -> None:
        self.stream.write("\r\x1b[2K" + self.line(results, now)[:200])
        self.stream.flush()
        self.last_print = now
        self.line_shown = True

    def _clear(self) -> None:
        if self.tty and self.line_shown:
            self.stream.write("\r\x1b[2K")
            self.line_shown = False
