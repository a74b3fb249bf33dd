"""`faultline serve`: a real server process on loopback, fetched over real HTTP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from click.testing import CliRunner

from harness.cli import cli

QUICK = ["--nemesis", "none", "--time-limit", "2", "--recovery", "0.5", "--final-read", "3",
         "--seed", "1"]


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        body: bytes = response.read()
    return body.decode()


def test_serve_shows_the_index_the_runs_and_the_latest_run(tmp_path: Path) -> None:
    results = tmp_path / "results"
    first = CliRunner().invoke(cli, ["run", *QUICK, "--out", str(results)])
    assert first.exit_code == 0, first.output
    server = subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "serve", str(results), "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        assert line.startswith(f"serving {results} at http://127.0.0.1:"), line
        base = line.split(" at ", 1)[1].split("/ ", 1)[0]
        (run_id,) = [p.name for p in results.iterdir() if p.is_dir() and not p.is_symlink()]
        assert run_id in fetch(f"{base}/")
        assert "<svg" in fetch(f"{base}/{run_id}/report.html")
        assert run_id in fetch(f"{base}/latest/report.html")

        # A run finished while the server runs is in the index at the next request.
        second = CliRunner().invoke(cli, ["run", *QUICK, "--acks", "1", "--out",
                                          str(results), "--seed", "2"])
        assert second.exit_code == 0, second.output
        (new_id,) = [p.name for p in results.iterdir()
                     if p.is_dir() and not p.is_symlink() and p.name != run_id]
        (results / "index.html").unlink()
        assert new_id in fetch(f"{base}/index.html")

        server.send_signal(signal.SIGINT)
        out, err = server.communicate(timeout=10)
        assert server.returncode == 0 and out.strip() == "stopped", (out, err)
        assert "Traceback" not in err
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def test_serve_refuses_a_missing_folder(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["serve", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "is not a folder" in result.output
