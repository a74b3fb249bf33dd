"""The controller listener: control-plane APIs only there, and only for this cluster.

Over real TCP against `faultline broker` processes (a 3-node KRaft cluster of the
process runtime, and a standalone node): on a client port, the quorum and
broker-to-controller APIs are not listed by ApiVersions and a request for one closes
the connection (as Kafka's SocketServer does with an API its listener does not
enable), so an unauthenticated BrokerHeartbeat(want_shut_down) or Vote changes
nothing; on a controller port, a request naming no cluster or another cluster is
answered INCONSISTENT_CLUSTER_ID; a client id that looks like a peer's buys nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
from kafka.protocol.admin import CreateTopicsRequest, CreateTopicsResponse
from kafka.protocol.api_key import ApiKey
from kafka.protocol.api_message import ApiMessage
from kafka.protocol.consumer import FetchRequest
from kafka.protocol.metadata import ApiVersionsRequest, MetadataRequest, MetadataResponse
from kafka.protocol.producer import ProduceRequest

from harness.broker_process import running_broker
from harness.runtime.process import ProcessCluster
from reference_broker.controller import raft
from reference_broker.controller.quorum import cluster_id_for
from reference_broker.controller.transport import to_kafka_request
from reference_broker.errors import ErrorCode
from reference_broker.handlers import BROKER_HANDLERS, CONTROLLER_HANDLERS
from reference_broker.protocol import (
    CONTROLLER_APIS,
    SUPPORTED_APIS,
    decode_response,
    encode_request,
)
from reference_broker.protocol.controller_apis import (
    BROKER_HEARTBEAT_VERSION,
    BROKER_REGISTRATION_VERSION,
    BrokerHeartbeatRequest,
    BrokerRegistrationRequest,
)
from tests.test_process_faults import api_versions_round_trip
from tests.wire import ConnectionClosedError, WireClient

INCONSISTENT_CLUSTER_ID = 104
CONTROL_PLANE = {
    ApiKey.Vote,
    ApiKey.BeginQuorumEpoch,
    ApiKey.EndQuorumEpoch,
    ApiKey.BrokerRegistration,
    ApiKey.BrokerHeartbeat,
    ApiKey.AlterPartition,
}
SETTINGS = {
    "default.replication.factor": 3,
    "min.insync.replicas": 2,
    "num.partitions": 1,
    "offsets.topic.num.partitions": 1,
    "broker.session.timeout.ms": 4000,
    "broker.heartbeat.interval.ms": 500,
}


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


def _ask(
    address: str, request: ApiMessage, version: int, client_id: str = "faultline-tests"
) -> ApiMessage:
    """One request on a fresh connection; ConnectionClosedError if the broker hangs up."""
    with WireClient(*_split(address)) as conn:
        conn.send_raw(encode_request(request, version, 1, client_id))
        frame = conn.read_frame()
    return decode_response(frame, type(request), version, 1)


def _closes(address: str, request: ApiMessage, version: int) -> bool:
    try:
        _ask(address, request, version)
    except (ConnectionClosedError, ConnectionResetError):
        return True
    return False


def _api_keys(address: str) -> set[int]:
    response = _ask(address, ApiVersionsRequest(version=3, client_software_name="t",
                                                client_software_version="1"), 3)
    assert response.error_code == 0
    return {entry.api_key for entry in response.api_keys}


def _vote(cluster_id: str | None, epoch: int, candidate: int = 9, voter: int = -1) -> ApiMessage:
    message = raft.VoteRequest(src=candidate, dst=voter, epoch=epoch, last_epoch=max(epoch - 1, 0),
                               last_offset=1_000_000)
    body, _ = to_kafka_request(message, cluster_id or "")
    body.cluster_id = cluster_id
    body.voter_id = voter
    return body


def _quorum_epoch(controller_address: str, cluster_id: str) -> tuple[int, int]:
    """(leader id, epoch) a voter reports, read from its refusal of a stale Vote."""
    response = _ask(controller_address, _vote(cluster_id, epoch=0), 1)
    assert response.error_code == 0, response
    partition = response.topics[0].partitions[0]
    assert not partition.vote_granted
    return partition.leader_id, partition.leader_epoch


def _heartbeat(broker_id: int, broker_epoch: int) -> ApiMessage:
    return BrokerHeartbeatRequest(
        version=BROKER_HEARTBEAT_VERSION, broker_id=broker_id, broker_epoch=broker_epoch,
        current_metadata_offset=1 << 40, want_fence=False, want_shut_down=True,
        offline_log_dirs=[],
    )


def _registration(cluster_id: str) -> ApiMessage:
    return BrokerRegistrationRequest(
        version=BROKER_REGISTRATION_VERSION, broker_id=1, cluster_id=cluster_id,
        incarnation_id=uuid.uuid4(),
        listeners=[BrokerRegistrationRequest.Listener(
            name="PLAINTEXT", host="evil.example", port=9092, security_protocol=0)],
        features=[], rack=None, log_dirs=[], previous_broker_epoch=-1,
    )


def _metadata(address: str, topic: str) -> MetadataResponse:
    return _ask(address, MetadataRequest(
        version=9, topics=[MetadataRequest.MetadataRequestTopic(name=topic)],
        allow_auto_topic_creation=False, include_cluster_authorized_operations=False,
        include_topic_authorized_operations=False,
    ), 9)


def _partition_state(address: str, topic: str) -> tuple[int, int, list[int]]:
    """(leader, leader epoch, isr) of partition 0 as `address` reports it."""
    metadata = _metadata(address, topic)
    [t] = metadata.topics
    [p] = t.partitions
    assert p.error_code == 0, p
    return p.leader_id, p.leader_epoch, sorted(p.isr_nodes)


def _create_topic(address: str, name: str, client_id: str) -> int:
    topic = CreateTopicsRequest.CreatableTopic(
        name=name, num_partitions=1, replication_factor=3, assignments=[], configs=[])
    response = _ask(address, CreateTopicsRequest(
        version=7, topics=[topic], timeout_ms=10000, validate_only=False), 7, client_id)
    assert isinstance(response, CreateTopicsResponse)
    return response.topics[0].error_code


async def _until(check: Callable[[], bool], what: str, timeout_s: float = 60) -> None:
    with trio.move_on_after(timeout_s):
        while not await trio.to_thread.run_sync(check):
            await trio.sleep(0.3)
        return
    raise AssertionError(f"not within {timeout_s} s: {what}")


async def test_control_plane_apis_only_on_the_controller_listener_and_only_for_this_cluster(
    tmp_path: Path,
) -> None:
    cluster_id = cluster_id_for([1, 2, 3])
    async with ProcessCluster(tmp_path, 3, quorum=True, settings=SETTINGS) as cluster:
        client = {n: cluster.client_address(n) for n in cluster.nodes}
        # A topic everyone replicates, created through an ordinary client listener.
        def created() -> bool:
            code = _create_topic(client["n1"], "t", "faultline-tests")
            return code in (0, ErrorCode.TOPIC_ALREADY_EXISTS)

        await _until(created, "topic t created")

        def replicated() -> bool:
            try:
                return len(_partition_state(client["n1"], "t")[2]) == 3
            except AssertionError:
                return False

        await _until(replicated, "t-0 has an ISR of 3")
        before = await trio.to_thread.run_sync(_partition_state, client["n1"], "t")
        metadata = await trio.to_thread.run_sync(_metadata, client["n1"], "t")
        controller_before = metadata.controller_id

        # A client listener's ApiVersions lists no control-plane API.
        for n in cluster.nodes:
            client_keys = await trio.to_thread.run_sync(_api_keys, client[n])
            assert ApiKey.Produce in client_keys and ApiKey.Fetch in client_keys
            assert not client_keys & CONTROL_PLANE

        # The attack, on every client port: heartbeats asking the leader's shutdown with
        # every plausible broker epoch, and a stranger's Vote in epoch 1001 with no
        # cluster id. Each request closes its connection unanswered.
        leader = before[0]
        for n in cluster.nodes:
            for epoch in range(0, 40):
                assert await trio.to_thread.run_sync(
                    _closes, client[n], _heartbeat(leader, epoch), BROKER_HEARTBEAT_VERSION
                ), f"{n} answered BrokerHeartbeat on its client port"
            for voter in (-1, 1, 2, 3):
                assert await trio.to_thread.run_sync(
                    _closes, client[n], _vote(None, 1001, voter=voter), 1
                ), f"{n} answered Vote on its client port"
            assert await trio.to_thread.run_sync(
                _closes, client[n], _registration(cluster_id), BROKER_REGISTRATION_VERSION
            )
            # The metadata log is not a partition a client listener serves.
            fetch = FetchRequest(
                version=12, replica_id=1, max_wait_ms=0, min_bytes=1, max_bytes=1 << 20,
                isolation_level=0, session_id=0, session_epoch=-1,
                topics=[FetchRequest.FetchTopic(topic="__cluster_metadata", partitions=[
                    FetchRequest.FetchTopic.FetchPartition(
                        partition=0, current_leader_epoch=-1, fetch_offset=0,
                        last_fetched_epoch=-1, log_start_offset=-1, partition_max_bytes=1 << 20)
                ])],
                forgotten_topics_data=[], rack_id="", cluster_id=cluster_id,
            )
            answer = await trio.to_thread.run_sync(_ask, client[n], fetch, 12)
            [partition] = answer.responses[0].partitions
            assert partition.error_code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
            assert not partition.records

        # The controller listeners, on their own ports, list the control plane and no client
        # API; there the same strangers are told they are in the wrong cluster.
        controller = {n: cluster.controller_address(n) for n in cluster.nodes}
        for n in cluster.nodes:
            assert controller[n] != client[n]
            controller_keys = await trio.to_thread.run_sync(_api_keys, controller[n])
            assert controller_keys >= CONTROL_PLANE
            assert ApiKey.Produce not in controller_keys
            assert ApiKey.JoinGroup not in controller_keys
            for wrong in (None, "", "another-cluster"):
                vote = await trio.to_thread.run_sync(
                    _ask, controller[n], _vote(wrong, 1001), 1
                )
                assert vote.error_code == INCONSISTENT_CLUSTER_ID, (n, wrong, vote)
                assert not any(p.vote_granted for t in vote.topics for p in t.partitions)
            for message in (
                raft.BeginQuorumEpoch(src=9, dst=-1, epoch=1001),
                raft.EndQuorumEpoch(src=9, dst=-1, epoch=1001, preferred_successors=(9,)),
                raft.FetchRequest(src=9, dst=-1, correlation_id=1, epoch=1001,
                                  fetch_offset=0, last_fetched_epoch=0),
            ):
                body, version = to_kafka_request(message, "another-cluster")
                answer = await trio.to_thread.run_sync(_ask, controller[n], body, version)
                assert answer.error_code == INCONSISTENT_CLUSTER_ID, (n, message, answer)
            registration = await trio.to_thread.run_sync(
                _ask, controller[n], _registration("another-cluster"), BROKER_REGISTRATION_VERSION
            )
            assert registration.error_code == INCONSISTENT_CLUSTER_ID
            # Client APIs are not served there.
            produce = ProduceRequest(version=9, transactional_id=None, acks=1, timeout_ms=1000,
                                     topic_data=[])
            assert await trio.to_thread.run_sync(_closes, controller[n], produce, 9)

        # Nothing moved: the leader, its epoch, the ISR, the quorum's leader and epoch.
        await trio.sleep(2)  # a heartbeat taken for real would have fenced the leader by now
        after = await trio.to_thread.run_sync(_partition_state, client["n1"], "t")
        assert after == before
        metadata = await trio.to_thread.run_sync(_metadata, client["n1"], "t")
        assert metadata.controller_id == controller_before
        quorum_after = await trio.to_thread.run_sync(_quorum_epoch, controller["n1"], cluster_id)
        assert quorum_after[0] == controller_before
        assert quorum_after[1] < 1001, "a stranger's epoch-1001 Vote was taken"

        # A client id that reads like a controller's peer gets the client path: the request
        # is forwarded to the active controller, whichever node it reached.
        followers = [n for n in cluster.nodes if f"n{quorum_after[0]}" != n]
        for i, n in enumerate(followers):
            code = await trio.to_thread.run_sync(
                _create_topic, client[n], f"peer-{i}", "faultline-controller-client-x"
            )
            assert code == 0, f"{n} answered {ErrorCode(code).name}"

        # Quorum traffic between two nodes rides their link: blocking n1 -> n2 holds n1's
        # calls to n2's controller listener, and leaves n3's alone.
        n1_to_n2 = str(cluster.broker("n1").settings["faultline.voter.2"])
        n3_to_n2 = str(cluster.broker("n3").settings["faultline.voter.2"])
        assert await api_versions_round_trip(n1_to_n2)
        await cluster.block("n1", "n2")
        with trio.move_on_after(0.5) as held:
            await api_versions_round_trip(n1_to_n2)
        assert held.cancelled_caught, "n1 reached n2's controller across a blocked link"
        assert await api_versions_round_trip(n3_to_n2)
        await cluster.heal_network()


@pytest.mark.parametrize("api", ["Vote", "BrokerHeartbeat"])
def test_a_standalone_broker_serves_no_control_plane_api(tmp_path: Path, api: str) -> None:
    request = _vote(None, 1001) if api == "Vote" else _heartbeat(0, 0)
    version = 1 if api == "Vote" else BROKER_HEARTBEAT_VERSION
    with running_broker(tmp_path / "single") as broker:
        assert not _api_keys(broker.bootstrap) & CONTROL_PLANE
        assert _closes(broker.bootstrap, request, version)
        # The connection-level refusal leaves the broker serving.
        assert ApiKey.Produce in _api_keys(broker.bootstrap)


def test_each_listener_table_serves_its_apis_and_only_those() -> None:
    # A client listener serves exactly the client APIs the broker advertises (its
    # ApiVersions answer is what it always was); a controller listener the inter-node
    # APIs, the metadata log's Fetch and the topic requests brokers forward.
    assert set(BROKER_HANDLERS) == set(SUPPORTED_APIS)
    assert not set(BROKER_HANDLERS) & set(CONTROLLER_APIS)
    assert set(CONTROLLER_HANDLERS) == set(CONTROLLER_APIS) | {
        ApiKey.ApiVersions, ApiKey.Fetch, ApiKey.CreateTopics, ApiKey.DeleteTopics,
        ApiKey.AlterPartitionReassignments, ApiKey.ListPartitionReassignments,
        ApiKey.UnregisterBroker,
    }
