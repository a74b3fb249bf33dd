"""`faultline run`: a cluster under faults, a workload recording a history, the verdict.

    faultline run                                   # sim, 3 brokers, queue, mixed faults, 60 s
    faultline run --nemesis kill,partition --seed 7 --flush every
    faultline run --target process --client kafka-python --time-limit 20
    faultline run --check-determinism               # sim: run twice, compare histories

Writes `results/<run-id>/` (history.jsonl, results.json, nemesis.json, report.html,
nodes/) and regenerates `results/index.html`. Exit codes: `harness.exit_codes`.
"""

from __future__ import annotations

import hashlib
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from harness import exit_codes

if TYPE_CHECKING:
    from harness.run_config import RunConfig
    from harness.runner import RunOutcome


def run_options(*, exclude: tuple[str, ...] = ()) -> Callable[[Callable[..., Any]], Any]:
    """One option per run setting (`harness.run_config.SETTINGS`), shared by `run` and
    `campaign`; each defaults to None so `given_settings` knows what a person gave."""
    from harness.run_config import SETTINGS
    from harness.settings import click_options

    return click_options(SETTINGS, exclude)


def given_settings(options: dict[str, Any]) -> dict[str, Any]:
    """The run settings given on the command line, by setting name."""
    from harness.run_config import SETTINGS
    from harness.settings import given_options

    return given_options(SETTINGS, options)


def config_from_options(options: dict[str, Any]) -> RunConfig:
    """A validated RunConfig from `run`'s keyword options; ConfigError if it cannot run."""
    from harness.run_config import RunConfig

    return RunConfig.build(given_settings(options))


def summary_lines(outcome: RunOutcome) -> list[str]:
    """The closing table of a run: verdict table, where the results are, timings."""
    from harness.commands.check import summary_table
    from harness.oracle import HEADLINE, console_lines
    from harness.runner import reproduce_command

    lines = [summary_table(dict(outcome.verdict))]
    lines.extend(outcome.causes)
    if outcome.valid != outcome.verdict["valid"]:
        word = {True: "VALID", False: "INVALID", "unknown": "UNKNOWN"}[outcome.valid]
        lines.append(f"verdict with documented trade-offs accepted: {word}")
    if outcome.harness_errors:
        lines.extend(console_lines(outcome.harness_errors))
        lines.append(f"verdict: {HEADLINE} (a faultline bug, not the system's: the system's "
                     "verdict above rests on a wrong history)")
    elif outcome.oracle_checked:
        lines.append("oracle: no send recorded fail is in any replica's log")
    clock = "simulated " if outcome.config.target == "sim" else ""
    lines.append(f"run:    {outcome.run_dir}")
    lines.append(f"report: {outcome.run_dir / 'report.html'}")
    lines.append(f"seed {outcome.config.seed}; {outcome.run_seconds:.1f} {clock}s in "
                 f"{outcome.wall_seconds:.1f} s wall time")
    if outcome.exit_code != exit_codes.VALID:
        lines.append(f"reproduce: {reproduce_command(outcome.config, outcome.run_dir)}")
    return lines


@click.command("run", epilog=exit_codes.HELP)
@run_options()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              default=Path("results"), show_default=True,
              help="Folder that receives results/<run-id>/.")
@click.option("--check-determinism", is_flag=True,
              help="Sim only: run a second time with the same seed and name the first "
                   "diverging history event (exit 1 if they differ).")
def run(out: Path, check_determinism: bool, **options: Any) -> None:
    """Run a cluster under faults with a workload, check the history, write a report.

    In the sim, the history is also checked against ground truth: a send recorded
    fail that some broker appended is a harness error (a faultline bug), exit 4.
    """
    from harness.run_config import ConfigError
    from harness.runner import (
        RunInterrupted,
        RunSetupError,
        RunStalled,
        first_divergence,
        replay_history,
    )
    from harness.runner import run as run_once

    try:
        config = config_from_options(options)
        if check_determinism and config.target != "sim":
            raise ConfigError("--check-determinism needs --target sim (real targets run in "
                              "real time and cannot repeat exactly)")
        click.echo(f"faultline run: seed {config.seed}, target {config.target}, "
                   f"workload {config.workload}, nemesis {config.nemesis}, "
                   f"{config.time_limit_s:g} s")
        outcome = run_once(config, out, progress=sys.stderr)
        for line in summary_lines(outcome):
            click.echo(line)
        code = outcome.exit_code
        if check_determinism:
            started = time.monotonic()
            first = (outcome.run_dir / "history.jsonl").read_bytes()
            with tempfile.TemporaryDirectory(prefix="faultline-determinism-") as scratch:
                again = replay_history(outcome.config, Path(scratch), progress=sys.stderr)
            if report_determinism(first, again, first_divergence) != exit_codes.VALID:
                code = exit_codes.ANOMALIES
            click.echo(f"(second run: {time.monotonic() - started:.1f} s wall time)")
    except (ConfigError, RunSetupError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exit_codes.BAD_INPUT)
    except RunStalled as exc:
        click.echo(f"error: the run could not finish: {exc}", err=True)
        click.echo(f"reproduce: {config.command()}", err=True)
        sys.exit(exit_codes.BAD_INPUT)
    except RunInterrupted as exc:
        click.echo(str(exc), err=True)
        sys.exit(exit_codes.INTERRUPTED)
    except KeyboardInterrupt:
        click.echo("interrupted: the run was stopped before it started; nothing was "
                   "checked", err=True)
        sys.exit(exit_codes.INTERRUPTED)
    sys.exit(code)


def report_determinism(
    first: bytes,
    second: bytes,
    divergence_of: Callable[[bytes, bytes], tuple[int, str, str] | None],
) -> int:
    """Print whether two histories are identical or where they diverge; exit code."""
    divergence = divergence_of(first, second)
    if divergence is None:
        click.echo(f"determinism: identical ({len(first.splitlines())} events, sha256 "
                   f"{hashlib.sha256(second).hexdigest()})")
        return exit_codes.VALID
    number, a, b = divergence
    click.echo(f"determinism: the runs diverge at line {number} of history.jsonl "
               f"(event index {number - 1})")
    click.echo(f"  run 1: {a}")
    click.echo(f"  run 2: {b}")
    return exit_codes.ANOMALIES
