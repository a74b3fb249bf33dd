"""Zombie group members: a stalled member commits with the generation it still holds.

The reference broker refuses such commits as Kafka does (UNKNOWN_MEMBER_ID,
ILLEGAL_GENERATION, REBALANCE_IN_PROGRESS) and the history records them as failed
commits; a coordinator that stored them is caught by the group checker. Real simulated
3-node cluster, faultline's client, the group workload; the only change is how often
members turn zombie (and, in the second test, a planted coordinator bug).
"""

from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path

import pytest

import workloads.group as group_workload
from checkers.verdict import check_file
from harness.progress import CountingWriter, RunCounters
from harness.run_config import RunConfig
from harness.runner import drive
from harness.runtime.sim.cluster import SimCluster
from harness.runtime.sim.run import run_sim
from harness.targets import sim_session, sim_settings
from reference_broker.errors import ErrorCode
from reference_broker.group.state import ClassicGroup

STALE = ("UNKNOWN_MEMBER_ID", "ILLEGAL_GENERATION", "REBALANCE_IN_PROGRESS")
RUN = {"workload": "group", "nemesis": "none", "time-limit": 40, "recovery": 2,
       "final-read": 15, "seed": 11}


def run_group(tmp_path: Path) -> Path:
    config = RunConfig.build(RUN)
    history = tmp_path / "history.jsonl"

    async def scenario(cluster: SimCluster) -> None:
        session = sim_session(cluster, config)
        with history.open("wb") as stream:
            await drive(session, config, group_workload.GroupWorkload(),
                        CountingWriter(stream, RunCounters()), progress=io.StringIO())

    run_sim(scenario, config.seed, sim_settings(config))
    return history


def stale_commit_errors(history: Path) -> Counter[str]:
    found: Counter[str] = Counter()
    for line in history.read_text().splitlines():
        event = json.loads(line)
        if event["f"] == "commit" and event["type"] == "fail":
            for name in STALE:
                if name in (event.get("error") or ""):
                    found[name] += 1
    return found


@pytest.fixture
def zombies(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(group_workload, "ZOMBIE_P", 0.5)


def test_zombie_commits_are_refused_and_recorded_as_failed(tmp_path: Path, zombies: None) -> None:
    history = run_group(tmp_path)
    errors = stale_commit_errors(history)
    print(f"zombie commits refused: {dict(errors)}")
    assert sum(errors.values()) >= 3
    # The member's session expired during most stalls: the coordinator no longer knows it.
    assert errors["UNKNOWN_MEMBER_ID"] >= 1
    verdict = check_file(str(history), mode="subscribe")
    assert verdict["valid"] is True, verdict["bad_anomaly_types"]


def test_a_coordinator_that_stores_zombie_commits_is_caught(
        tmp_path: Path, zombies: None, monkeypatch: pytest.MonkeyPatch) -> None:
    refuse = ClassicGroup.validate_offset_commit

    def accept_stale(self: ClassicGroup, **kwargs: object) -> ErrorCode:
        code = refuse(self, **kwargs)  # type: ignore[arg-type]
        stale = (ErrorCode.UNKNOWN_MEMBER_ID, ErrorCode.ILLEGAL_GENERATION,
                 ErrorCode.REBALANCE_IN_PROGRESS)
        return ErrorCode.NONE if code in stale else code

    monkeypatch.setattr(ClassicGroup, "validate_offset_commit", accept_stale)
    history = run_group(tmp_path)
    assert not stale_commit_errors(history)
    verdict = check_file(str(history), mode="subscribe")
    print(f"planted: {verdict['counts']}")
    assert {"commit-regression", "lost-by-commit"} & set(verdict["bad_anomaly_types"])
    assert verdict["valid"] is False
