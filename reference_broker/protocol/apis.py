"""Which Kafka APIs the broker speaks, at which versions, and the kafka-python classes for them.

The ranges are chosen so that kafka-python 3.x, aiokafka 0.14 and librdkafka 2.x
(confluent-kafka) negotiate versions this broker fully implements:

- no version that names topics by id (Fetch v13+, Produce v13+, OffsetCommit v10+, ...)
  since clients then need topic ids everywhere;
- Produce from v3 (record batch v2, the only format the log stores, as Kafka 4.0);
- Fetch from v4 (isolation level, last stable offset), up to v12 (flexible);
- ListOffsets up to v6: v7 adds the max-timestamp query, which the log cannot answer cheaply;
- ListGroups up to v3: v4 filters by group state.

`CONTROLLER_APIS` are the inter-broker APIs of KRaft combined mode (quorum and
controller RPCs), one version each (see `controller_apis.py`). The server decodes
them like any other API, but ApiVersions does not list them: Kafka advertises
controller APIs only on the controller listener, never to clients.
"""

from __future__ import annotations

from dataclasses import dataclass

from kafka.protocol.admin import (
    AlterPartitionReassignmentsRequest,
    AlterPartitionReassignmentsResponse,
    CreateTopicsRequest,
    CreateTopicsResponse,
    DeleteGroupsRequest,
    DeleteGroupsResponse,
    DeleteTopicsRequest,
    DeleteTopicsResponse,
    DescribeConfigsRequest,
    DescribeConfigsResponse,
    DescribeGroupsRequest,
    DescribeGroupsResponse,
    ListGroupsRequest,
    ListGroupsResponse,
    ListPartitionReassignmentsRequest,
    ListPartitionReassignmentsResponse,
)
from kafka.protocol.api_key import ApiKey
from kafka.protocol.api_message import ApiMessage
from kafka.protocol.consumer import (
    FetchRequest,
    FetchResponse,
    HeartbeatRequest,
    HeartbeatResponse,
    JoinGroupRequest,
    JoinGroupResponse,
    LeaveGroupRequest,
    LeaveGroupResponse,
    ListOffsetsRequest,
    ListOffsetsResponse,
    OffsetCommitRequest,
    OffsetCommitResponse,
    OffsetFetchRequest,
    OffsetFetchResponse,
    OffsetForLeaderEpochRequest,
    OffsetForLeaderEpochResponse,
    SyncGroupRequest,
    SyncGroupResponse,
)
from kafka.protocol.metadata import (
    ApiVersionsRequest,
    ApiVersionsResponse,
    FindCoordinatorRequest,
    FindCoordinatorResponse,
    MetadataRequest,
    MetadataResponse,
)
from kafka.protocol.producer import (
    AddOffsetsToTxnRequest,
    AddOffsetsToTxnResponse,
    AddPartitionsToTxnRequest,
    AddPartitionsToTxnResponse,
    EndTxnRequest,
    EndTxnResponse,
    InitProducerIdRequest,
    InitProducerIdResponse,
    ProduceRequest,
    ProduceResponse,
    TxnOffsetCommitRequest,
    TxnOffsetCommitResponse,
    WriteTxnMarkersRequest,
    WriteTxnMarkersResponse,
)

from .controller_apis import (
    ALTER_PARTITION_VERSION,
    BEGIN_QUORUM_EPOCH_VERSION,
    BROKER_HEARTBEAT_VERSION,
    BROKER_REGISTRATION_VERSION,
    END_QUORUM_EPOCH_VERSION,
    UNREGISTER_BROKER_VERSION,
    VOTE_VERSION,
    AlterPartitionRequest,
    AlterPartitionResponse,
    BeginQuorumEpochRequest,
    BeginQuorumEpochResponse,
    BrokerHeartbeatRequest,
    BrokerHeartbeatResponse,
    BrokerRegistrationRequest,
    BrokerRegistrationResponse,
    EndQuorumEpochRequest,
    EndQuorumEpochResponse,
    UnregisterBrokerRequest,
    UnregisterBrokerResponse,
    VoteRequest,
    VoteResponse,
)


@dataclass(frozen=True)
class ApiSpec:
    """One API: its key, request/response classes and the version range this broker serves."""

    key: ApiKey
    request: type[ApiMessage]
    response: type[ApiMessage]
    min_version: int
    max_version: int

    def supports(self, version: int) -> bool:
        """Whether this broker serves `version` of the API."""
        return self.min_version <= version <= self.max_version

    def answerable(self, version: int) -> bool:
        """Whether a response can be encoded at `version` (kafka-python has its schema).

        A request at a version outside this range (a negative one, or one newer than any
        schema) can only be answered by closing the connection.
        """
        return 0 <= version <= self.response.max_version

    def flexible(self, version: int) -> bool:
        """Whether `version` uses flexible encoding (compact types, tagged fields, header v2)."""
        return bool(self.request.flexible_version_q(version))


def _spec(
    key: ApiKey, request: type[ApiMessage], response: type[ApiMessage], lo: int, hi: int
) -> ApiSpec:
    # Guard against advertising a version kafka-python cannot encode.
    if hi > request.max_version or hi > response.max_version:
        raise ValueError(f"{key.name} v{hi} is beyond kafka-python's schemas")
    return ApiSpec(key, request, response, lo, hi)


SUPPORTED_APIS: dict[int, ApiSpec] = {
    spec.key: spec
    for spec in (
        _spec(ApiKey.Produce, ProduceRequest, ProduceResponse, 3, 9),
        _spec(ApiKey.Fetch, FetchRequest, FetchResponse, 4, 12),
        _spec(ApiKey.ListOffsets, ListOffsetsRequest, ListOffsetsResponse, 1, 6),
        _spec(ApiKey.Metadata, MetadataRequest, MetadataResponse, 0, 12),
        _spec(ApiKey.OffsetCommit, OffsetCommitRequest, OffsetCommitResponse, 2, 8),
        _spec(ApiKey.OffsetFetch, OffsetFetchRequest, OffsetFetchResponse, 1, 8),
        _spec(ApiKey.FindCoordinator, FindCoordinatorRequest, FindCoordinatorResponse, 0, 4),
        _spec(ApiKey.JoinGroup, JoinGroupRequest, JoinGroupResponse, 0, 9),
        _spec(ApiKey.Heartbeat, HeartbeatRequest, HeartbeatResponse, 0, 4),
        _spec(ApiKey.LeaveGroup, LeaveGroupRequest, LeaveGroupResponse, 0, 5),
        _spec(ApiKey.SyncGroup, SyncGroupRequest, SyncGroupResponse, 0, 5),
        _spec(ApiKey.DescribeGroups, DescribeGroupsRequest, DescribeGroupsResponse, 0, 5),
        _spec(ApiKey.ListGroups, ListGroupsRequest, ListGroupsResponse, 0, 3),
        _spec(ApiKey.ApiVersions, ApiVersionsRequest, ApiVersionsResponse, 0, 3),
        _spec(ApiKey.CreateTopics, CreateTopicsRequest, CreateTopicsResponse, 2, 7),
        _spec(ApiKey.DeleteTopics, DeleteTopicsRequest, DeleteTopicsResponse, 1, 5),
        _spec(ApiKey.InitProducerId, InitProducerIdRequest, InitProducerIdResponse, 0, 4),
        _spec(
            ApiKey.OffsetForLeaderEpoch,
            OffsetForLeaderEpochRequest,
            OffsetForLeaderEpochResponse,
            2,
            4,
        ),
        _spec(ApiKey.DescribeConfigs, DescribeConfigsRequest, DescribeConfigsResponse, 1, 4),
        _spec(ApiKey.DeleteGroups, DeleteGroupsRequest, DeleteGroupsResponse, 0, 2),
        # Transactions: v4+ of AddPartitionsToTxn is the broker-side batch form, EndTxn v5
        # and TxnOffsetCommit v4+ belong to transactions v2 (KIP-890), not served.
        _spec(
            ApiKey.AddPartitionsToTxn, AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, 0, 3
        ),
        _spec(ApiKey.AddOffsetsToTxn, AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, 0, 3),
        _spec(ApiKey.EndTxn, EndTxnRequest, EndTxnResponse, 0, 3),
        _spec(ApiKey.TxnOffsetCommit, TxnOffsetCommitRequest, TxnOffsetCommitResponse, 0, 3),
        _spec(
            ApiKey.AlterPartitionReassignments,
            AlterPartitionReassignmentsRequest,
            AlterPartitionReassignmentsResponse,
            0,
            1,
        ),
        _spec(
            ApiKey.ListPartitionReassignments,
            ListPartitionReassignmentsRequest,
            ListPartitionReassignmentsResponse,
            0,
            0,
        ),
        _spec(
            ApiKey.UnregisterBroker,
            UnregisterBrokerRequest,
            UnregisterBrokerResponse,
            UNREGISTER_BROKER_VERSION,
            UNREGISTER_BROKER_VERSION,
        ),
    )
}

CONTROLLER_APIS: dict[int, ApiSpec] = {
    spec.key: spec
    for spec in (
        _spec(ApiKey.Vote, VoteRequest, VoteResponse, VOTE_VERSION, VOTE_VERSION),
        _spec(
            ApiKey.BeginQuorumEpoch,
            BeginQuorumEpochRequest,
            BeginQuorumEpochResponse,
            BEGIN_QUORUM_EPOCH_VERSION,
            BEGIN_QUORUM_EPOCH_VERSION,
        ),
        _spec(
            ApiKey.EndQuorumEpoch,
            EndQuorumEpochRequest,
            EndQuorumEpochResponse,
            END_QUORUM_EPOCH_VERSION,
            END_QUORUM_EPOCH_VERSION,
        ),
        _spec(
            ApiKey.AlterPartition,
            AlterPartitionRequest,
            AlterPartitionResponse,
            ALTER_PARTITION_VERSION,
            ALTER_PARTITION_VERSION,
        ),
        _spec(
            ApiKey.BrokerRegistration,
            BrokerRegistrationRequest,
            BrokerRegistrationResponse,
            BROKER_REGISTRATION_VERSION,
            BROKER_REGISTRATION_VERSION,
        ),
        _spec(
            ApiKey.BrokerHeartbeat,
            BrokerHeartbeatRequest,
            BrokerHeartbeatResponse,
            BROKER_HEARTBEAT_VERSION,
            BROKER_HEARTBEAT_VERSION,
        ),
        _spec(ApiKey.WriteTxnMarkers, WriteTxnMarkersRequest, WriteTxnMarkersResponse, 1, 1),
    )
}

ALL_APIS: dict[int, ApiSpec] = {**SUPPORTED_APIS, **CONTROLLER_APIS}
"""Every API the server decodes: the advertised ones and the inter-broker ones."""
