"""The controller quorum end to end: three nodes on the simulated network, each with its
own simulated disk, a `QuorumDriver` over the durable log and quorum-state store, a
`ControllerService`, a `ControllerClient` and a `BrokerLifecycle`, talking Kafka's
protocol (Vote, BeginQuorumEpoch, EndQuorumEpoch, Fetch, BrokerRegistration,
BrokerHeartbeat, AlterPartition) through the real Raft transport and handlers.

Time is trio's MockClock with autojump, so simulated minutes cost a moment.
"""

from __future__ import annotations

import functools
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import cast

import pytest
import trio
import trio.testing

from harness.runtime.sim.clock import SimClock
from harness.runtime.sim.disk import SimDisk, SimStorage
from harness.runtime.sim.errors import NodeCrashedError
from harness.runtime.sim.network import HostNetwork, SimNetwork
from harness.runtime.sim.scheduler import seeded_scheduler
from reference_broker.broker import Broker
from reference_broker.config import BrokerConfig, Listener
from reference_broker.controller.client import ControllerClient
from reference_broker.controller.lifecycle import BrokerLifecycle
from reference_broker.controller.metadata_log import DurableRaftLog
from reference_broker.controller.quorum import QuorumDriver, cluster_id_for
from reference_broker.controller.quorum_store import DurableQuorumStore
from reference_broker.controller.raft import FetchRequest, FetchResponse, LeaderChange, RaftConfig
from reference_broker.controller.records import NO_LEADER, RemoveTopicRecord
from reference_broker.controller.service import ControllerService, ServiceConfig
from reference_broker.controller.transport import RaftTransport
from reference_broker.errors import ErrorCode
from reference_broker.handlers import CONTROLLER_HANDLERS
from reference_broker.handlers.context import RequestContext
from reference_broker.log.config import LogConfig
from reference_broker.log.log_manager import LogManager
from reference_broker.protocol import FrameDecoder, decode_request, encode_response, receive_frame

PORT = 9092
VOTERS = (1, 2, 3)
RAFT = RaftConfig(
    election_timeout_ms=1000,
    fetch_timeout_ms=2000,
    election_backoff_max_ms=1000,
    request_timeout_ms=2000,
)
SERVICE = ServiceConfig(
    session_timeout_ms=3000,
    auto_leader_rebalance=True,
    leader_imbalance_check_interval_ms=5000,
    request_timeout_ms=2000,
)
HEARTBEAT_MS = 500

# What a combined-mode node serves to its peers: its controller listener's table.
HANDLERS = CONTROLLER_HANDLERS


async def serve(broker: Broker, stream: trio.abc.Stream) -> None:
    """One connection, one request at a time, as `reference_broker.server` serves it."""
    decoder = FrameDecoder(100 * 2**20)
    async with stream:
        try:
            while (frame := await receive_frame(stream, decoder)) is not None:
                request = decode_request(frame)
                ctx = RequestContext(request.header, "")
                response = await HANDLERS[request.spec.key](broker, ctx, request.body)
                await stream.send_all(encode_response(request.header, response))
        except (trio.BrokenResourceError, trio.ClosedResourceError, NodeCrashedError):
            return


def address_of(node_id: int) -> Listener:
    return Listener(f"n{node_id}", PORT)


@dataclass
class Node:
    """One combined broker+controller node: its disk outlives its incarnations."""

    node_id: int
    fabric: SimNetwork
    disk: SimDisk = field(default_factory=SimDisk)
    incarnation: int = 0
    storage: SimStorage | None = None
    network: HostNetwork | None = None
    scope: trio.CancelScope | None = None
    stopped: trio.Event | None = None
    service: ControllerService | None = None
    client: ControllerClient | None = None
    lifecycle: BrokerLifecycle | None = None
    heartbeats: bool = True
    heartbeat_scope: trio.CancelScope | None = None

    @property
    def name(self) -> str:
        return f"n{self.node_id}"

    @property
    def up(self) -> bool:
        return self.storage is not None and self.storage.alive

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.incarnation += 1
        self.stopped = trio.Event()
        storage = self.storage = SimStorage(self.disk)
        network = self.network = self.fabric.incarnate(self.name)
        rng = random.Random(f"{self.node_id}/{self.incarnation}")
        cluster_id = cluster_id_for(VOTERS)
        try:
            with trio.CancelScope() as self.scope:
                logs = LogManager.open(storage, SimClock(), LogConfig())
                log = DurableRaftLog.open(logs)
                store = DurableQuorumStore.open(storage, VOTERS, cluster_id=cluster_id)
                transport = RaftTransport(
                    network, self.node_id, cluster_id, address_of, RAFT.request_timeout_ms / 1000
                )
                driver = QuorumDriver(self.node_id, VOTERS, log, store, transport, rng, RAFT)
                service = self.service = ControllerService(driver, SERVICE, rng)
                client = self.client = ControllerClient(
                    self.node_id,
                    network,
                    VOTERS,
                    address_of,
                    service=service,
                    cluster_id=cluster_id,
                    request_timeout_ms=RAFT.request_timeout_ms,
                    rng=rng,
                )
                lifecycle = self.lifecycle = BrokerLifecycle(
                    client,
                    host=self.name,
                    port=PORT,
                    heartbeat_interval_ms=HEARTBEAT_MS,
                    metadata_offset=lambda: service.image_version,
                    rng=rng,
                )
                # The handlers served here read only these attributes of a Broker.
                broker = cast(
                    Broker,
                    SimpleNamespace(
                        quorum_endpoint=driver, controller_service=service, config=BrokerConfig()
                    ),
                )
                (listener,) = await network.listen(self.name, PORT)
                async with trio.open_nursery() as nursery:
                    await nursery.start(
                        functools.partial(
                            trio.serve_listeners,
                            functools.partial(serve, broker),
                            [listener],
                            handler_nursery=nursery,
                        )
                    )
                    await nursery.start(service.run)
                    if self.heartbeats:
                        await nursery.start(self._heartbeat, lifecycle)
                    task_status.started()
        except BaseException:
            if storage.alive:
                raise
        finally:
            self.stopped.set()

    async def _heartbeat(
        self, lifecycle: BrokerLifecycle, *, task_status: trio.TaskStatus[None]
    ) -> None:
        with trio.CancelScope() as self.heartbeat_scope:
            await lifecycle.run(task_status=task_status)

    def stop_heartbeats(self) -> None:
        """The broker goes silent; its Raft member keeps running."""
        assert self.heartbeat_scope is not None
        self.heartbeat_scope.cancel()

    async def power_loss(self) -> None:
        """Crash the node, keeping only what it fsynced (SimCluster's order of events)."""
        assert self.storage is not None and self.scope is not None and self.stopped is not None
        self.storage.crash()
        self.scope.cancel()
        self.fabric.crash(self.name)
        self.disk.survive_power_loss()
        await self.stopped.wait()


@dataclass
class Cluster:
    nursery: trio.Nursery
    fabric: SimNetwork
    nodes: dict[int, Node]

    async def start(self, node_id: int) -> None:
        await self.nursery.start(self.nodes[node_id].run)

    def up(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.up]

    def active(self) -> Node | None:
        actives = [n for n in self.up() if n.service is not None and n.service.is_active]
        assert len(actives) <= 1, f"two active controllers: {[n.name for n in actives]}"
        return actives[0] if actives else None

    async def wait_for(self, what: str, predicate: Callable[[], bool], timeout_s: float) -> None:
        with trio.move_on_after(timeout_s):
            while not predicate():
                await trio.sleep(0.05)
            return
        raise AssertionError(f"not within {timeout_s}s of simulated time: {what}")

    async def wait_active(self, timeout_s: float = 30) -> Node:
        await self.wait_for("an active controller", lambda: self.active() is not None, timeout_s)
        active = self.active()
        assert active is not None
        return active


def start_cluster(nursery: trio.Nursery, seed: int) -> Cluster:
    fabric = SimNetwork(random.Random(seed))
    return Cluster(nursery, fabric, {i: Node(i, fabric) for i in VOTERS})


def image_of(node: Node) -> tuple[object, ...]:
    assert node.service is not None
    image = node.service.image
    return (
        sorted(image.brokers.items()),
        sorted(image.topics.items()),
        sorted(image.partitions.items()),
        sorted(image.topic_configs.items()),
    )


def committed_log(node: Node) -> list[tuple[int, int, object]]:
    assert node.service is not None
    driver = node.service.driver
    return [(e.offset, e.epoch, e.payload) for e in driver.log.read(0, driver.applied_offset)]


async def start_all(cluster: Cluster) -> None:
    for node_id in VOTERS:
        await cluster.start(node_id)


async def all_unfenced(cluster: Cluster, timeout_s: float = 30) -> None:
    def done() -> bool:
        active = cluster.active()
        if active is None or active.service is None:
            return False
        brokers = active.service.image.brokers
        return all(b in brokers and not brokers[b].fenced for b in VOTERS)

    await cluster.wait_for("every broker registered and unfenced", done, timeout_s)


async def test_a_leader_is_elected_and_its_leader_change_commits_everywhere(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        cluster = start_cluster(nursery, seed=1)
        await start_all(cluster)
        active = await cluster.wait_active()
        assert active.service is not None
        epoch = active.service.driver.epoch
        leader_change = LeaderChange(active.node_id, VOTERS)
        for node in cluster.up():

            def applied(node: Node = node) -> bool:
                return any(p == leader_change and e == epoch for _, e, p in committed_log(node))

            await cluster.wait_for(f"{node.name} applies the leader's LeaderChange", applied, 10)
            assert node.service is not None
            assert node.service.active_id == active.node_id
        # The quorum-state file says who leads, on every node.
        for node in cluster.up():
            assert node.service is not None
            assert node.service.driver.store.read().leader_id == active.node_id
        nursery.cancel_scope.cancel()


async def test_brokers_register_heartbeat_and_get_unfenced(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        cluster = start_cluster(nursery, seed=2)
        await start_all(cluster)
        await all_unfenced(cluster)
        for node in cluster.up():
            assert node.lifecycle is not None
            with trio.fail_after(5):
                await node.lifecycle.wait_unfenced()
            assert node.lifecycle.broker_epoch > 0
        # Every node's image converges on the same registrations.
        await cluster.wait_for(
            "images converge",
            lambda: len({repr(image_of(n)) for n in cluster.up()}) == 1,
            10,
        )
        active = cluster.active()
        assert active is not None and active.service is not None
        epochs = {b.broker_epoch for b in active.service.image.brokers.values()}
        assert len(epochs) == 3, "each registration gets its own broker epoch"
        nursery.cancel_scope.cancel()


async def test_a_silent_broker_is_fenced_and_its_leadership_moves(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        cluster = start_cluster(nursery, seed=3)
        await start_all(cluster)
        await all_unfenced(cluster)
        active = cluster.active()
        assert active is not None and active.service is not None
        # A topic led by a broker that is not the controller, through a client on another node.
        victim = next(n for n in VOTERS if n != active.node_id)
        other = next(n for n in VOTERS if n not in (victim, active.node_id))
        client = cluster.nodes[other].client
        assert client is not None
        code = await client.create_topic("t0", 3, 3, {"min.insync.replicas": "2"})
        assert code is ErrorCode.NONE
        image = active.service.image
        topic_id = image.topics["t0"]
        led = [i for i, s in image.partitions_of(topic_id) if s.leader == victim]
        assert led, "striped placement gives every broker a partition to lead"

        # The victim's broker goes silent while its quorum member keeps replicating.
        cluster.nodes[victim].stop_heartbeats()
        await cluster.wait_for(
            "the silent broker is fenced",
            lambda: image.brokers[victim].fenced,
            SERVICE.session_timeout_ms / 1000 * 3,
        )
        for index, state in image.partitions_of(topic_id):
            assert state.leader != victim and victim not in state.isr, (index, state)
            assert state.leader != NO_LEADER
        for index in led:
            state = image.partitions[(topic_id, index)]
            assert state.leader_epoch == 1, "a leader change bumps the leader epoch"
        victim_service = cluster.nodes[victim].service
        assert victim_service is not None
        await cluster.wait_for(
            "the fenced broker's own image knows it is fenced",
            lambda: victim_service.image.brokers[victim].fenced,
            10,
        )
        nursery.cancel_scope.cancel()


async def test_alter_partition_goes_through_a_remote_client_and_checks_epochs(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        cluster = start_cluster(nursery, seed=4)
        await start_all(cluster)
        await all_unfenced(cluster)
        active = cluster.active()
        assert active is not None and active.service is not None
        result = await active.service.create_topic("t1", 1, 3, assignments=[(1, 2, 3)])
        assert result.error_code == ErrorCode.NONE
        leader = cluster.nodes[1]
        leader_service = leader.service
        assert leader.client is not None and leader_service is not None
        await cluster.wait_for("n1 sees t1", lambda: "t1" in leader_service.image.topics, 10)
        shrink = await leader.client.alter_partition("t1", 0, 0, 0, (1, 2))
        assert shrink.error_code == ErrorCode.NONE
        assert (shrink.leader, shrink.isr, shrink.partition_epoch) == (1, (1, 2), 1)
        stale = await leader.client.alter_partition("t1", 0, 0, 0, (1, 2, 3))
        assert stale.error_code == 95, "INVALID_UPDATE_VERSION: the partition epoch moved on"
        assert stale.partition_epoch == 1
        follower = cluster.nodes[2].client
        assert follower is not None
        wrong = await follower.alter_partition("t1", 0, 0, 1, (2, 3))
        assert wrong.error_code == ErrorCode.NOT_LEADER_OR_FOLLOWER
        nursery.cancel_scope.cancel()


async def test_the_active_controller_dies_and_a_new_one_takes_over_with_the_same_image(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        cluster = start_cluster(nursery, seed=5)
        await start_all(cluster)
        await all_unfenced(cluster)
        first = cluster.active()
        assert first is not None and first.service is not None and first.client is not None
        assert await first.client.create_topic("before", 2, 3, {}) is ErrorCode.NONE
        old_epoch = first.service.driver.epoch

        await first.power_loss()
        second = await cluster.wait_active()
        assert second is not first and second.service is not None and second.client is not None
        assert second.service.driver.epoch > old_epoch
        # The new controller serves: a topic created now commits on the survivors.
        assert await second.client.create_topic("after", 1, 2, {}) is ErrorCode.NONE
        survivors = cluster.up()
        assert len(survivors) == 2
        await cluster.wait_for(
            "survivors' images are identical",
            lambda: image_of(survivors[0]) == image_of(survivors[1]),
            10,
        )
        image = second.service.image
        assert {"before", "after"} <= set(image.topics)
        # The dead broker is fenced by the new controller once its fresh session expires.
        await cluster.wait_for(
            "the dead controller's broker is fenced",
            lambda: image.brokers[first.node_id].fenced,
            SERVICE.session_timeout_ms / 1000 * 3,
        )
        # It comes back from its disk, catches up and is unfenced again.
        await cluster.start(first.node_id)
        await all_unfenced(cluster)
        await cluster.wait_for(
            "all three images are identical",
            lambda: len({repr(image_of(n)) for n in cluster.up()}) == 1,
            10,
        )
        nursery.cancel_scope.cancel()


async def test_a_restart_of_all_three_recovers_the_image_from_disk(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        cluster = start_cluster(nursery, seed=6)
        await start_all(cluster)
        await all_unfenced(cluster)
        active = cluster.active()
        assert active is not None and active.client is not None
        configs = {"unclean.leader.election.enable": "true", "retention.ms": "60000"}
        assert await active.client.create_topic("kept", 3, 2, configs) is ErrorCode.NONE
        assert await active.client.create_topic("gone", 1, 1, {}) is ErrorCode.NONE
        assert await active.client.delete_topic("gone") is ErrorCode.NONE
        await cluster.wait_for(
            "images converge",
            lambda: len({repr(image_of(n)) for n in cluster.up()}) == 1,
            10,
        )
        before = image_of(active)
        logs_before = {n.node_id: committed_log(n) for n in cluster.up()}

        for node in list(cluster.up()):
            node.heartbeats = False  # restarted nodes stay quiet: the image must be the disk's
            await node.power_loss()
        for node_id in VOTERS:
            await cluster.start(node_id)
        await cluster.wait_active()
        for node in cluster.up():

            def replayed_all(node: Node = node) -> bool:
                return len(committed_log(node)) >= len(logs_before[node.node_id])

            await cluster.wait_for(f"{node.name} replays what it had committed", replayed_all, 30)
            replayed = committed_log(node)
            assert replayed[: len(logs_before[node.node_id])] == logs_before[node.node_id]
        restarted = cluster.active()
        assert restarted is not None and restarted.service is not None
        # Only LeaderChange records were added: the image is what it was.
        assert image_of(restarted) == before
        assert restarted.service.image.topic_configs[
            restarted.service.image.topics["kept"]
        ] == tuple(sorted(configs.items()))
        nursery.cancel_scope.cancel()


async def test_requests_to_a_node_that_is_not_the_controller_are_refused(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        cluster = start_cluster(nursery, seed=7)
        await start_all(cluster)
        active = await cluster.wait_active()
        follower = next(n for n in cluster.up() if n is not active)
        assert follower.service is not None
        result = await follower.service.register_broker(9, "x", "h", 1)
        assert result.error_code == ErrorCode.NOT_CONTROLLER
        topic = await follower.service.create_topic("t", 1, 1)
        assert topic.error_code == ErrorCode.NOT_CONTROLLER
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("seed", [11, 12])
async def test_repeated_controller_power_losses_never_lose_a_committed_topic(
    autojump_clock: trio.testing.MockClock, seed: int
) -> None:
    rng = random.Random(seed)
    async with trio.open_nursery() as nursery:
        cluster = start_cluster(nursery, seed=seed)
        await start_all(cluster)
        await all_unfenced(cluster)
        created: list[str] = []
        for round_ in range(4):
            active = await cluster.wait_active(60)
            assert active.client is not None
            name = f"t{round_}"
            if await active.client.create_topic(name, 1, 1, {}) is ErrorCode.NONE:
                created.append(name)
            victim = cluster.nodes[rng.choice(VOTERS)] if round_ % 2 else active
            await victim.power_loss()
            await trio.sleep(rng.uniform(0, 3))
            await cluster.start(victim.node_id)
        active = await cluster.wait_active(60)
        active_service = active.service
        assert active_service is not None
        assert created, "some topic was acknowledged"
        await cluster.wait_for(
            "every acknowledged topic is in the active image",
            lambda: set(created) <= set(active_service.image.topics),
            30,
        )
        await cluster.wait_for(
            "all three images are identical",
            lambda: len({repr(image_of(n)) for n in cluster.up()}) == 1,
            30,
        )
        nursery.cancel_scope.cancel()


class Unreachable:
    """A transport for a single-voter quorum: there is no one to send to."""

    async def send(self, message: object) -> None:
        return None

    async def aclose(self) -> None:
        return None


async def single_voter(disk: SimDisk) -> QuorumDriver:
    storage = SimStorage(disk)
    logs = LogManager.open(storage, SimClock(), LogConfig())
    store = DurableQuorumStore.open(storage, [1], cluster_id="c")
    log = DurableRaftLog.open(logs)
    return QuorumDriver(1, [1], log, store, Unreachable(), random.Random(0), RAFT)


async def test_a_fetch_with_nothing_new_waits_for_the_next_append(
    autojump_clock: trio.testing.MockClock,
) -> None:
    driver = await single_voter(SimDisk())
    async with trio.open_nursery() as nursery:
        await nursery.start(driver.run)
        while not driver.is_ready_leader:
            await trio.sleep(0.01)

        def fetch() -> FetchRequest:
            return FetchRequest(
                src=99,  # an observer: its position never counts toward the high watermark
                dst=1,
                correlation_id=1,
                epoch=driver.epoch,
                fetch_offset=driver.log.end_offset,
                last_fetched_epoch=driver.log.last_epoch,
            )

        start = trio.current_time()
        idle = await driver.handle_fetch(fetch(), max_wait_ms=500)
        assert isinstance(idle, FetchResponse) and idle.entries == ()
        assert trio.current_time() - start == pytest.approx(0.5), "nothing happened: full wait"

        replies: list[object] = []

        async def poll() -> None:
            replies.append(await driver.handle_fetch(fetch(), max_wait_ms=500))

        start = trio.current_time()
        nursery.start_soon(poll)
        await trio.sleep(0.1)
        offset = driver.propose((RemoveTopicRecord("no-such-topic"),))
        assert isinstance(offset, int)
        while not replies:
            await trio.sleep(0.001)
        (reply,) = replies
        assert isinstance(reply, FetchResponse)
        assert [e.offset for e in reply.entries] == [offset]
        assert trio.current_time() - start == pytest.approx(0.1, abs=0.002), (
            "answered at the append"
        )
        nursery.cancel_scope.cancel()


async def test_a_single_voter_answers_a_proposal_only_once_it_is_durable(
    autojump_clock: trio.testing.MockClock,
) -> None:
    disk = SimDisk()
    driver = await single_voter(disk)
    applied: list[int] = []
    driver.set_listener(lambda entry: applied.append(entry.offset))
    async with trio.open_nursery() as nursery:
        await nursery.start(driver.run)
        while not driver.is_ready_leader:
            await trio.sleep(0.01)
        offset = driver.propose((RemoveTopicRecord("x"),))
        assert isinstance(offset, int)
        assert driver.high_watermark > offset, "alone, the leader's append is its majority"
        assert offset not in applied, "but nothing is applied before the fsync"
        await driver.wait_committed(offset, driver.epoch)
        assert offset in applied and driver.log.durable_end_offset > offset
        nursery.cancel_scope.cancel()
    disk.survive_power_loss()
    reopened = await single_voter(disk)
    assert reopened.log.end_offset > offset


# ("active", time, node id) when the first controller was elected; then, per node,
# (name, its committed log).
Trace = list[tuple[str, float, int] | tuple[str, list[tuple[int, int, object]]]]


def run_scenario(seed: int) -> Trace:
    """A cluster run with a controller power loss, traced: when each node applied what."""
    trace: Trace = []

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            cluster = start_cluster(nursery, seed=seed)
            for node_id in VOTERS:
                await cluster.start(node_id)
            await all_unfenced(cluster)
            active = cluster.active()
            assert active is not None and active.client is not None
            await active.client.create_topic("t", 3, 3, {})
            trace.append(("active", trio.current_time(), active.node_id))
            await active.power_loss()
            await cluster.start(active.node_id)
            await trio.sleep(20)
            for node in cluster.nodes.values():
                trace.append((node.name, committed_log(node)))
            nursery.cancel_scope.cancel()

    with seeded_scheduler(seed):
        trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    return trace


def test_the_same_seed_replays_the_same_quorum_history() -> None:
    first = run_scenario(21)
    assert first == run_scenario(21)
    assert any(len(entry) == 2 and len(entry[1]) > 5 for entry in first), "something committed"


async def test_a_returning_broker_is_unfenced_and_regains_its_preferred_leadership(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        cluster = start_cluster(nursery, seed=8)
        await start_all(cluster)
        await all_unfenced(cluster)
        active = cluster.active()
        assert active is not None and active.service is not None
        victim = next(n for n in VOTERS if n != active.node_id)
        other = next(n for n in VOTERS if n not in (victim, active.node_id))
        replicas = (victim, other, active.node_id)
        created = await active.service.create_topic("p", 1, 3, assignments=[replicas])
        assert created.error_code == ErrorCode.NONE
        image = active.service.image
        key = (image.topics["p"], 0)
        assert image.partitions[key].leader == victim

        node = cluster.nodes[victim]
        node.stop_heartbeats()
        await cluster.wait_for("fenced", lambda: image.brokers[victim].fenced, 10)
        state = image.partitions[key]
        assert state.leader == other and victim not in state.isr

        lifecycle = node.lifecycle
        assert lifecycle is not None
        nursery.start_soon(lifecycle.run)  # the broker comes back with the same epoch
        await cluster.wait_for("unfenced", lambda: not image.brokers[victim].fenced, 10)
        assert image.partitions[key].leader == other, "not in the ISR: no leadership yet"
        # Its follower caught up: the leader adds it back to the ISR (AlterPartition).
        leader_client = cluster.nodes[other].client
        assert leader_client is not None
        leader_client.broker_epoch = image.brokers[other].broker_epoch
        state = image.partitions[key]
        expand = await leader_client.alter_partition(
            "p", 0, state.leader_epoch, state.partition_epoch, (*state.isr, victim)
        )
        assert expand.error_code == ErrorCode.NONE
        await cluster.wait_for(
            "the preferred replica leads again",
            lambda: image.partitions[key].leader == victim,
            SERVICE.leader_imbalance_check_interval_ms / 1000 * 2,
        )
        nursery.cancel_scope.cancel()


async def test_a_controlled_shutdown_moves_leadership_before_the_broker_goes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        cluster = start_cluster(nursery, seed=9)
        await start_all(cluster)
        await all_unfenced(cluster)
        active = cluster.active()
        assert active is not None and active.service is not None
        leaving = next(n for n in VOTERS if n != active.node_id)
        replicas = (leaving, *(v for v in VOTERS if v != leaving))
        result = await active.service.create_topic("s", 1, 3, assignments=[replicas])
        assert result.error_code == ErrorCode.NONE
        image = active.service.image
        key = (image.topics["s"], 0)
        assert image.partitions[key].leader == leaving
        node = cluster.nodes[leaving]
        node.stop_heartbeats()
        assert node.lifecycle is not None
        assert await node.lifecycle.shutdown(timeout_s=5)
        state = image.partitions[key]
        assert image.brokers[leaving].fenced
        assert state.leader not in (leaving, NO_LEADER) and leaving not in state.isr
        nursery.cancel_scope.cancel()


async def test_a_fenced_broker_restarting_after_a_controller_failover_registers_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        cluster = start_cluster(nursery, seed=10)
        await start_all(cluster)
        await all_unfenced(cluster)
        first = cluster.active()
        assert first is not None and first.service is not None
        victim = cluster.nodes[next(n for n in VOTERS if n != first.node_id)]
        assert victim.service is not None
        old_registration = victim.service.image.brokers[victim.node_id]
        image = first.service.image

        # The victim dies and the active controller fences it once its session expires.
        await victim.power_loss()
        await cluster.wait_for(
            "the dead broker is fenced",
            lambda: image.brokers[victim.node_id].fenced,
            SERVICE.session_timeout_ms / 1000 * 3,
        )
        # Then the controller dies too; the victim comes back, which restores a quorum,
        # and another node becomes the active controller.
        await first.power_loss()
        await cluster.start(victim.node_id)
        second = await cluster.wait_active()
        assert second is not first and second.service is not None
        failover = trio.current_time()
        assert second.service.image.brokers[victim.node_id].fenced

        # The new controller must not give the fenced registration a session that
        # locks the new incarnation out (DUPLICATE_BROKER_REGISTRATION) until it expires.
        lifecycle = victim.lifecycle
        assert lifecycle is not None
        await cluster.wait_for(
            "the victim's new incarnation is registered",
            lambda: lifecycle.broker_epoch > old_registration.broker_epoch,
            SERVICE.session_timeout_ms / 1000 * 3,
        )
        assert trio.current_time() - failover < SERVICE.session_timeout_ms / 1000 / 2
        await cluster.wait_for("it is unfenced", lambda: not lifecycle.fenced, 10)
        nursery.cancel_scope.cancel()


async def test_a_broker_is_fenced_when_its_session_expires_so_a_new_incarnation_inherits_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        cluster = start_cluster(nursery, seed=11)
        await start_all(cluster)
        await all_unfenced(cluster)
        active = cluster.active()
        assert active is not None and active.service is not None
        victim = next(n for n in VOTERS if n != active.node_id)
        other = next(n for n in VOTERS if n not in (victim, active.node_id))
        image = active.service.image
        node = cluster.nodes[victim]
        assert node.client is not None and node.service is not None
        assert node.lifecycle is not None
        victim_client, victim_service = node.client, node.service
        # From here on the test sends the victim's heartbeats, so it knows when each was.
        node.stop_heartbeats()
        epoch = node.lifecycle.broker_epoch
        # Twice, half a fencing-check period apart, so that no phase of a periodic
        # check can happen to fence the broker just in time.
        for attempt, pause_s in enumerate((0.1, 0.1 + SERVICE.session_timeout_ms / 1000 / 8)):
            topic = f"q{attempt}"
            created = await active.service.create_topic(
                topic, 1, 3, assignments=[(victim, other, active.node_id)]
            )
            assert created.error_code == ErrorCode.NONE
            key = (image.topics[topic], 0)
            assert image.partitions[key].leader == victim

            # The victim's broker sends a last heartbeat and dies (its quorum member
            # stays up); its next process registers just after that session runs out.
            await trio.sleep(pause_s)
            last = await victim_client.heartbeat(
                epoch, current_metadata_offset=victim_service.image_version, want_fence=False
            )
            assert last.error_code == ErrorCode.NONE and not last.is_fenced
            await trio.sleep(SERVICE.session_timeout_ms / 1000 + 0.02)
            incarnation = uuid.UUID(int=attempt + 1)
            registered = await victim_client.register_broker(incarnation, node.name, PORT)
            assert registered.error_code == ErrorCode.NONE
            # The controller fenced the old incarnation when its session expired, as
            # Kafka's does, moving its leadership: the new incarnation must not find
            # itself leading, in the old leader epoch, what the old one led.
            state = image.partitions[key]
            assert state.leader == other and victim not in state.isr, (attempt, state)
            assert state.leader_epoch == 1

            # The new incarnation catches up and is unfenced, ready for the next round.
            epoch = registered.broker_epoch

            async def unfence(epoch: int = epoch) -> bool:
                beat = await victim_client.heartbeat(
                    epoch, current_metadata_offset=victim_service.image_version, want_fence=False
                )
                return beat.error_code == ErrorCode.NONE and not beat.is_fenced

            with trio.fail_after(10):
                while not await unfence():
                    await trio.sleep(HEARTBEAT_MS / 1000)
        nursery.cancel_scope.cancel()
