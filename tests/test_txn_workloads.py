"""The `txn` and `exactly-once` workloads end to end: `faultline run` on broker processes
with confluent-kafka's transactional producer, and the run settings they need."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from harness.run_config import RunConfig
from harness.runner import RunOutcome, run
from harness.settings import ConfigError


def run_process(tmp_path: Path, workload: str, **given: Any) -> RunOutcome:
    settings: dict[str, Any] = {
        "target": "process",
        "client": "confluent-kafka",
        "workload": workload,
        "nodes": 1,
        "nemesis": "none",
        "time-limit": 5.0,
        "recovery": 1.0,
        "final-read": 15.0,
        "concurrency": 4,
        "seed": 7,
        "isolation-level": "read_committed",
        **given,
    }
    return run(RunConfig.build(settings), tmp_path / "runs", index=False)


def counts(outcome: RunOutcome) -> dict[str, int]:
    return dict(outcome.verdict["counts"])


def txn_ops(outcome: RunOutcome) -> dict[str, int]:
    """Completed `txn` operations by type."""
    import json

    by: dict[str, int] = {}
    with open(outcome.run_dir / "history.jsonl") as lines:
        for line in lines:
            event = json.loads(line)
            if event["f"] == "txn" and event["type"] != "invoke":
                by[event["type"]] = by.get(event["type"], 0) + 1
    return by


def test_txn_workload_is_valid_under_kills(tmp_path: Path) -> None:
    outcome = run_process(tmp_path, "txn", nemesis="kill", **{"nemesis-interval": 2.0,
                                                               "time-limit": 8.0})
    assert outcome.verdict["valid"] is True, counts(outcome)
    ops = txn_ops(outcome)
    # Committed and (deliberately) aborted transactions both happened.
    assert ops.get("ok", 0) > 10 and ops.get("fail", 0) > 0, ops
    assert "kill" in (outcome.run_dir / "history.jsonl").read_text()


@pytest.mark.slow
def test_read_uncommitted_reads_aborted_writes_and_read_committed_does_not(
    tmp_path: Path,
) -> None:
    dirty = run_process(tmp_path / "ru", "txn", **{"isolation-level": "read_uncommitted"})
    clean = run_process(tmp_path / "rc", "txn")
    assert counts(dirty).get("aborted-read", 0) > 0, counts(dirty)
    assert counts(dirty).get("G1a", 0) > 0, counts(dirty)
    assert "aborted-read" not in counts(clean) and "G1a" not in counts(clean), counts(clean)
    assert clean.verdict["valid"] is True, counts(clean)


@pytest.mark.slow
def test_exactly_once_holds_under_kills_and_zombies(tmp_path: Path) -> None:
    outcome = run_process(tmp_path, "exactly-once", nemesis="kill",
                          **{"nemesis-interval": 2.0, "time-limit": 8.0})
    found = counts(outcome)
    assert outcome.verdict["valid"] is True, found
    assert not any(kind.startswith("eos-") for kind in found), found
    assert txn_ops(outcome).get("ok", 0) > 10


def test_offsets_committed_outside_the_transaction_break_exactly_once(tmp_path: Path) -> None:
    outcome = run_process(tmp_path, "exactly-once", **{"eos-offsets-outside-txn": True})
    assert counts(outcome).get("eos-duplicate", 0) > 0, counts(outcome)
    assert outcome.verdict["valid"] is False


@pytest.mark.slow
@pytest.mark.parametrize("workload", ["txn", "exactly-once"])
def test_transactional_workloads_hold_on_three_replicas_under_kills(
    tmp_path: Path, workload: str
) -> None:
    outcome = run_process(tmp_path, workload, nodes=3, nemesis="kill",
                          **{"nemesis-interval": 3.0, "time-limit": 15.0, "recovery": 5.0})
    assert outcome.verdict["valid"] is True, counts(outcome)


# -- settings ------------------------------------------------------------------------------


def test_transactional_workloads_imply_transactions() -> None:
    assert RunConfig.build({"workload": "txn"}).transactional is True
    assert RunConfig.build({"workload": "exactly-once"}).transactional is True
    assert RunConfig.build({"workload": "queue"}).transactional is False
    with pytest.raises(ConfigError, match="drop --no-transactional"):
        RunConfig.build({"workload": "txn", "transactional": False})


def test_transactional_runs_refuse_what_cannot_work() -> None:
    with pytest.raises(ConfigError, match="kafka-python"):
        RunConfig.build({"workload": "txn", "target": "process", "client": "kafka-python"})
    with pytest.raises(ConfigError, match="exactly-once only"):
        RunConfig.build({"workload": "txn", "eos-offsets-outside-txn": True})
    with pytest.raises(ConfigError, match="isolation-level"):
        RunConfig.build({"isolation-level": "serializable"})


def test_transaction_state_log_fits_the_cluster() -> None:
    one = RunConfig.build({"workload": "txn", "nodes": 1}).broker_settings()
    assert one["transaction.state.log.replication.factor"] == 1
    assert one["transaction.state.log.min.isr"] == 1
    three = RunConfig.build({"workload": "txn", "nodes": 3}).broker_settings()
    assert three["transaction.state.log.replication.factor"] == 3
    assert three["transaction.state.log.min.isr"] == 2
