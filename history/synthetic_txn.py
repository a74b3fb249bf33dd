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


@dataclass(frozen=True)
class TransformConfig:
    """Shape of a synthetic consume-transform-produce run (`TransformModel`)."""

    partitions: int = 2
    producers: int = 2
    transformers: int = 2
    keys: int = 4
    max_sends: int = 3
    p_fail: float = 0.05
    p_info: float = 0.02
    # Planted weaknesses: a transform commits its input offsets outside the transaction
    # and the commit is lost before its process crashes (its inputs are transformed
    # again: eos-duplicate), or a transform drops one output (eos-loss).
    p_lost_commit: float = 0.0
    p_drop_output: float = 0.0


@dataclass
class _Transformer:
    process: int
    slot: int
    position: dict[str, int] = field(default_factory=dict)
    pending: list[Any] | None = None
    done: list[Any] | None = None
    outcome: str = ""
    crash: bool = False


class TransformModel:
    """A correct exactly-once pipeline: producers fill `in`, transformers turn each input
    record into one `out` record in the same partition (`"input"` names the input value)
    and commit the input offsets in the same transaction. Each input partition has one
    transformer slot; a replacement process resumes from the committed offsets.
    Planted weaknesses (see `TransformConfig`) are counted in `planted`."""

    def __init__(self, rng: random.Random, config: TransformConfig | None = None) -> None:
        self.rng = rng
        self.config = config or TransformConfig()
        parts = range(self.config.partitions)
        self.logs: dict[str, list[tuple[int, str | None, int]]] = {
            f"{topic}/{p}": [] for topic in ("in", "out") for p in parts}
        self.next_offset = dict.fromkeys(self.logs, 0)
        # Input log -> index in its records list of the next record to transform.
        self.committed = {f"in/{p}": 0 for p in parts}
        self.next_value = 0
        self.next_process = 0
        self.index = 0
        self.planted = 0
        # Input values transformed by more than one applied transaction.
        self.transformed: set[int] = set()
        self.duplicated: set[int] = set()
        self.clients: list[_Transformer] = []
        for slot in range(self.config.producers + self.config.transformers):
            self.clients.append(self._new_client(slot))

    def _new_client(self, slot: int) -> _Transformer:
        process = self.next_process
        self.next_process += 1
        return _Transformer(process, slot, dict(self.committed))

    def _owned(self, client: _Transformer) -> list[str]:
        t = client.slot - self.config.producers
        if t < 0:
            return []
        return [f"in/{p}" for p in range(self.config.partitions)
                if p % self.config.transformers == t]

    def _event(self, process: int, type: str, f: str, value: Any, **extra: Any) -> Event:
        event = {"index": self.index, "time": self.index * 1000, "process": process,
                 "type": type, "f": f, "value": value, **extra}
        self.index += 1
        return event

    def events(self, txns: int) -> Iterator[Event]:
        """Yield the events of about `txns` transactions, then a final read of all logs."""
        started = 0
        rng = self.rng
        while True:
            slot = rng.randrange(len(self.clients))
            client = self.clients[slot]
            if client.pending is None:
                if started >= txns:
                    if all(c.pending is None for c in self.clients):
                        break
                    continue
                started += 1
                client.pending = self._invoke(client)
                yield self._event(client.process, "invoke", "txn", client.pending)
            elif client.done is None:
                self._commit_point(client)
            else:
                kind = client.outcome
                extra = {} if kind == "ok" else {"error": "aborted" if kind == "fail"
                                                 else "timeout"}
                yield self._event(client.process, kind, "txn", client.done, **extra)
                client.pending = client.done = None
                if kind == "info" or client.crash:
                    self.clients[slot] = self._new_client(slot)
        process = self.next_process
        self.next_process += 1
        names = [name for name, records in self.logs.items() if records]
        assign = {"logs": names, "seek": "beginning"}
        yield self._event(process, "invoke", "assign", assign)
        yield self._event(process, "ok", "assign", assign)
        yield self._event(process, "invoke", "poll", None)
        yield self._event(process, "ok", "poll", {name: [list(r) for r in self.logs[name]]
                                                  for name in names})

    def _invoke(self, client: _Transformer) -> list[Any]:
        if self._owned(client):
            return [["poll", None]]
        sends = []
        for _ in range(self.rng.randint(1, self.config.max_sends)):
            sends.append(["send", {"topic": "in", "key": f"k{self.rng.randrange(self.config.keys)}",
                                   "value": self.next_value}])
            self.next_value += 1
        return sends

    def _append(self, name: str, records: list[tuple[str | None, int]], applies: bool
                ) -> list[int]:
        """Offsets for `records` at the end of `name` (appended if `applies`), then a
        marker."""
        offset = self.next_offset[name]
        self.next_offset[name] = offset + len(records) + 1
        if applies:
            self.logs[name].extend((offset + i, k, v) for i, (k, v) in enumerate(records))
        return [offset + i for i in range(len(records))]

    def _commit_point(self, client: _Transformer) -> None:
        rng = self.rng
        assert client.pending is not None
        roll = rng.random()
        p_fail, p_info = self.config.p_fail, self.config.p_info
        outcome = "fail" if roll < p_fail else "info" if roll < p_fail + p_info else "ok"
        applies = outcome == "ok" or (outcome == "info" and rng.random() < 0.5)
        client.outcome = outcome
        if not self._owned(client):
            by_log: dict[str, list[tuple[str | None, int]]] = {}
            for _, m in client.pending:
                name = f"in/{int(m['key'][1:]) % self.config.partitions}"
                by_log.setdefault(name, []).append((m["key"], m["value"]))
            placed: dict[int, tuple[int, int]] = {}
            for name, records in by_log.items():
                for (_, v), o in zip(records, self._append(name, records, applies),
                                     strict=True):
                    placed[v] = (int(name[3:]), o)
            if outcome == "ok":
                client.done = [["send", dict(m, partition=placed[m["value"]][0],
                                             offset=placed[m["value"]][1])]
                               for _, m in client.pending]
            else:
                client.done = client.pending
            return
        polled: dict[str, list[list[Any]]] = {}
        sends: list[Any] = []
        commits: dict[str, int] = {}
        drop = outcome == "ok" and rng.random() < self.config.p_drop_output
        for name in self._owned(client):
            batch = self.logs[name][client.position[name]:]
            if not batch:
                continue
            polled[name] = [list(r) for r in batch]
            out = f"out/{name[3:]}"
            outputs: list[tuple[str | None, int]] = []
            inputs: list[int] = []
            for _, key, value in batch:
                if drop:
                    drop = False
                    self.planted += 1
                    continue
                outputs.append((key, self.next_value))
                inputs.append(value)
                self.next_value += 1
            if applies:
                self.duplicated.update(self.transformed.intersection(inputs))
                self.transformed.update(inputs)
            for (key, w), v, o in zip(outputs, inputs, self._append(out, outputs, applies),
                                      strict=True):
                sends.append(["send", {"topic": "out", "key": key, "value": w,
                                       "partition": int(name[3:]), "offset": o, "input": v}])
            commits[name] = batch[-1][0] + 1
            if applies:
                client.position[name] += len(batch)
        lost_commit = bool(commits) and outcome == "ok" and rng.random() < self.config.p_lost_commit
        if applies and not lost_commit:
            for name in commits:
                self.committed[name] = client.position[name]
        if lost_commit:
            self.planted += 1
            client.crash = True
        if outcome != "ok":
            # The client knows what it polled and sent, not where the sends landed.
            for _, message in sends:
                del message["partition"], message["offset"]
        done: list[Any] = [["poll", polled], *sends]
        if commits and not lost_commit:
            done.append(["commit", commits])
        client.done = done
