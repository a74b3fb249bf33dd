"""`faultline check`: table, results.json beside the history, exit codes 0/1/2."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from harness.cli import cli

ROOT = Path(__file__).parent.parent
HISTORIES = Path(__file__).parent / "histories"


def copy_to(tmp_path: Path, source: Path) -> Path:
    target = tmp_path / source.name
    shutil.copy(source, target)
    return target


def test_clean_history_exits_0_and_writes_results_beside_it(tmp_path: Path) -> None:
    history = copy_to(tmp_path, ROOT / "examples" / "clean.jsonl")
    result = CliRunner().invoke(cli, ["check", str(history)])
    assert result.exit_code == 0, result.output
    assert "no anomalies found" in result.output and "verdict: VALID" in result.output
    written = json.loads((tmp_path / "results.json").read_text())
    assert written["valid"] is True
    assert written["history"] == str(history)


def test_anomalies_exit_1_with_a_table_of_type_count_and_example(tmp_path: Path) -> None:
    history = copy_to(tmp_path, HISTORIES / "lost-write.jsonl")
    result = CliRunner().invoke(cli, ["check", str(history)])
    assert result.exit_code == 1
    row = next(line for line in result.output.splitlines() if line.startswith("lost-write"))
    assert row.split()[1] == "1"
    assert "indices [1, 7]" in row and "log t0/0" in row
    assert "verdict: INVALID" in result.output


def test_unseen_only_exits_3_as_unknown(tmp_path: Path) -> None:
    history = copy_to(tmp_path, HISTORIES / "unseen.jsonl")
    result = CliRunner().invoke(cli, ["check", str(history)])
    assert result.exit_code == 3
    assert "verdict: UNKNOWN" in result.output


def test_allow_and_mode_change_the_verdict(tmp_path: Path) -> None:
    history = copy_to(tmp_path, HISTORIES / "poll-skip.jsonl")
    runner = CliRunner()
    assert runner.invoke(cli, ["check", str(history)]).exit_code == 1
    assert runner.invoke(cli, ["check", str(history), "--allow", "poll-skip"]).exit_code == 0
    allowed = runner.invoke(cli, ["check", str(history), "--mode", "subscribe"])
    assert allowed.exit_code == 0
    assert "poll-skip (allowed)" in allowed.output


def test_json_flag_prints_the_verdict_and_out_moves_results(tmp_path: Path) -> None:
    history = copy_to(tmp_path, HISTORIES / "duplicate.jsonl")
    out = tmp_path / "elsewhere" / "verdict.json"
    out.parent.mkdir()
    result = CliRunner().invoke(cli, ["check", str(history), "--json", "--out", str(out)])
    assert result.exit_code == 1
    printed = json.loads(result.output)
    assert printed["counts"] == {"duplicate": 1}
    assert json.loads(out.read_text())["counts"] == {"duplicate": 1}
    assert not (tmp_path / "results.json").exists()


def test_unknown_allow_type_is_bad_input(tmp_path: Path) -> None:
    history = copy_to(tmp_path, ROOT / "examples" / "clean.jsonl")
    result = CliRunner().invoke(cli, ["check", str(history), "--allow", "lost-writes"])
    assert result.exit_code == 2
    assert "unknown anomaly type 'lost-writes'" in result.output


def test_malformed_history_exits_2_with_path_and_line_and_no_traceback(tmp_path: Path) -> None:
    history = tmp_path / "broken.jsonl"
    history.write_text(
        '{"index":0,"time":0,"process":1,"type":"invoke","f":"poll","value":null}\n'
        '{"index":1,"time":0,"process":1,"type":"invoke","f":"poll","value":null}\n'
    )
    run = subprocess.run(
        [sys.executable, "-m", "harness.cli", "check", str(history)],
        capture_output=True, text=True, cwd=ROOT, check=False,
    )
    assert run.returncode == 2
    assert run.stderr.startswith(f"{history}:2: process 1 invokes poll while")
    assert "Traceback" not in run.stderr
    assert not (tmp_path / "results.json").exists()


def test_missing_history_file_exits_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["check", str(tmp_path / "absent.jsonl")])
    assert result.exit_code == 2
    assert "cannot open history" in result.output


def test_help_lists_options_anomaly_types_and_exit_codes() -> None:
    result = CliRunner().invoke(cli, ["check", "--help"])
    assert result.exit_code == 0
    for text in ("--allow", "--mode", "--out", "--json", "--max-evidence", "lost-by-commit",
                 "Exit codes"):
        assert text in result.output
