"""Attribution on hand-built schedules (`--schedule`), end to end in the sim: each run
names the fault that caused its anomalies, calls the trade-off ones explained, and
keeps broker log lines off the console."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from harness.run_config import RunConfig
from harness.runner import run

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "schedules"
# The kafka-guarantees preset's own schedule for its unclean-election rows.
PRESETS = Path(__file__).resolve().parent.parent / "harness" / "campaign" / "presets"


def _run(tmp_path: Path, schedule: str, **settings: Any) -> tuple[dict[str, Any], Any]:
    folder = PRESETS if (PRESETS / schedule).exists() else EXAMPLES
    given = {"schedule": str(folder / schedule), "seed": 1, "final-read": 8.0,
             **{name.replace("_", "-"): value for name, value in settings.items()}}
    config = RunConfig.build(given)
    outcome = run(config, tmp_path, index=False)
    results = json.loads((outcome.run_dir / "results.json").read_text())
    return results["explanations"], outcome


def _by_kind(section: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    items = [e for e in section["items"] if e["kind"] == kind]
    assert items, f"no explanation of {kind}: {section['items']}"
    return items


def test_acks1_leader_isolation_is_explained_by_the_isolated_leader(tmp_path: Path) -> None:
    section, outcome = _run(tmp_path, "isolate-leader.json", acks="1",
                            enable_idempotence=False, accept_tradeoffs=True)
    lost = _by_kind(section, "lost-write")
    assert all(e["tradeoff"] == "acks" and e["explained"] for e in lost)
    assert any("n3 was isolated at" in e["cause"] and "under acks=1" in e["cause"]
               for e in lost)
    assert "lost-write" in section["explained_types"]
    assert (outcome.run_dir / "cluster.jsonl").exists()
    assert any(line.startswith("  lost-write ×") for line in outcome.causes)


def test_flush_never_total_power_loss_is_explained(tmp_path: Path) -> None:
    section, _ = _run(tmp_path, "power-loss-all.json")
    assert section["items"]
    for e in section["items"]:
        assert e["tradeoff"] == "flush-never" and e["explained"], e["sentence"]
    cause = section["items"][0]["cause"]
    assert "power loss of" in cause and all(node in cause for node in ("n1", "n2", "n3"))
    # Not accepted: the checker's verdict stands.
    assert section["valid"] is False


def test_unclean_election_names_the_out_of_isr_leader(tmp_path: Path) -> None:
    section, _ = _run(tmp_path, "unclean-election.json", unclean_leader_election=True,
                      replica_lag_time_max_ms=2000)
    lost = _by_kind(section, "inconsistent-offsets")
    assert all(e["tradeoff"] == "unclean-election" and e["explained"] for e in lost)
    assert "n3 was elected from outside the ISR" in lost[0]["cause"]


def test_commit_before_crash_is_explained(tmp_path: Path) -> None:
    # At 0.1, seeds 1-3 each have a member crash between a commit and its processing.
    section, _ = _run(tmp_path, "quiet.json", workload="group", commit="before",
                      crash_probability=0.1)
    lost = _by_kind(section, "lost-by-commit")
    assert all(e["tradeoff"] == "commit-before" and e["explained"] for e in lost)
    assert "crashed at" in lost[0]["cause"]


def test_duplicates_without_idempotence_name_connection_resets(tmp_path: Path) -> None:
    section, outcome = _run(tmp_path, "connection-resets.json", enable_idempotence=False,
                            accept_tradeoffs=True)
    dups = _by_kind(section, "duplicate")
    assert all(e["tradeoff"] == "no-idempotence" and e["explained"] for e in dups)
    assert "reset-connections" in dups[0]["cause"]
    assert outcome.valid is True and outcome.exit_code == 0


# A broker log line as `logging` would print it to a console, or as the node files hold it.
_BROKER_LINE = re.compile(r"faultline\.broker|^(INFO|WARNING|ERROR|DEBUG):|sim s\] (INFO|WARN)")


def test_a_default_run_console_has_no_broker_log_lines(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "harness.cli", "run", "--time-limit", "6", "--recovery", "2",
         "--final-read", "5", "--seed", "3", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300, check=False)
    output = done.stdout + done.stderr
    assert "verdict:" in done.stdout
    assert not [line for line in output.splitlines() if _BROKER_LINE.search(line)], output
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir() and not p.is_symlink()]
    logs = "".join(p.read_text() for p in (run_dir / "nodes").glob("n*.log"))
    assert "faultline.broker.controller" in logs and " sim s] " in logs


def test_a_campaign_run_that_accepts_tradeoffs_is_judged_by_unexplained_ones() -> None:
    from harness.campaign.task import RunRequest, execute

    config = RunConfig.build({"schedule": str(EXAMPLES / "power-loss-all.json"), "seed": 1,
                              "final-read": 8.0, "accept-tradeoffs": True})
    record = execute(RunRequest(cell=0, seed=1, config=config.to_json(), run_name="r"))
    assert record.error is None and record.counts  # the power cut did lose writes
    assert record.bad == () and record.valid is True
