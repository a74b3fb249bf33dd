"""Faults aimed at transactions, as data and against a recording target: the
txn-coordinator role, pause-client / resume-client, and the coordinator and zombie
composites (the sim and process tests show them hit real brokers and clients)."""

from __future__ import annotations

import pytest

from harness.fault_timers import timers_from_settings
from nemesis import packages
from nemesis.coordinator_faults import DEFAULT_GROUPS, DEFAULT_TRANSACTIONAL_IDS
from nemesis.generate import generate
from nemesis.ops import (
    Kill,
    Pause,
    PauseClient,
    Restart,
    Resume,
    ResumeClient,
    Schedule,
    ScheduleError,
    StartPartition,
    StopPartition,
)
from nemesis.roles import Role, resolve
from nemesis.timing import FaultTimers
from tests.test_nemesis_executor import RecordingTarget, run_schedule, run_virtual

NODES = ["n1", "n2", "n3"]
TIMERS = FaultTimers(broker_session_ms=6_000, replica_lag_ms=20_000,
                     transaction_timeout_ms=10_000, txn_abort_interval_ms=1_000)
COORDINATOR_PACKAGES = [f"{a}-{w}-coordinator" for a in ("kill", "pause", "isolate")
                        for w in ("txn", "group")]


def target() -> RecordingTarget:
    return RecordingTarget(NODES, ["c1", "c2"], coordinators={"g": "n1"},
                           txn_coordinators={"tx": "n2"})


def test_txn_coordinator_role_resolves_through_txn_coordinator_of() -> None:
    t = target()
    role = Role(kind="txn-coordinator", transactional_id="tx", fallback=["n3"])
    found = resolve(role, t)
    assert (found.nodes, found.resolved_by) == (["n2"], "txn_coordinator_of")
    assert role.describe() == {"kind": "txn-coordinator", "transactional_id": "tx"}
    # Unknown to the target (no __transaction_state yet): its fallback.
    unknown = Role(kind="txn-coordinator", transactional_id="other", fallback=["n3"])
    assert resolve(unknown, t).nodes == ["n3"]
    assert resolve(unknown, t).resolved_by == "fallback"


def test_a_txn_coordinator_role_without_its_id_is_refused_and_old_roles_still_load() -> None:
    bad = (b'{"nodes":["n1"],"duration_ms":10,"ops":[{"f":"kill","at_ms":0,'
           b'"role":{"kind":"txn-coordinator"}}]}')
    with pytest.raises(ScheduleError, match="transactional_id"):
        Schedule.from_json(bad)
    old = (b'{"nodes":["n1"],"duration_ms":10,"ops":[{"f":"kill","at_ms":0,'
           b'"role":{"kind":"coordinator","group":"g"}}]}')
    (kill,) = Schedule.from_json(old).ops
    assert isinstance(kill, Kill) and kill.role == Role(kind="coordinator", group="g")


def test_pause_client_freezes_the_client_records_it_and_the_final_heal_resumes_it() -> None:
    t = target()
    schedule = Schedule(nodes=NODES, clients=["c1", "c2"], duration_ms=10_000, ops=[
        Kill(at_ms=0, role=Role(kind="txn-coordinator", transactional_id="tx")),
        PauseClient(at_ms=1_000, clients=["c1"]),
        PauseClient(at_ms=2_000, clients=["c1", "c2"]),
        ResumeClient(at_ms=3_000, clients=["c2"]),
    ])
    events = run_virtual(run_schedule, schedule, t)
    kill = next(e for e in events if e.f == "kill")
    assert kill.value["nodes"] == ["n2"] and kill.value["resolved_by"] == "txn_coordinator_of"
    pauses = [e for e in events if e.f == "pause-client"]
    assert [e.value["clients"] for e in pauses] == [["c1"], ["c2"]]
    assert pauses[1].value["skipped"] == {"c1": "c1 is already paused"}
    resumes = [(e.value["clients"], e.value.get("final", False))
               for e in events if e.f == "resume-client"]
    assert resumes == [(["c2"], False), (["c1"], True)]
    assert [c for c in t.calls if "client" in c[0]] == [
        ("pause_client", "c1"), ("pause_client", "c2"), ("resume_client", "c2"),
        ("resume_client", "c1")]
    assert t.healthy()


def test_a_pause_client_op_names_only_known_clients() -> None:
    with pytest.raises(ScheduleError, match="c9"):
        Schedule(nodes=NODES, clients=["c1"], duration_ms=10,
                 ops=[PauseClient(at_ms=0, clients=["c9"])]).validate()


def make(name: str, seed: int, *, groups: tuple[str, ...] = (),
         transactional_ids: tuple[str, ...] = ()) -> Schedule:
    return generate(name, nodes=NODES, clients=["c1", "c2"], duration_ms=600_000,
                    interval_ms=5_000, seed=seed, logs=["t1/0"], timers=TIMERS,
                    groups=groups, transactional_ids=transactional_ids)


@pytest.mark.parametrize("name", COORDINATOR_PACKAGES)
def test_coordinator_packages_aim_at_the_coordinator_past_the_session_timeout(
    name: str,
) -> None:
    assert name in packages.COMPOSITES and packages.parse(name) == (name,)
    action, which = name.split("-")[:2]
    ids = {"txn": ("tx-a", "tx-b"), "group": ("g-a", "g-b")}[which]
    ops = (make(name, 7, transactional_ids=ids) if which == "txn"
           else make(name, 7, groups=ids)).ops
    assert len(ops) >= 4
    aimed: set[str] = set()
    # A scenario cut by the final heal loses its repair: zip stops at the last pair.
    for start, end in zip(ops[::2], ops[1::2], strict=False):
        expected = {"kill": (Kill, Restart), "pause": (Pause, Resume),
                    "isolate": (StartPartition, StopPartition)}[action]
        assert (type(start), type(end)) == expected
        assert start.role is not None  # type: ignore[union-attr]
        role: Role = start.role  # type: ignore[union-attr]
        if which == "txn":
            assert role.kind == "txn-coordinator" and role.transactional_id is not None
            aimed.add(role.transactional_id)
        else:
            assert role.kind == "coordinator" and role.group is not None
            aimed.add(role.group)
        held = end.at_ms - start.at_ms - TIMERS.controller_failover_ms
        assert 1.5 * TIMERS.broker_session_ms <= held <= 2.5 * TIMERS.broker_session_ms
    assert aimed <= set(ids) and len(aimed) == 2  # both ids drawn over 10 minutes


def test_coordinator_packages_without_known_ids_aim_at_the_workload_defaults() -> None:
    (kill, *_) = make("kill-txn-coordinator", 1).ops
    assert isinstance(kill, Kill) and kill.role is not None
    assert kill.role.transactional_id == DEFAULT_TRANSACTIONAL_IDS[0]
    (pause, *_) = make("pause-group-coordinator", 1).ops
    assert isinstance(pause, Pause) and pause.role is not None
    assert pause.role.group == DEFAULT_GROUPS[0]


def test_zombie_producer_pauses_one_client_past_the_transaction_timeout() -> None:
    ops = make("zombie-producer", 3).ops
    assert len(ops) >= 4
    for pause, resume in zip(ops[::2], ops[1::2], strict=False):
        assert isinstance(pause, PauseClient) and isinstance(resume, ResumeClient)
        assert pause.clients == resume.clients and len(pause.clients) == 1
        held = resume.at_ms - pause.at_ms
        # Past the timeout and the coordinator's next abort check, not far past.
        assert (TIMERS.transaction_timeout_ms or 0) + TIMERS.txn_abort_interval_ms < held
        assert held <= 1.5 * ((TIMERS.transaction_timeout_ms or 0) + TIMERS.txn_abort_interval_ms)
    # Without client endpoints there is nobody to pause: no ops, not an error.
    assert generate("zombie-producer", nodes=NODES, duration_ms=600_000, seed=3,
                    timers=TIMERS).ops == []


def test_timers_read_the_transaction_settings_capped_by_the_broker_maximum() -> None:
    assert timers_from_settings({}).txn_abort_ms == 60_000 + 10_000
    timers = timers_from_settings(
        {"transaction.abort.timed.out.transaction.cleanup.interval.ms": 500,
         "transaction.max.timeout.ms": 4_000}, transaction_timeout_ms=9_000)
    assert (timers.transaction_timeout_ms, timers.txn_abort_interval_ms) == (4_000, 500)
    assert timers_from_settings({}, transaction_timeout_ms=2_000).transaction_timeout_ms == 2_000
    assert timers_from_settings({}).controller_failover_ms == 4_000
    assert timers_from_settings({"controller.quorum.fetch.timeout.ms": 500,
                                 "controller.quorum.election.timeout.ms": 300}
                                ).controller_failover_ms == 1_100


def test_the_shrinker_keeps_a_client_pause_with_the_resume_that_ends_it() -> None:
    from harness.shrink.search import fault_units

    ops = make("zombie-producer", 3).ops[:2]
    kill = Kill(at_ms=ops[0].at_ms + 1, nodes=["n1"])
    schedule = Schedule(nodes=NODES, clients=["c1", "c2"], duration_ms=600_000,
                        ops=[ops[0], kill, ops[1]])
    units = fault_units(schedule)
    assert [(u.starts, u.stops) for u in units] == [((ops[0],), (ops[1],)), ((kill,), ())]


def test_a_paused_client_shows_in_the_progress_line_and_the_report_timeline() -> None:
    from harness.progress import RunCounters
    from harness.report.html import NemesisRecord, fault_windows
    from harness.report.plots import Window

    counters = RunCounters()
    counters.observe("nemesis", "info", "pause-client", {"clients": ["c2"]}, None)
    assert counters.faults_active() == "client paused c2"
    counters.observe("nemesis", "info", "resume-client", {"clients": ["c2"]}, None)
    assert counters.faults_active() == "none"
    windows = fault_windows([NemesisRecord(1.0, "pause-client", {"clients": ["c2"]}, None),
                             NemesisRecord(4.0, "resume-client", {"clients": ["c2"]}, None)],
                            end_s=9.0)
    assert windows == [Window(1.0, 4.0, "paused", "pause client c2", "c2")]
