"""Fault-space coverage: which interesting states a run drove the cluster into.

A harness is worth the code paths its faults reach. After a run this module reads
what the cluster did and names each interesting thing that happened (an *event
kind*, `KINDS`), then places it in the fault context it happened in:

    state = "<kind>@<faults in force>"    e.g. "isr-shrink@kill+partition"

where `<faults in force>` is the sorted set of fault packages active at that moment
or healed less than `LINGER_S` before (from the history's nemesis events: a
partition from its start to its stop, a kill or power loss of a node until its
restart, a pause until its resume, a skewed clock until its reset, a strobe for its
duration, any `start-X` until `stop-X`), or `quiet` when none was. The same ISR
shrink under a kill and under a partition are different states: the fault space is
the kinds crossed with the fault combinations, far richer than the kinds alone.

Sources, in both runtimes:

- `cluster.jsonl` (the cluster's own timeline): `leader-change` (a log's leader
  became another node), `clean-election` / `unclean-election` (a new leader epoch;
  unclean when the new leader was outside the ISR last seen), `controller-move` (the
  active controller became another node), and in the sim `recovery-truncation` when
  a power cut took un-fsynced records (the node recovers a shorter log);
- the brokers' event lines in the node logs (`nodes/nK.log` in the sim,
  `nodes/nK/broker.log` for processes), written by `reference_broker.events`:
  `isr-shrink`, `isr-expand`, `truncation-below-hw`, `follower-truncation`,
  `broker-fenced`, `leader-epoch-fenced`, `unclean-election`, `rebalance`,
  `stale-generation`, `producer-fenced`, `recovery-truncation`, and `coordinator-move`
  (a `__consumer_offsets` partition loaded by a coordinator after its first load).

Counts are observations: an unclean election seen both by the controller and in the
timeline counts twice; the set of states is what coverage is measured by.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from nemesis.ops import Schedule

KINDS: tuple[str, ...] = (
    "leader-change",
    "clean-election",
    "unclean-election",
    "isr-shrink",
    "isr-expand",
    "truncation-below-hw",
    "follower-truncation",
    "broker-fenced",
    "leader-epoch-fenced",
    "controller-move",
    "coordinator-move",
    "rebalance",
    "stale-generation",
    "recovery-truncation",
    "producer-fenced",
)

QUIET = "quiet"
# A fault stays in an event's context this long after it healed: the cluster reacts to
# a fault through its timers (a broker's session times out 9 s after it went silent),
# so what happens just after a heal is still that fault's doing.
LINGER_S = 10.0
# The context of an event whose time could not be placed on the history's clock.
UNKNOWN_CONTEXT = "unknown"

# Broker event kinds taken as coverage kinds as they are.
_BROKER_KINDS = frozenset(KINDS) - {"leader-change", "clean-election", "controller-move",
                                    "coordinator-move"}

_EVENT = re.compile(r"faultline\.broker\.events: event=(\S+)(.*)$")
_SIM_STAMP = re.compile(r"^\[\s*([0-9.]+) sim s\]")
_WALL_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) ")

# History nemesis ops that start a fault on the nodes they name, and those that end one.
_NODE_STARTS = {"kill": "kill", "power-loss": "power-loss", "pause": "pause",
                "clock-skew": "clock"}
_NODE_ENDS = {"restart": ("kill", "power-loss"), "resume": ("pause",),
              "clock-reset": ("clock",)}
_GLOBAL_STARTS = {"start-partition": "partition", "start-link-fault": "link"}
_GLOBAL_ENDS = {"stop-partition": "partition", "stop-link-fault": "link"}


def state_name(kind: str, faults: Iterable[str] | None) -> str:
    """The state of an event of `kind` under `faults` (None: not placed in time)."""
    if faults is None:
        return f"{kind}@{UNKNOWN_CONTEXT}"
    names = sorted(set(faults))
    return f"{kind}@{'+'.join(names) if names else QUIET}"


def kind_of(state: str) -> str:
    """The event kind of a state name."""
    return state.split("@", 1)[0]


@dataclass(frozen=True)
class Coverage:
    """How often each state was reached (`counts`: state -> observations)."""

    counts: Mapping[str, int] = field(default_factory=dict)

    @property
    def states(self) -> frozenset[str]:
        """The distinct states reached."""
        return frozenset(self.counts)

    def kind_counts(self) -> dict[str, int]:
        """Observations per event kind, every kind of `KINDS` listed (0 when never)."""
        totals: Counter[str] = Counter()
        for state, n in self.counts.items():
            totals[kind_of(state)] += n
        return {kind: totals.get(kind, 0) for kind in (*KINDS, *sorted(set(totals) - set(KINDS)))}

    def kinds_reached(self) -> list[str]:
        return [k for k, n in self.kind_counts().items() if n]

    def kinds_missing(self) -> list[str]:
        """Kinds of `KINDS` never reached."""
        return [k for k in KINDS if not self.kind_counts().get(k)]

    def merge(self, other: Coverage) -> Coverage:
        """Both runs' observations together."""
        total = Counter(self.counts)
        total.update(other.counts)
        return Coverage(dict(total))

    def new_states(self, seen: Iterable[str]) -> frozenset[str]:
        """States reached here that are not in `seen`."""
        return self.states - frozenset(seen)

    def to_json(self) -> dict[str, Any]:
        """results.json's `coverage` object."""
        return {
            "distinct_states": len(self.counts),
            "kinds": self.kind_counts(),
            "kinds_missing": self.kinds_missing(),
            "states": dict(sorted(self.counts.items())),
            "definition": "state = event kind @ fault packages in force (quiet: none); "
                          "see harness/coverage.py",
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> Coverage:
        """From results.json's `coverage` object (empty when absent)."""
        if not data:
            return cls()
        return cls({str(k): int(v) for k, v in dict(data.get("states", {})).items()})


@dataclass(frozen=True)
class Observation:
    """One event: its kind, history time (ns; None when unknown) and node (if any)."""

    kind: str
    time_ns: int | None
    node: str | None = None


@dataclass(frozen=True)
class FaultInterval:
    """A fault package in force over [start_ns, end_ns) (end None: to the end)."""

    package: str
    start_ns: int
    end_ns: int | None

    def covers(self, t: int, linger_ns: int = 0) -> bool:
        return self.start_ns <= t and (self.end_ns is None or t < self.end_ns + linger_ns)


class FaultTimeline:
    """Which fault packages were in force when, from the history's nemesis events."""

    def __init__(self, intervals: Iterable[FaultInterval] = (), *,
                 linger_s: float = LINGER_S) -> None:
        self.intervals = list(intervals)
        self.linger_ns = round(linger_s * 1e9)

    def at(self, time_ns: int) -> frozenset[str]:
        """The packages in force at `time_ns` or healed less than `linger_s` before."""
        return frozenset(i.package for i in self.intervals if i.covers(time_ns, self.linger_ns))

    @classmethod
    def from_events(cls, events: Iterable[Mapping[str, Any]], *,
                    linger_s: float = LINGER_S) -> FaultTimeline:
        """From nemesis history events (`f`, `value`, `time`), in the order recorded."""
        intervals: list[FaultInterval] = []
        open_: dict[tuple[str, str], int] = {}

        def close(package: str, node: str, t: int) -> None:
            start = open_.pop((package, node), None)
            if start is not None:
                intervals.append(FaultInterval(package, start, t))

        for event in events:
            f, t = str(event.get("f")), int(event.get("time", 0))
            value = event.get("value") if isinstance(event.get("value"), dict) else {}
            assert isinstance(value, dict)
            nodes = [str(n) for n in value.get("nodes", [])]
            if event.get("error") and not nodes and f not in _GLOBAL_ENDS:
                continue  # skipped: nothing happened
            if f in _NODE_STARTS:
                targets = nodes or ([str(value["node"])] if "node" in value else [])
                for node in targets:
                    open_.setdefault((_NODE_STARTS[f], node), t)
            elif f in _NODE_ENDS:
                for node in nodes:
                    for package in _NODE_ENDS[f]:
                        close(package, node, t)
            elif f == "clock-strobe":
                intervals.append(FaultInterval("clock", t, t + int(value.get("duration_ms", 0))
                                               * 1_000_000))
            elif f in _GLOBAL_STARTS or f.startswith("start-"):
                package = _GLOBAL_STARTS.get(f, f.removeprefix("start-"))
                open_.setdefault((package, "*"), t)
            elif f in _GLOBAL_ENDS or f.startswith("stop-"):
                close(_GLOBAL_ENDS.get(f, f.removeprefix("stop-")), "*", t)
        intervals.extend(FaultInterval(package, start, None)
                         for (package, _), start in sorted(open_.items()))
        return cls(intervals, linger_s=linger_s)


def schedule_contexts(schedule: Schedule) -> frozenset[str]:
    """The fault contexts (the part of a state after `@`) a run of `schedule` can place
    events in: every combination of packages in force at some moment, by the same rules
    as a run's history, read from the schedule's ops alone (a role resolves to whoever
    holds it, so its node is unknown here: the op's own nodes stand in)."""
    events = [{"f": op.__struct_config__.tag, "time": op.at_ms * 1_000_000,
               "value": msgspec.to_builtins(op)} for op in schedule.ops]
    timeline = FaultTimeline.from_events(events)
    end_ns = schedule.duration_ms * 1_000_000
    moments = {0, *(i.start_ns for i in timeline.intervals),
               *(i.end_ns for i in timeline.intervals if i.end_ns is not None),
               *(i.end_ns + timeline.linger_ns for i in timeline.intervals
                 if i.end_ns is not None)}
    return frozenset(state_name("", timeline.at(t)).removeprefix("@")
                     for t in moments if t <= end_ns + timeline.linger_ns)


def coverage_of(observations: Iterable[Observation], timeline: FaultTimeline) -> Coverage:
    """Each observation placed in the faults in force at its time."""
    counts: Counter[str] = Counter()
    for ob in observations:
        faults = None if ob.time_ns is None else timeline.at(ob.time_ns)
        counts[state_name(ob.kind, faults)] += 1
    return Coverage(dict(counts))


# -- reading a run directory ----------------------------------------------------------


def read_coverage(run_dir: Path) -> Coverage:
    """The coverage of the run in `run_dir` (empty parts for missing files)."""
    start = _timeline_start(run_dir / "cluster.jsonl")
    observations = [
        *timeline_observations(_json_lines(run_dir / "cluster.jsonl")),
        *node_log_observations(run_dir / "nodes", origin_s=start.get("origin_s"),
                               origin_wall=start.get("origin_wall")),
    ]
    return coverage_of(observations, FaultTimeline.from_events(_nemesis_events(run_dir)))


def timeline_observations(lines: Iterable[Mapping[str, Any]]) -> Iterator[Observation]:
    """Leader changes, elections, controller moves and (sim) lost tails from
    cluster.jsonl lines, in order."""
    leaders: dict[str, str] = {}
    epochs: dict[str, int] = {}
    controller: str | None = None
    for line in lines:
        kind, t = line.get("kind"), line.get("time")
        time_ns = int(t) if isinstance(t, int | float) else None
        if kind == "log":
            log, leader, epoch = str(line.get("log")), line.get("leader"), line.get("epoch")
            if leader is None or epoch is None:
                continue
            before, before_epoch = leaders.get(log), epochs.get(log)
            if before is not None and leader != before:
                yield Observation("leader-change", time_ns, str(leader))
            if before_epoch is not None and int(epoch) > before_epoch:
                kind_name = "unclean-election" if line.get("unclean") else "clean-election"
                yield Observation(kind_name, time_ns, str(leader))
            leaders[log] = str(leader)
            epochs[log] = max(int(epoch), before_epoch if before_epoch is not None else -1)
        elif kind == "controller":
            now = line.get("controller")
            if now is None:
                continue
            if controller is not None and now != controller:
                yield Observation("controller-move", time_ns, str(now))
            controller = str(now)
        elif kind == "power-loss":
            lost = line.get("lost") or {}
            if any(lost.values()):
                yield Observation("recovery-truncation", time_ns, str(line.get("node")))


def parse_event_line(line: str) -> tuple[str, dict[str, str]] | None:
    """(kind, fields) of a broker event log line, None for any other line."""
    match = _EVENT.search(line)
    if match is None:
        return None
    fields: dict[str, str] = {}
    for part in match.group(2).split():
        key, _, value = part.partition("=")
        fields[key] = value
    return match.group(1), fields


def line_time_ns(line: str, *, origin_s: float | None,
                 origin_wall: float | None) -> int | None:
    """A node-log line's time on the history's clock (ns from the run's origin): the
    sim's `[ s sim s]` stamp against the trio origin, a process's local wall-clock
    stamp against the wall time of the origin. None when it cannot be placed."""
    sim = _SIM_STAMP.match(line)
    if sim is not None:
        return None if origin_s is None else round((float(sim.group(1)) - origin_s) * 1e9)
    wall = _WALL_STAMP.match(line)
    if wall is not None and origin_wall is not None:
        at = time.mktime(time.strptime(wall.group(1), "%Y-%m-%d %H:%M:%S"))
        return round((at + int(wall.group(2)) / 1000 - origin_wall) * 1e9)
    return None


def node_log_observations(nodes_dir: Path, *, origin_s: float | None = None,
                          origin_wall: float | None = None) -> list[Observation]:
    """The broker event lines of every node log under `nodes_dir` (`nK.log` or
    `nK/*.log`), with coordinator loads after a partition's first turned into
    `coordinator-move`; sorted by time."""
    found: list[tuple[int, str, int, Observation, str | None]] = []
    if not nodes_dir.is_dir():
        return []
    paths = sorted(nodes_dir.glob("*.log")) + sorted(nodes_dir.glob("*/*.log"))
    for path in paths:
        node = path.stem if path.parent == nodes_dir else path.parent.name
        with open(path, encoding="utf-8", errors="replace") as stream:
            for number, line in enumerate(stream):
                parsed = parse_event_line(line)
                if parsed is None:
                    continue
                kind, fields = parsed
                t = line_time_ns(line, origin_s=origin_s, origin_wall=origin_wall)
                partition = fields.get("partition") if kind == "coordinator-load" else None
                if kind != "coordinator-load" and kind not in _BROKER_KINDS:
                    continue
                ob = Observation(kind, t, node)
                found.append((t if t is not None else -1, node, number, ob, partition))
    found.sort(key=lambda item: (item[0], item[1], item[2]))
    loaded: set[str] = set()
    observations: list[Observation] = []
    for _, _, _, ob, partition in found:
        if ob.kind == "coordinator-load":
            if str(partition) in loaded:
                observations.append(Observation("coordinator-move", ob.time_ns, ob.node))
            loaded.add(str(partition))
            continue
        observations.append(ob)
    return observations


def _json_lines(path: Path) -> Iterator[dict[str, Any]]:
    if not path.is_file():
        return
    with open(path, encoding="utf-8") as stream:
        for line in stream:
            line = line.strip()
            if not line:
                continue
            try:
                data = json.loads(line)
            except ValueError:
                continue  # a line cut short by a crash of the harness
            if isinstance(data, dict):
                yield data


def _timeline_start(path: Path) -> dict[str, Any]:
    for line in _json_lines(path):
        return line if line.get("kind") == "start" else {}
    return {}


def _nemesis_events(run_dir: Path) -> Iterator[dict[str, Any]]:
    path = run_dir / "history.jsonl"
    if not path.is_file():
        return
    with open(path, encoding="utf-8") as stream:
        for line in stream:
            if '"nemesis"' not in line:
                continue
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and event.get("process") == "nemesis":
                yield event
