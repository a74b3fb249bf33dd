"""The shrinking search as plain data and functions: no runs, no files, no clock.

A `Candidate` is what a shrink can change about a failing sim run: its fault schedule
(as fault *units*: a start op with the stop ops that end it, removed together so a
schedule never leaves a fault un-healed except through the final heal), the number of
client processes, the rate and (through the schedule) the time limit and recovery.

`shrink` walks from the original candidate to smaller ones. It never runs anything
itself: a `Probe` callback is handed a list of candidates, most wanted first, and
answers the index of the first that still shows the anomaly (or None). The caller
may evaluate them in parallel; as long as it answers the *first* one that holds, the
search goes the same way as a sequential one, so a shrink is deterministic.

The search, as in Jepsen's and QuickCheck's shrinkers, keeps a smaller candidate as
soon as one holds and tries again from there:

1. delta debugging (Zeller's ddmin) over the fault units;
2. then, repeatedly until nothing more holds: fewer client processes, a lower rate,
   every fault moved earlier, shorter fault windows (stops moved earlier), a shorter
   time limit (ops after it dropped) and a shorter recovery.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TypeVar

import msgspec

from nemesis.ops import (
    AnyFaultOp,
    ClockReset,
    ClockSkew,
    ClockStrobe,
    Kill,
    Pause,
    PauseClient,
    PowerLoss,
    Restart,
    Resume,
    ResumeClient,
    Schedule,
    StartLinkFault,
    StartPartition,
    StopLinkFault,
    StopPartition,
)

T = TypeVar("T")

# A window or shift shorter than this is not worth a run of its own.
MIN_STEP_MS = 500
# The smallest rate tried (operations per second across all clients).
MIN_RATE = 1.0


class SearchStopped(Exception):
    """Raised by a probe to end the search early (its time budget is spent); `shrink`
    returns the smallest candidate found so far."""


@dataclass(frozen=True)
class Fault:
    """One fault unit: the ops that start it and the ops that end it, kept or removed
    together. `number` is its position in the original schedule (1-based)."""

    number: int
    starts: tuple[AnyFaultOp, ...]
    stops: tuple[AnyFaultOp, ...] = ()

    @property
    def start_ms(self) -> int:
        return min(op.at_ms for op in self.starts)

    @property
    def end_ms(self) -> int | None:
        """When its last stop runs; None when only the final heal ends it (or it is
        instant, like a connection reset)."""
        return max(op.at_ms for op in self.stops) if self.stops else None

    def ops(self) -> tuple[AnyFaultOp, ...]:
        return (*self.starts, *self.stops)

    def describe(self) -> str:
        names = "+".join(dict.fromkeys(str(op.__struct_config__.tag) for op in self.starts))
        nodes = sorted({n for op in self.starts for n in op.nodes_named()})
        end = self.end_ms
        window = (f"{self.start_ms / 1000:g}-{end / 1000:g} s" if end is not None
                  else f"at {self.start_ms / 1000:g} s")
        return f"{names} {','.join(nodes)} {window}".replace("  ", " ")


@dataclass(frozen=True)
class Candidate:
    """A run the search may try: the schedule's frame and fault units, the client
    processes and the rate."""

    frame: Schedule  # nodes, clients, duration and recovery; its ops are `faults`'
    faults: tuple[Fault, ...]
    concurrency: int
    rate: float

    @property
    def duration_ms(self) -> int:
        return self.frame.duration_ms

    @property
    def recovery_ms(self) -> int:
        return self.frame.recovery_ms

    def schedule(self) -> Schedule:
        """The schedule this candidate runs: every fault's ops in time order (ties keep
        the original order, so a start still precedes its stop). Records no packages:
        the run's `--nemesis` is what the remaining ops inject."""
        indexed = [(op.at_ms, fault.number, i, op) for fault in self.faults
                   for i, op in enumerate(fault.ops())]
        ops = [op for *_, op in sorted(indexed, key=lambda item: item[:3])]
        return msgspec.structs.replace(self.frame, ops=ops, packages=[])


@dataclass(frozen=True)
class ShrinkResult:
    """Where the search ended, every candidate it kept on the way (the original first),
    and how many candidates it asked about."""

    best: Candidate
    kept: list[Candidate]
    tried: int
    complete: bool  # False when a probe stopped the search (time budget)


def fault_units(schedule: Schedule) -> list[Fault]:
    """Group a schedule's ops into fault units: each start with the stops that end it.

    A stop ends the open starts of its kind it covers (StopPartition every open
    partition, StopLinkFault every open link fault, Restart the kills and power losses
    of its nodes, Resume the pauses, ResumeClient the client pauses of its clients,
    ClockReset the clock faults of its nodes); starts
    one stop ends together are one unit. Any other op (a connection reset, a stop with
    nothing open) is a unit of its own.
    """
    groups: list[list[int]] = []  # op indices per unit
    unit_of: dict[int, int] = {}
    open_starts: list[int] = []

    def join(indices: list[int]) -> None:
        units = sorted({unit_of[i] for i in indices if i in unit_of})
        if units:
            target = units[0]
            for other in units[1:]:
                for i in groups[other]:
                    unit_of[i] = target
                groups[target].extend(groups[other])
                groups[other] = []
        else:
            target = len(groups)
            groups.append([])
        for i in indices:
            if i not in unit_of:
                unit_of[i] = target
                groups[target].append(i)

    for index, op in enumerate(schedule.ops):
        ended = [i for i in open_starts if _ends(op, schedule.ops[i])]
        if ended:
            join([*ended, index])
            open_starts = [i for i in open_starts if i not in ended]
        elif _starts(op):
            join([index])
            open_starts.append(index)
        else:
            join([index])
    faults: list[Fault] = []
    for members in groups:
        if not members:
            continue
        ordered = sorted(members)
        starts = tuple(schedule.ops[i] for i in ordered if _starts(schedule.ops[i]))
        stops = tuple(schedule.ops[i] for i in ordered if not _starts(schedule.ops[i]))
        if not starts:
            starts, stops = stops, ()
        faults.append(Fault(len(faults) + 1, starts, stops))
    return faults


def _starts(op: AnyFaultOp) -> bool:
    return isinstance(op, StartPartition | StartLinkFault | Kill | PowerLoss | Pause
                      | ClockSkew | ClockStrobe | PauseClient)


def _ends(stop: AnyFaultOp, start: AnyFaultOp) -> bool:
    """Whether `stop` ends the fault `start` began."""
    if isinstance(stop, StopPartition):
        return isinstance(start, StartPartition)
    if isinstance(stop, StopLinkFault):
        return isinstance(start, StartLinkFault)
    # A start aimed at a role may hit any node: any stop of its kind may end it.
    if isinstance(stop, Restart):
        return isinstance(start, Kill | PowerLoss) and (
            start.role is not None or bool(set(stop.nodes) & set(start.nodes)))
    if isinstance(stop, Resume):
        return isinstance(start, Pause) and (
            start.role is not None or bool(set(stop.nodes) & set(start.nodes)))
    if isinstance(stop, ResumeClient):
        return isinstance(start, PauseClient) and bool(set(stop.clients) & set(start.clients))
    if isinstance(stop, ClockReset):
        return isinstance(start, ClockSkew | ClockStrobe) and (
            start.role is not None or start.node in stop.nodes)
    return False


def initial_candidate(schedule: Schedule, *, concurrency: int, rate: float) -> Candidate:
    """The candidate a run with `schedule`, `concurrency` and `rate` is."""
    frame = msgspec.structs.replace(schedule, ops=[])
    return Candidate(frame, tuple(fault_units(schedule)), concurrency, rate)


# -- delta debugging ---------------------------------------------------------------------


Probe = Callable[[Sequence[Candidate]], int | None]


def ddmin(items: Sequence[T], holds: Callable[[list[list[T]]], int | None]) -> list[T]:
    """Zeller's ddmin: a 1-minimal sublist of `items` that still holds.

    `holds` gets a list of sublists to test, in order, and answers the index of the
    first that holds (or None). The empty list is tried first: a failure that needs no
    item at all is the smallest there is. `items` itself is assumed to hold.
    """
    current = list(items)
    if not current:
        return current
    if holds([[]]) == 0:
        return []
    n = 2
    while len(current) >= 2:
        chunks = _split(current, n)
        subsets = chunks
        complements = [[x for j, c in enumerate(chunks) if j != i for x in c]
                       for i in range(len(chunks))]
        # With two chunks each subset is the other's complement: ask once.
        tests = subsets if n == 2 else subsets + complements
        found = holds(tests)
        if found is not None and found < len(subsets):
            current, n = subsets[found], 2
        elif found is not None:
            current, n = tests[found], max(n - 1, 2)
        elif n < len(current):
            n = min(2 * n, len(current))
        else:
            break
    return current


def _split(items: list[T], n: int) -> list[list[T]]:
    """`items` cut into `n` nearly equal consecutive chunks (none empty)."""
    size, extra = divmod(len(items), n)
    chunks, start = [], 0
    for i in range(n):
        end = start + size + (1 if i < extra else 0)
        chunks.append(items[start:end])
        start = end
    return [c for c in chunks if c]


# -- the other moves -------------------------------------------------------------------


def fewer_clients(c: Candidate) -> list[Candidate]:
    """Fewer client processes: one, half, one less. Clients beyond the new count leave
    the schedule (partitions that cut them off no longer name them)."""
    counts = sorted({1, c.concurrency // 2, c.concurrency - 1} - {0}, key=int)
    return [_with_clients(c, k) for k in counts if k < c.concurrency]


def _with_clients(c: Candidate, k: int) -> Candidate:
    keep = {f"c{i}" for i in range(1, k + 1)}

    def trim(op: AnyFaultOp) -> AnyFaultOp:
        if not isinstance(op, StartPartition):
            return op
        leader = op.leader
        if leader is not None:
            leader = msgspec.structs.replace(
                leader, clients_isolated=[x for x in leader.clients_isolated
                                          if x in keep or not x.startswith("c")])
        grudge = {dst: [s for s in srcs if _kept(s, keep)]
                  for dst, srcs in op.grudge.items() if _kept(dst, keep)}
        return msgspec.structs.replace(
            op, clients=[x for x in op.clients if x in keep], leader=leader, grudge=grudge)

    faults = tuple(replace(f, starts=tuple(map(trim, f.starts))) for f in c.faults)
    frame = msgspec.structs.replace(c.frame, clients=[x for x in c.frame.clients if x in keep])
    return replace(c, frame=frame, faults=faults, concurrency=k)


def _kept(name: str, keep: set[str]) -> bool:
    return not (name.startswith("c") and name[1:].isdigit()) or name in keep


def lower_rate(c: Candidate) -> list[Candidate]:
    """A quarter, then half the rate (not below MIN_RATE)."""
    rates = [max(MIN_RATE, c.rate / 4), max(MIN_RATE, c.rate / 2)]
    return [replace(c, rate=r) for r in dict.fromkeys(rates) if r < c.rate]


def earlier_faults(c: Candidate) -> list[Candidate]:
    """Every op and the time limit moved earlier, so the quiet start shrinks."""
    if not c.faults:
        return []
    first = min(f.start_ms for f in c.faults)
    shifts = [first, first // 2]
    return [_shifted(c, d) for d in dict.fromkeys(shifts) if d >= MIN_STEP_MS]


def _shifted(c: Candidate, d: int) -> Candidate:
    def move(op: AnyFaultOp) -> AnyFaultOp:
        return msgspec.structs.replace(op, at_ms=op.at_ms - d)

    faults = tuple(replace(f, starts=tuple(map(move, f.starts)),
                           stops=tuple(map(move, f.stops))) for f in c.faults)
    frame = msgspec.structs.replace(c.frame, duration_ms=c.frame.duration_ms - d)
    return replace(c, frame=frame, faults=faults)


def shorter_windows(c: Candidate) -> list[Candidate]:
    """For each fault that has a stop, its stops moved to a quarter, then half of its
    window."""
    out = []
    for index, fault in enumerate(c.faults):
        end = fault.end_ms
        if end is None:
            continue
        window = end - fault.start_ms
        for fraction in (4, 2):
            new_end = fault.start_ms + window // fraction
            if end - new_end < MIN_STEP_MS:
                continue
            stops = tuple(msgspec.structs.replace(op, at_ms=min(op.at_ms, new_end))
                          for op in fault.stops)
            faults = list(c.faults)
            faults[index] = replace(fault, stops=stops)
            out.append(replace(c, faults=tuple(faults)))
    return out


def shorter_time_limit(c: Candidate) -> list[Candidate]:
    """A shorter time limit (the schedule's duration): just after the last op, halfway
    there, and (with no faults left) a quarter and a half of it. Ops after the new limit
    are dropped; a fault whose start is dropped goes whole."""
    last = max((op.at_ms for f in c.faults for op in f.ops()), default=0)
    d = c.duration_ms
    limits = [last, (last + d) // 2] if c.faults else [d // 4, d // 2]
    return [_clipped(c, x) for x in dict.fromkeys(limits)
            if x >= 100 and d - x >= MIN_STEP_MS]


def _clipped(c: Candidate, limit: int) -> Candidate:
    faults = tuple(replace(f, stops=tuple(op for op in f.stops if op.at_ms <= limit))
                   for f in c.faults if f.start_ms <= limit)
    return replace(c, frame=msgspec.structs.replace(c.frame, duration_ms=limit), faults=faults)


def shorter_recovery(c: Candidate) -> list[Candidate]:
    """No recovery, a quarter, half of it."""
    r = c.recovery_ms
    return [replace(c, frame=msgspec.structs.replace(c.frame, recovery_ms=x))
            for x in dict.fromkeys([0, r // 4, r // 2]) if r - x >= MIN_STEP_MS]


Move = Callable[[Candidate], list[Candidate]]
MOVES: tuple[Move, ...] = (fewer_clients, lower_rate, earlier_faults, shorter_time_limit,
                           shorter_windows, shorter_recovery)


# -- the search ------------------------------------------------------------------------


@dataclass
class _Tally:
    probe: Probe
    tried: int = 0
    kept: list[Candidate] = field(default_factory=list)

    def first(self, candidates: Sequence[Candidate]) -> int | None:
        if not candidates:
            return None
        self.tried += len(candidates)
        return self.probe(candidates)


def shrink(original: Candidate, probe: Probe, *, moves: Sequence[Move] = MOVES) -> ShrinkResult:
    """The smallest candidate found from `original` (which is assumed to hold).

    `probe` answers which of a list of candidates is the first that still shows the
    anomaly; it may raise SearchStopped to end the search with what was found so far.
    """
    tally = _Tally(probe, kept=[original])
    current = original
    complete = True
    try:
        current = _fewer_faults(current, tally)
        changed = True
        while changed:
            changed = False
            for move in moves:
                for step in _repeat(move, current, tally):
                    current, changed = step, True
            # New fault-free stretches may let more faults go.
            if changed and len(current.faults) > 1:
                current = _fewer_faults(current, tally)
    except SearchStopped:
        complete = False
        current = tally.kept[-1]
    return ShrinkResult(current, tally.kept, tally.tried, complete)


def _fewer_faults(current: Candidate, tally: _Tally) -> Candidate:
    def holds(subsets: list[list[Fault]]) -> int | None:
        found = tally.first([replace(current, faults=tuple(s)) for s in subsets])
        if found is not None:
            tally.kept.append(replace(current, faults=tuple(subsets[found])))
        return found

    kept = ddmin(list(current.faults), holds)
    return replace(current, faults=tuple(kept))


def _repeat(move: Move, current: Candidate, tally: _Tally) -> Iterator[Candidate]:
    """Apply `move` while one of its candidates holds; yields each kept candidate."""
    while True:
        options = move(current)
        found = tally.first(options)
        if found is None:
            return
        current = options[found]
        tally.kept.append(current)
        yield current
