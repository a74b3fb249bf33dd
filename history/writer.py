"""Writer of JSON Lines histories with a stable byte layout.

Keys are written in one fixed order (index, time, process, type, f, value, error,
assignment, generation; messages as topic, key, value, partition, offset) so the same
run writes byte-identical files, which the simulation's reproducibility relies on.
The writer assigns dense indices and enforces the one-operation-at-a-time rule.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import IO, Any

import msgspec

from history.model import CLIENT_FS, EVENT_TYPES
from history.pairing import Pairing

_MESSAGE_KEYS = ("topic", "key", "value", "partition", "offset")
_TXN_MESSAGE_KEYS = (*_MESSAGE_KEYS, "input")
_encode = msgspec.json.Encoder().encode
_EVENT_TYPES = frozenset(EVENT_TYPES)
_CLIENT_FS = frozenset(CLIENT_FS)


class _PendingOp:
    """What the pairing state machine needs to know of a written invoke."""

    __slots__ = ("f", "index", "process", "type")

    def __init__(self, index: int, process: int, type: str, f: str) -> None:
        self.index = index
        self.process = process
        self.type = type
        self.f = f


def canonical_value(f: str, value: Any) -> Any:
    """Return `value` with send messages' keys in canonical order (other values as given)."""
    if f == "txn" and isinstance(value, list):
        # A transaction's sends in the same canonical order, plus the exactly-once `input`.
        return [
            [mop[0], {k: mop[1][k] for k in _TXN_MESSAGE_KEYS if k in mop[1]}]
            if mop[0] == "send" and isinstance(mop[1], dict) else mop
            for mop in value
        ]
    if f == "send" and isinstance(value, list):
        # dict first: isinstance against the Mapping ABC is the slow part otherwise.
        return [
            {k: m[k] for k in _MESSAGE_KEYS if k in m} if isinstance(m, (dict, Mapping)) else m
            for m in value
        ]
    return value


def encode_event(event: Mapping[str, Any]) -> bytes:
    """Encode one event mapping as a JSON line (with trailing newline) in canonical key order."""
    out: dict[str, Any] = {
        "index": event["index"],
        "time": event["time"],
        "process": event["process"],
        "type": event["type"],
        "f": event["f"],
        "value": canonical_value(event["f"], event.get("value")),
    }
    for optional in ("error", "assignment", "generation"):
        if event.get(optional) is not None:
            out[optional] = event[optional]
    return _encode(out) + b"\n"


class HistoryWriter:
    """Append events to a history stream, one JSON object per line.

    `append` numbers events densely from 0 and raises ValueError on an event that
    breaks the history contract (unknown type or f, or pairing), so a buggy workload
    fails where it writes rather than when its history is checked.
    """

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self._pairing = Pairing()
        self.next_index = 0

    def append(
        self,
        process: int | str,
        type: str,
        f: str,
        value: Any = None,
        *,
        time: int,
        error: str | None = None,
        assignment: list[str] | None = None,
        generation: int | None = None,
    ) -> int:
        """Write one event and return its index."""
        if type not in _EVENT_TYPES:
            raise ValueError(f"unknown event type {type!r}; expected one of {EVENT_TYPES}")
        index = self.next_index
        if process != "nemesis":
            if not isinstance(process, int) or isinstance(process, bool):
                raise ValueError(f"process must be an int or 'nemesis', not {process!r}")
            if f not in _CLIENT_FS:
                raise ValueError(f"unknown client f {f!r}; expected one of {CLIENT_FS}")
            self._pairing.observe(_PendingOp(index, process, type, f))  # type: ignore[arg-type]
        # Built here in canonical key order, as encode_event would (without its lookups).
        out: dict[str, Any] = {
            "index": index,
            "time": time,
            "process": process,
            "type": type,
            "f": f,
            "value": canonical_value(f, value),
        }
        if error is not None:
            out["error"] = error
        if assignment is not None:
            out["assignment"] = assignment
        if generation is not None:
            out["generation"] = generation
        self._stream.write(_encode(out) + b"\n")
        self.next_index = index + 1
        return index

    def write_event(self, event: Mapping[str, Any]) -> int:
        """Write an event given as a mapping (its `index` is replaced by the next one)."""
        return self.append(
            event["process"],
            event["type"],
            event["f"],
            event.get("value"),
            time=event["time"],
            error=event.get("error"),
            assignment=event.get("assignment"),
            generation=event.get("generation"),
        )


def write_history(path: str, events: Iterable[Mapping[str, Any]]) -> None:
    """Write a whole list of event mappings to `path` (for tests and examples)."""
    with open(path, "wb") as stream:
        writer = HistoryWriter(stream)
        for event in events:
            writer.write_event(event)
