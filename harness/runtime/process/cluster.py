"""The process runtime: N real `faultline broker` processes behind trio fault proxies.

    async with ProcessCluster(run_dir, size=3, power_loss=True) as cluster:
        producer_config = ProducerConfig.from_kafka({"bootstrap.servers": cluster.bootstrap})
        await cluster.block("clients", "n1")      # FaultTarget, see nemesis/target.py
        ...

Layout under `run_dir`: `nodes/n1/data` (the broker's data dir), `nodes/n1/broker.log`
(its stdout and stderr, appended across restarts).

Every connection goes through a `FaultProxy` owned by this cluster:

- client -> node: one proxy per node, advertised to clients through the broker's
  `advertised.listeners`, so Metadata answers send clients to the proxy, never to the
  broker's real port. Its two directions are the links ("clients", n) and (n, "clients").
- node -> node: one proxy per ordered pair (src, dst) with src's own port, whose
  directions are the links (src, dst) and (dst, src). `peer_addresses(src)` gives
  the map {dst node id: proxy address} a replicating broker must dial. A broker
  dials them through `--set faultline.peer.<id>=host:port` (passed with `pass_peers=True`,
  always with `quorum=True`, where the nodes form one KRaft cluster).
- With `quorum=True` every broker also has a controller listener
  (`CONTROLLER://host:0`, controller.listener.names=CONTROLLER) that alone serves the
  controller quorum and the broker-to-controller APIs; its client port does not. The
  controller listeners get the same proxies on the same links: one per node for
  outsiders (`controller_address(n)`, the addresses in controller.quorum.voters) and one
  per ordered pair, which the nodes dial through `faultline.voter.<id>=host:port`.

Faults (FaultTarget):

- kill = a crash that keeps the page cache. Without `power_loss` the broker writes
  straight to its files, so SIGKILL is exact. With `power_loss=True` every broker runs
  with `faultline.storage.volatile.until.fsync=true` (its memory holds unsynced
  writes), so `kill` sends SIGUSR2, on which the broker hands its buffers to the OS
  without fsync and exits 137 (see harness/commands/broker.py), while `power_loss`
  sends SIGKILL: unsynced writes vanish, exactly as in a power cut.
- pause_client/resume_client = every link between the "clients" endpoint and the
  brokers frozen both ways (held as by a partition, but apart from it): all clients
  share that endpoint, so all of them stall, as if their host were SIGSTOPped.
- pause/resume = SIGSTOP/SIGCONT; restart = a new process on the same data dir,
  behind the same proxy port, so clients reconnect to the address they know.
- clock = `<data_dir>/clock-offset-ms` holds the node's skew, SIGUSR1 makes the broker
  re-read it; it is also read at startup, so a skew survives a restart.
- torn writes (`torn_writes=True`, with `power_loss`): `power_loss` writes a seed to
  `<data_dir>/torn-write-seed` and sends SIGUSR2, on which the broker writes a prefix
  of the last file's unsynced tail drawn from the seed and exits, losing the rest.
- disk = `<data_dir>/disk-fault` (JSON) makes the broker's storage fail writes or
  fsyncs with ENOSPC or slow its fsyncs, re-read on SIGUSR1 and at startup (a full disk
  stays full across restarts); a broker that hits ENOSPC halts and exits 1, as Kafka
  does. Files of a stopped node are damaged in place (`damage_file`).

Membership (quorum only, `spare_nodes`): spare nodes n(N+1).. get proxies and data dirs
but no process; `add_broker` starts one as a broker outside the controller quorum (an
observer; the voters stay n1..nN), `reassign` sends AlterPartitionReassignments,
`decommission` moves every replica off a broker, stops it for good and unregisters it
(see `harness.runtime.membership`). `nodes` lists the members: started, not retired.

Processes never outlive the cluster: the context manager's `finally` stops them
(SIGTERM, then SIGKILL), and each broker has PR_SET_PDEATHSIG=SIGKILL, so the kernel
kills it should the harness itself be SIGKILLed.
"""

from __future__ import annotations

import json
import logging
import random
import signal
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import IO, Self

import trio

from harness.broker_process import BrokerStartError
from harness.commands.broker import DISK_FAULT_FILE, TORN_WRITE_FILE
from harness.runtime.membership import MembershipError, broker_id, moves_off, spare_names
from harness.runtime.process import admin
from harness.runtime.process.node import BrokerNode, NodeState
from harness.runtime.process.observer import Beliefs, watch_beliefs
from harness.runtime.process.proxy import FaultProxy, Link
from nemesis.disk import CONTROL_FILES
from nemesis.target import DiskFault, FileDamage, LinkFault, NodeWontStartError
from reference_broker.group.offsets_store import OFFSETS_TOPIC, partition_for
from reference_broker.txn.config import TXN_STATE_TOPIC

log = logging.getLogger("faultline.runtime.process")

CLIENTS = "clients"
CLOCK_OFFSET_FILE = "clock-offset-ms"


class ClusterError(RuntimeError):
    """A fault or lookup the cluster cannot perform; the message says why."""


class ProcessCluster:
    """N brokers n1..nN as OS processes behind fault proxies; a `FaultTarget`."""

    def __init__(
        self,
        run_dir: Path,
        size: int = 3,
        *,
        settings: Mapping[str, object] | None = None,
        power_loss: bool = False,
        torn_writes: bool = False,
        seed: int = 0,
        host: str = "127.0.0.1",
        start_timeout_s: float = 20.0,
        pass_peers: bool = False,
        quorum: bool = False,
        spare_nodes: int = 0,
    ) -> None:
        if size < 1:
            raise ValueError(f"a cluster needs at least one node, not {size}")
        if spare_nodes and not quorum:
            raise ValueError("spare nodes need a KRaft cluster (quorum=True)")
        self.run_dir = Path(run_dir)
        self.power_loss_enabled = power_loss
        self.torn_writes = torn_writes
        # Seeds of the torn writes, one per power cut, from the run's seed.
        self._tear_rng = random.Random(f"{seed}/torn-writes")
        self.host = host
        self.start_timeout_s = start_timeout_s
        # A quorum cluster replicates, so its brokers must dial each other (through proxies).
        self.quorum = quorum
        self.pass_peers = pass_peers or quorum
        self._base_settings = dict(settings or {})
        rng = random.Random(seed)
        self._members = [f"n{i}" for i in range(1, size + 1)]
        self._voters = list(self._members)
        self._spares = spare_names(size, spare_nodes)
        self._retired: list[str] = []
        names = [*self._members, *self._spares]
        self._nodes: dict[str, BrokerNode] = {}
        for i, name in enumerate(names, start=1):
            node_settings = dict(self._base_settings)
            if power_loss:
                node_settings["faultline.storage.volatile.until.fsync"] = True
            node_settings["node.id"] = i
            self._nodes[name] = BrokerNode(
                name, i, self.run_dir / "nodes" / name, node_settings, listen_host=host
            )
        endpoints = [*names, CLIENTS]
        # One rng per link, drawn in a fixed order, so jitter is reproducible per seed.
        self._links: dict[tuple[str, str], Link] = {
            (a, b): Link(a, b, random.Random(rng.getrandbits(64)))
            for a in endpoints
            for b in endpoints
            if a != b and not (a == CLIENTS and b == CLIENTS)
        }
        self._client_proxies: dict[str, FaultProxy] = {
            n: FaultProxy(
                self._links[(CLIENTS, n)], self._links[(n, CLIENTS)], None, listen_host=host
            )
            for n in names
        }
        self._peer_proxies: dict[tuple[str, str], FaultProxy] = {
            (a, b): FaultProxy(self._links[(a, b)], self._links[(b, a)], None, listen_host=host)
            for a in names
            for b in names
            if a != b
        }
        # The controller listeners' proxies share the links of the client/peer proxies, so
        # a partition cuts the quorum traffic between two nodes along with the data.
        self._controller_proxies: dict[str, FaultProxy] = {}
        self._peer_controller_proxies: dict[tuple[str, str], FaultProxy] = {}
        if quorum:
            self._controller_proxies = {
                n: FaultProxy(
                    self._links[(CLIENTS, n)], self._links[(n, CLIENTS)], None, listen_host=host
                )
                for n in names
            }
            self._peer_controller_proxies = {
                pair: FaultProxy(proxy.forward, proxy.backward, None, listen_host=host)
                for pair, proxy in self._peer_proxies.items()
            }
        self._clock_offsets: dict[str, int] = dict.fromkeys(names, 0)
        self._beliefs = Beliefs()
        # cluster.jsonl and the history's origin, once the runner starts the timeline.
        self._timeline: tuple[IO[str], float] | None = None
        self._nursery: trio.Nursery | None = None
        self._context: AbstractAsyncContextManager[Self] | None = None

    # -- lifecycle -----------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._context = self._running()
        return await self._context.__aenter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._context is not None
        return await self._context.__aexit__(exc_type, exc, tb)

    @asynccontextmanager
    async def _running(self) -> AsyncIterator[Self]:
        # The body's own exception is re-raised as itself, not wrapped in the group
        # of the nursery that owns the proxies and log pumps.
        body_error: BaseException | None = None
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                for proxy in self._proxies():
                    await nursery.start(proxy.serve)
                for name in self._members:
                    self._prepare(self._nodes[name])
                async with trio.open_nursery() as starting:
                    for name in self._members:
                        starting.start_soon(self._start, self._nodes[name])
                if self.quorum:
                    nursery.start_soon(watch_beliefs, self._running_brokers, self._believe)
                try:
                    yield self
                except BaseException as exc:
                    body_error = exc
            finally:
                with trio.CancelScope(shield=True):
                    await self._stop_all()
                nursery.cancel_scope.cancel()
                if self._timeline is not None:
                    self._timeline[0].close()
                    self._timeline = None
        if body_error is not None:
            raise body_error

    def _running_brokers(self) -> dict[str, tuple[str, int, int]]:
        """name -> (host, real port, node id) of every broker process not stopped or paused."""
        return {name: (node.address.host, node.address.port, node.node_id)
                for name, node in self._nodes.items()
                if node.state is NodeState.RUNNING and node.address is not None}

    def _believe(self, beliefs: Beliefs) -> None:
        if self._timeline is not None:
            self._record(self._beliefs, beliefs, self._timeline)
        self._beliefs = beliefs

    def start_timeline(self, origin: float) -> None:
        """From now on, write each change of the brokers' beliefs (leader, epoch, ISR per
        log; controller) to `run_dir/cluster.jsonl`, timed in ns from `origin` (the
        history's zero). Read from Metadata every `observer.WATCH_INTERVAL_S`, so a
        change is seen up to that late; power cuts' losses are not visible here."""
        self._timeline = (open(self.run_dir / "cluster.jsonl", "w", encoding="utf-8"),  # noqa: SIM115 (closed at stop)
                          origin)
        # The wall time of the origin places the brokers' wall-clock log lines on the
        # history's clock (harness.coverage).
        origin_wall = time.time() - (trio.current_time() - origin)
        self._timeline[0].write(json.dumps({"kind": "start", "origin_s": origin,
                                            "origin_wall": origin_wall,
                                            "nodes": list(self._nodes)}) + "\n")
        self._record(Beliefs(), self._beliefs, self._timeline)

    @staticmethod
    def _record(old: Beliefs, new: Beliefs, timeline: tuple[IO[str], float]) -> None:
        stream, origin = timeline
        now = round((trio.current_time() - origin) * 1e9)
        for (topic, index), leader in sorted(new.leaders.items()):
            if topic.startswith("__") or old.leaders.get((topic, index)) == leader:
                continue
            before = old.leaders.get((topic, index))
            unclean = (None if before is None or not before.isr or before.epoch == leader.epoch
                       else leader.node not in before.isr)
            stream.write(json.dumps({"kind": "log", "time": now, "log": f"{topic}/{index}",
                                     "leader": leader.node, "epoch": leader.epoch,
                                     "isr": list(leader.isr), "replicas": [],
                                     "unclean": unclean}) + "\n")
        if new.controller != old.controller:
            stream.write(json.dumps({"kind": "controller", "time": now,
                                     "controller": new.controller}) + "\n")
        stream.flush()

    def _proxies(self) -> list[FaultProxy]:
        return [*self._client_side_proxies(), *self._controller_side_proxies()]

    def _client_side_proxies(self) -> list[FaultProxy]:
        return [*self._client_proxies.values(), *self._peer_proxies.values()]

    def _controller_side_proxies(self) -> list[FaultProxy]:
        return [*self._controller_proxies.values(), *self._peer_controller_proxies.values()]

    def _prepare(self, node: BrokerNode) -> None:
        node.settings["advertised.listeners"] = (
            f"PLAINTEXT://{self._client_proxies[node.name].address}"
        )
        if self.pass_peers:
            for peer_id, address in self.peer_addresses(node.name).items():
                node.settings[f"faultline.peer.{peer_id}"] = address
        if self.quorum:
            node.settings["listeners"] = (
                f"PLAINTEXT://{self.host}:0,CONTROLLER://{self.host}:0"
            )
            node.settings["controller.listener.names"] = "CONTROLLER"
            # The same voters string on every node (the controller proxies); each node dials
            # its peers' controller listeners through its own proxies, faultline.voter.<id>.
            node.settings["controller.quorum.voters"] = ",".join(
                f"{self._nodes[n].node_id}@{self._controller_proxies[n].address}"
                for n in self._voters
            )
            for (src, dst), proxy in self._peer_controller_proxies.items():
                if src == node.name and dst in self._voters:
                    node.settings[f"faultline.voter.{self._nodes[dst].node_id}"] = proxy.address

    async def _start(self, node: BrokerNode) -> None:
        assert self._nursery is not None
        upstream = await node.start(self._nursery, timeout_s=self.start_timeout_s)
        for proxy in self._client_side_proxies():
            if proxy.forward.dst == node.name:
                proxy.upstream = upstream
        for proxy in self._controller_side_proxies():
            if proxy.forward.dst == node.name:
                proxy.upstream = node.controller_address
        log.info("%s (pid %s) listens on %s:%s", node.name, node.pid, upstream.host, upstream.port)

    async def _stop_all(self) -> None:
        async with trio.open_nursery() as stopping:
            for node in self._nodes.values():
                if node.state is not NodeState.STOPPED:
                    stopping.start_soon(node.terminate)

    def _proxies_to(self, name: str) -> list[FaultProxy]:
        return [p for p in self._proxies() if p.forward.dst == name]

    # -- addresses -----------------------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        """bootstrap.servers for clients: every node's client proxy."""
        return ",".join(p.address for p in self._client_proxies.values())

    def client_address(self, node: str) -> str:
        """`host:port` of the proxy clients use to reach `node` (its advertised listener)."""
        return self._client_proxies[self._node(node).name].address

    def controller_address(self, node: str) -> str:
        """`host:port` of the proxy to `node`'s controller listener (its voter address);
        ClusterError unless the cluster runs a quorum."""
        proxy = self._controller_proxies.get(self._node(node).name)
        if proxy is None:
            raise ClusterError("only a quorum=True cluster has controller listeners")
        return proxy.address

    def peer_addresses(self, node: str) -> dict[int, str]:
        """{peer node id: proxy address} that `node` must dial to reach each peer."""
        self._node(node)
        return {
            self._nodes[dst].node_id: proxy.address
            for (src, dst), proxy in self._peer_proxies.items()
            if src == node
        }

    def broker(self, node: str) -> BrokerNode:
        """The node's process handle (pid, data dir, log path, state)."""
        return self._node(node)

    def link(self, src: str, dst: str) -> Link:
        """The directed link src -> dst."""
        try:
            return self._links[(src, dst)]
        except KeyError:
            raise ClusterError(
                f"no link {src} -> {dst}; endpoints are {[*self._nodes, CLIENTS]}"
            ) from None

    def _node(self, name: str) -> BrokerNode:
        try:
            return self._nodes[name]
        except KeyError:
            raise ClusterError(f"no node {name!r}; nodes are {list(self._nodes)}") from None

    # -- FaultTarget: network ------------------------------------------------------------

    @property
    def nodes(self) -> Sequence[str]:
        """Member broker node names: n1..nN, then brokers added, less those retired."""
        return list(self._members)

    @property
    def spares(self) -> Sequence[str]:
        """Spare nodes not started yet (`add_broker` starts one)."""
        return list(self._spares)

    @property
    def retired(self) -> Sequence[str]:
        """Nodes decommissioned for good."""
        return list(self._retired)

    @property
    def clients(self) -> Sequence[str]:
        """The one client endpoint: every client reaches brokers through the client proxies."""
        return [CLIENTS]

    async def block(self, src: str, dst: str) -> None:
        """Hold every byte sent from src to dst until unblocked."""
        self.link(src, dst).block()

    async def unblock(self, src: str, dst: str) -> None:
        """Let src -> dst flow again, delivering held bytes."""
        self.link(src, dst).unblock()

    async def heal_network(self) -> None:
        """Unblock every link and clear every link fault."""
        for link in self._links.values():
            link.set_fault(None)
            link.unblock()

    async def set_link_fault(self, src: str, dst: str, fault: LinkFault | None) -> None:
        """Degrade (or, with None, restore) the link src -> dst."""
        self.link(src, dst).set_fault(fault)

    async def reset_connections(self, node: str) -> None:
        """RST every proxied connection to or from `node`."""
        if node != CLIENTS:
            self._node(node)
        for proxy in self._proxies():
            if node in (proxy.forward.src, proxy.forward.dst):
                proxy.reset_connections()

    async def pause_client(self, client: str) -> None:
        """Freeze the client endpoint: hold every byte between it and the brokers."""
        for link in self._client_links(client):
            link.freeze(True)

    async def resume_client(self, client: str) -> None:
        """Release a paused client endpoint's links (a partition's cuts stay)."""
        for link in self._client_links(client):
            link.freeze(False)

    def _client_links(self, client: str) -> list[Link]:
        if client != CLIENTS:
            raise ClusterError(f"no client endpoint {client!r}; the one endpoint is {CLIENTS!r}")
        return [self.link(a, b) for node in self._nodes for a, b in ((client, node),
                                                                     (node, client))]

    # -- FaultTarget: processes ----------------------------------------------------------

    async def kill(self, node: str) -> None:
        """Crash the node; what it wrote to the OS (fsynced or not) survives."""
        broker = self._running_node(node, "kill")
        self._detach(node)
        if self.power_loss_enabled:
            code = await broker.crash_keeping_page_cache()
        else:
            code = await broker.kill()
        log.info("%s killed (exit %s)", node, code)

    async def power_loss(self, node: str) -> None:
        """Crash the node losing every write it did not fsync."""
        if not self.power_loss_enabled:
            raise ClusterError(
                "power_loss needs brokers that hold unsynced writes in memory: "
                "create the ProcessCluster with power_loss=True"
            )
        broker = self._running_node(node, "power_loss")
        self._detach(node)
        if self.torn_writes:
            seed_file = broker.data_dir / TORN_WRITE_FILE
            seed_file.write_text(f"{self._tear_rng.getrandbits(32)}\n")
            code = await broker.crash_keeping_page_cache()
            seed_file.unlink(missing_ok=True)  # should it have died before reading it
        else:
            code = await broker.kill()
        log.info("%s lost power (exit %s)", node, code)

    async def restart(self, node: str) -> None:
        """Start a stopped node again on its data dir, behind the same proxies.

        A node that is running (or paused) is left as it is, as Jepsen's `start!`.
        """
        broker = self._node(node)
        if broker.state is not NodeState.STOPPED or node not in self._members:
            return  # running, or a spare not added / a retired broker: nothing to bring back
        try:
            await self._start(broker)
        except BrokerStartError as exc:
            raise NodeWontStartError(f"{exc}: {_last_line(broker.log_path)}") from exc

    # -- FaultTarget: disks --------------------------------------------------------------

    def is_running(self, node: str) -> bool:
        """Whether the node's process runs (paused counts; halted or killed does not)."""
        return self._node(node).state is not NodeState.STOPPED

    def stored_files(self, node: str) -> dict[str, int]:
        """The broker's files under its data dir (path -> size), sorted; harness control
        files left out."""
        root = self._node(node).data_dir
        found = {
            path.relative_to(root).as_posix(): path.stat().st_size
            for path in root.rglob("*")
            if path.is_file() and path.name not in CONTROL_FILES
        }
        return dict(sorted(found.items()))

    async def damage_file(self, node: str, path: str, damage: FileDamage) -> None:
        """Flip a bit of, or truncate, a file of a stopped node, in place."""
        broker = self._node(node)
        if broker.state is not NodeState.STOPPED:
            raise ClusterError(f"{node} is running: damage its files only while it is down")
        target = broker.data_dir / path
        with open(target, "r+b") as f:
            if damage.flip_offset is not None:
                f.seek(damage.flip_offset)
                byte = f.read(1)[0]
                f.seek(damage.flip_offset)
                f.write(bytes([byte ^ (1 << damage.bit)]))
            if damage.truncate_to is not None:
                f.truncate(damage.truncate_to)
        log.info("%s: damaged %s (%s)", node, path, damage)

    async def set_disk_fault(self, node: str, fault: DiskFault | None) -> None:
        """Write the node's disk-fault control file and tell a running broker to read it."""
        broker = self._node(node)
        broker.data_dir.mkdir(parents=True, exist_ok=True)
        path = broker.data_dir / DISK_FAULT_FILE
        if fault is None or fault == DiskFault():
            path.unlink(missing_ok=True)
        else:
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"enospc_write": fault.enospc_write,
                                       "enospc_fsync": fault.enospc_fsync,
                                       "fsync_delay_ms": fault.fsync_delay_ms}))
            tmp.replace(path)
        if broker.state is not NodeState.STOPPED:
            broker.signal(signal.SIGUSR1)

    async def pause(self, node: str) -> None:
        """SIGSTOP the node: connections stay open, nothing is answered."""
        await self._running_node(node, "pause").pause()

    async def resume(self, node: str) -> None:
        """SIGCONT a paused node."""
        broker = self._node(node)
        if broker.state is NodeState.PAUSED:
            await broker.resume()

    def _running_node(self, node: str, action: str) -> BrokerNode:
        broker = self._node(node)
        if broker.state is NodeState.STOPPED:
            raise ClusterError(f"cannot {action} {node}: it is not running")
        return broker

    def _detach(self, node: str) -> None:
        # New connections to a dead node are reset at once, as a refused connection.
        for proxy in self._proxies_to(node):
            proxy.upstream = None

    # -- FaultTarget: clocks -------------------------------------------------------------

    async def bump_clock(self, node: str, delta_ms: int) -> None:
        """Shift the node's record-timestamp clock by delta_ms (cumulative)."""
        self._set_clock(node, self._clock_offsets[self._node(node).name] + delta_ms)

    async def reset_clock(self, node: str) -> None:
        """Put the node's clock back in step."""
        self._set_clock(node, 0)

    def _set_clock(self, node: str, offset_ms: int) -> None:
        broker = self._node(node)
        self._clock_offsets[node] = offset_ms
        broker.data_dir.mkdir(parents=True, exist_ok=True)
        path = broker.data_dir / CLOCK_OFFSET_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(f"{offset_ms}\n")
        tmp.replace(path)  # the broker never reads a half-written number
        if broker.state is not NodeState.STOPPED:
            # A paused broker acts on it when resumed; a stopped one reads it at start.
            broker.signal(signal.SIGUSR1)

    # -- FaultTarget: topology -----------------------------------------------------------

    def leader_of(self, topic: str, partition: int) -> str | None:
        """The node the running brokers last named leader of the partition in the newest
        leader epoch (asked every `observer.WATCH_INTERVAL_S`); None if none was named or
        the nodes do not form one cluster."""
        leader = self._beliefs.leaders.get((topic, partition))
        return None if leader is None else leader.node

    def controller(self) -> str | None:
        """The active controller most running brokers last named; None if none was."""
        return self._beliefs.controller

    def isr_of(self, topic: str, partition: int) -> Sequence[str]:
        """The ISR reported with the newest leader of the partition (see `leader_of`)."""
        leader = self._beliefs.leaders.get((topic, partition))
        return [] if leader is None else list(leader.isr)

    def coordinator_of(self, group: str) -> str | None:
        """The believed leader of the group's `__consumer_offsets` partition (what
        FindCoordinator answers); None until that topic exists."""
        count = int(str(self._base_settings.get("offsets.topic.num.partitions", 50)))
        return self.leader_of(OFFSETS_TOPIC, partition_for(group, count))

    # -- membership ----------------------------------------------------------------------

    def _admin_address(self) -> admin.Address:
        for name in self._members:
            node = self._nodes[name]
            if node.state is NodeState.RUNNING and node.address is not None:
                return admin.Address(node.address.host, node.address.port, node.node_id)
        raise MembershipError("no member broker is running to send the request to")

    async def add_broker(self, node: str, *, timeout_s: float = 30.0) -> None:
        """Start spare `node` as a new broker (an observer of the quorum); returns once
        Metadata lists it (unfenced); MembershipError after `timeout_s`."""
        if node not in self._spares:
            raise MembershipError(
                f"{node!r} is not a spare node; spares: {', '.join(self._spares) or 'none'}"
            )
        broker = self._nodes[node]
        self._prepare(broker)
        await self._start(broker)
        self._spares.remove(node)
        self._members.append(node)
        with trio.move_on_after(timeout_s):
            while broker.node_id not in await self._live_brokers():
                await trio.sleep(0.2)
            return
        raise MembershipError(f"{node} started but was not unfenced within {timeout_s:.0f} s")

    async def _live_brokers(self) -> set[int]:
        try:
            return await admin.live_brokers(self._admin_address())
        except (OSError, trio.BrokenResourceError, MembershipError):
            return set()

    async def reassign(self, topic: str, partition: int, replicas: Sequence[str]) -> None:
        """AlterPartitionReassignments of one partition to `replicas` (node names); returns
        once the controller committed its start."""
        target = tuple(broker_id(r) for r in replicas)
        try:
            await admin.reassign(self._admin_address(), topic, partition, target)
        except admin.AdminError as exc:
            raise MembershipError(str(exc)) from None

    async def decommission(self, node: str, *, timeout_s: float = 60.0) -> None:
        """Move every replica off broker `node`, then stop it for good and unregister it.

        Only a broker outside the quorum can go. Raises MembershipError, leaving it a
        member, if its replicas did not move off within `timeout_s`.
        """
        if node not in self._members:
            raise MembershipError(f"{node!r} is not a member broker")
        if node in self._voters:
            raise MembershipError(f"{node} is a controller voter; the quorum stays fixed")
        leaving = self._nodes[node].node_id
        members = [broker_id(m) for m in self._members]
        for move in moves_off(leaving, await admin.targets(self._admin_address()), members):
            await self.reassign(move.topic, move.partition, [f"n{r}" for r in move.replicas])
        still: list[tuple[str, int]] = []
        with trio.move_on_after(timeout_s):
            while True:
                hosted = await admin.replicas(self._admin_address())
                still = sorted(k for k, r in hosted.items() if leaving in r)
                if not still:
                    break
                await trio.sleep(0.2)
        if still:
            raise MembershipError(
                f"{node} still hosts {len(still)} partition(s) after {timeout_s:.0f} s "
                f"(e.g. {still[0][0]}-{still[0][1]}); not decommissioned"
            )
        await self._nodes[node].terminate()
        self._detach(node)
        self._members.remove(node)
        self._retired.append(node)
        try:
            await admin.unregister(self._admin_address(), leaving)
        except admin.AdminError as exc:
            raise MembershipError(str(exc)) from None

    def txn_coordinator_of(self, transactional_id: str) -> str | None:
        """The believed leader of the id's `__transaction_state` partition (what
        FindCoordinator with key type 1 answers); None until that topic exists."""
        count = int(str(self._base_settings.get("transaction.state.log.num.partitions", 50)))
        return self.leader_of(TXN_STATE_TOPIC, partition_for(transactional_id, count))

def _last_line(path: Path) -> str:
    """The last line a broker wrote (why it exited), or a note that there is none."""
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        lines = []
    return lines[-1] if lines else "(its log is empty)"
