"""`campaign.html`: the guarantee matrix of one campaign, self-contained (inline CSS).

One row per configuration, one column per anomaly family; each cell reads "k of n
seeds", coloured (green: none; amber: only what the configuration's expectation
tolerates; red: a violation) and linking to the report of the first run that showed
it. Then the claims, availability and recovery, configurations that could not run, and
every run with its replay command. Rendered from campaign.json alone.
"""

from __future__ import annotations

import json
from html import escape
from pathlib import Path
from typing import Any

from harness.report.config_table import as_option
from harness.report.html import CSS

CAMPAIGN_CSS = CSS + """
body{max-width:1400px}
.matrix td.fam,.matrix td.status{text-align:center;white-space:nowrap}
.ok{background:#e3f2e1}.tolerated{background:#fdebc8}.bad{background:#f8d0cf}
.none{color:#999}
.status-held,.status-reproduced,.status-demonstrated{color:#2e7d32;font-weight:600}
.status-violated,.status-error,.status-harness-error{color:#c62828;font-weight:700}
.status-unknown,.status-not-demonstrated,.status-not-run,.status-skipped{color:#ef6c00;
font-weight:600}
.matrix td:nth-child(2){max-width:340px}
"""

_HEADLINES = {
    0: ("every expectation held", "valid"),
    1: ("an expectation was violated", "invalid"),
    2: ("some runs could not run", "invalid"),
    3: ("unknown: acknowledged messages were never read", "unknown"),
    4: ("harness error: faultline recorded fail for a send a broker appended", "invalid"),
}


def _status(text: str) -> str:
    return f"<span class='status-{escape(text.replace(' ', '-'))}'>{escape(text)}</span>"


def _family_cells(data: dict[str, Any], config: dict[str, Any],
                  runs: list[dict[str, Any]]) -> str:
    n = len(config["seeds_run"])
    cells = []
    for family, kinds in data["families"].items():
        stats = config["families"][family]
        if not n:
            cells.append("<td class='fam none'>-</td>")
            continue
        k = stats["runs"]
        cls = "bad" if stats["violations"] else "tolerated" if k else "ok"
        text = f"{k} of {n}"
        first = next((r for r in runs if set(r["bad"]) & set(kinds)), None)
        if first is not None:
            shown = sorted(set(first["bad"]) & set(kinds))
            title = f"first in seed {first['seed']}: {', '.join(shown)}"
            text = (f"<a href='runs/{escape(first['run'])}/report.html' "
                    f"title='{escape(title)}'>{text}</a>")
        cells.append(f"<td class='fam {cls}'>{text}</td>")
    return "".join(cells)


def _recovery(recovery: dict[str, Any]) -> str:
    if recovery.get("median_s") is None:
        return "-" if not recovery.get("not_recovered") else (
            f"never ({recovery['not_recovered']})")
    text = f"{recovery['median_s']:.2f} s"
    if recovery["max_s"] != recovery["median_s"]:
        text += f" (max {recovery['max_s']:.2f} s)"
    if recovery.get("not_recovered"):
        text += f", {recovery['not_recovered']} never"
    return text


def render_campaign(data: dict[str, Any]) -> str:
    """The HTML of a campaign from its campaign.json content."""
    headline, cls = _HEADLINES.get(data["exit_code"], ("?", "unknown"))
    if data["interrupted"]:
        headline, cls = "interrupted: a partial matrix of the runs that finished", "unknown"
    title = f"faultline campaign {data['campaign']}"
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}"
             f"</title><style>{CAMPAIGN_CSS}</style></head><body>",
             f"<h1>{escape(title)}</h1>",
             f"<p><span class='verdict {cls}'>{escape(headline.upper())}</span></p>"]
    if data.get("description"):
        parts.append(f"<p>{escape(data['description'])}</p>")
    if data["partial"]:
        reason = "interrupted (Ctrl-C)" if data["interrupted"] else data["stopped"]
        parts.append(f"<p class='muted'>Partial: {data['runs_done']} of "
                     f"{data['runs_planned']} runs finished; {escape(str(reason or ''))}.</p>")
    runs_by_cell: dict[int, list[dict[str, Any]]] = {}
    for run in data["runs"]:
        runs_by_cell.setdefault(run["cell"], []).append(run)
    for runs in runs_by_cell.values():
        runs.sort(key=lambda r: r["seed"])
    if data["claims"]:
        claim_rows = "".join(
            f"<tr><td>{escape(c['claim'])}</td><td>{_status(c['verdict'])}</td>"
            f"<td>{', '.join(str(i) for i in c['configurations'])}</td></tr>"
            for c in data["claims"])
        parts.append("<h2>Claims</h2><table><tr><th>claim</th><th>verdict</th>"
                     f"<th>configurations</th></tr>{claim_rows}</table>")
    parts.append("<h2>Guarantee matrix</h2>")
    families = list(data["families"])
    head = "".join(f"<th title='{escape(', '.join(data['families'][f]))}'>{escape(f)}</th>"
                   for f in families)
    configurations = data["configurations"]
    names = {name for c in configurations for name in c["settings"]}
    common = {name: configurations[0]["settings"].get(name) for name in sorted(names)
              if len({c["settings"].get(name) for c in configurations}) == 1}
    if common:
        parts.append("<p class='muted'>Every configuration: " + escape(" ".join(
            as_option(k, v) for k, v in common.items())) + "</p>")
    rows = []
    for config in configurations:
        settings = " ".join(as_option(k, v) for k, v in config["settings"].items()
                            if k not in common)
        label = (f"<b>{escape(config['label'])}</b><div class='muted'>{escape(settings)}</div>")
        if config["error"] is not None:
            rows.append(f"<tr><td>{config['index']}</td><td>{label}</td>"
                        f"<td>{escape(config['expectation']['name'])}</td><td>0</td>"
                        f"<td colspan='{len(families) + 2}' class='muted'>cannot run: "
                        f"{escape(config['error'])}</td><td>{_status('skipped')}</td></tr>")
            continue
        availability = config["availability"]
        first = config["first_failing_run"]
        status = _status(config["status"])
        if first and config["status"] in ("violated", "error", "unknown", "demonstrated",
                                          "harness-error"):
            status += (f"<div class='muted'><a href='runs/{escape(first)}/report.html'>first "
                       f"run</a></div>")
        rows.append(
            f"<tr><td>{config['index']}</td><td>{label}</td>"
            f"<td>{escape(config['expectation']['name'])}</td>"
            f"<td>{len(config['seeds_run'])}</td>"
            f"{_family_cells(data, config, runs_by_cell.get(config['index'], []))}"
            f"<td>{'-' if availability is None else f'{availability * 100:.0f}%'}</td>"
            f"<td>{escape(_recovery(config['recovery']))}</td>"
            f"<td class='status'>{status}</td></tr>")
    parts.append(f"<table class='matrix'><tr><th>#</th><th>configuration</th><th>expect</th>"
                 f"<th>seeds</th>{head}<th>availability</th><th>recovery</th>"
                 f"<th>status</th></tr>{''.join(rows)}</table>")
    parts.append("<p class='muted'>k of n: runs (of n seeds) with an anomaly of that family "
                 "outside what the run allows. Green: none; amber: tolerated by the "
                 "configuration's expectation; red: a violation. Availability: of the sends under "
                 "way while faults were in force, the share acknowledged before the faults "
                 "ended; recovery: from the final heal to "
                 "the first acknowledged send (median over seeds). A weak configuration whose "
                 "seeds never showed its weakness is <i>not demonstrated</i>, never safe.</p>")
    parts.append(_coverage_section(configurations))
    parts.append("<h2>Runs</h2>")
    run_rows = []
    labels = {c["index"]: c["label"] for c in data["configurations"]}
    for run in data["runs"]:
        anomalies = ", ".join(f"{k} {run['counts'].get(k, 0)}" for k in run["bad"]) or "-"
        run_rows.append(
            f"<tr><td>{run['seed']}</td><td>{escape(labels.get(run['cell'], '?'))}</td>"
            f"<td>{_status(run['outcome'])}</td><td>{escape(anomalies)}</td>"
            f"<td><a href='runs/{escape(run['run'])}/report.html'>{escape(run['run'])}</a>"
            f"</td><td><code>{escape(run['replay'])}</code></td></tr>")
    parts.append("<table><tr><th>seed</th><th>configuration</th><th>outcome</th>"
                 "<th>anomalies</th><th>report</th><th>reproduce</th></tr>"
                 + "".join(run_rows) + "</table>")
    parts.append("<h2>Campaign</h2><table class='kv'>")
    for key in ("command", "engine", "created", "seeds", "runs_done", "runs_planned",
                "runs_not_started", "wall_seconds", "runs_per_minute",
                "simulated_seconds_per_wall_second"):
        value = data.get(key)
        text = json.dumps(value) if isinstance(value, list) else str(value)
        parts.append(f"<tr><td>{escape(key.replace('_', ' '))}</td><td>{escape(text)}</td></tr>")
    parts.append("</table><p class='muted'>Files: campaign.json, runs/.</p></body></html>")
    return "".join(parts)


def _coverage_section(configurations: list[dict[str, Any]]) -> str:
    """Per configuration: distinct fault-space states reached, the event kinds reached
    (with observations) and those never reached (campaign.json's `coverage`)."""
    rows = []
    for config in configurations:
        coverage = config.get("coverage")
        if not coverage or not config["seeds_run"]:
            continue
        reached = ", ".join(f"{k} {n}" for k, n in coverage.get("kinds", {}).items()) or "-"
        missing = ", ".join(coverage.get("kinds_missing", [])) or "-"
        rows.append(f"<tr><td>{config['index']}</td><td>{escape(config['label'])}</td>"
                    f"<td>{coverage.get('distinct_states', 0)}</td><td>{escape(reached)}</td>"
                    f"<td class='muted'>{escape(missing)}</td></tr>")
    if not rows:
        return ""
    return ("<h2>Coverage</h2><table><tr><th>#</th><th>configuration</th><th>states</th>"
            "<th>event kinds reached (observations)</th><th>never reached</th></tr>"
            + "".join(rows) + "</table><p class='muted'>A state is an event kind in the "
            "fault packages in force (or healed within 10 s) when it happened; see "
            "harness/coverage.py and each run's report.</p>")


def write_campaign_report(folder: Path, data: dict[str, Any] | None = None) -> Path:
    """Render `folder/campaign.html` (from `data`, else from folder/campaign.json)."""
    if data is None:
        data = json.loads((folder / "campaign.json").read_text(encoding="utf-8"))
    path = folder / "campaign.html"
    path.write_text(render_campaign(data), encoding="utf-8")
    return path
