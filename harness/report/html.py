"""`report.html`: one self-contained page per run.

The page is built from the run directory alone (results.json, history.jsonl,
nemesis.json), so `faultline report RUN_DIR` can re-render it at any time. Inline CSS
and SVG only: the file can be mailed, archived or attached to a CI job as it is.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any, NamedTuple

import msgspec

from checkers.anomalies import ANOMALIES
from harness.report.broker_warnings import broker_warnings_html
from harness.report.charts import CHART_CSS, charts_section
from harness.report.config_table import config_html, nemesis_text, topics_text
from harness.report.coverage import coverage_html
from harness.report.evidence import Events, evidence_indices, kind_html
from harness.report.plots import Window

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;margin:24px auto;max-width:1040px;
color:#222;padding:0 12px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd}
h3{font-size:15px;margin:18px 0 6px}
.verdict{display:inline-block;padding:4px 12px;border-radius:4px;font-weight:700;color:#fff}
.valid{background:#2e7d32}.invalid{background:#c62828}.unknown{background:#ef6c00}
table{border-collapse:collapse;margin:6px 0}td,th{border:1px solid #ddd;padding:3px 8px;
text-align:left;vertical-align:top}th{background:#f4f4f4}
.kv td:first-child{color:#555;white-space:nowrap}
pre,code{font:12px/1.4 ui-monospace,Menlo,Consolas,monospace}
.ev{border-left:3px solid #c62828;padding:4px 10px;margin:8px 0;background:#fafafa}
.allowed .ev{border-left-color:#999}
.ev pre{margin:4px 0;white-space:pre-wrap;word-break:break-all}
.ev p{margin:2px 0}.def{font-style:italic;color:#444}
.cited td,.cited th{font-size:12px;padding:1px 6px}
.ev details summary{cursor:pointer;color:#555;font-size:12px}
.chart .ct{font-weight:600;font-size:13px}.chart .tk{font-size:11px;fill:#555}
.muted{color:#777}.legend span{display:inline-block;padding:1px 8px;margin-right:6px;
border-radius:3px;font-size:12px}
"""


class Completion(NamedTuple):
    """One client operation's completion: when, what, how it ended, how long it took."""

    time: float  # seconds since the run started
    f: str
    kind: str  # ok, fail or info
    latency: float  # seconds since its invocation


class NemesisRecord(NamedTuple):
    """One nemesis event as the report reads it."""

    time: float
    f: str
    value: Any
    error: str | None


@dataclass
class HistoryDigest:
    """What the report needs from one pass over the history."""

    end_s: float = 0.0
    completions: list[Completion] = field(default_factory=list)
    nemesis: list[NemesisRecord] = field(default_factory=list)
    sends: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    polls: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    events: dict[int, bytes] = field(default_factory=dict)


def digest_history(path: Path, wanted: set[int]) -> HistoryDigest:
    """Stream the history once: completions with latency, nemesis events, offsets by log,
    and the raw lines of the `wanted` indices."""
    digest = HistoryDigest()
    invoked: dict[Any, float] = {}
    decode = msgspec.json.decode
    with open(path, "rb") as stream:
        for line in stream:
            if not line.strip():
                continue
            event = decode(line)
            index, t = event["index"], event["time"] / 1e9
            digest.end_s = max(digest.end_s, t)
            if index in wanted:
                digest.events[index] = line.rstrip(b"\n")
            process, kind, f = event["process"], event["type"], event["f"]
            if process == "nemesis":
                digest.nemesis.append(NemesisRecord(t, f, event.get("value"), event.get("error")))
                continue
            if kind == "invoke":
                invoked[process] = t
                continue
            started = invoked.pop(process, t)
            digest.completions.append(Completion(t, f, kind, t - started))
            value = event.get("value")
            if kind != "ok" or value is None:
                continue
            if f == "send":
                for m in value:
                    if m.get("offset") is not None:
                        log = f"{m['topic']}/{m['partition']}"
                        digest.sends.setdefault(log, []).append((t, m["offset"]))
            elif f == "poll" and isinstance(value, dict):
                for log, records in value.items():
                    points = digest.polls.setdefault(log, [])
                    points.extend((t, r[0]) for r in records)
    return digest


def fault_windows(nemesis: Iterable[NemesisRecord],
                  end_s: float) -> list[Window]:
    """Pair nemesis start/stop events into shaded windows (open ones end at `end_s`).

    A clock strobe ends after its duration, or earlier when the executor stops it: at the
    node's next clock event (a reset, including the final heal's, a skew or a strobe).
    """
    windows: list[Window] = []
    open_: dict[tuple[str, str], tuple[float, str]] = {}
    # node -> (start, planned end, label) of a strobe that may still be running.
    strobes: dict[str, tuple[float, float, str]] = {}

    def close(key: tuple[str, str], t: float) -> None:
        if key in open_:
            start, label = open_.pop(key)
            windows.append(Window(start, t, key[0], label, key[1]))
        if key[0] == "clock" and key[1] in strobes:
            start, planned, label = strobes.pop(key[1])
            windows.append(Window(start, min(t, planned), "clock", label, key[1]))

    for t, f, value, error in nemesis:
        if error is not None:
            continue
        v = value if isinstance(value, dict) else {}
        nodes = v.get("nodes", [])
        if f == "start-partition":
            shape = v.get("shape", "")
            close(("partition", ""), t)
            open_[("partition", "")] = (t, f"partition {shape}")
        elif f == "stop-partition":
            close(("partition", ""), t)
        elif f == "start-link-fault":
            close(("link", ""), t)
            open_[("link", "")] = (t, f"link fault {v.get('latency_ms', 0)} ms")
        elif f == "stop-link-fault":
            close(("link", ""), t)
        elif f in ("kill", "power-loss"):
            for n in nodes:
                open_[("down", n)] = (t, f"{f} {n}")
        elif f == "restart":
            for n in nodes:
                close(("down", n), t)
        elif f == "pause":
            for n in nodes:
                open_[("paused", n)] = (t, f"pause {n}")
        elif f == "resume":
            for n in nodes:
                close(("paused", n), t)
        elif f == "pause-client":
            for c in v.get("clients", []):
                open_[("paused", c)] = (t, f"pause client {c}")
        elif f == "resume-client":
            for c in v.get("clients", []):
                close(("paused", c), t)
        elif f in ("clock-skew", "clock-strobe"):
            node = v.get("node", "")
            close(("clock", node), t)
            if f == "clock-strobe":
                strobes[node] = (t, t + v.get("duration_ms", 0) / 1000, f"clock strobe {node}")
            else:
                open_[("clock", node)] = (t, f"clock {node} {v.get('delta_ms')} ms")
        elif f == "clock-reset":
            for n in nodes:
                close(("clock", n), t)
        elif f == "disk-corrupt":
            node = v.get("node", "")
            open_[("down", node)] = (t, f"disk damage {node}")
        elif f == "start-disk-fault":
            node = v.get("node", "")
            what = ("ENOSPC" if v.get("enospc_write") or v.get("enospc_fsync")
                    else f"fsync +{v.get('fsync_delay_ms', 0):g} ms")
            open_[("disk", node)] = (t, f"disk {what} {node}")
        elif f == "stop-disk-fault":
            for n in nodes:
                close(("disk", n), t)
        elif f in ("add-broker", "decommission-broker", "reassign"):
            target = v.get("node") or v.get("log") or ""
            windows.append(Window(t, t, "membership", f"{f} {target}".strip(), v.get("node", "")))
        elif f == "reset-connections":
            for n in nodes or [""]:
                windows.append(Window(t, t, "reset", f"reset connections {n}".strip(), n))
    for key in list(open_):
        close(key, end_s)
    for node, (start, planned, label) in strobes.items():
        windows.append(Window(start, planned, "clock", label, node))
    return sorted(windows, key=lambda w: (w.start, w.kind))


def _availability_text(availability: dict[str, Any] | None) -> str:
    if not availability:
        return "-"
    share = availability.get("share")
    text = ("no faults in force, or no sends or polls" if share is None else
            f"{share * 100:.0f}% of {availability.get('fault_time_s', 0):g} s under faults "
            f"served sends and polls (sends {_share(availability.get('send_share'))}, "
            f"polls {_share(availability.get('poll_share'))}, "
            f"in {availability.get('window_s', 0):g} s windows)")
    recovery = availability.get("recovery_s")
    if availability.get("final_heal_s") is not None:
        text += ("; no send acknowledged after the final heal" if recovery is None else
                 f"; first send acknowledged {recovery:.3f} s after the final heal")
    return text


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.0f}%"


def _kv_table(rows: Iterable[tuple[str, Any]]) -> str:
    cells = "".join(f"<tr><td>{escape(str(k))}</td><td>{escape(str(v))}</td></tr>"
                    for k, v in rows)
    return f'<table class="kv">{cells}</table>'


def verdict_badge(valid: Any) -> str:
    word, cls = {True: ("VALID", "valid"), False: ("INVALID", "invalid"),
                 "interrupted": ("INTERRUPTED", "unknown")}.get(valid, ("UNKNOWN", "unknown"))
    return f'<span class="verdict {cls}">{word}</span>'


def _harness_section(results: dict[str, Any]) -> str:
    """faultline's own verdict (the sim's ground-truth oracle), apart from the system's."""
    harness = results.get("harness_verdict")
    if not harness:
        return ""
    errors = results.get("harness_errors") or []
    if not errors:
        return f'<p class="muted">harness check: {escape(str(harness.get("verdict")))}: ' \
               f'{escape(str(harness.get("note", "")))}</p>'
    items = "".join(
        f"<li>history index {e['index']} (invoked at {e['invoke_index']}, process "
        f"{e['process']}): value {e['value']} recorded <code>fail</code> "
        f"({escape(str(e.get('recorded_error')))}) but appended at "
        + escape(", ".join(f"{f['node']} {f['log']}@{f['offset']}" for f in e["found"]))
        + "</li>"
        for e in errors[:50])
    return (f'<h2>Harness errors</h2><p><span class="verdict invalid">HARNESS ERROR</span> '
            f"{escape(str(harness.get('note', '')))}</p><ul>{items}</ul>")


def _causes_section(results: dict[str, Any]) -> str:
    """The likely cause of each anomaly type, and which ones trade-offs explain."""
    section = results.get("explanations") or {}
    items = section.get("items") or []
    if not items:
        return ""
    rows = "".join(
        f"<li>{'✓ explained' if e['explained'] else '✗ unexplained'}: "
        f"{escape(e['sentence'])}</li>" for e in items)
    return (f"<h3>Likely causes</h3><p class='muted'>{escape(section.get('note', ''))}; "
            f"explained by documented trade-offs: "
            f"{escape(', '.join(section.get('explained_types', [])) or 'none')}; "
            f"unexplained: {escape(', '.join(section.get('unexplained_types', [])) or 'none')}"
            f"</p><ul>{rows}</ul>")


def _explanation_html(run_dir: Path, item: dict[str, Any]) -> str:
    """One explanation beside its evidence, with the node-log lines of its window."""
    from harness.report.node_excerpts import node_excerpt

    start, end = item.get("window_ns") or [0, 0]
    evidence = "".join(f"<li>{escape(e)}</li>" for e in item.get("evidence", []))
    logs = []
    for node in item.get("nodes", []):
        excerpt = node_excerpt(run_dir, node, start, end)
        if excerpt is None or not excerpt.lines:
            continue
        more = f" ({excerpt.omitted} lines left out)" if excerpt.omitted else ""
        logs.append(f"<details><summary>nodes/{escape(node)}.log from {start / 1e9:.1f} s to "
                    f"{end / 1e9:.1f} s{more}</summary>"
                    f"<pre>{escape(chr(10).join(excerpt.lines))}</pre></details>")
    return (f"<div class='ev'><b>likely cause</b>"
            f"{' (explained)' if item['explained'] else ''}: {escape(item['sentence'])}"
            f"<ul>{evidence}</ul>{''.join(logs)}</div>")


def render_report(run_dir: Path) -> str:
    """The HTML of `run_dir`'s report."""
    results = json.loads((run_dir / "results.json").read_text())
    verdict = results["verdict"]
    config = results.get("config", {})
    digest = digest_history(run_dir / "history.jsonl", evidence_indices(verdict))
    parts = [f"<!doctype html><html><head><meta charset='utf-8'>"
             f"<title>faultline {escape(results['run_id'])}</title><style>{CSS}{CHART_CSS}</style>"
             "</head><body>"]
    parts.append(f"<h1>faultline run {escape(results['run_id'])}</h1>")
    allowed = set(verdict.get("allowed", []))
    bad = verdict.get("bad_anomaly_types", [])
    parts.append(f"<p>{verdict_badge(results['valid'])} &nbsp; "
                 f"{escape(', '.join(bad) or 'no anomalies outside the allowed set')}</p>")
    for note in verdict.get("notes", []):
        parts.append(f'<p class="muted">note: {escape(note)}</p>')
    parts.append(_harness_section(results))
    parts.append(broker_warnings_html(results))
    stats = verdict["stats"]
    messages = stats["messages"]
    timing = results.get("timing", {})
    parts.append("<h2>Summary</h2>")
    parts.append(_kv_table([
        ("target / workload", f"{config.get('target')} / {config.get('workload')} "
                              f"(checker mode {results.get('checker_mode')})"),
        ("nemesis", nemesis_text(config, (results.get("schedule") or {}).get("ops", 0))),
        ("seed", results.get("seed")),
        ("duration", f"{timing.get('run_seconds')} {timing.get('clock')} s "
                     f"({timing.get('wall_seconds')} s wall)"),
        ("events", stats["events"]),
        ("messages", f"sent {messages['sent']}, acknowledged {messages['acknowledged']}, "
                     f"failed {messages['failed']}, indeterminate {messages['indeterminate']}, "
                     f"read {messages['read']}"),
        ("operations", ", ".join(f"{f}: {d.get('ok', 0)} ok / {d.get('fail', 0)} fail / "
                                 f"{d.get('info', 0)} info" for f, d in stats["ops"].items())),
        ("availability under faults", _availability_text(results.get("availability"))),
        ("reproduce", results.get("reproduce", "")),
        ("history sha256", results.get("history", {}).get("sha256", "")),
    ]))
    parts.append(coverage_html(results))
    parts.append("<h2>Anomalies</h2>")
    counts = verdict.get("counts", {})
    if not counts:
        parts.append("<p>None found.</p>")
    else:
        rows = "".join(
            f"<tr><td><a href='#a-{escape(k)}'>{escape(k)}</a></td><td>{c}</td>"
            f"<td>{'allowed' if k in allowed else 'not allowed'}</td>"
            f"<td>{escape(ANOMALIES.get(k, ''))}</td></tr>"
            for k, c in counts.items())
        parts.append("<table><tr><th>type</th><th>count</th><th></th><th>what it means</th>"
                     f"</tr>{rows}</table>")
        parts.append(_causes_section(results))
        explained_by_kind: dict[str, list[dict[str, Any]]] = {}
        for item in (results.get("explanations") or {}).get("items", []):
            explained_by_kind.setdefault(item["kind"], []).append(item)
        events = Events(digest.events)
        for kind, items in verdict["anomalies"].items():
            cls = "allowed" if kind in allowed else ""
            parts.append(f"<div class='{cls}'><h3 id='a-{escape(kind)}'>{escape(kind)} "
                         f"({counts.get(kind, len(items))}{', allowed' if cls else ''})</h3>")
            for explanation in explained_by_kind.get(kind, []):
                parts.append(_explanation_html(run_dir, explanation))
            parts.append(kind_html(kind, items, events))
            parts.append("</div>")
    parts.append(charts_section(
        run_dir, results,
        lambda records, end_s: fault_windows(
            (NemesisRecord(t, f, v, None) for t, f, v in records), end_s)))
    parts.append("<h2>Faults</h2>")
    if digest.nemesis:
        rows = "".join(
            f"<tr><td>{t:.3f}</td><td>{escape(f)}</td><td><code>{escape(json.dumps(v))}"
            f"</code>{' — ' + escape(e) if e else ''}</td></tr>"
            for t, f, v, e in digest.nemesis)
        parts.append(f"<table><tr><th>time (s)</th><th>f</th><th>value</th></tr>{rows}</table>")
    else:
        parts.append("<p>No faults were injected.</p>")
    parts.append("<h2>Configuration</h2>")
    parts.append(config_html(config))
    topology = results.get("topology", {})
    parts.append(f"<p class='muted'>topics {escape(topics_text(topology.get('topics', {})))} — "
                 f"{escape(topology.get('note', ''))}</p>")
    parts.append("<p class='muted'>Files: history.jsonl, results.json, nemesis.json, "
                 "nodes/.</p></body></html>")
    return "".join(parts)


def write_report(run_dir: Path) -> Path:
    """Render `run_dir/report.html` and return its path."""
    path = run_dir / "report.html"
    path.write_text(render_report(run_dir), encoding="utf-8")
    return path
