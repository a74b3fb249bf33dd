"""Schedule generation: packages + duration + interval + timers + seed -> a `Schedule`.

Follows Jepsen's `nemesis.combined` in picking: each step picks an idle package at random
(`gen/mix`) after a staggered delay drawn uniformly from [0, 2 × interval)
(`gen/stagger`), so faults start on average once per interval while a package is free.
It departs from Jepsen's flip-flop in how long a fault lasts: each fault draws a
duration class and a duration from it (`nemesis.timing`: short, around the broker session
timeout, past replica.lag.time.max.ms, around the group timeouts), read from the timers
of the cluster the schedule is for, and its package repairs it exactly then. A package
with a fault in force is not picked again until its repair. Targets are drawn here, not
at run time, so the schedule is plain data.

A small model of the cluster (`_World`) keeps packages from colliding: a node killed by
one package is not paused by another, and so on. The executor checks again at run time,
so a hand-edited or shrunk schedule is still safe to run.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from nemesis import grudge as grudges
from nemesis.composites import Composite
from nemesis.disk import DiskPackage
from nemesis.membership import MembershipGenerator
from nemesis.ops import (
    AnyFaultOp,
    ClockReset,
    ClockSkew,
    ClockStrobe,
    Kill,
    LeaderTarget,
    Link,
    Pause,
    PowerLoss,
    ResetConnections,
    Restart,
    Resume,
    Schedule,
    StartLinkFault,
    StartPartition,
    StopLinkFault,
    StopPartition,
)
from nemesis.packages import COMPOSITES, parse
from nemesis.timing import FaultTimers, draw_duration

DEFAULT_INTERVAL_MS = 10_000
DEFAULT_RECOVERY_MS = 10_000
# A repair that cannot happen when due (a clock to reset on a node another package has
# down) is tried again this much later.
RETRY_REPAIR_MS = 1_000

# Share of clean-cut partitions that block one direction only, and of partitions that
# also cut clients off from the brokers on the other side.
ONE_WAY_CHANCE = 0.25
CLIENTS_CHANCE = 0.5
CLEAN_CUTS = ("one", "leader", "halves", "majority", "minority-third")


@dataclass
class _World:
    """What generation believes is broken, so packages pick targets that make sense."""

    nodes: list[str]
    clients: list[str]
    logs: list[str]
    down: set[str] = field(default_factory=set)
    # The consumer groups and transactional ids the workload uses (coordinator faults).
    groups: list[str] = field(default_factory=list)
    transactional_ids: list[str] = field(default_factory=list)
    paused: set[str] = field(default_factory=set)

    def up(self) -> list[str]:
        """Nodes neither down nor paused, in cluster order."""
        return [n for n in self.nodes if n not in self.down and n not in self.paused]


def _pick(spec: str, eligible: list[str], n_total: int, rng: random.Random) -> list[str]:
    """Nodes for a node spec ("one", "minority", "all") among eligible ones, sorted."""
    if spec == "one":
        count = 1
    elif spec == "minority":
        count = max(1, grudges.majority(n_total) - 1)
    else:
        count = len(eligible)
    chosen = rng.sample(eligible, min(count, len(eligible)))
    return sorted(chosen)


class _Partition:
    """Flip-flops start-partition / stop-partition."""

    # Whether the fault just started takes out every node (see nemesis.timing).
    cluster_wide = False

    def __init__(self) -> None:
        self.active = False

    @property
    def is_active(self) -> bool:
        """Whether this package's fault is in force (its next step repairs it)."""
        return self.active

    def step(self, at_ms: int, world: _World, rng: random.Random) -> AnyFaultOp | None:
        if self.active:
            self.active = False
            return StopPartition(at_ms=at_ms)
        n = len(world.nodes)
        if n < 2:
            return None
        shapes = [s for s in grudges.SHAPES if _shape_fits(s, n)]
        shape = rng.choice(shapes)
        one_way = shape in CLEAN_CUTS and rng.random() < ONE_WAY_CHANCE
        clients = list(world.clients) if world.clients and rng.random() < CLIENTS_CHANCE else []
        self.active = True
        if shape == "leader":
            log = rng.choice([*world.logs, None])
            isolated_clients = sorted(c for c in clients if rng.random() < 0.5)
            leader = LeaderTarget(
                log=log, fallback=rng.choice(world.nodes), clients_isolated=isolated_clients
            )
            return StartPartition(
                at_ms=at_ms, shape=shape, one_way=one_way, clients=clients, leader=leader
            )
        grudge = grudges.build(shape, world.nodes, rng, clients=clients, one_way=one_way)
        return StartPartition(
            at_ms=at_ms,
            shape=shape,
            grudge=grudges.to_json(grudge),
            one_way=one_way,
            clients=clients,
        )


def _shape_fits(shape: str, n: int) -> bool:
    """Whether `shape` actually cuts something in a cluster of n nodes."""
    if shape == "minority-third":
        return grudges.minority_third(n) >= 1
    if shape in ("majorities-ring", "bridge"):
        return n >= 3
    return n >= 2


class _Link:
    """Flip-flops a latency or bandwidth fault with its repair; resets are instant."""

    cluster_wide = False

    def __init__(self) -> None:
        self.active = False

    @property
    def is_active(self) -> bool:
        """Whether this package's fault is in force (its next step repairs it)."""
        return self.active

    def step(self, at_ms: int, world: _World, rng: random.Random) -> AnyFaultOp | None:
        if self.active:
            self.active = False
            return StopLinkFault(at_ms=at_ms)
        targets = _pick(rng.choice(("one", "minority", "all")), world.nodes, len(world.nodes), rng)
        kind = rng.choice(("latency", "bandwidth", "reset"))
        if kind == "reset":
            return ResetConnections(at_ms=at_ms, nodes=targets)
        self.active = True
        links = _links_touching(targets, world)
        if kind == "latency":
            latency = float(rng.choice((5, 20, 50, 100, 250, 1000)))
            return StartLinkFault(
                at_ms=at_ms, links=links, latency_ms=latency, jitter_ms=latency / 2
            )
        rate = rng.choice((1_000, 10_000, 100_000, 1_000_000))
        return StartLinkFault(at_ms=at_ms, links=links, bandwidth_bytes_per_s=rate)


def _links_touching(targets: Sequence[str], world: _World) -> list[Link]:
    """Every directed broker-broker and client-broker link with a target at one end."""
    endpoints = [*world.nodes, *world.clients]
    found: set[Link] = set()
    for t in targets:
        for other in endpoints:
            if other != t:
                found.add((t, other))
                found.add((other, t))
    return sorted(found)


class _Crash:
    """Flip-flops kill (or power loss) of some live nodes with their restart."""

    def __init__(self, specs: tuple[str, ...], power_loss: bool) -> None:
        self.specs = specs
        self.power_loss = power_loss
        self.crashed: list[str] = []
        self.cluster_wide = False

    @property
    def is_active(self) -> bool:
        """Whether nodes this package crashed await their restart."""
        return bool(self.crashed)

    def step(self, at_ms: int, world: _World, rng: random.Random) -> AnyFaultOp | None:
        if self.crashed:
            nodes, self.crashed = self.crashed, []
            world.down -= set(nodes)
            return Restart(at_ms=at_ms, nodes=nodes)
        eligible = world.up()
        if not eligible:
            return None
        nodes = _pick(rng.choice(self.specs), eligible, len(world.nodes), rng)
        self.crashed = nodes
        world.down |= set(nodes)
        self.cluster_wide = not world.up()
        if self.power_loss:
            return PowerLoss(at_ms=at_ms, nodes=nodes)
        return Kill(at_ms=at_ms, nodes=nodes)


class _Pause:
    """Flip-flops pause of some live nodes with their resume."""

    def __init__(self) -> None:
        self.paused: list[str] = []
        self.cluster_wide = False

    @property
    def is_active(self) -> bool:
        """Whether nodes this package paused await their resume."""
        return bool(self.paused)

    def step(self, at_ms: int, world: _World, rng: random.Random) -> AnyFaultOp | None:
        if self.paused:
            nodes, self.paused = self.paused, []
            world.paused -= set(nodes)
            return Resume(at_ms=at_ms, nodes=nodes)
        eligible = world.up()
        if not eligible:
            return None
        spec = rng.choice(("one", "minority", "all"))
        nodes = _pick(spec, eligible, len(world.nodes), rng)
        self.paused = nodes
        world.paused |= set(nodes)
        self.cluster_wide = not world.up()
        return Pause(at_ms=at_ms, nodes=nodes)


class _Clock:
    """Bumps a clock then resets it, or strobes one (which ends in step by itself).

    Deltas and periods are powers of two over the ranges Jepsen's clock nemesis uses.
    """

    cluster_wide = False

    def __init__(self, timers: FaultTimers) -> None:
        self.timers = timers
        self.skewed: str | None = None

    @property
    def is_active(self) -> bool:
        """Whether a bumped clock awaits its reset."""
        return self.skewed is not None

    def step(self, at_ms: int, world: _World, rng: random.Random) -> AnyFaultOp | None:
        if self.skewed is not None:
            if self.skewed not in world.up():
                # Another package crashed or paused it; reset once it is back.
                return None
            node, self.skewed = self.skewed, None
            return ClockReset(at_ms=at_ms, nodes=[node])
        eligible = world.up()
        if not eligible:
            return None
        node = rng.choice(eligible)
        sign = rng.choice((-1, 1))
        if rng.random() < 0.5:
            self.skewed = node
            return ClockSkew(at_ms=at_ms, node=node, delta_ms=sign * 2 ** rng.randint(2, 18))
        return ClockStrobe(
            at_ms=at_ms,
            node=node,
            delta_ms=sign * 2 ** rng.randint(2, 16),
            period_ms=2 ** rng.randint(3, 10),
            # A strobe ends by itself: its duration is drawn here, like any fault's.
            duration_ms=draw_duration(self.timers, rng).ms,
        )


def _package(
    name: str, timers: FaultTimers, nodes: Sequence[str] = ()
) -> _Partition | _Link | _Crash | _Pause | _Clock | DiskPackage | MembershipGenerator:
    if name == "membership":
        return MembershipGenerator(nodes)
    if name == "partition":
        return _Partition()
    if name == "link":
        return _Link()
    if name == "kill":
        return _Crash(("one", "minority", "all"), power_loss=False)
    if name == "power-loss":
        return _Crash(("one", "all"), power_loss=True)
    if name == "pause":
        return _Pause()
    if name == "clock":
        return _Clock(timers)
    if name == "disk":
        return DiskPackage()
    raise ValueError(f"no generator for package {name!r}")


def generate(
    packages: str | Sequence[str],
    *,
    nodes: Sequence[str],
    clients: Sequence[str] = (),
    duration_ms: int,
    interval_ms: int = DEFAULT_INTERVAL_MS,
    recovery_ms: int = DEFAULT_RECOVERY_MS,
    seed: int,
    logs: Sequence[str] = (),
    timers: FaultTimers | None = None,
    groups: Sequence[str] = (),
    transactional_ids: Sequence[str] = (),
) -> Schedule:
    """A schedule of faults from `packages` over `duration_ms`, then heal and recovery.

    `packages` is a spec such as "partition,kill", "mixed" or "none" (see
    `nemesis.packages`). `logs` ("topic/partition") are the partitions whose leader a
    `leader` partition may isolate; the controller is always a candidate. The same
    arguments always give the same schedule. `timers` are the Kafka timers of the
    cluster and clients the schedule is for (Kafka's defaults when None); fault durations
    are drawn around them, and the composite packages are timed by them.
    `groups` and `transactional_ids` are those the workload uses, whose coordinators the
    coordinator packages aim at.
    """
    names = parse(packages)
    if len(nodes) == 0:
        raise ValueError("a schedule needs at least one node")
    if len(set(nodes)) != len(nodes) or set(nodes) & set(clients):
        raise ValueError(f"node and client names must be distinct: {list(nodes)}, {list(clients)}")
    if duration_ms < 0 or recovery_ms < 0:
        raise ValueError("duration and recovery must not be negative")
    if interval_ms <= 0:
        raise ValueError(f"interval must be positive, got {interval_ms} ms")
    rng = random.Random(seed)
    timers = timers or FaultTimers()
    world = _World(nodes=list(nodes), clients=list(clients), logs=list(logs),
                   groups=list(groups), transactional_ids=list(transactional_ids))
    generators = [
        Composite(name, timers) if name in COMPOSITES else _package(name, timers, nodes)
        for name in names
    ]
    # Generator index -> when the fault it has in force is repaired.
    due: dict[int, int] = {}
    ops: list[AnyFaultOp] = []
    at_ms = 0
    while generators:
        step_at = at_ms + int(rng.uniform(0, 2 * interval_ms))
        # Repairs falling due before the next step, in time order (faults past the end
        # are left to the final heal).
        while due:
            index, when = min(due.items(), key=lambda item: (item[1], item[0]))
            if when > step_at or when >= duration_ms:
                break
            del due[index]
            generator = generators[index]
            op = generator.step(when, world, rng)
            if isinstance(op, list):
                ops.extend(o for o in op if o.at_ms < duration_ms)
            elif op is not None:
                ops.append(op)
            if generator.is_active:
                due[index] = when + RETRY_REPAIR_MS
        at_ms = step_at
        if at_ms >= duration_ms:
            break
        idle = [i for i in range(len(generators)) if i not in due]
        if not idle:
            continue
        index = rng.choice(idle)
        generator = generators[index]
        op = generator.step(at_ms, world, rng)
        if isinstance(op, list):
            # A composite's whole scenario; what falls after the final heal is dropped.
            ops.extend(o for o in op if o.at_ms < duration_ms)
        elif op is not None:
            ops.append(op)
        if generator.is_active:
            drawn = draw_duration(timers, rng, cluster_wide=generator.cluster_wide)
            due[index] = at_ms + drawn.ms
    ops.sort(key=lambda op: op.at_ms)  # stable: a composite's ops run ahead of later steps
    return Schedule(
        nodes=list(nodes),
        clients=list(clients),
        packages=list(names),
        seed=seed,
        interval_ms=interval_ms,
        duration_ms=duration_ms,
        recovery_ms=recovery_ms,
        ops=ops,
    )
