"""`faultline run` with the membership package in the sim: brokers are added, logs
reassigned and an added broker decommissioned while brokers are killed, and the checker
finds no acknowledged acks=all write lost (the run is valid)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from harness.cli import cli

ARGS = ["run", "-q", "--nemesis", "kill,membership", "--nemesis-interval", "2",
        "--time-limit", "25", "--recovery", "5", "--final-read", "10", "--flush", "every"]


def test_membership_changes_under_kills_keep_every_acknowledged_write(tmp_path: Path) -> None:
    done: set[str] = set()
    for seed in ("3", "4"):
        out = tmp_path / seed
        result = CliRunner().invoke(cli, [*ARGS, "--seed", seed, "--out", str(out)])
        assert result.exit_code == 0, result.output
        (run_dir,) = [p for p in out.iterdir() if p.is_dir() and not p.is_symlink()]
        results = json.loads((run_dir / "results.json").read_text())
        assert results["valid"] is True, (seed, results.get("anomalies"))
        for line in (run_dir / "history.jsonl").read_text().splitlines():
            event = json.loads(line)
            if event["process"] == "nemesis" and not event.get("error"):
                done.add(event["f"])
    assert {"add-broker", "reassign", "decommission-broker", "kill"} <= done, done
