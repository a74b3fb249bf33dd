"""`SimCluster`: N reference brokers in one trio run, implementing `nemesis.target.FaultTarget`.

Each node n1..nN runs `serve_broker` in its own cancel scope with a `NodeEnv` built
from the simulation: its incarnation of the network, its view of its `SimDisk`, its
skewable clock and an rng derived from the run's seed.

- kill: the incarnation's storage and network die first (so its cancelled tasks'
  `finally` blocks cannot flush, fsync or say goodbye — a crash is not a shutdown),
  the disk keeps every write (the page cache outlives a process), then the scope is
  cancelled and the cluster waits for the node's task to end.
- power_loss: the same, but the disk keeps only what was fsynced (optionally tearing
  the last write).
- restart: a new incarnation on the same disk; returns once the broker serves.
- pause/resume: the node's host gate (see `network.SimHost`); `pause_client` and
  `resume_client` work the same gate of a client endpoint's host, so a paused client's
  sends, connects and receives wait as a SIGSTOPped process's would.

With `quorum=True` the nodes form one Kafka cluster: every node is a
broker and a voter of the KRaft controller quorum (`controller.quorum.voters`), with
a client listener `PLAINTEXT://nK:9092` and a controller listener `CONTROLLER://nK:9093`
(the voters' addresses; the quorum and broker-to-controller APIs travel only there), topics
are replicated and `leader_of`/`controller` report what the live nodes believe. With
`quorum=False` each node is an independent single-node broker; `topic_homes` records
which node a workload put each topic on, and that is what `leader_of` reports.

With `spare_nodes` (quorum only) the cluster also configures nodes it does not start:
`add_broker` starts one as a broker outside the quorum, `reassign` moves a partition's
replicas, `decommission` moves every replica off a broker and retires it for good (see
`harness.runtime.membership`). `nodes` lists the members only: started, not retired.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import cast

import trio

from nemesis.target import DiskFault, FileDamage, LinkFault, NodeWontStartError
from reference_broker.broker import Broker
from reference_broker.config import BrokerConfig
from reference_broker.controller.service import OngoingReassignment
from reference_broker.env import NodeEnv
from reference_broker.group.offsets_store import OFFSETS_TOPIC, partition_for
from reference_broker.log_dir_failure import LogDirFailedError
from reference_broker.server import RunningBroker, serve_broker
from reference_broker.txn.config import TXN_STATE_TOPIC, TxnConfig

from ..membership import MembershipError, broker_id, moves_off, spare_names
from .clock import DEFAULT_EPOCH_MS, SimClock
from .disk import SimDisk, SimStorage
from .network import HostNetwork, SimHost, SimNetwork
from .node_logs import CURRENT_NODE
from .scheduler import derive_rng

BROKER_PORT = 9092
CONTROLLER_PORT = 9093


class SimClusterError(Exception):
    """A fault primitive was asked for something impossible (unknown node, ...)."""


@dataclass
class SimNode:
    """One broker node: its durable disk and clock, and its current incarnation."""

    name: str
    node_id: int
    config: BrokerConfig
    disk: SimDisk = field(default_factory=SimDisk)
    clock: SimClock = field(default_factory=SimClock)
    incarnation: int = 0
    storage: SimStorage | None = None
    network: HostNetwork | None = None
    running: RunningBroker | None = None
    scope: trio.CancelScope | None = None
    stopped: trio.Event | None = None

    @property
    def up(self) -> bool:
        """Whether an incarnation is alive (it may be paused)."""
        return self.storage is not None and self.storage.alive

    @property
    def address(self) -> str:
        """host:port clients bootstrap to."""
        return f"{self.name}:{BROKER_PORT}"


class _NotingStarted:
    """A task status that remembers whether the task reported itself started."""

    def __init__(self, inner: trio.TaskStatus[RunningBroker]) -> None:
        self.inner = inner
        self.done = False

    def started(self, value: RunningBroker) -> None:
        self.done = True
        self.inner.started(value)


class SimCluster:
    """Brokers n1..nN on a `SimNetwork`, started in `nursery`; the sim's FaultTarget."""

    def __init__(
        self,
        nursery: trio.Nursery,
        network: SimNetwork,
        *,
        seed: int,
        nodes: int = 3,
        broker_settings: Mapping[str, object] | None = None,
        fsync_latency_ms: float = 0.5,
        tear_on_power_loss: bool = False,
        epoch_ms: int = DEFAULT_EPOCH_MS,
        quorum: bool = False,
        spare_nodes: int = 0,
    ) -> None:
        if nodes < 1:
            raise SimClusterError(f"a cluster needs at least one node, not {nodes}")
        if spare_nodes and not quorum:
            raise SimClusterError("spare nodes need a KRaft cluster (quorum=True)")
        self._nursery = nursery
        self.network = network
        self.seed = seed
        self.fsync_latency_s = fsync_latency_ms / 1000
        self.tear_on_power_loss = tear_on_power_loss
        self.epoch_ms = epoch_ms
        self._tear_rng = derive_rng(seed, "torn-writes")
        self.quorum = quorum
        self._nodes: dict[str, SimNode] = {}
        voters = ",".join(f"{i}@n{i}:{CONTROLLER_PORT}" for i in range(1, nodes + 1))
        self._members = [f"n{i}" for i in range(1, nodes + 1)]
        self._spares = spare_names(nodes, spare_nodes)
        self._retired: list[str] = []
        for node_id in range(1, nodes + spare_nodes + 1):
            name = f"n{node_id}"
            listener = f"PLAINTEXT://{name}:{BROKER_PORT}"
            props = {
                **(broker_settings or {}),
                "node.id": node_id,
                "listeners": listener,
                "advertised.listeners": listener,
            }
            if quorum:
                props["listeners"] = f"{listener},CONTROLLER://{name}:{CONTROLLER_PORT}"
                props["controller.listener.names"] = "CONTROLLER"
                props["controller.quorum.voters"] = voters
            self._nodes[name] = SimNode(
                name, node_id, BrokerConfig.from_properties(props), clock=SimClock(epoch_ms)
            )
            network.add_host(name)
        self._clients: dict[str, HostNetwork] = {}
        self._client_clocks: dict[str, SimClock] = {}
        self.topic_homes: dict[str, str] = {}
        # Called with (node, disk) just before a power cut takes the disk's unsynced
        # writes (the run's cluster timeline records what was lost).
        self.power_loss_observers: list[Callable[[str, SimDisk], None]] = []

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Start every member node (not the spares); returns once all of them serve."""
        for name in self._members:
            await self._start_node(self._nodes[name])

    def node(self, name: str) -> SimNode:
        """The node called `name`; SimClusterError if there is none."""
        try:
            return self._nodes[name]
        except KeyError:
            raise SimClusterError(
                f"no node {name!r} in this cluster; nodes are {', '.join(self._nodes)}"
            ) from None

    def client_network(self, name: str) -> HostNetwork:
        """The network a client endpoint called `name` dials through (one per name)."""
        if name in self._nodes:
            raise SimClusterError(f"{name!r} is a broker's name; pick another client name")
        view = self._clients.get(name)
        if view is None:
            view = self._clients[name] = self.network.incarnate(name)
            self._client_clocks[name] = SimClock(self.epoch_ms)
        return view

    def client_clock(self, name: str) -> SimClock:
        """The wall clock of client `name` (for record timestamps)."""
        self.client_network(name)
        return self._client_clocks[name]

    def client_rng(self, name: str, *labels: str) -> random.Random:
        """A seeded rng for a client, independent of every other stream of randomness."""
        return derive_rng(self.seed, "client", name, *labels)

    async def _start_node(self, node: SimNode) -> None:
        node.incarnation += 1
        node.storage = SimStorage(
            node.disk,
            fsync_latency_s=self.fsync_latency_s,
            gate=self.network.add_host(node.name).gate,
        )
        node.network = self.network.incarnate(node.name)
        try:
            node.running = await self._nursery.start(self._run_node, node)
        except Exception as exc:
            # It exited before serving (a broker refusing its damaged data, or halting on
            # a failed disk): it stays down, as a process that exited would.
            self._end_incarnation(node)
            raise NodeWontStartError(f"{node.name} did not start: {exc}") from exc

    def _end_incarnation(self, node: SimNode) -> None:
        """An incarnation that exited by itself: its page cache survives, as on exit."""
        if node.storage is not None and node.storage.alive:
            node.storage.crash()
            self.network.crash(node.name)
            node.disk.survive_kill()
        node.running = None

    async def _run_node(
        self,
        node: SimNode,
        *,
        task_status: trio.TaskStatus[RunningBroker] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        storage, network = node.storage, node.network
        assert storage is not None and network is not None
        env = NodeEnv(
            network=network,
            storage=storage,
            clock=node.clock,
            rng=derive_rng(self.seed, "node", node.name, str(node.incarnation)),
        )
        stopped = node.stopped = trio.Event()
        # Every task the broker spawns inherits this, so its log records find its file.
        CURRENT_NODE.set(node.name)
        try:
            with trio.CancelScope() as scope:
                node.scope = scope
                status = _NotingStarted(task_status)
                try:
                    await serve_broker(
                        env, node.config, task_status=cast(trio.TaskStatus[RunningBroker], status)
                    )
                except LogDirFailedError:
                    # The broker halted on a failed disk (it logged why): the process is
                    # gone, the node is down until something restarts it.
                    if node.storage is storage:
                        self._end_incarnation(node)
                    if not status.done:
                        raise  # to `_start_node`, which says the node did not start
                except BaseException:
                    if storage.alive:
                        raise
                    # What a crashed incarnation raised while dying (its disk and
                    # sockets vanished under it) is not an error of the run.
        finally:
            stopped.set()

    async def _crash(self, name: str, *, power_loss: bool) -> None:
        node = self.node(name)
        if not node.up:
            return
        assert node.storage is not None and node.scope is not None and node.stopped is not None
        # No checkpoint from here to the end of the crash: the cancellation reaches the
        # node's blocked tasks before the vanishing sockets could wake them with errors.
        node.storage.crash()
        node.scope.cancel()
        self.network.crash(name)
        if power_loss:
            for observe in self.power_loss_observers:
                observe(name, node.disk)
            node.disk.survive_power_loss(self._tear_rng if self.tear_on_power_loss else None)
        else:
            node.disk.survive_kill()
        # SIGKILL ends a stopped process too; its gate must not hold the dying tasks.
        self.network.hosts[name].resume()
        node.running = None
        # A crash is instant, as SIGKILL is: this does not wait for the dying incarnation
        # to unwind. A shielded wait in it (a group commit waiting for replication) would
        # otherwise hold the nemesis for seconds; cut off from its disk and sockets, the
        # rest of it can no longer touch anything.
        await trio.lowlevel.checkpoint()

    # -- FaultTarget -----------------------------------------------------------------------

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
        """Client endpoint names created so far (see `client_network`)."""
        return list(self._clients)

    def _check_endpoint(self, name: str) -> None:
        if name not in self._nodes and name not in self._clients:
            raise SimClusterError(
                f"unknown endpoint {name!r}; nodes: {', '.join(self._nodes)}; "
                f"clients: {', '.join(self._clients) or 'none yet'}"
            )

    async def block(self, src: str, dst: str) -> None:
        """Hold every byte from src to dst until unblocked."""
        self._check_endpoint(src)
        self._check_endpoint(dst)
        self.network.block(src, dst)
        await trio.lowlevel.checkpoint()

    async def unblock(self, src: str, dst: str) -> None:
        """Let src -> dst flow again, delivering held bytes."""
        self._check_endpoint(src)
        self._check_endpoint(dst)
        self.network.unblock(src, dst)
        await trio.lowlevel.checkpoint()

    async def heal_network(self) -> None:
        """Unblock every link and clear every link fault."""
        self.network.heal()
        await trio.lowlevel.checkpoint()

    async def set_link_fault(self, src: str, dst: str, fault: LinkFault | None) -> None:
        """Degrade (or, with None, restore) the link src -> dst."""
        self._check_endpoint(src)
        self._check_endpoint(dst)
        self.network.set_fault(src, dst, fault)
        await trio.lowlevel.checkpoint()

    async def reset_connections(self, node: str) -> None:
        """RST every open connection to or from node."""
        self._check_endpoint(node)
        self.network.reset(node)
        await trio.lowlevel.checkpoint()

    async def kill(self, node: str) -> None:
        """Crash the node at once; every write survives (the page cache outlives it)."""
        await self._crash(node, power_loss=False)

    async def restart(self, node: str) -> None:
        """Start a crashed node again on its disk; returns once it serves (no-op if up)."""
        target = self.node(node)
        if node not in self._members:
            return  # a spare not added yet, or a retired broker: nothing to bring back
        if not target.up:
            await self._start_node(target)

    async def pause(self, node: str) -> None:
        """Freeze the node: its network calls and fsyncs wait until resume."""
        self.network.hosts[self.node(node).name].pause()
        await trio.lowlevel.checkpoint()

    async def resume(self, node: str) -> None:
        """Unfreeze a paused node."""
        self.network.hosts[self.node(node).name].resume()
        await trio.lowlevel.checkpoint()

    async def power_loss(self, node: str) -> None:
        """Crash the node losing every write not fsynced; `restart` brings it back."""
        await self._crash(node, power_loss=True)

    async def pause_client(self, client: str) -> None:
        """Freeze a client endpoint: its network calls wait until `resume_client`."""
        self._client_host(client).pause()
        await trio.lowlevel.checkpoint()

    async def resume_client(self, client: str) -> None:
        """Unfreeze a paused client endpoint."""
        self._client_host(client).resume()
        await trio.lowlevel.checkpoint()

    def _client_host(self, client: str) -> SimHost:
        if client not in self._clients:
            raise SimClusterError(
                f"unknown client endpoint {client!r}; clients: "
                f"{', '.join(self._clients) or 'none yet'}"
            )
        return self.network.hosts[client]

    async def bump_clock(self, node: str, delta_ms: int) -> None:
        """Shift the node's wall clock by delta_ms from now on."""
        self.node(node).clock.bump(delta_ms)
        await trio.lowlevel.checkpoint()

    async def reset_clock(self, node: str) -> None:
        """Put the node's wall clock back in step."""
        self.node(node).clock.reset()
        await trio.lowlevel.checkpoint()

    def is_running(self, node: str) -> bool:
        """Whether the node has a live incarnation."""
        return self.node(node).up

    def stored_files(self, node: str) -> dict[str, int]:
        """The node's files (path -> size as the node sees it), sorted by path."""
        disk = self.node(node).disk
        return {path: len(disk.files[path].content) for path in sorted(disk.files)}

    async def damage_file(self, node: str, path: str, damage: FileDamage) -> None:
        """Flip a bit of, or truncate, a file of a node that is down."""
        target = self.node(node)
        if target.up:
            raise SimClusterError(f"{node} is running: damage its files only while it is down")
        if damage.flip_offset is not None:
            target.disk.flip_bit(path, damage.flip_offset, damage.bit)
        if damage.truncate_to is not None:
            target.disk.cut(path, damage.truncate_to)
        await trio.lowlevel.checkpoint()

    async def set_disk_fault(self, node: str, fault: DiskFault | None) -> None:
        """Make the node's disk fail (ENOSPC, slow fsync) until cleared with None."""
        disk = self.node(node).disk
        fault = fault or DiskFault()
        disk.enospc_write = fault.enospc_write
        disk.enospc_fsync = fault.enospc_fsync
        disk.fsync_stall_s = fault.fsync_delay_ms / 1000
        await trio.lowlevel.checkpoint()

    @property
    def bootstrap(self) -> str:
        """Every node's address, comma-separated (bootstrap.servers)."""
        return ",".join(node.address for node in self._nodes.values())

    def _live_brokers(self) -> list[tuple[SimNode, Broker]]:
        return [
            (node, node.running.broker)
            for node in self._nodes.values()
            if node.up and node.running is not None
        ]

    def leader_of(self, topic: str, partition: int) -> str | None:
        """The live node that leads the partition in the newest leader epoch, if any.

        Without a quorum: the node hosting the topic (every partition lives there).
        """
        if not self.quorum:
            return self.topic_homes.get(topic)
        best: tuple[int, str] | None = None
        for node, broker in self._live_brokers():
            p = broker.partitions.get((topic, partition))
            if p is not None and p.is_leader and (best is None or p.leader_epoch > best[0]):
                best = (p.leader_epoch, node.name)
        return None if best is None else best[1]

    def controller(self) -> str | None:
        """The live node leading the controller quorum in the newest epoch, if any."""
        best: tuple[int, str] | None = None
        for node, broker in self._live_brokers():
            service = broker.controller_service
            if service is None or not service.is_active:
                continue
            epoch = service.driver.node.epoch
            if best is None or epoch > best[0]:
                best = (epoch, node.name)
        return None if best is None else best[1]

    def isr_of(self, topic: str, partition: int) -> Sequence[str]:
        """The ISR the partition's current leader (see `leader_of`) holds, in node order.

        Without a quorum: the hosting node alone (nothing is replicated)."""
        if not self.quorum:
            home = self.topic_homes.get(topic)
            return [home] if home is not None else []
        leader = self.leader_of(topic, partition)
        if leader is None:
            return []
        running = self.node(leader).running
        p = running.broker.partitions.get((topic, partition)) if running is not None else None
        if p is None:
            return []
        by_id = {node.node_id: name for name, node in self._nodes.items()}
        return [by_id[i] for i in sorted(p.isr) if i in by_id]

    def coordinator_of(self, group: str) -> str | None:
        """The leader of the group's `__consumer_offsets` partition, as FindCoordinator
        answers; None without a quorum (each node then coordinates its own groups)."""
        if not self.quorum:
            return None
        partitions = next(iter(self._nodes.values())).config.offsets_topic_num_partitions
        return self.leader_of(OFFSETS_TOPIC, partition_for(group, partitions))

    # -- membership --------------------------------------------------------------------

    def _member_broker(self) -> Broker:
        """A live member's broker, to send admin requests through (the first one up)."""
        for name in self._members:
            node = self._nodes[name]
            if node.up and node.running is not None:
                return node.running.broker
        raise MembershipError("no member broker is up to send the request to")

    async def add_broker(self, node: str, *, timeout_s: float = 30.0) -> None:
        """Start spare `node` as a new broker (an observer of the quorum); returns once the
        controller has unfenced it (MembershipError after `timeout_s`). It registers on
        its own and holds no replica until a reassignment places one on it."""
        if node not in self._spares:
            raise MembershipError(
                f"{node!r} is not a spare node; spares: {', '.join(self._spares) or 'none'}"
            )
        await self._start_node(self._nodes[node])
        self._spares.remove(node)
        self._members.append(node)
        new_id = self._nodes[node].node_id
        with trio.move_on_after(timeout_s):
            while not self._registered_live(new_id):
                await trio.sleep(0.1)
        if not self._registered_live(new_id):
            raise MembershipError(f"{node} started but was not unfenced within {timeout_s:.0f} s")

    def _registered_live(self, broker: int) -> bool:
        view = self._member_broker().cluster
        return view is not None and view.image.is_live(broker)

    async def reassign(self, topic: str, partition: int, replicas: Sequence[str]) -> None:
        """AlterPartitionReassignments of one partition to `replicas` (node names), sent
        through a live member as a client's request would be forwarded; returns once the
        controller committed its start (completion follows as replicas catch up)."""
        client = self._member_broker().controller_client
        if client is None:
            raise MembershipError("the cluster has no controller quorum")
        target = tuple(broker_id(r) for r in replicas)
        result = await client.alter_reassignment(topic, partition, target)
        if result.error_code != 0:
            raise MembershipError(
                f"reassigning {topic}-{partition} to {list(replicas)} failed with error "
                f"{result.error_code}: {result.message}"
            )

    async def list_reassignments(self) -> list[OngoingReassignment]:
        """The ongoing reassignments, as ListPartitionReassignments answers."""
        client = self._member_broker().controller_client
        if client is None:
            raise MembershipError("the cluster has no controller quorum")
        found = await client.list_reassignments()
        if isinstance(found, int):
            raise MembershipError(f"listing reassignments failed with error {found}")
        return found

    def _hosted(self, *, target: bool = False) -> dict[tuple[str, int], tuple[int, ...]]:
        """Every partition's replicas in the image of a live member (with `target`, those
        it keeps once its ongoing reassignment completes)."""
        service = self._member_broker().controller_service
        assert service is not None
        image = service.image
        return {
            (image.topic_names[topic_id], index): (
                state.replica_sets.target if target else state.replicas
            )
            for (topic_id, index), state in image.partitions.items()
            if topic_id in image.topic_names
        }

    async def decommission(self, node: str, *, timeout_s: float = 60.0) -> None:
        """Move every replica off broker `node`, then stop it for good and unregister it.

        Only a broker outside the quorum can go (the voters stay fixed). Raises
        MembershipError, leaving it a member, if its replicas did not move off within
        `timeout_s` (a fault may hold a reassignment back; the reassignments stay).
        """
        if node not in self._members:
            raise MembershipError(f"{node!r} is not a member broker")
        leaving = self.node(node)
        if leaving.config.is_voter:
            raise MembershipError(f"{node} is a controller voter; the quorum stays fixed")
        members = [broker_id(m) for m in self._members]
        for move in moves_off(leaving.node_id, self._hosted(target=True), members):
            await self.reassign(move.topic, move.partition, [f"n{r}" for r in move.replicas])
        with trio.move_on_after(timeout_s):
            while any(leaving.node_id in r for r in self._hosted().values()):
                await trio.sleep(0.1)
        still = sorted(k for k, r in self._hosted().items() if leaving.node_id in r)
        if still:
            raise MembershipError(
                f"{node} still hosts {len(still)} partition(s) after {timeout_s:.0f} s "
                f"(e.g. {still[0][0]}-{still[0][1]}); not decommissioned"
            )
        await self._crash(node, power_loss=False)
        self._members.remove(node)
        self._retired.append(node)
        client = self._member_broker().controller_client
        assert client is not None
        result = await client.unregister_broker(leaving.node_id)
        if result.error_code != 0:
            raise MembershipError(
                f"UnregisterBroker {leaving.node_id} failed with error {result.error_code}: "
                f"{result.message}"
            )

    def txn_coordinator_of(self, transactional_id: str) -> str | None:
        """The leader of the id's `__transaction_state` partition, as FindCoordinator
        (key type 1) answers; None without a quorum (each node then coordinates the ids
        its clients bring it)."""
        if not self.quorum:
            return None
        config = TxnConfig.from_properties(next(iter(self._nodes.values())).config.properties)
        return self.leader_of(TXN_STATE_TOPIC, partition_for(transactional_id,
                                                             config.num_partitions))
