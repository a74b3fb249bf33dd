"""The metadata log on disk: payload encoding, entries as Kafka record batches, and (below)
the durable Raft log and quorum-state store surviving crashes and power loss."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kafka.record.default_records import DefaultRecordBatch

from reference_broker.controller.payloads import (
    PayloadError,
    batches_to_entries,
    decode_payload,
    encode_payload,
    entries_to_batches,
    entry_to_batch,
)
from reference_broker.controller.raft import Entry, LeaderChange
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
from reference_broker.log.record_batch import iter_batches

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
