"""Membership changes both runtimes share: node names to broker ids, and the moves that
empty a broker before it is decommissioned.

A cluster may be configured with spare nodes, named after its members (n4, n5 for a
3-node cluster with two spares): configured but not started. `add_broker` starts one
as a broker outside the controller quorum (an observer of the metadata log: the
voters stay fixed), after which reassignments may place replicas on it. `decommission`
moves every replica off a broker (one reassignment per partition it hosts, replacing
it by a member not yet in that partition), waits for them to complete, stops it for
good and unregisters it (Kafka's UnregisterBroker), as an operator retires a broker.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass


class MembershipError(Exception):
    """A membership change that cannot be made (unknown or busy node, timeout)."""


def broker_id(node: str) -> int:
    """The broker id of node `node` ("n4" -> 4)."""
    if not node.startswith("n") or not node[1:].isdigit():
        raise MembershipError(f"{node!r} is not a broker node name (n1, n2, ...)")
    return int(node[1:])


def node_name(broker: int) -> str:
    """The node name of broker id `broker` (4 -> "n4")."""
    return f"n{broker}"


def spare_names(members: int, spares: int) -> list[str]:
    """The names of `spares` spare nodes after `members` members."""
    return [node_name(i) for i in range(members + 1, members + spares + 1)]


@dataclass(frozen=True)
class Move:
    """One reassignment: partition `partition` of `topic` to `replicas` (broker ids)."""

    topic: str
    partition: int
    replicas: tuple[int, ...]


def moves_off(
    leaving: int,
    replicas_of: Mapping[tuple[str, int], Sequence[int]],
    members: Iterable[int],
) -> list[Move]:
    """The reassignments that take broker `leaving` out of every partition it hosts.

    Each partition keeps its replication factor where it can: `leaving` is replaced, in
    place, by the first member (by id) not already a replica; with no such member the
    partition loses that replica instead. Partitions in (topic, index) order.
    """
    candidates = sorted(m for m in members if m != leaving)
    moves = []
    for (topic, index), replicas in sorted(replicas_of.items()):
        if leaving not in replicas:
            continue
        spare = next((m for m in candidates if m not in replicas), None)
        if spare is None:
            target = tuple(r for r in replicas if r != leaving)
        else:
            target = tuple(spare if r == leaving else r for r in replicas)
        if target:
            moves.append(Move(topic, index, target))
    return moves
