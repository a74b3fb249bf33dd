"""`RaftNode`: one member of the metadata quorum, as a sans-I/O state machine (h11-style).

The runtime owns sockets and time. It calls `tick(now_ms)` whenever a timer may have
expired (`next_deadline_ms()` says when) and `receive(message, now_ms)` for every
message that arrives; both return the messages to send. Nothing here reads a clock,
touches the network or uses randomness other than the injected `random.Random`.

Replication is KRaft's: followers pull with FetchRequest(fetch_offset = their log end,
last_fetched_epoch); the leader answers with entries, or with the epoch and end offset
where the follower's log diverged, and the follower truncates and fetches again. The
leader's high watermark is the largest offset a majority of voters has fetched, and it
only counts once it passes the LeaderChange record the leader appended in its own
epoch (KIP-595): before that, entries of older epochs are not known to be committed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from .config import RaftConfig
from .log import Entry, RaftLog, truncation_offset, validate_fetch
from .messages import (
    FENCED_LEADER_EPOCH,
    FETCH_OK,
    NOT_LEADER,
    UNKNOWN_LEADER_EPOCH,
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
from .state import (
    Candidate,
    Follower,
    Leader,
    QuorumState,
    QuorumStateStore,
    ReplicaState,
    Resigned,
    Unattached,
    Voted,
)


@dataclass(frozen=True, slots=True)
class NotLeader:
    """`propose` was called on a node that does not lead; try `leader_id` (if known)."""

    leader_id: int | None
    epoch: int


class RaftNode:
    """One voter (or observer) of the quorum. See the module docstring for the protocol."""

    def __init__(
        self,
        node_id: int,
        voters: frozenset[int] | set[int],
        log: RaftLog,
        store: QuorumStateStore,
        rng: random.Random,
        now_ms: int,
        config: RaftConfig | None = None,
    ) -> None:
        self.node_id = node_id
        self.log = log
        self.rng = rng
        self.config = config or RaftConfig()
        self.quorum = QuorumState(node_id, frozenset(voters), store)
        # The high watermark is volatile, as in Kafka: a restarted node learns it again.
        self._high_watermark = 0
        self._next_correlation_id = 0
        # An observer's fetch target while it hunts for the leader, and its fetch in
        # flight while it knows none: (correlation id, sent at).
        self._observer_target: int | None = None
        self._observer_fetch: tuple[int, int] | None = None
        # When an observer may ask again after a voter answered without naming a
        # leader (during an election): without a pause it would ask in a tight loop.
        self._observer_next_ms = 0
        self._restore(now_ms)

    # -- public surface -----------------------------------------------------------

    @property
    def epoch(self) -> int:
        """The current epoch as this node knows it."""
        return self.quorum.epoch

    @property
    def leader_id(self) -> int | None:
        """The leader of the current epoch, when known (itself while it leads or resigns)."""
        return self.quorum.leader_id

    @property
    def state(self) -> Unattached | Voted | Candidate | Leader | Follower | Resigned:
        """The current quorum state object."""
        return self.quorum.current

    @property
    def is_leader(self) -> bool:
        """True while this node leads its epoch."""
        return isinstance(self.quorum.current, Leader)

    @property
    def is_ready_leader(self) -> bool:
        """True once this leader's LeaderChange record is committed, so it may serve."""
        current = self.quorum.current
        return isinstance(current, Leader) and self._high_watermark > current.epoch_start_offset

    @property
    def high_watermark(self) -> int:
        """Every entry below this offset is committed. Never decreases within a run."""
        return self._high_watermark

    def committed_entries(self, start_offset: int = 0) -> list[Entry]:
        """The committed entries from `start_offset` (LeaderChange records included)."""
        return self.log.read(start_offset, max(0, self._high_watermark - start_offset))

    def propose(self, payload: object) -> int | NotLeader:
        """Append `payload` as leader; returns its offset, committed once the HW passes it."""
        current = self.quorum.current
        if not isinstance(current, Leader):
            return NotLeader(self.leader_id, self.epoch)
        (entry,) = self.log.append_as_leader([payload], current.epoch)
        self.log.flush()
        current.replicas[self.node_id].end_offset = self.log.end_offset
        self._update_leader_high_watermark(current)
        return entry.offset

    def resign(self, now_ms: int) -> list[Message]:
        """Gracefully give up leadership (EndQuorumEpoch to the voters); no-op otherwise."""
        current = self.quorum.current
        if not isinstance(current, Leader):
            return []
        return self._resign(current, now_ms)

    def next_deadline_ms(self) -> int:
        """The earliest time at which `tick` has something to do."""
        match self.quorum.current:
            case Unattached() | Voted() as s:
                deadline = s.election_deadline_ms
                if not self.quorum.is_voter:
                    deadline = self._fetch_due_ms()
                return deadline
            case Candidate() as s:
                if s.backoff_deadline_ms is not None:
                    return s.backoff_deadline_ms
                return min(s.election_deadline_ms, s.next_vote_resend_ms)
            case Leader() as s:
                return min(s.check_quorum_deadline_ms, s.next_begin_resend_ms)
            case Follower() as s:
                return min(s.fetch_deadline_ms, self._fetch_due_ms())
            case Resigned() as s:
                return min(s.election_deadline_ms, s.next_end_resend_ms)

    def tick(self, now_ms: int) -> list[Message]:
        """Fire every timer that has expired by `now_ms`; returns messages to send."""
        match self.quorum.current:
            case Unattached() | Voted() as s:
                if not self.quorum.is_voter:
                    return self._maybe_fetch(now_ms)
                if now_ms >= s.election_deadline_ms:
                    return self._become_candidate(now_ms)
                return []
            case Candidate() as s:
                return self._tick_candidate(s, now_ms)
            case Leader() as s:
                return self._tick_leader(s, now_ms)
            case Follower() as s:
                if now_ms >= s.fetch_deadline_ms:
                    if self.quorum.is_voter:
                        return self._become_candidate(now_ms)
                    # An observer cannot stand; it looks for the leader among the voters.
                    s.fetch_deadline_ms = now_ms + self.config.fetch_timeout_ms
                    s.fetch_in_flight = None
                    self._observer_target = self._random_voter()
                return self._maybe_fetch(now_ms)
            case Resigned() as s:
                if now_ms >= s.election_deadline_ms:
                    return self._become_candidate(now_ms)
                return self._send_end_quorum(s, now_ms)

    def receive(self, message: Message, now_ms: int) -> list[Message]:
        """Handle one message addressed to this node; returns messages to send."""
        if message.dst != self.node_id:
            raise ValueError(f"node {self.node_id} got a message for node {message.dst}")
        match message:
            case VoteRequest():
                return self._on_vote_request(message, now_ms)
            case VoteResponse():
                return self._on_vote_response(message, now_ms)
            case BeginQuorumEpoch():
                return self._on_begin_quorum_epoch(message, now_ms)
            case BeginQuorumEpochResponse() | EndQuorumEpochResponse():
                return self._on_ack(message, now_ms)
            case EndQuorumEpoch():
                return self._on_end_quorum_epoch(message, now_ms)
            case FetchRequest():
                return self._on_fetch_request(message, now_ms)
            case FetchResponse():
                return self._on_fetch_response(message, now_ms)
        raise TypeError(f"not a quorum message: {message!r}")

    # -- start-up -----------------------------------------------------------------

    def _restore(self, now_ms: int) -> None:
        """Rebuild the state from the store, as Kafka's QuorumState.initialize does."""
        saved = self.quorum.store.read()
        q = self.quorum
        deadline = now_ms + self._election_timeout()
        if saved.leader_id == self.node_id and q.is_voter:
            # A leader that restarts cannot know what it acknowledged; it resigns the epoch.
            others = {v for v in q.voters if v != self.node_id}
            q.restore(Resigned(saved.epoch, deadline, (), others))
        elif saved.voted_id == self.node_id and q.is_voter:
            q.restore(Candidate(saved.epoch, deadline, granted={self.node_id}))
        elif saved.voted_id is not None and q.is_voter:
            q.restore(Voted(saved.epoch, saved.voted_id, deadline))
        elif saved.leader_id is not None:
            q.restore(Follower(saved.epoch, saved.leader_id, now_ms + self.config.fetch_timeout_ms))
        else:
            q.restore(Unattached(saved.epoch, deadline))

    # -- timers -------------------------------------------------------------------

    def _election_timeout(self) -> int:
        base = self.config.election_timeout_ms
        return base + self.rng.randrange(base)

    def _random_voter(self) -> int:
        others = sorted(v for v in self.quorum.voters if v != self.node_id)
        return self.rng.choice(others) if others else self.node_id

    def _fetch_due_ms(self) -> int:
        current = self.quorum.current
        if isinstance(current, Follower):
            if current.fetch_in_flight is not None:
                return current.fetch_sent_ms + self.config.request_timeout_ms
            return current.next_fetch_ms
        if self._observer_fetch is not None:
            return self._observer_fetch[1] + self.config.request_timeout_ms
        return self._observer_next_ms

    def _tick_candidate(self, s: Candidate, now_ms: int) -> list[Message]:
        if s.backoff_deadline_ms is not None:
            if now_ms >= s.backoff_deadline_ms:
                return self._become_candidate(now_ms)
            return []
        if now_ms >= s.election_deadline_ms:
            # Lost (or split) the election: back off a random while, then stand again.
            backoff = 1 + self.rng.randrange(self.config.election_backoff_max_ms)
            s.backoff_deadline_ms = now_ms + backoff
            return []
        if now_ms >= s.next_vote_resend_ms:
            return self._send_votes(s, now_ms)
        return []

    def _tick_leader(self, s: Leader, now_ms: int) -> list[Message]:
        if now_ms >= s.check_quorum_deadline_ms:
            # Kafka's check-quorum: a leader no majority fetched from recently may be cut
            # off; it resigns instead of serving stale metadata indefinitely.
            fresh = {
                v
                for v, r in s.replicas.items()
                if v in self.quorum.voters
                and r.last_fetch_ms is not None
                and now_ms - r.last_fetch_ms < self._check_quorum_ms()
            }
            fresh.add(self.node_id)
            if len(fresh) < self.quorum.majority():
                return self._resign(s, now_ms)
            s.check_quorum_deadline_ms = now_ms + self._check_quorum_ms()
        out: list[Message] = []
        if now_ms >= s.next_begin_resend_ms:
            for voter in sorted(self.quorum.voters - s.begin_acked):
                out.append(BeginQuorumEpoch(src=self.node_id, dst=voter, epoch=s.epoch))
            s.next_begin_resend_ms = now_ms + self.config.request_timeout_ms // 4
        return out

    def _check_quorum_ms(self) -> int:
        return self.config.fetch_timeout_ms * 3 // 2

    # -- elections ----------------------------------------------------------------

    def _become_candidate(self, now_ms: int) -> list[Message]:
        state = self.quorum.to_candidate(now_ms + self._election_timeout())
        if len(state.granted) >= self.quorum.majority():
            return self._become_leader(now_ms)
        return self._send_votes(state, now_ms)

    def _send_votes(self, s: Candidate, now_ms: int) -> list[Message]:
        s.next_vote_resend_ms = now_ms + self.config.request_timeout_ms // 4
        return [
            VoteRequest(
                src=self.node_id,
                dst=voter,
                epoch=s.epoch,
                last_epoch=self.log.last_epoch,
                last_offset=self.log.end_offset,
            )
            for voter in sorted(self.quorum.voters - s.granted - s.rejected)
        ]

    def _become_leader(self, now_ms: int) -> list[Message]:
        state = self.quorum.to_leader(self.log.end_offset, now_ms, self._check_quorum_ms())
        # The record of its own epoch whose commit proves the leader's HW (KIP-595).
        self.log.append_as_leader(
            [LeaderChange(self.node_id, tuple(sorted(self.quorum.voters)))], state.epoch
        )
        self.log.flush()
        state.replicas[self.node_id].end_offset = self.log.end_offset
        self._update_leader_high_watermark(state)
        return self._tick_leader(state, now_ms)

    def _resign(self, s: Leader, now_ms: int) -> list[Message]:
        successors = tuple(
            v
            for v, _ in sorted(
                ((v, r) for v, r in s.replicas.items() if v in self.quorum.voters),
                key=lambda item: (-item[1].end_offset, item[0]),
            )
            if v != self.node_id
        )
        resigned = self.quorum.to_resigned(now_ms + self._election_timeout(), successors)
        return self._send_end_quorum(resigned, now_ms)

    def _send_end_quorum(self, s: Resigned, now_ms: int) -> list[Message]:
        if now_ms < s.next_end_resend_ms:
            return []
        s.next_end_resend_ms = now_ms + self.config.request_timeout_ms // 4
        return [
            EndQuorumEpoch(
                src=self.node_id,
                dst=voter,
                epoch=s.epoch,
                preferred_successors=s.preferred_successors,
            )
            for voter in sorted(s.unacked)
        ]

    def _log_is_up_to_date(self, last_epoch: int, last_offset: int) -> bool:
        """Raft's rule: grant only a candidate whose log is at least as complete."""
        return (last_epoch, last_offset) >= (self.log.last_epoch, self.log.end_offset)

    def _step_to_epoch(self, epoch: int, leader_id: int | None, now_ms: int) -> None:
        """Adopt a higher epoch seen on the wire, following its leader if it is known."""
        if leader_id is not None and leader_id != self.node_id and leader_id in self.quorum.voters:
            self._follow(epoch, leader_id, now_ms)
        else:
            self.quorum.to_unattached(epoch, now_ms + self._election_timeout())

    def _follow(self, epoch: int, leader_id: int, now_ms: int) -> None:
        current = self.quorum.current
        if isinstance(current, Follower) and (current.epoch, current.leader_id) == (
            epoch,
            leader_id,
        ):
            return
        self.quorum.to_follower(epoch, leader_id, now_ms + self.config.fetch_timeout_ms)
        self._observer_fetch = None

    def _on_vote_request(self, m: VoteRequest, now_ms: int) -> list[Message]:
        def answer(granted: bool) -> list[Message]:
            return [
                VoteResponse(
                    src=self.node_id,
                    dst=m.src,
                    epoch=self.epoch,
                    granted=granted,
                    leader_id=self.leader_id,
                )
            ]

        if not self.quorum.is_voter or m.src not in self.quorum.voters or m.epoch < self.epoch:
            return answer(False)
        if m.epoch > self.epoch:
            self.quorum.to_unattached(m.epoch, now_ms + self._election_timeout())
        current = self.quorum.current
        up_to_date = self._log_is_up_to_date(m.last_epoch, m.last_offset)
        if isinstance(current, Unattached) and up_to_date:
            # Persisted before the answer leaves: a restarted node never votes twice.
            self.quorum.to_voted(m.src, now_ms + self._election_timeout())
            return answer(True)
        if isinstance(current, Voted) and current.voted_id == m.src:
            return answer(True)
        return answer(False)

    def _on_vote_response(self, m: VoteResponse, now_ms: int) -> list[Message]:
        if m.epoch > self.epoch:
            self._step_to_epoch(m.epoch, m.leader_id, now_ms)
            return self._after_follow(now_ms)
        current = self.quorum.current
        if not isinstance(current, Candidate) or m.epoch != current.epoch:
            return []
        if m.granted:
            current.granted.add(m.src)
        else:
            current.rejected.add(m.src)
        if len(current.granted & self.quorum.voters) >= self.quorum.majority():
            return self._become_leader(now_ms)
        return []

    def _on_begin_quorum_epoch(self, m: BeginQuorumEpoch, now_ms: int) -> list[Message]:
        if m.epoch >= self.epoch and m.src != self.node_id and m.src in self.quorum.voters:
            current = self.quorum.current
            same_epoch_conflict = m.epoch == self.epoch and (
                isinstance(current, Leader | Resigned)
                or (isinstance(current, Follower) and current.leader_id != m.src)
            )
            if not same_epoch_conflict:
                self._follow(m.epoch, m.src, now_ms)
        out: list[Message] = [
            BeginQuorumEpochResponse(
                src=self.node_id, dst=m.src, epoch=self.epoch, leader_id=self.leader_id
            )
        ]
        return out + self._after_follow(now_ms)

    def _on_end_quorum_epoch(self, m: EndQuorumEpoch, now_ms: int) -> list[Message]:
        if m.epoch > self.epoch:
            # The resigning leader led an epoch we never saw; its leadership is over.
            self.quorum.to_unattached(m.epoch, now_ms + self._election_timeout())
        current = self.quorum.current
        if m.epoch == self.epoch and self.quorum.is_voter:
            position = (
                m.preferred_successors.index(self.node_id)
                if self.node_id in m.preferred_successors
                else len(m.preferred_successors)
            )
            # The best successor stands at once, the others after it had its chance.
            backoff = min(
                self.config.election_backoff_max_ms,
                position * self.config.election_timeout_ms // 2,
            ) + self.rng.randrange(1 + self.config.election_timeout_ms // 10)
            if isinstance(current, Follower) and current.leader_id == m.src:
                current.fetch_deadline_ms = min(current.fetch_deadline_ms, now_ms + backoff)
            elif isinstance(current, Unattached | Voted):
                current.election_deadline_ms = min(current.election_deadline_ms, now_ms + backoff)
        return [
            EndQuorumEpochResponse(
                src=self.node_id, dst=m.src, epoch=self.epoch, leader_id=self.leader_id
            )
        ]

    def _on_ack(
        self, m: BeginQuorumEpochResponse | EndQuorumEpochResponse, now_ms: int
    ) -> list[Message]:
        if m.epoch > self.epoch:
            self._step_to_epoch(m.epoch, m.leader_id, now_ms)
            return self._after_follow(now_ms)
        current = self.quorum.current
        if m.epoch != self.epoch:
            return []
        if isinstance(m, BeginQuorumEpochResponse) and isinstance(current, Leader):
            current.begin_acked.add(m.src)
        if isinstance(m, EndQuorumEpochResponse) and isinstance(current, Resigned):
            current.unacked.discard(m.src)
        return []

    # -- replication --------------------------------------------------------------

    def _after_follow(self, now_ms: int) -> list[Message]:
        """Start fetching at once when a transition just made this node a follower."""
        current = self.quorum.current
        if isinstance(current, Follower) and current.fetch_in_flight is None:
            current.next_fetch_ms = now_ms
            return self._maybe_fetch(now_ms)
        return []

    def _new_correlation_id(self) -> int:
        self._next_correlation_id += 1
        return self._next_correlation_id

    def _maybe_fetch(self, now_ms: int) -> list[Message]:
        current = self.quorum.current
        if isinstance(current, Follower):
            expired = (
                current.fetch_in_flight is not None
                and now_ms >= current.fetch_sent_ms + self.config.request_timeout_ms
            )
            if current.fetch_in_flight is not None and not expired:
                return []
            if current.fetch_in_flight is None and now_ms < current.next_fetch_ms:
                return []
            target = current.leader_id
            if not self.quorum.is_voter and self._observer_target is not None:
                target = self._observer_target
            current.fetch_in_flight = self._new_correlation_id()
            current.fetch_sent_ms = now_ms
            return [self._fetch_request(target, current.fetch_in_flight)]
        if not self.quorum.is_voter:
            # An observer that knows no leader asks a random voter, which names it.
            if now_ms < self._fetch_due_ms():
                return []
            correlation_id = self._new_correlation_id()
            self._observer_fetch = (correlation_id, now_ms)
            return [self._fetch_request(self._random_voter(), correlation_id)]
        return []

    def _fetch_request(self, target: int, correlation_id: int) -> FetchRequest:
        return FetchRequest(
            src=self.node_id,
            dst=target,
            correlation_id=correlation_id,
            epoch=self.epoch,
            fetch_offset=self.log.end_offset,
            last_fetched_epoch=self.log.last_epoch,
        )

    def _on_fetch_request(self, m: FetchRequest, now_ms: int) -> list[Message]:
        current = self.quorum.current

        def error(code: str) -> list[Message]:
            return [
                FetchResponse(
                    src=self.node_id,
                    dst=m.src,
                    correlation_id=m.correlation_id,
                    epoch=self.epoch,
                    leader_id=self.leader_id,
                    error=code,
                    high_watermark=self._high_watermark,
                )
            ]

        if not isinstance(current, Leader):
            return error(NOT_LEADER)
        if m.epoch < current.epoch:
            return error(FENCED_LEADER_EPOCH)
        if m.epoch > current.epoch:
            return error(UNKNOWN_LEADER_EPOCH)
        diverging = validate_fetch(self.log, m.fetch_offset, m.last_fetched_epoch)
        if diverging is None:
            replica = current.replicas.setdefault(m.src, ReplicaState())
            replica.end_offset = m.fetch_offset
            replica.last_fetch_ms = now_ms
            # A fetch in this epoch proves the voter knows the leader.
            current.begin_acked.add(m.src)
            self._update_leader_high_watermark(current)
            entries = tuple(self.log.read(m.fetch_offset, self.config.max_fetch_entries))
        else:
            entries = ()
        return [
            FetchResponse(
                src=self.node_id,
                dst=m.src,
                correlation_id=m.correlation_id,
                epoch=current.epoch,
                leader_id=self.node_id,
                entries=entries,
                high_watermark=self._high_watermark,
                diverging=diverging,
            )
        ]

    def _on_fetch_response(self, m: FetchResponse, now_ms: int) -> list[Message]:
        current = self.quorum.current
        if isinstance(current, Follower):
            if m.correlation_id != current.fetch_in_flight:
                return []  # the answer to a fetch we already gave up on
            current.fetch_in_flight = None
            current.next_fetch_ms = now_ms + self.config.fetch_interval_ms
        elif self._observer_fetch is not None and m.correlation_id == self._observer_fetch[0]:
            self._observer_fetch = None
            self._observer_next_ms = now_ms + self.config.fetch_interval_ms
        else:
            return []
        if m.epoch > self.epoch or (
            m.epoch == self.epoch and m.leader_id is not None and not isinstance(current, Follower)
        ):
            if m.leader_id is not None and m.leader_id != self.node_id:
                self._follow_or_adopt(m.epoch, m.leader_id, now_ms)
            elif m.epoch > self.epoch:
                self._step_to_epoch(m.epoch, None, now_ms)
            return self._after_follow(now_ms)
        current = self.quorum.current
        if m.error != FETCH_OK or not isinstance(current, Follower) or m.src != current.leader_id:
            if isinstance(current, Follower) and not self.quorum.is_voter and m.leader_id:
                self._observer_target = m.leader_id if m.epoch == self.epoch else None
            return []
        if m.epoch != current.epoch:
            return []
        current.fetch_deadline_ms = now_ms + self.config.fetch_timeout_ms
        self._observer_target = None
        if m.diverging is not None:
            cut = truncation_offset(self.log, m.diverging)
            if cut < self._high_watermark:
                raise AssertionError(
                    f"node {self.node_id}: the leader asked to truncate to {cut}, below the "
                    f"high watermark {self._high_watermark}; committed entries would be lost"
                )
            self.log.truncate_to(cut)
            current.next_fetch_ms = now_ms
            return self._maybe_fetch(now_ms)
        if m.entries and m.entries[0].offset == self.log.end_offset:
            self.log.append_as_follower(m.entries)
            self.log.flush()
            current.next_fetch_ms = now_ms
        elif m.entries:
            return []  # not where our log ends: a stale answer, fetch again in turn
        # The leader's HW only applies to the part of our log that matches its log.
        self._advance_high_watermark(min(m.high_watermark, self.log.end_offset))
        return self._maybe_fetch(now_ms)

    def _follow_or_adopt(self, epoch: int, leader_id: int, now_ms: int) -> None:
        current = self.quorum.current
        if epoch == self.epoch and isinstance(current, Leader | Resigned):
            return
        if leader_id in self.quorum.voters:
            self._follow(epoch, leader_id, now_ms)
        elif epoch > self.epoch:
            self.quorum.to_unattached(epoch, now_ms + self._election_timeout())

    def _update_leader_high_watermark(self, s: Leader) -> None:
        offsets = sorted(
            (r.end_offset for v, r in s.replicas.items() if v in self.quorum.voters),
            reverse=True,
        )
        # Voters without a fetch yet count as 0; the median over all voters is what a
        # majority has.
        offsets += [0] * (len(self.quorum.voters) - len(offsets))
        candidate = offsets[len(self.quorum.voters) // 2]
        if candidate > s.epoch_start_offset:
            self._advance_high_watermark(candidate)

    def _advance_high_watermark(self, offset: int) -> None:
        if offset > self._high_watermark:
            self._high_watermark = offset
