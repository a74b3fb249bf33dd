"""Request handlers, one module per API family, and the tables that dispatch to them.

A handler is `async def handle_x(broker, ctx, request) -> response | None`: it gets
the decoded request body and returns the response body at the request's version
(None means "no response", only for acks=0 produce). Errors a client should see are
Kafka error codes inside the response; `CloseConnection` asks the server to close.

Each kind of listener has its own table, and serves only the APIs in it (Kafka's
per-listener API scopes, `ApiMessageType.ListenerType`):

- `BROKER_HANDLERS`, for the client listeners (every listener not named in
  controller.listener.names): the client APIs, Fetch for replication, and the admin
  APIs forwarded to the active controller (AlterPartitionReassignments,
  ListPartitionReassignments, UnregisterBroker).
- `CONTROLLER_HANDLERS`, for the controller listeners: the Raft quorum (Vote,
  BeginQuorumEpoch, EndQuorumEpoch, Fetch of `__cluster_metadata`), the brokers'
  requests to the controller (BrokerRegistration, BrokerHeartbeat, AlterPartition)
  and the requests brokers forward to it (CreateTopics, DeleteTopics and the three
  admin APIs above), as Kafka's ControllerApis serves them; and WriteTxnMarkers,
  the transaction coordinators' markers, kept off the client listeners so that no
  client can write a commit or an abort.

An API missing from a listener's table is not in its ApiVersions, and a request for
it closes the connection (see `server.py`).
"""

from __future__ import annotations

from kafka.protocol.api_key import ApiKey

from .api_versions import api_versions_handler
from .context import CloseConnection, Handler, RequestContext
from .controller import (
    handle_alter_partition,
    handle_broker_heartbeat,
    handle_broker_registration,
)
from .fetch import handle_fetch
from .groups import (
    handle_delete_groups,
    handle_describe_groups,
    handle_find_coordinator,
    handle_heartbeat,
    handle_join_group,
    handle_leave_group,
    handle_list_groups,
    handle_offset_commit,
    handle_offset_fetch,
    handle_sync_group,
)
from .metadata import (
    handle_controller_create_topics,
    handle_controller_delete_topics,
    handle_create_topics,
    handle_delete_topics,
    handle_describe_configs,
    handle_metadata,
)
from .offsets import handle_list_offsets, handle_offset_for_leader_epoch
from .produce import handle_produce
from .producer_id import handle_init_producer_id
from .quorum import (
    handle_begin_quorum_epoch,
    handle_controller_fetch,
    handle_end_quorum_epoch,
    handle_vote,
)
from .reassignment import (
    handle_alter_partition_reassignments,
    handle_controller_alter_partition_reassignments,
    handle_controller_list_partition_reassignments,
    handle_controller_unregister_broker,
    handle_list_partition_reassignments,
    handle_unregister_broker,
)
from .transactions import (
    handle_add_offsets_to_txn,
    handle_add_partitions_to_txn,
    handle_end_txn,
    handle_txn_offset_commit,
    handle_write_txn_markers,
)

BROKER_HANDLERS: dict[int, Handler] = {
    ApiKey.Produce: handle_produce,
    ApiKey.Fetch: handle_fetch,
    ApiKey.ListOffsets: handle_list_offsets,
    ApiKey.Metadata: handle_metadata,
    ApiKey.OffsetCommit: handle_offset_commit,
    ApiKey.OffsetFetch: handle_offset_fetch,
    ApiKey.FindCoordinator: handle_find_coordinator,
    ApiKey.JoinGroup: handle_join_group,
    ApiKey.Heartbeat: handle_heartbeat,
    ApiKey.LeaveGroup: handle_leave_group,
    ApiKey.SyncGroup: handle_sync_group,
    ApiKey.DescribeGroups: handle_describe_groups,
    ApiKey.ListGroups: handle_list_groups,
    ApiKey.CreateTopics: handle_create_topics,
    ApiKey.DeleteTopics: handle_delete_topics,
    ApiKey.InitProducerId: handle_init_producer_id,
    ApiKey.OffsetForLeaderEpoch: handle_offset_for_leader_epoch,
    ApiKey.DescribeConfigs: handle_describe_configs,
    ApiKey.DeleteGroups: handle_delete_groups,
    ApiKey.AddPartitionsToTxn: handle_add_partitions_to_txn,
    ApiKey.AddOffsetsToTxn: handle_add_offsets_to_txn,
    ApiKey.EndTxn: handle_end_txn,
    ApiKey.TxnOffsetCommit: handle_txn_offset_commit,
    # Forwarded to the active controller, as Kafka forwards them.
    ApiKey.AlterPartitionReassignments: handle_alter_partition_reassignments,
    ApiKey.ListPartitionReassignments: handle_list_partition_reassignments,
    ApiKey.UnregisterBroker: handle_unregister_broker,
}
"""What a client listener serves (ApiVersions is added below)."""
BROKER_HANDLERS[ApiKey.ApiVersions] = api_versions_handler([*BROKER_HANDLERS, ApiKey.ApiVersions])

CONTROLLER_HANDLERS: dict[int, Handler] = {
    # The controller quorum (KRaft); Fetch here is only ever the metadata log's.
    ApiKey.Vote: handle_vote,
    ApiKey.BeginQuorumEpoch: handle_begin_quorum_epoch,
    ApiKey.EndQuorumEpoch: handle_end_quorum_epoch,
    ApiKey.Fetch: handle_controller_fetch,
    # Brokers' requests to the active controller.
    ApiKey.BrokerRegistration: handle_broker_registration,
    ApiKey.BrokerHeartbeat: handle_broker_heartbeat,
    ApiKey.AlterPartition: handle_alter_partition,
    ApiKey.CreateTopics: handle_controller_create_topics,
    ApiKey.DeleteTopics: handle_controller_delete_topics,
    # A transaction coordinator's markers to the partitions this node leads (inter-broker,
    # never on a client listener).
    ApiKey.WriteTxnMarkers: handle_write_txn_markers,
    ApiKey.AlterPartitionReassignments: handle_controller_alter_partition_reassignments,
    ApiKey.ListPartitionReassignments: handle_controller_list_partition_reassignments,
    ApiKey.UnregisterBroker: handle_controller_unregister_broker,
}
"""What a controller listener serves (ApiVersions is added below)."""
CONTROLLER_HANDLERS[ApiKey.ApiVersions] = api_versions_handler(
    [*CONTROLLER_HANDLERS, ApiKey.ApiVersions]
)

__all__ = [
    "BROKER_HANDLERS",
    "CONTROLLER_HANDLERS",
    "CloseConnection",
    "Handler",
    "RequestContext",
]
