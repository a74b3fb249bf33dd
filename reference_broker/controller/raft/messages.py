"""The quorum's messages, after KIP-595's Vote, BeginQuorumEpoch, EndQuorumEpoch and Fetch.

Each message names its sender (`src`) and receiver (`dst`); the runtime delivers it.
Fields follow Kafka's schemas where they exist (`LastOffsetEpoch`/`LastOffset` of
VoteRequest, `LastFetchedEpoch` and `DivergingEpoch` of Fetch) but travel here as
dataclasses; encoding them onto Kafka's wire is the broker's job.
"""

from __future__ import annotations

from dataclasses import dataclass

from .log import Entry, OffsetAndEpoch


@dataclass(frozen=True, slots=True)
class LeaderChange:
    """The control record a new leader appends in its own epoch (Kafka's LeaderChangeMessage).

    Its commit is what makes the leader's high watermark valid: everything before it
    is then committed too.
    """

    leader_id: int
    voters: tuple[int, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class VoteRequest:
    """A candidate asks for a vote in `epoch`, stating how far its log reaches."""

    src: int
    dst: int
    epoch: int
    last_epoch: int
    last_offset: int


@dataclass(frozen=True, slots=True, kw_only=True)
class VoteResponse:
    """A voter's answer; `epoch` and `leader_id` tell a stale candidate what it missed."""

    src: int
    dst: int
    epoch: int
    granted: bool
    leader_id: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class BeginQuorumEpoch:
    """A new leader announces itself to the voters."""

    src: int
    dst: int
    epoch: int


@dataclass(frozen=True, slots=True, kw_only=True)
class BeginQuorumEpochResponse:
    """Acknowledges a BeginQuorumEpoch, or (a higher `epoch`) tells the leader it is stale."""

    src: int
    dst: int
    epoch: int
    leader_id: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class EndQuorumEpoch:
    """A resigning leader asks the voters to elect a successor, best candidates first."""

    src: int
    dst: int
    epoch: int
    preferred_successors: tuple[int, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class EndQuorumEpochResponse:
    """Acknowledges an EndQuorumEpoch."""

    src: int
    dst: int
    epoch: int
    leader_id: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class FetchRequest:
    """A follower or observer pulls from `fetch_offset`, its log end offset.

    `last_fetched_epoch` is the epoch of its last entry, which lets the leader detect
    a diverged log; `correlation_id` pairs the response with the one fetch in flight.
    """

    src: int
    dst: int
    correlation_id: int
    epoch: int
    fetch_offset: int
    last_fetched_epoch: int


FETCH_OK = "none"
FENCED_LEADER_EPOCH = "fenced_leader_epoch"
UNKNOWN_LEADER_EPOCH = "unknown_leader_epoch"
NOT_LEADER = "not_leader_or_follower"


@dataclass(frozen=True, slots=True, kw_only=True)
class FetchResponse:
    """The leader's answer: entries from the fetch offset, or where the follower diverged.

    On an error, `epoch` and `leader_id` say who the sender believes leads.
    """

    src: int
    dst: int
    correlation_id: int
    epoch: int
    leader_id: int | None
    error: str = FETCH_OK
    entries: tuple[Entry, ...] = ()
    high_watermark: int = 0
    diverging: OffsetAndEpoch | None = None


Message = (
    VoteRequest
    | VoteResponse
    | BeginQuorumEpoch
    | BeginQuorumEpochResponse
    | EndQuorumEpoch
    | EndQuorumEpochResponse
    | FetchRequest
    | FetchResponse
)
