"""The `disk` fault package: damaged files between a crash and its restart, a full disk,
slow fsyncs. Generation (`DiskPackage`) and execution (`DiskNemesis`) both live here.

Generation draws only what can be known before the run: the node, the kind of fault,
and for damage a `pick` seed per file. When the op runs, the executor lists the crashed
node's files (`FaultTarget.stored_files`, sorted), and `plan_damage` draws from `pick`
which file of the asked kind, which byte and bit to flip or where to cut. The same
schedule on the same cluster state (the sim replays it exactly) damages the same bytes,
and the history event names the file and what was done to it, so a run is readable and
repeatable without the rng.

File kinds, by the names the reference broker (and Kafka) gives them:

- segment: `<base>.log` of a topic partition;
- index: `<base>.index`, `<base>.timeindex`;
- checkpoint: `high-watermark.checkpoint`, Kafka's `*-checkpoint` files
  (leader-epoch, recovery-point, log-start-offset), producer snapshots `<offset>.snapshot`;
- metadata: everything of the KRaft metadata log `__cluster_metadata-0/` (its segments,
  `quorum-state`), `__cluster_metadata.json`, `meta.properties`.

Harness control files (the process runtime's `clock-offset-ms`, `disk-fault`, ...),
damaged bytes kept aside by recovery (`*.corrupt`, `*.reason`) and temporary files are
never picked.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from nemesis.ledger import Ledger
from nemesis.ops import (
    AnyFaultOp,
    CorruptFiles,
    Damage,
    Restart,
    StartDiskFault,
    StopDiskFault,
)
from nemesis.target import DiskFault, FaultTarget, FileDamage, NodeWontStartError

FILE_KINDS = ("segment", "index", "checkpoint", "metadata")
ACTIONS = ("flip", "truncate")
# Files the harness (not the broker) keeps in a node's data dir.
CONTROL_FILES = frozenset({"clock-offset-ms", "disk-fault", "torn-write-seed"})
# How long a slow-fsync fault makes each fsync take, in ms (a stalled device at the top).
FSYNC_DELAYS_MS = (50.0, 200.0, 1_000.0, 5_000.0)


def file_kind(path: str) -> str | None:
    """The damage kind of a stored file, or None for files the package never touches."""
    name = path.rsplit("/", 1)[-1]
    top = path.split("/", 1)[0]
    if name in CONTROL_FILES or name.endswith((".tmp", ".corrupt", ".reason", ".deleted")):
        return None
    if top.startswith("__cluster_metadata") or name in ("meta.properties", "quorum-state"):
        return "metadata"
    if name.endswith(".log"):
        return "segment"
    if name.endswith((".index", ".timeindex")):
        return "index"
    if name.endswith((".checkpoint", "-checkpoint", ".snapshot")):
        return "checkpoint"
    return None


@dataclass(frozen=True)
class PlannedDamage:
    """What `plan_damage` chose: a file and the damage, with the sizes for the record."""

    path: str
    size: int
    damage: FileDamage

    def describe(self, kind: str, action: str) -> dict[str, Any]:
        """The history record of this damage."""
        value: dict[str, Any] = {"kind": kind, "action": action, "file": self.path,
                                 "size": self.size}
        if self.damage.flip_offset is not None:
            value.update(offset=self.damage.flip_offset, bit=self.damage.bit)
        if self.damage.truncate_to is not None:
            value["new_size"] = self.damage.truncate_to
        return value


def plan_damage(damage: Damage, files: dict[str, int]) -> PlannedDamage | None:
    """The file, byte and bit (or cut) `damage.pick` draws among non-empty `files` of
    `damage.kind`; None when the node has no such file."""
    candidates = [
        p for p, size in sorted(files.items()) if size > 0 and file_kind(p) == damage.kind
    ]
    if not candidates:
        return None
    rng = random.Random(damage.pick)
    path = rng.choice(candidates)
    size = files[path]
    if damage.action == "flip":
        return PlannedDamage(path, size, FileDamage(flip_offset=rng.randrange(size),
                                                    bit=rng.randrange(8)))
    return PlannedDamage(path, size, FileDamage(truncate_to=rng.randrange(size)))


class DiskPackage:
    """Generation of the `disk` package: flip-flops one disk fault on one live node.

    A damaged node is restarted (`Restart`) on the next step; a full or slow disk is
    made healthy again (`StopDiskFault`, which also restarts a node that halted). The
    node counts as down for the other packages meanwhile, so no kill or pause lands on
    it and collides with the disk fault's own crash or halt.
    """

    # Its faults never take out every node at once (see `nemesis.timing`).
    cluster_wide = False

    def __init__(self) -> None:
        self.node: str | None = None
        self.corrupted = False

    @property
    def is_active(self) -> bool:
        """Whether a disk fault awaits its repair."""
        return self.node is not None

    def step(self, at_ms: int, world: Any, rng: random.Random) -> AnyFaultOp | None:
        """The next op: the repair of the fault in force, else a new fault."""
        if self.node is not None:
            node, self.node = self.node, None
            world.down.discard(node)
            if self.corrupted:
                return Restart(at_ms=at_ms, nodes=[node])
            return StopDiskFault(at_ms=at_ms, nodes=[node])
        eligible = world.up()
        if not eligible:
            return None
        node = rng.choice(eligible)
        fault = rng.choice(("corrupt", "enospc", "slow-fsync"))
        self.node = node
        self.corrupted = fault == "corrupt"
        world.down.add(node)
        if fault == "corrupt":
            damages = [
                Damage(kind=rng.choice(FILE_KINDS), action=rng.choice(ACTIONS),
                       pick=rng.getrandbits(32))
                for _ in range(rng.randint(1, 2))
            ]
            return CorruptFiles(at_ms=at_ms, node=node, damages=damages)
        if fault == "enospc":
            on = rng.choice(("write", "fsync", "both"))
            return StartDiskFault(at_ms=at_ms, node=node, enospc_write=on != "fsync",
                                  enospc_fsync=on != "write")
        return StartDiskFault(at_ms=at_ms, node=node, fsync_delay_ms=rng.choice(FSYNC_DELAYS_MS))


Record = Callable[..., None]


class DiskNemesis:
    """Execution of the `disk` package's ops against a `FaultTarget`, for the executor.

    `record(f, value, error=None)` writes a nemesis history event. Disk faults in force
    are kept here (`faulty`) so the final heal can clear them.
    """

    def __init__(self, target: FaultTarget, ledger: Ledger, record: Record) -> None:
        self.target = target
        self.ledger = ledger
        self.record = record
        self.faulty: dict[str, DiskFault] = {}

    def _why_not_a_minority(self, node: str) -> str | None:
        """Why a disk fault on `node` now would take down more than a minority, if so.

        A broker that refuses its damaged files stays down for the rest of the run (as
        Kafka's does until an operator steps in), so faults left unchecked would pile up
        until no quorum is left and the run measures nothing more. One node at a time in
        three (a minority in general) keeps every acks=all guarantee testable.
        """
        out = self.ledger.down | set(self.faulty) | {node}
        limit = max(1, (len(self.target.nodes) - 1) // 2)
        if len(out) > limit:
            others = ", ".join(sorted(out - {node}))
            return f"{others} already down or on a failing disk; at most {limit} at a time"
        return None

    async def corrupt(self, op: CorruptFiles) -> None:
        """Kill the node, damage the files `op.damages` draw, record what was done."""
        value: dict[str, Any] = {"node": op.node, "crash": "kill"}
        why = self.ledger.why_not_crash(op.node) or self._why_not_a_minority(op.node)
        if why is not None:
            self.record("disk-corrupt", value, error=f"skipped: {why}")
            return
        if self.target.is_running(op.node):
            await self.target.kill(op.node)
        else:
            value["crash"] = "none (not running)"
        self.ledger.crashed([op.node])
        damaged: list[dict[str, Any]] = []
        missing: list[str] = []
        for damage in op.damages:
            planned = plan_damage(damage, self.target.stored_files(op.node))
            if planned is None:
                missing.append(damage.kind)
                continue
            await self.target.damage_file(op.node, planned.path, planned.damage)
            damaged.append(planned.describe(damage.kind, damage.action))
        value["damaged"] = damaged
        if missing:
            value["no_file_of_kind"] = missing
        self.record("disk-corrupt", value)

    async def start_fault(self, op: StartDiskFault) -> None:
        """Make the node's disk fail as the op says."""
        fault = DiskFault(enospc_write=op.enospc_write, enospc_fsync=op.enospc_fsync,
                          fsync_delay_ms=op.fsync_delay_ms)
        value = {"node": op.node, "enospc_write": op.enospc_write,
                 "enospc_fsync": op.enospc_fsync, "fsync_delay_ms": op.fsync_delay_ms}
        why = (f"{op.node} is down" if op.node in self.ledger.down
               else self._why_not_a_minority(op.node))
        if why is not None:
            self.record("start-disk-fault", value, error=f"skipped: {why}")
            return
        await self.target.set_disk_fault(op.node, fault)
        self.faulty[op.node] = fault
        self.record("start-disk-fault", value)

    async def stop_faults(self, nodes: Sequence[str], *, final: bool) -> None:
        """Heal the nodes' disks, then restart any that halted while the fault lasted."""
        halted: list[str] = []
        failed: dict[str, str] = {}
        for node in nodes:
            await self.target.set_disk_fault(node, None)
            self.faulty.pop(node, None)
            if node in self.ledger.down or self.target.is_running(node):
                continue
            halted.append(node)
            await restart_or_note(self.target.restart, node, failed)
        value: dict[str, Any] = {"nodes": sorted(nodes), "restarted_halted": halted}
        if failed:
            value["failed"] = failed
        if final:
            value["final"] = True
        self.record("stop-disk-fault", value)

    async def heal(self) -> None:
        """The final heal: every disk healthy again, halted nodes restarted."""
        if self.faulty:
            await self.stop_faults(sorted(self.faulty), final=True)


async def restart_or_note(
    restart: Callable[[str], Awaitable[None]], node: str, failed: dict[str, str]
) -> None:
    """Restart `node`; if it will not start, note why in `failed` instead of raising."""
    try:
        await restart(node)
    except NodeWontStartError as exc:
        failed[node] = str(exc)
