"""`ControllerClient`: how a broker reaches the active controller (Kafka's
NodeToControllerChannelManager).

Requests go to the node this broker believes is the active controller: itself when
its own `ControllerService` is active (a direct call), else the quorum leader its
driver knows, else the voters in turn. A peer that is unreachable or answers
NOT_CONTROLLER is dropped as a guess and the next one is tried after a short
backoff, until the call's deadline; then the call answers REQUEST_TIMED_OUT. Remote
calls are the Kafka RPCs (BrokerRegistration, BrokerHeartbeat, AlterPartition,
CreateTopics, DeleteTopics, AlterPartitionReassignments, ListPartitionReassignments,
UnregisterBroker) over one `PeerChannel` per voter, to its controller listener.

The client is also the broker's `TopicAdmin` (create/delete topics) and the
replica manager's `AlterPartitionSender` (it fills in this broker's id and epoch).
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TypeVar

import trio
from kafka.protocol.admin import (
    AlterPartitionReassignmentsRequest,
    AlterPartitionReassignmentsResponse,
    CreateTopicsRequest,
    CreateTopicsResponse,
    DeleteTopicsRequest,
    DeleteTopicsResponse,
    ListPartitionReassignmentsRequest,
    ListPartitionReassignmentsResponse,
)

from ..config import Listener
from ..env import Network
from ..errors import ErrorCode
from ..peer import PeerChannel, PeerUnavailableError
from ..protocol.controller_apis import (
    ALTER_PARTITION_VERSION,
    BROKER_HEARTBEAT_VERSION,
    BROKER_REGISTRATION_VERSION,
    UNREGISTER_BROKER_VERSION,
    AlterPartitionRequest,
    BrokerHeartbeatRequest,
    BrokerRegistrationRequest,
    UnregisterBrokerRequest,
    UnregisterBrokerResponse,
)
from .service import (
    AlterPartitionResult,
    ControllerService,
    HeartbeatResult,
    OngoingReassignment,
    ReassignmentResult,
    RegistrationResult,
    TopicResult,
)

CREATE_TOPICS_VERSION = 7
DELETE_TOPICS_VERSION = 5
ALTER_REASSIGNMENTS_VERSION = 1
LIST_REASSIGNMENTS_VERSION = 0
PLAINTEXT = 0  # SecurityProtocol id of PLAINTEXT
# Only names the sender in the peer's logs: what a controller serves depends on the
# listener a request arrives on (its controller listener), never on the client id.
CLIENT_ID_PREFIX = "faultline-controller-client-"

R = TypeVar("R")


def error_code_of(code: int) -> ErrorCode:
    """`code` as an ErrorCode member (UNKNOWN_SERVER_ERROR for codes the broker does not name)."""
    try:
        return ErrorCode(code)
    except ValueError:
        return ErrorCode.UNKNOWN_SERVER_ERROR


class ControllerClient:
    """Controller RPCs from this broker, to whichever node is the active controller."""

    def __init__(
        self,
        node_id: int,
        network: Network,
        voters: Iterable[int],
        address_of: Callable[[int], Listener | None],
        *,
        service: ControllerService | None,
        cluster_id: str,
        request_timeout_ms: int,
        retry_backoff_ms: int = 100,
        call_timeout_ms: int | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.node_id = node_id
        self.network = network
        self.voters = sorted(voters)
        if not self.voters:
            raise ValueError("a controller client needs the controller quorum's voters")
        self.address_of = address_of
        self.service = service
        self.cluster_id = cluster_id
        self.request_timeout_ms = request_timeout_ms
        self.retry_backoff_s = retry_backoff_ms / 1000
        # Long enough for an election and a commit: Kafka's controller clients retry
        # for as long as their caller's own timeout.
        self.call_timeout_s = (call_timeout_ms or 3 * request_timeout_ms) / 1000
        self._rotation = (rng or random.Random(node_id)).randrange(len(self.voters))
        self._known: int | None = None
        self._channels: dict[int, PeerChannel] = {}
        self.broker_epoch = -1
        """This broker's epoch, set by `BrokerLifecycle` once registered (for AlterPartition)."""

    # -- routing ----------------------------------------------------------------------------

    def _target(self) -> int | None:
        service = self.service
        if service is not None and service.is_active:
            return self.node_id
        if self._known is not None:
            return self._known
        if service is not None and service.active_id is not None:
            return service.active_id
        return self.voters[self._rotation % len(self.voters)]

    def _forget(self, target: int) -> None:
        if self._known == target:
            self._known = None
        self._rotation += 1

    def _channel(self, target: int) -> PeerChannel | None:
        channel = self._channels.get(target)
        if channel is None:
            address = self.address_of(target)
            if address is None:
                return None
            channel = self._channels[target] = PeerChannel(
                self.network,
                address.host,
                address.port,
                client_id=f"{CLIENT_ID_PREFIX}{self.node_id}",
                request_timeout_s=self.request_timeout_ms / 1000,
            )
        return channel

    async def _call(
        self,
        local: Callable[[ControllerService], Awaitable[R]],
        remote: Callable[[PeerChannel], Awaitable[R]],
        error_of: Callable[[R], int],
        timed_out: R,
    ) -> R:
        with trio.move_on_after(self.call_timeout_s):
            while True:
                target = self._target()
                result: R | None = None
                if target == self.node_id and self.service is not None:
                    if self.service.is_active:
                        result = await local(self.service)
                else:
                    channel = None if target is None else self._channel(target)
                    if channel is not None:
                        try:
                            result = await remote(channel)
                        except PeerUnavailableError:
                            result = None
                if result is not None and error_of(result) != ErrorCode.NOT_CONTROLLER:
                    self._known = target if target != self.node_id else None
                    return result
                if target is not None:
                    self._forget(target)
                await trio.sleep(self.retry_backoff_s)
        return timed_out

    async def aclose(self) -> None:
        """Close the connections to the voters."""
        channels, self._channels = self._channels, {}
        for channel in channels.values():
            await channel.aclose()

    # -- brokers -----------------------------------------------------------------------------

    async def register_broker(
        self, incarnation_id: uuid.UUID, host: str, port: int, previous_broker_epoch: int = -1
    ) -> RegistrationResult:
        """BrokerRegistration of this broker at `host:port`, naming the epoch it shut down
        cleanly with (-1: it did not)."""

        async def remote(channel: PeerChannel) -> RegistrationResult:
            request = BrokerRegistrationRequest(
                version=BROKER_REGISTRATION_VERSION,
                broker_id=self.node_id,
                cluster_id=self.cluster_id,
                incarnation_id=incarnation_id,
                listeners=[
                    BrokerRegistrationRequest.Listener(
                        name="PLAINTEXT", host=host, port=port, security_protocol=PLAINTEXT
                    )
                ],
                features=[],
                rack=None,
                log_dirs=[],
                previous_broker_epoch=previous_broker_epoch,
            )
            response = await channel.request(request, BROKER_REGISTRATION_VERSION)
            return RegistrationResult(response.error_code, response.broker_epoch)

        return await self._call(
            lambda s: s.register_broker(
                self.node_id,
                str(incarnation_id),
                host,
                port,
                previous_broker_epoch=previous_broker_epoch,
            ),
            remote,
            lambda r: r.error_code,
            RegistrationResult(ErrorCode.REQUEST_TIMED_OUT),
        )

    async def heartbeat(
        self,
        broker_epoch: int,
        *,
        current_metadata_offset: int,
        want_fence: bool,
        want_shutdown: bool = False,
    ) -> HeartbeatResult:
        """BrokerHeartbeat of this broker."""

        async def remote(channel: PeerChannel) -> HeartbeatResult:
            request = BrokerHeartbeatRequest(
                version=BROKER_HEARTBEAT_VERSION,
                broker_id=self.node_id,
                broker_epoch=broker_epoch,
                current_metadata_offset=current_metadata_offset,
                want_fence=want_fence,
                want_shut_down=want_shutdown,
            )
            response = await channel.request(request, BROKER_HEARTBEAT_VERSION)
            return HeartbeatResult(
                response.error_code,
                is_caught_up=response.is_caught_up,
                is_fenced=response.is_fenced,
                should_shutdown=response.should_shut_down,
            )

        return await self._call(
            lambda s: s.heartbeat(
                self.node_id,
                broker_epoch,
                current_metadata_offset=current_metadata_offset,
                want_fence=want_fence,
                want_shutdown=want_shutdown,
            ),
            remote,
            lambda r: r.error_code,
            HeartbeatResult(ErrorCode.REQUEST_TIMED_OUT),
        )

    # -- partitions ----------------------------------------------------------------------------

    async def alter_partition(
        self,
        topic: str,
        partition: int,
        leader_epoch: int,
        partition_epoch: int,
        new_isr: tuple[int, ...],
    ) -> AlterPartitionResult:
        """AlterPartition from this broker as the partition's leader."""
        broker_epoch = self.broker_epoch

        async def remote(channel: PeerChannel) -> AlterPartitionResult:
            request = AlterPartitionRequest(
                version=ALTER_PARTITION_VERSION,
                broker_id=self.node_id,
                broker_epoch=broker_epoch,
                topics=[
                    AlterPartitionRequest.TopicData(
                        topic_name=topic,
                        partitions=[
                            AlterPartitionRequest.TopicData.PartitionData(
                                partition_index=partition,
                                leader_epoch=leader_epoch,
                                new_isr=list(new_isr),
                                partition_epoch=partition_epoch,
                            )
                        ],
                    )
                ],
            )
            response = await channel.request(request, ALTER_PARTITION_VERSION)
            if response.error_code != ErrorCode.NONE:
                return AlterPartitionResult(response.error_code)
            for t in response.topics:
                for p in t.partitions:
                    if t.topic_name == topic and p.partition_index == partition:
                        return AlterPartitionResult(
                            p.error_code,
                            p.leader_id,
                            p.leader_epoch,
                            p.partition_epoch,
                            tuple(p.isr),
                        )
            return AlterPartitionResult(ErrorCode.UNKNOWN_SERVER_ERROR)

        return await self._call(
            lambda s: s.alter_partition(
                self.node_id,
                broker_epoch,
                topic,
                partition,
                leader_epoch,
                partition_epoch,
                new_isr,
            ),
            remote,
            lambda r: r.error_code,
            AlterPartitionResult(ErrorCode.REQUEST_TIMED_OUT),
        )

    # -- topics (the broker's TopicAdmin) ------------------------------------------------------

    async def create_topic_result(
        self,
        name: str,
        partitions: int,
        replication_factor: int,
        configs: Mapping[str, str],
        *,
        validate_only: bool = False,
    ) -> TopicResult:
        """CreateTopics for one topic at the active controller, with its error message."""

        async def remote(channel: PeerChannel) -> TopicResult:
            request = CreateTopicsRequest(
                version=CREATE_TOPICS_VERSION,
                topics=[
                    CreateTopicsRequest.CreatableTopic(
                        name=name,
                        num_partitions=partitions,
                        replication_factor=replication_factor,
                        assignments=[],
                        configs=[
                            CreateTopicsRequest.CreatableTopic.CreatableTopicConfig(name=k, value=v)
                            for k, v in sorted(configs.items())
                        ],
                    )
                ],
                timeout_ms=self.request_timeout_ms,
                validate_only=validate_only,
            )
            response: CreateTopicsResponse = await channel.request(request, CREATE_TOPICS_VERSION)
            for topic in response.topics:
                if topic.name == name:
                    topic_id = None if topic.topic_id is None else str(topic.topic_id)
                    return TopicResult(topic.error_code, topic_id, topic.error_message)
            return TopicResult(ErrorCode.UNKNOWN_SERVER_ERROR, message="no answer for the topic")

        return await self._call(
            lambda s: s.create_topic(
                name, partitions, replication_factor, configs, validate_only=validate_only
            ),
            remote,
            lambda r: r.error_code,
            TopicResult(ErrorCode.REQUEST_TIMED_OUT, message="no active controller answered"),
        )

    async def create_topic(
        self,
        name: str,
        partitions: int,
        replication_factor: int,
        configs: Mapping[str, str],
        *,
        validate_only: bool = False,
    ) -> ErrorCode:
        """CreateTopics for one topic; Kafka's error code (the broker's `TopicAdmin`)."""
        result = await self.create_topic_result(
            name, partitions, replication_factor, configs, validate_only=validate_only
        )
        return error_code_of(result.error_code)

    async def delete_topic(self, name: str) -> ErrorCode:
        """DeleteTopics for one topic; Kafka's error code (the broker's `TopicAdmin`)."""

        async def remote(channel: PeerChannel) -> TopicResult:
            request = DeleteTopicsRequest(
                version=DELETE_TOPICS_VERSION,
                topic_names=[name],
                timeout_ms=self.request_timeout_ms,
            )
            response: DeleteTopicsResponse = await channel.request(request, DELETE_TOPICS_VERSION)
            for topic in response.responses:
                if topic.name == name:
                    return TopicResult(topic.error_code, message=topic.error_message)
            return TopicResult(ErrorCode.UNKNOWN_SERVER_ERROR, message="no answer for the topic")

        result = await self._call(
            lambda s: s.delete_topic(name),
            remote,
            lambda r: r.error_code,
            TopicResult(ErrorCode.REQUEST_TIMED_OUT),
        )
        return error_code_of(result.error_code)

    # -- reassignments and decommissioning (forwarded from the client listener) -----------------

    async def alter_reassignment(
        self,
        topic: str,
        partition: int,
        target: tuple[int, ...] | None,
        *,
        allow_factor_change: bool = True,
    ) -> ReassignmentResult:
        """AlterPartitionReassignments for one partition at the active controller."""

        async def remote(channel: PeerChannel) -> ReassignmentResult:
            _Topic = AlterPartitionReassignmentsRequest.ReassignableTopic
            request = AlterPartitionReassignmentsRequest(
                version=ALTER_REASSIGNMENTS_VERSION,
                timeout_ms=self.request_timeout_ms,
                allow_replication_factor_change=allow_factor_change,
                topics=[
                    _Topic(
                        name=topic,
                        partitions=[
                            _Topic.ReassignablePartition(
                                partition_index=partition,
                                replicas=None if target is None else list(target),
                            )
                        ],
                    )
                ],
            )
            response: AlterPartitionReassignmentsResponse = await channel.request(
                request, ALTER_REASSIGNMENTS_VERSION
            )
            if response.error_code != ErrorCode.NONE:
                return ReassignmentResult(response.error_code, response.error_message)
            for t in response.responses:
                for p in t.partitions:
                    if t.name == topic and p.partition_index == partition:
                        return ReassignmentResult(p.error_code, p.error_message)
            return ReassignmentResult(ErrorCode.UNKNOWN_SERVER_ERROR, "no answer for the partition")

        return await self._call(
            lambda s: s.alter_reassignment(
                topic, partition, target, allow_factor_change=allow_factor_change
            ),
            remote,
            lambda r: r.error_code,
            ReassignmentResult(ErrorCode.REQUEST_TIMED_OUT, "no active controller answered"),
        )

    async def list_reassignments(
        self, partitions: Mapping[str, list[int]] | None = None
    ) -> list[OngoingReassignment] | int:
        """ListPartitionReassignments at the active controller: the ongoing ones, or an
        error code."""

        async def remote(channel: PeerChannel) -> list[OngoingReassignment] | int:
            _Topic = ListPartitionReassignmentsRequest.ListPartitionReassignmentsTopics
            request = ListPartitionReassignmentsRequest(
                version=LIST_REASSIGNMENTS_VERSION,
                timeout_ms=self.request_timeout_ms,
                topics=None
                if partitions is None
                else [_Topic(name=t, partition_indexes=list(p)) for t, p in partitions.items()],
            )
            response: ListPartitionReassignmentsResponse = await channel.request(
                request, LIST_REASSIGNMENTS_VERSION
            )
            if response.error_code != ErrorCode.NONE:
                return int(response.error_code)
            return [
                OngoingReassignment(
                    t.name,
                    p.partition_index,
                    tuple(p.replicas),
                    tuple(p.adding_replicas),
                    tuple(p.removing_replicas),
                )
                for t in response.topics
                for p in t.partitions
            ]

        return await self._call(
            lambda s: s.list_reassignments(partitions),
            remote,
            lambda r: r if isinstance(r, int) else ErrorCode.NONE,
            int(ErrorCode.REQUEST_TIMED_OUT),
        )

    async def unregister_broker(self, broker_id: int) -> ReassignmentResult:
        """UnregisterBroker at the active controller."""

        async def remote(channel: PeerChannel) -> ReassignmentResult:
            request = UnregisterBrokerRequest(
                version=UNREGISTER_BROKER_VERSION, broker_id=broker_id
            )
            response: UnregisterBrokerResponse = await channel.request(
                request, UNREGISTER_BROKER_VERSION
            )
            return ReassignmentResult(response.error_code, response.error_message)

        return await self._call(
            lambda s: s.unregister_broker(broker_id),
            remote,
            lambda r: r.error_code,
            ReassignmentResult(ErrorCode.REQUEST_TIMED_OUT, "no active controller answered"),
        )
