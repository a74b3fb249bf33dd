"""Deterministic simulation of the Raft metadata quorum, after Kafka's RaftEventSimulationTest.

Voters exchange messages through a simulated network (delays, drops, partitions),
crash and restart with their durable log and quorum state, all on a virtual clock
driven by one seeded rng. After every event the invariants are checked: at most one
leader per epoch, no committed entry ever changes or disappears, the high watermark of
every node never goes back, and a leader's log holds every committed entry. After the
final heal every node converges to the same committed log.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field, replace

import pytest

from reference_broker.controller.raft import (
    Entry,
    InMemoryRaftLog,
    Leader,
    Message,
    QuorumStateStore,
    RaftConfig,
    RaftNode,
)

CONFIG = RaftConfig(
    election_timeout_ms=300,
    fetch_timeout_ms=600,
    election_backoff_max_ms=300,
    request_timeout_ms=400,
    fetch_interval_ms=30,
)


@dataclass
class Network:
    """Messages in flight, ordered by delivery time; a cut pair drops what crosses it."""

    rng: random.Random
    drop_rate: float
    max_delay_ms: int
    in_flight: list[tuple[int, int, Message]] = field(default_factory=list)
    cut: set[frozenset[int]] = field(default_factory=set)
    seq: int = 0

    def send(self, message: Message, now_ms: int) -> None:
        if self.rng.random() < self.drop_rate:
            return
        self.seq += 1
        deliver_at = now_ms + self.rng.randint(1, self.max_delay_ms)
        heapq.heappush(self.in_flight, (deliver_at, self.seq, message))

    def blocked(self, a: int, b: int) -> bool:
        return frozenset((a, b)) in self.cut

    def partition(self, side: set[int], everyone: set[int]) -> None:
        self.cut = {frozenset((a, b)) for a in side for b in everyone - side}

    def heal(self) -> None:
        self.cut = set()


class Invariants:
    """The checks run after every event; each failure names the seed's broken promise."""

    def __init__(self) -> None:
        self.leaders: dict[int, int] = {}
        self.committed: list[Entry] = []
        self.last_hw: dict[int, int] = {}
        self.checked_hw: dict[int, int] = {}

    def forget_node(self, node_id: int) -> None:
        # A restarted node relearns its high watermark from zero, as in Kafka.
        self.last_hw.pop(node_id, None)
        self.checked_hw.pop(node_id, None)

    def check(self, nodes: dict[int, RaftNode | None], full: bool) -> None:
        for node_id, node in nodes.items():
            if node is None:
                continue
            if isinstance(node.state, Leader):
                holder = self.leaders.setdefault(node.epoch, node_id)
                assert holder == node_id, f"epoch {node.epoch} has leaders {holder} and {node_id}"
            hw = node.high_watermark
            assert hw >= self.last_hw.get(node_id, 0), f"node {node_id} HW went back to {hw}"
            assert hw <= node.log.end_offset, f"node {node_id} HW {hw} beyond its log end"
            self.last_hw[node_id] = hw
            start = 0 if full else self.checked_hw.get(node_id, 0)
            for entry in node.log.read(start, hw - start):
                if entry.offset < len(self.committed):
                    assert self.committed[entry.offset] == entry, (
                        f"node {node_id} committed {entry} but "
                        f"{self.committed[entry.offset]} was committed at that offset"
                    )
                else:
                    assert entry.offset == len(self.committed)
                    self.committed.append(entry)
            self.checked_hw[node_id] = hw
            # Leader completeness: a leader elected after the latest committing epoch holds
            # every committed entry (a stale leader of an older epoch need not).
            newest = self.committed[-1].epoch if self.committed else 0
            if isinstance(node.state, Leader) and full and node.epoch > newest:
                prefix = node.log.read(0, len(self.committed))
                assert prefix == self.committed, f"leader {node_id} lacks committed entries"


class Simulation:
    """A quorum of `n` voters on a virtual clock, with faults drawn from `seed`."""

    def __init__(self, n: int, seed: int, drop_rate: float = 0.02) -> None:
        self.rng = random.Random(seed)
        # Small fetches make followers hold partial epochs, where elections get subtle.
        self.config = replace(CONFIG, max_fetch_entries=self.rng.choice([1, 2, 4, 64]))
        self.ids = list(range(1, n + 1))
        self.logs = {i: InMemoryRaftLog() for i in self.ids}
        self.stores = {i: QuorumStateStore() for i in self.ids}
        self.network = Network(random.Random(self.rng.random()), drop_rate, 25)
        self.now = 0
        self.restarts = 0
        self.nodes: dict[int, RaftNode | None] = {i: self._start(i) for i in self.ids}
        self.invariants = Invariants()
        self.events = 0
        self.next_value = 0
        self.proposed: dict[int, int] = {}

    def _start(self, node_id: int) -> RaftNode:
        self.restarts += 1
        return RaftNode(
            node_id,
            set(self.ids),
            self.logs[node_id],
            self.stores[node_id],
            random.Random(self.rng.random()),
            self.now,
            self.config,
        )

    def _send_all(self, messages: list[Message]) -> None:
        for message in messages:
            assert message.src != message.dst
            if not self.network.blocked(message.src, message.dst):
                self.network.send(message, self.now)

    def crash(self, node_id: int) -> None:
        self.nodes[node_id] = None
        self.invariants.forget_node(node_id)

    def restart(self, node_id: int) -> None:
        if self.nodes[node_id] is None:
            self.nodes[node_id] = self._start(node_id)

    def leader(self) -> RaftNode | None:
        leaders = [n for n in self.nodes.values() if n is not None and n.is_leader]
        return max(leaders, key=lambda n: n.epoch) if leaders else None

    def propose(self) -> None:
        leader = self.leader()
        if leader is not None:
            self.next_value += 1
            result = leader.propose(self.next_value)
            assert isinstance(result, int)

    def run_until(self, end_ms: int, *, faults: bool, proposals: bool = True) -> None:
        next_fault = self.now + self.rng.randint(50, 400)
        next_propose = self.now + 20
        while self.now < end_ms:
            candidates = [end_ms]
            if proposals:
                candidates.append(next_propose)
            if faults:
                candidates.append(next_fault)
            if self.network.in_flight:
                candidates.append(self.network.in_flight[0][0])
            for node in self.nodes.values():
                if node is not None:
                    candidates.append(node.next_deadline_ms())
            self.now = max(self.now, min(candidates))
            if self.now >= end_ms:
                break
            while self.network.in_flight and self.network.in_flight[0][0] <= self.now:
                _, _, message = heapq.heappop(self.network.in_flight)
                target = self.nodes[message.dst]
                if target is None or self.network.blocked(message.src, message.dst):
                    continue
                self._send_all(target.receive(message, self.now))
                self._checked()
            for node in list(self.nodes.values()):
                if node is not None and node.next_deadline_ms() <= self.now:
                    self._send_all(node.tick(self.now))
                    expired = node.next_deadline_ms() <= self.now
                    assert not expired, f"tick left a timer expired: {node.state}"
                    self._checked()
            if proposals and self.now >= next_propose:
                self.propose()
                self._checked()
                next_propose = self.now + self.rng.randint(10, 60)
            if faults and self.now >= next_fault:
                self.fault()
                self._checked()
                next_fault = self.now + self.rng.randint(50, 400)

    def _checked(self) -> None:
        self.events += 1
        self.invariants.check(self.nodes, full=self.events % 200 == 0)

    def fault(self) -> None:
        kind = self.rng.choice(["partition", "partition", "heal", "crash", "restart", "isolate"])
        live = [i for i in self.ids if self.nodes[i] is not None]
        if kind == "partition":
            side = set(self.rng.sample(self.ids, self.rng.randint(1, len(self.ids) // 2)))
            self.network.partition(side, set(self.ids))
        elif kind == "isolate":
            leader = self.leader()
            if leader is not None:
                self.network.partition({leader.node_id}, set(self.ids))
        elif kind == "heal":
            self.network.heal()
        elif kind == "crash" and live:
            self.crash(self.rng.choice(live))
        elif kind == "restart":
            for i in self.ids:
                self.restart(i)

    def heal_and_converge(self, limit_ms: int = 20_000) -> None:
        """Heal everything, restart everyone, and demand one log everywhere."""
        self.network.heal()
        for i in self.ids:
            self.restart(i)
        deadline = self.now + limit_ms
        while self.now < deadline:
            self.run_until(self.now + 500, faults=False, proposals=False)
            nodes = [n for n in self.nodes.values() if n is not None]
            leader = self.leader()
            if leader is None or not leader.is_ready_leader:
                continue
            target = leader.log.end_offset
            if all(
                (n.high_watermark, n.log.end_offset, n.epoch) == (target, target, leader.epoch)
                for n in nodes
            ):
                break
        self.invariants.check(self.nodes, full=True)
        nodes = [n for n in self.nodes.values() if n is not None]
        leader = self.leader()
        assert leader is not None and leader.is_ready_leader, "no serving leader after heal"
        reference = leader.log.read(0, leader.log.end_offset)
        for node in nodes:
            assert node.leader_id == leader.node_id and node.epoch == leader.epoch
            assert node.log.read(0, node.log.end_offset) == reference, f"node {node.node_id}"
            assert node.high_watermark == leader.log.end_offset
        assert reference[: len(self.invariants.committed)] == self.invariants.committed


def run_seed(n: int, seed: int, duration_ms: int = 6_000) -> Simulation:
    sim = Simulation(n, seed)
    sim.run_until(duration_ms, faults=True)
    sim.heal_and_converge()
    return sim


@pytest.mark.parametrize("seed", range(120))
def test_three_voters_keep_raft_invariants_under_partitions_and_crashes(seed: int) -> None:
    sim = run_seed(3, seed)
    assert len(sim.invariants.committed) > 0, "nothing was ever committed"


@pytest.mark.parametrize("seed", range(1000, 1090))
def test_five_voters_keep_raft_invariants_under_partitions_and_crashes(seed: int) -> None:
    sim = run_seed(5, seed)
    assert len(sim.invariants.committed) > 0, "nothing was ever committed"


def test_same_seed_replays_the_same_committed_log() -> None:
    first = run_seed(3, 42)
    second = run_seed(3, 42)
    assert first.invariants.committed == second.invariants.committed
    assert first.events == second.events


def test_healthy_quorum_elects_once_and_commits_every_proposal() -> None:
    sim = Simulation(3, seed=7, drop_rate=0.0)
    sim.run_until(5_000, faults=False)
    assert len(sim.invariants.leaders) == 1, f"leaders by epoch: {sim.invariants.leaders}"
    payloads = [e.payload for e in sim.invariants.committed if isinstance(e.payload, int)]
    assert payloads == list(range(1, len(payloads) + 1))
    assert len(payloads) >= sim.next_value - 5
