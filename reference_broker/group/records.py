"""Keys and values of the `__consumer_offsets` topic, byte-compatible with Kafka.

Each record key and value starts with an int16 schema version, followed by the fields of
Kafka's generated messages (group-coordinator/src/main/resources/common/message/):

- OffsetCommitKey v0/v1: group, topic, partition        (v1 is what Kafka writes)
- GroupMetadataKey v2:   group
- OffsetCommitValue v0..v4: offset, [leader_epoch v3+], metadata, commit_timestamp,
  [expire_timestamp v1 only]; v4 is the flexible (compact, tagged-field) form.
- GroupMetadataValue v0..v4: protocol_type, generation, protocol, leader,
  [current_state_timestamp v2+], members (member_id, [group_instance_id v3+], client_id,
  client_host, [rebalance_timeout v1+], session_timeout, subscription, assignment); Kafka
  writes v3, v4 is the flexible form.

A record with a null value is a tombstone: the offset (or group) was deleted.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from reference_broker.group.results import OffsetAndMetadata

OFFSET_COMMIT_KEY_VERSION = 1
GROUP_METADATA_KEY_VERSION = 2
OFFSET_COMMIT_VALUE_VERSION = 3
# What Kafka writes for every metadata.version since 2.3 (flexible v4 is only read).
GROUP_METADATA_VALUE_VERSION = 3

_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_I64 = struct.Struct(">q")


class OffsetsRecordError(ValueError):
    """A `__consumer_offsets` record this broker cannot decode (corrupt or from the future)."""


@dataclass(frozen=True)
class OffsetCommitKey:
    """Key of a committed offset: which group's position in which partition."""

    group: str
    topic: str
    partition: int


@dataclass(frozen=True)
class GroupMetadataKey:
    """Key of a group's membership record (written by Kafka on every generation)."""

    group: str


@dataclass(frozen=True)
class GroupMemberMetadata:
    """One member as a GroupMetadataValue stores it (Kafka's MemberMetadata struct)."""

    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    rebalance_timeout_ms: int
    session_timeout_ms: int
    subscription: bytes  # the member's metadata for the group's selected protocol
    assignment: bytes


@dataclass(frozen=True)
class GroupMetadataValue:
    """A group's generation and members, written on every completed rebalance."""

    protocol_type: str
    generation: int
    protocol: str | None
    leader: str | None
    current_state_timestamp_ms: int
    members: tuple[GroupMemberMetadata, ...]


def encode_offset_commit_key(key: OffsetCommitKey) -> bytes:
    """OffsetCommitKey at version 1, as Kafka writes it."""
    return (
        _I16.pack(OFFSET_COMMIT_KEY_VERSION)
        + _string(key.group)
        + _string(key.topic)
        + _I32.pack(key.partition)
    )


def encode_offset_commit_value(value: OffsetAndMetadata) -> bytes:
    """OffsetCommitValue at version 3 (offset, leader epoch, metadata, commit timestamp)."""
    return (
        _I16.pack(OFFSET_COMMIT_VALUE_VERSION)
        + _I64.pack(value.offset)
        + _I32.pack(value.leader_epoch)
        + _string(value.metadata or "")
        + _I64.pack(value.commit_timestamp_ms)
    )


def encode_group_metadata_key(key: GroupMetadataKey) -> bytes:
    """GroupMetadataKey: version 2, then the group id."""
    return _I16.pack(GROUP_METADATA_KEY_VERSION) + _string(key.group)


def encode_group_metadata_value(value: GroupMetadataValue) -> bytes:
    """GroupMetadataValue at version 3, as Kafka writes it."""
    parts = [
        _I16.pack(GROUP_METADATA_VALUE_VERSION),
        _string(value.protocol_type),
        _I32.pack(value.generation),
        _nullable_string(value.protocol),
        _nullable_string(value.leader),
        _I64.pack(value.current_state_timestamp_ms),
        _I32.pack(len(value.members)),
    ]
    for m in value.members:
        parts += [
            _string(m.member_id),
            _nullable_string(m.group_instance_id),
            _string(m.client_id),
            _string(m.client_host),
            _I32.pack(m.rebalance_timeout_ms),
            _I32.pack(m.session_timeout_ms),
            _I32.pack(len(m.subscription)),
            m.subscription,
            _I32.pack(len(m.assignment)),
            m.assignment,
        ]
    return b"".join(parts)


def decode_group_metadata_value(data: bytes) -> GroupMetadataValue:
    """Decode a GroupMetadataValue of any version Kafka has written (0 to 4)."""
    reader = _Reader(data)
    version = reader.i16()
    if version < 0 or version > 4:
        raise OffsetsRecordError(f"unknown GroupMetadataValue version {version}")
    flexible = version >= 4
    string = reader.compact_string if flexible else reader.string
    nullable = reader.compact_nullable_string if flexible else reader.nullable_string
    blob = reader.compact_blob if flexible else reader.blob
    protocol_type = string()
    generation = reader.i32()
    protocol = nullable()
    leader = nullable()
    timestamp = reader.i64() if version >= 2 else -1
    count = reader.varuint() - 1 if flexible else reader.i32()
    if count < 0:
        raise OffsetsRecordError("GroupMetadataValue with a null member array")
    members: list[GroupMemberMetadata] = []
    for _ in range(count):
        member_id = string()
        instance = nullable() if version >= 3 else None
        client_id = string()
        client_host = string()
        rebalance_timeout = reader.i32() if version >= 1 else None
        session_timeout = reader.i32()
        subscription = blob()
        assignment = blob()
        members.append(
            GroupMemberMetadata(
                member_id=member_id,
                group_instance_id=instance,
                client_id=client_id,
                client_host=client_host,
                # Version 0 had no rebalance timeout; Kafka reads it as the session timeout.
                rebalance_timeout_ms=session_timeout
                if rebalance_timeout is None
                else rebalance_timeout,
                session_timeout_ms=session_timeout,
                subscription=subscription,
                assignment=assignment,
            )
        )
        if flexible:
            reader.skip_tagged_fields()
    if flexible:
        reader.skip_tagged_fields()
    return GroupMetadataValue(
        protocol_type, generation, protocol, leader, timestamp, tuple(members)
    )


def decode_key(data: bytes) -> OffsetCommitKey | GroupMetadataKey:
    """Decode a `__consumer_offsets` record key; raises OffsetsRecordError when unknown."""
    reader = _Reader(data)
    version = reader.i16()
    if version in (0, 1):
        key: OffsetCommitKey | GroupMetadataKey = OffsetCommitKey(
            reader.string(), reader.string(), reader.i32()
        )
    elif version == GROUP_METADATA_KEY_VERSION:
        key = GroupMetadataKey(reader.string())
    else:
        raise OffsetsRecordError(f"unknown __consumer_offsets key version {version}")
    return key


def decode_offset_commit_value(data: bytes) -> OffsetAndMetadata:
    """Decode an OffsetCommitValue of any version Kafka has written (0 to 4)."""
    reader = _Reader(data)
    version = reader.i16()
    if version < 0 or version > 4:
        raise OffsetsRecordError(f"unknown OffsetCommitValue version {version}")
    offset = reader.i64()
    leader_epoch = reader.i32() if version >= 3 else -1
    metadata = reader.compact_string() if version >= 4 else reader.string()
    commit_timestamp = reader.i64()
    if version == 1:
        reader.i64()  # expire timestamp: offset retention is not implemented
    if version >= 4:
        reader.skip_tagged_fields()
    return OffsetAndMetadata(offset, leader_epoch, metadata, commit_timestamp)


def _nullable_string(value: str | None) -> bytes:
    return _I16.pack(-1) if value is None else _string(value)


def _string(value: str) -> bytes:
    raw = value.encode("utf-8")
    if len(raw) > 0x7FFF:
        raise OffsetsRecordError(f"string of {len(raw)} bytes does not fit an int16 length")
    return _I16.pack(len(raw)) + raw


class _Reader:
    """Bounds-checked cursor over one key or value."""

    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)
        self._pos = 0

    def _take(self, n: int) -> memoryview:
        if n < 0 or self._pos + n > len(self._data):
            raise OffsetsRecordError(
                f"truncated __consumer_offsets record: need {n} bytes at {self._pos}, "
                f"have {len(self._data) - self._pos}"
            )
        chunk = self._data[self._pos : self._pos + n]
        self._pos += n
        return chunk

    def i16(self) -> int:
        return int(_I16.unpack(self._take(2))[0])

    def i32(self) -> int:
        return int(_I32.unpack(self._take(4))[0])

    def i64(self) -> int:
        return int(_I64.unpack(self._take(8))[0])

    def string(self) -> str:
        return self._utf8(self.i16())

    def nullable_string(self) -> str | None:
        n = self.i16()
        return None if n == -1 else self._utf8(n)

    def blob(self) -> bytes:
        return bytes(self._take(self.i32()))

    def compact_string(self) -> str:
        return self._utf8(self.varuint() - 1)

    def compact_nullable_string(self) -> str | None:
        n = self.varuint() - 1
        return None if n == -1 else self._utf8(n)

    def compact_blob(self) -> bytes:
        return bytes(self._take(self.varuint() - 1))

    def _utf8(self, n: int) -> str:
        try:
            return bytes(self._take(n)).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise OffsetsRecordError(f"invalid UTF-8 in __consumer_offsets record: {exc}") from None

    def varuint(self) -> int:
        result = shift = 0
        while True:
            byte = self._take(1)[0]
            result |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return result
            shift += 7
            if shift > 28:
                raise OffsetsRecordError("unsigned varint longer than 5 bytes")

    def skip_tagged_fields(self) -> None:
        for _ in range(self.varuint()):
            self.varuint()  # tag
            self._take(self.varuint())
