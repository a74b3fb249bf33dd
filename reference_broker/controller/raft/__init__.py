"""A sans-I/O Raft core in KRaft's shape: pull-based replication, Vote, BeginQuorumEpoch,
EndQuorumEpoch, a leader that commits a LeaderChange record of its own epoch before
its high watermark counts.

Drive a `RaftNode` with `tick(now_ms)` and `receive(message, now_ms)`; both return
the messages to send. See `node.py`.
"""

from .config import RaftConfig
from .log import Entry, InMemoryRaftLog, OffsetAndEpoch, RaftLog
from .messages import (
    BeginQuorumEpoch,
    BeginQuorumEpochResponse,
    EndQuorumEpoch,
    EndQuorumEpochResponse,
    FetchRequest,
    FetchResponse,
    LeaderChange,
    Message,
    VoteRequest,
    VoteResponse,
)
from .node import NotLeader, RaftNode
from .state import (
    Candidate,
    ElectionState,
    Follower,
    IllegalTransition,
    Leader,
    QuorumStateStore,
    Resigned,
    Unattached,
    Voted,
)

__all__ = [
    "BeginQuorumEpoch",
    "BeginQuorumEpochResponse",
    "Candidate",
    "ElectionState",
    "EndQuorumEpoch",
    "EndQuorumEpochResponse",
    "Entry",
    "FetchRequest",
    "FetchResponse",
    "Follower",
    "IllegalTransition",
    "InMemoryRaftLog",
    "Leader",
    "LeaderChange",
    "Message",
    "NotLeader",
    "OffsetAndEpoch",
    "QuorumStateStore",
    "RaftConfig",
    "RaftLog",
    "RaftNode",
    "Resigned",
    "Unattached",
    "VoteRequest",
    "VoteResponse",
    "Voted",
]
