"""Replication invariants, checked on the live brokers of a simulated run.

Kafka's RaftEventSimulationTest checks its quorum from the inside while faults
happen; this does the same for the reference brokers of a `SimCluster`. The
simulation lets a monitor read every node's state between two scheduler steps, so
the checks see exactly what the nodes believe:

- `election-safety`: at most one leader per epoch, for the controller quorum and for
  every partition (two nodes leading partition p in leader epoch e is a split brain);
- `hw-regression`: a node's high watermark of a partition never decreases while that
  incarnation of the node lives (a restart may learn a lower one again, as in Kafka);
- `committed-changed`: a batch below some leader's high watermark is committed; every
  replica that holds a batch at that offset below its own high watermark holds the
  same batch (same offsets, leader epoch and CRC);
- `committed-lost`: at the end, every committed batch is still in the log of every
  replica in the partition's ISR;
- `divergence`: after the final heal and quiet period, all replicas of a partition
  hold the same batches and all voters the same committed metadata.

Each violation names the node, the partition, the offsets and the simulated time.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from reference_broker.errors import BrokerError
from reference_broker.log.record_batch import iter_batches

if TYPE_CHECKING:
    from reference_broker.controller.raft.node import RaftNode

    from .cluster import SimCluster, SimNode

_READ_BYTES = 1 << 20

PartitionKey = tuple[str, int]


@dataclass(frozen=True, slots=True)
class BatchId:
    """What identifies a stored batch: its offsets, the epoch it was written in and its CRC."""

    base_offset: int
    last_offset: int
    leader_epoch: int
    crc: int


@dataclass(frozen=True, slots=True)
class Violation:
    """One broken invariant, with what a person needs to find it in the run."""

    kind: str
    time: float
    detail: str

    def __str__(self) -> str:
        return f"[{self.time:.3f}s] {self.kind}: {self.detail}"


@dataclass
class _ReplicaCursor:
    """How far a node's log of one partition has been compared, per incarnation."""

    incarnation: int
    verified_to: int = 0
    high_watermark: int = 0


@dataclass
class InvariantMonitor:
    """Samples a SimCluster's brokers and records every invariant violation it sees."""

    violations: list[Violation] = field(default_factory=list)
    samples: int = 0
    # (partition, leader epoch) -> the node that led it.
    _partition_leaders: dict[tuple[PartitionKey, int], str] = field(default_factory=dict)
    # controller epoch -> leader node.
    _controller_leaders: dict[int, str] = field(default_factory=dict)
    # partition -> base offset -> the committed batch there.
    _committed: dict[PartitionKey, dict[int, BatchId]] = field(default_factory=dict)
    _cursors: dict[tuple[str, PartitionKey], _ReplicaCursor] = field(default_factory=dict)
    # Reported once per (kind, subject), so a lasting problem does not flood the report.
    _reported: set[tuple[str, str]] = field(default_factory=set)

    def _violate(self, kind: str, subject: str, detail: str) -> None:
        if (kind, subject) in self._reported:
            return
        self._reported.add((kind, subject))
        self.violations.append(Violation(kind, trio.current_time(), detail))

    # -- sampling ------------------------------------------------------------------------

    async def run(self, cluster: SimCluster, interval_s: float = 0.05) -> None:
        """Sample every `interval_s` simulated seconds until cancelled."""
        while True:
            self.observe(cluster)
            await trio.sleep(interval_s)

    def observe(self, cluster: SimCluster) -> None:
        """Check every live node once (synchronous: nothing moves while it runs)."""
        self.samples += 1
        for node in _live_nodes(cluster):
            self._observe_controller(node)
            for key, partition in _partitions(node):
                self._observe_partition(node, key, partition)

    def _observe_controller(self, node: SimNode) -> None:
        raft = _raft_node(node)
        if raft is None or not raft.is_leader:
            return
        holder = self._controller_leaders.setdefault(raft.epoch, node.name)
        if holder != node.name:
            self._violate(
                "election-safety",
                f"controller-{raft.epoch}",
                f"controller epoch {raft.epoch} led by both {holder} and {node.name}",
            )

    def _observe_partition(self, node: SimNode, key: PartitionKey, partition: Any) -> None:
        name = f"{key[0]}-{key[1]}"
        if partition.is_leader:
            epoch_key = (key, partition.leader_epoch)
            holder = self._partition_leaders.setdefault(epoch_key, node.name)
            if holder != node.name:
                self._violate(
                    "election-safety",
                    f"{name}@{partition.leader_epoch}",
                    f"{name} leader epoch {partition.leader_epoch} led by both {holder} "
                    f"and {node.name}",
                )
        cursor = self._cursors.get((node.name, key))
        if cursor is None or cursor.incarnation != node.incarnation:
            cursor = self._cursors[(node.name, key)] = _ReplicaCursor(node.incarnation)
        hw = partition.high_watermark
        if hw < cursor.high_watermark:
            self._violate(
                "hw-regression",
                f"{node.name}/{name}/{node.incarnation}",
                f"{node.name} moved the high watermark of {name} back from "
                f"{cursor.high_watermark} to {hw}",
            )
        cursor.high_watermark = max(cursor.high_watermark, hw)
        committed = self._committed.setdefault(key, {})
        log = partition.log
        start = max(cursor.verified_to, log.log_start_offset)
        if partition.is_leader:
            # Everything below a leader's HW is committed: record it (first writer wins,
            # any later disagreement is exactly the violation we look for).
            for batch in _batches(log, start, hw):
                seen = committed.setdefault(batch.base_offset, batch)
                if seen != batch:
                    self._violate(
                        "committed-changed",
                        f"{name}@{batch.base_offset}",
                        f"{name} offset {batch.base_offset}: leader {node.name} holds "
                        f"{batch}, committed was {seen}",
                    )
            cursor.verified_to = max(cursor.verified_to, hw)
        else:
            self._compare_with_committed(node.name, name, committed, log, start, hw)
            cursor.verified_to = max(cursor.verified_to, hw)

    def _compare_with_committed(
        self, node: str, name: str, committed: dict[int, BatchId], log: Any, start: int, end: int
    ) -> None:
        # Below its own high watermark a follower's log is what it treats as committed. Above
        # it the follower may still hold an old leader's uncommitted suffix, even at offsets
        # the new leader has since committed, until its next fetch truncates it (as in Kafka).
        for batch in _batches(log, start, end):
            seen = committed.get(batch.base_offset)
            if seen is not None and seen != batch:
                self._violate(
                    "committed-changed",
                    f"{node}/{name}@{batch.base_offset}",
                    f"{name} offset {batch.base_offset}: {node} holds {batch}, committed "
                    f"was {seen}",
                )

    # -- the end of a run ------------------------------------------------------------------

    def final_check(self, cluster: SimCluster) -> None:
        """After the heal and quiet period: nothing committed lost, replicas converged."""
        self.observe(cluster)
        live = list(_live_nodes(cluster))
        for key, committed in sorted(self._committed.items()):
            name = f"{key[0]}-{key[1]}"
            replicas = [(node, p) for node in live for k, p in _partitions(node) if k == key]
            leaders = [(node, p) for node, p in replicas if p.is_leader]
            isr = set(leaders[0][1].isr) if leaders else set()
            logs: dict[str, tuple[BatchId, ...]] = {}
            for node, partition in replicas:
                held = {b.base_offset: b for b in _batches(partition.log, 0, None)}
                logs[node.name] = tuple(held[o] for o in sorted(held))
                if node.node_id not in isr:
                    continue
                missing = [o for o in sorted(committed) if held.get(o) != committed[o]]
                if missing:
                    self._violate(
                        "committed-lost",
                        f"{node.name}/{name}",
                        f"{name}: in-sync replica {node.name} lacks committed batches at "
                        f"offsets {missing[:10]}{'...' if len(missing) > 10 else ''}",
                    )
            if len(set(logs.values())) > 1:
                ends = {n: (b[-1].last_offset + 1 if b else 0) for n, b in logs.items()}
                self._violate(
                    "divergence",
                    name,
                    f"{name}: replicas differ after heal (log ends {ends})",
                )
        committed_logs = {}
        for node in live:
            raft = _raft_node(node)
            if raft is not None:
                committed_logs[node.name] = [
                    (e.offset, e.epoch, e.payload) for e in raft.committed_entries(0)
                ]
        if committed_logs:
            shortest = min(len(v) for v in committed_logs.values())
            prefixes = {n: repr(v[:shortest]) for n, v in committed_logs.items()}
            if len(set(prefixes.values())) > 1:
                self._violate(
                    "divergence",
                    "controller",
                    "controller voters disagree on their committed metadata log",
                )


# -- reading the nodes ------------------------------------------------------------------------


def _live_nodes(cluster: SimCluster) -> Iterator[SimNode]:
    for name in cluster.nodes:
        node = cluster.node(name)
        if node.up and node.running is not None:
            yield node


def _partitions(node: SimNode) -> Iterable[tuple[PartitionKey, Any]]:
    assert node.running is not None
    broker = node.running.broker
    return [
        (key, p) for key, p in sorted(broker.partitions.items()) if not key[0].startswith("__")
    ]


def _raft_node(node: SimNode) -> RaftNode | None:
    assert node.running is not None
    controller = node.running.broker.controller_service
    if controller is None:
        return None
    return controller.driver.node


def _batches(log: Any, start: int, end: int | None) -> Iterator[BatchId]:
    """Batch ids of `log` from `start` (rounded down to its batch) up to `end` (None: LEO)."""
    position = max(start, log.log_start_offset)
    limit = log.log_end_offset if end is None else min(end, log.log_end_offset)
    while position < limit:
        try:
            data = log.read(position, _READ_BYTES, max_offset=limit).records
        except BrokerError:
            return
        if not data:
            return
        advanced = False
        for header, _raw in iter_batches(data):
            if header.last_offset < position:
                continue
            yield BatchId(
                header.base_offset, header.last_offset, header.partition_leader_epoch, header.crc
            )
            position = header.next_offset
            advanced = True
        if not advanced:
            return
