"""Role targets: faults aimed at whoever holds a role when the fault starts.

A schedule is plain data drawn before the run, but who leads a log, who sits in its
ISR, which node is the active controller and which one coordinates a group are only
known while the cluster runs, and they move (a leader change, a controller election).
A `Role` on a fault op names what to look up; the executor resolves it through the
`FaultTarget` at the moment the fault starts and acts on the nodes it found. When the
target cannot tell (no leader right now, a target that does not know), the op acts on
its fallback: `Role.fallback` if given, else the op's own concrete nodes.

The vocabulary (`kind`):

- `leader`: the leader of `log` ("topic/partition");
- `followers`: the ISR of `log` without its leader (the in-sync followers);
- `controller`: the active controller;
- `coordinator`: the coordinator of `group`, the leader of the `__consumer_offsets`
  partition the group hashes to (what FindCoordinator answers);
- `txn-coordinator`: the transaction coordinator of `transactional_id`, the leader of
  the `__transaction_state` partition the id hashes to (FindCoordinator, key type 1);
- `minority-with-leader`: a minority of the nodes (⌊(n-1)/2⌋, at least one) that
  includes the leader of `log`;
- `minority-without-leader`: a minority that excludes it.

For the minority kinds `log` may be omitted: the active controller is then the leader.
Minorities are filled deterministically: the leader's in-sync followers first, then the
other nodes, each in cluster order, so cutting one off also shrinks the log's ISR.

The resolution is a pure function of what the target reports (`resolve`), so it can be
tested without a cluster; the executor records the role asked and the nodes found.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from history.model import split_log
from nemesis.target import FaultTarget

RoleKind = Literal[
    "leader",
    "followers",
    "controller",
    "coordinator",
    "minority-with-leader",
    "minority-without-leader",
    "txn-coordinator",
]
ROLE_KINDS: tuple[str, ...] = (
    "leader",
    "followers",
    "controller",
    "coordinator",
    "minority-with-leader",
    "minority-without-leader",
    "txn-coordinator",
)
_NEEDS_LOG = ("leader", "followers")


class Role(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """A role in the cluster whose holders a fault targets, resolved when it starts."""

    kind: RoleKind
    log: str | None = None
    group: str | None = None
    fallback: list[str] = []
    transactional_id: str | None = None

    def __post_init__(self) -> None:
        # msgspec turns these into a ValidationError naming the field path.
        if self.kind in _NEEDS_LOG and self.log is None:
            raise ValueError(f"a {self.kind!r} role needs `log` (\"topic/partition\")")
        if self.kind == "coordinator" and not self.group:
            raise ValueError("a 'coordinator' role needs `group` (the consumer group id)")
        if self.kind == "txn-coordinator" and not self.transactional_id:
            raise ValueError("a 'txn-coordinator' role needs `transactional_id` (the "
                             "producer's transactional.id)")
        if self.log is not None:
            split_log(self.log)

    def describe(self) -> dict[str, Any]:
        """The role as it is recorded in a nemesis event (without its fallback)."""
        value: dict[str, Any] = {"kind": self.kind}
        if self.log is not None:
            value["log"] = self.log
        if self.group is not None:
            value["group"] = self.group
        if self.transactional_id is not None:
            value["transactional_id"] = self.transactional_id
        return value


@dataclass(frozen=True)
class Resolution:
    """The nodes a role resolved to, and how: the lookup used, or "fallback"."""

    nodes: list[str]
    resolved_by: str


def minority_size(n: int) -> int:
    """The largest minority of n nodes, at least one (one node of 1 or 2)."""
    return max(1, (n - 1) // 2)


def resolve(role: Role, target: FaultTarget, fallback: Sequence[str] = ()) -> Resolution:
    """The nodes holding `role` on `target` now; its fallback when the target cannot tell.

    `fallback` (the op's own concrete nodes) is used when `role.fallback` is empty. The
    nodes found are in cluster order and all among `target.nodes`.
    """
    found, how = _lookup(role, target)
    nodes = [n for n in target.nodes if n in set(found)]
    if nodes:
        return Resolution(nodes, how)
    return Resolution(list(role.fallback or fallback), "fallback")


def _leader(role: Role, target: FaultTarget) -> tuple[str | None, str]:
    """The node the minority and follower kinds count as leader, and the lookup used."""
    if role.log is None:
        return target.controller(), "controller"
    topic, partition = split_log(role.log)
    return target.leader_of(topic, partition), "leader_of"


def _isr(role: Role, target: FaultTarget) -> list[str]:
    if role.log is None:
        return []
    topic, partition = split_log(role.log)
    return list(target.isr_of(topic, partition))


def _lookup(role: Role, target: FaultTarget) -> tuple[list[str], str]:
    nodes = list(target.nodes)
    if role.kind == "controller":
        controller = target.controller()
        return ([controller] if controller else []), "controller"
    if role.kind == "coordinator":
        assert role.group is not None  # __post_init__
        coordinator = target.coordinator_of(role.group)
        return ([coordinator] if coordinator else []), "coordinator_of"
    if role.kind == "txn-coordinator":
        assert role.transactional_id is not None  # __post_init__
        coordinator = target.txn_coordinator_of(role.transactional_id)
        return ([coordinator] if coordinator else []), "txn_coordinator_of"
    leader, how = _leader(role, target)
    if leader not in nodes:
        return [], how
    if role.kind == "leader":
        return [leader], how
    isr = _isr(role, target)
    followers = [n for n in nodes if n in isr and n != leader]
    if role.kind == "followers":
        return followers, "isr_of"
    size = minority_size(len(nodes))
    others = followers + [n for n in nodes if n != leader and n not in followers]
    if role.kind == "minority-with-leader":
        return [leader, *others[: size - 1]], how
    return others[:size], how
