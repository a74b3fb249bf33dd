"""What a person sees of `faultline run` and `check` in a terminal: Ctrl-C, the status
line, error messages, `check` beside a run, the reproduce command."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from click.testing import CliRunner

from harness import exit_codes
from harness.cli import cli

SHORT = ["--time-limit", "5", "--recovery", "1", "--final-read", "5", "--seed", "3"]


def _faultline(*args: str) -> list[str]:
    return [sys.executable, "-m", "harness.cli", *args]


def test_ctrl_c_finishes_the_run_folder_prints_one_line_and_exits_130(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        _faultline("run", "--time-limit", "600", "--seed", "5", "--out", str(tmp_path)),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # SIGINT is ignored in children of a non-interactive shell; a person's Ctrl-C is not.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 60
    history = None
    while time.monotonic() < deadline:
        found = list(tmp_path.glob("*/history.jsonl"))
        if found and found[0].stat().st_size > 20_000:
            history = found[0]
            break
        time.sleep(0.2)
    assert history is not None, "the run never started writing its history"
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == exit_codes.INTERRUPTED, err
    assert "Traceback" not in err and "ExceptionGroup" not in err
    status_lines = [line for line in err.splitlines() if not line.startswith("[")]
    assert len(status_lines) == 1 and status_lines[0].startswith("interrupted:"), err
    run_dir = history.parent
    results = json.loads((run_dir / "results.json").read_text())
    assert results["valid"] == "interrupted"
    assert results["exit_code"] == exit_codes.INTERRUPTED
    # What was recorded so far was checked.
    assert results["verdict"]["stats"]["events"] == len(history.read_bytes().splitlines()) > 0
    # The folder is a run folder `faultline report` accepts.
    rendered = CliRunner().invoke(cli, ["report", str(run_dir)])
    assert rendered.exit_code == 0, rendered.output
    assert os.path.isfile(run_dir / "report.html")
