"""What a configuration costs, read from a history: availability under faults, recovery.

- availability (`share`): the share of the run's time under faults in which clients were
  served. The time while at least one fault was in force (overlapping fault windows
  merged; instant ones such as a connection reset left out) is cut into consecutive
  windows of `window_s` seconds (the last of each fault span may be shorter). A window is
  *available* when in it at least one send was acknowledged (an `ok` send, or an `ok`
  transaction that sent) and at least one poll returned records (an `ok` poll, or a
  transaction's poll, with at least one record). `share` is the summed length of the
  available windows over the summed length of all windows. A poll that returns nothing
  does not count: a consumer cut off from every broker still completes its poll, empty.
  When the workload never polls (or never sends) in the whole run, that half of the
  condition is dropped. `send_share` and `poll_share` are the same measure for each half.
  `window_s` is 1 s, or five mean gaps between completions when the workload runs slower
  than that, so a quiet but healthy workload is not counted down for having nothing to
  complete in a window.
- recovery (`recovery_s`): after the final heal (the moment from which no fault is in
  force any more), the simulated (or real) seconds until the first acknowledged send.
  The runner keeps the workload going for `--recovery` seconds after the heal so this
  can be seen; None means no send was acknowledged in that time.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import msgspec

from harness.report.html import NemesisRecord, fault_windows

# The shortest availability window, seconds; longer for slow workloads (see above).
WINDOW_S = 1.0
# A window lasts at least this many mean gaps between completions.
WINDOW_COMPLETIONS = 5


@dataclass(frozen=True)
class Availability:
    """The cost figures of one run (None where the run gives no basis for one)."""

    fault_time_s: float
    window_s: float
    windows: int
    share: float | None
    send_share: float | None
    poll_share: float | None
    final_heal_s: float | None
    recovery_s: float | None

    def to_json(self) -> dict[str, Any]:
        """As written into results.json under "availability"."""
        data = asdict(self)
        for key in ("fault_time_s", "window_s", "share", "send_share", "poll_share",
                    "final_heal_s", "recovery_s"):
            if data[key] is not None:
                data[key] = round(data[key], 4)
        return data


class Served(NamedTuple):
    """When clients were served: times of acknowledged sends and of polls with records,
    whether the workload sent or polled at all, and the run's completion count and end."""

    acks: list[float]
    reads: list[float]
    sent: bool
    polled: bool
    completions: int
    end_s: float


def read_history(history: Path) -> tuple[Served, list[NemesisRecord]]:
    """One pass over the history: what served clients, and the nemesis events."""
    acks: list[float] = []
    reads: list[float] = []
    nemesis: list[NemesisRecord] = []
    sent = polled = False
    completions = 0
    end_s = 0.0
    decode = msgspec.json.decode
    with open(history, "rb") as stream:
        for line in stream:
            if not line.strip():
                continue
            event = decode(line)
            t = event["time"] / 1e9
            end_s = max(end_s, t)
            f, kind, value = event["f"], event["type"], event.get("value")
            if event["process"] == "nemesis":
                nemesis.append(NemesisRecord(t, f, value, event.get("error")))
                continue
            if kind == "invoke":
                sent = sent or f == "send" or (f == "txn" and _txn_has(value, "send"))
                polled = polled or f == "poll" or (f == "txn" and _txn_has(value, "poll"))
                continue
            completions += 1
            if kind != "ok":
                continue
            if f == "send" or (f == "txn" and _txn_has(value, "send")):
                acks.append(t)
            if (f == "poll" and _has_records(value)) or (
                    f == "txn" and any(_has_records(v) for v in _txn_values(value, "poll"))):
                reads.append(t)
    return Served(sorted(acks), sorted(reads), sent, polled, completions, end_s), nemesis


def _txn_values(value: Any, micro: str) -> Iterator[Any]:
    for op in value if isinstance(value, list) else []:
        if isinstance(op, list) and len(op) == 2 and op[0] == micro:
            yield op[1]


def _txn_has(value: Any, micro: str) -> bool:
    return next(_txn_values(value, micro), _MISSING) is not _MISSING


_MISSING = object()


def _has_records(value: Any) -> bool:
    return isinstance(value, dict) and any(value.values())


def merged_fault_spans(nemesis: Iterable[NemesisRecord], end_s: float) -> list[tuple[float, float]]:
    """The stretches of time with at least one fault in force, merged and in order."""
    spans = sorted((w.start, w.end) for w in fault_windows(nemesis, end_s) if w.end > w.start)
    merged: list[tuple[float, float]] = []
    for start, end in spans:
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _any_in(times: list[float], start: float, end: float) -> bool:
    """Whether a sorted list of times holds one in [start, end)."""
    i = bisect.bisect_left(times, start)
    return i < len(times) and times[i] < end


def measure(served: Served, spans: list[tuple[float, float]]) -> Availability:
    """Availability over the fault `spans` and recovery after the last, from `served`."""
    rate = served.completions / served.end_s if served.end_s > 0 else 0.0
    window = max(WINDOW_S, WINDOW_COMPLETIONS / rate) if rate > 0 else WINDOW_S
    total = both = sends = polls = 0.0
    count = 0
    for start, end in spans:
        at = start
        while at < end:
            stop = min(at + window, end)
            length = stop - at
            acked = _any_in(served.acks, at, stop)
            read = _any_in(served.reads, at, stop)
            total += length
            count += 1
            sends += length if acked else 0.0
            polls += length if read else 0.0
            if (acked or not served.sent) and (read or not served.polled):
                both += length
            at = stop
    final_heal = spans[-1][1] if spans else None
    recovery: float | None = None
    if final_heal is not None:
        i = bisect.bisect_left(served.acks, final_heal)
        recovery = served.acks[i] - final_heal if i < len(served.acks) else None
    return Availability(
        fault_time_s=total,
        window_s=window,
        windows=count,
        share=both / total if total and (served.sent or served.polled) else None,
        send_share=sends / total if total and served.sent else None,
        poll_share=polls / total if total and served.polled else None,
        final_heal_s=final_heal,
        recovery_s=recovery,
    )


def measure_availability(history: Path) -> Availability:
    """Availability under faults and time to recover of the run whose history is given."""
    served, nemesis = read_history(history)
    return measure(served, merged_fault_spans(nemesis, served.end_s))
