"""What the coordinator hands back to the request handlers: plain frozen dataclasses.

They mirror the fields of Kafka's JoinGroup, SyncGroup, OffsetCommit/OffsetFetch and
DescribeGroups responses so that a handler only copies them into the wire structs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from reference_broker.errors import ErrorCode

UNKNOWN_MEMBER_ID = ""  # JoinGroupRequest.UNKNOWN_MEMBER_ID
UNKNOWN_GENERATION_ID = -1  # JoinGroupRequest.UNKNOWN_GENERATION_ID


@dataclass(frozen=True)
class JoinProtocol:
    """One protocol a member can speak (for consumers: an assignor name and its subscription)."""

    name: str
    metadata: bytes


@dataclass(frozen=True)
class MemberInfo:
    """A member as the leader sees it in its JoinGroup response."""

    member_id: str
    group_instance_id: str | None
    metadata: bytes


@dataclass(frozen=True)
class JoinResult:
    """A JoinGroup response; `members` is non-empty only in the leader's."""

    error: ErrorCode
    generation_id: int
    protocol_type: str | None
    protocol_name: str | None
    leader: str
    member_id: str
    members: list[MemberInfo] = field(default_factory=list)

    @classmethod
    def failed(cls, error: ErrorCode, member_id: str = UNKNOWN_MEMBER_ID) -> JoinResult:
        """A JoinGroup error response, as Kafka's `JoinGroupResult(memberId, error)`."""
        return cls(error, UNKNOWN_GENERATION_ID, None, None, UNKNOWN_MEMBER_ID, member_id, [])


@dataclass(frozen=True)
class SyncResult:
    """A SyncGroup response: the member's assignment for the generation, or an error."""

    error: ErrorCode
    protocol_type: str | None
    protocol_name: str | None
    assignment: bytes

    @classmethod
    def failed(cls, error: ErrorCode) -> SyncResult:
        """A SyncGroup error response with an empty assignment."""
        return cls(error, None, None, b"")


@dataclass(frozen=True)
class OffsetAndMetadata:
    """A committed offset: the next offset to read, its leader epoch and client metadata."""

    offset: int
    leader_epoch: int
    metadata: str | None
    commit_timestamp_ms: int = -1


@dataclass(frozen=True)
class DescribedMember:
    """A member in a DescribeGroups response (metadata and assignment only when Stable)."""

    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    metadata: bytes
    assignment: bytes


@dataclass(frozen=True)
class GroupDescription:
    """A DescribeGroups entry; an unknown group is described as Dead with no members."""

    error: ErrorCode
    group_id: str
    state: str
    protocol_type: str
    protocol_name: str
    members: list[DescribedMember]
