"""What a process cluster's brokers believe about leadership, read over the wire.

The nemesis resolves a `leader` partition when it starts it (`FaultTarget.leader_of`,
`controller`), synchronously, so the answer must already be at hand. `watch_beliefs`
asks every running broker for Metadata on its own port (not through the fault proxies:
the harness sees past the faults it injects) every `WATCH_INTERVAL_S` and keeps the
latest `Beliefs`: per partition (`__consumer_offsets` and `__transaction_state` too,
whose leaders coordinate the groups and the transactional ids), the leader named with
the highest leader epoch and its ISR; the controller, the node most brokers name.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import trio
from kafka.protocol.api_message import ApiMessage
from kafka.protocol.metadata import MetadataRequest

from reference_broker.group.offsets_store import OFFSETS_TOPIC
from reference_broker.txn.config import TXN_STATE_TOPIC
from workloads.client.connection import Connection
from workloads.client.errors import KafkaClientError

WATCH_INTERVAL_S = 0.25
REQUEST_TIMEOUT_S = 1.0
# Metadata v9: partitions carry their leader epoch; every broker here serves v0..v12.
METADATA_VERSION = 9
# Internal topics whose partition leaders coordinate something (groups, transactional
# ids); asked for by name when an all-topics answer leaves them out.
COORDINATION_TOPICS = (OFFSETS_TOPIC, TXN_STATE_TOPIC)


@dataclass(frozen=True)
class Leader:
    """A partition's leader as one broker believes it, with the ISR it reported."""

    epoch: int
    node: str
    isr: tuple[str, ...] = ()


@dataclass(frozen=True)
class Beliefs:
    """The newest view of leadership the running brokers gave."""

    leaders: dict[tuple[str, int], Leader] = field(default_factory=dict)
    controller: str | None = None


async def ask(host: str, port: int, node_id: int) -> ApiMessage:
    """One Metadata exchange with the broker at host:port (all topics)."""
    stream = await trio.open_tcp_stream(host, port)
    conn = Connection(stream, node_id=node_id, address=f"{host}:{port}",
                      client_id="faultline-harness-observer")
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(conn.run)
            try:
                response = await conn.request(MetadataRequest(topics=None), METADATA_VERSION,
                                              REQUEST_TIMEOUT_S)
                named = {t.name for t in response.topics}
                missing = [name for name in COORDINATION_TOPICS if name not in named]
                if missing:
                    # Coordinators are the leaders of these topics' partitions; a broker
                    # may leave internal topics out of an all-topics answer.
                    internal = await conn.request(MetadataRequest(
                        topics=[MetadataRequest.MetadataRequestTopic(name=name)
                                for name in missing],
                        allow_auto_topic_creation=False), METADATA_VERSION, REQUEST_TIMEOUT_S)
                    response.topics.extend(t for t in internal.topics if t.error_code == 0)
            finally:
                conn.close()
                nursery.cancel_scope.cancel()
    finally:
        await trio.aclose_forcefully(stream)
    return response


def combine(answers: Mapping[str, ApiMessage], names: Mapping[int, str]) -> Beliefs:
    """Beliefs from each node's Metadata answer (`names`: node id -> node name)."""
    leaders: dict[tuple[str, int], Leader] = {}
    controllers: Counter[str] = Counter()
    for response in answers.values():
        controller = names.get(response.controller_id)
        if controller is not None:
            controllers[controller] += 1
        for topic in response.topics:
            for p in topic.partitions:
                node = names.get(p.leader_id)
                if node is None:
                    continue
                key = (topic.name, p.partition_index)
                known = leaders.get(key)
                if known is None or p.leader_epoch > known.epoch:
                    isr = tuple(sorted(names[i] for i in (p.isr_nodes or []) if i in names))
                    leaders[key] = Leader(p.leader_epoch, node, isr)
    ranked = sorted(controllers.items(), key=lambda item: (-item[1], item[0]))
    return Beliefs(leaders, ranked[0][0] if ranked else None)


async def _ask_into(answers: dict[str, ApiMessage], name: str, host: str, port: int,
                    node_id: int) -> None:
    # No answer this round: stopped, paused, starting, or the connection failed (the
    # error may come wrapped in the group of the nursery that reads the answer).
    try:
        with trio.move_on_after(REQUEST_TIMEOUT_S):
            answers[name] = await ask(host, port, node_id)
    except* (OSError, trio.BrokenResourceError, trio.ClosedResourceError, KafkaClientError):
        pass


async def watch_beliefs(
    targets: Callable[[], Mapping[str, tuple[str, int, int]]],
    update: Callable[[Beliefs], None],
    *,
    interval_s: float = WATCH_INTERVAL_S,
) -> None:
    """Forever: ask each of `targets()` (name -> (host, port, node id)), then `update`.

    A broker that does not answer (stopped, paused, starting) is left out of that round;
    a round nobody answered keeps the previous beliefs.
    """
    while True:
        nodes = dict(targets())
        answers: dict[str, ApiMessage] = {}
        async with trio.open_nursery() as nursery:
            for name, (host, port, node_id) in nodes.items():
                nursery.start_soon(_ask_into, answers, name, host, port, node_id)
        if answers:
            update(combine(answers, {node_id: name for name, (_, _, node_id) in nodes.items()}))
        await trio.sleep(interval_s)
