"""Known answers: configurations whose anomalies we know, run end to end in the sim.

Each test runs the real runner (sim target, fixed seed, a hand-built nemesis schedule)
and asserts the exact anomaly type the checker reports — or that it reports none — and
that the evidence names history indices whose events really show the values in question.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from harness.run_config import RunConfig
from harness.runner import RunOutcome, run, workload_registry
from nemesis.ops import (
    AnyFaultOp,
    Kill,
    PowerLoss,
    ResetConnections,
    Restart,
    Schedule,
    StartLinkFault,
    StopLinkFault,
)

NODES = ["n1", "n2", "n3"]


def _schedule(config: RunConfig, ops: list[AnyFaultOp]) -> Schedule:
    return Schedule(
        nodes=config.node_names,
        clients=[f"c{i}" for i in range(1, config.concurrency + 1)],
        packages=["hand-built"],
        seed=config.seed,
        duration_ms=round(config.time_limit_s * 1000),
        recovery_ms=round(config.recovery_s * 1000),
        ops=ops,
    )


def _run(tmp_path: Path, config: RunConfig, ops: list[AnyFaultOp]) -> RunOutcome:
    return run(config, tmp_path, schedule=_schedule(config, ops))


def _history(outcome: RunOutcome) -> list[dict[str, Any]]:
    lines = (outcome.run_dir / "history.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def _values_in(event: dict[str, Any]) -> set[int]:
    value = event["value"]
    if event["f"] == "send" and isinstance(value, list):
        return {m["value"] for m in value}
    if event["f"] == "poll" and isinstance(value, dict):
        return {r[2] for records in value.values() for r in records}
    return set()


def assert_evidence_is_real(outcome: RunOutcome, kind: str) -> list[dict[str, Any]]:
    """Every evidence item of `kind` names existing indices, and its values appear in
    the events at those indices; returns the evidence."""
    history = _history(outcome)
    evidence = outcome.verdict["anomalies"][kind]
    assert evidence, f"no evidence kept for {kind}"
    for item in evidence:
        indices = item["indices"]
        assert indices and all(0 <= i < len(history) for i in indices), item
        assert all(history[i]["index"] == i for i in indices)
        seen = set().union(*(_values_in(history[i]) for i in indices))
        for value in item.get("values", []):
            assert value in seen, f"{kind}: value {value} not in events {indices}"
    return evidence


# Single-node brokers (topic tK alone on node nK): these answers are about one log each.
BASE = RunConfig(seed=11, time_limit_s=12.0, recovery_s=3.0, final_read_s=10.0, nemesis="none",
                 replication_factor=1, min_insync_replicas=1)


def test_a_clean_run_without_faults_is_valid(tmp_path: Path) -> None:
    outcome = _run(tmp_path, BASE, [])
    assert outcome.verdict["valid"] is True, outcome.verdict["counts"]
    assert outcome.exit_code == 0
    assert outcome.verdict["stats"]["messages"]["acknowledged"] > 100
    assert outcome.verdict["stats"]["messages"]["read"] >= \
        outcome.verdict["stats"]["messages"]["acknowledged"]


def test_fsync_never_and_power_loss_of_all_nodes_loses_acknowledged_writes(
    tmp_path: Path,
) -> None:
    # Without torn writes: a cut keeps exactly the fsynced bytes, so the unsynced tail
    # (and the acknowledged writes in it) is lost whole. A torn tail keeps part of it and
    # the anomalies then read as reused offsets instead.
    config = RunConfig(**{**BASE.to_json(), "flush": "never", "nemesis": "power-loss",
                          "allow": (), "rate": 200.0, "torn_writes": False})
    outcome = _run(tmp_path, config, [
        # Early, so the logs written after the restart outgrow the lost tail and the
        # final reads pass over the offsets the lost messages were acknowledged at.
        PowerLoss(at_ms=3_000, nodes=NODES),
        Restart(at_ms=3_500, nodes=NODES),
    ])
    assert "lost-write" in outcome.verdict["counts"], outcome.verdict["counts"]
    assert outcome.exit_code == 1
    history = _history(outcome)
    for item in assert_evidence_is_real(outcome, "lost-write"):
        send = history[item["indices"][0]]
        assert (send["f"], send["type"]) == ("send", "ok")
        # Answered by the incarnation that lost power: every node is down from the cut
        # (3 s) to the restart (3.5 s), so an ok that arrives before 3.5 s was sent before
        # the cut (its response may still be on the wire at the cut, as on a real network).
        assert send["time"] < 3_500_000_000
        assert item["values"][0] in _values_in(send)


def test_fsync_every_message_survives_the_same_power_loss(tmp_path: Path) -> None:
    config = RunConfig(**{**BASE.to_json(), "flush": "every", "nemesis": "power-loss"})
    outcome = _run(tmp_path, config, [
        # Early, so the logs written after the restart outgrow the lost tail and the
        # final reads pass over the offsets the lost messages were acknowledged at.
        PowerLoss(at_ms=3_000, nodes=NODES),
        Restart(at_ms=3_500, nodes=NODES),
    ])
    counts = outcome.verdict["counts"]
    assert "lost-write" not in counts and "inconsistent-offsets" not in counts, counts


def _resets(start_ms: int, end_ms: int, every_ms: int) -> list[AnyFaultOp]:
    """Slow broker -> client links (so acknowledgements are in flight for a while), then
    connection resets: a produce the broker appended loses its response, and the
    producer retries it."""
    clients = [f"c{i}" for i in range(1, BASE.concurrency + 1)]
    slow = StartLinkFault(at_ms=start_ms - 1, links=[(n, c) for n in NODES for c in clients],
                          latency_ms=40.0)
    resets: list[AnyFaultOp] = [ResetConnections(at_ms=t, nodes=NODES)
                                for t in range(start_ms, end_ms, every_ms)]
    return [slow, *resets, StopLinkFault(at_ms=end_ms)]


def test_idempotence_off_and_connection_resets_duplicate_messages(tmp_path: Path) -> None:
    config = RunConfig(**{**BASE.to_json(), "enable_idempotence": False, "nemesis": "link",
                          "rate": 200.0})
    outcome = _run(tmp_path, config, _resets(1_000, 11_000, 97))
    assert "duplicate" in outcome.verdict["counts"], outcome.verdict["counts"]
    assert outcome.exit_code == 1
    for item in assert_evidence_is_real(outcome, "duplicate"):
        assert len(item["offsets"]) >= 2


def test_idempotence_on_under_the_same_resets_has_no_duplicates(tmp_path: Path) -> None:
    config = RunConfig(**{**BASE.to_json(), "enable_idempotence": True, "nemesis": "link",
                          "rate": 200.0})
    outcome = _run(tmp_path, config, _resets(1_000, 11_000, 97))
    assert "duplicate" not in outcome.verdict["counts"], outcome.verdict["counts"]


def _group_config(commit: str) -> RunConfig:
    # Members crash often, so some crash lands between a commit and its processing.
    return RunConfig(**{**BASE.to_json(), "workload": "group", "commit": commit,
                        "nemesis": "none", "crash_probability": 0.1})


needs_group = pytest.mark.skipif(
    "group" not in workload_registry(),
    reason="the group workload has not landed in workloads.registry yet",
)


@needs_group
def test_commit_before_processing_and_consumer_crashes_lose_messages(tmp_path: Path) -> None:
    outcome = _run(tmp_path, _group_config("before"), [])
    assert "lost-by-commit" in outcome.verdict["counts"], outcome.verdict["counts"]
    history = _history(outcome)
    for item in assert_evidence_is_real(outcome, "lost-by-commit"):
        kinds = {history[i]["f"] for i in item["indices"]}
        assert "commit" in kinds


@needs_group
def test_commit_after_processing_loses_nothing(tmp_path: Path) -> None:
    outcome = _run(tmp_path, _group_config("after"), [])
    assert "lost-by-commit" not in outcome.verdict["counts"], outcome.verdict["counts"]


def test_process_runtime_end_to_end_with_kill_and_restart(tmp_path: Path) -> None:
    """Real broker processes, a SIGKILL and restart of one of them, files on disk: with
    fsync on every message nothing acknowledged is lost, and the run says so."""
    config = RunConfig(target="process", seed=5, time_limit_s=8.0, recovery_s=2.0,
                       final_read_s=10.0, nemesis="kill", flush="every",
                       replication_factor=1, min_insync_replicas=1)
    outcome = _run(tmp_path, config, [Kill(at_ms=3_000, nodes=["n2"]),
                                      Restart(at_ms=4_000, nodes=["n2"])])
    history = _history(outcome)
    nemesis = [(e["f"], e["value"]["nodes"]) for e in history if e["process"] == "nemesis"]
    assert ("kill", ["n2"]) in nemesis and ("restart", ["n2"]) in nemesis
    assert (outcome.run_dir / "nodes" / "n2" / "broker.log").is_file()
    counts = outcome.verdict["counts"]
    assert "lost-write" not in counts and "inconsistent-offsets" not in counts, counts
    assert outcome.verdict["stats"]["messages"]["acknowledged"] > 20
