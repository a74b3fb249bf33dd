"""`faultline bugs [NAME...]`: the reference broker's catalogue of plantable bugs.

Each entry: the bug's name, the component it lives in, what it does, the real finding it
is modelled on (with its source), and the campaign that finds it. `--json` prints the
same as data.
"""

from __future__ import annotations

import json
import textwrap

import click

from harness.commands.errors import bad_input


@click.command("bugs", epilog="Exit codes: 0 listed, 2 an unknown bug name.")
@click.argument("names", nargs=-1, metavar="[NAME]...")
@click.option("--json", "as_json", is_flag=True, help="Print the catalogue as JSON.")
def bugs(names: tuple[str, ...], as_json: bool) -> None:
    """List the bugs `--bug NAME` can plant in the reference broker (all, or the NAMEs
    given), with their descriptions, sources and the campaign that finds each."""
    from harness.bug_presets import bug_campaigns
    from reference_broker.bugs import BUGS

    unknown = [n for n in names if n not in BUGS]
    if unknown:
        bad_input(f"unknown bug(s) {', '.join(unknown)}; the catalogue has "
                  f"{', '.join(BUGS)}")
    entries = [c for c in bug_campaigns() if not names or c.bug.name in names]
    if as_json:
        click.echo(json.dumps([{
            "name": c.bug.name,
            "component": c.bug.component,
            "description": c.bug.description,
            "modelled_on": c.bug.modelled_on,
            "source": c.bug.source,
            "preset": c.preset,
            "campaign": c.command,
            "configuration": c.settings_text,
            "found_with_todays_faults": c.found,
            "aim": c.matrix.description,
        } for c in entries], indent=2))
        return
    wrap = textwrap.TextWrapper(width=88, initial_indent="    ", subsequent_indent="    ")
    for number, c in enumerate(entries):
        if number:
            click.echo("")
        click.echo(f"{c.bug.name}  [{c.bug.component}]")
        click.echo(wrap.fill(c.bug.description))
        click.echo(wrap.fill(f"modelled on: {c.bug.modelled_on}"))
        click.echo(f"    source: {c.bug.source}")
        click.echo(wrap.fill(f"aim: {c.matrix.description}"))
        click.echo(wrap.fill(f"configuration: {c.settings_text}"))
        label = "finds it" if c.found else "aimed at it"
        click.echo(f"    {label}: {c.command}")
    if not names:
        found = sum(c.found for c in entries)
        click.echo(f"\n{len(entries)} bugs; {found} found by their campaign with today's "
                   "faults (the others say what they need)")
