"""Transactional guarantees in the sim with faultline's own client (3 brokers, RF 3,
acks=all): read_committed never sees aborted data and read_uncommitted does; exactly-once
holds through transaction- and group-coordinator failover; committing the input offsets
outside the transaction breaks it, and the checker says how."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.run_config import RunConfig
from harness.runner import RunOutcome, run


def run_sim(tmp_path: Path, workload: str, **given: Any) -> RunOutcome:
    settings: dict[str, Any] = {"workload": workload, "time-limit": 20.0, "seed": 1, **given}
    return run(RunConfig.build(settings), tmp_path / "runs", index=False)


def nemesis(outcome: RunOutcome) -> list[dict[str, Any]]:
    lines = (outcome.run_dir / "history.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["process"] == "nemesis"]


def test_read_committed_never_reads_aborted_writes_and_read_uncommitted_does(
    tmp_path: Path,
) -> None:
    committed = run_sim(tmp_path / "rc", "txn", nemesis="kill",
                        **{"isolation-level": "read_committed"})
    assert committed.verdict["valid"] is True, committed.verdict["counts"]
    uncommitted = run_sim(tmp_path / "ru", "txn", nemesis="kill",
                          **{"isolation-level": "read_uncommitted"})
    assert uncommitted.verdict["counts"].get("aborted-read", 0) > 0
    assert "aborted-read" in uncommitted.verdict["bad_anomaly_types"]


def test_exactly_once_holds_through_coordinator_failover(tmp_path: Path) -> None:
    outcome = run_sim(tmp_path, "exactly-once", nemesis="kill-txn-coordinator,"
                      "kill-group-coordinator", **{"time-limit": 30.0})
    assert outcome.verdict["valid"] is True, outcome.verdict["counts"]
    kills = [e for e in nemesis(outcome) if e["f"] == "kill"]
    assert {e["value"]["resolved_by"] for e in kills} >= {"txn_coordinator_of", "coordinator_of"}
    assert outcome.verdict["stats"]["messages"]["acknowledged"] > 50


def test_offsets_committed_outside_the_transaction_duplicate_outputs(tmp_path: Path) -> None:
    outcome = run_sim(tmp_path, "exactly-once", nemesis="kill",
                      **{"eos-offsets-outside-txn": True})
    assert outcome.verdict["counts"].get("eos-duplicate", 0) > 0, outcome.verdict["counts"]
    assert outcome.verdict["valid"] is False
    evidence = outcome.verdict["anomalies"]["eos-duplicate"][0]
    assert "transformed into" in evidence["explanation"][0]
