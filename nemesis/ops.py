"""Faults as data: the operations of a schedule and the schedule itself.

A `Schedule` is a list of timed `FaultOp`s plus the final heal-everything phase and the
quiet recovery after it. Every op names its concrete targets (nodes, links, grudge) so a
schedule means the same thing on every run, reads as JSON, and can be searched and
shrunk by editing the list. The one choice left to run time is who holds a role: a
`leader` partition names what to look up and a fallback node for targets that cannot
tell, and the ops of every package may name a `Role` (`nemesis.roles`: a log's leader or
in-sync followers, the controller, a group's coordinator, a minority with or without
the leader), resolved when the op starts, with their concrete nodes as the fallback.

Each op's tag `f` is also the `f` of the nemesis history event the executor writes.
Times are integer milliseconds from the start of the schedule.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, ClassVar

import msgspec

from nemesis import packages as fault_packages
from nemesis.roles import Role

Millis = Annotated[int, msgspec.Meta(ge=0)]
Link = tuple[str, str]


class ScheduleError(ValueError):
    """A schedule that cannot be run as written (bad order, unknown node, bad timing)."""


class FaultOp(msgspec.Struct, tag_field="f", kw_only=True, frozen=True):
    """One timed nemesis action; `at_ms` is when it starts, from the schedule's start."""

    at_ms: Millis
    # The `--nemesis` package whose faults this op starts (None: it ends or heals one).
    PACKAGE: ClassVar[str | None] = None

    def nodes_named(self) -> list[str]:
        """Every endpoint this op names (for validating a schedule against a cluster)."""
        return []


class LeaderTarget(msgspec.Struct, kw_only=True, frozen=True):
    """Whom a `leader` partition isolates, resolved when the partition starts.

    `log` ("topic/partition") picks its leader; None picks the active controller. When the
    target cannot tell, `fallback` is isolated. Clients in `clients_isolated` stay with
    the isolated node; every other client listed in the op's `clients` stays with the rest.
    """

    log: str | None
    fallback: str
    clients_isolated: list[str] = []


class StartPartition(FaultOp, tag="start-partition", frozen=True):
    """Block every link the grudge names: `{dst: [src, ...]}` = dst won't hear src."""

    PACKAGE = "partition"

    shape: str
    grudge: dict[str, list[str]] = {}
    one_way: bool = False
    clients: list[str] = []
    leader: LeaderTarget | None = None
    # With a role: its holders are cut off from the other nodes (`grudge` is then only
    # the fallback); the clients listed stay with the others, unlisted ones are not cut.
    role: Role | None = None
    # With a role and `one_way`: the cut-off side hears no one but is still heard (by
    # default it is heard by no one but still hears).
    deaf: bool = False

    def nodes_named(self) -> list[str]:
        named = set(self.grudge) | {src for srcs in self.grudge.values() for src in srcs}
        named |= set(self.clients)
        if self.leader is not None:
            named |= {self.leader.fallback, *self.leader.clients_isolated}
        return _with_role(named, self.role)


class StopPartition(FaultOp, tag="stop-partition", frozen=True):
    """Unblock every link the partitions so far blocked."""


class StartLinkFault(FaultOp, tag="start-link-fault", frozen=True):
    """Degrade each listed link (src, dst) with latency and jitter or a bandwidth cap."""

    PACKAGE = "link"

    links: list[Link]
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    bandwidth_bytes_per_s: int | None = None
    # With a role: every link to and from its holders (brokers and clients); `links` is
    # then only the fallback.
    role: Role | None = None

    def nodes_named(self) -> list[str]:
        return _with_role({end for link in self.links for end in link}, self.role)


class StopLinkFault(FaultOp, tag="stop-link-fault", frozen=True):
    """Restore every link a link fault degraded."""


class ResetConnections(FaultOp, tag="reset-connections", frozen=True):
    """Reset every open connection to or from each node (an instant fault)."""

    PACKAGE = "link"

    nodes: list[str]
    role: Role | None = None

    def nodes_named(self) -> list[str]:
        return _with_role(set(self.nodes), self.role)


class _NodesOp(FaultOp, frozen=True):
    # With a role (on the ops that take one) these are its fallback, and may be empty.
    nodes: list[str] = []

    def nodes_named(self) -> list[str]:
        return sorted(self.nodes)


class Kill(_NodesOp, tag="kill", frozen=True):
    """Crash the nodes at once (SIGKILL); fsynced data survives."""

    PACKAGE = "kill"

    role: Role | None = None

    def nodes_named(self) -> list[str]:
        return _with_role(set(self.nodes), self.role)


class PowerLoss(_NodesOp, tag="power-loss", frozen=True):
    """Crash the nodes at once losing every write not yet fsynced."""

    PACKAGE = "power-loss"

    role: Role | None = None

    def nodes_named(self) -> list[str]:
        return _with_role(set(self.nodes), self.role)


class Restart(_NodesOp, tag="restart", frozen=True):
    """Start killed or power-lost nodes again on their data."""


class Pause(_NodesOp, tag="pause", frozen=True):
    """Freeze the nodes (SIGSTOP)."""

    PACKAGE = "pause"

    role: Role | None = None

    def nodes_named(self) -> list[str]:
        return _with_role(set(self.nodes), self.role)


class Resume(_NodesOp, tag="resume", frozen=True):
    """Unfreeze paused nodes (SIGCONT)."""


class ClockSkew(FaultOp, tag="clock-skew", frozen=True):
    """Bump one node's wall clock by `delta_ms` (negative = into the past)."""

    PACKAGE = "clock"

    node: str
    delta_ms: int
    # With a role: every holder's clock instead of `node` (then the fallback).
    role: Role | None = None

    def nodes_named(self) -> list[str]:
        return _with_role({self.node}, self.role)


class ClockStrobe(FaultOp, tag="clock-strobe", frozen=True):
    """Flip one node's clock between +delta_ms and true time every `period_ms`, for
    `duration_ms`, then leave it in step."""

    PACKAGE = "clock"

    node: str
    delta_ms: int
    period_ms: Annotated[int, msgspec.Meta(gt=0)]
    duration_ms: Millis
    # With a role: every holder's clock instead of `node` (then the fallback).
    role: Role | None = None

    def nodes_named(self) -> list[str]:
        return _with_role({self.node}, self.role)


class ClockReset(FaultOp, tag="clock-reset", frozen=True):
    """Put the nodes' clocks back in step."""

    nodes: list[str]

    def nodes_named(self) -> list[str]:
        return sorted(self.nodes)


def _with_role(named: set[str], role: Role | None) -> list[str]:
    """The nodes an op names, with its role's fallback nodes, sorted."""
    return sorted(named | set(role.fallback)) if role is not None else sorted(named)


class Damage(msgspec.Struct, kw_only=True, frozen=True):
    """One file to damage on a crashed node: a `kind` of file (segment, index,
    checkpoint or metadata; see `nemesis.disk.FILE_KINDS`), an `action` (flip one bit,
    or truncate), and `pick`, the seed from which the file, byte, bit or cut are drawn
    among the node's files of that kind when the op runs."""

    kind: str
    action: str
    pick: int


class CorruptFiles(FaultOp, tag="disk-corrupt", frozen=True):
    """Kill the node, then damage some of its files; `Restart` brings it back."""

    PACKAGE = "disk"

    node: str
    damages: list[Damage]

    def nodes_named(self) -> list[str]:
        return [self.node]


class StartDiskFault(FaultOp, tag="start-disk-fault", frozen=True):
    """Make one node's disk fail: ENOSPC on writes and/or fsyncs, or slow fsyncs."""

    PACKAGE = "disk"

    node: str
    enospc_write: bool = False
    enospc_fsync: bool = False
    fsync_delay_ms: float = 0.0

    def nodes_named(self) -> list[str]:
        return [self.node]


class StopDiskFault(FaultOp, tag="stop-disk-fault", frozen=True):
    """Make the nodes' disks healthy again and restart those that halted meanwhile."""

    nodes: list[str]

    def nodes_named(self) -> list[str]:
        return sorted(self.nodes)


class AddBroker(FaultOp, tag="add-broker", frozen=True):
    """Start spare node `node` as a new broker of the cluster (outside the quorum).

    Spares are not among the schedule's nodes (other packages never touch them), so
    the target checks the name when the op runs.
    """

    PACKAGE = "membership"

    node: str


class DecommissionBroker(FaultOp, tag="decommission-broker", frozen=True):
    """Move every replica off broker `node` (one it added), then retire it for good."""

    PACKAGE = "membership"

    node: str


class Reassign(FaultOp, tag="reassign", frozen=True):
    """AlterPartitionReassignments of `log` ("topic/partition") to `replicas` (nodes)."""

    PACKAGE = "membership"

    log: str
    replicas: list[str]


class PauseClient(FaultOp, tag="pause-client", frozen=True):
    """Freeze client endpoints, as SIGSTOP freezes a process: a transactional producer
    among them stalls mid-transaction (a zombie once its transaction times out)."""

    PACKAGE = "zombie-producer"

    clients: list[str]

    def nodes_named(self) -> list[str]:
        return sorted(self.clients)


class ResumeClient(FaultOp, tag="resume-client", frozen=True):
    """Let paused client endpoints run again."""

    clients: list[str]

    def nodes_named(self) -> list[str]:
        return sorted(self.clients)


AnyFaultOp = (
    StartPartition
    | StopPartition
    | StartLinkFault
    | StopLinkFault
    | ResetConnections
    | Kill
    | PowerLoss
    | Restart
    | Pause
    | Resume
    | ClockSkew
    | ClockStrobe
    | ClockReset
    | CorruptFiles
    | StartDiskFault
    | StopDiskFault
    | AddBroker
    | DecommissionBroker
    | Reassign
    | PauseClient
    | ResumeClient
)


class Schedule(msgspec.Struct, kw_only=True, frozen=True):
    """Timed fault ops, then at `duration_ms` a heal of everything still broken, then
    `recovery_ms` of quiet. `packages`, `seed` and `interval_ms` record how it was made."""

    nodes: list[str]
    clients: list[str] = []
    packages: list[str] = []
    seed: int | None = None
    interval_ms: Millis = 0
    duration_ms: Millis
    recovery_ms: Millis = 0
    ops: list[AnyFaultOp] = []

    def to_json(self) -> bytes:
        """The schedule as JSON."""
        return msgspec.json.encode(self)

    def fault_packages(self) -> tuple[str, ...]:
        """The `--nemesis` packages this schedule injects: those it records it was made
        from, else those its ops start (a hand-written schedule)."""
        if self.packages:
            return fault_packages.parse(self.packages)
        return fault_packages.parse(op.PACKAGE for op in self.ops if op.PACKAGE)

    @classmethod
    def read(cls, path: str | Path) -> Schedule:
        """Load and validate the schedule in file `path`; ScheduleError naming the file."""
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise ScheduleError(f"cannot read schedule {path}: {exc.strerror or exc}") from None
        try:
            return cls.from_json(data)
        except ScheduleError as exc:
            raise ScheduleError(f"{path}: {exc}") from None

    @classmethod
    def from_json(cls, data: bytes | str) -> Schedule:
        """Decode and validate a schedule; raises ScheduleError naming what is wrong."""
        try:
            schedule = msgspec.json.decode(data, type=cls)
        except msgspec.ValidationError as e:
            raise ScheduleError(f"invalid schedule: {e}") from e
        except msgspec.DecodeError as e:
            raise ScheduleError(f"schedule is not valid JSON: {e}") from e
        schedule.validate()
        return schedule

    def validate(self) -> None:
        """Raise ScheduleError unless ops are in time order, within the duration, and name
        only this schedule's nodes and clients."""
        known = set(self.nodes) | set(self.clients)
        previous = 0
        for i, op in enumerate(self.ops):
            if op.at_ms < previous:
                raise ScheduleError(
                    f"op {i} ({type(op).__name__}) at {op.at_ms} ms comes before the "
                    f"previous op at {previous} ms; ops must be in time order"
                )
            if op.at_ms > self.duration_ms:
                raise ScheduleError(
                    f"op {i} ({type(op).__name__}) at {op.at_ms} ms is after the final "
                    f"heal at {self.duration_ms} ms"
                )
            unknown = [name for name in op.nodes_named() if name not in known]
            if unknown:
                raise ScheduleError(
                    f"op {i} ({type(op).__name__}) names {unknown}, which are not among "
                    f"the schedule's nodes {self.nodes} or clients {self.clients}"
                )
            previous = op.at_ms
