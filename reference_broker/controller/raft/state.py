"""The quorum states of a node and the legal moves between them (Kafka's QuorumState).

One object per state, holding what only that state needs (a candidate's votes, a
leader's view of its voters, a follower's fetch timer). `QuorumState` owns the
current one, checks every transition against the rules below and persists the
election state (epoch, vote, leader) through a `QuorumStateStore` *before* the
transition is visible, so a vote survives a crash and is never cast twice.

    Unattached(e) --vote--> Voted(e)            same epoch only
    any           --------> Unattached(e' > e)  a higher epoch was seen
    voter, not Leader ----> Candidate(e + 1)    election or fetch timeout
    Candidate(e)  --------> Leader(e)           a majority granted
    not Leader/Resigned --> Follower(e' >= e)   a leader of e' made itself known
    Leader(e)     --------> Resigned(e)         graceful resign or lost quorum
"""

from __future__ import annotations

from dataclasses import dataclass, field


class IllegalTransition(RuntimeError):
    """A transition the Raft rules forbid was attempted: a bug in the caller, not the network."""


@dataclass(frozen=True, slots=True)
class ElectionState:
    """What must survive a restart (Kafka's quorum-state file)."""

    epoch: int = 0
    voted_id: int | None = None
    leader_id: int | None = None


class QuorumStateStore:
    """Holds the persisted election state in memory; a durable store writes a file and fsyncs.

    The simulation keeps this object across a node's crash, as a disk would.
    """

    def __init__(self) -> None:
        self._state = ElectionState()
        self.writes = 0

    def read(self) -> ElectionState:
        """The last written state."""
        return self._state

    def write(self, state: ElectionState) -> None:
        """Persist `state`; it must be durable when this returns."""
        self._state = state
        self.writes += 1


@dataclass(slots=True)
class Unattached:
    """Knows an epoch but neither a leader nor a vote in it."""

    epoch: int
    election_deadline_ms: int


@dataclass(slots=True)
class Voted:
    """Voted for `voted_id` in `epoch`; waits for that candidate to win."""

    epoch: int
    voted_id: int
    election_deadline_ms: int


@dataclass(slots=True)
class Candidate:
    """Stands for election in `epoch`, having voted for itself."""

    epoch: int
    election_deadline_ms: int
    granted: set[int] = field(default_factory=set)
    rejected: set[int] = field(default_factory=set)
    # After a lost election the candidate waits a random backoff before the next one.
    backoff_deadline_ms: int | None = None
    next_vote_resend_ms: int = 0


@dataclass(slots=True)
class ReplicaState:
    """The leader's view of one replica: how far it has fetched and when it last did."""

    end_offset: int = 0
    last_fetch_ms: int | None = None


@dataclass(slots=True)
class Leader:
    """Leads `epoch`; `epoch_start_offset` is where its LeaderChange record sits."""

    epoch: int
    epoch_start_offset: int
    replicas: dict[int, ReplicaState]
    check_quorum_deadline_ms: int
    begin_acked: set[int] = field(default_factory=set)
    next_begin_resend_ms: int = 0


@dataclass(slots=True)
class Follower:
    """Follows `leader_id` in `epoch` by fetching from it."""

    epoch: int
    leader_id: int
    fetch_deadline_ms: int
    fetch_in_flight: int | None = None
    fetch_sent_ms: int = 0
    next_fetch_ms: int = 0


@dataclass(slots=True)
class Resigned:
    """Was leader of `epoch` and resigned; waits for a successor, or stands again."""

    epoch: int
    election_deadline_ms: int
    preferred_successors: tuple[int, ...]
    unacked: set[int]
    next_end_resend_ms: int = 0


State = Unattached | Voted | Candidate | Leader | Follower | Resigned


class QuorumState:
    """The current state of one node, its voters, and the checked transitions."""

    def __init__(self, local_id: int, voters: frozenset[int], store: QuorumStateStore) -> None:
        if not voters:
            raise ValueError("a quorum needs at least one voter")
        self.local_id = local_id
        self.voters = voters
        self.store = store
        self.current: State = Unattached(0, 0)

    @property
    def is_voter(self) -> bool:
        """True when this node votes; an observer only follows."""
        return self.local_id in self.voters

    @property
    def epoch(self) -> int:
        """The epoch of the current state."""
        return self.current.epoch

    @property
    def leader_id(self) -> int | None:
        """The leader of the current epoch, when known."""
        match self.current:
            case Leader() | Resigned():
                return self.local_id
            case Follower(leader_id=leader):
                return leader
            case _:
                return None

    def majority(self) -> int:
        """How many voters make a majority."""
        return len(self.voters) // 2 + 1

    def _persist(self, state: State) -> None:
        voted = None
        if isinstance(state, Voted):
            voted = state.voted_id
        elif isinstance(state, Candidate):
            voted = self.local_id
        leader = self.local_id if isinstance(state, Leader | Resigned) else None
        if isinstance(state, Follower):
            leader = state.leader_id
        self.store.write(ElectionState(state.epoch, voted, leader))
        self.current = state

    def _illegal(self, target: str, why: str) -> IllegalTransition:
        return IllegalTransition(
            f"node {self.local_id}: cannot move from {type(self.current).__name__}"
            f"(epoch {self.epoch}) to {target}: {why}"
        )

    def restore(self, state: State) -> None:
        """Install the state rebuilt from the store at start-up (no checks, no write)."""
        self.current = state

    def to_unattached(self, epoch: int, election_deadline_ms: int) -> Unattached:
        """Enter a higher epoch knowing neither leader nor vote."""
        if epoch <= self.epoch:
            raise self._illegal(f"Unattached({epoch})", "the epoch must increase")
        state = Unattached(epoch, election_deadline_ms)
        self._persist(state)
        return state

    def to_voted(self, candidate_id: int, election_deadline_ms: int) -> Voted:
        """Grant the vote of the current epoch to `candidate_id`."""
        if not isinstance(self.current, Unattached):
            raise self._illegal(f"Voted({candidate_id})", "only an unattached node may vote")
        if candidate_id not in self.voters or not self.is_voter:
            raise self._illegal(f"Voted({candidate_id})", "votes are between voters")
        state = Voted(self.epoch, candidate_id, election_deadline_ms)
        self._persist(state)
        return state

    def to_candidate(self, election_deadline_ms: int) -> Candidate:
        """Stand for election in the next epoch, voting for oneself."""
        if not self.is_voter:
            raise self._illegal("Candidate", "an observer never stands")
        if isinstance(self.current, Leader):
            raise self._illegal("Candidate", "a leader resigns first")
        state = Candidate(self.epoch + 1, election_deadline_ms, granted={self.local_id})
        self._persist(state)
        return state

    def to_leader(self, epoch_start_offset: int, now_ms: int, check_quorum_ms: int) -> Leader:
        """Become leader of the candidate's epoch; the caller checked the majority."""
        current = self.current
        if not isinstance(current, Candidate):
            raise self._illegal("Leader", "only a candidate is elected")
        if len(current.granted & self.voters) < self.majority():
            raise self._illegal("Leader", f"{len(current.granted)} votes are not a majority")
        replicas = {v: ReplicaState() for v in self.voters if v != self.local_id}
        replicas[self.local_id] = ReplicaState(epoch_start_offset, now_ms)
        state = Leader(
            current.epoch,
            epoch_start_offset,
            replicas,
            now_ms + check_quorum_ms,
            begin_acked={self.local_id},
        )
        self._persist(state)
        return state

    def to_follower(self, epoch: int, leader_id: int, fetch_deadline_ms: int) -> Follower:
        """Follow `leader_id`, which leads `epoch`."""
        current = self.current
        if leader_id == self.local_id:
            raise self._illegal(f"Follower({epoch}, {leader_id})", "a node cannot follow itself")
        if leader_id not in self.voters:
            raise self._illegal(f"Follower({epoch}, {leader_id})", "leaders are voters")
        if epoch < self.epoch:
            raise self._illegal(f"Follower({epoch}, {leader_id})", "the epoch went backwards")
        if epoch == self.epoch:
            if isinstance(current, Leader | Resigned):
                raise self._illegal(
                    f"Follower({epoch}, {leader_id})", "this node leads that epoch itself"
                )
            if isinstance(current, Follower) and current.leader_id != leader_id:
                raise self._illegal(
                    f"Follower({epoch}, {leader_id})",
                    f"epoch {epoch} already has leader {current.leader_id}",
                )
        state = Follower(epoch, leader_id, fetch_deadline_ms)
        self._persist(state)
        return state

    def to_resigned(
        self, election_deadline_ms: int, preferred_successors: tuple[int, ...]
    ) -> Resigned:
        """Give up leadership of the current epoch."""
        if not isinstance(self.current, Leader):
            raise self._illegal("Resigned", "only a leader resigns")
        others = {v for v in self.voters if v != self.local_id}
        state = Resigned(self.epoch, election_deadline_ms, preferred_successors, others)
        self._persist(state)
        return state
