"""`results/index.html`: every campaign and every run below a results folder.

Campaigns first (verdict, runs, claims), then runs, newest first, campaign runs
included, with a column for each run setting whose value differs between the runs
listed (acks, min-insync-replicas, enable-idempotence, flush, nemesis, ...). A menu per
column filters the runs; the filter lives in the page's address (`index.html#acks=1&
flush=every`), so a filtered view can be bookmarked or linked. Self-contained: inline
CSS and a few lines of inline script.
"""

from __future__ import annotations

import json
import os
from html import escape
from pathlib import Path
from typing import Any

from harness.report.html import CSS, verdict_badge
from harness.run_config import SETTINGS

# Always shown, even when every run agrees on them: what a reader compares runs by.
ALWAYS = ("target", "workload", "nemesis", "acks", "enable-idempotence", "flush",
          "min-insync-replicas")
NEVER = ("seed", "fault-cmd", "bootstrap-servers", "allow")

INDEX_CSS = CSS + """
body{max-width:none}td[data-v]{white-space:nowrap}
.filters label{margin-right:10px;white-space:nowrap}.filters select{margin-left:3px}
tr[hidden]{display:none}
th[data-sort]{cursor:pointer;user-select:none}th[data-sort]:after{content:" \\2195";color:#aaa}
th[aria-sort=ascending]:after{content:" \\25B2";color:#333}
th[aria-sort=descending]:after{content:" \\25BC";color:#333}
.bad{color:#c62828}.ok-anomaly{color:#777}
"""

# Click a column head to sort the runs by it (again: the other way round). Cells sort
# by their data-v value when they have one (dates, seconds), else by their text; numbers
# as numbers.
SORT_SCRIPT = """
(function(){
  var table = document.getElementById('runs');
  if (!table) return;
  var heads = Array.prototype.slice.call(table.querySelectorAll('th[data-sort]'));
  heads.forEach(function(th, col){
    th.addEventListener('click', function(){
      var down = th.getAttribute('aria-sort') === 'ascending';
      heads.forEach(function(h){ h.removeAttribute('aria-sort'); });
      th.setAttribute('aria-sort', down ? 'descending' : 'ascending');
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.querySelectorAll('tr[data-run]'));
      function key(tr){ var td = tr.children[col];
        var v = td.hasAttribute('data-v') ? td.getAttribute('data-v') : td.textContent.trim();
        return v; }
      rows.sort(function(a, b){
        var x = key(a), y = key(b), nx = parseFloat(x), ny = parseFloat(y);
        var c = (!isNaN(nx) && !isNaN(ny) && String(nx) === x && String(ny) === y)
          ? nx - ny : x.localeCompare(y);
        return down ? -c : c; });
      rows.forEach(function(tr){ body.appendChild(tr); });
    });
  });
})();
"""

FILTER_SCRIPT = """
(function(){
  var selects = Array.prototype.slice.call(document.querySelectorAll('select[data-col]'));
  var rows = Array.prototype.slice.call(document.querySelectorAll('tr[data-run]'));
  var counter = document.getElementById('shown');
  function apply(){
    var want = {}, shown = 0;
    selects.forEach(function(s){ if (s.value) want[s.getAttribute('data-col')] = s.value; });
    rows.forEach(function(tr){
      var ok = Object.keys(want).every(function(k){
        return tr.getAttribute('data-c-' + k) === want[k]; });
      tr.hidden = !ok; if (ok) shown++;
    });
    counter.textContent = shown + ' of ' + rows.length + ' runs shown';
    var hash = Object.keys(want).map(function(k){
      return encodeURIComponent(k) + '=' + encodeURIComponent(want[k]); }).join('&');
    if (('#' + hash) !== location.hash && (hash || location.hash)) {
      history.replaceState(null, '', hash ? '#' + hash : location.pathname); }
  }
  function load(){
    var params = {};
    location.hash.replace(/^#/, '').split('&').forEach(function(part){
      if (!part) return; var kv = part.split('=');
      params[decodeURIComponent(kv[0])] = decodeURIComponent(kv[1] || ''); });
    selects.forEach(function(s){ s.value = params[s.getAttribute('data-col')] || ''; });
    apply();
  }
  selects.forEach(function(s){ s.addEventListener('change', apply); });
  window.addEventListener('hashchange', load);
  load();
})();
"""


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _run_settings(config: dict[str, Any]) -> dict[str, str]:
    """A run's settings by name, written as `--vary` writes them."""
    values = {}
    for name, s in SETTINGS.items():
        if s.attr in config:
            value = config[s.attr]
            if s.kind == "strs":
                value = tuple(value)
            values[name] = s.format(value)
    return values


def _verdict_word(valid: Any) -> str:
    return {True: "valid", False: "invalid", "interrupted": "interrupted"}.get(valid, "unknown")


def render_index(results_dir: Path) -> Path:
    """Write `results_dir/index.html` and return its path."""
    runs: list[dict[str, Any]] = []
    campaigns: list[dict[str, Any]] = []
    for folder in sorted((p for p in results_dir.iterdir() if p.is_dir() and not p.is_symlink()),
                         reverse=True):
        campaign = _read(folder / "campaign.json")
        if campaign is not None and "configurations" in campaign:
            campaigns.append({"folder": folder.name, "data": campaign})
            for run_folder in sorted((folder / "runs").glob("*/"), reverse=True):
                results = _read(run_folder / "results.json")
                if results is not None and "run_id" in results:
                    runs.append({"href": f"{folder.name}/runs/{run_folder.name}",
                                 "campaign": folder.name, "results": results})
            continue
        results = _read(folder / "results.json")
        if results is not None and "run_id" in results:
            runs.append({"href": folder.name, "campaign": "", "results": results})
    for run in runs:
        run["settings"] = _run_settings(run["results"].get("config", {}))
    columns = [name for name in SETTINGS if name not in NEVER and (
        name in ALWAYS or len({r["settings"].get(name) for r in runs}) > 1)]
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>faultline results"
             f"</title><style>{INDEX_CSS}</style></head><body><h1>faultline results</h1>"]
    parts.append(_campaigns_table(campaigns))
    parts.append(_runs_table(runs, columns))
    parts.append(f"<script>{FILTER_SCRIPT}{SORT_SCRIPT}</script></body></html>")
    path = results_dir / "index.html"
    path.write_text("".join(parts), encoding="utf-8")
    point_latest(results_dir, runs)
    return path


def point_latest(results_dir: Path, runs: list[dict[str, Any]]) -> None:
    """Make `results_dir/latest` a relative symlink to the run finished last (the newest
    results.json), so `results/latest/report.html` is always the last run's report."""
    finished = [(results_dir / r["href"] / "results.json", r["href"]) for r in runs]
    finished = [(p.stat().st_mtime, href) for p, href in finished if p.is_file()]
    if not finished:
        return
    _, href = max(finished)
    link = results_dir / "latest"
    if link.is_symlink() and str(link.readlink()) == href:
        return
    if link.exists() and not link.is_symlink():
        return  # someone's own file or folder called latest: not ours to replace
    # A name of this process's own, so runs finishing side by side never collide.
    temporary = results_dir / f".latest.{os.getpid()}.tmp"
    temporary.unlink(missing_ok=True)
    temporary.symlink_to(href, target_is_directory=True)
    temporary.replace(link)  # atomic: a reader never finds no `latest`


def _campaigns_table(campaigns: list[dict[str, Any]]) -> str:
    if not campaigns:
        return "<h2>Campaigns</h2><p class='muted'>None yet: <code>faultline campaign</code>.</p>"
    words = {0: "held", 1: "violated", 2: "error", 3: "unknown", 4: "harness error"}
    rows = []
    for entry in campaigns:
        data = entry["data"]
        status = "interrupted" if data.get("interrupted") else words.get(
            data.get("exit_code"), "?")
        cls = {"held": "valid", "violated": "invalid", "error": "invalid",
               "harness error": "invalid"}.get(status, "unknown")
        claims = data.get("claims") or []
        claim_text = ", ".join(f"{sum(c['verdict'] == v for c in claims)} {v}"
                               for v in sorted({c["verdict"] for c in claims}))
        rows.append(
            f"<tr><td><a href='{escape(entry['folder'])}/campaign.html'>"
            f"{escape(str(data.get('campaign')))}</a><div class='muted'>"
            f"{escape(entry['folder'])}</div></td>"
            f"<td><span class='verdict {cls}'>{escape(status.upper())}</span></td>"
            f"<td>{len(data.get('configurations', []))}</td>"
            f"<td>{data.get('runs_done')} of {data.get('runs_planned')}</td>"
            f"<td>{escape(claim_text or '-')}</td>"
            f"<td>{escape(str(data.get('created', '')))}</td></tr>")
    return ("<h2>Campaigns</h2><table><tr><th>campaign</th><th>verdict</th>"
            "<th>configurations</th><th>runs</th><th>claims</th><th>created</th></tr>"
            + "".join(rows) + "</table>")


def _runs_table(runs: list[dict[str, Any]], columns: list[str]) -> str:
    if not runs:
        return "<h2>Runs</h2><p class='muted'>None yet: <code>faultline run</code>.</p>"
    filters = ["<span class='filters'>"]
    filter_columns = [*columns, "verdict"] + (["campaign"] if any(r["campaign"] for r in runs)
                                             else [])
    for column in filter_columns:
        values = sorted({_cell(r, column) for r in runs})
        options = "".join(f"<option value='{escape(v)}'>{escape(v or '(none)')}</option>"
                          for v in values)
        filters.append(f"<label>{escape(column)}<select data-col='{escape(column)}'>"
                       f"<option value=''>all</option>{options}</select></label>")
    filters.append("</span>")
    head = "".join(f"<th data-sort>{escape(c)}</th>" for c in columns)
    rows = []
    for run in runs:
        results = run["results"]
        attrs = " ".join(f"data-c-{escape(c)}='{escape(_cell(run, c))}'" for c in filter_columns)
        verdict = results.get("verdict", {})
        counts = verdict.get("counts", {})
        allowed = set(verdict.get("allowed", []))
        failing = ", ".join(f"{k} {v}" for k, v in counts.items() if k not in allowed)
        tolerated = ", ".join(f"{k} {v}" for k, v in counts.items() if k in allowed)
        cells = "".join(f"<td>{escape(run['settings'].get(c, ''))}</td>" for c in columns)
        campaign = (f"<div class='muted'>campaign {escape(run['campaign'])}</div>"
                    if run["campaign"] else "")
        started = run_started(results["run_id"])
        seconds = (results.get("timing") or {}).get("run_seconds")
        rows.append(
            f"<tr data-run {attrs}><td><a href='{escape(run['href'])}/report.html'>"
            f"{escape(results['run_id'])}</a>{campaign}</td>"
            f"<td data-v='{_verdict_word(results.get('valid'))}'>"
            f"{verdict_badge(results.get('valid'))}</td>{cells}"
            f"<td>{escape(str(results.get('seed')))}</td>"
            f"<td data-v='{escape(started)}'>{escape(started.replace('T', ' '))}</td>"
            f"<td data-v='{'' if seconds is None else seconds}'>"
            f"{'-' if seconds is None else f'{seconds:.1f} s'}</td>"
            f"<td class='bad'>{escape(failing or '-')}</td>"
            f"<td class='ok-anomaly'>{escape(tolerated or '-')}</td></tr>")
    return (f"<h2>Runs</h2><p>{''.join(filters)}</p><p class='muted' id='shown'>"
            f"{len(runs)} runs</p><p class='muted'>Click a column head to sort.</p>"
            f"<table id='runs'><tbody><tr><th data-sort>run</th><th data-sort>verdict</th>"
            f"{head}<th data-sort>seed</th><th data-sort>date</th><th data-sort>duration</th>"
            f"<th data-sort>failing anomalies</th><th data-sort>allowed anomalies</th></tr>"
            f"{''.join(rows)}</tbody></table>")


def run_started(run_id: str) -> str:
    """When a run started, from its id (20261204T191825-...), as 2026-12-04T19:18:25."""
    stamp = run_id.split("-", 1)[0]
    if len(stamp) != 15 or stamp[8] != "T" or not (stamp[:8] + stamp[9:]).isdigit():
        return ""
    return (f"{stamp[:4]}-{stamp[4:6]}-{stamp[6:8]}T{stamp[9:11]}:{stamp[11:13]}:"
            f"{stamp[13:15]}")


def _cell(run: dict[str, Any], column: str) -> str:
    if column == "verdict":
        return _verdict_word(run["results"].get("valid"))
    if column == "campaign":
        return str(run["campaign"])
    return str(run["settings"].get(column, ""))
