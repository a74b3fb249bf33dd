"""Composite scenarios aimed at the coordinators of transactions and groups, and zombies.

Exactly-once rests on two coordinators: the transaction coordinator of a transactional
id (the leader of its `__transaction_state` partition) and the group coordinator of a
consumer group (the leader of its `__consumer_offsets` partition). Jepsen found most of
the transactional bugs of Kafka-like systems around them: a coordinator that fails
over mid-transaction, and a producer that stalls until its transaction times out and
comes back as a zombie. Each scenario here is a `nemesis.composites` package; targets are
`Role`s resolved when each fault starts, so "the coordinator" is whoever holds it then.

Scenarios (Tₛ = broker.session.timeout.ms, T꜀ = the controller quorum's failover time,
Tₓ = the producers' transaction.timeout.ms plus the coordinator's abort check interval):

- `kill-txn-coordinator`, `kill-group-coordinator`: kill the coordinator, restart it
  1.5–2.5 Tₛ + T꜀ later: long enough for the controller to fence it and move the role,
  even when the coordinator was the active controller too (a new controller must be
  elected first, and it starts the brokers' sessions afresh).
- `pause-txn-coordinator`, `pause-group-coordinator`: SIGSTOP it for as long; when it
  wakes it still believes it coordinates, until it learns otherwise.
- `isolate-txn-coordinator`, `isolate-group-coordinator`: cut it off from the other
  brokers for as long; half the time the clients are cut off from it too, else they
  keep reaching it (a coordinator that answers but cannot replicate its log).
- `zombie-producer`: pause one client endpoint for 1.2–1.5 Tₓ, then resume it: its open
  transaction has been aborted meanwhile (and its epoch bumped), so it comes back as a
  zombie whose writes and commit must be fenced; the workload's other instances with its
  transactional ids take over meanwhile.

The transactional id or group a scenario aims at is drawn from the ones the generator
was told the workload uses; with none, the first of each workload's conventions
(`DEFAULT_TRANSACTIONAL_IDS`, `DEFAULT_GROUPS`).
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Literal

from nemesis.ops import (
    AnyFaultOp,
    Kill,
    Pause,
    PauseClient,
    Restart,
    Resume,
    ResumeClient,
    StartPartition,
    StopPartition,
)
from nemesis.roles import Role

if TYPE_CHECKING:
    from nemesis.composites import Timers, World, _Scenario

# What a scenario aims at when the generator knows no ids: the group workload's first
# group, and the first transactional id of a workload that names them txn-<n>.
DEFAULT_GROUPS = ("group-0",)
DEFAULT_TRANSACTIONAL_IDS = ("txn-0",)

Coordinator = Literal["txn", "group"]
Action = Literal["kill", "pause", "isolate"]


def coordinator_role(which: Coordinator, world: World, rng: random.Random) -> Role:
    """The coordinator of a drawn transactional id or group, with a random fallback node."""
    fallback = [rng.choice(world.nodes)]
    if which == "txn":
        txn_id = rng.choice(world.transactional_ids or DEFAULT_TRANSACTIONAL_IDS)
        return Role(kind="txn-coordinator", transactional_id=txn_id, fallback=fallback)
    group = rng.choice(world.groups or DEFAULT_GROUPS)
    return Role(kind="coordinator", group=group, fallback=fallback)


def _ms(rng: random.Random, low: float, high: float) -> int:
    return int(rng.uniform(low, high))


def coordinator_fault(
    action: Action, which: Coordinator, at: int, world: World, rng: random.Random, t: Timers
) -> list[AnyFaultOp]:
    """Kill, pause or isolate a coordinator until the role has moved, then repair."""
    role = coordinator_role(which, world, rng)
    end = at + t.controller_failover_ms + _ms(rng, 1.5 * t.broker_session_ms,
                                              2.5 * t.broker_session_ms)
    everyone = list(world.nodes)
    if action == "kill":
        # The restart names every node: the executor skips those that are up.
        return [Kill(at_ms=at, role=role), Restart(at_ms=end, nodes=everyone)]
    if action == "pause":
        return [Pause(at_ms=at, role=role), Resume(at_ms=end, nodes=everyone)]
    clients = sorted(world.clients) if rng.random() < 0.5 else []
    return [
        StartPartition(at_ms=at, shape=f"isolate-{which}-coordinator", role=role,
                       clients=clients),
        StopPartition(at_ms=end),
    ]


def zombie_producer(at: int, world: World, rng: random.Random, t: Timers) -> list[AnyFaultOp]:
    """Pause one client endpoint until its transaction has timed out and been aborted."""
    if not world.clients:
        return []
    client = rng.choice(world.clients)
    hold = _ms(rng, 1.2 * t.txn_abort_ms, 1.5 * t.txn_abort_ms)
    return [PauseClient(at_ms=at, clients=[client]), ResumeClient(at_ms=at + hold,
                                                                  clients=[client])]


def _bind(action: Action, which: Coordinator) -> _Scenario:
    def scenario(at: int, world: World, rng: random.Random, t: Timers) -> list[AnyFaultOp]:
        return coordinator_fault(action, which, at, world, rng, t)

    return scenario


ACTIONS: tuple[Action, ...] = ("kill", "pause", "isolate")
COORDINATORS: tuple[Coordinator, ...] = ("txn", "group")
SCENARIOS: dict[str, _Scenario] = {
    f"{action}-{which}-coordinator": _bind(action, which)
    for action in ACTIONS
    for which in COORDINATORS
}
SCENARIOS["zombie-producer"] = zombie_producer
