"""`faultline report RUN_DIR`: re-render a run's report.html and its folder's index.html."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from harness import exit_codes


@click.command("report")
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
def report(run_dir: Path) -> None:
    """Render RUN_DIR/report.html from its results.json, history.jsonl and nemesis.json,
    and regenerate the index of runs beside it."""
    from harness.report import render_index, write_report

    missing = [n for n in ("results.json", "history.jsonl") if not (run_dir / n).is_file()]
    if missing:
        click.echo(f"error: {run_dir} is not a run directory (no {', '.join(missing)}); "
                   "give a folder written by `faultline run`", err=True)
        sys.exit(exit_codes.BAD_INPUT)
    try:
        path = write_report(run_dir)
    except (KeyError, ValueError) as exc:
        click.echo(f"error: cannot render {run_dir}: malformed results.json or history "
                   f"({exc})", err=True)
        sys.exit(exit_codes.BAD_INPUT)
    index = render_index(run_dir.resolve().parent)
    click.echo(f"report: {path}")
    click.echo(f"index:  {index}")
