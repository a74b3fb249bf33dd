"""Coverage-guided schedules: mutate the schedules that reached new states.

As a coverage-guided fuzzer (AFL's queue, Jepsen-style fault injection steered by
feedback), a `Guide` keeps a corpus of schedules that reached fault-space states no
earlier run had (`harness.coverage` names them; here they are opaque strings). Each
next schedule is either a fresh one from the plain generator (`FRESH_CHANCE`) or a
mutation of a corpus entry, picked with weight toward entries whose states few runs
reached (rare states are where the unexplored neighbours are) and away from entries
already mutated often. Mutations work on `Schedule` data only:

- `overlay`: the faults of one package from a fresh schedule are laid over this one,
  so what this schedule reaches happens under one more fault;
- `stretch`: a fault lasts a duration drawn across Kafka's own timers (its stop op
  moves), so a partition can outlive the broker session timeout or a pause the
  replica lag time;
- `shift`: the ops from some point on move earlier or later together;
- `retarget`: a kill, power loss or pause hits other nodes (its restart or resume
  follows), a clock bump another node;
- `aim`: a kill, power loss, pause or partition is aimed at a role instead (a log's
  leader or in-sync followers, the active controller, a minority with or without the
  leader; `nemesis.roles`), resolved when it starts, its concrete nodes the fallback:
  faults on the node that matters reach elections, ISR shrinks and fencing that the
  same fault on a bystander never does;
- `swap-kind`: a kill becomes a power loss or the other way round;
- `drop`: an op goes (a dropped stop leaves its fault in force until the final heal);
- `splice`: the ops before a time from this schedule, after it from another entry.

Proposals are also ranked before they run: given a `contexts` predictor (the fault
combinations a schedule puts in force, read from its ops alone), each run draws
`CANDIDATES` proposals and takes the one whose combinations earlier runs reached least,
so the static shape of the next schedule is steered toward what was not tried, and the
dynamic feedback (the corpus) toward what was reached.

A mutated schedule may pair a stop with no start, or start a fault on a node already
down: the executor checks each op against what is broken at run time and records a
skipped op, so every schedule here is safe to run.

Determinism: the randomness of a proposal comes from (guide seed, run seed) alone,
and the corpus changes only through `feed`; a caller that feeds results in a fixed
order (not the order runs happen to finish) gets the same schedules every time.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import msgspec

from nemesis.ops import (
    AnyFaultOp,
    ClockReset,
    ClockSkew,
    Kill,
    Pause,
    PowerLoss,
    Restart,
    Resume,
    Schedule,
    StartLinkFault,
    StartPartition,
    StopLinkFault,
    StopPartition,
)
from nemesis.roles import Role, RoleKind

# Share of proposals that are fresh schedules from the plain generator.
FRESH_CHANCE = 0.25
# Proposals drawn per run when they are ranked by the fault contexts they would reach.
CANDIDATES = 6
# Fault durations a stretch draws from (ms): short flaps to well past the session
# timeout (9 s), Kafka's default replica lag (30 s) and group session timeouts.
STRETCH_DURATIONS_MS = (500, 2_000, 5_000, 9_500, 12_000, 20_000, 31_000, 45_000)
MUTATIONS = ("overlay", "stretch", "shift", "retarget", "aim", "swap-kind", "drop", "splice")
# How often each is drawn: an overlay puts the events a schedule already reaches under
# one more fault, the shortest way to states not seen yet (kind @ fault combination);
# aiming one at a role moves it to where the cluster's state machines are.
MUTATION_WEIGHTS = (4, 2, 1, 1, 3, 1, 1, 1)


@dataclass
class CorpusEntry:
    """A schedule that reached new states, with every state it reached."""

    schedule: Schedule
    states: frozenset[str]
    picked: int = 0


class Guide:
    """The corpus of one configuration and the proposals made from it.

    `base(seed)` is the plain generator's schedule for a run seed (fresh proposals,
    and the start while the corpus is empty).
    """

    def __init__(self, seed: int, base: Callable[[int], Schedule], *,
                 fresh_chance: float = FRESH_CHANCE, logs: Sequence[str] = (),
                 contexts: Callable[[Schedule], Iterable[str]] | None = None) -> None:
        self.seed = seed
        self.base = base
        self.logs = list(logs)
        # What fault contexts (the part of a state after "@") a schedule can place events
        # in, read from the schedule alone; None: proposals are not ranked.
        self.contexts = contexts
        # context -> how many fed states were reached in it
        self.context_hits: Counter[str] = Counter()
        self.fresh_chance = fresh_chance
        self.corpus: list[CorpusEntry] = []
        self.seen: set[str] = set()
        # state -> how many fed runs reached it
        self.hits: Counter[str] = Counter()

    def propose(self, run_seed: int) -> Schedule:
        """The schedule for the run with `run_seed`.

        With a `contexts` predictor, `CANDIDATES` proposals are drawn and the one whose
        fault contexts runs reached least wins (a context no run reached counts most):
        the static half of the steering, toward fault combinations not tried yet."""
        rng = random.Random(f"guided:{self.seed}:{run_seed}")
        if self.contexts is None or not self.corpus:
            return self._candidate(run_seed, rng, first=True)
        candidates = [self._candidate(run_seed, rng, first=k == 0) for k in range(CANDIDATES)]
        scores = [self._novelty(c) for c in candidates]
        return candidates[scores.index(max(scores))]

    def _novelty(self, schedule: Schedule) -> float:
        assert self.contexts is not None
        return sum(1.0 / (1 + self.context_hits[c]) for c in set(self.contexts(schedule)))

    def _candidate(self, run_seed: int, rng: random.Random, *, first: bool) -> Schedule:
        """One proposal: fresh (the run's own plain schedule for the first candidate,
        another seed's after it) or a mutation of a corpus entry."""
        if not self.corpus or rng.random() < self.fresh_chance:
            if first:
                return self.base(run_seed)
            return msgspec.structs.replace(self.base(rng.randrange(2**31)), seed=run_seed)
        entry = self._pick(rng)
        entry.picked += 1
        schedule = entry.schedule
        for _ in range(rng.randint(1, 3)):
            other = rng.choice(self.corpus).schedule
            schedule = mutate(schedule, rng, other=other, fresh=self.base(rng.randrange(2**31)),
                              logs=self.logs)
        return msgspec.structs.replace(schedule, seed=run_seed)

    def feed(self, schedule: Schedule, states: Iterable[str]) -> frozenset[str]:
        """What the run of `schedule` reached; returns the states new to this guide (the
        schedule joins the corpus when there are any)."""
        reached = frozenset(states)
        self.hits.update(reached)
        self.context_hits.update(state.split("@", 1)[-1] for state in reached)
        new = reached - self.seen
        if new:
            self.seen |= new
            self.corpus.append(CorpusEntry(schedule, reached))
        return new

    def _pick(self, rng: random.Random) -> CorpusEntry:
        weights = [
            (1.0 + sum(1.0 / self.hits[s] for s in entry.states)) / (1 + entry.picked)
            for entry in self.corpus
        ]
        return rng.choices(self.corpus, weights=weights)[0]


def mutate(schedule: Schedule, rng: random.Random, *, other: Schedule | None = None,
           fresh: Schedule | None = None, kind: str | None = None,
           logs: Sequence[str] = ()) -> Schedule:
    """One mutation of `schedule` (`kind`, or one drawn at random); `other` is the
    splice partner (`fresh` when `other` is the schedule itself or absent); `logs`
    ("topic/partition") are the logs an `aim` may pick a leader of."""
    kind = kind or rng.choices(MUTATIONS, weights=MUTATION_WEIGHTS)[0]
    ops = list(schedule.ops)
    if kind == "overlay":
        if fresh is not None and fresh.nodes == schedule.nodes:
            ops = ops + _one_package(fresh, rng)
    elif kind == "splice":
        partner = other if other is not None and other is not schedule else fresh
        if (partner is not None and partner.nodes == schedule.nodes
                and partner.clients == schedule.clients):
            cut = rng.randint(0, max(0, schedule.duration_ms))
            ops = ([op for op in ops if op.at_ms < cut]
                   + [op for op in partner.ops if cut <= op.at_ms <= schedule.duration_ms])
    elif ops:
        i = rng.randrange(len(ops))
        if kind == "stretch":
            ops = _stretch(ops, i, rng, schedule.duration_ms)
        elif kind == "shift":
            spread = max(1000, schedule.interval_ms)
            delta = rng.randint(-spread, spread)
            ops = ops[:i] + [_at(op, op.at_ms + delta) for op in ops[i:]]
        elif kind == "retarget":
            ops = _retarget(ops, i, rng, schedule.nodes)
        elif kind == "aim":
            ops = _aim(ops, i, rng, logs, schedule.nodes)
        elif kind == "swap-kind":
            op = ops[i]
            if isinstance(op, Kill):
                ops[i] = PowerLoss(at_ms=op.at_ms, nodes=list(op.nodes))
            elif isinstance(op, PowerLoss):
                ops[i] = Kill(at_ms=op.at_ms, nodes=list(op.nodes))
        elif kind == "drop":
            del ops[i]
    return _normalized(schedule, ops)


def end_of(ops: list[AnyFaultOp], i: int) -> int | None:
    """The index of the op that ends the fault `ops[i]` starts, None when none does
    (it lasts until the final heal, or `ops[i]` starts nothing)."""
    op = ops[i]
    for j in range(i + 1, len(ops)):
        later = ops[j]
        if ((isinstance(op, StartPartition) and isinstance(later, StopPartition))
                or (isinstance(op, StartLinkFault) and isinstance(later, StopLinkFault))
                or (isinstance(op, Kill | PowerLoss) and isinstance(later, Restart)
                and set(later.nodes) & set(op.nodes))
                or (isinstance(op, Pause) and isinstance(later, Resume)
                and set(later.nodes) & set(op.nodes))
                or (isinstance(op, ClockSkew) and isinstance(later, ClockReset)
                and op.node in later.nodes)):
            return j
    return None


def _one_package(schedule: Schedule, rng: random.Random) -> list[AnyFaultOp]:
    """The ops of one fault package drawn from `schedule`: its starts and their ends."""
    packages = sorted({op.PACKAGE for op in schedule.ops if op.PACKAGE})
    if not packages:
        return []
    package = rng.choice(packages)
    ops = list(schedule.ops)
    picked: set[int] = set()
    for i, op in enumerate(ops):
        if package == op.PACKAGE:
            picked.add(i)
            end = end_of(ops, i)
            if end is not None:
                picked.add(end)
    return [ops[i] for i in sorted(picked)]


def _stretch(ops: list[AnyFaultOp], i: int, rng: random.Random,
             duration_ms: int) -> list[AnyFaultOp]:
    j = end_of(ops, i)
    if j is None:
        return ops
    end = ops[i].at_ms + rng.choice(STRETCH_DURATIONS_MS)
    if end > duration_ms:
        return ops[:j] + ops[j + 1:]  # healed by the final heal
    moved = _at(ops[j], end)
    return [*ops[:j], *ops[j + 1:], moved]


def _retarget(ops: list[AnyFaultOp], i: int, rng: random.Random,
              nodes: list[str]) -> list[AnyFaultOp]:
    op = ops[i]
    j = end_of(ops, i)
    if isinstance(op, Kill | PowerLoss | Pause):
        chosen = sorted(rng.sample(nodes, rng.randint(1, len(nodes))))
        ops[i] = msgspec.structs.replace(op, nodes=chosen)
        if j is not None:
            end = ops[j]
            assert isinstance(end, Restart | Resume)
            ops[j] = msgspec.structs.replace(
                end, nodes=sorted((set(end.nodes) - set(op.nodes)) | set(chosen)))
    elif isinstance(op, ClockSkew):
        node = rng.choice(nodes)
        ops[i] = msgspec.structs.replace(op, node=node)
        if j is not None:
            end = ops[j]
            assert isinstance(end, ClockReset)
            ops[j] = msgspec.structs.replace(
                end, nodes=sorted((set(end.nodes) - {op.node}) | {node}))
    return ops


# Roles an aimed fault may take, by whether they need a log.
_LOG_ROLES: tuple[RoleKind, ...] = ("leader", "followers", "minority-with-leader",
                                    "minority-without-leader")
_ANY_ROLES: tuple[RoleKind, ...] = ("controller", "minority-with-leader",
                                    "minority-without-leader")


def _aim(ops: list[AnyFaultOp], i: int, rng: random.Random, logs: Sequence[str],
         nodes: list[str]) -> list[AnyFaultOp]:
    """`ops[i]` aimed at a role, its own nodes the fallback. Who holds the role is known
    only at run time, so the restart or resume that ends it names every node (the
    executor skips those not down or paused); a partition's stop heals every cut."""
    aimable = [k for k, op in enumerate(ops)
               if isinstance(op, Kill | PowerLoss | Pause | StartPartition) and op.role is None]
    if not aimable:
        return ops
    i = i if i in aimable else rng.choice(aimable)
    op = ops[i]
    assert isinstance(op, Kill | PowerLoss | Pause | StartPartition)
    if logs and rng.random() < 0.75:
        role = Role(kind=rng.choice(_LOG_ROLES), log=rng.choice(list(logs)))
    else:
        role = Role(kind=rng.choice(_ANY_ROLES))
    j = end_of(ops, i)
    ops[i] = msgspec.structs.replace(op, role=role)
    if j is not None and isinstance(ops[j], Restart | Resume):
        ops[j] = msgspec.structs.replace(ops[j], nodes=list(nodes))
    return ops


def _at(op: AnyFaultOp, at_ms: int) -> AnyFaultOp:
    return msgspec.structs.replace(op, at_ms=max(0, at_ms))


def _normalized(schedule: Schedule, ops: list[AnyFaultOp]) -> Schedule:
    """Ops in time order (stable), inside the schedule's duration."""
    kept = [_at(op, min(op.at_ms, schedule.duration_ms)) for op in ops]
    kept.sort(key=lambda op: op.at_ms)
    result = msgspec.structs.replace(schedule, ops=kept)
    result.validate()
    return result
