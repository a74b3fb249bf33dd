"""The process cluster's observer: a broker that drops the connection is simply not
heard from that round; the beliefs combine the answers that came."""

from __future__ import annotations

import io
import json
from functools import partial

import trio
import trio.testing
from kafka.protocol.api_message import ApiMessage

from harness.runtime.process.observer import Beliefs, Leader, combine, watch_beliefs


async def test_a_broker_that_drops_the_connection_is_left_out_of_the_round() -> None:
    async def hang_up(stream: trio.SocketStream) -> None:
        await stream.aclose()

    seen: list[Beliefs] = []
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, hang_up, 0,
                                                host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        with trio.move_on_after(1.0):
            await watch_beliefs(lambda: {"n1": ("127.0.0.1", port, 1),
                                         "n2": ("127.0.0.1", 1, 2)},
                                seen.append, interval_s=0.05)
        nursery.cancel_scope.cancel()
    assert seen == []  # no round had an answer, and nothing raised


def _answer(controller: int, partitions: list[tuple[int, int]]) -> ApiMessage:
    from kafka.protocol.metadata import MetadataResponse

    topic = MetadataResponse.MetadataResponseTopic(
        error_code=0, name="t", is_internal=False,
        partitions=[MetadataResponse.MetadataResponseTopic.MetadataResponsePartition(
            error_code=0, partition_index=i, leader_id=leader, leader_epoch=epoch,
            replica_nodes=[1, 2, 3], isr_nodes=[1, 2, 3], offline_replicas=[])
            for i, (leader, epoch) in enumerate(partitions)])
    return MetadataResponse(throttle_time_ms=0, brokers=[], cluster_id="c",
                            controller_id=controller, topics=[topic])


def test_the_newest_leader_epoch_and_the_most_named_controller_win() -> None:
    names = {1: "n1", 2: "n2", 3: "n3"}
    beliefs = combine({"n1": _answer(2, [(1, 4), (3, 1)]),   # n1 still thinks it leads
                       "n2": _answer(2, [(2, 5), (3, 1)]),
                       "n3": _answer(3, [(2, 5), (-1, 2)])}, names)
    assert beliefs.leaders[("t", 0)] == Leader(5, "n2", ("n1", "n2", "n3"))
    assert beliefs.leaders[("t", 1)] == Leader(1, "n3", ("n1", "n2", "n3"))
    assert beliefs.controller == "n2"


def test_belief_changes_become_the_cluster_timeline() -> None:
    from harness.runtime.process.cluster import ProcessCluster

    before = Beliefs({("t", 0): Leader(1, "n1", ("n1", "n2"))}, "n1")
    same = Beliefs({("t", 0): Leader(1, "n1", ("n1", "n2"))}, "n1")
    after = Beliefs({("t", 0): Leader(2, "n3", ("n3",)), ("__x", 0): Leader(1, "n1")}, "n2")
    stream = io.StringIO()

    async def main() -> None:
        await trio.sleep(3)
        ProcessCluster._record(before, same, (stream, 1.0))
        ProcessCluster._record(before, after, (stream, 1.0))

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert lines == [
        {"kind": "log", "time": 2 * 10**9, "log": "t/0", "leader": "n3", "epoch": 2,
         "isr": ["n3"], "replicas": [], "unclean": True},
        {"kind": "controller", "time": 2 * 10**9, "controller": "n2"},
    ]
