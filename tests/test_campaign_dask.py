"""Campaigns on a real Dask cluster: a scheduler and two worker processes on loopback.

The same matrix and seeds run locally and on Dask must give the same verdicts and
byte-identical histories (sim runs are deterministic), and the runs' folders must come
back from the workers into the campaign folder.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from harness.campaign import engines
from harness.cli import cli

MATRIX = ["--time-limit", "3", "--recovery", "1", "--final-read", "5", "--nemesis-interval",
          "1", "--nemesis", "kill,partition", "--seeds", "2", "--vary", "acks=1,all",
          "--expect", "lossy-ok"]


@pytest.fixture
def dask_cluster(tmp_path: Path) -> Iterator[str]:
    """`dask scheduler` and two `dask worker` processes; yields the scheduler address."""
    scheduler_file = tmp_path / "scheduler.json"
    dask = [sys.executable, "-m", "distributed.cli.dask_scheduler"]
    processes = [subprocess.Popen(
        [*dask, "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
         "--scheduler-file", str(scheduler_file)],
        stdout=subprocess.DEVNULL, stderr=(tmp_path / "scheduler.log").open("w"))]
    try:
        deadline = time.monotonic() + 60
        while not scheduler_file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        address = json.loads(scheduler_file.read_text())["address"]
        for n in range(2):
            processes.append(subprocess.Popen(
                [sys.executable, "-m", "distributed.cli.dask_worker", address,
                 "--nthreads", "1", "--nworkers", "1", "--no-dashboard", "--host", "127.0.0.1",
                 "--local-directory", str(tmp_path / f"worker-{n}")],
                stdout=subprocess.DEVNULL, stderr=(tmp_path / f"worker-{n}.log").open("w")))
        from distributed import Client

        with Client(address, timeout="30s", set_as_default=False) as client:
            client.wait_for_workers(2, timeout=60)
        yield address
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=2)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def run_campaign(out: Path, *args: str) -> tuple[str, dict[str, Any], Path]:
    result = CliRunner().invoke(cli, ["campaign", *MATRIX, *args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    (folder,) = out.glob("*-campaign-*")
    return result.output, json.loads((folder / "campaign.json").read_text()), folder


def by_run(data: dict[str, Any]) -> dict[tuple[int, int], tuple[str, Any, list[str]]]:
    return {(r["cell"], r["seed"]): (r["history_sha256"], r["valid"], r["bad"])
            for r in data["runs"]}


def test_a_campaign_on_dask_matches_the_local_one(tmp_path: Path, dask_cluster: str) -> None:
    output, on_dask, folder = run_campaign(tmp_path / "dask", "--scheduler", dask_cluster)
    assert f"Dask scheduler {dask_cluster}: 2 workers" in output
    assert on_dask["runs_done"] == 4 and "Dask" in on_dask["engine"]
    for run in on_dask["runs"]:
        # The worker's run folder came back whole.
        history = folder / "runs" / run["run"] / "history.jsonl"
        assert history.is_file() and (history.parent / "report.html").is_file()
        assert hashlib.sha256(history.read_bytes()).hexdigest() == run["history_sha256"]

    _, local, _ = run_campaign(tmp_path / "local", "--workers", "2")
    assert by_run(on_dask) == by_run(local)
    assert [c["status"] for c in on_dask["configurations"]] == [
        c["status"] for c in local["configurations"]]


def test_an_unreachable_scheduler_is_a_setup_error(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engines, "CONNECT_TIMEOUT_S", 2.0)
    result = CliRunner().invoke(cli, ["campaign", *MATRIX, "--scheduler",
                                      "tcp://127.0.0.1:1", "--out", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:1" in result.output
