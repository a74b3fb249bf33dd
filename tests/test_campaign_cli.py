"""`faultline campaign` end to end: real sim runs in worker processes, the matrix, stop
rules, exit codes, JUnit, the index, and Ctrl-C keeping what finished."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from junitparser import Failure, JUnitXml

from harness.cli import cli

# Short sim runs: 3 simulated seconds under faults, 1 of recovery.
SHORT = ["--time-limit", "3", "--recovery", "1", "--final-read", "5", "--nemesis-interval",
         "1"]
# One broker per topic, fsync never, power cuts every simulated second or so: every
# power loss throws away everything its broker acknowledged, so loss is near certain.
LOSSY = [*SHORT, "--replication-factor", "1", "--flush", "never", "--nemesis", "power-loss",
         "--rate", "100"]


def campaign(tmp_path: Path, *args: str) -> tuple[int, str, dict[str, Any], Path]:
    out = tmp_path / "results"
    result = CliRunner().invoke(cli, ["campaign", *args, "--out", str(out)])
    folders = [p for p in out.glob("*-campaign-*")] if out.is_dir() else []
    data = json.loads((folders[0] / "campaign.json").read_text()) if folders else {}
    return result.exit_code, result.output, data, folders[0] if folders else out


def test_a_matrix_of_two_configurations_and_two_seeds(tmp_path: Path) -> None:
    junit = tmp_path / "junit.xml"
    code, output, data, folder = campaign(
        tmp_path, *SHORT, "--nemesis", "kill", "--seeds", "2", "--vary", "acks=1,all",
        "--expect", "lossy-ok", "--workers", "2", "--junit", str(junit))
    assert code == 0, output
    assert data["runs_done"] == 4 and not data["partial"] and data["exit_code"] == 0
    assert [c["label"] for c in data["configurations"]] == ["acks=1", "acks=all"]
    # Every run is an ordinary run folder.
    for run in data["runs"]:
        run_dir = folder / "runs" / run["run"]
        for name in ("history.jsonl", "results.json", "nemesis.json", "report.html",
                     "nodes/n1.log"):
            assert (run_dir / name).is_file(), (run_dir, name)
        results = json.loads((run_dir / "results.json").read_text())
        assert results["config"]["seed"] == run["seed"]
        assert run["replay"] == f"faultline replay {run_dir}"
    # The table is printed, the page and the index written.
    assert "acks=all" in output and "duplication" in output
    assert (folder / "campaign.html").is_file()
    index = (folder.parent / "index.html").read_text()
    assert f"{folder.name}/campaign.html" in index
    assert index.count("data-run ") == 4
    assert len(list(JUnitXml.fromfile(str(junit)))) == 2

    # `faultline report` re-renders the campaign's page from campaign.json.
    (folder / "campaign.html").unlink()
    rendered = CliRunner().invoke(cli, ["report", str(folder)])
    assert rendered.exit_code == 0 and (folder / "campaign.html").is_file(), rendered.output

    # Replaying a campaign's run reproduces its history byte for byte.
    first = data["runs"][0]
    replayed = CliRunner().invoke(cli, ["replay", str(folder / "runs" / first["run"])])
    assert replayed.exit_code == 0 and "identical" in replayed.output, replayed.output


def test_invalid_combinations_are_reported_before_anything_runs(tmp_path: Path) -> None:
    code, output, data, _ = campaign(tmp_path, *SHORT, "--nemesis", "none",
                                     "--vary", "acks=1,all", "--enable-idempotence",
                                     "--workers", "1")
    assert code == 0, output
    header = output.split(" runs on ")[0]
    assert "[0] acks=1: cannot run: --acks 1 with an idempotent producer" in header
    assert "[1] acks=all: expect safe" in header
    assert data["runs_done"] == 1 and data["configurations"][0]["status"] == "skipped"


@pytest.mark.parametrize(("args", "message"), [
    (["--vary", "acks=2"], "--acks must be one of 0, 1, all, not '2'"),
    (["--vary", "ack=1"], "unknown setting 'ack'"),
    (["--seed-range", "5..1"], "--seed-range expects A..B"),
    (["--preset", "nope"], "unknown preset"),
    (["--time-budget", "soon"], "--time-budget expects"),
    (["--acks", "1", "--enable-idempotence"], "cannot run"),
])
def test_bad_input_exits_2_naming_the_problem(tmp_path: Path, args: list[str],
                                              message: str) -> None:
    code, output, _, _ = campaign(tmp_path, *SHORT, *args)
    assert code == 2 and message in output and "Traceback" not in output, output


def test_a_violated_expectation_fails_the_campaign_and_junit_says_why(tmp_path: Path) -> None:
    junit = tmp_path / "junit.xml"
    code, output, data, _ = campaign(tmp_path, *LOSSY, "--seeds", "2", "--workers", "2",
                                     "--junit", str(junit))
    assert code == 1, output
    (config,) = data["configurations"]
    assert config["status"] == "violated"
    assert config["first_failing_run"] and config["replay"].startswith("faultline replay")
    # Each failing run was printed once as it finished, with the command that
    # reproduces it (the table then names the configuration's first one again).
    failing = [r for r in data["runs"] if r["outcome"] == "violated"]
    assert failing
    progress = output.split("\n#  ")[0]
    for run in failing:
        assert progress.count(f"reproduce: {run['replay']}") == 1, progress
    cases = [case for suite in JUnitXml.fromfile(str(junit)) for case in suite]
    failures = [c for c in cases if c.result and isinstance(c.result[0], Failure)]
    assert len(failures) == len(failing)
    assert all("faultline replay" in f.result[0].message for f in failures)


def test_a_lossy_expectation_turns_the_same_loss_into_a_demonstration(tmp_path: Path) -> None:
    code, output, data, _ = campaign(tmp_path, *LOSSY, "--seeds", "2", "--workers", "2",
                                     "--expect", "loss,ordering,duplication,group")
    assert code == 0, output
    assert data["configurations"][0]["status"] == "demonstrated"


def test_until_first_failure_stops_and_fail_fast_skips_the_configuration(
    tmp_path: Path,
) -> None:
    code, output, data, _ = campaign(tmp_path / "a", *LOSSY, "--seeds", "6", "--workers", "1",
                                     "--until-first-failure")
    assert code == 1, output
    assert data["partial"] and "first failing run" in data["stopped"]
    assert data["runs_done"] < 6 and data["runs_not_started"] == 6 - data["runs_done"]

    code, output, data, _ = campaign(tmp_path / "b", *LOSSY, "--seeds", "4", "--workers", "1",
                                     "--fail-fast", "--vary", "partitions=1,2")
    assert code == 1, output
    for config in data["configurations"]:
        assert len(config["seeds_run"]) + len(config["seeds_skipped"]) == 4
        assert config["seeds_skipped"], config


def test_a_time_budget_starts_no_run_after_it_is_spent(tmp_path: Path) -> None:
    code, output, data, _ = campaign(tmp_path, *SHORT, "--nemesis", "none", "--seeds", "20",
                                     "--workers", "1", "--time-budget", "1s")
    assert code == 0, output
    assert "time budget" in data["stopped"] and data["runs_done"] < 20
    assert data["runs_done"] + data["runs_not_started"] == 20
    assert "stopped early" in output


def test_ctrl_c_keeps_finished_runs_and_writes_a_partial_matrix(tmp_path: Path) -> None:
    out = tmp_path / "results"
    junit = tmp_path / "junit.xml"
    process = subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "campaign", *SHORT, "--nemesis", "kill",
         "--seeds", "40", "--workers", "1", "--out", str(out), "--junit", str(junit)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    done = 0
    while time.monotonic() < deadline and done < 2:
        time.sleep(0.5)
        files = list(out.glob("*-campaign-*/campaign.json"))
        if files:
            try:
                done = json.loads(files[0].read_text())["runs_done"]
            except (json.JSONDecodeError, KeyError):
                done = 0
    assert done >= 2, "the campaign did not finish two runs in time"
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 130, output
    assert "interrupted" in output and "Traceback" not in output
    (folder,) = out.glob("*-campaign-*")
    data = json.loads((folder / "campaign.json").read_text())
    assert data["interrupted"] and data["partial"]
    assert 2 <= data["runs_done"] < 40
    for run in data["runs"]:
        assert (folder / "runs" / run["run"] / "results.json").is_file()
    assert "INTERRUPTED" in (folder / "campaign.html").read_text()
    cases = [case for suite in JUnitXml.fromfile(str(junit)) for case in suite]
    assert len(cases) == 40
    assert sum(1 for c in cases if c.is_skipped) == 40 - data["runs_done"]
    # No worker process outlives the campaign.
    assert not [p for p in os.listdir("/proc") if p.isdigit() and _is_worker_of(p, process.pid)]


def _is_worker_of(pid: str, parent: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return int(stat.rsplit(")", 1)[1].split()[1]) == parent


def test_the_kafka_guarantees_preset_at_a_small_size(tmp_path: Path) -> None:
    """Every configuration that must not lose comes back clean, and each claim is stated
    as reproduced or not demonstrated (one short seed each; `-m slow` runs the default
    size)."""
    code, output, data, _ = campaign(tmp_path, "--preset", "kafka-guarantees", "--seeds", "1",
                                     "--time-limit", "10", "--workers", "2")
    assert code == 0, output
    for config in data["configurations"]:
        if config["expectation"]["name"] == "safe":
            assert config["status"] == "held", config
    assert len(data["claims"]) == 6
    for claim in data["claims"]:
        assert claim["verdict"] in ("reproduced", "not demonstrated"), claim
        assert f"{claim['verdict']:<17} {claim['claim']}" in output


@pytest.mark.slow
def test_the_kafka_guarantees_preset_at_its_default_size(tmp_path: Path) -> None:
    started = time.monotonic()
    code, output, data, _ = campaign(tmp_path, "--preset", "kafka-guarantees")
    assert code == 0, output
    assert data["runs_done"] == 55 and not data["partial"]
    for config in data["configurations"]:
        if config["expectation"]["name"] == "safe":
            assert config["status"] == "held", config
    assert all(c["verdict"] in ("reproduced", "not demonstrated") for c in data["claims"])
    assert time.monotonic() - started < 600


def test_faults_on_a_shared_external_cluster_need_one_worker(tmp_path: Path) -> None:
    code, output, _, out = campaign(
        tmp_path, "--target", "external", "--bootstrap-servers", "127.0.0.1:1",
        "--nemesis", "pause", "--fault-cmd", "pause=true", "--fault-cmd", "resume=true",
        "--workers", "2")
    assert code == 2 and "use --workers 1" in output, output
    assert not list(out.glob("*-campaign-*"))
