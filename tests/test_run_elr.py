"""`faultline run --eligible-leader-replicas`: the run setting reaches the sim brokers."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from harness.cli import cli
from harness.run_config import RunConfig


def test_the_setting_is_kafkas_feature_level_in_the_broker_settings() -> None:
    assert RunConfig().broker_settings()["eligible.leader.replicas.version"] == 0
    on = RunConfig.build({"eligible-leader-replicas": "true"})
    assert on.broker_settings()["eligible.leader.replicas.version"] == 1


def test_a_sim_run_with_it_takes_a_killed_broker_out_of_the_isr_when_it_returns(
    tmp_path: Path,
) -> None:
    # Seed 7 kills n3 at 3.2 s and restarts it at 4.3 s (nemesis.json records it); it
    # registers again once its old session expires (broker.session.timeout.ms).
    args = ["run", "--eligible-leader-replicas", "--nemesis", "kill", "--time-limit", "10",
            "--recovery", "3", "--final-read", "5", "--seed", "7", "--out", str(tmp_path)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir() and not p.is_symlink()]
    results = json.loads((run_dir / "results.json").read_text())
    assert results["config"]["eligible_leader_replicas"] is True
    assert results["valid"] is True
    nemesis = json.loads((run_dir / "nemesis.json").read_text())
    assert {"f": "restart", "nodes": ["n3"]}.items() <= nemesis["ops"][-1].items()
    assert "--eligible-leader-replicas" in results["reproduce"]
    logs = "".join(p.read_text() for p in (run_dir / "nodes").glob("*.log"))
    # The restart had no clean-shutdown marker: the controller saw an unclean shutdown.
    assert "broker 3 shut down uncleanly (previous epoch -1" in logs
