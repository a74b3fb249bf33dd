"""Metadata, CreateTopics, DeleteTopics and DescribeConfigs: the topic-level APIs."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from kafka.protocol.admin import CreateTopicsResponse, DeleteTopicsResponse, DescribeConfigsResponse
from kafka.protocol.api_message import ApiMessage
from kafka.protocol.metadata import MetadataResponse

from ..controller.records import NO_LEADER
from ..errors import BrokerError, ErrorCode
from ..metadata import INTERNAL_TOPICS, TopicRecord
from .context import RequestContext

if TYPE_CHECKING:
    from ..broker import Broker

_Broker = MetadataResponse.MetadataResponseBroker
_Topic = MetadataResponse.MetadataResponseTopic
_Partition = _Topic.MetadataResponsePartition
_CreatedTopic = CreateTopicsResponse.CreatableTopicResult
_CreatedConfig = _CreatedTopic.CreatableTopicConfigs
_DeletedTopic = DeleteTopicsResponse.DeletableTopicResult
_ConfigResult = DescribeConfigsResponse.DescribeConfigsResult
_ConfigEntry = _ConfigResult.DescribeConfigsResourceResult

ZERO_UUID = uuid.UUID(int=0)
# DescribeConfigs / CreateTopics config sources (ConfigSource in Kafka's admin API).
SOURCE_TOPIC_CONFIG = 1
SOURCE_STATIC_BROKER_CONFIG = 4
SOURCE_DEFAULT_CONFIG = 5
RESOURCE_TOPIC = 2
RESOURCE_BROKER = 4


def _cluster_partition(broker: Broker, topic: str, index: int) -> ApiMessage:
    assert broker.cluster is not None
    found = broker.cluster.assignment(topic, index)
    if found is None or found.leader == NO_LEADER:
        # Kafka lists a leaderless partition with its replicas and LEADER_NOT_AVAILABLE.
        return _Partition(
            error_code=int(ErrorCode.LEADER_NOT_AVAILABLE),
            partition_index=index,
            leader_id=-1,
            leader_epoch=found.leader_epoch if found else -1,
            replica_nodes=list(found.replicas) if found else [],
            isr_nodes=list(found.isr) if found else [],
            offline_replicas=[],
        )
    live = {b.node_id for b in broker.cluster.live_brokers()}
    return _Partition(
        error_code=0,
        partition_index=index,
        leader_id=found.leader,
        leader_epoch=found.leader_epoch,
        replica_nodes=list(found.replicas),
        isr_nodes=list(found.isr),
        offline_replicas=[r for r in found.replicas if r not in live],
    )


def _topic_metadata(broker: Broker, record: TopicRecord) -> ApiMessage:
    partitions = []
    for index in range(record.partitions):
        if broker.cluster is not None:
            partitions.append(_cluster_partition(broker, record.name, index))
            continue
        partition = broker.partitions.get((record.name, index))
        if partition is None:
            partitions.append(
                _Partition(
                    error_code=int(ErrorCode.LEADER_NOT_AVAILABLE),
                    partition_index=index,
                    leader_id=-1,
                    leader_epoch=-1,
                    replica_nodes=[],
                    isr_nodes=[],
                    offline_replicas=[],
                )
            )
            continue
        partitions.append(
            _Partition(
                error_code=0,
                partition_index=index,
                leader_id=partition.leader_id,
                leader_epoch=partition.leader_epoch,
                replica_nodes=list(partition.replicas),
                isr_nodes=sorted(partition.isr),
                offline_replicas=[],
            )
        )
    return _Topic(
        error_code=0,
        name=record.name,
        topic_id=record.uuid,
        is_internal=False,
        partitions=partitions,
        authorized_operations=None,  # Kafka's "not requested" (INT32_MIN)
    )


def _missing_topic(
    name: str | None, code: ErrorCode, topic_id: uuid.UUID = ZERO_UUID
) -> ApiMessage:
    return _Topic(
        error_code=int(code),
        name=name,
        topic_id=topic_id,
        is_internal=name in INTERNAL_TOPICS,
        partitions=[],
        authorized_operations=None,  # Kafka's "not requested" (INT32_MIN)
    )


async def handle_metadata(broker: Broker, ctx: RequestContext, request: ApiMessage) -> ApiMessage:
    """Brokers, cluster id, controller and the requested (or all) topics' partitions."""
    version = ctx.version
    requested = request.topics
    # v0: an empty list means all topics; v1+: null means all, empty means none.
    all_topics = requested is None or (version == 0 and not requested)
    allow_auto_create = version < 4 or request.allow_auto_topic_creation
    topics: list[ApiMessage] = []
    if all_topics:
        topics = [_topic_metadata(broker, record) for record in broker.topics]
    else:
        for wanted in requested:
            name = wanted.name
            if name is None:  # v10+: by topic id
                record = next((r for r in broker.topics if r.uuid == wanted.topic_id), None)
                if record is None:
                    topics.append(_missing_topic(None, ErrorCode.UNKNOWN_TOPIC_ID, wanted.topic_id))
                else:
                    topics.append(_topic_metadata(broker, record))
                continue
            record = broker.topics.get(name)
            if record is None and allow_auto_create and name not in INTERNAL_TOPICS:
                try:
                    record = await broker.ensure_topic(name)
                except BrokerError as exc:
                    topics.append(_missing_topic(name, exc.code))
                    continue
            if record is None:
                topics.append(_missing_topic(name, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION))
            else:
                topics.append(_topic_metadata(broker, record))
    if broker.cluster is not None:
        brokers = [
            _Broker(node_id=b.node_id, host=b.host, port=b.port, rack=None)
            for b in broker.cluster.live_brokers()
        ]
        controller_id = broker.cluster.controller_id
    else:
        endpoint = broker.endpoint
        brokers = [
            _Broker(node_id=endpoint.node_id, host=endpoint.host, port=endpoint.port, rack=None)
        ]
        controller_id = broker.node_id
    return MetadataResponse(
        version=version,
        throttle_time_ms=0,
        brokers=brokers,
        cluster_id=broker.cluster_id,
        controller_id=controller_id,
        topics=topics,
        authorized_operations=None,  # Kafka's "not requested" (INT32_MIN)
    )


def _effective_configs(broker: Broker, record: TopicRecord) -> list[tuple[str, str, int]]:
    """(name, value, source) of every config of a topic."""
    values = broker.topic_log_config(record).to_kafka()
    return [
        (
            name,
            value,
            SOURCE_TOPIC_CONFIG if name in record.configs else SOURCE_DEFAULT_CONFIG,
        )
        for name, value in sorted(values.items())
    ]


async def handle_controller_create_topics(
    broker: Broker, ctx: RequestContext, request: ApiMessage
) -> ApiMessage:
    """CreateTopics on a controller listener (a broker forwarding its client's request, or
    creating __consumer_offsets), served by the controller service itself, as Kafka's
    ControllerApis does: a node that is not the active controller answers NOT_CONTROLLER
    instead of forwarding once more."""
    refused = _over_request_limit(broker, ctx, request)
    if refused is not None:
        return refused
    service = broker.controller_service
    results = []
    for topic in request.topics:
        if service is None:
            results.append(
                _CreatedTopic(
                    name=topic.name,
                    topic_id=ZERO_UUID,
                    error_code=int(ErrorCode.NOT_CONTROLLER),
                    error_message="this node runs no controller",
                    num_partitions=-1,
                    replication_factor=-1,
                    configs=None,
                )
            )
            continue
        configs = {c.name: c.value for c in topic.configs if c.value is not None}
        result = await service.create_topic(
            topic.name,
            topic.num_partitions,
            topic.replication_factor,
            configs,
            validate_only=request.validate_only,
        )
        results.append(
            _CreatedTopic(
                name=topic.name,
                topic_id=ZERO_UUID,
                error_code=result.error_code,
                error_message=result.message,
                num_partitions=topic.num_partitions,
                replication_factor=topic.replication_factor,
                configs=None,
            )
        )
    return CreateTopicsResponse(version=ctx.version, throttle_time_ms=0, topics=results)


def _over_request_limit(
    broker: Broker, ctx: RequestContext, request: ApiMessage
) -> ApiMessage | None:
    """The refusal of a CreateTopics that asks for more partitions than one request may
    create, or None when it is within create.topics.max.partitions.per.request.

    As Kafka's controller does with a request above its partition batch limit: the whole
    request is refused before any topic is looked at, so nothing is created.
    """
    limit = broker.config.create_topics_max_partitions_per_request
    requested = _requested_partitions(broker, request)
    if requested <= limit:
        return None
    return _refuse_all(
        request,
        ctx.version,
        ErrorCode.POLICY_VIOLATION,
        f"the request would create {requested} partitions, above "
        f"create.topics.max.partitions.per.request={limit}",
    )


def _requested_partitions(broker: Broker, request: ApiMessage) -> int:
    """Partitions the whole CreateTopics request would create (bad counts count as 0)."""
    total = 0
    for topic in request.topics:
        if topic.assignments:
            total += len(topic.assignments)
        elif topic.num_partitions == -1:
            total += broker.config.num_partitions
        else:
            total += max(topic.num_partitions, 0)
    return total


def _refuse_all(request: ApiMessage, version: int, code: ErrorCode, message: str) -> ApiMessage:
    results = [
        _CreatedTopic(
            name=topic.name,
            topic_id=ZERO_UUID,
            error_code=int(code),
            error_message=message,
            num_partitions=-1,
            replication_factor=-1,
            configs=None,
        )
        for topic in request.topics
    ]
    return CreateTopicsResponse(version=version, throttle_time_ms=0, topics=results)


async def handle_create_topics(
    broker: Broker, ctx: RequestContext, request: ApiMessage
) -> ApiMessage:
    """Create each topic (or only validate, if asked)."""
    refused = _over_request_limit(broker, ctx, request)
    if refused is not None:
        return refused
    version = ctx.version
    results = []
    for topic in request.topics:
        configs = {c.name: c.value for c in topic.configs if c.value is not None}
        num_partitions = topic.num_partitions
        factor = topic.replication_factor
        try:
            if topic.assignments and broker.cluster is not None:
                raise BrokerError(
                    "manual replica assignments are not supported; give numPartitions and "
                    "replicationFactor and the controller places the replicas",
                    ErrorCode.INVALID_REPLICA_ASSIGNMENT,
                )
            if topic.assignments:
                # Manual assignment: every replica list must be exactly this node.
                if num_partitions != -1 or factor != -1:
                    raise BrokerError(
                        "both assignments and numPartitions/replicationFactor were given",
                        ErrorCode.INVALID_REQUEST,
                    )
                for assignment in topic.assignments:
                    if list(assignment.broker_ids) != [broker.node_id]:
                        raise BrokerError(
                            f"replica assignment {list(assignment.broker_ids)} names brokers "
                            f"other than the single node {broker.node_id}",
                            ErrorCode.INVALID_REPLICA_ASSIGNMENT,
                        )
                num_partitions, factor = len(topic.assignments), 1
            record = await broker.create_topic(
                topic.name,
                num_partitions,
                factor,
                configs,
                validate_only=request.validate_only,
            )
        except BrokerError as exc:
            results.append(
                _CreatedTopic(
                    name=topic.name,
                    topic_id=ZERO_UUID,
                    error_code=int(exc.code),
                    error_message=str(exc),
                    num_partitions=-1,
                    replication_factor=-1,
                    configs=None,
                )
            )
            continue
        if record is None:  # validate_only
            results.append(
                _CreatedTopic(
                    name=topic.name,
                    topic_id=ZERO_UUID,
                    error_code=0,
                    error_message=None,
                    num_partitions=num_partitions
                    if num_partitions != -1
                    else broker.config.num_partitions,
                    replication_factor=1,
                    configs=[],
                )
            )
            continue
        results.append(
            _CreatedTopic(
                name=record.name,
                topic_id=record.uuid,
                error_code=0,
                error_message=None,
                num_partitions=record.partitions,
                replication_factor=record.replication_factor,
                configs=[
                    _CreatedConfig(
                        name=name,
                        value=value,
                        read_only=False,
                        config_source=source,
                        is_sensitive=False,
                    )
                    for name, value, source in _effective_configs(broker, record)
                ],
            )
        )
    return CreateTopicsResponse(version=version, throttle_time_ms=0, topics=results)


async def handle_delete_topics(
    broker: Broker, ctx: RequestContext, request: ApiMessage
) -> ApiMessage:
    """Delete each named topic with its logs."""
    results = []
    for name in request.topic_names:
        try:
            if name in INTERNAL_TOPICS:
                raise BrokerError(
                    f"{name} is an internal topic", ErrorCode.TOPIC_AUTHORIZATION_FAILED
                )
            await broker.delete_topic(name)
        except BrokerError as exc:
            results.append(
                _DeletedTopic(name=name, error_code=int(exc.code), error_message=str(exc))
            )
            continue
        results.append(_DeletedTopic(name=name, error_code=0, error_message=None))
    return DeleteTopicsResponse(version=ctx.version, throttle_time_ms=0, responses=results)


async def handle_controller_delete_topics(
    broker: Broker, ctx: RequestContext, request: ApiMessage
) -> ApiMessage:
    """DeleteTopics on a controller listener, served by the controller service itself
    (NOT_CONTROLLER unless it is the active controller)."""
    service = broker.controller_service
    results = []
    for name in request.topic_names:
        if service is None:
            results.append(
                _DeletedTopic(
                    name=name,
                    error_code=int(ErrorCode.NOT_CONTROLLER),
                    error_message="this node runs no controller",
                )
            )
            continue
        result = await service.delete_topic(name)
        results.append(
            _DeletedTopic(name=name, error_code=result.error_code, error_message=result.message)
        )
    return DeleteTopicsResponse(version=ctx.version, throttle_time_ms=0, responses=results)


async def handle_describe_configs(
    broker: Broker, ctx: RequestContext, request: ApiMessage
) -> ApiMessage:
    """Topic configs (topic overrides over broker defaults) and the broker's own settings."""
    results = []
    for resource in request.resources:
        # Null or empty both mean "every config", as Kafka's ConfigHelper reads them.
        keys = set(resource.configuration_keys or ()) or None
        entries: list[tuple[str, str, int]] = []
        error, message = ErrorCode.NONE, None
        if resource.resource_type == RESOURCE_TOPIC:
            record = broker.topics.get(resource.resource_name)
            if record is None:
                error = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
                message = f"topic {resource.resource_name!r} does not exist"
            else:
                entries = _effective_configs(broker, record)
        elif resource.resource_type == RESOURCE_BROKER:
            if resource.resource_name not in ("", str(broker.node_id)):
                error = ErrorCode.INVALID_REQUEST
                message = f"this is broker {broker.node_id}, not {resource.resource_name}"
            else:
                entries = [
                    (name, str(value), SOURCE_STATIC_BROKER_CONFIG)
                    for name, value in sorted(broker.config.properties.items())
                ]
        else:
            error = ErrorCode.INVALID_REQUEST
            message = f"resource type {resource.resource_type} is not supported"
        results.append(
            _ConfigResult(
                error_code=int(error),
                error_message=message,
                resource_type=resource.resource_type,
                resource_name=resource.resource_name,
                configs=[
                    _ConfigEntry(
                        name=name,
                        value=value,
                        read_only=False,
                        config_source=source,
                        is_sensitive=False,
                        synonyms=[],
                        config_type=0,
                        documentation=None,
                    )
                    for name, value, source in entries
                    if keys is None or name in keys
                ],
            )
        )
    return DescribeConfigsResponse(version=ctx.version, throttle_time_ms=0, results=results)
