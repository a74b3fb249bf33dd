"""The metadata log on disk: payload encoding, entries as Kafka record batches, and (below)
the durable Raft log and quorum-state store surviving crashes and power loss."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st
from kafka.record.default_records import DefaultRecordBatch

from harness.runtime.sim.clock import SimClock
from harness.runtime.sim.disk import SimDisk, SimStorage
from reference_broker.controller.metadata_log import DurableRaftLog
from reference_broker.controller.payloads import (
    PayloadError,
    batches_to_entries,
    decode_payload,
    encode_payload,
    entries_to_batches,
    entry_to_batch,
)
from reference_broker.controller.quorum_store import DurableQuorumStore, QuorumStateError
from reference_broker.controller.raft import (
    Entry,
    InMemoryRaftLog,
    LeaderChange,
    OffsetAndEpoch,
    RaftNode,
)
from reference_broker.controller.raft.state import ElectionState
from reference_broker.controller.records import (
    FenceBrokerRecord,
    PartitionChangeRecord,
    PartitionRecord,
    RegisterBrokerRecord,
    RemoveTopicRecord,
    TopicRecord,
    UnfenceBrokerRecord,
)
from reference_broker.errors import CorruptRecordError
from reference_broker.log.config import LogConfig
from reference_broker.log.log_manager import LogManager
from reference_broker.log.record_batch import iter_batches
from reference_broker.os_env import OsStorage, WallClock

ids = st.integers(min_value=-1, max_value=2**31 - 1)
epochs = st.integers(min_value=0, max_value=2**31 - 1)
text = st.text(max_size=20)
replica_lists = st.lists(st.integers(0, 1000), max_size=5).map(tuple)

records = st.one_of(
    st.builds(RegisterBrokerRecord, ids, text, epochs, text, st.integers(0, 65535)),
    st.builds(FenceBrokerRecord, ids, epochs),
    st.builds(UnfenceBrokerRecord, ids, epochs),
    st.builds(TopicRecord, text, text, st.lists(st.tuples(text, text), max_size=3).map(tuple)),
    st.builds(RemoveTopicRecord, text),
    st.builds(PartitionRecord, text, ids, replica_lists, replica_lists, ids, epochs, epochs),
    st.builds(PartitionChangeRecord, text, ids, st.none() | ids, st.none() | replica_lists),
)
leader_changes = st.builds(LeaderChange, ids, replica_lists)
payloads = st.one_of(records, leader_changes, st.lists(records, max_size=4).map(tuple))


@given(payloads)
def test_every_payload_survives_encoding(payload: object) -> None:
    assert decode_payload(encode_payload(payload)) == payload  # type: ignore[arg-type]


@st.composite
def entry_lists(draw: st.DrawFn) -> list[Entry]:
    start = draw(st.integers(0, 2**40))
    epoch = draw(st.integers(0, 1000))
    out = []
    for i, payload in enumerate(draw(st.lists(payloads, max_size=6))):
        epoch += draw(st.integers(0, 2))
        out.append(Entry(start + i, epoch, payload))
    return out


@given(entry_lists())
def test_entries_survive_the_trip_through_record_batches(entries: list[Entry]) -> None:
    assert batches_to_entries(entries_to_batches(entries)) == entries


def test_kafka_python_reads_the_batches_as_kafka_would_write_them() -> None:
    entries = [
        Entry(7, 3, LeaderChange(2, (1, 2, 3))),
        Entry(8, 3, TopicRecord("t0", "id-0", (("retention.ms", "-1"),))),
    ]
    batches = [
        DefaultRecordBatch(bytes(raw)) for _, raw in iter_batches(entries_to_batches(entries))
    ]
    assert [b.validate_crc() for b in batches] == [True, True]
    assert [(b.base_offset, b.leader_epoch, b.records_count) for b in batches] == [
        (7, 3, 1),
        (8, 3, 1),
    ]
    assert batches[0].is_control_batch and not batches[1].is_control_batch
    (control,) = list(batches[0])
    assert control.type == 2, "LEADER_CHANGE control record type"
    (record,) = list(batches[1])
    assert record.offset == 8 and decode_payload(record.value) == entries[1].payload


def test_a_flipped_bit_fails_the_crc() -> None:
    batch = bytearray(entry_to_batch(Entry(0, 1, FenceBrokerRecord(1, 2))))
    batch[-5] ^= 0x01
    with pytest.raises(CorruptRecordError, match="CRC-32C"):
        batches_to_entries(bytes(batch))


def test_a_cut_batch_is_refused() -> None:
    batch = entry_to_batch(Entry(0, 1, FenceBrokerRecord(1, 2)))
    with pytest.raises(CorruptRecordError):
        batches_to_entries(batch[:-1])


def test_unknown_versions_and_types_are_refused_with_a_reason() -> None:
    with pytest.raises(PayloadError, match="version 2"):
        decode_payload(b'{"v":2,"type":"FenceBrokerRecord","broker_id":1,"broker_epoch":1}')
    with pytest.raises(PayloadError, match="unknown payload type 'ConfigRecord'"):
        decode_payload(b'{"v":1,"type":"ConfigRecord"}')
    with pytest.raises(PayloadError, match="malformed FenceBrokerRecord"):
        decode_payload(b'{"v":1,"type":"FenceBrokerRecord","broker_id":"x","broker_epoch":1}')
    with pytest.raises(PayloadError, match="not valid JSON"):
        decode_payload(b"\x00\x01")


def test_only_metadata_records_and_leader_changes_are_payloads() -> None:
    with pytest.raises(PayloadError):
        encode_payload("a string")  # type: ignore[arg-type]
    with pytest.raises(PayloadError, match="not a metadata record"):
        encode_payload((LeaderChange(1, (1,)),))  # type: ignore[arg-type]


def test_a_later_field_with_a_default_still_decodes_old_payloads() -> None:
    # TopicRecord gained `configs`; a payload written before it still reads.
    old = b'{"v":1,"type":"TopicRecord","name":"t","topic_id":"i"}'
    assert decode_payload(old) == TopicRecord("t", "i", ())


# -- the durable Raft log and quorum-state store ---------------------------------------------


def sim_logs(disk: SimDisk, *, latency_s: float = 0.0) -> tuple[SimStorage, LogManager]:
    storage = SimStorage(disk, fsync_latency_s=latency_s)
    return storage, LogManager.open(storage, SimClock(), LogConfig())


def fence(i: int) -> FenceBrokerRecord:
    return FenceBrokerRecord(i, i)


async def test_synced_entries_survive_power_loss_and_the_unsynced_tail_is_gone() -> None:
    disk = SimDisk()
    _, logs = sim_logs(disk)
    log = DurableRaftLog.open(logs)
    log.append_as_leader([LeaderChange(1, (1, 2, 3)), fence(1)], epoch=1)
    log.append_as_leader([fence(2)], epoch=3)
    log.flush()
    assert log.sync_owed and log.durable_end_offset == 0
    await log.sync()
    assert not log.sync_owed and log.durable_end_offset == 3
    log.append_as_leader([fence(3), fence(4)], epoch=4)
    log.flush()
    disk.survive_power_loss()

    _, logs = sim_logs(disk)
    reopened = DurableRaftLog.open(logs)
    assert [(e.offset, e.epoch, e.payload) for e in reopened.entries()] == [
        (0, 1, LeaderChange(1, (1, 2, 3))),
        (1, 1, fence(1)),
        (2, 3, fence(2)),
    ]
    assert (reopened.end_offset, reopened.last_epoch) == (3, 3)
    assert reopened.end_offset_for_epoch(2) == OffsetAndEpoch(1, 2)
    assert reopened.end_offset_for_epoch(7) == OffsetAndEpoch(3, 3)


async def test_a_truncation_is_durable_once_synced() -> None:
    disk = SimDisk()
    _, logs = sim_logs(disk)
    log = DurableRaftLog.open(logs)
    log.append_as_leader([fence(i) for i in range(4)], epoch=1)
    log.flush()
    await log.sync()
    log.truncate_to(2)
    assert log.sync_owed
    log.append_as_follower([Entry(2, 2, fence(9))])
    log.flush()
    await log.sync()
    disk.survive_power_loss()
    _, logs = sim_logs(disk)
    entries = DurableRaftLog.open(logs).entries()
    assert [(e.offset, e.epoch, e.payload) for e in entries] == [
        (0, 1, fence(0)),
        (1, 1, fence(1)),
        (2, 2, fence(9)),
    ]


@pytest.mark.parametrize("seed", range(40))
async def test_a_torn_tail_is_cut_to_a_prefix_of_what_was_written(seed: int) -> None:
    disk = SimDisk()
    _, logs = sim_logs(disk)
    log = DurableRaftLog.open(logs)
    written = log.append_as_leader([fence(i) for i in range(3)], epoch=1)
    log.flush()
    await log.sync()
    written += log.append_as_leader([fence(i) for i in range(3, 9)], epoch=2)
    disk.survive_power_loss(tear=random.Random(seed))
    _, logs = sim_logs(disk)
    entries = DurableRaftLog.open(logs).entries()
    assert len(entries) >= 3, "the synced entries survive any tear"
    assert entries == written[: len(entries)]


async def test_old_entries_lining_up_after_new_ones_are_cut_on_open() -> None:
    # A torn overwrite can leave a whole old batch after a new one: epochs then go back.
    disk = SimDisk()
    storage, logs = sim_logs(disk)
    log = DurableRaftLog.open(logs)
    log.append_as_leader([fence(0)], epoch=1)
    log.append_as_leader([fence(1)], epoch=3)
    log.flush()
    await log.sync()
    segment = next(p for p in disk.files if p.endswith(".log"))
    f = storage.open(segment)
    f.append(entry_to_batch(Entry(2, 2, fence(2))))  # epoch 2 after epoch 3
    await f.fsync()
    _, logs = sim_logs(disk)
    reopened = DurableRaftLog.open(logs)
    assert [e.offset for e in reopened.entries()] == [0, 1]
    assert reopened.recovered_truncation is not None and "offset 2" in reopened.recovered_truncation


def random_ops(rng: random.Random, count: int) -> list[tuple[str, int]]:
    ops: list[tuple[str, int]] = []
    epoch = 1
    for _ in range(count):
        roll = rng.random()
        if roll < 0.15:
            ops.append(("truncate", rng.randint(0, 40)))
        else:
            epoch += rng.choice([0, 0, 0, 1, 2])
            ops.append(("append", epoch))
    return ops


@pytest.mark.parametrize("seed", range(8))
async def test_the_durable_log_answers_exactly_as_the_in_memory_log(seed: int) -> None:
    rng = random.Random(seed)
    disk = SimDisk()
    _, logs = sim_logs(disk)
    durable = DurableRaftLog.open(logs)
    memory = InMemoryRaftLog()
    for op, value in random_ops(rng, 60):
        if op == "truncate":
            durable.truncate_to(value)
            memory.truncate_to(value)
            continue
        epoch = max(value, memory.last_epoch)
        payloads = [fence(rng.randrange(100)) for _ in range(rng.randint(1, 3))]
        assert durable.append_as_leader(payloads, epoch) == memory.append_as_leader(payloads, epoch)
        if rng.random() < 0.3:
            durable.flush()
            await durable.sync()
        assert (durable.end_offset, durable.last_epoch) == (memory.end_offset, memory.last_epoch)
        for e in range(memory.last_epoch + 2):
            assert durable.end_offset_for_epoch(e) == memory.end_offset_for_epoch(e), e
        start = rng.randint(0, memory.end_offset + 1)
        assert durable.read(start, 5) == memory.read(start, 5)
    durable.flush()
    await durable.sync()
    _, logs = sim_logs(disk)
    assert DurableRaftLog.open(logs).entries() == memory.entries()


async def test_a_sync_waits_for_an_fsync_already_running_and_covers_later_writes() -> None:
    disk = SimDisk()
    _, logs = sim_logs(disk, latency_s=0.01)
    log = DurableRaftLog.open(logs)
    log.append_as_leader([fence(0)], epoch=1)
    log.flush()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(log.sync)
        await trio.testing.wait_all_tasks_blocked()  # the first fsync is under way
        log.append_as_leader([fence(1)], epoch=1)
        log.flush()
        await log.sync()
        assert log.durable_end_offset == 2 and not log.sync_owed
    disk.survive_power_loss()
    _, logs = sim_logs(disk)
    assert len(DurableRaftLog.open(logs).entries()) == 2


async def test_a_vote_survives_power_loss_once_synced_and_not_before() -> None:
    disk = SimDisk()
    store = DurableQuorumStore.open(SimStorage(disk), voters=[1, 2, 3], cluster_id="c1")
    assert store.read() == ElectionState()
    store.write(ElectionState(epoch=4, voted_id=2))
    await store.sync()
    store.write(ElectionState(epoch=5, leader_id=3))
    assert store.sync_owed
    disk.survive_power_loss()
    reopened = DurableQuorumStore.open(SimStorage(disk), voters=[1, 2, 3], cluster_id="c1")
    assert reopened.read() == ElectionState(epoch=4, voted_id=2)
    reopened.write(ElectionState(epoch=5, leader_id=3))
    await reopened.sync()
    disk.survive_power_loss()
    again = DurableQuorumStore.open(SimStorage(disk), voters=[3, 2, 1], cluster_id="c1")
    assert again.read() == ElectionState(epoch=5, leader_id=3)


async def test_the_quorum_state_file_is_kafkas_json() -> None:
    disk = SimDisk()
    store = DurableQuorumStore.open(SimStorage(disk), voters=[1, 2, 3], cluster_id="c1")
    store.write(ElectionState(epoch=2, voted_id=1))
    await store.sync()
    saved = json.loads(disk.read_file("__cluster_metadata-0/quorum-state"))
    assert saved == {
        "clusterId": "c1",
        "leaderId": -1,
        "leaderEpoch": 2,
        "votedId": 1,
        "appliedOffset": 0,
        "currentVoters": [{"voterId": 1}, {"voterId": 2}, {"voterId": 3}],
        "data_version": 0,
    }


async def test_a_quorum_state_of_other_voters_or_garbage_is_refused() -> None:
    disk = SimDisk()
    store = DurableQuorumStore.open(SimStorage(disk), voters=[1, 2, 3], cluster_id="c1")
    store.write(ElectionState(epoch=2, voted_id=1))
    await store.sync()
    with pytest.raises(QuorumStateError, match="voters"):
        DurableQuorumStore.open(SimStorage(disk), voters=[1, 2], cluster_id="c1")
    with pytest.raises(QuorumStateError, match="cluster"):
        DurableQuorumStore.open(SimStorage(disk), voters=[1, 2, 3], cluster_id="other")
    f = SimStorage(disk).open("__cluster_metadata-0/quorum-state")
    f.truncate(5)
    with pytest.raises(QuorumStateError, match="not a valid quorum-state"):
        DurableQuorumStore.open(SimStorage(disk), voters=[1, 2, 3])


async def test_os_storage_loses_the_unsynced_tail_and_vote_like_a_power_cut(
    tmp_path: Path,
) -> None:
    def open_all() -> tuple[DurableRaftLog, DurableQuorumStore]:
        storage = OsStorage(tmp_path, volatile_until_fsync=True)
        logs = LogManager.open(storage, WallClock(), LogConfig())
        return DurableRaftLog.open(logs), DurableQuorumStore.open(storage, voters=[1])

    log, store = open_all()
    log.append_as_leader([LeaderChange(1, (1,)), fence(1)], epoch=1)
    store.write(ElectionState(epoch=1, leader_id=1))
    log.flush()
    await log.sync()
    await store.sync()
    log.append_as_leader([fence(2)], epoch=2)
    store.write(ElectionState(epoch=2, voted_id=1))
    # Dropping the volatile storage without fsync is what SIGKILL does in this mode.
    log, store = open_all()
    assert [e.payload for e in log.entries()] == [LeaderChange(1, (1,)), fence(1)]
    assert store.read() == ElectionState(epoch=1, leader_id=1)


async def test_a_raft_node_restarted_on_disk_keeps_its_log_and_vote() -> None:
    disk = SimDisk()
    storage, logs = sim_logs(disk)
    log = DurableRaftLog.open(logs)
    store = DurableQuorumStore.open(storage, voters=[1])
    node = RaftNode(1, {1}, log, store, random.Random(1), now_ms=0)
    node.tick(node.next_deadline_ms())
    assert node.is_leader
    offset = node.propose((fence(7),))
    assert offset == 1
    await log.sync()
    await store.sync()
    disk.survive_power_loss()
    storage, logs = sim_logs(disk)
    log = DurableRaftLog.open(logs)
    store = DurableQuorumStore.open(storage, voters=[1])
    restarted = RaftNode(1, {1}, log, store, random.Random(2), now_ms=0)
    assert restarted.epoch == 1 and not restarted.is_leader, "a restarted leader resigns"
    assert [e.payload for e in log.entries()] == [LeaderChange(1, (1,)), (fence(7),)]
    for _ in range(20):  # the resigned epoch's resend timers, then its election
        if restarted.is_leader:
            break
        restarted.tick(restarted.next_deadline_ms())
    assert restarted.is_leader and restarted.epoch == 2
