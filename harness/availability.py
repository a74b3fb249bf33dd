"""What a configuration costs, read from a history: availability under faults, recovery.

- availability: of the sends that were under way at some moment while a fault was in
  force, the share acknowledged while a fault was still in force. A send stuck from
  before the fault until after the heal counts against it, as does one that failed or
  timed out. Polls are left out: a consumer cut off from every broker still completes
  its poll, with no records.
- recovery: after the final heal (the moment from which no fault is in force any more),
  the simulated (or real) seconds until the first acknowledged send. The runner keeps
  the workload going for `--recovery` seconds after the heal so this can be seen; None
  means no send was acknowledged in that time.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from harness.report.html import digest_history, fault_windows


@dataclass(frozen=True)
class Availability:
    """The cost figures of one run (None where the run gives no basis for one)."""

    sends_during_faults: int
    acknowledged_during_faults: int
    share: float | None
    final_heal_s: float | None
    recovery_s: float | None

    def to_json(self) -> dict[str, Any]:
        """As written into results.json under "availability"."""
        data = asdict(self)
        for key in ("share", "final_heal_s", "recovery_s"):
            if data[key] is not None:
                data[key] = round(data[key], 4)
        return data


def measure_availability(history: Path) -> Availability:
    """Availability under faults and time to recover of the run whose history is given."""
    digest = digest_history(history, set())
    spans = sorted((w.start, w.end) for w in fault_windows(digest.nemesis, digest.end_s)
                   if w.end > w.start)
    merged: list[list[float]] = []
    for start, end in spans:
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    final_heal = merged[-1][1] if merged else None

    def faulted(start: float, end: float) -> bool:
        """Whether [start, end] meets a fault window."""
        return any(a <= end and start < b for a, b in merged)

    sends = acknowledged = 0
    recovery: float | None = None
    for completion in digest.completions:
        if completion.f != "send":
            continue
        invoked = completion.time - completion.latency
        if faulted(invoked, completion.time):
            sends += 1
            if completion.kind == "ok" and faulted(completion.time, completion.time):
                acknowledged += 1
        if (final_heal is not None and recovery is None and completion.kind == "ok"
                and completion.time >= final_heal):
            recovery = completion.time - final_heal
    return Availability(
        sends_during_faults=sends,
        acknowledged_during_faults=acknowledged,
        share=acknowledged / sends if sends else None,
        final_heal_s=final_heal,
        recovery_s=recovery,
    )
