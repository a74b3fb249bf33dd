"""Synthetic transactional histories from a model of a correct Kafka with transactions.

`TxnLogModel` runs `txn` operations (DESIGN.md section 4) of several processes,
interleaved by a random chooser: a transaction is invoked, takes effect atomically at a
later step (its commit point) and completes later still. At its commit point it polls
every log it is assigned from its consumer position to the end of what is committed
(a read_committed consumer that is caught up), then appends its sends, each log's
messages at consecutive offsets, followed by a commit marker that takes one offset.
An aborted transaction takes offsets too (its records and the abort marker), which no
reader ever sees. Outcomes are honest: `ok` committed, `fail` aborted, `info` either.
Since every transaction acts at one instant, all dependencies follow the commit order:
the checkers must find no anomaly at all, even in `--mode strict`.

`inject` (for the benchmark) plants read-skew cycles: now and then a transaction's poll
of one log misses the newest committed transaction's writes there while its poll of
another log sees that same transaction's write (a G-single per planted case).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

Event = dict[str, Any]


@dataclass(frozen=True)
class TxnModelConfig:
    """Shape of a synthetic transactional run."""

    logs: int = 4
    slots: int = 4
    # Logs one process polls (at most).
    read_logs: int = 2
    keys: int = 4
    max_sends: int = 3
    p_poll: float = 0.7
    p_fail: float = 0.05
    p_info: float = 0.02
    # Probability that a transaction is planted with a read skew (see module docstring).
    p_skew: float = 0.0
    final_reads: bool = True

    @property
    def names(self) -> list[str]:
        """Every log of the run, as `topic/partition`."""
        return [f"t0/{p}" for p in range(self.logs)]


@dataclass
class _Client:
    process: int
    assigned: list[str]
    position: dict[str, int] = field(default_factory=dict)
    # The pending txn: its invoke micro-ops, then (after its commit point) its outcome.
    pending: list[Any] | None = None
    done: list[Any] | None = None
    outcome: str = ""


class TxnLogModel:
    """A correct transactional log and its clients; `events()` yields the history."""

    def __init__(self, rng: random.Random, config: TxnModelConfig | None = None) -> None:
        self.rng = rng
        self.config = config or TxnModelConfig()
        self.logs: dict[str, list[tuple[int, str | None, int]]] = {
            name: [] for name in self.config.names}
        self.next_offset = dict.fromkeys(self.config.names, 0)
        self.next_value = 0
        self.next_process = 0
        self.index = 0
        self.planted = 0
        # The most recent committed txn's writes: log -> records, for planting skews.
        self._last_writes: dict[str, list[tuple[int, str | None, int]]] = {}
        self.clients = [self._new_client() for _ in range(self.config.slots)]

    def _new_client(self) -> _Client:
        process = self.next_process
        self.next_process += 1
        names = self.config.names
        assigned = sorted(self.rng.sample(names, min(self.config.read_logs, len(names))))
        # A new consumer starts at the end of what is committed (seek to end), as one
        # replacing a crashed process would from its group's committed offsets.
        return _Client(process, assigned, {name: len(self.logs[name]) for name in assigned})

    def _event(self, process: int, type: str, value: Any, **extra: Any) -> Event:
        event = {"index": self.index, "time": self.index * 1000, "process": process,
                 "type": type, "f": "txn", "value": value, **extra}
        self.index += 1
        return event

    def events(self, txns: int) -> Iterator[Event]:
        """Yield the events of a run of about `txns` transactions, then final reads."""
        started = 0
        rng = self.rng
        slots = self.config.slots
        while True:
            slot = rng.randrange(slots)
            client = self.clients[slot]
            if client.pending is None:
                if started >= txns:
                    if all(c.pending is None for c in self.clients):
                        break
                    continue
                started += 1
                client.pending = self._micro_ops()
                yield self._event(client.process, "invoke", client.pending)
            elif client.done is None:
                self._commit_point(client)
            else:
                yield from self._complete(slot, client)
        if self.config.final_reads:
            yield from self._final_reads()

    def _micro_ops(self) -> list[Any]:
        rng = self.rng
        ops: list[Any] = []
        if rng.random() < self.config.p_poll:
            ops.append(["poll", None])
        for _ in range(rng.randint(0 if ops else 1, self.config.max_sends)):
            value = self.next_value
            self.next_value += 1
            ops.append(["send", {"topic": "t0", "key": f"k{rng.randrange(self.config.keys)}",
                                 "value": value}])
        return ops

    def _commit_point(self, client: _Client) -> None:
        """The transaction takes effect (or not) atomically, now."""
        rng = self.rng
        assert client.pending is not None
        roll = rng.random()
        p_fail, p_info = self.config.p_fail, self.config.p_info
        outcome = "fail" if roll < p_fail else "info" if roll < p_fail + p_info else "ok"
        applies = outcome == "ok" or (outcome == "info" and rng.random() < 0.5)
        skew = applies and outcome == "ok" and rng.random() < self.config.p_skew
        done: list[Any] = []
        writes: dict[str, list[tuple[int, str | None, int]]] = {}
        for f, payload in client.pending:
            if f == "poll":
                done.append(["poll", self._poll(client, skew) if outcome == "ok" else None])
            else:
                # Kafka's partitioner: a key always goes to the same partition.
                name = f"t0/{int(payload['key'][1:]) % self.config.logs}"
                writes.setdefault(name, []).append((-1, payload["key"], payload["value"]))
                done.append(["send", dict(payload, partition=int(name.rsplit("/", 1)[1]))])
        placed: dict[int, int] = {}
        for name, records in writes.items():
            offset = self.next_offset[name]
            for i, (_, key, value) in enumerate(records):
                placed[value] = offset + i
                if applies:
                    self.logs[name].append((offset + i, key, value))
            # The records, then the commit or abort marker.
            self.next_offset[name] = offset + len(records) + 1
        if applies:
            self._last_writes = {name: self.logs[name][-len(recs):]
                                 for name, recs in writes.items()}
        for mop in done:
            if mop[0] == "send":
                if outcome == "ok":
                    mop[1]["offset"] = placed[mop[1]["value"]]
                else:
                    del mop[1]["partition"]
        client.done = done if outcome == "ok" else client.pending
        client.outcome = outcome

    def _poll(self, client: _Client, skew: bool) -> dict[str, list[list[Any]]]:
        """Everything committed from the client's positions on; with `skew`, hide the last
        committed txn's writes to one log the client reads if it sees them in another."""
        hidden: str | None = None
        if skew:
            seen = [name for name in client.assigned if self._last_writes.get(name)]
            # The hidden log must still show the reader something older, or the reader
            # has no read there that the hidden writes come after.
            older = [name for name in seen if len(self.logs[name]) - len(self._last_writes[name])
                     > client.position.get(name, 0)]
            if len(seen) >= 2 and older:
                hidden = older[0]
                self.planted += 1
        result: dict[str, list[list[Any]]] = {}
        for name in client.assigned:
            records = self.logs[name]
            start = client.position.get(name, 0)
            end = len(records)
            if name == hidden:
                end -= len(self._last_writes[name])
            if end > start:
                result[name] = [list(r) for r in records[start:end]]
                client.position[name] = end
        return result

    def _complete(self, slot: int, client: _Client) -> Iterator[Event]:
        if client.outcome == "ok":
            yield self._event(client.process, "ok", client.done)
        elif client.outcome == "fail":
            yield self._event(client.process, "fail", client.done, error="aborted")
        else:
            yield self._event(client.process, "info", client.done, error="timeout")
        client.pending = client.done = None
        if client.outcome == "info":
            self.clients[slot] = self._new_client()

    def _final_reads(self) -> Iterator[Event]:
        """A fresh process assigns every log and reads it all in one poll."""
        process = self.next_process
        self.next_process += 1
        names = self.config.names
        assign = {"logs": names, "seek": "beginning"}
        for type in ("invoke", "ok"):
            yield {"index": self.index, "time": self.index * 1000, "process": process,
                   "type": type, "f": "assign", "value": assign}
            self.index += 1
        result = {name: [list(r) for r in records] for name, records in self.logs.items()
                  if records}
        for type, value in (("invoke", None), ("ok", result)):
            yield {"index": self.index, "time": self.index * 1000, "process": process,
                   "type": type, "f": "poll", "value": value}
            self.index += 1
