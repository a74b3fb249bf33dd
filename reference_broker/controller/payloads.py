"""What the metadata log stores: payloads as bytes, and Raft entries as Kafka v2 record batches.

A payload is one of

- a `LeaderChange` (the record a new quorum leader appends in its own epoch),
- one `MetadataRecord`,
- a tuple of `MetadataRecord`s that must commit together (one controller decision).

It is encoded as a JSON object tagged with its type and a format version::

    {"v": 1, "type": "TopicRecord", "name": "t0", "topic_id": "...", "configs": []}
    {"v": 1, "type": "RecordList", "records": [{"type": "FenceBrokerRecord", ...}, ...]}

Field names are the dataclasses' own, so a field added later with a default still
decodes old payloads; a reader meets an unknown `v` or `type` with `PayloadError`
rather than guessing.

Each Raft entry travels and is stored as one v2 record batch, as KRaft's
`__cluster_metadata` log does: base offset = the entry's offset, partition leader
epoch = the entry's epoch, a single record whose value is the payload, and a valid
CRC-32C. A `LeaderChange` goes in a control batch whose record key is Kafka's
control record key (version 0, type 2 = LEADER_CHANGE), as Kafka writes it.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import fields
from typing import Any

import crc32c
import msgspec

from reference_broker.errors import CorruptRecordError
from reference_broker.log.record_batch import (
    CRC_START,
    CURRENT_MAGIC,
    HEADER_SIZE,
    iter_batches,
    validate_batch,
)

from .raft.log import Entry
from .raft.messages import LeaderChange
from .records import (
    FenceBrokerRecord,
    MetadataRecord,
    PartitionChangeRecord,
    PartitionRecord,
    RegisterBrokerRecord,
    RemoveTopicRecord,
    TopicRecord,
    UnfenceBrokerRecord,
    UnregisterBrokerRecord,
)

PAYLOAD_VERSION = 1
NO_TIMESTAMP = -1

Payload = LeaderChange | MetadataRecord | tuple[MetadataRecord, ...]

_RECORD_TYPES: dict[str, type[Any]] = {
    cls.__name__: cls
    for cls in (
        RegisterBrokerRecord,
        FenceBrokerRecord,
        UnfenceBrokerRecord,
        TopicRecord,
        RemoveTopicRecord,
        PartitionRecord,
        PartitionChangeRecord,
        UnregisterBrokerRecord,
    )
}
_LIST_TYPE = "RecordList"
_LEADER_CHANGE_TYPE = "LeaderChange"

# Kafka's ControlRecordType key: version int16, type int16; LEADER_CHANGE is type 2.
_LEADER_CHANGE_KEY = struct.pack(">hh", 0, 2)
_CONTROL_ATTRIBUTE = 0x20
# baseOffset, batchLength, partitionLeaderEpoch, magic, crc, attributes, lastOffsetDelta,
# baseTimestamp, maxTimestamp, producerId, producerEpoch, baseSequence, recordCount.
_HEADER = struct.Struct(">qiibIhiqqqhii")


class PayloadError(ValueError):
    """Bytes that are not a payload this version of faultline can read (or write)."""


# -- payloads ----------------------------------------------------------------------------


def _tagged(value: object, *, allow_leader_change: bool) -> dict[str, Any]:
    cls = type(value)
    if _RECORD_TYPES.get(cls.__name__) is not cls and not (
        allow_leader_change and cls is LeaderChange
    ):
        what = "a metadata record or LeaderChange" if allow_leader_change else "a metadata record"
        raise PayloadError(f"{value!r} is not {what}")
    return {"type": cls.__name__, **msgspec.to_builtins(value)}


def encode_payload(payload: Payload) -> bytes:
    """The bytes stored as a record value for `payload`; PayloadError if it is not one."""
    if isinstance(payload, tuple):
        document: dict[str, Any] = {
            "v": PAYLOAD_VERSION,
            "type": _LIST_TYPE,
            "records": [_tagged(r, allow_leader_change=False) for r in payload],
        }
    else:
        document = {"v": PAYLOAD_VERSION, **_tagged(payload, allow_leader_change=True)}
    return msgspec.json.encode(document)


def _untagged(document: object, *, allow: dict[str, type[Any]]) -> Any:
    if not isinstance(document, dict):
        raise PayloadError(f"expected a JSON object, got {type(document).__name__}")
    body = dict(document)
    name = body.pop("type", None)
    cls = allow.get(name) if isinstance(name, str) else None
    if cls is None:
        raise PayloadError(
            f"unknown payload type {name!r}; this faultline reads {', '.join(sorted(allow))}"
        )
    known = {f.name for f in fields(cls)}
    try:
        return msgspec.convert({k: v for k, v in body.items() if k in known}, cls)
    except msgspec.ValidationError as exc:
        raise PayloadError(f"malformed {name}: {exc}") from None


def decode_payload(data: bytes | bytearray | memoryview) -> Payload:
    """The payload encoded in `data`; raises PayloadError when it is not one."""
    try:
        document = msgspec.json.decode(data)
    except msgspec.DecodeError as exc:
        raise PayloadError(f"metadata payload is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise PayloadError(f"metadata payload is not a JSON object: {document!r}")
    version = document.pop("v", None)
    if version != PAYLOAD_VERSION:
        raise PayloadError(
            f"metadata payload version {version!r} is not supported (this faultline "
            f"writes and reads version {PAYLOAD_VERSION}); was the log written by "
            "another version?"
        )
    if document.get("type") == _LIST_TYPE:
        records = document.get("records")
        if not isinstance(records, list):
            raise PayloadError("a RecordList payload needs a list of records")
        return tuple(_untagged(r, allow=_RECORD_TYPES) for r in records)
    return _untagged(document, allow={**_RECORD_TYPES, _LEADER_CHANGE_TYPE: LeaderChange})


# -- record batches -------------------------------------------------------------------------


def _varint(value: int) -> bytes:
    """Kafka's zig-zag varint (as protobuf's sint64)."""
    n = (value << 1) ^ (value >> 63)
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _read_varint(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
    shift = 0
    result = 0
    while True:
        if pos >= end:
            raise CorruptRecordError("record ends inside a varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return (result >> 1) ^ -(result & 1), pos
        shift += 7
        if shift > 63:
            raise CorruptRecordError("varint longer than 10 bytes in a record")


def entry_to_batch(entry: Entry) -> bytes:
    """One v2 record batch holding `entry` (see the module docstring)."""
    if entry.offset < 0 or entry.epoch < 0:
        raise ValueError(f"entry offset and epoch must be non-negative: {entry!r}")
    value = encode_payload(entry.payload)  # type: ignore[arg-type]
    control = isinstance(entry.payload, LeaderChange)
    key = _LEADER_CHANGE_KEY if control else None
    body = bytearray()
    body.append(0)  # record attributes (unused)
    body += _varint(0)  # timestamp delta
    body += _varint(0)  # offset delta
    if key is None:
        body += _varint(-1)
    else:
        body += _varint(len(key)) + key
    body += _varint(len(value)) + value
    body += _varint(0)  # headers
    record = _varint(len(body)) + body
    attributes = _CONTROL_ATTRIBUTE if control else 0
    total = HEADER_SIZE + len(record)
    batch = bytearray(
        _HEADER.pack(
            entry.offset,
            total - 12,
            entry.epoch,
            CURRENT_MAGIC,
            0,  # crc, filled below
            attributes,
            0,  # last offset delta: one record
            NO_TIMESTAMP,
            NO_TIMESTAMP,
            -1,  # producer id
            -1,  # producer epoch
            -1,  # base sequence
            1,
        )
    )
    batch += record
    struct.pack_into(">I", batch, 17, crc32c.crc32c(memoryview(batch)[CRC_START:]))
    return bytes(batch)


def entries_to_batches(entries: Iterable[Entry]) -> bytes:
    """The record batches of `entries`, concatenated in order."""
    return b"".join(entry_to_batch(e) for e in entries)


def batches_to_entries(
    data: bytes | bytearray | memoryview, limit: int | None = None
) -> list[Entry]:
    """The entries held in concatenated record batches (the inverse of `entries_to_batches`),
    the first `limit` of them when given.

    Every batch must be whole, pass its CRC-32C and hold exactly one record with a
    payload; anything else raises CorruptRecordError or PayloadError naming the offset.
    """
    entries: list[Entry] = []
    for header, raw in iter_batches(data):
        if limit is not None and len(entries) >= limit:
            break
        validate_batch(header, raw)
        where = f"metadata batch at offset {header.base_offset}"
        if header.record_count != 1 or header.last_offset_delta != 0:
            raise CorruptRecordError(
                f"{where} holds {header.record_count} records; the metadata log stores one "
                "entry per batch"
            )
        if header.compression != 0:
            raise CorruptRecordError(f"{where} is compressed; metadata batches never are")
        value = _record_value(raw, where)
        try:
            payload = decode_payload(value)
        except PayloadError as exc:
            raise PayloadError(f"{where}: {exc}") from None
        if isinstance(payload, LeaderChange) != header.is_control:
            raise CorruptRecordError(f"{where}: control bit does not match its payload")
        entries.append(Entry(header.base_offset, header.partition_leader_epoch, payload))
    return entries


def _record_value(raw: memoryview, where: str) -> memoryview:
    """The value of the single record of the batch `raw`."""
    end = len(raw)
    length, pos = _read_varint(raw, HEADER_SIZE, end)
    if length < 0 or pos + length != end:
        raise CorruptRecordError(f"{where}: record length {length} does not fill the batch")
    pos += 1  # attributes
    _, pos = _read_varint(raw, pos, end)  # timestamp delta
    _, pos = _read_varint(raw, pos, end)  # offset delta
    key_length, pos = _read_varint(raw, pos, end)
    pos += max(key_length, 0)
    value_length, pos = _read_varint(raw, pos, end)
    if value_length < 0 or pos + value_length > end:
        raise CorruptRecordError(f"{where}: record value of {value_length} bytes overruns it")
    return raw[pos : pos + value_length]
