"""What a person sees of `faultline run` and `check` in a terminal: Ctrl-C, the status
line, error messages, `check` beside a run, the reproduce command."""

from __future__ import annotations

import functools
import io
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trio
import trio.testing
from click.testing import CliRunner

from checkers import check_file
from harness import exit_codes
from harness.broker_warnings import scan as scan_broker_warnings
from harness.cli import cli
from harness.commands.check import summary_table
from harness.progress import RunCounters, configure_console_logging, show_progress

HISTORIES = Path(__file__).parent / "histories"
EXAMPLES = Path(__file__).parent.parent / "examples" / "schedules"

SHORT = ["--time-limit", "5", "--recovery", "1", "--final-read", "5", "--seed", "3"]


def _faultline(*args: str) -> list[str]:
    return [sys.executable, "-m", "harness.cli", *args]


@pytest.mark.parametrize("target", ["sim", "process"])
def test_ctrl_c_finishes_the_run_folder_prints_one_line_and_exits_130(
        tmp_path: Path, target: str) -> None:
    proc = subprocess.Popen(
        # On processes, no kills: a Ctrl-C while every broker is down waits for the whole
        # cluster to restart and register before the run folder is finished.
        _faultline("run", "--target", target, "--nemesis",
                   "kill,partition" if target == "sim" else "partition,pause",
                   "--time-limit", "600", "--seed", "5", "--out", str(tmp_path)),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # SIGINT is ignored in children of a non-interactive shell; a person's Ctrl-C is not.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 120
    history = None
    while time.monotonic() < deadline:
        found = list(tmp_path.glob("*/history.jsonl"))
        if found and found[0].stat().st_size > 10_000:
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
    # No broker outlives the run (they are this run's children, in its process group).
    alive = subprocess.run(["pgrep", "-f", "--", f"--data-dir {run_dir}"],
                           capture_output=True, check=False)
    assert alive.returncode == 1, alive  # 1: no process matched


def test_check_beside_a_run_keeps_its_results_json_and_uses_its_checker_mode(
        tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    shutil.copy(HISTORIES / "poll-skip.jsonl", run_dir / "history.jsonl")
    results = json.dumps({"run_id": "run", "checker_mode": "subscribe", "seed": 1})
    (run_dir / "results.json").write_text(results)
    result = CliRunner().invoke(cli, ["check", str(run_dir / "history.jsonl")])
    # The run checked in subscribe mode, where a poll skip is expected (allowed).
    assert result.exit_code == exit_codes.VALID, result.output
    assert (run_dir / "results.json").read_text() == results
    verdict = json.loads((run_dir / "check.json").read_text())
    assert "poll-skip" in verdict["allowed"] and verdict["valid"] is True
    # Told otherwise, it checks in that mode.
    assign = CliRunner().invoke(cli, ["check", "--mode", "assign",
                                      str(run_dir / "history.jsonl")])
    assert assign.exit_code == exit_codes.ANOMALIES
    # The run's own --allow holds too.
    results = json.dumps({"run_id": "run", "checker_mode": "assign",
                          "config": {"allow": ["poll-skip"]}})
    (run_dir / "results.json").write_text(results)
    allowed = CliRunner().invoke(cli, ["check", str(run_dir / "history.jsonl")])
    assert allowed.exit_code == exit_codes.VALID, allowed.output
    refused = CliRunner().invoke(cli, ["check", "--out", str(run_dir / "results.json"),
                                       str(run_dir / "history.jsonl")])
    assert refused.exit_code == exit_codes.BAD_INPUT and "Error: " in refused.output
    assert (run_dir / "results.json").read_text() == results


def test_summary_table_fits_80_columns() -> None:
    for history in sorted(HISTORIES.glob("*.jsonl")):
        table = summary_table(check_file(str(history), mode="assign"))
        too_wide = [line for line in table.splitlines() if len(line) > 80]
        assert not too_wide, (history.name, too_wide)


def test_every_bad_input_is_reported_in_one_style_before_anything_starts(
        tmp_path: Path) -> None:
    cases = [
        ["run", "--nemesis", "bogus", "--out", str(tmp_path)],
        ["run", "--nemesis", "none,kill", "--out", str(tmp_path)],
        ["run", "--acks", "7", "--out", str(tmp_path)],
        ["run", "--workload", "nope", "--out", str(tmp_path)],
        ["run", "--replication-factor", "4", "--nodes", "3", "--out", str(tmp_path)],
        ["check", "--allow", "bogus", str(HISTORIES / "unseen.jsonl")],
        ["report", str(tmp_path)],
        ["replay", str(tmp_path)],
        ["broker", "--data-dir", str(tmp_path / "n1"), "--set", "bogus.key=1"],
    ]
    for args in cases:
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == exit_codes.BAD_INPUT, (args, result.output)
        assert "Error: " in result.output and "error: " not in result.output, result.output
        assert "['" not in result.output, result.output  # no Python lists
        assert "faultline run:" not in result.output  # no header before the refusal
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("command", ["run", "campaign"])
def test_nemesis_help_lists_the_fault_packages(command: str) -> None:
    result = CliRunner().invoke(cli, [command, "--nemesis", "--help"])
    assert result.exit_code == exit_codes.VALID, result.output
    for name in ("partition", "kill", "power-loss", "clock", "mixed", "none"):
        assert f"\n{name} " in result.output


def test_every_commands_help_lists_its_exit_codes() -> None:
    top = CliRunner().invoke(cli, ["--help"]).output
    for code in ("0 valid", "1 anomalies found", "2 bad input", "3 unknown",
                 "4 harness error", "130 interrupted"):
        assert code in " ".join(top.split()), code
    for command in ("check", "broker", "run", "report", "replay", "shrink", "campaign"):
        result = CliRunner().invoke(cli, [command, "--help"])
        assert result.exit_code == 0 and "Exit codes:" in result.output, command


def test_run_summary_ends_with_the_command_that_reproduces_it_and_json_is_parseable(
        tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["run", "-q", "--nemesis", "none", *SHORT,
                                      "--out", str(tmp_path)])
    assert result.exit_code == exit_codes.VALID, result.output
    lines = result.output.strip().splitlines()
    assert lines[0] == "verdict: VALID" and "faultline run:" not in result.output
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir() and not p.is_symlink()]
    assert lines[-2] == ("command:   faultline run --nemesis none --time-limit 5 "
                         "--recovery 1 --final-read 5 --seed 3")
    assert lines[-1] == f"reproduce: faultline replay {run_dir}"
    # Checking the run's own history leaves the run as it was.
    before = (run_dir / "results.json").read_bytes()
    checked = CliRunner().invoke(cli, ["check", str(run_dir / "history.jsonl")])
    assert checked.exit_code == exit_codes.VALID, checked.output
    assert (run_dir / "results.json").read_bytes() == before
    assert json.loads((run_dir / "check.json").read_text())["valid"] is True
    assert CliRunner().invoke(cli, ["report", str(run_dir)]).exit_code == 0
    as_json = CliRunner().invoke(cli, ["run", "--json", "--nemesis", "none", *SHORT,
                                       "--out", str(tmp_path)])
    assert as_json.exit_code == exit_codes.VALID, as_json.stderr
    results = json.loads(as_json.stdout)
    assert results["valid"] is True and results["seed"] == 3
    assert as_json.stderr.strip().splitlines()[-1].startswith("reproduce: faultline replay")


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _progress_output(stream: io.StringIO, log_at: float | None = None) -> str:
    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(functools.partial(
                show_progress, RunCounters(phase="workload", active={"down": {"n1", "n2"}}),
                origin=trio.current_time(), simulated=True, stream=stream))
            if log_at is not None:
                await trio.sleep(log_at)
                logging.getLogger("faultline.test").warning("a broker said something")
            await trio.sleep(10.5 - (log_at or 0))
            nursery.cancel_scope.cancel()

    logger = logging.getLogger()
    saved = (list(logger.handlers), logger.level)
    configure_console_logging(logging.WARNING, stream)
    try:
        trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    finally:
        logger.handlers[:], logger.level = saved
        logging.captureWarnings(False)
    return stream.getvalue()


def test_status_line_is_cut_to_the_terminal_and_cleared_before_a_log_record(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "40")
    out = _progress_output(_Terminal(), log_at=1.5)
    draws = [part for part in out.split("\r\x1b[2K") if part.startswith("[")]
    assert draws and all(len(part) <= 39 and part.endswith("...") for part in draws), draws
    # The status line is erased before the log record, which gets a row of its own.
    assert "\r\x1b[2KWARNING faultline.test: a broker said something\n" in out
    assert not out.endswith("...")  # no status left behind at the end


def test_status_degrades_to_plain_lines_when_not_a_terminal() -> None:
    out = _progress_output(io.StringIO())
    assert "\x1b" not in out and "\r" not in out
    (line,) = out.splitlines()
    assert "faults: down n1,n2" in line


def test_broker_warnings_are_counted_from_both_node_log_formats(tmp_path: Path) -> None:
    nodes = tmp_path / "nodes"
    (nodes / "n2").mkdir(parents=True)
    (nodes / "n1.log").write_text(
        "[    30.747 sim s] WARNING faultline.broker.replication: t1-0: truncating to 0, "
        "below the high watermark 76\n"
        "[    30.800 sim s] INFO faultline.broker.replication: t1-0: fetching\n")
    (nodes / "n2" / "broker.log").write_text(
        "2026-12-04 20:22:40,120 WARNING faultline.broker.log: recovery of t2-0: offsets "
        "3..9 have no batches\n")
    found = scan_broker_warnings(nodes)
    assert dict(found.by_node) == {"n1": 1, "n2": 1}
    assert dict(found.below_high_watermark) == {"n1": 1}
    line = found.console_line()
    assert line is not None and "1 truncating below the high watermark (n1)" in line


def test_a_run_whose_brokers_truncate_below_the_high_watermark_says_so_off_the_console(
        tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, [
        "run", "-q", "--schedule", str(EXAMPLES / "power-loss-all.json"), "--seed", "1",
        "--out", str(tmp_path)])
    assert result.exit_code == exit_codes.ANOMALIES, result.output
    assert "WARNING" not in result.output  # the brokers' own lines stay in nodes/
    assert "truncating below the high watermark" in result.output
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir() and not p.is_symlink()]
    warnings = json.loads((run_dir / "results.json").read_text())["broker_warnings"]
    assert sum(warnings["truncated_below_high_watermark"].values()) > 0
    html = (run_dir / "report.html").read_text()
    assert "Broker warnings" in html and "below the high watermark" in html
