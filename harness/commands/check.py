"""`faultline check`: check a history file, print a summary, write results.json."""

from __future__ import annotations

import json
import os
import sys
import textwrap
from collections.abc import Mapping
from typing import Any

import click

from checkers import ANOMALIES, MODE_ALLOWED, check_file
from checkers.anomalies import explain
from harness import exit_codes
from history import HistoryError

# Each anomaly type's definition, wrapped for 80 columns ("\b" keeps click from
# re-wrapping the block into one paragraph).
_TYPES_HELP = "\b\nAnomaly types (faultline check --explain TYPE for an example):\n" + "\n".join(
    textwrap.fill(f"{kind}: {meaning}", width=76, subsequent_indent="    ")
    for kind, meaning in ANOMALIES.items()
)
_MODES_HELP = "; ".join(
    f"{mode}: {', '.join(sorted(allowed)) or 'nothing'}" for mode, allowed in MODE_ALLOWED.items()
)


def first_example(evidence: list[dict[str, Any]]) -> str:
    """One short line describing the first evidence item of an anomaly type."""
    if not evidence:
        return ""
    item = evidence[0]
    parts = [f"indices {item.get('indices')}"]
    for field in ("log", "group", "key", "process"):
        if item.get(field) is not None:
            parts.append(f"{field} {item[field]}")
    if item.get("offsets"):
        parts.append(f"offsets {item['offsets']}")
    if item.get("values"):
        parts.append(f"values {item['values']}")
    text = ", ".join(parts)
    return text if len(text) <= 90 else text[:87] + "..."


def summary_table(verdict: Mapping[str, Any]) -> str:
    """Render the verdict as the readable table `faultline check` prints."""
    lines = []
    counts = verdict["counts"]
    allowed = set(verdict["allowed"])
    if counts:
        width = max(len(kind) for kind in counts) + len(" (allowed)")
        lines.append(f"{'anomaly':<{width}}  {'count':>8}  first example")
        lines.append(f"{'-' * width}  {'-' * 8}  {'-' * 13}")
        for kind, count in counts.items():
            label = f"{kind} (allowed)" if kind in allowed else kind
            example = first_example(verdict["anomalies"].get(kind, []))
            lines.append(f"{label:<{width}}  {count:>8}  {example}")
    else:
        lines.append("no anomalies found")
    stats = verdict["stats"]
    messages = stats["messages"]
    lines.append("")
    lines.append(
        f"{stats['events']} events, {stats['processes']} processes, {len(stats['logs'])} log(s); "
        f"messages sent {messages['sent']}, acknowledged {messages['acknowledged']}, "
        f"read {messages['read']}"
    )
    lines.extend(f"note: {note}" for note in verdict["notes"])
    valid = verdict["valid"]
    word = {True: "VALID", False: "INVALID", "unknown": "UNKNOWN"}[valid]
    lines.append(f"verdict: {word}")
    return "\n".join(lines)


@click.command(
    "check",
    epilog=_TYPES_HELP + "\n\nDefault allowed per mode: " + _MODES_HELP + ". "
    + exit_codes.HELP,
)
@click.argument("history", type=click.Path(dir_okay=False), required=False)
@click.option(
    "--explain", "explain_type", metavar="TYPE", default=None,
    help="Print what anomaly type TYPE means (and a minimal example), then exit.",
)
@click.option(
    "--allow", "allow", multiple=True, metavar="TYPE",
    help="Anomaly type that does not invalidate the verdict (repeatable).",
)
@click.option(
    "--mode", type=click.Choice(sorted(MODE_ALLOWED)), default="assign", show_default=True,
    help="Workload mode whose expected anomalies are allowed by default.",
)
@click.option(
    "--out", type=click.Path(dir_okay=False), default=None,
    help="Where to write the verdict JSON [default: results.json beside HISTORY].",
)
@click.option("--json", "as_json", is_flag=True, help="Print the verdict as JSON, not a table.")
@click.option(
    "--max-evidence", type=click.IntRange(min=1), default=100, show_default=True,
    help="Evidence items kept per anomaly type (counts stay exact).",
)
def check(
    history: str | None, explain_type: str | None, allow: tuple[str, ...], mode: str,
    out: str | None, as_json: bool, max_evidence: int,
) -> None:
    """Check HISTORY (JSON Lines, DESIGN.md section 4) for anomalies.

    Reads the file in one streaming pass, prints a summary table (anomaly type, count,
    first example) and writes results.json beside the history. Valid means no anomaly
    outside the allowed set; unknown means only unseen messages (acknowledged, never
    read) stand in the way.
    """
    if explain_type is not None:
        try:
            click.echo(explain(explain_type))
        except ValueError as error:
            click.echo(f"error: {error}", err=True)
            sys.exit(exit_codes.BAD_INPUT)
        return
    if history is None:
        click.echo("error: missing HISTORY (a history.jsonl to check), or --explain TYPE",
                   err=True)
        sys.exit(exit_codes.BAD_INPUT)
    unknown = [name for name in allow if name not in ANOMALIES]
    if unknown:
        click.echo(
            f"error: unknown anomaly type {unknown[0]!r} for --allow; "
            f"expected one of {', '.join(ANOMALIES)}", err=True,
        )
        sys.exit(exit_codes.BAD_INPUT)
    try:
        verdict = check_file(history, mode=mode, allow=allow, max_evidence=max_evidence)
    except HistoryError as error:
        # Exactly `path:line: what is wrong`, the form editors jump to.
        click.echo(str(error), err=True)
        sys.exit(exit_codes.BAD_INPUT)
    verdict["history"] = os.path.abspath(history)
    target = out or os.path.join(os.path.dirname(os.path.abspath(history)), "results.json")
    try:
        with open(target, "w", encoding="utf-8") as stream:
            json.dump(verdict, stream, indent=1)
            stream.write("\n")
    except OSError as error:
        click.echo(f"error: cannot write {target}: {error.strerror}", err=True)
        sys.exit(exit_codes.BAD_INPUT)
    if as_json:
        click.echo(json.dumps(verdict, indent=1))
    else:
        click.echo(summary_table(verdict))
        click.echo(f"results: {target}")
    sys.exit(exit_codes.for_verdict(verdict["valid"]))
