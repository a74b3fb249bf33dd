"""Partition replication between three real brokers in the simulation.

Three `Broker`s serve Kafka's protocol on a `SimNetwork` (links can be held, as a
firewall DROP), each on its own `SimDisk`, under trio's MockClock: replication
timeouts of seconds cost nothing. Producers and consumers are raw Kafka requests.

The controller is a stand-in: `ControllerTable` holds each partition's assignment,
answers AlterPartition as Kafka's controller validates it (leader epoch, partition
epoch) and pushes every change to the brokers it can reach with
`ReplicaManager.apply`, which is how the real metadata publisher drives them. What is
under test is everything else: the leader's ISR and high watermark, the fetch
handler's leader side, the followers' fetchers, truncation by diverging epoch, the
produce path's acks.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

import pytest
import trio
import trio.testing
from kafka.protocol.consumer import (
    FetchRequest,
    FetchResponse,
    ListOffsetsRequest,
    ListOffsetsResponse,
)
from kafka.protocol.producer import ProduceRequest, ProduceResponse

from harness.runtime.sim.clock import SimClock
from harness.runtime.sim.disk import SimDisk, SimStorage
from harness.runtime.sim.network import HostNetwork, SimNetwork
from reference_broker.broker import Broker
from reference_broker.config import BrokerConfig, Listener
from reference_broker.env import NodeEnv
from reference_broker.errors import ErrorCode
from reference_broker.log import LogConfig
from reference_broker.log.record_batch import iter_batches
from reference_broker.replication.assignment import AlterPartitionResult, PartitionAssignment
from reference_broker.replication.isr import INVALID_UPDATE_VERSION
from reference_broker.replication.partition import Partition
from reference_broker.server import serve_connection
from tests.broker_process import RawConnection
from tests.wire import idempotent_batch, record_batch

PORT = 9092
CONTROLLER_PORT = 9093
NODES = (1, 2, 3)
LAG_MS = 2000
# The stand-in controller answers an unreachable broker after this long, as a timeout.
CONTROLLER_TIMEOUT_S = 1.0
CONTROLLER_COMMIT_S = 0.05


def name_of(node_id: int) -> str:
    return f"n{node_id}"


# -- the controller's stand-in --------------------------------------------------------------


@dataclass
class ControllerTable:
    """Partition assignments, AlterPartition validation and metadata pushes (not under test)."""

    sim: ReplicationSim
    state: dict[tuple[str, int], PartitionAssignment] = field(default_factory=dict)
    configs: dict[str, dict[str, str]] = field(default_factory=dict)
    # Brokers that can reach the controller (and so send and receive metadata).
    reachable: set[int] = field(default_factory=lambda: set(NODES))
    isr_changes: list[tuple[tuple[str, int], tuple[int, ...]]] = field(default_factory=list)

    def create(self, topic: str, replicas: tuple[int, ...], **configs: str) -> None:
        self.configs[topic] = {k.replace("_", "."): v for k, v in configs.items()}
        self.state[(topic, 0)] = PartitionAssignment(
            topic, 0, replicas, replicas, replicas[0], 0, 0
        )

    def log_config_of(self, base: LogConfig) -> Callable[[str], LogConfig]:
        return lambda topic: LogConfig.from_kafka(self.configs.get(topic, {}), base=base)

    async def publish(self) -> None:
        """Every reachable live broker applies the current assignments."""
        for node in self.sim.live():
            if node.node_id in self.reachable:
                await node.apply(self.state.values())

    async def elect(self, topic: str, leader: int, isr: tuple[int, ...] | None = None) -> None:
        """A new leader (and ISR), in a new leader epoch, as the controller elects."""
        old = self.state[(topic, 0)]
        self.state[(topic, 0)] = replace(
            old,
            leader=leader,
            isr=old.isr if isr is None else isr,
            leader_epoch=old.leader_epoch + 1,
            partition_epoch=old.partition_epoch + 1,
        )
        await self.publish()

    def sender_for(self, node_id: int) -> AlterPartitionSenderStandIn:
        return AlterPartitionSenderStandIn(self, node_id)


@dataclass
class AlterPartitionSenderStandIn:
    """One broker's line to the controller table."""

    table: ControllerTable
    node_id: int

    async def alter_partition(
        self,
        topic: str,
        partition: int,
        leader_epoch: int,
        partition_epoch: int,
        new_isr: tuple[int, ...],
    ) -> AlterPartitionResult:
        if self.node_id not in self.table.reachable:
            await trio.sleep(CONTROLLER_TIMEOUT_S)
            return AlterPartitionResult(int(ErrorCode.REQUEST_TIMED_OUT))
        # A controller commits through its quorum: the change is pending meanwhile.
        await trio.sleep(CONTROLLER_COMMIT_S)
        key = (topic, partition)
        state = self.table.state[key]
        if self.node_id != state.leader:
            return AlterPartitionResult(int(ErrorCode.NOT_LEADER_OR_FOLLOWER))
        if leader_epoch < state.leader_epoch:
            return AlterPartitionResult(int(ErrorCode.FENCED_LEADER_EPOCH))
        if leader_epoch != state.leader_epoch or partition_epoch != state.partition_epoch:
            return AlterPartitionResult(INVALID_UPDATE_VERSION)
        new = replace(state, isr=tuple(new_isr), partition_epoch=state.partition_epoch + 1)
        self.table.state[key] = new
        self.table.isr_changes.append((key, new.isr))
        await self.table.publish()
        return AlterPartitionResult(0, new.isr, new.leader_epoch, new.partition_epoch)


# -- the nodes ----------------------------------------------------------------------------------


@dataclass
class SimNode:
    """One broker: its disk across incarnations and the running incarnation."""

    sim: ReplicationSim
    node_id: int
    config: BrokerConfig
    disk: SimDisk = field(default_factory=SimDisk)
    broker: Broker | None = None
    storage: SimStorage | None = None
    scope: trio.CancelScope | None = None
    stopped: trio.Event | None = None
    incarnation: int = 0

    @property
    def name(self) -> str:
        return name_of(self.node_id)

    def partition(self, topic: str) -> Partition:
        assert self.broker is not None, f"{self.name} is down"
        return self.broker.partitions[(topic, 0)]

    async def apply(self, assignments: Iterable[PartitionAssignment]) -> None:
        assert self.broker is not None
        await self.broker.replicas.apply(
            list(assignments),
            self.sim.endpoints,
            self.sim.table.log_config_of(self.config.log),
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.incarnation += 1
        self.storage = storage = SimStorage(
            self.disk, fsync_latency_s=0.0005, gate=self.sim.network.add_host(self.name).gate
        )
        network = self.sim.network.incarnate(self.name)
        env = NodeEnv(
            network=network,
            storage=storage,
            clock=SimClock(),
            rng=random.Random(f"{self.node_id}/{self.incarnation}"),
        )
        self.stopped = stopped = trio.Event()
        try:
            with trio.CancelScope() as self.scope:
                broker = await Broker.open(env, self.config)
                broker.replicas.alter_partition = self.sim.table.sender_for(self.node_id)
                async with trio.open_nursery() as nursery:
                    await nursery.start(broker.run)
                    listeners = await network.listen(self.name, PORT)
                    await nursery.start(
                        functools.partial(
                            trio.serve_listeners,
                            functools.partial(serve_connection, broker),
                            listeners,
                            handler_nursery=nursery,
                        )
                    )
                    self.broker = broker
                    task_status.started()
        except BaseException:
            if storage.alive:
                raise
        finally:
            stopped.set()

    async def crash(self, *, power_loss: bool) -> None:
        assert self.storage is not None and self.scope is not None and self.stopped is not None
        self.storage.crash()
        self.scope.cancel()
        self.sim.network.crash(self.name)
        if power_loss:
            self.disk.survive_power_loss()
        else:
            self.disk.survive_kill()
        self.broker = None
        await self.stopped.wait()


class ReplicationSim:
    """Three brokers and a controller table on one simulated network."""

    def __init__(self, nursery: trio.Nursery, seed: int = 1, **settings: object) -> None:
        self.nursery = nursery
        self.network = SimNetwork(random.Random(seed))
        self.table = ControllerTable(self)
        self.endpoints = {i: Listener(name_of(i), PORT) for i in NODES}
        # The quorum itself is the table here; its listener is only configured.
        voters = ",".join(f"{i}@{name_of(i)}:{CONTROLLER_PORT}" for i in NODES)
        self.nodes: dict[int, SimNode] = {}
        for node_id in NODES:
            props = {
                "node.id": node_id,
                "listeners": (
                    f"PLAINTEXT://{name_of(node_id)}:{PORT},"
                    f"CONTROLLER://{name_of(node_id)}:{CONTROLLER_PORT}"
                ),
                "controller.listener.names": "CONTROLLER",
                # Cluster mode: partitions come from metadata (here, the table).
                "controller.quorum.voters": voters,
                "replica.lag.time.max.ms": LAG_MS,
                "replica.fetch.wait.max.ms": 500,
                "replica.fetch.backoff.ms": 200,
                "replica.socket.timeout.ms": 5000,
                "offsets.topic.num.partitions": 1,
                **settings,
            }
            self.nodes[node_id] = SimNode(self, node_id, BrokerConfig.from_properties(props))
        self._clients = 0

    def __getitem__(self, node_id: int) -> SimNode:
        return self.nodes[node_id]

    def live(self) -> list[SimNode]:
        return [n for n in self.nodes.values() if n.broker is not None]

    async def start(self, *node_ids: int) -> None:
        for node_id in node_ids or NODES:
            await self.nursery.start(self.nodes[node_id].run)
        await self.table.publish()

    async def topic(self, topic: str, replicas: tuple[int, ...] = NODES, **configs: str) -> None:
        self.table.create(topic, replicas, **configs)
        await self.table.publish()

    def isolate(self, node_id: int) -> None:
        """Cut a broker off from the other brokers and the controller (clients still reach it)."""
        for other in NODES:
            if other != node_id:
                self.cut(node_id, other)
        self.table.reachable.discard(node_id)

    def cut(self, a: int, b: int) -> None:
        """Hold every byte between two brokers, both ways."""
        self.network.block(name_of(a), name_of(b))
        self.network.block(name_of(b), name_of(a))

    def heal(self) -> None:
        self.network.heal()
        self.table.reachable = set(NODES)

    async def connect(self, node_id: int) -> RawConnection:
        self._clients += 1
        client: HostNetwork = self.network.incarnate(f"client{self._clients}")
        return RawConnection(await client.connect(name_of(node_id), PORT))  # type: ignore[arg-type]


@pytest.fixture
async def sim():
    # Tests ask for `autojump_clock` themselves: pytest-trio takes the clock from the
    # test function's arguments only.
    async with trio.open_nursery() as nursery:
        cluster = ReplicationSim(nursery)
        await cluster.start()
        yield cluster
        nursery.cancel_scope.cancel()


# -- clients and checks -------------------------------------------------------------------------


async def produce(
    conn: RawConnection, topic: str, records: bytes, *, acks: int = -1, timeout_ms: int = 30_000
) -> ProduceResponse.TopicProduceResponse.PartitionProduceResponse:
    data = ProduceRequest.TopicProduceData
    request = ProduceRequest(
        version=9,
        transactional_id=None,
        acks=acks,
        timeout_ms=timeout_ms,
        topic_data=[
            data(name=topic, partition_data=[data.PartitionProduceData(index=0, records=records)])
        ],
    )
    response = await conn.request(request, 9, ProduceResponse)
    return response.responses[0].partition_responses[0]


async def consume(
    conn: RawConnection, topic: str, offset: int = 0
) -> FetchResponse.FetchableTopicResponse.PartitionData:
    t = FetchRequest.FetchTopic
    request = FetchRequest(
        replica_id=-1,
        max_wait_ms=0,
        min_bytes=1,
        max_bytes=1 << 20,
        isolation_level=0,
        session_id=0,
        session_epoch=-1,
        topics=[
            t(
                topic=topic,
                partitions=[
                    t.FetchPartition(
                        partition=0,
                        current_leader_epoch=-1,
                        fetch_offset=offset,
                        last_fetched_epoch=-1,
                        log_start_offset=-1,
                        partition_max_bytes=1 << 20,
                    )
                ],
            )
        ],
        forgotten_topics_data=[],
        rack_id="",
    )
    response = await conn.request(request, 12, FetchResponse)
    return response.responses[0].partitions[0]


def log_bytes(node: SimNode, topic: str) -> bytes:
    """Every batch of a node's replica, as stored."""
    log = node.partition(topic).log
    return log.read(log.log_start_offset, 1 << 24).records


def values_in(data: bytes) -> list[int]:
    """(base offset, leader epoch) of each batch, to name what a log holds."""
    return [header.base_offset for header, _ in iter_batches(data)]


async def wait_until(predicate: Callable[[], bool], timeout_s: float = 60.0) -> None:
    with trio.fail_after(timeout_s):
        while not predicate():
            await trio.sleep(0.01)


def converged(sim: ReplicationSim, topic: str, nodes: Iterable[int] = NODES) -> bool:
    logs = {log_bytes(sim[n], topic) for n in nodes}
    return len(logs) == 1


# -- tests ----------------------------------------------------------------------------------------


async def test_records_replicate_to_both_followers_and_acks_all_waits_for_the_isr(
    sim: ReplicationSim, autojump_clock: trio.testing.MockClock
) -> None:
    await sim.topic("t", min_insync_replicas="2")
    leader = sim[1].partition("t")
    assert leader.is_leader and sim[2].partition("t").is_follower
    assert sim[1].broker.replicas.fetcher_partitions() == {}  # type: ignore[union-attr]
    assert sim[2].broker.replicas.fetcher_partitions() == {1: {("t", 0)}}  # type: ignore[union-attr]
    conn = await sim.connect(1)
    for i in range(3):
        start = trio.current_time()
        response = await produce(conn, "t", record_batch([b"v%d" % i, b"w%d" % i]))
        assert (response.error_code, response.base_offset) == (0, 2 * i)
        # Followers long-polling at the old end were woken by the append itself, not by
        # their 500 ms replica.fetch.wait.max.ms running out (virtual time).
        assert trio.current_time() - start < 0.1
        # acks=all answered: every in-sync replica holds the batch.
        for follower in (2, 3):
            assert sim[follower].partition("t").log_end_offset >= 2 * i + 2
        assert leader.high_watermark >= 2 * i + 2
    await wait_until(lambda: all(sim[n].partition("t").high_watermark == 6 for n in NODES))
    assert converged(sim, "t")
    assert values_in(log_bytes(sim[3], "t")) == [0, 2, 4]
    assert sim.table.isr_changes == []  # nobody lagged


async def test_lagging_follower_is_shrunk_out_then_min_insync_decides_acks_all(
    sim: ReplicationSim, autojump_clock: trio.testing.MockClock
) -> None:
    await sim.topic("two", min_insync_replicas="2")
    await sim.topic("three", min_insync_replicas="3")
    conn = await sim.connect(1)
    for topic in ("two", "three"):
        assert (await produce(conn, topic, record_batch([b"a"]))).error_code == 0
    sim.cut(1, 3)  # n3 stops fetching from the leader
    start = trio.current_time()
    two = await produce(conn, "two", record_batch([b"b"]))
    assert two.error_code == ErrorCode.NONE
    # Only once the controller took n3 out of the ISR, after replica.lag.time.max.ms.
    assert trio.current_time() - start >= LAG_MS / 1000
    assert sim.table.state[("two", 0)].isr == (1, 2)
    assert sim[1].partition("two").isr == {1, 2}
    three = await produce(conn, "three", record_batch([b"b"]))
    # It may have been appended before the shrink and then the ISR fell under 3...
    assert three.error_code in (
        ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
        ErrorCode.NOT_ENOUGH_REPLICAS,
    )
    await wait_until(lambda: sim.table.state[("three", 0)].isr == (1, 2))
    # ...and from now on it is refused before the append; acks=1 still works.
    refused = await produce(conn, "three", record_batch([b"c"]))
    assert refused.error_code == ErrorCode.NOT_ENOUGH_REPLICAS
    assert (await produce(conn, "three", record_batch([b"d"]), acks=1)).error_code == 0

    sim.heal()
    await wait_until(lambda: sim.table.state[("three", 0)].isr == (1, 2, 3))
    await wait_until(lambda: sim.table.state[("two", 0)].isr == (1, 2, 3))
    assert (await produce(conn, "three", record_batch([b"e"]))).error_code == 0
    await wait_until(lambda: converged(sim, "three") and converged(sim, "two"))


async def test_a_new_leader_wins_and_the_old_leaders_uncommitted_suffix_is_truncated(
    sim: ReplicationSim, autojump_clock: trio.testing.MockClock
) -> None:
    await sim.topic("t", min_insync_replicas="2")
    old = await sim.connect(1)
    assert (await produce(old, "t", record_batch([b"committed"] * 2))).error_code == 0
    await wait_until(lambda: converged(sim, "t"))
    sim.isolate(1)
    # The isolated leader still takes acks=1 writes in epoch 0: they will be lost.
    lost = await produce(old, "t", record_batch([b"lost"] * 3), acks=1)
    assert (lost.error_code, lost.base_offset) == (0, 2)
    assert sim[1].partition("t").log_end_offset == 5
    # The controller elects n2 from the ISR in epoch 1; n1 does not hear of it.
    await sim.table.elect("t", leader=2, isr=(2, 3))
    assert sim[1].partition("t").is_leader and sim[1].partition("t").leader_epoch == 0
    assert sim[3].broker.replicas.fetcher_partitions() == {2: {("t", 0)}}  # type: ignore[union-attr]
    new = await sim.connect(2)
    won = await produce(new, "t", record_batch([b"won"]))
    assert (won.error_code, won.base_offset) == (0, 2)
    assert sim[1].partition("t").high_watermark == 2  # nothing it wrote alone committed

    sim.heal()
    await sim.table.publish()  # n1 learns it follows n2 in epoch 1
    assert sim[1].partition("t").is_follower
    await wait_until(lambda: converged(sim, "t"))
    assert values_in(log_bytes(sim[1], "t")) == [0, 2]
    assert sim[1].partition("t").log.latest_epoch == 1
    expand = await produce(new, "t", record_batch([b"after"]))
    assert expand.error_code == 0
    await wait_until(lambda: sim.table.state[("t", 0)].isr == (1, 2, 3))
    await wait_until(lambda: converged(sim, "t"))


async def test_a_follower_drops_an_epoch_it_led_without_writing_and_catches_up(
    sim: ReplicationSim, autojump_clock: trio.testing.MockClock
) -> None:
    await sim.topic("t", min_insync_replicas="2")
    conn = await sim.connect(1)
    assert (await produce(conn, "t", record_batch([b"a"] * 3))).error_code == 0
    await wait_until(lambda: converged(sim, "t"))
    # Only n2 hears that it leads epoch 1; it starts the epoch at 3 and writes nothing.
    sim.table.reachable = {2}
    await sim.table.elect("t", leader=2)
    assert sim[2].partition("t").log.latest_epoch == 1
    # Then n3 is elected in epoch 2: in its log epoch 0 ends at 3, where n2 stands.
    sim.table.reachable = set(NODES)
    await sim.table.elect("t", leader=3)
    # n2 truncates to 3 (nothing to cut) and must forget epoch 1 there, else it fetches
    # with epoch 1 forever and diverges forever.
    with trio.fail_after(5):
        await wait_until(lambda: sim[2].partition("t").log.latest_epoch == 0)
    new = await sim.connect(3)
    assert (await produce(new, "t", record_batch([b"b"]))).error_code == 0
    with trio.fail_after(5):
        await wait_until(lambda: converged(sim, "t"))
    assert sim[2].partition("t").log.latest_epoch == 2


async def test_idempotent_producer_dedup_survives_a_leader_change(
    sim: ReplicationSim, autojump_clock: trio.testing.MockClock
) -> None:
    await sim.topic("t", min_insync_replicas="2")
    pid, epoch = 4000, 0
    first = await sim.connect(1)
    batches = [idempotent_batch(pid, epoch, seq, [b"s%d" % seq]) for seq in range(3)]
    for seq, batch in enumerate(batches):
        assert (await produce(first, "t", batch)).base_offset == seq
    await wait_until(lambda: converged(sim, "t"))
    await sim.table.elect("t", leader=2)
    second = await sim.connect(2)
    # The retry of a batch the old leader acknowledged is recognised by the new one.
    retry = await produce(second, "t", batches[2])
    assert (retry.error_code, retry.base_offset) == (0, 2)
    assert sim[2].partition("t").log_end_offset == 3
    nxt = await produce(second, "t", idempotent_batch(pid, epoch, 3, [b"s3"]))
    assert (nxt.error_code, nxt.base_offset) == (0, 3)
    gap = await produce(second, "t", idempotent_batch(pid, epoch, 5, [b"s5"]))
    assert gap.error_code == ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER
    await wait_until(lambda: converged(sim, "t"))


async def test_only_the_leader_serves_clients_and_consumers_see_only_committed_records(
    sim: ReplicationSim, autojump_clock: trio.testing.MockClock
) -> None:
    await sim.topic("t", replicas=(1, 2))
    for node_id in (2, 3):  # a follower, and a broker that is not a replica at all
        conn = await sim.connect(node_id)
        refused = await produce(conn, "t", record_batch([b"x"]))
        assert refused.error_code == ErrorCode.NOT_LEADER_OR_FOLLOWER
        assert (await consume(conn, "t")).error_code == ErrorCode.NOT_LEADER_OR_FOLLOWER
        latest = ListOffsetsRequest.ListOffsetsTopic
        offsets = await conn.request(
            ListOffsetsRequest(
                replica_id=-1,
                isolation_level=0,
                topics=[
                    latest(
                        name="t",
                        partitions=[
                            latest.ListOffsetsPartition(
                                partition_index=0, current_leader_epoch=-1, timestamp=-1
                            )
                        ],
                    )
                ],
            ),
            4,
            ListOffsetsResponse,
        )
        assert offsets.topics[0].partitions[0].error_code == ErrorCode.NOT_LEADER_OR_FOLLOWER
    leader = await sim.connect(1)
    assert (await produce(leader, "t", record_batch([b"a"]))).error_code == 0
    sim.cut(1, 2)
    assert (await produce(leader, "t", record_batch([b"b"]), acks=1)).base_offset == 1
    read = await consume(leader, "t")
    assert (read.high_watermark, values_in(read.records)) == (1, [0])  # b is not committed


async def test_replica_fetch_with_a_diverged_epoch_gets_the_leaders_end_of_it(
    sim: ReplicationSim, autojump_clock: trio.testing.MockClock
) -> None:
    await sim.topic("t")
    conn = await sim.connect(1)
    assert (await produce(conn, "t", record_batch([b"a"] * 4))).error_code == 0
    await sim.table.elect("t", leader=1)  # epoch 1 starts at offset 4
    t = FetchRequest.FetchTopic
    request = FetchRequest(
        replica_id=3,
        max_wait_ms=0,
        min_bytes=1,
        max_bytes=1 << 20,
        isolation_level=0,
        session_id=0,
        session_epoch=-1,
        topics=[
            t(
                topic="t",
                partitions=[
                    t.FetchPartition(
                        partition=0,
                        current_leader_epoch=1,
                        fetch_offset=6,  # as if it held 6 records of epoch 0
                        last_fetched_epoch=0,
                        log_start_offset=0,
                        partition_max_bytes=1 << 20,
                    )
                ],
            )
        ],
        forgotten_topics_data=[],
        rack_id="",
    )
    answer = (await conn.request(request, 12, FetchResponse)).responses[0].partitions[0]
    assert answer.error_code == 0 and answer.records == b""
    assert (answer.diverging_epoch.epoch, answer.diverging_epoch.end_offset) == (0, 4)
    stale = FetchRequest.FetchTopic.FetchPartition
    request.topics[0].partitions[0] = stale(
        partition=0,
        current_leader_epoch=0,
        fetch_offset=4,
        last_fetched_epoch=0,
        log_start_offset=0,
        partition_max_bytes=1 << 20,
    )
    fenced = (await conn.request(request, 12, FetchResponse)).responses[0].partitions[0]
    assert fenced.error_code == ErrorCode.FENCED_LEADER_EPOCH


async def test_a_restarted_follower_catches_up_from_its_own_log(
    sim: ReplicationSim, autojump_clock: trio.testing.MockClock
) -> None:
    await sim.topic("t", min_insync_replicas="2", flush_messages="1")
    conn = await sim.connect(1)
    for i in range(3):
        assert (await produce(conn, "t", record_batch([b"%d" % i]))).error_code == 0
    await wait_until(lambda: converged(sim, "t"))
    await sim[3].crash(power_loss=True)
    for i in range(3, 6):
        assert (await produce(conn, "t", record_batch([b"%d" % i]))).error_code == 0
    await wait_until(lambda: sim.table.state[("t", 0)].isr == (1, 2))
    await sim.nursery.start(sim[3].run)
    # The log survived (flush.messages=1) and is not deleted before metadata arrives.
    assert sim[3].broker.logs.get("t", 0).log_end_offset == 3  # type: ignore[union-attr]
    await sim.table.publish()
    await wait_until(lambda: converged(sim, "t"))
    await wait_until(lambda: sim.table.state[("t", 0)].isr == (1, 2, 3))


async def test_a_replica_no_longer_assigned_is_stopped_and_its_log_deleted(
    sim: ReplicationSim, autojump_clock: trio.testing.MockClock
) -> None:
    await sim.topic("t")
    conn = await sim.connect(1)
    assert (await produce(conn, "t", record_batch([b"a"]))).error_code == 0
    await wait_until(lambda: converged(sim, "t"))
    del sim.table.state[("t", 0)]
    await sim.table.publish()
    for node in sim.live():
        assert node.broker is not None
        assert ("t", 0) not in node.broker.partitions
        assert node.broker.logs.get("t", 0) is None
        assert not node.storage.disk.dirs & {"t-0"}  # type: ignore[union-attr]
        assert node.broker.replicas.fetcher_partitions() == {}


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_high_watermark_never_passes_an_in_sync_replicas_log_end_under_faults(
    autojump_clock: trio.testing.MockClock, seed: int
) -> None:
    rng = random.Random(seed)
    violations: list[str] = []
    async with trio.open_nursery() as nursery:
        sim = ReplicationSim(nursery, seed=seed)
        await sim.start()
        await sim.topic("t", min_insync_replicas="2")
        last_hw: dict[int, int] = {}

        def check() -> None:
            state = sim.table.state[("t", 0)]
            for node in sim.live():
                p = node.partition("t")
                if p.high_watermark < last_hw.get(node.node_id, 0):
                    violations.append(f"{node.name} HW went back to {p.high_watermark}")
                last_hw[node.node_id] = p.high_watermark
                if not p.is_leader or p.leader_epoch != state.leader_epoch:
                    continue
                for member in state.isr:
                    leo = sim[member].partition("t").log_end_offset
                    if p.high_watermark > leo:
                        violations.append(
                            f"HW {p.high_watermark} of {node.name} beyond n{member}'s LEO {leo}"
                        )

        async def monitor() -> None:
            while True:
                check()
                await trio.sleep(0.001)

        async def producer(acks: int) -> None:
            conn = await sim.connect(1)
            while True:
                await produce(conn, "t", record_batch([b"x"] * rng.randint(1, 4)), acks=acks)
                await trio.sleep(rng.uniform(0, 0.05))

        async def nemesis() -> None:
            while True:
                await trio.sleep(rng.uniform(0.5, 3))
                a, b = rng.sample([1, 2, 3], 2)
                sim.cut(a, b)
                await trio.sleep(rng.uniform(0.5, 4))
                sim.network.heal()

        nursery.start_soon(monitor)
        async with trio.open_nursery() as load:
            load.start_soon(producer, -1)
            load.start_soon(producer, 1)
            with trio.move_on_after(30):
                await nemesis()
            load.cancel_scope.cancel()
        sim.network.heal()
        await wait_until(lambda: sim.table.state[("t", 0)].isr == (1, 2, 3))
        await wait_until(lambda: converged(sim, "t"))
        leader = sim[1].partition("t")
        await wait_until(lambda: leader.high_watermark == leader.log_end_offset)
        nursery.cancel_scope.cancel()
    assert violations == []
    assert leader.high_watermark > 0 and len(sim.table.isr_changes) >= 2


async def test_a_new_replica_behind_the_leaders_log_start_restarts_its_log_there(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        sim = ReplicationSim(nursery, **{"log.retention.check.interval.ms": 500})
        await sim.start()
        await sim.topic("t", replicas=(1, 2), segment_bytes="400", retention_bytes="800")
        conn = await sim.connect(1)
        for _ in range(20):
            assert (await produce(conn, "t", record_batch([b"x" * 60]))).error_code == 0
        leader = sim[1].partition("t")
        await wait_until(lambda: leader.log_start_offset > 0)
        # The controller adds n3: its empty log is behind what the leader still has.
        state = sim.table.state[("t", 0)]
        sim.table.state[("t", 0)] = replace(
            state, replicas=(1, 2, 3), partition_epoch=state.partition_epoch + 1
        )
        await sim.table.publish()
        newcomer = sim[3].partition("t")
        await wait_until(lambda: newcomer.log_end_offset == leader.log_end_offset)
        assert newcomer.log_start_offset > 0  # restarted at the leader's log start
        start = max(newcomer.log_start_offset, leader.log_start_offset)
        assert newcomer.log.read(start, 1 << 20).records == leader.log.read(start, 1 << 20).records
        await wait_until(lambda: sim.table.state[("t", 0)].isr == (1, 2, 3))
        nursery.cancel_scope.cancel()


async def test_latest_offset_is_the_log_end_for_a_replica_and_the_high_watermark_for_consumers(
    sim: ReplicationSim, autojump_clock: trio.testing.MockClock
) -> None:
    await sim.topic("t", replicas=(1, 2))
    conn = await sim.connect(1)
    assert (await produce(conn, "t", record_batch([b"a"]))).error_code == 0
    sim.cut(1, 2)
    assert (await produce(conn, "t", record_batch([b"b"] * 2), acks=1)).error_code == 0
    t = ListOffsetsRequest.ListOffsetsTopic
    for replica_id, expected in ((-1, 1), (2, 3)):
        request = ListOffsetsRequest(
            replica_id=replica_id,
            isolation_level=0,
            topics=[
                t(
                    name="t",
                    partitions=[
                        t.ListOffsetsPartition(
                            partition_index=0, current_leader_epoch=0, timestamp=-1
                        )
                    ],
                )
            ],
        )
        answer = await conn.request(request, 4, ListOffsetsResponse)
        assert answer.topics[0].partitions[0].offset == expected


async def test_followers_ahead_of_their_leaders_metadata_wait_for_it(
    sim: ReplicationSim, autojump_clock: trio.testing.MockClock
) -> None:
    await sim.topic("t")
    conn = await sim.connect(1)
    assert (await produce(conn, "t", record_batch([b"a"]))).error_code == 0
    # A new leader epoch (same leader) reaches the followers before the leader.
    state = sim.table.state[("t", 0)]
    sim.table.state[("t", 0)] = replace(
        state, leader_epoch=state.leader_epoch + 1, partition_epoch=state.partition_epoch + 1
    )
    for follower in (2, 3):
        await sim[follower].apply(sim.table.state.values())
    assert (await produce(conn, "t", record_batch([b"b"]), acks=1)).base_offset == 1
    await trio.sleep(3)
    # The leader refuses their fetches (UNKNOWN_LEADER_EPOCH); they back off and retry.
    assert [sim[n].partition("t").log_end_offset for n in (2, 3)] == [1, 1]
    await sim[1].apply(sim.table.state.values())
    await wait_until(lambda: converged(sim, "t"))
    assert sim[2].partition("t").log_end_offset == 2


async def test_a_former_leader_that_wrote_nothing_in_its_epoch_follows_without_spinning(
    sim: ReplicationSim, autojump_clock: trio.testing.MockClock
) -> None:
    await sim.topic("t")
    conn = await sim.connect(1)
    assert (await produce(conn, "t", record_batch([b"a"] * 4))).error_code == 0
    await wait_until(lambda: converged(sim, "t"))
    # n2 leads epoch 1 and writes nothing: its epoch cache says epoch 1 starts at 4.
    await sim.table.elect("t", leader=2)
    # n1 leads again in epoch 2, also from offset 4; its log never saw epoch 1.
    await sim.table.elect("t", leader=1)
    follower = sim[2].partition("t")
    assert follower.is_follower and follower.log_end_offset == 4
    fetcher = sim[2].broker.replicas._fetchers[1].fetcher  # type: ignore[union-attr]
    rounds = fetcher.rounds
    await trio.sleep(2)
    # The leader says the follower's last epoch (1) is unknown here and epoch 0 ends at 4;
    # the follower, already at 4, must drop epoch 1 and fetch as of epoch 0. Idle, it then
    # long-polls (500 ms) instead of asking the same question again at network speed.
    assert fetcher.rounds - rounds <= 10
    assert follower.log.latest_epoch == 0
    assert sim[1].partition("t").diverging_epoch(follower.log.latest_epoch, 4) is None
    assert sim.table.state[("t", 0)].isr == (1, 2, 3)
    assert (await produce(conn, "t", record_batch([b"b"]))).error_code == 0
    await wait_until(lambda: converged(sim, "t"))
