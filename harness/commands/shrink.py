"""`faultline shrink RUN_DIR`: search for a smaller sim run that still shows the anomaly.

    faultline shrink results/20261204T191825-sim-queue-partition-s1
    faultline shrink RUN_DIR --anomaly lost-write --budget 60 --workers 2

Each candidate is an ordinary deterministic sim run in a scratch folder (never in
results/). The smallest candidate found is run again into `RUN_DIR/shrunk/` (a normal
run folder plus `schedule.json` and `command.txt`, the `faultline run` line that
reproduces it) and re-checked before it is reported.

Exit codes: 0 shrunk (the shrunk run shows the anomaly), 2 bad input: not a sim run,
an unreadable folder, or a run that shows no anomaly (nothing to shrink), or one that
no longer reproduces; 130 interrupted.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from harness import exit_codes
from harness.commands.errors import bad_input


@click.command("shrink", epilog="Exit codes: 0 shrunk (RUN_DIR/shrunk/ shows the anomaly), "
               "2 not a finished sim run, no anomaly to shrink, or it no longer reproduces; "
               "130 interrupted.")
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--anomaly", "types", multiple=True, metavar="TYPE",
              help="Anomaly type the shrunk run must still show (repeatable; every one "
                   "given must show) [default: the run's most serious type: loss first].")
@click.option("--budget", type=click.FloatRange(min=0.0), default=None, metavar="SECONDS",
              help="Start no candidate run after this many seconds of wall time "
                   "[default: 100].")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Candidate runs at once, in local worker processes [default: the "
                   "number of cores, at most 2].")
def shrink(run_dir: Path, types: tuple[str, ...], budget: float | None,
           workers: int | None) -> None:
    """Shrink RUN_DIR's failing sim run to a minimal reproducer in RUN_DIR/shrunk/."""
    from harness.shrink import DEFAULT_BUDGET_S, ShrinkError, shrink_run
    from harness.shrink.search import Candidate
    from harness.shrink.trial import Trial

    def on_trial(candidate: Candidate, trial: Trial, holds: bool) -> None:
        what = ("error: " + trial.error) if trial.error else (
            "shows " + (", ".join(trial.bad) or "nothing"))
        click.echo(f"  try {len(candidate.faults)} fault(s), {candidate.concurrency} clients, "
                   f"rate {candidate.rate:g}, {candidate.duration_ms / 1000:g}+"
                   f"{candidate.recovery_ms / 1000:g} s: {trial.operations} ops, {what}"
                   f" -> {'keep' if holds else 'no'}", err=True)

    click.echo(f"shrinking {run_dir}")
    try:
        report = shrink_run(run_dir, types=types,
                            workers=workers or min(2, os.cpu_count() or 1),
                            budget_s=DEFAULT_BUDGET_S if budget is None else budget,
                            on_trial=on_trial)
    except ShrinkError as exc:
        bad_input(str(exc))
    except KeyboardInterrupt:
        click.echo("\ninterrupted: nothing was written", err=True)
        sys.exit(exit_codes.INTERRUPTED)
    for line in report.lines():
        click.echo(line)
    sys.exit(exit_codes.VALID)
