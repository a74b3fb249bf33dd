"""Synthetic histories from a model of a correct Kafka-style log and its clients.

`CorrectLogModel` simulates logs that never lose, duplicate or reorder, producers,
manually assigned consumers and one consumer group with eager rebalancing, all
interleaved by a random chooser: an operation is invoked, takes effect atomically at
some later step, and completes later still, so operations overlap as they do in a real
run. Failures are honest: a `fail` never took effect, an `info` may or may not have, and
a process that gets `info` is replaced by a new one. Every history it writes must be
judged valid by the checkers; tests mutate them to inject single anomalies, and the
benchmark uses it to make large realistic histories.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

Event = dict[str, Any]


@dataclass(frozen=True)
class ModelConfig:
    """Shape of a synthetic run."""

    topics: int = 1
    partitions: int = 2
    # Concurrent client slots; a slot's process is replaced when it gets `info`.
    slots: int = 4
    # Slots whose processes consume as members of `group` (the rest assign manually).
    members: int = 2
    group: str = "g1"
    keys: int = 4
    max_batch: int = 3
    max_poll: int = 4
    # Logs one assigning consumer reads (at most; fewer when there are fewer logs).
    assign_logs: int = 3
    p_fail: float = 0.05
    p_info: float = 0.03
    p_crash_op: float = 0.02
    p_nemesis: float = 0.01
    # Finish with a fresh consumer reading every log from the beginning.
    final_reads: bool = True
    # Records per log in one final poll.
    final_poll: int = 500

    @property
    def logs(self) -> list[str]:
        """Every log of the run, as `topic/partition`."""
        return [f"t{t}/{p}" for t in range(self.topics) for p in range(self.partitions)]


@dataclass
class _Op:
    f: str
    invoke_value: Any
    effect: Any = None  # what the op did when it took effect, or None before
    effected: bool = False
    failed: bool = False


@dataclass
class _Client:
    process: int
    member: bool
    op: _Op | None = None
    # Consumer state: log -> next offset to read.
    positions: dict[str, int] = field(default_factory=dict)
    subscribed: bool = False
    generation: int = 0


class CorrectLogModel:
    """Steps a correct broker and its clients; `events()` yields the history as dicts."""

    def __init__(self, rng: random.Random, config: ModelConfig | None = None) -> None:
        self.rng = rng
        self.config = config or ModelConfig()
        self.logs: dict[str, list[int]] = {log: [] for log in self.config.logs}
        self.key_of: dict[int, str | None] = {}
        self.index = 0
        self.next_value = 0
        self.next_process = 0
        self.clients: list[_Client] = []
        for slot in range(self.config.slots):
            self.clients.append(self._new_client(member=slot < self.config.members))
        # The group: live subscribed members, generation, assignment, committed offsets.
        self.group_members: list[int] = []
        self.generation = 0
        self.assignment: dict[int, list[str]] = {}
        self.committed: dict[str, int] = {}

    def _new_client(self, member: bool) -> _Client:
        client = _Client(self.next_process, member)
        self.next_process += 1
        return client

    def _event(self, process: int | str, type: str, f: str, value: Any, **extra: Any) -> Event:
        event = {"index": self.index, "time": self.index * 1000, "process": process,
                 "type": type, "f": f, "value": value}
        event.update({k: v for k, v in extra.items() if v is not None})
        self.index += 1
        return event

    # -- the run ----------------------------------------------------------------------

    def events(self, steps: int, max_events: int | None = None) -> Iterator[Event]:
        """Run `steps` scheduling steps, settle every open operation, then final reads.

        With `max_events`, scheduling stops early once that many events were emitted
        (settling and final reads still follow, so the history stays complete).
        """
        rng = self.rng
        clients = self.clients
        for _ in range(steps):
            if max_events is not None and self.index >= max_events:
                break
            if rng.random() < self.config.p_nemesis:
                yield self._event("nemesis", "info", rng.choice(["kill", "pause", "resume"]),
                                  {"nodes": [rng.randrange(3)]})
                continue
            slot = rng.randrange(len(clients))
            yield from self._step(slot)
        for slot in range(len(clients)):
            while clients[slot].op is not None:
                yield from self._step(slot)
        if self.config.final_reads:
            yield from self._final_reads()

    def _step(self, slot: int) -> Iterator[Event]:
        client = self.clients[slot]
        op = client.op
        rng = self.rng
        if op is None:
            yield from self._invoke(client)
        elif not op.effected and not op.failed:
            if op.f in ("send", "commit") and rng.random() < self.config.p_fail:
                op.failed = True
            elif rng.random() < self.config.p_info:
                yield from self._complete(slot, client, "info")
            else:
                self._take_effect(client, op)
        else:
            kind = "info" if rng.random() < self.config.p_info and not op.failed else "ok"
            yield from self._complete(slot, client, "fail" if op.failed else kind)

    def _invoke(self, client: _Client) -> Iterator[Event]:
        rng = self.rng
        config = self.config
        choice = rng.random()
        # The invocation's JSON value, whose shape depends on `f`.
        value: object
        if rng.random() < config.p_crash_op:
            f, value = "crash", None
        elif client.member and not client.subscribed:
            f = "subscribe"
            value = {"topics": [f"t{t}" for t in range(config.topics)], "group": config.group}
        elif not client.member and not client.positions:
            f = "assign"
            count = min(config.assign_logs, len(self.logs))
            value = {"logs": sorted(rng.sample(sorted(self.logs), count)), "seek": "beginning"}
        elif choice < 0.45:
            f, value = "send", self._messages()
        elif choice < 0.9 or not client.member:
            f, value = "poll", None
        elif client.positions:
            f, value = "commit", dict(sorted(client.positions.items()))
        else:
            f, value = "poll", None
        client.op = _Op(f, value)
        yield self._event(client.process, "invoke", f, value)

    def _messages(self) -> list[dict[str, Any]]:
        rng = self.rng
        config = self.config
        messages = []
        for _ in range(rng.randint(1, config.max_batch)):
            key = None if rng.random() < 0.1 else f"k{rng.randrange(config.keys)}"
            messages.append({"topic": f"t{rng.randrange(config.topics)}", "key": key,
                             "value": self.next_value})
            self.next_value += 1
        return messages

    def _take_effect(self, client: _Client, op: _Op) -> None:
        """Apply `op` to the broker state atomically; a stale commit fails instead."""
        op.effected = True
        if op.f == "send":
            acked = []
            for m in op.invoke_value:
                if m["key"] is None:
                    partition = self.rng.randrange(self.config.partitions)
                else:
                    partition = int(m["key"][1:]) % self.config.partitions
                log = self.logs[f"{m['topic']}/{partition}"]
                log.append(m["value"])
                self.key_of[m["value"]] = m["key"]
                acked.append({**m, "partition": partition, "offset": len(log) - 1})
            op.effect = acked
        elif op.f == "poll":
            op.effect = self._poll(client)
        elif op.f == "assign":
            client.positions = {log: 0 for log in op.invoke_value["logs"]}
        elif op.f == "subscribe":
            client.subscribed = True
            self.group_members.append(client.process)
            self._rebalance()
        elif op.f == "commit":
            if client.generation != self.generation or client.process not in self.assignment:
                op.failed = True
                op.effected = False
            else:
                self.committed.update(op.invoke_value)

    def _poll(self, client: _Client) -> tuple[dict[str, list[list[Any]]], list[str] | None]:
        reassigned = None
        if client.member and client.subscribed and client.generation != self.generation:
            # Eager rebalance inside poll: adopt the new assignment, resume from commits.
            client.generation = self.generation
            owned = self.assignment.get(client.process, [])
            client.positions = {log: self.committed.get(log, 0) for log in owned}
            reassigned = list(owned)
        result: dict[str, list[list[Any]]] = {}
        for log, position in sorted(client.positions.items()):
            values = self.logs[log]
            end = min(len(values), position + self.rng.randint(0, self.config.max_poll))
            if end > position:
                result[log] = [[o, self.key_of[values[o]], values[o]]
                               for o in range(position, end)]
                client.positions[log] = end
        return result, reassigned

    def _rebalance(self) -> None:
        self.generation += 1
        members = sorted(self.group_members)
        self.assignment = {p: [] for p in members}
        for i, log in enumerate(sorted(self.logs)):
            if members:
                self.assignment[members[i % len(members)]].append(log)

    def _complete(self, slot: int, client: _Client, kind: str) -> Iterator[Event]:
        op = client.op
        assert op is not None
        client.op = None
        extra: dict[str, Any] = {}
        if kind == "info":
            value = op.invoke_value if op.f != "send" else [
                {**m, "partition": None, "offset": None} for m in op.invoke_value
            ]
            if op.f == "poll":
                value = None
            yield self._event(client.process, "info", op.f, value, error="crashed")
            self._retire(slot, client)
            return
        if kind == "fail":
            yield self._event(client.process, "fail", op.f, op.invoke_value, error="rejected")
            return
        if op.f == "send":
            value = op.effect
        elif op.f == "poll":
            value, reassigned = op.effect
            if reassigned is not None:
                extra = {"assignment": sorted(reassigned), "generation": client.generation}
        elif op.f == "crash":
            yield self._event(client.process, "info", "crash", None)
            self._retire(slot, client)
            return
        else:
            value = op.invoke_value
        yield self._event(client.process, "ok", op.f, value, **extra)

    def _retire(self, slot: int, client: _Client) -> None:
        if client.process in self.group_members:
            self.group_members.remove(client.process)
            self._rebalance()
        self.clients[slot] = self._new_client(client.member)

    def _final_reads(self) -> Iterator[Event]:
        process = self.next_process
        self.next_process += 1
        logs = sorted(self.logs)
        value = {"logs": logs, "seek": "beginning"}
        yield self._event(process, "invoke", "assign", value)
        yield self._event(process, "ok", "assign", value)
        # Chunked like a real consumer's polls, so no single line grows without bound.
        cursors = dict.fromkeys(logs, 0)
        while any(cursors[log] < len(self.logs[log]) for log in logs):
            result = {}
            for log in logs:
                values = self.logs[log]
                start = cursors[log]
                end = min(len(values), start + self.config.final_poll)
                if end > start:
                    result[log] = [[o, self.key_of[values[o]], values[o]]
                                   for o in range(start, end)]
                    cursors[log] = end
            yield self._event(process, "invoke", "poll", None)
            yield self._event(process, "ok", "poll", result)


def generate_history(seed: int | random.Random, steps: int = 200,
                     config: ModelConfig | None = None) -> list[Event]:
    """A whole valid history as a list of event dicts (for tests and examples)."""
    rng = seed if isinstance(seed, random.Random) else random.Random(seed)
    return list(CorrectLogModel(rng, config).events(steps))
