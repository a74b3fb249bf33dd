"""Consumer-group APIs wired to the group coordinator (always this node on a single node).

FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup, OffsetCommit,
OffsetFetch, DescribeGroups and ListGroups: each handler translates between the
wire structs of its version and the coordinator's plain calls and results. The
group logic itself (generations, rebalances, timers, offsets storage) is the
coordinator's.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

from kafka.protocol.admin import DeleteGroupsResponse, DescribeGroupsResponse, ListGroupsResponse
from kafka.protocol.api_message import ApiMessage
from kafka.protocol.consumer import (
    HeartbeatResponse,
    JoinGroupResponse,
    LeaveGroupResponse,
    OffsetCommitResponse,
    OffsetFetchResponse,
    SyncGroupResponse,
)
from kafka.protocol.metadata import FindCoordinatorResponse

from ..broker import BrokerEndpoint
from ..errors import BrokerError, ErrorCode
from ..group.offsets_store import OFFSETS_TOPIC
from ..group.results import JoinProtocol, OffsetAndMetadata
from .context import RequestContext
from .txn_coordinator_lookup import transaction_coordinator_of

if TYPE_CHECKING:
    from ..broker import Broker

COORDINATOR_GROUP = 0
COORDINATOR_TRANSACTION = 1

_Coordinator = FindCoordinatorResponse.Coordinator
_JoinMember = JoinGroupResponse.JoinGroupResponseMember
_LeaveMember = LeaveGroupResponse.MemberResponse
_CommitTopic = OffsetCommitResponse.OffsetCommitResponseTopic
_CommitPartition = _CommitTopic.OffsetCommitResponsePartition
_FetchTopic = OffsetFetchResponse.OffsetFetchResponseTopic
_FetchPartition = _FetchTopic.OffsetFetchResponsePartition
_FetchGroup = OffsetFetchResponse.OffsetFetchResponseGroup
_FetchGroupTopic = _FetchGroup.OffsetFetchResponseTopics
_FetchGroupPartition = _FetchGroupTopic.OffsetFetchResponsePartitions
_DescribedGroup = DescribeGroupsResponse.DescribedGroup
_DescribedMember = _DescribedGroup.DescribedGroupMember
_ListedGroup = ListGroupsResponse.ListedGroup
_DeletedGroup = DeleteGroupsResponse.DeletableGroupResult


def _find(broker: Broker, key: str, key_type: int) -> tuple[ErrorCode, str | None]:
    if key_type == COORDINATOR_TRANSACTION:
        if not key:
            return ErrorCode.INVALID_REQUEST, "transactional id must not be empty"
        return ErrorCode.NONE, None
    if key_type != COORDINATOR_GROUP:
        return ErrorCode.INVALID_REQUEST, f"coordinator key type {key_type} is not supported"
    if not key:
        return ErrorCode.INVALID_GROUP_ID, "group id must not be empty"
    return ErrorCode.NONE, None


async def _coordinator_of(
    broker: Broker, key: str, key_type: int
) -> tuple[ErrorCode, str | None, BrokerEndpoint | None]:
    """The node coordinating group `key`: this node alone, or in a cluster the leader of
    the group's `__consumer_offsets` partition (created on first use, as Kafka)."""
    error, message = _find(broker, key, key_type)
    if error is not ErrorCode.NONE:
        return error, message, None
    if key_type == COORDINATOR_TRANSACTION:
        return await transaction_coordinator_of(broker, key)
    cluster = broker.cluster
    if cluster is None:
        return ErrorCode.NONE, None, broker.endpoint
    if OFFSETS_TOPIC not in cluster:
        live = len(cluster.live_brokers())
        factor = min(broker.config.offsets_topic_replication_factor, max(live, 1))
        if factor < broker.config.offsets_topic_replication_factor:
            return (
                ErrorCode.COORDINATOR_NOT_AVAILABLE,
                f"{OFFSETS_TOPIC} needs {broker.config.offsets_topic_replication_factor} live "
                f"brokers (offsets.topic.replication.factor); {live} are live",
                None,
            )
        try:
            await cluster.create_topic(
                OFFSETS_TOPIC,
                broker.config.offsets_topic_num_partitions,
                factor,
                {"cleanup.policy": "delete", "retention.ms": "-1"},
                internal=True,
            )
        except BrokerError as exc:
            if exc.code != ErrorCode.TOPIC_ALREADY_EXISTS:
                return ErrorCode.COORDINATOR_NOT_AVAILABLE, str(exc), None
    leader = cluster.leader_of(OFFSETS_TOPIC, broker.coordinator.partition_for(key))
    found = cluster.endpoint_of(leader) if leader >= 0 else None
    if found is None:
        return ErrorCode.COORDINATOR_NOT_AVAILABLE, "the group's partition has no leader", None
    return ErrorCode.NONE, None, BrokerEndpoint(found.node_id, found.host, found.port)


async def handle_find_coordinator(
    broker: Broker, ctx: RequestContext, request: ApiMessage
) -> ApiMessage:
    """A group's coordinator: this node, or the leader of the group's offsets partition."""
    if ctx.version >= 4:
        coordinators = []
        for key in request.coordinator_keys:
            error, message, endpoint = await _coordinator_of(broker, key, request.key_type)
            coordinators.append(
                _Coordinator(
                    key=key,
                    node_id=endpoint.node_id if endpoint else -1,
                    host=endpoint.host if endpoint else "",
                    port=endpoint.port if endpoint else -1,
                    error_code=int(error),
                    error_message=message,
                )
            )
        return FindCoordinatorResponse(
            version=ctx.version, throttle_time_ms=0, coordinators=coordinators
        )
    error, message, endpoint = await _coordinator_of(
        broker, request.key, request.key_type if ctx.version >= 1 else 0
    )
    return FindCoordinatorResponse(
        version=ctx.version,
        throttle_time_ms=0,
        error_code=int(error),
        error_message=message,
        node_id=endpoint.node_id if endpoint else -1,
        host=endpoint.host if endpoint else "",
        port=endpoint.port if endpoint else -1,
    )


async def handle_join_group(broker: Broker, ctx: RequestContext, request: ApiMessage) -> ApiMessage:
    """Join (or rejoin) a group; blocks until the rebalance completes, as Kafka's delayed join."""
    version = ctx.version
    rebalance_timeout_ms = (
        request.rebalance_timeout_ms if version >= 1 else request.session_timeout_ms
    )
    result = await broker.coordinator.join_group(
        request.group_id,
        request.member_id,
        request.group_instance_id if version >= 5 else None,
        request.protocol_type,
        [JoinProtocol(p.name, bytes(p.metadata)) for p in request.protocols],
        request.session_timeout_ms,
        rebalance_timeout_ms,
        client_id=ctx.client_id,
        client_host=ctx.client_host,
        require_known_member_id=version >= 4,
    )
    protocol_name = result.protocol_name
    if protocol_name is None and version < 7:
        protocol_name = ""  # not nullable before v7
    return JoinGroupResponse(
        version=version,
        throttle_time_ms=0,
        error_code=int(result.error),
        generation_id=result.generation_id,
        protocol_type=result.protocol_type,
        protocol_name=protocol_name,
        leader=result.leader,
        skip_assignment=False,
        member_id=result.member_id,
        members=[
            _JoinMember(
                member_id=m.member_id, group_instance_id=m.group_instance_id, metadata=m.metadata
            )
            for m in result.members
        ],
    )


async def handle_sync_group(broker: Broker, ctx: RequestContext, request: ApiMessage) -> ApiMessage:
    """Hand out the leader's assignment; followers block until the leader has synced."""
    version = ctx.version
    result = await broker.coordinator.sync_group(
        request.group_id,
        request.generation_id,
        request.member_id,
        request.group_instance_id if version >= 3 else None,
        request.protocol_type if version >= 5 else None,
        request.protocol_name if version >= 5 else None,
        {a.member_id: bytes(a.assignment) for a in request.assignments},
    )
    return SyncGroupResponse(
        version=version,
        throttle_time_ms=0,
        error_code=int(result.error),
        protocol_type=result.protocol_type,
        protocol_name=result.protocol_name,
        assignment=result.assignment,
    )


async def handle_heartbeat(broker: Broker, ctx: RequestContext, request: ApiMessage) -> ApiMessage:
    """Keep a member's session alive; tells it when a rebalance is in progress."""
    error = broker.coordinator.heartbeat(
        request.group_id,
        request.generation_id,
        request.member_id,
        request.group_instance_id if ctx.version >= 3 else None,
    )
    return HeartbeatResponse(version=ctx.version, throttle_time_ms=0, error_code=int(error))


async def handle_leave_group(
    broker: Broker, ctx: RequestContext, request: ApiMessage
) -> ApiMessage:
    """Remove members from a group (one per request before v3, a batch from v3)."""
    version = ctx.version
    if version >= 3:
        members = [(m.member_id, m.group_instance_id) for m in request.members]
    else:
        members = [(request.member_id, None)]
    error, results = broker.coordinator.leave_group(request.group_id, members)
    if version < 3 and error == ErrorCode.NONE and results:
        # Before v3 a member's own error is the response's error.
        error = results[0][2]
    return LeaveGroupResponse(
        version=version,
        throttle_time_ms=0,
        error_code=int(error),
        members=[
            _LeaveMember(member_id=member_id, group_instance_id=instance_id, error_code=int(code))
            for member_id, instance_id, code in results
        ],
    )


async def handle_offset_commit(
    broker: Broker, ctx: RequestContext, request: ApiMessage
) -> ApiMessage:
    """Commit offsets of known partitions; unknown ones get UNKNOWN_TOPIC_OR_PARTITION."""
    version = ctx.version
    offsets: dict[tuple[str, int], OffsetAndMetadata] = {}
    codes: dict[tuple[str, int], ErrorCode] = {}
    for topic in request.topics:
        for p in topic.partitions:
            key = (topic.name, p.partition_index)
            if key not in broker.partitions:
                codes[key] = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
                continue
            offsets[key] = OffsetAndMetadata(
                offset=p.committed_offset,
                leader_epoch=p.committed_leader_epoch if version >= 6 else -1,
                metadata=p.committed_metadata,
            )
    if offsets:
        codes.update(
            await broker.coordinator.commit_offsets(
                request.group_id,
                request.generation_id_or_member_epoch,
                request.member_id,
                request.group_instance_id if version >= 7 else None,
                offsets,
            )
        )
    topics = [
        _CommitTopic(
            name=topic.name,
            partitions=[
                _CommitPartition(
                    partition_index=p.partition_index,
                    error_code=int(codes.get((topic.name, p.partition_index), ErrorCode.NONE)),
                )
                for p in topic.partitions
            ],
        )
        for topic in request.topics
    ]
    return OffsetCommitResponse(version=version, throttle_time_ms=0, topics=topics)


def _fetch_group_offsets(
    broker: Broker, group_id: str, topics: list[ApiMessage] | None
) -> tuple[ErrorCode, dict[str, list[tuple[int, OffsetAndMetadata | None]]]]:
    wanted = None
    if topics is not None:
        wanted = [(t.name, p) for t in topics for p in t.partition_indexes]
    error, found = broker.coordinator.fetch_offsets(group_id, wanted)
    by_topic: dict[str, list[tuple[int, OffsetAndMetadata | None]]] = defaultdict(list)
    keys = wanted if wanted is not None else sorted(found)
    for topic, partition in keys:
        by_topic[topic].append((partition, found.get((topic, partition))))
    return error, by_topic


def _stable(
    broker: Broker,
    group_id: str,
    topic: str,
    index: int,
    om: OffsetAndMetadata | None,
    *,
    require_stable: bool,
) -> tuple[OffsetAndMetadata | None, int]:
    """The offset to answer and its error: with require_stable (v7+, KIP-447) a partition
    whose offset an undecided transaction commits is UNSTABLE_OFFSET_COMMIT, so the
    consumer retries instead of starting from an offset about to change."""
    if require_stable and broker.coordinator.has_pending_offset(group_id, (topic, index)):
        return None, int(ErrorCode.UNSTABLE_OFFSET_COMMIT)
    return om, 0


async def handle_offset_fetch(
    broker: Broker, ctx: RequestContext, request: ApiMessage
) -> ApiMessage:
    """Committed offsets of a group (v8+: of several groups); -1 where none is committed."""
    version = ctx.version
    require_stable = version >= 7 and bool(request.require_stable)
    if version >= 8:
        groups = []
        for group in request.groups:
            error, found = _fetch_group_offsets(broker, group.group_id, group.topics)
            by_topic = {
                name: [
                    (
                        index,
                        *_stable(
                            broker, group.group_id, name, index, om, require_stable=require_stable
                        ),
                    )
                    for index, om in partitions
                ]
                for name, partitions in found.items()
            }
            groups.append(
                _FetchGroup(
                    group_id=group.group_id,
                    error_code=int(error),
                    topics=[
                        _FetchGroupTopic(
                            name=name,
                            partitions=[
                                _FetchGroupPartition(
                                    partition_index=index,
                                    committed_offset=om.offset if om else -1,
                                    committed_leader_epoch=om.leader_epoch if om else -1,
                                    metadata=(om.metadata if om else None) or "",
                                    error_code=code,
                                )
                                for index, om, code in partitions
                            ],
                        )
                        for name, partitions in by_topic.items()
                    ],
                )
            )
        return OffsetFetchResponse(version=version, throttle_time_ms=0, groups=groups)

    error, found = _fetch_group_offsets(broker, request.group_id, request.topics)
    by_topic = {
        name: [
            (
                index,
                *_stable(broker, request.group_id, name, index, om, require_stable=require_stable),
            )
            for index, om in partitions
        ]
        for name, partitions in found.items()
    }
    # v1 has no top-level error code: a group-level error is reported on every partition.
    partition_error = int(error) if version < 2 else 0
    return OffsetFetchResponse(
        version=version,
        throttle_time_ms=0,
        error_code=int(error),
        topics=[
            _FetchTopic(
                name=name,
                partitions=[
                    _FetchPartition(
                        partition_index=index,
                        committed_offset=om.offset if om else -1,
                        committed_leader_epoch=om.leader_epoch if om else -1,
                        metadata=(om.metadata if om else None) or "",
                        error_code=partition_error or code,
                    )
                    for index, om, code in partitions
                ],
            )
            for name, partitions in by_topic.items()
        ],
    )


async def handle_describe_groups(
    broker: Broker, ctx: RequestContext, request: ApiMessage
) -> ApiMessage:
    """State, protocol and members of each group."""
    groups = []
    for group_id in request.groups:
        d = broker.coordinator.describe_group(group_id)
        groups.append(
            _DescribedGroup(
                error_code=int(d.error),
                error_message=None,
                group_id=d.group_id,
                group_state=d.state,
                protocol_type=d.protocol_type,
                protocol_data=d.protocol_name,
                members=[
                    _DescribedMember(
                        member_id=m.member_id,
                        group_instance_id=m.group_instance_id,
                        client_id=m.client_id,
                        client_host=m.client_host,
                        member_metadata=m.metadata,
                        member_assignment=m.assignment,
                    )
                    for m in d.members
                ],
                authorized_operations=None,  # Kafka's "not requested" (INT32_MIN)
            )
        )
    return DescribeGroupsResponse(version=ctx.version, throttle_time_ms=0, groups=groups)


async def handle_list_groups(
    broker: Broker, ctx: RequestContext, request: ApiMessage
) -> ApiMessage:
    """Every group this coordinator knows, with its protocol type."""
    return ListGroupsResponse(
        version=ctx.version,
        throttle_time_ms=0,
        error_code=0,
        groups=[
            _ListedGroup(group_id=group_id, protocol_type=protocol_type)
            for group_id, protocol_type in broker.coordinator.list_groups()
        ],
    )


async def handle_delete_groups(
    broker: Broker, ctx: RequestContext, request: ApiMessage
) -> ApiMessage:
    """Delete empty groups and their committed offsets (NON_EMPTY_GROUP otherwise)."""
    results = await broker.coordinator.delete_groups(list(request.groups_names))
    return DeleteGroupsResponse(
        version=ctx.version,
        throttle_time_ms=0,
        results=[
            _DeletedGroup(group_id=group_id, error_code=int(code))
            for group_id, code in results.items()
        ],
    )
