"""The leader's view of its in-sync replica set, with at most one change in flight.

As Kafka's Partition `PartitionState` (KIP-497): the ISR a leader acts on is the one
the controller committed. A change is proposed, sent, and applied only once the
controller answers, and while it is in flight the high watermark counts the
*maximal* ISR, the union of both: during a pending expansion the joining replica
already holds the high watermark back (it might be elected as soon as the change
commits), during a pending shrink the leaving one still does (the change might not
commit).

After the controller rejects a proposal because the leader's view is stale
(FENCED_LEADER_EPOCH, INVALID_UPDATE_VERSION, NOT_LEADER_OR_FOLLOWER, ...) the leader
proposes nothing more until newer metadata reaches it. Transient failures (no
controller, timeouts) are retried with the same proposal. A proposal the controller
certainly did not apply (INELIGIBLE_REPLICA, OPERATION_NOT_ATTEMPTED) is dropped, and
the leader proposes nothing new for retry.backoff.ms: every follower fetch would
otherwise propose the same change again at network speed.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ..errors import ErrorCode

# Kafka error codes (Errors.java) that `ErrorCode` does not name.
OPERATION_NOT_ATTEMPTED = 55
NEW_LEADER_ELECTED = 106
INVALID_UPDATE_VERSION = int(ErrorCode.INVALID_UPDATE_VERSION)
INELIGIBLE_REPLICA = int(ErrorCode.INELIGIBLE_REPLICA)

# The controller may not have seen the request at all (or this broker is re-registering
# after its session was fenced): send the same proposal again.
RETRIABLE_ERRORS = frozenset(
    {
        int(ErrorCode.UNKNOWN_SERVER_ERROR),
        int(ErrorCode.REQUEST_TIMED_OUT),
        int(ErrorCode.NETWORK_EXCEPTION),
        int(ErrorCode.NOT_CONTROLLER),
        int(ErrorCode.BROKER_NOT_AVAILABLE),
        int(ErrorCode.STALE_BROKER_EPOCH),
    }
)

# The controller certainly did not apply it, and the leader's view is still current:
# fall back to the committed ISR and propose again when there is reason to.
NOT_APPLIED_ERRORS = frozenset({OPERATION_NOT_ATTEMPTED, INELIGIBLE_REPLICA})

# Kafka's retry.backoff.ms default: the pause after a proposal the controller refused.
RETRY_BACKOFF_S = 0.1


class ChangeKind(enum.Enum):
    """What a proposal does to the ISR."""

    EXPAND = "expand"
    SHRINK = "shrink"


@dataclass(frozen=True)
class IsrProposal:
    """An ISR change sent to the controller: the whole new ISR, at the epochs it is based on."""

    kind: ChangeKind
    isr: tuple[int, ...]
    leader_epoch: int
    partition_epoch: int
    changed: frozenset[int]


class IsrOutcome(enum.Enum):
    """What the leader does with the controller's answer to a proposal."""

    APPLIED = "applied"  # the committed ISR and partition epoch are now ours
    IGNORED = "ignored"  # stale answer: metadata already moved past the proposal
    RETRY = "retry"  # send the same proposal again after a backoff
    REVERTED = "reverted"  # not applied; back to the committed ISR, may propose again
    AWAIT_METADATA = "await-metadata"  # our view is stale; wait for a metadata update


@dataclass
class IsrState:
    """Committed ISR plus the in-flight proposal, if any."""

    committed: frozenset[int]
    pending: IsrProposal | None = None
    # Set after a fatal rejection: no proposals until the next metadata update.
    awaiting_metadata: bool = False
    # After a refused proposal: no new one before this time (trio clock seconds).
    backoff_until: float = float("-inf")

    @property
    def maximal(self) -> frozenset[int]:
        """The replicas the high watermark waits for: committed ones and any joining one."""
        if self.pending is not None and self.pending.kind is ChangeKind.EXPAND:
            return self.committed | frozenset(self.pending.isr)
        return self.committed

    @property
    def in_flight(self) -> bool:
        """Whether a proposal is out, or the leader waits for metadata before proposing."""
        return self.pending is not None or self.awaiting_metadata

    def may_propose(self, now: float) -> bool:
        """Whether a new proposal may go out at `now`."""
        return not self.in_flight and now >= self.backoff_until

    def reset(self, committed: frozenset[int]) -> None:
        """New metadata: its ISR is the committed one and nothing is in flight."""
        self.committed = committed
        self.pending = None
        self.awaiting_metadata = False
        self.backoff_until = float("-inf")


def classify_error(error: int) -> IsrOutcome:
    """How a leader reacts to an AlterPartition error code (Kafka's handleAlterPartitionError)."""
    if error in RETRIABLE_ERRORS:
        return IsrOutcome.RETRY
    if error in NOT_APPLIED_ERRORS:
        return IsrOutcome.REVERTED
    return IsrOutcome.AWAIT_METADATA
