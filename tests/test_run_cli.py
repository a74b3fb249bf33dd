"""`faultline run`, `report` and `replay` end to end in the sim, and run-config refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness.cli import cli
from harness.commands.run import config_from_options
from harness.commands.run import run as run_command
from harness.run_config import ConfigError, RunConfig, flush_settings, new_run_dir

SHORT = ["--time-limit", "5", "--recovery", "1", "--final-read", "5", "--seed", "3"]


def test_replication_factor_above_the_node_count_is_refused(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["run", "--replication-factor", "4", "--nodes", "3",
                                      "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "--nodes" in result.output and "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []


def test_acks_below_all_with_an_idempotent_producer_is_refused() -> None:
    with pytest.raises(ConfigError, match="--no-enable-idempotence"):
        RunConfig(acks="1").validate()
    RunConfig(acks="1", enable_idempotence=False).validate()


def test_min_insync_above_the_replication_factor_is_refused() -> None:
    with pytest.raises(ConfigError, match="exceeds --replication-factor 2"):
        RunConfig(replication_factor=2, min_insync_replicas=3).validate()
    RunConfig(replication_factor=3, min_insync_replicas=3).validate()


def test_replication_defaults_are_rf_3_min_insync_2_lowered_to_fit_the_nodes() -> None:
    def resolved(*args: str) -> tuple[int, int, int]:
        ctx = run_command.make_context("run", list(args))
        config = config_from_options(dict(ctx.params))
        return config.nodes, config.replication_factor, config.min_insync_replicas

    assert resolved("--seed", "1") == (3, 3, 2)
    assert resolved("--seed", "1", "--nodes", "5") == (5, 3, 2)
    assert resolved("--seed", "1", "--nodes", "1") == (1, 1, 1)
    assert resolved("--seed", "1", "--target", "tansu", "--nemesis", "pause") == (1, 1, 1)
    assert resolved("--seed", "1", "--replication-factor", "2") == (3, 2, 2)
    assert resolved("--seed", "1", "--min-insync-replicas", "1") == (3, 3, 1)


def test_third_party_client_on_the_sim_is_refused() -> None:
    with pytest.raises(ConfigError, match="--target process"):
        RunConfig(client="kafka-python").validate()


def test_tansu_refuses_faults_it_cannot_inject() -> None:
    with pytest.raises(ConfigError, match="pause"):
        RunConfig(target="tansu", nodes=1, replication_factor=1, min_insync_replicas=1,
                  nemesis="kill").validate()
    RunConfig(target="tansu", nodes=1, replication_factor=1, min_insync_replicas=1,
              nemesis="pause").validate()


def test_external_needs_bootstrap_servers_and_fault_commands_for_faults() -> None:
    with pytest.raises(ConfigError, match="bootstrap-servers"):
        RunConfig(target="external", nemesis="none").validate()
    with pytest.raises(ConfigError, match="--fault-cmd"):
        RunConfig(target="external", bootstrap_servers="h:9092", nemesis="kill").validate()
    RunConfig(target="external", bootstrap_servers="h:9092", nemesis="kill",
              fault_cmds={"kill": "true", "restart": "true"}).validate()


def test_flush_maps_to_kafka_settings() -> None:
    assert flush_settings("every") == {"log.flush.interval.messages": 1}
    assert flush_settings("never") == {}
    assert flush_settings("500ms")["log.flush.interval.ms"] == 500
    with pytest.raises(ConfigError):
        flush_settings("sometimes")


def test_run_ids_never_collide(tmp_path: Path) -> None:
    config = RunConfig()
    dirs = {new_run_dir(tmp_path, config) for _ in range(3)}
    assert len(dirs) == 3 and all(d.is_dir() for d in dirs)


def test_config_round_trips_through_results_json() -> None:
    config = RunConfig(seed=9, allow=("unseen",), flush="every", fault_cmds={})
    assert RunConfig.from_json(json.loads(json.dumps(config.to_json()))) == config


def test_run_writes_results_report_and_index_then_replays_identically(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["run", "--nemesis", "none", *SHORT, "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir() and not p.is_symlink()]
    for name in ("history.jsonl", "results.json", "nemesis.json", "report.html",
                 "nodes/n1.log"):
        assert (run_dir / name).is_file(), name
    results = json.loads((run_dir / "results.json").read_text())
    assert results["valid"] is True and results["seed"] == 3
    assert results["config"]["workload"] == "queue"
    # The default run: one KRaft cluster of 3 brokers, every topic on it, RF 3.
    assert results["topology"]["topics"] == {"t1": "cluster", "t2": "cluster", "t3": "cluster"}
    assert (results["config"]["replication_factor"], results["config"]["min_insync_replicas"]) \
        == (3, 2)
    assert "wall time" in result.output and "seed 3" in result.output
    html = (run_dir / "report.html").read_text()
    assert "VALID" in html and "<svg" in html
    assert "src=\"http" not in html and "href=\"http" not in html  # self-contained
    assert run_dir.name in (tmp_path / "index.html").read_text()

    replayed = runner.invoke(cli, ["replay", str(run_dir)])
    assert replayed.exit_code == 0, replayed.output
    assert "identical" in replayed.output

    (run_dir / "report.html").unlink()
    rerendered = runner.invoke(cli, ["report", str(run_dir)])
    assert rerendered.exit_code == 0 and (run_dir / "report.html").is_file()


def test_replay_names_the_first_divergence_of_a_tampered_history(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["run", "--nemesis", "none", *SHORT, "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir() and not p.is_symlink()]
    history = run_dir / "history.jsonl"
    lines = history.read_text().splitlines(keepends=True)
    lines[5] = lines[5].replace('"time":', '"time":1', 1)
    history.write_text("".join(lines))
    replayed = runner.invoke(cli, ["replay", str(run_dir)])
    assert replayed.exit_code == 1
    assert "line 6" in replayed.output


def test_report_of_a_folder_that_is_not_a_run_exits_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["report", str(tmp_path)])
    assert result.exit_code == 2 and "not a run directory" in result.output


@pytest.mark.slow
def test_an_external_cluster_too_small_for_the_topics_is_a_setup_error(tmp_path: Path) -> None:
    """A workload that cannot create its topics says why and exits 2, no traceback."""
    import subprocess
    import sys

    from harness.broker_process import running_broker

    with running_broker(tmp_path / "n1") as broker:
        done = subprocess.run(
            [sys.executable, "-m", "harness.cli", "run", "--target", "external",
             "--bootstrap-servers", broker.bootstrap, "--nemesis", "none", "--time-limit", "2",
             "--out", str(tmp_path / "runs"), "-q"],
            capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "replication factor 3" in done.stderr and "Traceback" not in done.stderr
