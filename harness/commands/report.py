"""`faultline report FOLDER`: re-render a run's report.html (or a campaign's
campaign.html) and the index of the folder it is in."""

from __future__ import annotations

import json
from pathlib import Path

import click

from harness.commands.errors import bad_input


@click.command(
    "report", epilog="Exit codes: 0 rendered, 2 not a run or campaign folder, or "
    "malformed results.")
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
def report(run_dir: Path) -> None:
    """Render RUN_DIR/report.html from its results.json, history.jsonl and nemesis.json
    (or, for a campaign folder, campaign.html from its campaign.json), and regenerate the
    index of runs and campaigns beside it."""
    from harness.report import render_index, write_campaign_report, write_report

    try:
        if (run_dir / "campaign.json").is_file():
            path = write_campaign_report(run_dir)
        else:
            missing = [n for n in ("results.json", "history.jsonl")
                       if not (run_dir / n).is_file()]
            if missing:
                bad_input(f"{run_dir} is not a run directory (no {', '.join(missing)}) nor "
                          "a campaign's (no campaign.json); give a folder written by "
                          "`faultline run` or `faultline campaign`")
            path = write_report(run_dir)
    except (KeyError, ValueError, TypeError, json.JSONDecodeError) as exc:
        bad_input(f"cannot render {run_dir}: malformed results ({exc})")
    index = render_index(run_dir.resolve().parent)
    click.echo(f"report: {path}")
    click.echo(f"index:  {index}")
