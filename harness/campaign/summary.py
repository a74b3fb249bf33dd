"""`campaign.json` and the guarantee table printed on the terminal.

`campaign.json` holds everything the page, the terminal table and a CI job need: each
configuration (settings, expectation, seeds run, runs with each anomaly type, per
family "k of n", availability, recovery, status, first failing run and its replay
command), each claim's verdict, and each run. The table and `campaign.html` are both
rendered from it, so `faultline report` can re-render a campaign at any time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from checkers.anomalies import FAMILIES
from harness.campaign.results import CampaignResults

CAMPAIGN_FILE = "campaign.json"


@dataclass(frozen=True)
class CampaignInfo:
    """What the campaign was asked to do and where, for campaign.json's header."""

    command: str
    engine: str
    created: str  # ISO 8601, local time
    started_monotonic: float


def campaign_json(results: CampaignResults, info: CampaignInfo,
                  wall_seconds: float) -> dict[str, Any]:
    """The whole campaign as campaign.json holds it."""
    matrix = results.matrix
    replay = results.replays
    planned = len(matrix.seeds) * len(matrix.runnable)
    runs = []
    sim_seconds = 0.0
    for cell in results.cells:
        for record, judgement in cell.runs:
            sim_seconds += record.run_seconds
            runs.append({**record.to_json(), "outcome": judgement.outcome,
                         "violations": list(judgement.violations),
                         "replay": replay.get(record.run_name, "")})
    runs.sort(key=lambda r: (r["seed"], r["cell"]))
    done = results.runs
    return {
        "campaign": matrix.name,
        "description": matrix.description,
        "created": info.created,
        "command": info.command,
        "engine": info.engine,
        "seeds": list(matrix.seeds),
        "families": {name: list(kinds) for name, kinds in FAMILIES.items()},
        "partial": results.partial,
        "interrupted": results.interrupted,
        "stopped": results.stopped,
        "runs_planned": planned,
        "runs_done": done,
        "runs_not_started": results.not_started,
        "wall_seconds": round(wall_seconds, 3),
        "runs_per_minute": round(done / wall_seconds * 60, 2) if wall_seconds > 0 else None,
        "simulated_seconds_per_wall_second": (round(sim_seconds / wall_seconds, 2)
                                              if wall_seconds > 0 else None),
        "exit_code": results.exit_code(),
        "configurations": [cell.to_json(replay, results.shrinks) for cell in results.cells],
        "claims": results.claims(),
        "runs": runs,
    }


def write_campaign_json(folder: Path, data: dict[str, Any]) -> Path:
    """Write campaign.json atomically (a reader never sees half a file)."""
    path = folder / CAMPAIGN_FILE
    scratch = path.with_suffix(".json.tmp")
    scratch.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    scratch.replace(path)
    return path


def family_cell(stats: dict[str, int], runs: int) -> str:
    """"k/n" for a family: runs that showed it of runs done ("!" marks violations)."""
    k = stats["runs"]
    mark = "!" if stats["violations"] else ""
    return f"{k}/{runs}{mark}" if runs else "-"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.0f}%"


def _recovery(recovery: dict[str, Any]) -> str:
    median = recovery.get("median_s")
    text = "-" if median is None else f"{median:.1f}s"
    if recovery.get("not_recovered"):
        text += f" ({recovery['not_recovered']} never)"
    return text


def terminal_table(data: dict[str, Any]) -> str:
    """The guarantee table as text: one row per configuration, one column per family."""
    families = list(data["families"])
    header = ["#", "configuration", "expect", "runs", *families, "avail", "recover", "states",
              "status"]
    rows = [header]
    for c in data["configurations"]:
        n = len(c["seeds_run"])
        rows.append([
            str(c["index"]), c["label"], c["expectation"]["name"], str(n),
            *[family_cell(c["families"][f], n) for f in families],
            _percent(c["availability"]), _recovery(c["recovery"]),
            str((c.get("coverage") or {}).get("distinct_states", "-")),
            c["status"] if c["error"] is None else "skipped: invalid",
        ])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    widths[1] = min(widths[1], 48)
    lines = []
    for number, row in enumerate(rows):
        cells = [cell if len(cell) <= widths[i] else cell[: widths[i] - 1] + "…"
                 for i, cell in enumerate(row)]
        lines.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(cells)).rstrip())
        if number == 0:
            lines.append("  ".join("-" * w for w in widths))
    notes = ["", "families: k/n = runs (of n) with an anomaly of that family outside what the "
             "run allows; ! = some of them violated the configuration's expectation",
             "states: distinct fault-space states the runs reached (event kind @ faults in "
             "force; harness/coverage.py)"]
    for c in data["configurations"]:
        missing = (c.get("coverage") or {}).get("kinds_missing")
        if c["seeds_run"] and missing:
            notes.append(f"configuration {c['index']} never reached: {', '.join(missing)}")
    for c in data["configurations"]:
        if c["error"] is not None:
            notes.append(f"configuration {c['index']} ({c['label']}) cannot run: {c['error']}")
    for c in data["configurations"]:
        if c["status"] in ("violated", "error", "unknown") and c["replay"]:
            notes.append(f"configuration {c['index']} {c['status']}: first failing run "
                         f"{c['first_failing_run']}; reproduce: {c['replay']}")
            shrunk = c.get("shrunk")
            if shrunk and shrunk.get("error"):
                notes.append(f"  not shrunk: {shrunk['error']}")
            elif shrunk:
                notes.append(f"  shrunk ({', '.join(shrunk['types'])}; faults "
                             f"{shrunk['faults'][0]} -> {shrunk['faults'][1]}, operations "
                             f"{shrunk['operations'][0]} -> {shrunk['operations'][1]}): "
                             f"{shrunk['command']}")
    if data["claims"]:
        notes.append("")
        notes.append("claims:")
        for claim in data["claims"]:
            notes.append(f"  {claim['verdict']:<17} {claim['claim']}")
    return "\n".join(lines + notes)
