"""Follower truncation by diverging epoch (Kafka's getOffsetTruncationState), on real logs.

The leader's side is `Partition.diverging_epoch`, the follower's is
`diverged_truncation_offset`; a follower repeats fetch -> truncate until the leader
finds nothing diverging. Whatever the two logs' histories, that loop must end with
the follower holding a prefix of the leader's log, and never cut into what both
shared (the committed prefix).
"""

from __future__ import annotations

import random

import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka.protocol.consumer import FetchResponse

from harness.runtime.sim.disk import SimDisk, SimStorage
from harness.runtime.sim.network import SimNetwork
from reference_broker.config import BrokerConfig, Listener
from reference_broker.log import LogConfig, PartitionLog
from reference_broker.log.record_batch import iter_batches
from reference_broker.protocol.codec import decode_request, encode_response
from reference_broker.protocol.framing import FrameDecoder, receive_frame
from reference_broker.replication.assignment import PartitionAssignment
from reference_broker.replication.fetcher import ReplicaFetcher, diverged_truncation_offset
from reference_broker.replication.partition import HighWatermarkSignal, Partition
from tests.wire import record_batch


class FixedClock:
    """Record timestamps only; nothing here depends on time."""

    def now_ms(self) -> int:
        return 1_700_000_000_000


def new_log() -> PartitionLog:
    storage = SimStorage(SimDisk())
    storage.makedirs("t-0")
    return PartitionLog.open(storage, "t-0", LogConfig(), FixedClock())


def write(log: PartitionLog, epochs: list[tuple[int, int]], tag: bytes) -> None:
    """Append one batch of `size` records per (epoch, size), as the leader of that epoch.

    Size 0: the log's node led that epoch and wrote nothing in it (the epoch still starts
    at its log end in its epoch cache, as a new leader's does).
    """
    for epoch, size in epochs:
        if size:
            log.append_as_leader(record_batch([tag] * size), epoch)
        else:
            log.assign_epoch_start_offset(epoch)


def batches(log: PartitionLog) -> list[tuple[int, int, int]]:
    data = log.read(0, 1 << 24).records
    return [(h.base_offset, h.partition_leader_epoch, h.crc) for h, _ in iter_batches(data)]


def test_same_epoch_on_both_sides_cuts_at_the_smaller_end() -> None:
    follower = new_log()
    write(follower, [(0, 2), (1, 3)], b"f")  # epoch 1 covers 2..4
    assert diverged_truncation_offset(follower, 1, leader_end=9) == 5  # nothing to cut
    assert diverged_truncation_offset(follower, 0, leader_end=2) == 2
    assert diverged_truncation_offset(follower, 1, leader_end=4) == 4
    follower.truncate_to(4)
    assert follower.log_end_offset == 2  # batches go whole: the one at 2..4 is gone


def test_an_epoch_the_follower_never_had_cuts_to_the_end_of_its_older_one() -> None:
    follower = new_log()
    write(follower, [(0, 2), (3, 2)], b"f")  # epochs 0 (0..1) and 3 (2..3)
    # The leader says its epoch 2 ends at 6: we never had 2, so epoch 0's end (2) is where
    # we are sure to agree; the next fetch will ask about epoch 0.
    assert diverged_truncation_offset(follower, 2, leader_end=6) == 2


def test_a_follower_without_epochs_takes_the_leaders_end() -> None:
    follower = new_log()
    assert diverged_truncation_offset(follower, 1, leader_end=0) == 0


def lead(log: PartitionLog, epoch: int) -> Partition:
    leader = Partition("t", 0, log, local_id=1, signal=HighWatermarkSignal())
    leader.make_leader(PartitionAssignment("t", 0, (1, 2), (1, 2), 1, epoch, 0), now=0.0)
    return leader


def test_a_former_leader_that_wrote_nothing_in_its_epoch_forgets_it_when_told() -> None:
    # n1 led epoch 0 and wrote 0..3, n2 (which has it all) led epoch 1 without writing,
    # n1 leads again in epoch 2: both logs end at 4, where epochs 1 and 2 start.
    shared = 4
    leader_log, follower_log = new_log(), new_log()
    write(leader_log, [(0, shared)], b"p")
    follower_log.append_as_follower(leader_log.read(0, 1 << 24).records)
    write(follower_log, [(1, 0)], b"f")
    leader = lead(leader_log, 2)
    assert follower_log.latest_epoch == 1
    diverging = leader.diverging_epoch(1, shared)
    assert diverging == (0, shared)  # epoch 1 is unknown here; 0 ends where we are
    assert diverged_truncation_offset(follower_log, *diverging) == shared
    follower_log.truncate_to(shared)
    # No record goes, but the epoch the follower never wrote in does: the next fetch
    # names the epoch its log really ends in, which the leader accepts.
    assert follower_log.log_end_offset == shared
    assert follower_log.latest_epoch == 0
    assert leader.diverging_epoch(follower_log.latest_epoch, shared) is None


def test_an_empty_epoch_at_the_start_of_an_empty_log_gives_way_to_the_first_batch() -> None:
    # As above with nothing written before: every epoch of both caches starts at 0.
    # Kafka's cache keeps one entry per start offset, so the leader knows only epoch 2,
    # which starts at 0 where epoch 1 would have ended: nothing diverged. The first batch
    # the follower replicates replaces its empty epoch 1.
    leader_log, follower_log = new_log(), new_log()
    write(leader_log, [(0, 0)], b"p")
    write(follower_log, [(1, 0)], b"f")
    leader = lead(leader_log, 2)
    assert leader.diverging_epoch(1, 0) is None
    write(leader_log, [(2, 2)], b"l")
    follower_log.append_as_follower(leader_log.read(0, 1 << 24).records)
    assert follower_log.latest_epoch == 2
    assert batches(follower_log) == batches(leader_log)
    assert leader.diverging_epoch(follower_log.latest_epoch, follower_log.log_end_offset) is None


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[tuple[int, int]], ...]:
    """A shared prefix, then suffixes written in disjoint epochs after it (Raft's log
    matching: one epoch has one leader, so the same epoch never writes different data)."""
    sizes = st.integers(1, 3)
    # A leader may lose its epoch before writing in it.
    suffix_sizes = st.integers(0, 3)
    prefix_epochs = sorted(draw(st.sets(st.integers(0, 5), max_size=3)))
    later = draw(st.sets(st.integers(6, 30), max_size=8))
    follower_epochs = sorted(
        draw(st.sets(st.sampled_from(sorted(later)), max_size=4)) if later else []
    )
    leader_epochs = sorted(e for e in later if e not in follower_epochs)
    prefix = [(e, draw(sizes)) for e in prefix_epochs]
    follower = [(e, draw(suffix_sizes)) for e in follower_epochs]
    leader = [(e, draw(suffix_sizes)) for e in leader_epochs]
    # The leader of the prefix's last epoch may have written more that only one side got
    # (the old leader's unreplicated tail, or what it replicated to the new leader alone).
    extended = draw(st.sampled_from(["neither", "follower", "leader"]))
    if prefix and extended != "neither":
        tail = (prefix[-1][0], draw(sizes))
        (follower if extended == "follower" else leader).insert(0, tail)
    return prefix, follower, leader


@settings(max_examples=150, deadline=None)
@given(histories())
def test_fetch_and_truncate_converge_to_a_prefix_of_the_leaders_log(
    history: tuple[list[tuple[int, int]], ...],
) -> None:
    prefix, follower_suffix, leader_suffix = history
    leader_log, follower_log = new_log(), new_log()
    write(leader_log, prefix, b"p")
    shared = leader_log.read(0, 1 << 24).records
    if shared:
        follower_log.append_as_follower(shared)
    committed = leader_log.log_end_offset
    write(follower_log, follower_suffix, b"f")
    write(leader_log, leader_suffix, b"l")
    newest = max([e for e, _ in prefix + follower_suffix + leader_suffix], default=0)
    # The current leader's epoch is newer than any epoch either log was written in.
    leader = lead(leader_log, newest + 1)

    for _ in range(20):
        last_epoch, fetch_offset = follower_log.latest_epoch, follower_log.log_end_offset
        diverging = leader.diverging_epoch(last_epoch, fetch_offset) if last_epoch >= 0 else None
        if diverging is None:
            break
        target = diverged_truncation_offset(follower_log, *diverging)
        assert target >= committed, "truncated into the shared prefix"
        assert target <= fetch_offset
        follower_log.truncate_to(target)
    else:
        raise AssertionError("fetch/truncate did not converge in 20 rounds")
    assert follower_log.log_end_offset >= committed
    held = batches(follower_log)
    assert held == batches(leader_log)[: len(held)]
    assert follower_log.log_end_offset <= leader_log.log_end_offset

    # The follower then replicates the rest. Its epoch cache, built from what it appended
    # (and what it led without writing), must answer OffsetForLeaderEpoch as the leader's
    # does for every epoch up to its newest: Kafka's caches keep one entry per start offset.
    if follower_log.log_end_offset < leader_log.log_end_offset:
        follower_log.append_as_follower(
            leader_log.read(follower_log.log_end_offset, 1 << 24).records
        )
    assert batches(follower_log) == batches(leader_log)
    for epoch in range(follower_log.latest_epoch + 1):
        answers = follower_log.end_offset_for_epoch(epoch), leader_log.end_offset_for_epoch(epoch)
        assert answers[0] == answers[1], (epoch, answers)


async def serve_diverging(
    listener: trio.abc.Listener, epoch: int, end: int, log: list[int]
) -> None:
    """A leader that answers every Fetch: `epoch` ends at `end` here (and logs fetch offsets)."""
    data = FetchResponse.FetchableTopicResponse.PartitionData
    stream = await listener.accept()
    decoder = FrameDecoder(1 << 20)
    while (frame := await receive_frame(stream, decoder)) is not None:
        request = decode_request(frame)
        asked = request.body.topics[0].partitions[0]
        log.append(asked.fetch_offset)
        answer = data(
            version=12,
            partition_index=asked.partition,
            error_code=0,
            high_watermark=0,
            last_stable_offset=0,
            log_start_offset=0,
            diverging_epoch=data.EpochEndOffset(epoch=epoch, end_offset=end),
            aborted_transactions=None,
            preferred_read_replica=-1,
            records=b"",
        )
        topic = FetchResponse.FetchableTopicResponse(version=12, topic="t", partitions=[answer])
        response = FetchResponse(
            version=12, throttle_time_ms=0, error_code=0, session_id=0, responses=[topic]
        )
        await stream.send_all(encode_response(request.header, response))


async def test_a_diverging_answer_that_changes_nothing_is_asked_again_only_after_a_backoff(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log = new_log()
    write(log, [(0, 4)], b"f")
    follower = Partition("t", 0, log, local_id=2, signal=HighWatermarkSignal())
    follower.make_follower(PartitionAssignment("t", 0, (1, 2), (1, 2), 1, 3, 0))
    network = SimNetwork(random.Random(1))
    config = BrokerConfig.from_properties({"node.id": 2, "replica.fetch.backoff.ms": 200})
    fetcher = ReplicaFetcher(
        node_id=2,
        source_id=1,
        address=Listener("n1", 9092),
        network=network.incarnate("n2"),
        clock=FixedClock(),
        config=config,
    )
    fetcher.add(follower)
    fetches: list[int] = []
    async with trio.open_nursery() as nursery:
        [listener] = await network.incarnate("n1").listen("n1", 9092)
        # Epoch 0 is the follower's own latest and it holds all of it: there is nothing
        # to cut, and asking again at once would get the same answer.
        nursery.start_soon(serve_diverging, listener, 0, 10, fetches)
        nursery.start_soon(fetcher.run)
        await trio.sleep(2)
        nursery.cancel_scope.cancel()
    assert log.log_end_offset == 4 and log.latest_epoch == 0
    assert set(fetches) == {4}
    assert 2 <= len(fetches) <= 2 / 0.2 + 1
