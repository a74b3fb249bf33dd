"""Writing transaction markers: locally as a partition's leader, or through WriteTxnMarkers.

Kafka's TransactionMarkerChannelManager: the coordinator groups a transaction's
partitions by leader and sends each leader one WriteTxnMarkers request; a leader writes
the control batch, waits until the ISR holds it (acks=all) and answers per partition.
A partition led by the coordinator's own node is written directly.

WriteTxnMarkers is an inter-broker API: it is sent to, and served on, the leader's
controller listener (every node of a KRaft cluster here is a combined broker and
controller voter), never a client listener, so no client can forge a commit or abort.

A marker written to a `__consumer_offsets` partition also completes the transactional
offset commits of that producer held by the group coordinator (Kafka's
onTransactionCompleted): committed offsets become visible, aborted ones are dropped.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio
from kafka.protocol.producer import WriteTxnMarkersRequest

from ..errors import BrokerError, ErrorCode
from ..group.offsets_store import OFFSETS_TOPIC
from ..log.control_batch import TxnMarker
from ..peer.channel import PeerChannel, PeerUnavailableError
from .coordinator import MarkerRequest
from .records import TopicPartition

if TYPE_CHECKING:
    from ..broker import Broker

logger = logging.getLogger("faultline.broker.txn")

WRITE_TXN_MARKERS_VERSION = 1
# Connections per leader: a connection carries one request at a time and each waits for
# its markers to replicate, so independent transactions spread over a few of them.
CHANNELS_PER_LEADER = 4
# How long a leader waits for its ISR to take a marker before answering with an error.
MARKER_REPLICATION_TIMEOUT_S = 5.0
_Marker = WriteTxnMarkersRequest.WritableTxnMarker
_MarkerTopic = _Marker.WritableTxnMarkerTopic


async def write_marker_locally(
    broker: Broker,
    topic: str,
    index: int,
    producer_id: int,
    producer_epoch: int,
    marker: TxnMarker,
) -> ErrorCode:
    """Write one marker as the partition's leader and wait until it is committed."""
    try:
        partition = broker.partitions.get((topic, index))
        if partition is None and broker.cluster is None and topic == OFFSETS_TOPIC:
            # A standalone node keeps its offsets logs outside `partitions`.
            log = broker.logs.get(topic, index)
            if log is None:
                return ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
            log.append_marker_as_leader(producer_id, producer_epoch, marker, 0)
            log.update_high_watermark(log.log_end_offset)
            if log.flush_due(broker.env.clock.now_ms()):
                await log.flush()
        else:
            partition = broker.partition(topic, index)
            leader_epoch = partition.leader_epoch
            appended = partition.append_marker_as_leader(producer_id, producer_epoch, marker)
            await broker.flush_if_due(partition)
            code = await partition.wait_for_high_watermark(
                appended.last_offset + 1, MARKER_REPLICATION_TIMEOUT_S, leader_epoch
            )
            if code is not ErrorCode.NONE:
                return code
    except BrokerError as exc:
        return exc.code
    if topic == OFFSETS_TOPIC:
        broker.coordinator.complete_transaction(index, producer_id, producer_epoch, marker.commit)
    return ErrorCode.NONE


class TxnMarkerChannel:
    """The coordinator's `MarkerSender`: one request per leader, local ones written here."""

    def __init__(self, broker: Broker, request_timeout_s: float = 10.0) -> None:
        self._broker = broker
        self._timeout_s = request_timeout_s
        self._channels: dict[tuple[int, int], PeerChannel] = {}

    def _leader_of(self, tp: TopicPartition) -> int:
        broker = self._broker
        local = broker.partitions.get(tp)
        if local is not None and local.is_leader:
            return broker.node_id
        if broker.cluster is None:
            return broker.node_id
        return broker.cluster.leader_of(*tp)

    async def send(self, request: MarkerRequest) -> dict[TopicPartition, ErrorCode]:
        """Write the markers; every partition gets the outcome of this attempt."""
        by_leader: dict[int, list[TopicPartition]] = {}
        for tp in sorted(request.partitions):
            by_leader.setdefault(self._leader_of(tp), []).append(tp)
        results: dict[TopicPartition, ErrorCode] = {}
        marker = TxnMarker(request.commit, request.coordinator_epoch)

        async def local(tps: list[TopicPartition]) -> None:
            for tp in tps:
                results[tp] = await write_marker_locally(
                    self._broker, tp[0], tp[1], request.producer_id, request.producer_epoch, marker
                )

        async def remote(leader: int, tps: list[TopicPartition]) -> None:
            results.update(await self._send_to(leader, request, tps))

        async with trio.open_nursery() as nursery:
            for leader, tps in by_leader.items():
                if leader < 0:
                    results.update(dict.fromkeys(tps, ErrorCode.LEADER_NOT_AVAILABLE))
                elif leader == self._broker.node_id:
                    nursery.start_soon(local, tps)
                else:
                    nursery.start_soon(remote, leader, tps)
        return results

    def _channel(self, leader: int, producer_id: int) -> PeerChannel | None:
        key = (leader, producer_id % CHANNELS_PER_LEADER)
        channel = self._channels.get(key)
        if channel is None:
            address = self._broker.config.controller_address(leader)
            if address is None:
                return None
            channel = self._channels[key] = PeerChannel(
                self._broker.env.network,
                address.host,
                address.port,
                client_id=f"txn-markers-{self._broker.node_id}",
                request_timeout_s=self._timeout_s,
            )
        return channel

    async def _send_to(
        self, leader: int, request: MarkerRequest, tps: list[TopicPartition]
    ) -> dict[TopicPartition, ErrorCode]:
        channel = self._channel(leader, request.producer_id)
        if channel is None:
            logger.warning("no controller listener known for node %d: cannot send markers", leader)
            return dict.fromkeys(tps, ErrorCode.BROKER_NOT_AVAILABLE)
        by_topic: dict[str, list[int]] = {}
        for topic, index in tps:
            by_topic.setdefault(topic, []).append(index)
        body = WriteTxnMarkersRequest(
            version=WRITE_TXN_MARKERS_VERSION,
            markers=[
                _Marker(
                    producer_id=request.producer_id,
                    producer_epoch=request.producer_epoch,
                    transaction_result=request.commit,
                    topics=[
                        _MarkerTopic(name=topic, partition_indexes=indexes)
                        for topic, indexes in by_topic.items()
                    ],
                    coordinator_epoch=request.coordinator_epoch,
                )
            ],
        )
        try:
            response = await channel.request(body, WRITE_TXN_MARKERS_VERSION)
        except PeerUnavailableError as exc:
            logger.info("markers to node %d: %s", leader, exc)
            return dict.fromkeys(tps, ErrorCode.NETWORK_EXCEPTION)
        results = dict.fromkeys(tps, ErrorCode.UNKNOWN_SERVER_ERROR)
        for result in response.markers:
            for topic in result.topics:
                for p in topic.partitions:
                    results[(topic.name, p.partition_index)] = _code(p.error_code)
        return results

    async def aclose(self) -> None:
        """Close the connections to other nodes."""
        for channel in self._channels.values():
            await channel.aclose()


def _code(value: int) -> ErrorCode:
    try:
        return ErrorCode(value)
    except ValueError:
        return ErrorCode.UNKNOWN_SERVER_ERROR
