"""The fault interface: what a runtime (sim or process) exposes for the nemesis to break.

Both runtimes implement `FaultTarget`; the nemesis computes *what* to break (grudges,
schedules) and calls these primitives, recording each action as a `nemesis` history event.
Node names are strings: brokers are "n1".."nN"; client endpoints are whatever the runtime
lists in `clients` (the sim runtime names each client, the process runtime has one shared
"clients" endpoint because all clients reach a broker through the same proxy).

Network faults are per directed link (src -> dst): blocking a link holds its bytes, as a
firewall DROP does — nothing is lost, senders stall, timeouts fire, and held bytes flow
when the link is unblocked (unless the connection was reset meanwhile).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class LinkFault:
    """Degradation of one directed link; None fields leave that aspect healthy."""

    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    bandwidth_bytes_per_s: int | None = None


@dataclass(frozen=True)
class DiskFault:
    """A failing disk on one node: ENOSPC on writes and/or on fsyncs, and extra latency
    on every fsync (a slow or stalled device). The default is a healthy disk."""

    enospc_write: bool = False
    enospc_fsync: bool = False
    fsync_delay_ms: float = 0.0


@dataclass(frozen=True)
class FileDamage:
    """Damage to one stored file: flip bit `bit` (0-7) of the byte at `flip_offset`, or
    cut the file to `truncate_to` bytes."""

    flip_offset: int | None = None
    bit: int = 0
    truncate_to: int | None = None


class NodeWontStartError(RuntimeError):
    """A restarted node exited before serving (its broker refused its data, or halted on
    a failed disk); the message says why and where its log is."""


class FaultTarget(Protocol):
    """A running cluster that the nemesis can break and repair."""

    @property
    def nodes(self) -> Sequence[str]:
        """Broker node names, e.g. ["n1", "n2", "n3"]."""
        ...

    @property
    def clients(self) -> Sequence[str]:
        """Client endpoint names whose links to brokers can be faulted."""
        ...

    async def block(self, src: str, dst: str) -> None:
        """Hold every byte sent from src to dst (one direction) until unblocked."""
        ...

    async def unblock(self, src: str, dst: str) -> None:
        """Let src -> dst flow again, delivering held bytes."""
        ...

    async def heal_network(self) -> None:
        """Unblock every link and clear every link fault."""
        ...

    async def set_link_fault(self, src: str, dst: str, fault: LinkFault | None) -> None:
        """Degrade (or, with None, restore) the link src -> dst."""
        ...

    async def reset_connections(self, node: str) -> None:
        """Reset (RST) every open connection to or from node."""
        ...

    async def kill(self, node: str) -> None:
        """Crash the node at once (SIGKILL); its fsynced data survives."""
        ...

    async def restart(self, node: str) -> None:
        """Start a killed or power-lost node again on its data; returns once it serves."""
        ...

    async def pause(self, node: str) -> None:
        """Freeze the node (SIGSTOP): it neither computes nor answers, connections stay open."""
        ...

    async def resume(self, node: str) -> None:
        """Unfreeze a paused node (SIGCONT)."""
        ...

    async def power_loss(self, node: str) -> None:
        """Crash the node losing every write not fsynced; `restart` brings it back."""
        ...

    async def bump_clock(self, node: str, delta_ms: int) -> None:
        """Add delta_ms to the node's clock skew (cumulative) for record timestamps from now on."""
        ...

    async def reset_clock(self, node: str) -> None:
        """Put the node's wall clock back in step."""
        ...

    def leader_of(self, topic: str, partition: int) -> str | None:
        """The node currently leading a partition, if the runtime can tell."""
        ...

    def controller(self) -> str | None:
        """The active controller node, if the runtime can tell."""
        ...

    def isr_of(self, topic: str, partition: int) -> Sequence[str]:
        """The in-sync replicas of a partition (leader included) as its leader reports
        them, or nothing if the runtime cannot tell."""
        ...

    def coordinator_of(self, group: str) -> str | None:
        """The node coordinating a consumer group (what FindCoordinator answers: the
        leader of the group's `__consumer_offsets` partition), if the runtime can tell."""
        ...

    def txn_coordinator_of(self, transactional_id: str) -> str | None:
        """The node coordinating a transactional id (what FindCoordinator with key type 1
        answers: the leader of the id's `__transaction_state` partition), if the runtime
        can tell."""
        ...

    async def pause_client(self, client: str) -> None:
        """Freeze a client endpoint, as SIGSTOP would: nothing it sends reaches a broker
        and nothing reaches it until resumed; its connections stay open."""
        ...

    async def resume_client(self, client: str) -> None:
        """Let a paused client endpoint run again (held bytes flow both ways)."""
        ...

    def is_running(self, node: str) -> bool:
        """Whether the node has a live incarnation (a broker that halted has none)."""
        ...

    def stored_files(self, node: str) -> dict[str, int]:
        """Every file of the node's storage (relative path -> size), sorted by path."""
        ...

    async def damage_file(self, node: str, path: str, damage: FileDamage) -> None:
        """Damage one stored file of a node that is down (bit flip or truncation)."""
        ...

    async def set_disk_fault(self, node: str, fault: DiskFault | None) -> None:
        """Make the node's disk fail as `fault` says from now on (None: healthy again).
        The fault outlives restarts until cleared, as a full disk would."""
        ...

class MembershipTarget(FaultTarget, Protocol):
    """A cluster whose membership can change: spare nodes to add, brokers to retire,
    partitions to reassign (the `membership` package). Node names as in `nodes`."""

    @property
    def spares(self) -> Sequence[str]:
        """Configured nodes not started yet, which `add_broker` may start."""
        ...

    async def add_broker(self, node: str) -> None:
        """Start spare `node` as a broker; returns once the controller unfenced it."""
        ...

    async def reassign(self, topic: str, partition: int, replicas: Sequence[str]) -> None:
        """Start moving the partition to `replicas`; returns once the controller took it."""
        ...

    async def decommission(self, node: str) -> None:
        """Move every replica off `node`, then stop it for good and unregister it."""
        ...
