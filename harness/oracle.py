"""The ground-truth oracle: a send the history calls `fail` must be in no replica's log.

A history's `fail` means "it certainly did not happen" (DESIGN.md section 4), and the
checker trusts it: a failed value that a consumer reads is an `aborted-read`, an
anomaly of the system under test. If the client (or an adapter) recorded `fail` for a
send that a broker did append, that anomaly is faultline's own false alarm. In the
simulation the harness can see the truth, so every sim run ends with this check:

- the ground truth is the union, over every node, of every record batch the node ever
  appended to a workload topic's segment files, taken from the simulated disks'
  append journals (`harness.runtime.sim.disk.SimDisk.appends`). That includes what a
  follower later truncated (a diverging suffix), what a power cut took back (written,
  not fsynced) and what retention deleted: each was appended, so the send it belongs
  to happened at least on that replica, and `fail` was a claim faultline could not
  prove. It does not matter whether the value was ever committed;
- every value of every `send` completed with `fail` is looked up in it; each one found
  is a `HarnessError` naming the history indices, the value and where it was found
  (node, log, offset, segment file).

Harness errors are not anomalies of the system: a run that has one reports them in
their own section of results.json (`harness_errors`), with their own console message
and verdict wording, and exits `exit_codes.HARNESS_ERROR`. Only the sim has the
journals; other targets are not checked (`GroundTruth` is None there).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kafka.record.default_records import DefaultRecordBatch

from history.model import Send
from history.reader import HistoryReader
from reference_broker.errors import CorruptRecordError
from reference_broker.log.record_batch import check_framing

if TYPE_CHECKING:
    from harness.runtime.sim.disk import JournalEntry, SimDisk

# What results.json, the console and report call a run with harness errors.
HEADLINE = "HARNESS ERROR"
EXPLANATION = (
    "faultline recorded `fail` (certainly not appended) for a send that a broker did "
    "append: the history is wrong, not the system under test. This is a bug in "
    "faultline's client error classification; please report it with this run folder"
)


@dataclass(frozen=True, slots=True)
class Sighting:
    """Where a value was appended: which node, log and offset, in which segment file."""

    node: str
    log: str  # "t1/0"
    offset: int
    file: str

    def to_json(self) -> dict[str, Any]:
        """As written into results.json."""
        return {"node": self.node, "log": self.log, "offset": self.offset, "file": self.file}

    def __str__(self) -> str:
        return f"{self.node} {self.log}@{self.offset} ({self.file})"


@dataclass(frozen=True, slots=True)
class HarnessError:
    """One value the history says failed that some replica appended."""

    index: int  # the `fail` completion
    invoke_index: int
    process: int
    value: int
    topic: str
    error: str | None  # the error the history recorded with the `fail`
    found: tuple[Sighting, ...]

    def to_json(self) -> dict[str, Any]:
        """As written into results.json's `harness_errors`."""
        return {
            "kind": "failed-send-appended",
            "index": self.index,
            "invoke_index": self.invoke_index,
            "process": self.process,
            "value": self.value,
            "topic": self.topic,
            "recorded_error": self.error,
            "found": [s.to_json() for s in self.found],
        }

    def __str__(self) -> str:
        where = ", ".join(str(s) for s in self.found)
        return (
            f"value {self.value} (topic {self.topic}) recorded fail at history index "
            f"{self.index} (invoked at {self.invoke_index}, process {self.process}, error "
            f"{self.error!r}) but was appended at {where}"
        )


@dataclass
class GroundTruth:
    """What each node ever appended to workload topics, read from its disk's journal.

    Decoding is lazy: `where` decodes the journals only the first time it is asked, so a
    run without `fail` sends pays nothing.
    """

    journals: Mapping[str, list[JournalEntry]]
    _index: dict[int, list[Sighting]] | None = field(default=None, repr=False)
    unparsed_bytes: int = 0

    @classmethod
    def from_disks(cls, disks: Mapping[str, SimDisk]) -> GroundTruth:
        """The ground truth of a simulated cluster's disks (node name -> disk)."""
        return cls({name: disk.appends for name, disk in disks.items()})

    def where(self, value: int) -> list[Sighting]:
        """Every place `value` was appended (empty if nowhere)."""
        if self._index is None:
            self._index = self._decode()
        return self._index.get(value, [])

    def _decode(self) -> dict[int, list[Sighting]]:
        index: dict[int, list[Sighting]] = {}
        for node, entries in self.journals.items():
            for entry in entries:
                for offset, value in self._records(entry):
                    index.setdefault(value, []).append(
                        Sighting(node, log_of_path(entry.path), offset, entry.path)
                    )
        return index

    def _records(self, entry: JournalEntry) -> Iterable[tuple[int, int]]:
        values: list[tuple[int, int]] = []
        # Not whole batches from the returned position on (never so for the broker's
        # appends); the count is reported so a silent gap in the truth cannot hide.
        self.unparsed_bytes += batch_values(entry.data, values)
        return values


def batch_values(data: bytes, out: list[tuple[int, int]]) -> int:
    """Append `(offset, value)` of every workload record in the record batches `data`
    holds to `out`; returns how many trailing bytes were not whole batches (unread)."""
    pos, end = 0, len(data)
    while pos < end:
        try:
            header = check_framing(data, pos, end)
        except CorruptRecordError:
            return end - pos
        size = header.size_in_bytes
        batch = DefaultRecordBatch(data[pos : pos + size])
        if not batch.is_control_batch:
            for record in batch:
                value = _workload_value(record.value)
                if value is not None:
                    out.append((record.offset, value))
        pos += size
    return 0


def _workload_value(raw: bytes | None) -> int | None:
    """A record value as the workloads write it (decimal digits), None if it is not one."""
    if not raw or not raw.isdigit():
        return None
    return int(raw)


def log_of_path(path: str) -> str:
    """`"t1-0/00000000000000000000.log"` -> `"t1/0"`."""
    directory = path.split("/", 1)[0]
    topic, _, partition = directory.rpartition("-")
    return f"{topic}/{partition}"


def check_failed_sends(history_path: str, truth: GroundTruth) -> list[HarnessError]:
    """Every value of a `fail`-completed send that some replica appended, in history order."""
    errors: list[HarnessError] = []
    for event, invoke in HistoryReader(history_path):
        if not isinstance(event, Send) or event.type != "fail":
            continue
        messages = (invoke.value if isinstance(invoke, Send) else None) or event.value or []
        for message in messages:
            found = truth.where(message.value)
            if not found:
                continue
            errors.append(
                HarnessError(
                    index=event.index,
                    invoke_index=invoke.index if invoke is not None else event.index,
                    process=event.process,
                    value=message.value,
                    topic=message.topic,
                    error=event.error,
                    found=tuple(found),
                )
            )
    return errors


def console_lines(errors: list[HarnessError], shown: int = 3) -> list[str]:
    """What the console prints for a run with harness errors (nothing without any)."""
    if not errors:
        return []
    lines = [f"{HEADLINE}: {len(errors)} value(s) recorded `fail` were appended by a broker. "
             f"{EXPLANATION}."]
    lines += [f"  {e}" for e in errors[:shown]]
    if len(errors) > shown:
        lines.append(f"  ... and {len(errors) - shown} more in results.json (harness_errors)")
    return lines
