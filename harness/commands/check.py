"""`faultline check`: check a history file, print a summary, write results.json."""

from __future__ import annotations

import json
import os
import sys
import textwrap
from collections.abc import Mapping
from typing import Any, NamedTuple

import click

from checkers import ANOMALIES, MODE_ALLOWED, check_file
from checkers.anomalies import explain
from harness import exit_codes
from harness.commands.errors import bad_input, setup_failed
from history import HistoryError

# Each anomaly type's definition, wrapped for 80 columns ("\b" keeps click from
# re-wrapping the block into one paragraph).
_TYPES_HELP = "\b\nAnomaly types (faultline check --explain TYPE for an example):\n" + "\n".join(
    textwrap.fill(f"{kind}: {meaning}", width=76, subsequent_indent="    ",
                  break_on_hyphens=False)
    for kind, meaning in ANOMALIES.items()
)
_MODES_HELP = "; ".join(
    f"{mode}: {', '.join(sorted(allowed)) or 'nothing'}" for mode, allowed in MODE_ALLOWED.items()
)


def first_example(evidence: list[dict[str, Any]], limit: int = 90) -> str:
    """One short line (at most `limit` characters) describing the first evidence item
    of an anomaly type."""
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
    return text if len(text) <= limit else text[:limit - 3] + "..."


def verdict_word(valid: Any) -> str:
    """VALID, INVALID or UNKNOWN (or INTERRUPTED) for a verdict's `valid`."""
    return {True: "VALID", False: "INVALID", "interrupted": "INTERRUPTED"}.get(
        valid, "UNKNOWN")


# The table fits a terminal of this many columns.
COLUMNS = 80


def summary_table(verdict: Mapping[str, Any]) -> str:
    """Render the verdict as the readable table `faultline check` prints, every line
    within `COLUMNS` (the example column is cut to what is left)."""
    lines = []
    counts = verdict["counts"]
    allowed = set(verdict["allowed"])
    if counts:
        width = max(len(kind) for kind in counts) + len(" (allowed)")
        lines.append(f"{'anomaly':<{width}}  {'count':>8}  first example")
        lines.append(f"{'-' * width}  {'-' * 8}  {'-' * 13}")
        for kind, count in counts.items():
            label = f"{kind} (allowed)" if kind in allowed else kind
            room = max(COLUMNS - 1 - width - 12, 20)
            example = first_example(verdict["anomalies"].get(kind, []), room)
            lines.append(f"{label:<{width}}  {count:>8}  {example}")
    else:
        lines.append("no anomalies found")
    lines.extend(_explained(verdict))
    stats = verdict["stats"]
    messages = stats["messages"]
    lines.append("")
    lines.append(
        f"{stats['events']} events, {stats['processes']} processes, {len(stats['logs'])} log(s)"
    )
    lines.append(f"messages sent {messages['sent']}, acknowledged {messages['acknowledged']}, "
                 f"read {messages['read']}")
    for note in verdict["notes"]:
        lines.extend(textwrap.wrap(f"note: {note}", width=COLUMNS - 1, subsequent_indent="  ",
                                   break_on_hyphens=False))
    lines.append(f"verdict: {verdict_word(verdict['valid'])}")
    return "\n".join(lines)


def _explained(verdict: Mapping[str, Any]) -> list[str]:
    """For each anomaly type whose evidence explains itself (transaction cycles,
    exactly-once), its first instance, step by step."""
    lines: list[str] = []
    for kind in verdict["counts"]:
        items = verdict["anomalies"].get(kind) or []
        steps = items[0].get("explanation") if items else None
        if not steps:
            continue
        lines.append("")
        lines.append(f"{kind}, indices {items[0].get('indices')}:")
        for step in steps:
            lines.extend(textwrap.wrap(step, width=COLUMNS - 1, initial_indent="  ",
                                       subsequent_indent="    ", break_on_hyphens=False))
    return lines


class RunBeside(NamedTuple):
    """The run whose folder holds a history: its results.json, checker mode and the
    anomaly types it allowed (`--allow` of `faultline run`)."""

    results: str
    checker_mode: str
    allow: tuple[str, ...]


def run_beside(history: str) -> RunBeside | None:
    """The run that wrote `history`, when it sits in a `faultline run` folder (a
    results.json beside it that records a run id and checker mode), else None."""
    results = os.path.join(os.path.dirname(os.path.abspath(history)), "results.json")
    try:
        with open(results, encoding="utf-8") as stream:
            data = json.load(stream)
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or "run_id" not in data:
        return None
    mode = data.get("checker_mode")
    config = data.get("config")
    allowed = config.get("allow") if isinstance(config, dict) else None
    allow = tuple(a for a in allowed if a in ANOMALIES) if isinstance(allowed, list) else ()
    return RunBeside(results, mode if mode in MODE_ALLOWED else "assign", allow)


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
    help="Anomaly type that does not invalidate the verdict (repeatable) [default: for a "
    "run's history, the run's own --allow].",
)
@click.option(
    "--mode", type=click.Choice(sorted(MODE_ALLOWED)), default=None,
    help="Workload mode whose expected anomalies are allowed by default [default: the "
    "run's own mode for a run's history, else assign].",
)
@click.option(
    "--out", type=click.Path(dir_okay=False), default=None,
    help="Where to write the verdict JSON [default: beside HISTORY, check.json in a run's "
    "folder (its results.json is never overwritten), else results.json].",
)
@click.option("--json", "as_json", is_flag=True, help="Print the verdict as JSON, not a table.")
@click.option(
    "--max-evidence", type=click.IntRange(min=1), default=100, show_default=True,
    help="Evidence items kept per anomaly type (counts stay exact).",
)
@click.option(
    "--txn-order", "txn_orders", multiple=True, type=click.Choice(["process", "realtime"]),
    help="Also order transactions by process and/or real time in the dependency graph "
    "(repeatable; cycles that need them list them under `orders`).",
)
def check(
    history: str | None, explain_type: str | None, allow: tuple[str, ...], mode: str | None,
    out: str | None, as_json: bool, max_evidence: int, txn_orders: tuple[str, ...],
) -> None:
    """Check HISTORY (JSON Lines, DESIGN.md section 4) for anomalies.

    Reads the file in one streaming pass, prints a summary table (anomaly type, count,
    first example) and writes the verdict beside the history: check.json in a folder
    written by `faultline run` (checked in that run's mode), else results.json. Valid
    means no anomaly outside the allowed set; unknown means only unseen messages
    (acknowledged, never read) stand in the way.
    """
    if explain_type is not None:
        try:
            click.echo(explain(explain_type))
        except ValueError as error:
            bad_input(str(error))
        return
    if history is None:
        bad_input("missing HISTORY (a history.jsonl to check), or --explain TYPE")
    unknown = [name for name in allow if name not in ANOMALIES]
    if unknown:
        bad_input(f"unknown anomaly type '{unknown[0]}' for --allow; "
                  f"expected one of {', '.join(ANOMALIES)}")
    run = run_beside(history)
    if out is not None and run is not None and os.path.abspath(out) == run.results:
        bad_input(f"--out {out} is the run's own results.json; give another file")
    if mode is None:
        mode = run.checker_mode if run is not None else "assign"
    if not allow and run is not None:
        allow = run.allow
    try:
        verdict = check_file(history, mode=mode, allow=allow, max_evidence=max_evidence,
                             txn_orders=txn_orders)
    except HistoryError as error:
        # Exactly `path:line: what is wrong`, the form editors and CI annotations jump
        # to (a problem inside the file, not with the command line).
        click.echo(str(error), err=True)
        sys.exit(exit_codes.BAD_INPUT)
    verdict["history"] = os.path.abspath(history)
    beside = "check.json" if run is not None else "results.json"
    target = out or os.path.join(os.path.dirname(os.path.abspath(history)), beside)
    try:
        with open(target, "w", encoding="utf-8") as stream:
            json.dump(verdict, stream, indent=1)
            stream.write("\n")
    except OSError as error:
        setup_failed(f"cannot write {target}: {error.strerror}")
    if as_json:
        click.echo(json.dumps(verdict, indent=1))
    else:
        click.echo(summary_table(verdict))
        click.echo(f"results: {target}")
    sys.exit(exit_codes.for_verdict(verdict["valid"]))
