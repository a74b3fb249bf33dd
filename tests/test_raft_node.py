"""RaftNode message handling: the up-to-date vote rule, the own-epoch commit rule, resign."""

from __future__ import annotations

import random

from reference_broker.controller.raft import (
    BeginQuorumEpoch,
    EndQuorumEpoch,
    FetchRequest,
    FetchResponse,
    InMemoryRaftLog,
    LeaderChange,
    NotLeader,
    QuorumStateStore,
    RaftConfig,
    RaftNode,
    VoteRequest,
    VoteResponse,
)
from reference_broker.controller.raft.state import ElectionState

CONFIG = RaftConfig(election_timeout_ms=100, fetch_timeout_ms=200, request_timeout_ms=100)


def node(node_id: int = 1, log: InMemoryRaftLog | None = None, epoch: int = 0) -> RaftNode:
    store = QuorumStateStore()
    store.write(ElectionState(epoch))
    return RaftNode(
        node_id,
        {1, 2, 3},
        log or InMemoryRaftLog(),
        store,
        random.Random(0),
        0,
        CONFIG,
    )


def vote(n: RaftNode, request: VoteRequest, now_ms: int) -> VoteResponse:
    """`n`'s answer to a VoteRequest."""
    answer = n.receive(request, now_ms)[0]
    assert isinstance(answer, VoteResponse)
    return answer


def fetch_reply(n: RaftNode, request: FetchRequest, now_ms: int) -> FetchResponse:
    """`n`'s one answer to a FetchRequest."""
    (answer,) = n.receive(request, now_ms)
    assert isinstance(answer, FetchResponse)
    return answer


def elect(n: RaftNode) -> None:
    """Make `n` leader: time out, then take node 2's vote."""
    requests = n.tick(10_000)
    assert {m.dst for m in requests if isinstance(m, VoteRequest)} == {2, 3}
    n.receive(VoteResponse(src=2, dst=1, epoch=n.epoch, granted=True, leader_id=None), 10_001)
    assert n.is_leader


def test_voter_refuses_a_candidate_with_a_less_complete_log() -> None:
    log = InMemoryRaftLog()
    log.append_as_leader(["a", "b"], 2)
    voter = node(2, log)
    behind = VoteRequest(src=1, dst=2, epoch=5, last_epoch=1, last_offset=10)
    (answer,) = voter.receive(behind, 0)
    assert isinstance(answer, VoteResponse) and not answer.granted and answer.epoch == 5
    shorter = VoteRequest(src=3, dst=2, epoch=5, last_epoch=2, last_offset=1)
    assert not vote(voter, shorter, 0).granted
    equal = VoteRequest(src=3, dst=2, epoch=5, last_epoch=2, last_offset=2)
    assert vote(voter, equal, 0).granted


def test_voter_grants_one_vote_per_epoch_even_after_restart() -> None:
    store = QuorumStateStore()
    log = InMemoryRaftLog()
    voter = RaftNode(2, {1, 2, 3}, log, store, random.Random(0), 0, CONFIG)
    assert vote(voter, VoteRequest(src=1, dst=2, epoch=1, last_epoch=0, last_offset=0), 0).granted
    restarted = RaftNode(2, {1, 2, 3}, log, store, random.Random(1), 5, CONFIG)
    rival = VoteRequest(src=3, dst=2, epoch=1, last_epoch=0, last_offset=0)
    assert not vote(restarted, rival, 5).granted
    again = VoteRequest(src=1, dst=2, epoch=1, last_epoch=0, last_offset=0)
    assert vote(restarted, again, 5).granted


def test_new_leader_writes_leader_change_and_hw_waits_for_its_commit() -> None:
    log = InMemoryRaftLog()
    log.append_as_leader(["old-1", "old-2"], 1)  # uncommitted entries of an older epoch
    leader = node(1, log)
    elect(leader)
    assert isinstance(log.read(2, 1)[0].payload, LeaderChange)
    assert leader.high_watermark == 0 and not leader.is_ready_leader
    # Node 2 has the older entries but not the LeaderChange: a majority holds offset 2,
    # yet the older epoch's entries are not committed by this leader's count.
    fetch = FetchRequest(
        src=2, dst=1, correlation_id=1, epoch=leader.epoch, fetch_offset=2, last_fetched_epoch=1
    )
    (response,) = leader.receive(fetch, 10_002)
    assert isinstance(response, FetchResponse) and response.entries[0].offset == 2
    assert leader.high_watermark == 0
    fetch = FetchRequest(
        src=2,
        dst=1,
        correlation_id=2,
        epoch=leader.epoch,
        fetch_offset=3,
        last_fetched_epoch=leader.epoch,
    )
    leader.receive(fetch, 10_003)
    assert leader.high_watermark == 3 and leader.is_ready_leader
    assert [e.payload for e in leader.committed_entries()][:2] == ["old-1", "old-2"]


def test_leader_answers_a_diverged_follower_with_its_epoch_end() -> None:
    log = InMemoryRaftLog()
    log.append_as_leader(["x"], 1)
    leader = node(1, log, epoch=2)
    elect(leader)
    fetch = FetchRequest(
        src=3, dst=1, correlation_id=7, epoch=leader.epoch, fetch_offset=4, last_fetched_epoch=1
    )
    response = fetch_reply(leader, fetch, 10_002)
    assert response.diverging is not None and response.diverging.offset == 1
    assert response.entries == ()


def test_stale_fetcher_is_fenced_and_non_leader_propose_is_refused() -> None:
    leader = node(1)
    elect(leader)
    stale = FetchRequest(
        src=2, dst=1, correlation_id=1, epoch=0, fetch_offset=0, last_fetched_epoch=0
    )
    response = fetch_reply(leader, stale, 10_002)
    assert response.error == "fenced_leader_epoch" and response.leader_id == 1
    follower = node(2)
    follower.receive(BeginQuorumEpoch(src=1, dst=2, epoch=leader.epoch), 10_003)
    assert follower.leader_id == 1
    assert follower.propose("x") == NotLeader(1, leader.epoch)
    assert leader.propose("x") == 1


def test_resign_asks_the_most_caught_up_voter_to_stand_first() -> None:
    leader = node(1)
    elect(leader)
    leader.propose("a")
    fetch = FetchRequest(
        src=3, dst=1, correlation_id=1, epoch=leader.epoch, fetch_offset=2, last_fetched_epoch=1
    )
    leader.receive(fetch, 10_002)
    ends = leader.resign(10_003)
    assert {m.dst for m in ends} == {2, 3}
    assert all(isinstance(m, EndQuorumEpoch) and m.preferred_successors == (3, 2) for m in ends)
    assert not leader.is_leader and leader.propose("b") == NotLeader(1, leader.epoch)
    follower = node(3)
    follower.receive(BeginQuorumEpoch(src=1, dst=3, epoch=leader.epoch), 10_003)
    follower.receive(ends[1], 10_004)
    out = follower.tick(10_004 + CONFIG.election_timeout_ms // 10 + 1)
    assert any(isinstance(m, VoteRequest) for m in out), "the first successor stands at once"


def test_observer_finds_the_leader_and_replicates_without_voting() -> None:
    leader = node(1)
    elect(leader)
    leader.propose("meta")
    observer = RaftNode(9, {1, 2, 3}, InMemoryRaftLog(), QuorumStateStore(), random.Random(3), 0)
    (fetch,) = observer.tick(0)
    assert isinstance(fetch, FetchRequest) and fetch.dst in {2, 3}
    not_leader = FetchResponse(
        src=fetch.dst,
        dst=9,
        correlation_id=fetch.correlation_id,
        epoch=1,
        leader_id=1,
        error="not_leader_or_follower",
    )
    (fetch,) = observer.receive(not_leader, 1)
    assert fetch.dst == 1
    (response,) = leader.receive(fetch, 10_002)
    observer.receive(response, 10_003)
    assert observer.log.end_offset == leader.log.end_offset
    ballot = VoteRequest(src=2, dst=9, epoch=9, last_epoch=9, last_offset=9)
    assert not vote(observer, ballot, 0).granted


def test_an_observer_told_of_no_leader_asks_again_only_after_the_fetch_interval() -> None:
    observer = RaftNode(9, {1, 2, 3}, InMemoryRaftLog(), QuorumStateStore(), random.Random(3), 0)
    (fetch,) = observer.tick(0)
    assert isinstance(fetch, FetchRequest)
    no_leader = FetchResponse(
        src=fetch.dst,
        dst=9,
        correlation_id=fetch.correlation_id,
        epoch=0,
        leader_id=None,
        error="not_leader_or_follower",
    )
    # During an election no voter can name a leader: asking again at once would loop
    # as fast as the network answers.
    assert observer.receive(no_leader, 1) == []
    assert observer.tick(1) == []
    interval = observer.config.fetch_interval_ms
    assert observer.next_deadline_ms() == 1 + interval
    (again,) = observer.tick(1 + interval)
    assert isinstance(again, FetchRequest)
