"""The type checker: mypy over the packages and the tests, as pyproject.toml configures it.

CI runs only pytest, so this is where mypy runs in CI. mypy keeps its incremental cache
in `.mypy_cache` at the repository root, so a run after a small change is quick.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_mypy_reports_no_errors() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mypy"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert result.returncode == 0, f"mypy found problems:\n{result.stdout}{result.stderr}"
