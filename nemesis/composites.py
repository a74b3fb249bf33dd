"""Composite fault packages: timed scenarios from the literature, aimed at roles.

A single-fault package flip-flops one fault on the schedule's staggered interval. The
scenarios here need several faults in a set order and for set times, and the times that
matter are the brokers' own timers (`nemesis.timing.FaultTimers`): a leader cut off for less than
`broker.session.timeout.ms` is never replaced, and a follower that stops fetching leaves
the ISR only after `replica.lag.time.max.ms` (or once the controller fences it, after
the session timeout). So when the generator picks a composite it plays a whole scenario
at once: `step` returns every op of it, timed from `at_ms`, and stays quiet until the
scenario is over. Targets are `Role`s, resolved by the executor when each fault starts,
so "the leader" is whoever leads at that moment (after any earlier leader change).

Every draw comes from the generator's rng, so a seed fixes the scenarios.

Scenarios (Tₛ = session timeout, Tₗ = replica lag time):

- `isolate-leader`: cut a log's leader off from the other brokers for 1.5–2.5 Tₛ; clients
  are not cut, so they keep reaching it (Jepsen's leader isolation).
- `shrink-isr-then-kill-leader`: cut a minority of the log's nodes without its leader
  (in-sync followers first) off for 1.2–1.8 × min(Tₛ, Tₗ) so the ISR shrinks to the rest,
  then kill the leader (who leads then); heal the cut while it is down, restart it later.
- `rolling-restart`: every broker in turn (from a random one, in cluster order) is killed,
  restarted after 1–Tₛ/2 s down, and given Tₛ/3 to catch up; the executor's restart
  returns only once the broker serves, so the next one goes down after that.
- `flapping-partition`: 3–6 rounds of cutting off a log's leader (or one random node)
  and healing, each phase Tₛ/6–Tₛ/2 long: shorter than the session timeout, so the
  cluster keeps almost fencing it.
- `controller-only`: a one-way partition of the active controller from the other
  brokers for 1.2–2 Tₛ: either nobody hears it, or it hears nobody.
- `clock-jump-controller`: jump the active controller's clock by ±2^10..2^18 ms, reset
  every clock Tₛ/2–2 Tₛ later.

Coordinator scenarios (`nemesis.coordinator_faults`): kill, pause or isolate the
transaction coordinator of a transactional id, or the group coordinator of a consumer
group, for 1.5–2.5 Tₛ; and `zombie-producer`, which pauses a client endpoint for longer
than the producers' transaction timeout plus the coordinator's abort interval, so its
open transaction is aborted and its transactional id fenced by the time it runs again.
"""

from __future__ import annotations

import random
from typing import Protocol

import msgspec

from nemesis import coordinator_faults
from nemesis import grudge as grudges
from nemesis.ops import (
    AnyFaultOp,
    ClockReset,
    ClockSkew,
    Kill,
    Restart,
    StartPartition,
    StopPartition,
)
from nemesis.packages import COMPOSITES
from nemesis.roles import Role, RoleKind
from nemesis.timing import FaultTimers as Timers


class World(Protocol):
    """What a scenario needs to know about the cluster when it is drawn."""

    nodes: list[str]
    clients: list[str]
    logs: list[str]
    groups: list[str]
    transactional_ids: list[str]


class Composite:
    """One composite package: plays a whole scenario when stepped, then waits it out."""

    # Its faults never take out every node at once (see `nemesis.timing`).
    cluster_wide = False

    def __init__(self, name: str, timers: Timers) -> None:
        if name not in COMPOSITES:
            raise ValueError(f"no composite package {name!r}; known: {', '.join(COMPOSITES)}")
        self.name = name
        self.timers = timers
        self.busy_until = 0

    @property
    def is_active(self) -> bool:
        """Never overdue: a scenario repairs its own faults on its own time line."""
        return False

    def step(self, at_ms: int, world: World, rng: random.Random) -> list[AnyFaultOp] | None:
        """Every op of a scenario starting at `at_ms`, or None while one is playing."""
        if at_ms < self.busy_until or len(world.nodes) < 2:
            return None
        ops = _SCENARIOS[self.name](at_ms, world, rng, self.timers)
        if not ops:  # nothing to aim at (a zombie without client endpoints)
            return None
        self.busy_until = max(op.at_ms for op in ops) + 1
        return ops


def _log_role(kind: RoleKind, world: World, rng: random.Random) -> Role:
    """`kind` for a random log of the run, or for the controller's quorum without logs."""
    log = rng.choice(world.logs) if world.logs else None
    if log is None and kind in ("leader", "followers"):
        return Role(kind="controller", fallback=[rng.choice(world.nodes)])
    return Role(kind=kind, log=log, fallback=[rng.choice(world.nodes)])


def _ms(rng: random.Random, low: float, high: float) -> int:
    return int(rng.uniform(low, high))


def isolate_leader(at: int, world: World, rng: random.Random, t: Timers) -> list[AnyFaultOp]:
    """Cut the leader off from the brokers (not from clients) past the session timeout."""
    role = _log_role("leader", world, rng)
    hold = _ms(rng, 1.5 * t.broker_session_ms, 2.5 * t.broker_session_ms)
    return [
        StartPartition(at_ms=at, shape="isolate-leader", role=role),
        StopPartition(at_ms=at + hold),
    ]


def shrink_isr_then_kill_leader(
    at: int, world: World, rng: random.Random, t: Timers
) -> list[AnyFaultOp]:
    """Cut in-sync followers off until the ISR shrinks, then kill the leader."""
    leader = _log_role("leader", world, rng)
    cut = Role(kind="minority-without-leader", log=leader.log,
               fallback=[rng.choice(world.nodes)])
    shrink = min(t.broker_session_ms, t.replica_lag_ms)
    kill_at = at + _ms(rng, 1.2 * shrink, 1.8 * shrink)
    heal_at = kill_at + _ms(rng, 0.25 * t.broker_session_ms, 0.75 * t.broker_session_ms)
    restart_at = heal_at + _ms(rng, 0.5 * t.broker_session_ms, 1.5 * t.broker_session_ms)
    return [
        StartPartition(at_ms=at, shape="shrink-isr", role=cut),
        Kill(at_ms=kill_at, role=leader),
        StopPartition(at_ms=heal_at),
        # Whoever the kill found: every node not down is skipped by the executor.
        Restart(at_ms=restart_at, nodes=list(world.nodes)),
    ]


def rolling_restart(at: int, world: World, rng: random.Random, t: Timers) -> list[AnyFaultOp]:
    """Each broker in turn: kill, restart once it has been down a while, let it catch up."""
    first = rng.randrange(len(world.nodes))
    order = world.nodes[first:] + world.nodes[:first]
    ops: list[AnyFaultOp] = []
    now = at
    for node in order:
        ops.append(Kill(at_ms=now, nodes=[node]))
        now += _ms(rng, 1_000, max(1_001, t.broker_session_ms / 2))
        ops.append(Restart(at_ms=now, nodes=[node]))
        now += t.broker_session_ms // 3
    return ops


def flapping_partition(
    at: int, world: World, rng: random.Random, t: Timers
) -> list[AnyFaultOp]:
    """Cut a leader (or a node) off and heal it, over and over, inside the session timeout."""
    if rng.random() < 0.5:
        start = StartPartition(at_ms=0, shape="flapping-leader",
                               role=_log_role("leader", world, rng))
    else:
        node = rng.choice(world.nodes)
        grudge = grudges.complete_grudge(grudges.isolate(node, world.nodes))
        start = StartPartition(at_ms=0, shape="flapping-one", grudge=grudges.to_json(grudge))
    ops: list[AnyFaultOp] = []
    now = at
    low, high = t.broker_session_ms / 6, t.broker_session_ms / 2
    for _ in range(rng.randint(3, 6)):
        ops.append(msgspec.structs.replace(start, at_ms=now))
        now += _ms(rng, low, high)
        ops.append(StopPartition(at_ms=now))
        now += _ms(rng, low, high)
    return ops


def controller_only(at: int, world: World, rng: random.Random, t: Timers) -> list[AnyFaultOp]:
    """One-way partition of the active controller: unheard, or deaf."""
    role = Role(kind="controller", fallback=[rng.choice(world.nodes)])
    deaf = rng.random() < 0.5
    hold = _ms(rng, 1.2 * t.broker_session_ms, 2 * t.broker_session_ms)
    return [
        StartPartition(at_ms=at, shape="controller-only", role=role, one_way=True, deaf=deaf),
        StopPartition(at_ms=at + hold),
    ]


def clock_jump_controller(
    at: int, world: World, rng: random.Random, t: Timers
) -> list[AnyFaultOp]:
    """Jump the active controller's clock, put every clock back in step later."""
    role = Role(kind="controller")
    delta = rng.choice((-1, 1)) * 2 ** rng.randint(10, 18)
    hold = _ms(rng, 0.5 * t.broker_session_ms, 2 * t.broker_session_ms)
    return [
        ClockSkew(at_ms=at, node=rng.choice(world.nodes), delta_ms=delta, role=role),
        ClockReset(at_ms=at + hold, nodes=list(world.nodes)),
    ]


class _Scenario(Protocol):
    def __call__(
        self, at: int, world: World, rng: random.Random, t: Timers, /
    ) -> list[AnyFaultOp]: ...


_SCENARIOS: dict[str, _Scenario] = {
    "isolate-leader": isolate_leader,
    "shrink-isr-then-kill-leader": shrink_isr_then_kill_leader,
    "rolling-restart": rolling_restart,
    "flapping-partition": flapping_partition,
    "controller-only": controller_only,
    "clock-jump-controller": clock_jump_controller,
}
_SCENARIOS.update(coordinator_faults.SCENARIOS)
