"""Attribution as a pure function: small synthetic evidence and timelines per family."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from checkers.attribution import (
    ACKS,
    COMMIT_BEFORE,
    FLUSH_NEVER,
    NO_IDEMPOTENCE,
    UNCLEAN,
    ClusterTimeline,
    Context,
    Fault,
    LogState,
    PowerCut,
    RunFacts,
    explain,
    explain_duplication,
    explain_group,
    explain_loss,
    explain_ordering,
    explain_phantom,
)
from checkers.verdict import Verdict
from harness.explanations import separate

S = 10**9
NODES = ("n1", "n2", "n3")


def _state(t: float, leader: str, epoch: int, isr: tuple[str, ...],
           unclean: bool | None = None) -> LogState:
    return LogState(int(t * S), "t1/0", leader, epoch, isr, NODES, unclean)


def _ctx(facts: RunFacts, *, faults: Sequence[Fault] = (), logs: Sequence[LogState] = (),
         cuts: Sequence[PowerCut] = (), crashes: Sequence[tuple[int, int]] = (),
         holders: dict[int, frozenset[str]] | None = None) -> Context:
    times = {i: i * S for i in range(100)}  # history index i happened at i seconds
    cluster = ClusterTimeline(tuple(logs), tuple(cuts), (), NODES, True)
    return Context(times, list(faults), cluster, facts, list(crashes), holders)


def _lost(values: list[int], ack: int = 10, seen: int = 40) -> list[dict[str, Any]]:
    return [{"indices": [ack, seen], "log": "t1/0", "offsets": [i], "values": [v]}
            for i, v in enumerate(values)]


def _verdict(kind: str, items: list[dict[str, Any]]) -> Verdict:
    return cast(Verdict, {"valid": False, "counts": {kind: len(items)},
                          "bad_anomaly_types": [kind], "anomalies": {kind: items}})


def test_acks1_leader_isolation_names_the_leader_and_its_replacement() -> None:
    ctx = _ctx(RunFacts(acks="1", enable_idempotence=False),
               faults=[Fault(5 * S, "start-partition", ("n2",))],
               logs=[_state(1, "n2", 0, NODES), _state(20, "n1", 1, ("n1", "n3"), False)],
               holders={7: frozenset({"n2"}), 8: frozenset({"n2"})})
    (e,) = explain_loss("lost-write", _lost([7, 8]), ctx)
    assert e.tradeoff == ACKS and e.explained
    assert "while n2 led under acks=1" in e.cause and "n2 was isolated at 5.0 s" in e.cause
    assert "n1 elected at 20.0 s (unclean: no)" in e.cause


def test_acks1_loss_of_a_replicated_value_is_not_explained() -> None:
    ctx = _ctx(RunFacts(acks="1", enable_idempotence=False),
               faults=[Fault(5 * S, "kill", ("n2",))],
               logs=[_state(1, "n2", 0, NODES), _state(20, "n1", 1, ("n1", "n3"), False)],
               holders={7: frozenset({"n2", "n1"})})
    (e,) = explain_loss("lost-write", _lost([7]), ctx)
    assert e.tradeoff == ACKS and not e.explained


def test_flush_never_total_power_loss_is_explained_only_for_values_it_took() -> None:
    cuts = [PowerCut(30 * S, n, {"t1/0": frozenset({7, 8})}) for n in NODES]
    ctx = _ctx(RunFacts(), cuts=cuts, logs=[_state(1, "n1", 0, NODES)])
    (e,) = explain_loss("lost-write", _lost([7, 8]), ctx)
    assert e.tradeoff == FLUSH_NEVER and e.explained and "power loss of n1" in e.cause
    # A lost value no power cut took stays unexplained: a bug under the default flush.
    (bug,) = explain_loss("lost-write", _lost([7, 9]), ctx)
    assert not bug.explained and "no documented trade-off" in bug.cause
    # With --flush every the trade-off does not exist.
    ctx_every = _ctx(RunFacts(flush="every"), cuts=cuts, logs=[_state(1, "n1", 0, NODES)])
    (strict,) = explain_loss("lost-write", _lost([7, 8]), ctx_every)
    assert not strict.explained


def test_unclean_election_is_a_tradeoff_only_when_enabled() -> None:
    logs = [_state(1, "n1", 0, ("n1", "n2")), _state(20, "n3", 1, ("n3",), True)]
    on = _ctx(RunFacts(unclean_leader_election=True), logs=logs,
              faults=[Fault(15 * S, "kill", ("n1", "n2"))])
    (e,) = explain_loss("lost-write", _lost([7]), on)
    assert e.tradeoff == UNCLEAN and e.explained and "n3 was elected from outside" in e.cause
    off = _ctx(RunFacts(), logs=logs, faults=[Fault(15 * S, "kill", ("n1", "n2"))])
    (bug,) = explain_loss("lost-write", _lost([7]), off)
    assert not bug.explained and "although unclean.leader.election.enable is off" in bug.cause


def test_commit_before_crash_explains_lost_by_commit() -> None:
    item = {"indices": [10, 30], "log": "t1/0", "group": "g", "offsets": [3], "values": [5]}
    ctx = _ctx(RunFacts(commit="before"), crashes=[(4, 20 * S)])
    (e,) = explain_loss("lost-by-commit", [item], ctx)
    assert e.tradeoff == COMMIT_BEFORE and e.explained and "crashed at 20.0 s" in e.cause
    (after,) = explain_loss("lost-by-commit", [item], _ctx(RunFacts(), crashes=[(4, 20 * S)]))
    assert not after.explained


def test_duplicates_without_idempotence_name_the_connection_resets() -> None:
    item = {"indices": [10, 12], "log": "t1/0", "offsets": [3, 4], "values": [5]}
    resets = [Fault(11 * S, "reset-connections", NODES)]
    (e,) = explain_duplication("duplicate", [item],
                               _ctx(RunFacts(enable_idempotence=False), faults=resets))
    assert e.tradeoff == NO_IDEMPOTENCE and e.explained and "reset-connections" in e.cause
    (bug,) = explain_duplication("duplicate", [item], _ctx(RunFacts(), faults=resets))
    assert not bug.explained and "idempotent" in bug.cause


def test_ordering_follows_the_loss_on_its_log() -> None:
    cuts = [PowerCut(30 * S, n, {"t1/0": frozenset({7})}) for n in NODES]
    ctx = _ctx(RunFacts(), cuts=cuts, logs=[_state(1, "n1", 0, NODES)])
    losses = explain_loss("lost-write", _lost([7]), ctx)
    item = {"indices": [10, 41], "log": "t1/0", "process": 1, "offsets": [9, 2],
            "values": [7, 12]}
    (e,) = explain_ordering("nonmonotonic-send", [item], ctx, losses)
    assert e.explained and e.tradeoff == FLUSH_NEVER and "follows from the lost-write" in e.cause
    (alone,) = explain_ordering("nonmonotonic-send", [item], ctx, [])
    assert not alone.explained


def test_group_anomalies_need_every_broker_powered_off() -> None:
    item = {"indices": [10, 41], "log": "t1/0", "group": "g", "offsets": [9, 2], "values": []}
    every = [PowerCut(30 * S, n, {}) for n in NODES]
    (e,) = explain_group("commit-regression", [item], _ctx(RunFacts(), cuts=every))
    assert e.explained and e.tradeoff == FLUSH_NEVER
    (one,) = explain_group("commit-regression", [item], _ctx(RunFacts(), cuts=every[:1]))
    assert not one.explained


def test_phantom_reads_are_never_explained() -> None:
    item = {"indices": [10, 41], "log": "t1/0", "offsets": [9], "values": [3]}
    (e,) = explain_phantom("aborted-read", [item], _ctx(RunFacts(acks="1")))
    assert not e.explained and e.tradeoff is None


def test_unexplained_anomaly_fails_a_run_that_accepts_tradeoffs() -> None:
    cuts = [PowerCut(30 * S, n, {"t1/0": frozenset({7})}) for n in NODES]
    ctx = _ctx(RunFacts(), cuts=cuts, logs=[_state(1, "n1", 0, NODES)])
    explained = _verdict("lost-write", _lost([7]))
    section = separate(explained, explain(explained["anomalies"], ctx), accept_tradeoffs=True)
    assert section["valid"] is True and section["explained_types"] == ["lost-write"]
    # Value 9 was lost although no power cut took it: the run fails despite the flag.
    bug = _verdict("lost-write", _lost([7, 9]))
    section = separate(bug, explain(bug["anomalies"], ctx), accept_tradeoffs=True)
    assert section["valid"] is False and section["unexplained_types"] == ["lost-write"]
    # Without the flag the checker's verdict stands even when everything is explained.
    section = separate(explained, explain(explained["anomalies"], ctx), accept_tradeoffs=False)
    assert section["valid"] is False


def test_unseen_values_a_later_power_cut_took_are_explained() -> None:
    cuts = [PowerCut(50 * S, n, {"t1/0": frozenset({7})}) for n in NODES]
    ctx = _ctx(RunFacts(), cuts=cuts, logs=[_state(1, "n1", 0, NODES)])
    item = {"indices": [10], "log": "t1/0", "offsets": [3], "values": [7]}
    (e,) = explain_loss("unseen", [item], ctx)
    assert e.explained and e.tradeoff == FLUSH_NEVER


def test_a_replica_that_kept_the_values_truncated_to_a_leader_that_lost_them() -> None:
    # n1 was killed (kept its page cache); n2 and n3 lost the values in a power cut and
    # n3 was elected without them: n1 truncated to it.
    cuts = [PowerCut(15 * S, n, {"t1/0": frozenset({7})}) for n in ("n2", "n3")]
    logs = [_state(1, "n2", 0, NODES), _state(60, "n3", 3, ("n3",), False)]
    holders = {7: frozenset(NODES)}
    ctx = _ctx(RunFacts(), cuts=cuts, logs=logs, holders=holders)
    (e,) = explain_loss("lost-write", _lost([7], seen=70), ctx)
    assert e.explained and "n3 led again at 60.0 s" in e.cause
    assert any("n1 that kept them truncated" in line for line in e.evidence)
    # If the leader that took over had kept them, the power cut does not explain the loss.
    kept = [_state(1, "n2", 0, NODES), _state(60, "n1", 3, ("n1",), False)]
    (bug,) = explain_loss("lost-write", _lost([7], seen=70),
                          _ctx(RunFacts(), cuts=cuts, logs=kept, holders=holders))
    assert not bug.explained
