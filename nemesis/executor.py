"""Run a `Schedule` against a `FaultTarget`, writing one nemesis event per action.

Each event is written once its action is done (a restart's event, once the node serves),
with the concrete targets: the grudge as {node: [hated...]}, the links, the nodes.

Time comes only from trio's clock (`trio.sleep_until`, `trio.current_time`), so the same
code runs in real time against OS processes and in virtual time under the simulation's
MockClock. The executor keeps a `Ledger` of what it broke; at the schedule's end it heals
exactly that (unblock the links it blocked, restore the links it degraded, resume what
it paused, restart what it crashed, reset the clocks it moved), then stays quiet for the
recovery period.

An op that does not apply any more (restart of a node that is up, pause of a node that
is down — as happens when a search drops ops from a schedule) is not an error: the nodes
it cannot touch are skipped and named in the event; an op with nothing left to do is
written with `error` saying why.

If `execute` is cancelled or a target call fails, the ledger still says what is broken;
callers that want the cluster whole again use `Executor.heal_everything`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import msgspec
import trio

from history.model import split_log
from history.writer import HistoryWriter
from nemesis import grudge as grudges
from nemesis.disk import DiskNemesis, restart_or_note
from nemesis.ledger import Ledger
from nemesis.membership import apply_membership
from nemesis.ops import (
    AddBroker,
    AnyFaultOp,
    ClockReset,
    ClockSkew,
    ClockStrobe,
    CorruptFiles,
    DecommissionBroker,
    Kill,
    LeaderTarget,
    Pause,
    PauseClient,
    PowerLoss,
    Reassign,
    ResetConnections,
    Restart,
    Resume,
    ResumeClient,
    Schedule,
    ScheduleError,
    StartDiskFault,
    StartLinkFault,
    StartPartition,
    StopDiskFault,
    StopLinkFault,
    StopPartition,
)
from nemesis.roles import Role, resolve
from nemesis.target import FaultTarget, LinkFault


class Executor:
    """Applies fault ops to one target and remembers what is broken.

    `origin` is the trio time of history time 0 (the run's start), so nemesis events share
    the workload's time line.
    """

    def __init__(self, target: FaultTarget, history: HistoryWriter, *, origin: float) -> None:
        self.target = target
        self.history = history
        self.origin = origin
        self.ledger = Ledger()
        self._strobes: dict[str, _Strobe] = {}
        self.disk = DiskNemesis(target, self.ledger, self._record)

    async def run(self, schedule: Schedule) -> None:
        """Run every op at its time, heal everything at `duration_ms`, wait out recovery."""
        schedule.validate()
        self._check_target(schedule)
        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            for op in schedule.ops:
                await trio.sleep_until(start + op.at_ms / 1000)
                await self.apply(op, nursery)
            await trio.sleep_until(start + schedule.duration_ms / 1000)
            await self.heal_everything()
        await trio.sleep_until(start + (schedule.duration_ms + schedule.recovery_ms) / 1000)

    def _check_target(self, schedule: Schedule) -> None:
        missing_nodes = sorted(set(schedule.nodes) - set(self.target.nodes))
        missing_clients = sorted(set(schedule.clients) - set(self.target.clients))
        if missing_nodes or missing_clients:
            raise ScheduleError(
                f"the schedule names nodes {missing_nodes} and clients {missing_clients} the "
                f"target does not have (target nodes {list(self.target.nodes)}, clients "
                f"{list(self.target.clients)}); generate the schedule for this cluster"
            )

    async def apply(self, op: AnyFaultOp, nursery: trio.Nursery) -> None:
        """Apply one op now and record it; `nursery` hosts clock strobes that outlive it."""
        match op:
            case StartPartition():
                await self._start_partition(op)
            case StopPartition():
                await self._stop_partition(final=False)
            case StartLinkFault():
                await self._start_link_fault(op)
            case StopLinkFault():
                await self._stop_link_fault(final=False)
            case ResetConnections():
                nodes, asked = self._role_nodes(op.role, op.nodes)
                await _each(self.target.reset_connections, nodes)
                self._record("reset-connections", {"nodes": sorted(nodes), **asked})
            case Kill() | PowerLoss():
                await self._crash(op)
            case Restart():
                await self._restart(op.nodes, final=False)
            case Pause():
                await self._pause(*self._role_nodes(op.role, op.nodes))
            case Resume():
                await self._resume(op.nodes, final=False)
            case ClockSkew() | ClockStrobe() if op.role is not None:
                await self._clock_role(op, nursery)
            case ClockSkew():
                await self._clock_skew(op)
            case ClockStrobe():
                await self._clock_strobe(op, nursery)
            case ClockReset():
                await self._clock_reset(op.nodes, final=False)
            case CorruptFiles():
                await self.disk.corrupt(op)
            case StartDiskFault():
                await self.disk.start_fault(op)
            case StopDiskFault():
                await self.disk.stop_faults(op.nodes, final=False)
            case AddBroker() | DecommissionBroker() | Reassign():
                await apply_membership(op, self.target, self._record, nursery)
            case PauseClient():
                await self._pause_clients(op.clients)
            case ResumeClient():
                await self._resume_clients(op.clients, final=False)

    async def heal_everything(self) -> None:
        """Undo everything the ledger says is broken, one event per kind of repair.

        Network first so restarted nodes can reach their peers, then resume, restart,
        and clocks last so a restarted node's clock is put in step too.
        """
        # Strobes still running stop here; their nodes get a final clock reset below, so
        # the history shows where each strobe ended.
        strobed = sorted(n for n, strobe in self._strobes.items() if not strobe.done.is_set())
        for node in sorted(self._strobes):
            await self._stop_strobe(node)
        if self.ledger.blocked:
            await self._stop_partition(final=True)
        if self.ledger.degraded:
            await self._stop_link_fault(final=True)
        if self.ledger.paused:
            await self._resume(sorted(self.ledger.paused), final=True)
        if self.ledger.paused_clients:
            await self._resume_clients(sorted(self.ledger.paused_clients), final=True)
        await self.disk.heal()  # before restarts: a node must not restart on a full disk
        if self.ledger.down:
            await self._restart(sorted(self.ledger.down), final=True)
        if self.ledger.skewed or strobed:
            await self._clock_reset(sorted(set(self.ledger.skewed) | set(strobed)), final=True)

    # -- partitions -------------------------------------------------------------------

    async def _start_partition(self, op: StartPartition) -> None:
        value: dict[str, Any] = {"shape": op.shape, "one_way": op.one_way}
        if op.role is not None:
            cut_off, asked = self._role_nodes(op.role, [])
            value.update(asked, deaf=op.deaf)
            if cut_off:
                grudge = grudges.cut_off_grudge(
                    cut_off, self.target.nodes, clients=op.clients, one_way=op.one_way,
                    deaf=op.deaf,
                )
                if len(cut_off) == 1:
                    # As a `leader` partition's event: attribution names the node cut off.
                    value["isolated"] = cut_off[0]
            else:
                grudge = grudges.from_json(op.grudge)  # the op's own grudge is the fallback
            if not grudge:
                value["grudge"] = {}
                self._record("start-partition", value, error="the role resolved to no node "
                             "and the op names no fallback: nothing was cut")
                return
        elif op.leader is not None:
            isolated, resolved_by = self._resolve_leader(op.leader)
            grudge = grudges.leader_grudge(
                isolated,
                self.target.nodes,
                clients=op.clients,
                clients_isolated=op.leader.clients_isolated,
                one_way=op.one_way,
            )
            value.update(log=op.leader.log, isolated=isolated, resolved_by=resolved_by)
        else:
            grudge = grudges.from_json(op.grudge)
        links = grudges.links(grudge)
        for src, dst in links:
            await self.target.block(src, dst)
            self.ledger.block([(src, dst)])
        value["grudge"] = grudges.to_json(grudge)
        if op.clients:
            value["clients"] = sorted(op.clients)
        self._record("start-partition", value)

    def _role_nodes(
        self, role: Role | None, nodes: Sequence[str]
    ) -> tuple[list[str], dict[str, Any]]:
        """The nodes an op acts on (its role's holders now, else its fallback, else its
        own `nodes`), and what to add to its event: the role asked and what it found."""
        if role is None:
            return list(nodes), {}
        found = resolve(role, self.target, nodes)
        return found.nodes, {
            "role": role.describe(),
            "resolved": list(found.nodes),
            "resolved_by": found.resolved_by,
        }

    def _resolve_leader(self, spec: LeaderTarget) -> tuple[str, str]:
        """The node to isolate and how it was found: leader_of, controller or fallback."""
        if spec.log is None:
            node, how = self.target.controller(), "controller"
        else:
            topic, partition = split_log(spec.log)
            node, how = self.target.leader_of(topic, partition), "leader_of"
        if node is None or node not in self.target.nodes:
            return spec.fallback, "fallback"
        return node, how

    async def _stop_partition(self, *, final: bool) -> None:
        links = self.ledger.unblock_all()
        for src, dst in links:
            await self.target.unblock(src, dst)
        self._record("stop-partition", _final({"unblocked": [list(k) for k in links]}, final))

    # -- link faults ------------------------------------------------------------------

    async def _start_link_fault(self, op: StartLinkFault) -> None:
        fault = LinkFault(
            latency_ms=op.latency_ms,
            jitter_ms=op.jitter_ms,
            bandwidth_bytes_per_s=op.bandwidth_bytes_per_s,
        )
        links = list(op.links)
        asked: dict[str, Any] = {}
        if op.role is not None:
            holders, asked = self._role_nodes(op.role, [])
            if holders:  # else the op's own links are the fallback
                links = _links_touching(holders, [*self.target.nodes, *self.target.clients])
        for src, dst in links:
            await self.target.set_link_fault(src, dst, fault)
            self.ledger.degrade([(src, dst)])
        self._record(
            "start-link-fault",
            {
                "links": [list(k) for k in sorted(links)],
                "latency_ms": op.latency_ms,
                "jitter_ms": op.jitter_ms,
                "bandwidth_bytes_per_s": op.bandwidth_bytes_per_s,
                **asked,
            },
        )

    async def _stop_link_fault(self, *, final: bool) -> None:
        links = self.ledger.restore_all()
        for src, dst in links:
            await self.target.set_link_fault(src, dst, None)
        self._record("stop-link-fault", _final({"links": [list(k) for k in links]}, final))

    # -- processes --------------------------------------------------------------------

    async def _crash(self, op: Kill | PowerLoss) -> None:
        f = "kill" if isinstance(op, Kill) else "power-loss"
        requested, asked = self._role_nodes(op.role, op.nodes)
        nodes, skipped = _split(requested, self.ledger.why_not_crash)
        for node in nodes:
            # A strobe must not touch a dead node's clock; the ledger keeps it skewed.
            await self._stop_strobe(node)
        action = self.target.kill if isinstance(op, Kill) else self.target.power_loss
        await _each(action, nodes)
        self.ledger.crashed(nodes)
        self._record_nodes(f, nodes, skipped, asked=asked)

    async def _restart(self, requested: Sequence[str], *, final: bool) -> None:
        nodes, skipped = _split(requested, self.ledger.why_not_restart)
        # A node whose broker refuses its (damaged) data stays down, noted in the event.
        failed: dict[str, str] = {}
        await _each(lambda node: restart_or_note(self.target.restart, node, failed), nodes)
        started = [node for node in nodes if node not in failed]
        self.ledger.restarted(started)
        self._record_nodes("restart", started, {**skipped, **failed}, final=final,
                           failed=failed)

    async def _pause(self, requested: Sequence[str], asked: dict[str, Any] | None = None) -> None:
        nodes, skipped = _split(requested, self.ledger.why_not_pause)
        await _each(self.target.pause, nodes)
        self.ledger.was_paused(nodes)
        self._record_nodes("pause", nodes, skipped, asked=asked)

    async def _resume(self, requested: Sequence[str], *, final: bool) -> None:
        nodes, skipped = _split(requested, self.ledger.why_not_resume)
        await _each(self.target.resume, nodes)
        self.ledger.resumed(nodes)
        self._record_nodes("resume", nodes, skipped, final=final)

    async def _pause_clients(self, requested: Sequence[str]) -> None:
        clients, skipped = _split(requested, self.ledger.why_not_pause_client)
        await _each(self.target.pause_client, clients)
        self.ledger.clients_paused(clients)
        self._record_clients("pause-client", clients, skipped, final=False)

    async def _resume_clients(self, requested: Sequence[str], *, final: bool) -> None:
        clients, skipped = _split(requested, self.ledger.why_not_resume_client)
        await _each(self.target.resume_client, clients)
        self.ledger.clients_resumed(clients)
        self._record_clients("resume-client", clients, skipped, final=final)

    def _record_clients(
        self, f: str, clients: Sequence[str], skipped: dict[str, str], *, final: bool
    ) -> None:
        value: dict[str, Any] = {"clients": sorted(clients)}
        if skipped:
            value["skipped"] = skipped
        error = None if clients or not skipped else "skipped: " + "; ".join(skipped.values())
        self._record(f, _final(value, final), error=error)

    # -- clocks -----------------------------------------------------------------------

    async def _clock_role(self, op: ClockSkew | ClockStrobe, nursery: trio.Nursery) -> None:
        """A clock op aimed at a role: the same op on each holder's clock, one event each."""
        assert op.role is not None
        nodes, asked = self._role_nodes(op.role, [op.node])
        for node in nodes:
            one = msgspec.structs.replace(op, node=node, role=None)
            if isinstance(one, ClockSkew):
                await self._clock_skew(one, asked)
            else:
                await self._clock_strobe(one, nursery, asked)

    async def _clock_skew(self, op: ClockSkew, asked: dict[str, Any] | None = None) -> None:
        value = {"node": op.node, "delta_ms": op.delta_ms, **(asked or {})}
        why = self.ledger.why_not_clock(op.node)
        if why is not None:
            self._record("clock-skew", value, error=why)
            return
        await self._stop_strobe(op.node)
        await self.target.bump_clock(op.node, op.delta_ms)
        self.ledger.skew(op.node)
        self._record("clock-skew", value)

    async def _clock_strobe(
        self, op: ClockStrobe, nursery: trio.Nursery, asked: dict[str, Any] | None = None
    ) -> None:
        value = {
            "node": op.node,
            "delta_ms": op.delta_ms,
            "period_ms": op.period_ms,
            "duration_ms": op.duration_ms,
            **(asked or {}),
        }
        why = self.ledger.why_not_clock(op.node)
        if why is not None:
            self._record("clock-strobe", value, error=why)
            return
        await self._stop_strobe(op.node)
        strobe = _Strobe(self.target, self.ledger, op)
        self._strobes[op.node] = strobe
        # Recorded before the first flip so the event's time is when strobing began.
        self._record("clock-strobe", value)
        await nursery.start(strobe.run)

    async def _stop_strobe(self, node: str) -> None:
        strobe = self._strobes.pop(node, None)
        if strobe is not None:
            await strobe.stop()

    async def _clock_reset(self, requested: Sequence[str], *, final: bool) -> None:
        nodes, skipped = _split(requested, self.ledger.why_not_clock)
        for node in nodes:
            await self._stop_strobe(node)
        await _each(self.target.reset_clock, nodes)
        self.ledger.unskew(nodes)
        self._record_nodes("clock-reset", nodes, skipped, final=final)

    # -- history ----------------------------------------------------------------------

    def _record_nodes(
        self,
        f: str,
        nodes: Sequence[str],
        skipped: dict[str, str],
        *,
        final: bool = False,
        asked: dict[str, Any] | None = None,
        failed: dict[str, str] | None = None,
    ) -> None:
        value: dict[str, Any] = {"nodes": sorted(nodes), **(asked or {})}
        if skipped:
            value["skipped"] = skipped
        if failed:
            # Nodes that refused to start (also under `skipped`, with the same reason).
            value["failed"] = failed
        error = None if nodes or not skipped else "skipped: " + "; ".join(skipped.values())
        if not nodes and not skipped and asked:
            error = "the role resolved to no node and the op names no fallback"
        self._record(f, _final(value, final), error=error)

    def _record(self, f: str, value: Any, *, error: str | None = None) -> None:
        time = round((trio.current_time() - self.origin) * 1e9)
        self.history.append("nemesis", "info", f, value, time=time, error=error)


class _Strobe:
    """Flips one node's clock between skewed and true every period, for a duration.

    Runs as a task in the executor's nursery; `stop` cancels it and waits until it has
    finished, so no flip lands after the caller moves on.
    """

    def __init__(self, target: FaultTarget, ledger: Ledger, op: ClockStrobe) -> None:
        self.target = target
        self.ledger = ledger
        self.op = op
        self.scope = trio.CancelScope()
        self.done = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Strobe until the duration ends (leaving the clock in step) or until stopped."""
        node, period = self.op.node, self.op.period_ms / 1000
        try:
            with self.scope:
                task_status.started()
                deadline = trio.current_time() + self.op.duration_ms / 1000
                while trio.current_time() < deadline:
                    await self.target.bump_clock(node, self.op.delta_ms)
                    self.ledger.skew(node)
                    await trio.sleep(period)
                    await self.target.reset_clock(node)
                    self.ledger.unskew([node])
                    await trio.sleep(period)
        finally:
            self.done.set()

    async def stop(self) -> None:
        """Cancel the strobe and wait for it to end."""
        self.scope.cancel()
        await self.done.wait()


def _links_touching(holders: Sequence[str], endpoints: Sequence[str]) -> list[tuple[str, str]]:
    """Every directed link between a holder and another endpoint, both ways, sorted."""
    found = {
        link
        for holder in holders
        for other in endpoints
        if other != holder
        for link in ((holder, other), (other, holder))
    }
    return sorted(found)


def _split(
    nodes: Sequence[str], why_not: Callable[[str], str | None]
) -> tuple[list[str], dict[str, str]]:
    """Nodes an action applies to, and a reason for each it does not."""
    applicable: list[str] = []
    skipped: dict[str, str] = {}
    for node in nodes:
        reason = why_not(node)
        if reason is None:
            applicable.append(node)
        else:
            skipped[node] = reason
    return applicable, skipped


def _final(value: dict[str, Any], final: bool) -> dict[str, Any]:
    """Mark the events of the final heal."""
    return {**value, "final": True} if final else value


async def _each(action: Callable[[str], Awaitable[None]], nodes: Sequence[str]) -> None:
    """Apply `action` to all nodes at once: a crash of "all" is simultaneous, and restarts
    must overlap because a node may serve only once a quorum of its peers is back."""
    if len(nodes) == 1:
        await action(nodes[0])
        return
    async with trio.open_nursery() as nursery:
        for node in nodes:
            nursery.start_soon(action, node)


async def execute(
    schedule: Schedule,
    target: FaultTarget,
    history: HistoryWriter,
    *,
    origin: float | None = None,
) -> Ledger:
    """Run `schedule` against `target`, recording nemesis events in `history`.

    `origin` is the trio time at which the run (history time 0) began; it defaults to
    now. Returns the ledger, healthy unless a final-heal action was skipped.
    """
    executor = Executor(
        target, history, origin=trio.current_time() if origin is None else origin
    )
    await executor.run(schedule)
    return executor.ledger
