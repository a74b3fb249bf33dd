"""Quorum state transitions, the persisted election state, and the metadata log's epochs."""

from __future__ import annotations

import pytest

from reference_broker.controller.raft import (
    Candidate,
    IllegalTransition,
    InMemoryRaftLog,
    OffsetAndEpoch,
    QuorumStateStore,
)
from reference_broker.controller.raft.log import truncation_offset, validate_fetch
from reference_broker.controller.raft.state import ElectionState, QuorumState


def quorum(local: int = 1) -> QuorumState:
    return QuorumState(local, frozenset({1, 2, 3}), QuorumStateStore())


def test_vote_is_persisted_and_only_from_unattached() -> None:
    q = quorum()
    q.to_unattached(3, 0)
    q.to_voted(2, 0)
    assert q.store.read() == ElectionState(3, 2, None)
    with pytest.raises(IllegalTransition):
        q.to_voted(3, 0)


def test_candidate_bumps_epoch_and_votes_for_itself() -> None:
    q = quorum()
    state = q.to_candidate(0)
    assert isinstance(state, Candidate) and state.epoch == 1 and state.granted == {1}
    assert q.store.read() == ElectionState(1, 1, None)


def test_leader_needs_a_majority_of_votes() -> None:
    q = quorum()
    candidate = q.to_candidate(0)
    with pytest.raises(IllegalTransition):
        q.to_leader(0, 0, 100)
    assert q.current is candidate
    candidate.granted.add(3)
    leader = q.to_leader(0, 0, 100)
    assert leader.epoch == 1 and q.leader_id == 1


def test_leader_cannot_become_candidate_or_follow_in_its_own_epoch() -> None:
    q = quorum()
    q.to_candidate(0).granted.add(2)
    q.to_leader(0, 0, 100)
    with pytest.raises(IllegalTransition):
        q.to_candidate(0)
    with pytest.raises(IllegalTransition):
        q.to_follower(1, 2, 0)
    q.to_resigned(0, (2, 3))
    q.to_follower(2, 2, 0)
    assert q.leader_id == 2


def test_one_leader_per_epoch_for_a_follower() -> None:
    q = quorum()
    q.to_follower(4, 2, 0)
    with pytest.raises(IllegalTransition):
        q.to_follower(4, 3, 0)
    with pytest.raises(IllegalTransition):
        q.to_follower(3, 3, 0)


def test_unattached_needs_a_higher_epoch_and_observers_never_stand() -> None:
    q = quorum()
    q.to_unattached(2, 0)
    with pytest.raises(IllegalTransition):
        q.to_unattached(2, 0)
    observer = QuorumState(9, frozenset({1, 2, 3}), QuorumStateStore())
    with pytest.raises(IllegalTransition):
        observer.to_candidate(0)


def build_log(epochs: list[int]) -> InMemoryRaftLog:
    log = InMemoryRaftLog()
    for epoch in epochs:
        log.append_as_leader([f"e{epoch}"], epoch)
    return log


def test_end_offset_for_epoch_answers_the_largest_epoch_at_or_below() -> None:
    log = build_log([1, 1, 3, 3, 5])
    assert log.end_offset_for_epoch(1) == OffsetAndEpoch(1, 2)
    assert log.end_offset_for_epoch(2) == OffsetAndEpoch(1, 2)
    assert log.end_offset_for_epoch(3) == OffsetAndEpoch(3, 4)
    assert log.end_offset_for_epoch(9) == OffsetAndEpoch(5, 5)
    assert log.end_offset_for_epoch(0) == OffsetAndEpoch(0, 0)


def test_follower_truncates_to_where_its_log_diverged() -> None:
    leader = build_log([1, 1, 3, 3])
    follower = build_log([1, 1, 2, 2, 2])
    diverging = validate_fetch(leader, follower.end_offset, follower.last_epoch)
    assert diverging == OffsetAndEpoch(1, 2)
    follower.truncate_to(truncation_offset(follower, diverging))
    assert follower.end_offset == 2 and follower.last_epoch == 1
    assert validate_fetch(leader, follower.end_offset, follower.last_epoch) is None


def test_follower_ahead_in_the_same_epoch_truncates_to_the_leaders_end() -> None:
    leader = build_log([1, 1])
    follower = build_log([1, 1, 1, 1])
    diverging = validate_fetch(leader, 4, 1)
    assert diverging == OffsetAndEpoch(1, 2)
    assert truncation_offset(follower, diverging) == 2


def test_follower_append_must_continue_the_log() -> None:
    leader = build_log([1, 1, 1])
    follower = InMemoryRaftLog()
    with pytest.raises(ValueError, match="truncate or re-fetch"):
        follower.append_as_follower(leader.read(1, 2))
    follower.append_as_follower(leader.read(0, 3))
    assert follower.entries() == leader.entries()
