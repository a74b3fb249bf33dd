"""One member of a classic consumer group, as Kafka's MemberMetadata."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from reference_broker.group.results import JoinProtocol


@dataclass
class Member:
    """A group member's registration and where it stands in the current rebalance.

    `awaiting_join` / `awaiting_sync` say that a JoinGroup / SyncGroup request of this
    member is parked at the coordinator; such a member needs no heartbeat (Kafka lets a
    pending request stand in for one). `heartbeat_deadline` is in trio-clock seconds.
    """

    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    rebalance_timeout_ms: int
    session_timeout_ms: int
    protocol_type: str
    protocols: list[JoinProtocol]
    assignment: bytes = b""
    awaiting_join: bool = False
    awaiting_sync: bool = False
    # A member that has not yet completed a join cannot heartbeat; it is bounded by
    # NEW_MEMBER_JOIN_TIMEOUT_MS instead of its session timeout.
    is_new: bool = False
    heartbeat_deadline: float | None = field(default=None)

    @property
    def protocol_names(self) -> list[str]:
        """The member's protocol names in its order of preference."""
        return [p.name for p in self.protocols]

    def metadata_for(self, protocol_name: str) -> bytes:
        """The member's metadata for a protocol it supports."""
        for p in self.protocols:
            if p.name == protocol_name:
                return p.metadata
        raise KeyError(f"member {self.member_id} does not support protocol {protocol_name!r}")

    def vote(self, candidates: Collection[str]) -> str:
        """The member's most preferred protocol among `candidates` (Kafka's MemberMetadata.vote)."""
        for p in self.protocols:
            if p.name in candidates:
                return p.name
        raise ValueError(
            f"member {self.member_id} supports none of the candidate protocols {sorted(candidates)}"
        )

    def matches(self, protocols: Sequence[JoinProtocol]) -> bool:
        """Whether a rejoin carries exactly the protocols and metadata already registered."""
        return list(protocols) == self.protocols

    def reset_heartbeat(self, now: float) -> None:
        """Expect the next heartbeat within the session timeout from `now`."""
        self.heartbeat_deadline = now + self.session_timeout_ms / 1000
