"""The `membership` package: add brokers, reassign logs, decommission brokers.

Generation (`MembershipGenerator`): a cluster of nodes n1..nN runs with
`SPARE_NODES` spares n(N+1).. configured but not started. Each step of the package
draws one change, deterministically from the schedule's rng:

- add-broker: start the next spare (while one is left);
- reassign: move one of the workload's logs to a new replica set of the same size as
  the cluster's replication factor (min(3, N)), drawn from the members and the brokers
  added so far, so data moves onto new brokers and off old ones;
- decommission-broker: retire a broker this package added (moving its replicas off
  first). The controller voters n1..nN are never decommissioned: the quorum stays fixed.

Changes are permanent, so the package is never "in force" (nothing to repair); other
packages never target spares, and the brokers it adds are left to it alone.

Execution (`apply_membership`): the executor hands these ops to the target's
`MembershipTarget` primitives and records one nemesis event per op once it is done. An
added broker must register with the controller and a decommission must wait for its
reassignments to complete, both of which a fault may hold back for a long while, so
these two run in the background (the schedule's other ops keep their times) and their
event is written when they finish; a reassignment returns once the controller took it.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any, Protocol, cast

import trio

from nemesis.ops import AddBroker, DecommissionBroker, Reassign
from nemesis.target import FaultTarget, MembershipTarget

SPARE_NODES = 2
"""How many spare nodes a run with the `membership` package configures."""
MAX_REPLICATION_FACTOR = 3
# Relative weights of the three changes when all are possible.
_WEIGHTS = {"add": 1, "reassign": 3, "decommission": 1}


def spare_names(nodes: Sequence[str], count: int = SPARE_NODES) -> list[str]:
    """The spares after members n1..nN: n(N+1), ..."""
    return [f"n{len(nodes) + i}" for i in range(1, count + 1)]


class _World(Protocol):
    nodes: list[str]
    logs: list[str]


class MembershipGenerator:
    """Draws add-broker, reassign and decommission-broker ops (see the module docstring)."""

    # Its faults never take out every node at once (see `nemesis.timing`).
    cluster_wide = False

    def __init__(self, nodes: Sequence[str], spares: int = SPARE_NODES) -> None:
        self.spares = spare_names(nodes, spares)
        self.added: list[str] = []

    @property
    def is_active(self) -> bool:
        """Never: a membership change is not a fault that a later step repairs."""
        return False

    def step(
        self, at_ms: int, world: _World, rng: random.Random
    ) -> AddBroker | Reassign | DecommissionBroker | None:
        choices = []
        if self.spares:
            choices.append("add")
        if world.logs:
            choices.append("reassign")
        if self.added:
            choices.append("decommission")
        if not choices:
            return None
        if self.spares and not self.added:
            # First bring a broker in, so that reassignments have somewhere new to go.
            choice = "add"
        else:
            choice = rng.choices(choices, weights=[_WEIGHTS[c] for c in choices])[0]
        if choice == "add":
            node = self.spares.pop(0)
            self.added.append(node)
            return AddBroker(at_ms=at_ms, node=node)
        if choice == "decommission":
            node = rng.choice(self.added)
            self.added.remove(node)
            return DecommissionBroker(at_ms=at_ms, node=node)
        log = rng.choice(world.logs)
        candidates = [*world.nodes, *self.added]
        size = min(MAX_REPLICATION_FACTOR, len(world.nodes))
        replicas = rng.sample(candidates, size)
        return Reassign(at_ms=at_ms, log=log, replicas=replicas)


Record = Callable[..., None]


def _split_log(log: str) -> tuple[str, int]:
    topic, _, index = log.rpartition("/")
    return topic, int(index)


async def apply_membership(
    op: AddBroker | DecommissionBroker | Reassign,
    target: FaultTarget,
    record: Record,
    nursery: trio.Nursery,
) -> None:
    """Run one membership op against `target`, recording its event with `record(f,
    value, error=...)`; a decommission finishes in `nursery`."""
    value: dict[str, Any]
    if isinstance(op, Reassign):
        f, value = "reassign", {"log": op.log, "replicas": list(op.replicas)}
    elif isinstance(op, AddBroker):
        f, value = "add-broker", {"node": op.node}
    else:
        f, value = "decommission-broker", {"node": op.node}
    found = _membership(target)
    if found is None:
        record(f, value, error="the target cannot change its membership")
        return
    member = found

    async def run() -> None:
        try:
            if isinstance(op, Reassign):
                topic, index = _split_log(op.log)
                await member.reassign(topic, index, op.replicas)
            elif isinstance(op, AddBroker):
                await member.add_broker(op.node)
            else:
                await member.decommission(op.node)
        except Exception as exc:  # recorded: a change the cluster refused or did not finish
            record(f, value, error=f"{type(exc).__name__}: {exc}")
        else:
            record(f, value)

    if isinstance(op, Reassign):
        await run()
    else:
        nursery.start_soon(run)


def _membership(target: FaultTarget) -> MembershipTarget | None:
    """`target` as a MembershipTarget if it has the primitives, else None."""
    names = ("spares", "add_broker", "reassign", "decommission")
    if all(hasattr(target, name) for name in names):
        return cast(MembershipTarget, target)
    return None
