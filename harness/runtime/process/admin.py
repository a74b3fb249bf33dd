"""Admin requests of the process runtime's membership changes, over the Kafka wire.

Like the belief watcher (`observer.py`), these go to a running broker's own port, not
through the fault proxies: the harness acts past the faults it injects, as an
operator's admin tool on the brokers' network would. The broker forwards each request
to the active controller, as Kafka does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import trio
from kafka.protocol.admin import (
    AlterPartitionReassignmentsRequest,
    ListPartitionReassignmentsRequest,
)
from kafka.protocol.api_message import ApiMessage
from kafka.protocol.metadata import MetadataRequest

from reference_broker.protocol.controller_apis import UnregisterBrokerRequest
from workloads.client.connection import Connection

REQUEST_TIMEOUT_S = 10.0
METADATA_VERSION = 9
OFFSETS_TOPIC = "__consumer_offsets"


class AdminError(RuntimeError):
    """A request the cluster refused; the message names the error."""


@dataclass(frozen=True)
class Address:
    """A broker's own listener."""

    host: str
    port: int
    node_id: int


async def exchange(address: Address, body: ApiMessage, version: int) -> ApiMessage:
    """One request and its response."""
    stream = await trio.open_tcp_stream(address.host, address.port)
    conn = Connection(stream, node_id=address.node_id,
                      address=f"{address.host}:{address.port}",
                      client_id="faultline-harness-admin")
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(conn.run)
            try:
                return await conn.request(body, version, REQUEST_TIMEOUT_S)
            finally:
                conn.close()
                nursery.cancel_scope.cancel()
    finally:
        await trio.aclose_forcefully(stream)


async def reassign(address: Address, topic: str, partition: int,
                   replicas: tuple[int, ...] | None) -> None:
    """AlterPartitionReassignments of one partition (None cancels); AdminError if refused."""
    topic_class = AlterPartitionReassignmentsRequest.ReassignableTopic
    request = AlterPartitionReassignmentsRequest(
        timeout_ms=int(REQUEST_TIMEOUT_S * 1000),
        allow_replication_factor_change=True,
        topics=[topic_class(name=topic, partitions=[topic_class.ReassignablePartition(
            partition_index=partition, replicas=None if replicas is None else list(replicas))])],
    )
    response = await exchange(address, request, 1)
    errors = [(response.error_code, response.error_message)] + [
        (p.error_code, p.error_message) for t in response.responses for p in t.partitions
    ]
    for code, message in errors:
        if code:
            raise AdminError(f"reassigning {topic}-{partition} to {replicas}: error {code} "
                             f"({message})")


async def targets(address: Address) -> dict[tuple[str, int], tuple[int, ...]]:
    """Every partition's replicas once its ongoing reassignment (if any) completes."""
    found = dict(await replicas(address))
    listed = await exchange(address, ListPartitionReassignmentsRequest(
        timeout_ms=int(REQUEST_TIMEOUT_S * 1000), topics=None), 0)
    if listed.error_code:
        raise AdminError(f"listing reassignments: error {listed.error_code}")
    for topic in listed.topics:
        for p in topic.partitions:
            found[(topic.name, p.partition_index)] = tuple(
                r for r in p.replicas if r not in p.removing_replicas
            )
    return found


async def replicas(address: Address) -> Mapping[tuple[str, int], tuple[int, ...]]:
    """Every partition's replicas as Metadata lists them (adding and removing included)."""
    found: dict[tuple[str, int], tuple[int, ...]] = {}
    for names in (None, [OFFSETS_TOPIC]):
        topic_class = MetadataRequest.MetadataRequestTopic
        request = MetadataRequest(
            topics=None if names is None else [topic_class(name=n) for n in names],
            allow_auto_topic_creation=False,
        )
        response = await exchange(address, request, METADATA_VERSION)
        for topic in response.topics:
            for p in topic.partitions:
                found[(topic.name, p.partition_index)] = tuple(p.replica_nodes)
    return found


async def live_brokers(address: Address) -> set[int]:
    """The brokers Metadata lists (registered and unfenced)."""
    response = await exchange(address, MetadataRequest(topics=[]), METADATA_VERSION)
    return {b.node_id for b in response.brokers}


async def unregister(address: Address, broker_id: int) -> None:
    """UnregisterBroker; AdminError if refused."""
    response = await exchange(address, UnregisterBrokerRequest(broker_id=broker_id), 0)
    if response.error_code:
        raise AdminError(f"unregistering broker {broker_id}: error {response.error_code} "
                         f"({response.error_message})")
