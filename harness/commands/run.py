"""`faultline run`: a cluster under faults, a workload recording a history, the verdict.

    faultline run                                   # sim, 3 brokers, queue, mixed faults, 60 s
    faultline run --nemesis kill,partition --seed 7 --flush every
    faultline run --target process --client kafka-python --time-limit 20
    faultline run --check-determinism               # sim: run twice, compare histories

Writes `results/<run-id>/` (history.jsonl, results.json, nemesis.json, report.html,
nodes/) and regenerates `results/index.html`. Exit codes: `harness.exit_codes`.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from harness import exit_codes
from harness.commands.errors import bad_input, setup_failed

if TYPE_CHECKING:
    from harness.run_config import RunConfig
    from harness.runner import RunOutcome


# `--nemesis help` (or `--nemesis --help`, which click reads as the option's value)
# lists the fault packages instead of running.
NEMESIS_HELP = ("help", "--help", "-h")

LOG_LEVELS = ("debug", "info", "warning", "error")


def list_packages_if_asked(options: dict[str, Any]) -> None:
    """With `--nemesis help`, print the fault packages and exit 0."""
    if options.get("nemesis") in NEMESIS_HELP:
        from nemesis.packages import describe

        click.echo("Fault packages for --nemesis (comma-separated, e.g. kill,partition):")
        click.echo(describe())
        sys.exit(exit_codes.VALID)


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


def summary_lines(outcome: RunOutcome, *, quiet: bool = False) -> list[str]:
    """The closing table of a run: verdict table, where the results are, timings, and
    last the command that reproduces the run. Lines of prose are wrapped to 80 columns;
    `quiet` keeps only the verdict, the folder and the reproduce command."""
    from harness.commands.check import summary_table, verdict_word
    from harness.oracle import HEADLINE, console_lines
    from harness.runner import reproduce_command

    lines = ([f"verdict: {verdict_word(outcome.verdict['valid'])}"] if quiet
             else [summary_table(dict(outcome.verdict))])
    if not quiet:
        lines.extend(_wrapped(outcome.causes))
    if outcome.valid != outcome.verdict["valid"]:
        lines.append(f"verdict with documented trade-offs accepted: "
                     f"{verdict_word(outcome.valid)}")
    if outcome.harness_errors:
        lines.extend(_wrapped(console_lines(outcome.harness_errors)))
        lines.extend(_wrapped([f"verdict: {HEADLINE} (a faultline bug, not the system's: "
                               "the system's verdict above rests on a wrong history)"]))
    # A clean oracle says nothing on the console; results.json and the report record it.
    if outcome.broker_warnings is not None:
        lines.extend(_wrapped([outcome.broker_warnings]))
    clock = "simulated " if outcome.config.target == "sim" else ""
    lines.append(f"run:    {outcome.run_dir}")
    if not quiet:
        lines.append(f"report: {outcome.run_dir / 'report.html'}")
        lines.append(f"seed {outcome.config.seed}; {outcome.run_seconds:.1f} {clock}s in "
                     f"{outcome.wall_seconds:.1f} s wall time")
    # Last, the command that reproduces the run (a sim run: `faultline replay` of its
    # folder, byte for byte), after the command line that runs it again anywhere.
    reproduce = reproduce_command(outcome.config, outcome.run_dir)
    if reproduce != outcome.config.command():
        lines.append(f"command:   {outcome.config.command()}")
    lines.append(f"reproduce: {reproduce}")
    return lines


def _wrapped(texts: list[str]) -> list[str]:
    """Prose lines wrapped to 80 columns, continuation lines indented."""
    return [line for text in texts for line in textwrap.wrap(
        text, width=79, subsequent_indent="  ", break_on_hyphens=False) or [""]]


@click.command("run", epilog=exit_codes.HELP)
@run_options()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              default=Path("results"), show_default=True,
              help="Folder that receives results/<run-id>/.")
@click.option("--check-determinism", is_flag=True,
              help="Sim only: run a second time with the same seed and name the first "
                   "diverging history event (exit 1 if they differ).")
@click.option("--json", "as_json", is_flag=True,
              help="Print the run's results.json on stdout (the summary goes to stderr).")
@click.option("-q", "--quiet", is_flag=True,
              help="No status line or header: only the verdict, where the results are "
                   "and the reproduce command.")
@click.option("-v", "--verbose", count=True,
              help="Show log messages on the console: -v INFO, -vv DEBUG (default: "
                   "warnings only, and those of brokers go to nodes/).")
@click.option("--log-level", type=click.Choice(LOG_LEVELS, case_sensitive=False),
              default=None, help="Level of faultline's own log messages on the console "
                                 "(overrides -v).")
def run(out: Path, check_determinism: bool, as_json: bool, quiet: bool, verbose: int,
        log_level: str | None, **options: Any) -> None:
    """Run a cluster under faults with a workload, check the history, write a report.

    In the sim, the history is also checked against ground truth: a send recorded
    fail that some broker appended is a harness error (a faultline bug), exit 4.
    """
    from harness.progress import configure_console_logging
    from harness.run_config import ConfigError
    from harness.runner import (
        RunInterrupted,
        RunSetupError,
        RunStalled,
        first_divergence,
        replay_history,
    )
    from harness.runner import run as run_once

    level = log_level or ("debug" if verbose > 1 else "info" if verbose else "warning")
    configure_console_logging(getattr(logging, level.upper()), sys.stderr)
    list_packages_if_asked(options)
    try:
        config = config_from_options(options)
        if check_determinism and config.target != "sim":
            raise ConfigError("--check-determinism needs --target sim (real targets run in "
                              "real time and cannot repeat exactly)")
    except ConfigError as exc:
        bad_input(str(exc))
    # With --json stdout holds only the JSON; what a person reads goes to stderr.
    say = functools.partial(click.echo, err=as_json)
    if not quiet:
        say(f"faultline run: seed {config.seed}, target {config.target}, "
            f"workload {config.workload}, nemesis {config.nemesis}, "
            f"{config.time_limit_s:g} s")
    try:
        outcome = run_once(config, out, progress=None if quiet else sys.stderr)
        if as_json:
            click.echo((outcome.run_dir / "results.json").read_text(), nl=False)
        for line in summary_lines(outcome, quiet=quiet):
            say(line)
        code = outcome.exit_code
        if check_determinism:
            started = time.monotonic()
            first = (outcome.run_dir / "history.jsonl").read_bytes()
            with tempfile.TemporaryDirectory(prefix="faultline-determinism-") as scratch:
                again = replay_history(outcome.config, Path(scratch),
                                       progress=None if quiet else sys.stderr)
            if report_determinism(first, again, first_divergence,
                                  err=as_json) != exit_codes.VALID:
                code = exit_codes.ANOMALIES
            say(f"(second run: {time.monotonic() - started:.1f} s wall time)")
    except ConfigError as exc:
        bad_input(str(exc))
    except RunSetupError as exc:
        setup_failed(str(exc))
    except RunStalled as exc:
        setup_failed(f"the run could not finish: {exc}\nreproduce: {config.command()}")
    except RunInterrupted as exc:
        click.echo(str(exc), err=True)
        sys.exit(exit_codes.INTERRUPTED)
    except KeyboardInterrupt:
        # Before the run started, or while its finished history was being checked.
        click.echo("interrupted: the run folder was left unfinished", err=True)
        sys.exit(exit_codes.INTERRUPTED)
    sys.exit(code)


def report_determinism(
    first: bytes,
    second: bytes,
    divergence_of: Callable[[bytes, bytes], tuple[int, str, str] | None],
    *,
    err: bool = False,
) -> int:
    """Print (to stderr if `err`) whether two histories are identical or where they
    diverge; exit code."""
    divergence = divergence_of(first, second)
    say = functools.partial(click.echo, err=err)
    if divergence is None:
        say(f"determinism: identical ({len(first.splitlines())} events, sha256 "
                   f"{hashlib.sha256(second).hexdigest()})")
        return exit_codes.VALID
    number, a, b = divergence
    say(f"determinism: the runs diverge at line {number} of history.jsonl "
        f"(event index {number - 1})")
    say(f"  run 1: {a}")
    say(f"  run 2: {b}")
    return exit_codes.ANOMALIES
