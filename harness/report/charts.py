"""The report's charts: what happened when, told on one time axis.

Every chart shares the same x axis (seconds since the run started) and the same margins,
so a fault in the lanes, a phase marker, an anomaly marker, a process's operation and a
latency spike at the same second line up vertically. From top to bottom:

- fault lanes: one lane per node (and one for network-wide faults), each fault a labelled
  bar, so overlapping faults never blend and always say where they struck;
- anomalies: one lane per anomaly type, a marker spanning the times of each item's cited
  history events;
- throughput and latency quantiles (p50/p95/p99 per time bucket, log axis, zero-latency
  completions counted in the caption instead of lifted to a floor);
- a per-process timeline (like Jepsen's timeline.html): each operation a bar from its
  invocation to its completion, coloured by how it ended;
- acknowledged and read offsets per log, in two distinct colours.

Phase markers (workload start, final heal, recovery end, final reads) are drawn on every
chart. They are read back from the history and nemesis.json alone, so `faultline report`
can re-render any run.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

import msgspec

from harness.report.plots import FAULT_COLOURS, Series, Window, thin

LEFT, RIGHT = 140, 16  # plot margins shared by every chart, so their x axes line up
WIDTH = 1000
POINTS_LIMIT = 4000
OPS_LIMIT = 6000  # operation bars drawn in the process timeline
OUTCOME_COLOURS = {"ok": "#1565c0", "fail": "#ef6c00", "info": "#c62828"}
QUANTILE_COLOURS = {"p50": "#1565c0", "p95": "#8e24aa", "p99": "#c62828"}
ACKED_COLOUR, READ_COLOUR = "#1565c0", "#f9a825"
ANOMALY_COLOUR, ALLOWED_COLOUR = "#c62828", "#757575"
NETWORK_LANE = "network"

CHART_CSS = """
.chart{display:block;margin:4px 0 14px}.chart .ct{font-weight:600;font-size:13px}
.chart .tk{font-size:11px;fill:#555}.chart .ph{font-size:10px;fill:#444}
.chart .lane{font-size:11px;fill:#333}.chart .bar{font-size:10px;fill:#222}
.keys{display:flex;flex-wrap:wrap;gap:4px 14px;margin:2px 0 2px;font-size:12px}
.keys .key{display:inline-flex;align-items:center;gap:4px;white-space:nowrap}
.keys .sw{display:inline-block;width:12px;height:12px;border-radius:2px}
"""


@dataclass(frozen=True)
class Operation:
    """One client operation, from invocation to completion (seconds since the start)."""

    process: str
    f: str
    start: float
    end: float
    kind: str  # ok, fail or info
    index: int  # history index of the completion


@dataclass(frozen=True)
class Phase:
    """A moment the run changed phase, drawn as a labelled vertical line."""

    time: float
    label: str


@dataclass(frozen=True)
class AnomalyMark:
    """One anomaly item placed on the timeline at the times of its cited events."""

    kind: str
    number: int  # position among its type's items, from 1
    start: float
    end: float
    allowed: bool
    summary: str
    logs: tuple[str, ...] = ()  # the logs it concerns, when the item names them
    times: tuple[float, ...] = ()  # each cited event's time


@dataclass
class Timeline:
    """What the charts need from one pass over the history."""

    end_s: float = 0.0
    first_invoke_s: float | None = None
    operations: list[Operation] = field(default_factory=list)
    sends: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    polls: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    nemesis: list[tuple[float, str, Any]] = field(default_factory=list)  # (time, f, value)
    index_times: dict[int, float] = field(default_factory=dict)


def read_timeline(path: Path, cited: set[int]) -> Timeline:
    """Stream the history once, keeping the times of the `cited` indices."""
    timeline = Timeline()
    invoked: dict[Any, float] = {}
    decode = msgspec.json.decode
    with open(path, "rb") as stream:
        for line in stream:
            if not line.strip():
                continue
            event = decode(line)
            index, t = event["index"], event["time"] / 1e9
            timeline.end_s = max(timeline.end_s, t)
            if index in cited:
                timeline.index_times[index] = t
            process, kind, f = event["process"], event["type"], event["f"]
            if process == "nemesis":
                if event.get("error") is None:
                    timeline.nemesis.append((t, f, event.get("value")))
                continue
            if kind == "invoke":
                invoked[process] = t
                if timeline.first_invoke_s is None:
                    timeline.first_invoke_s = t
                continue
            started = invoked.pop(process, t)
            timeline.operations.append(Operation(str(process), f, started, t, kind, index))
            value = event.get("value")
            if kind != "ok" or value is None:
                continue
            if f == "send":
                for m in value:
                    if isinstance(m, dict) and m.get("offset") is not None:
                        log = f"{m['topic']}/{m['partition']}"
                        timeline.sends.setdefault(log, []).append((t, m["offset"]))
            elif f == "poll" and isinstance(value, dict):
                for log, records in value.items():
                    timeline.polls.setdefault(log, []).extend((t, r[0]) for r in records)
    return timeline


def phases(timeline: Timeline, schedule: dict[str, Any] | None) -> list[Phase]:
    """Workload start, final heal, recovery end and final reads, from the history and the
    schedule (nemesis.json): the main phase starts at the first client invocation, the
    schedule's ops are timed from there."""
    start = timeline.first_invoke_s
    if start is None:
        return []
    marks = [Phase(0.0, "setup"), Phase(start, "workload + faults")]
    if schedule:
        heal = next((t for t, f, v in timeline.nemesis
                     if isinstance(v, dict) and v.get("final")), None)
        until = start + schedule.get("duration_ms", 0) / 1000
        # The workload runs on for the recovery period after the faults' time limit,
        # then the final reads begin.
        marks.append(Phase(heal if heal is not None else until, "final heal, recovery"))
        marks.append(Phase(until + schedule.get("recovery_ms", 0) / 1000, "final reads"))
    return [m for m in marks if m.time <= timeline.end_s + 1e-9]


def anomaly_marks(verdict: dict[str, Any], times: dict[int, float]) -> list[AnomalyMark]:
    """One mark per anomaly item that cites history events (items without cited events
    have no time and are listed in the caption instead)."""
    allowed = set(verdict.get("allowed", []))
    marks = []
    for kind, items in verdict.get("anomalies", {}).items():
        for number, item in enumerate(items, 1):
            cited = [times[i] for i in item.get("indices") or [] if i in times]
            if not cited:
                continue
            summary = ", ".join(f"{k} {v}" for k, v in item.items()
                                if k not in ("indices", "logs") and not isinstance(v, dict))
            logs = [item["log"]] if isinstance(item.get("log"), str) else []
            logs += [log for log in item.get("logs") or [] if isinstance(log, str)]
            marks.append(AnomalyMark(kind, number, min(cited), max(cited), kind in allowed,
                                     summary[:200], tuple(dict.fromkeys(logs)),
                                     tuple(sorted(set(cited)))))
    return marks


def cited_indices(verdict: dict[str, Any]) -> set[int]:
    """Every history index any anomaly item cites."""
    return {i for items in verdict.get("anomalies", {}).values() for item in items
            for i in item.get("indices") or []}


def node_of(window: Window) -> str:
    """The lane a fault window belongs in: its node, or the network-wide lane."""
    return window.node or NETWORK_LANE


class Axis:
    """The shared time axis: seconds -> x pixels."""

    def __init__(self, x_max: float) -> None:
        self.x_max = max(x_max, 1e-9)
        self.plot_w = WIDTH - LEFT - RIGHT

    def x(self, t: float) -> float:
        return LEFT + self.plot_w * min(max(t / self.x_max, 0.0), 1.0)


def _nice_step(span: float, count: int) -> float:
    raw = max(span, 1e-9) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    return next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)


def _fmt(value: float) -> str:
    if abs(value) >= 1000 or value == int(value):
        return f"{value:.0f}"
    return f"{value:.3g}"


def _svg_open(title: str, height: int, kind: str) -> list[str]:
    return [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
            f'viewBox="0 0 {WIDTH} {height}" class="chart" data-chart="{kind}" role="img" '
            f'aria-label="{escape(title)}">',
            f'<text x="{LEFT}" y="15" class="ct">{escape(title)}</text>']


def _time_axis(axis: Axis, top: float, bottom: float, marks: Sequence[Phase]) -> list[str]:
    """Frame, x ticks under `bottom`, and the phase markers across [top, bottom]."""
    out = [f'<rect x="{LEFT}" y="{top}" width="{axis.plot_w}" height="{bottom - top}" '
           'fill="none" stroke="#888"/>']
    step = _nice_step(axis.x_max, 10)
    t = 0.0
    while t <= axis.x_max + 1e-9:
        x = axis.x(t)
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{bottom}" y2="{bottom + 4}" '
                   f'stroke="#888"/><text x="{x:.1f}" y="{bottom + 15}" class="tk" '
                   f'text-anchor="middle">{_fmt(round(t, 10))}</text>')
        t += step
    for m in marks:
        x = axis.x(m.time)
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{bottom}" stroke="#333" '
                   f'stroke-dasharray="4,3" class="phase" data-phase="{escape(m.label)}">'
                   f'<title>{escape(m.label)} at {m.time:.3f} s</title></line>')
    return out


def _phase_labels(axis: Axis, marks: Sequence[Phase], y: float) -> list[str]:
    """Phase names above the plot, each starting at its line; a name that would run into
    the next one is cut to fit."""
    out = []
    for i, m in enumerate(marks):
        x = axis.x(m.time)
        room = (axis.x(marks[i + 1].time) if i + 1 < len(marks) else WIDTH - RIGHT) - x - 6
        label = m.label if 5.3 * len(m.label) <= room else m.label[:max(int(room / 5.3), 0)]
        if label:
            out.append(f'<text x="{x + 3:.1f}" y="{y}" class="ph">{escape(label)}</text>')
    return out


def keys_html(entries: Iterable[tuple[str, str]], *, line: bool = False) -> str:
    """A legend as HTML (wrapping flex items can never overlap each other)."""
    shape = "height:3px;" if line else ""
    items = "".join(f'<span class="key"><span class="sw" style="{shape}background:{colour}">'
                    f"</span>{escape(name)}</span>" for name, colour in entries)
    return f'<div class="keys">{items}</div>'


def fault_lanes(windows: Sequence[Window], nodes: Sequence[str], axis: Axis,
                marks: Sequence[Phase]) -> str:
    """One lane per node plus a network lane; each fault a bar labelled with what it was."""
    lanes = [NETWORK_LANE, *nodes]
    for w in windows:
        if node_of(w) not in lanes:
            lanes.append(node_of(w))
    lane_h, top = 20, 40
    bottom = top + lane_h * len(lanes)
    out = _svg_open("faults, one lane per node", bottom + 22, "faults")
    out += _phase_labels(axis, marks, 32)
    for i, lane in enumerate(lanes):
        y = top + i * lane_h
        out.append(f'<text x="{LEFT - 6}" y="{y + 14}" class="lane" text-anchor="end">'
                   f"{escape(lane)}</text>")
        if i:
            out.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y}" y2="{y}" '
                       'stroke="#eee"/>')
    for w in windows:
        y = top + lanes.index(node_of(w)) * lane_h + 3
        x0, x1 = axis.x(w.start), axis.x(w.end)
        colour = FAULT_COLOURS.get(w.kind, "#dddddd")
        tip = f"<title>{escape(w.label)}: {w.start:.3f}–{w.end:.3f} s</title>"
        width = max(x1 - x0, 3.0)
        out.append(f'<rect x="{x0:.1f}" y="{y}" width="{width:.1f}" height="{lane_h - 6}" '
                   f'fill="{colour}" stroke="#666" stroke-width="0.5" class="fault">{tip}</rect>')
        if width > 6 * len(w.kind) + 6:
            out.append(f'<text x="{x0 + 3:.1f}" y="{y + 11}" class="bar">{escape(w.kind)}'
                       f"</text>")
    out += _time_axis(axis, top, bottom, marks)
    out.append("</svg>")
    present = sorted({w.kind for w in windows})
    legend = keys_html((k, FAULT_COLOURS.get(k, "#dddddd")) for k in present)
    return "".join(out) + (legend if present else
                           "<p class='muted'>No faults were in force.</p>")


def anomaly_lanes(anomalies: Sequence[AnomalyMark], axis: Axis, marks: Sequence[Phase],
                  untimed: int) -> str:
    """One lane per anomaly type, a marker per item over its cited events' times."""
    kinds = list(dict.fromkeys(a.kind for a in anomalies))
    # Items of a type that would overlap are stacked in rows, so each stays visible.
    row_of: dict[int, int] = {}
    rows_per_kind: dict[str, list[float]] = {k: [] for k in kinds}
    for i, a in enumerate(anomalies):
        ends = rows_per_kind[a.kind]
        x0 = axis.x(a.start) - 6
        row = next((r for r, end in enumerate(ends) if end < x0), len(ends))
        if row == len(ends):
            ends.append(0.0)
        ends[row] = max(axis.x(a.end), axis.x(a.start)) + 6
        row_of[i] = row
    row_h, pad = 13, 4
    lane_top: dict[str, float] = {}
    top = 40
    y = float(top)
    for kind in kinds:
        lane_top[kind] = y
        y += len(rows_per_kind[kind]) * row_h + 2 * pad
    bottom = max(y, top + 20)
    out = _svg_open("anomalies, at the times of their evidence", int(bottom) + 22, "anomalies")
    out += _phase_labels(axis, marks, 32)
    if not kinds:
        out.append(f'<text x="{LEFT + 8}" y="{top + 14}" class="lane">none</text>')
    for kind in kinds:
        out.append(f'<text x="{LEFT - 6}" y="{lane_top[kind] + pad + 10}" class="lane" '
                   f'text-anchor="end">{escape(kind)}</text>')
        if lane_top[kind] > top:
            out.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{lane_top[kind]}" '
                       f'y2="{lane_top[kind]}" stroke="#eee"/>')
    # Markers last, so no frame or phase line lies over them.
    out += _time_axis(axis, top, bottom, marks)
    for i, a in enumerate(anomalies):
        y = lane_top[a.kind] + pad + row_of[i] * row_h + row_h / 2
        x0, x1 = axis.x(a.start), axis.x(a.end)
        colour = ALLOWED_COLOUR if a.allowed else ANOMALY_COLOUR
        tip = (f"<title>{escape(a.kind)} #{a.number}{' (allowed)' if a.allowed else ''}: "
               f"{a.start:.3f}–{a.end:.3f} s; {escape(a.summary)}</title>")
        span = (f'<line x1="{x0:.1f}" x2="{x1:.1f}" y1="{y:.1f}" y2="{y:.1f}" '
                f'stroke="{colour}" stroke-width="3"/>' if x1 - x0 > 1 else "")
        ticks = "".join(f'<line x1="{axis.x(t):.1f}" x2="{axis.x(t):.1f}" y1="{y - 5:.1f}" '
                        f'y2="{y + 5:.1f}" stroke="{colour}" stroke-width="2"/>'
                        for t in a.times[1:])
        out.append(f'<g class="anomaly" data-anomaly="{escape(a.kind)}#{a.number}">{span}'
                   f'{ticks}<path d="M{x0 - 5:.1f},{y - 5:.1f} h10 l-5,10 z" '
                   f'fill="{colour}"/>{tip}</g>')
    out.append("</svg>")
    caption = (f"<p class='muted'>{untimed} anomaly item(s) cite no history event and have "
               "no place on the timeline.</p>" if untimed else "")
    legend = keys_html([("not allowed", ANOMALY_COLOUR), ("allowed", ALLOWED_COLOUR)])
    return "".join(out) + (legend if kinds else "") + caption


def _value_chart(title: str, kind: str, series: Sequence[Series], axis: Axis,
                 marks: Sequence[Phase], y_label: str, *, log_y: bool = False,
                 height: int = 220, anomalies: Sequence[AnomalyMark] = (),
                 gap: float | None = None) -> str:
    """Series over time on a linear or log y axis, with the phase markers and a band
    behind the series at the time of each of `anomalies`. A line breaks where two
    points are more than `gap` seconds apart (no data there: nothing to join)."""
    top, bottom = 40, height - 22
    plot_h = bottom - top
    ys = [y for s in series for _, y in s.points if not log_y or y > 0]
    if log_y:
        lo = 10 ** math.floor(math.log10(min(ys))) if ys else 1.0
        hi = 10 ** math.ceil(math.log10(max(ys))) if ys else 10.0
        hi = max(hi, lo * 10)
    else:
        lo, hi = 0.0, (max(ys, default=1.0) * 1.08) or 1.0

    def sy(y: float) -> float:
        if log_y:
            frac = (math.log10(y) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))
        else:
            frac = (y - lo) / (hi - lo)
        return top + plot_h * (1 - min(max(frac, 0.0), 1.0))

    out = _svg_open(title, height, kind)
    out += _phase_labels(axis, marks, 32)
    out += _evidence_lines(anomalies, axis, top, bottom)
    if log_y:
        ticks = [10.0 ** e for e in range(round(math.log10(lo)), round(math.log10(hi)) + 1)]
    else:
        step = _nice_step(hi - lo, 4)
        ticks = [i * step for i in range(int((hi - lo) / step) + 1)]
    for t in ticks:
        y = sy(t)
        out.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" '
                   f'stroke="#e4e4e4"/><text x="{LEFT - 6}" y="{y + 4:.1f}" class="tk" '
                   f'text-anchor="end">{_fmt(t)}</text>')
    out.append(f'<text x="14" y="{top + plot_h / 2}" class="tk" text-anchor="middle" '
               f'transform="rotate(-90 14 {top + plot_h / 2})">{escape(y_label)}</text>')
    for s in series:
        points = [(x, y) for x, y in s.points if not log_y or y > 0]
        if not points:
            continue
        if s.dots:
            dots = "".join(f'<circle cx="{axis.x(x):.1f}" cy="{sy(y):.1f}" r="1.7"/>'
                           for x, y in points)
            out.append(f'<g fill="{s.colour}" fill-opacity="0.75" data-series="{escape(s.name)}"'
                       f">{dots}</g>")
        else:
            for run in _runs(points, gap):
                if len(run) == 1:  # a lone point draws no line: show it as a dot
                    x, y = run[0]
                    out.append(f'<circle cx="{axis.x(x):.1f}" cy="{sy(y):.1f}" r="2" '
                               f'fill="{s.colour}"/>')
                path = " ".join(f"{axis.x(x):.1f},{sy(y):.1f}" for x, y in run)
                out.append(f'<polyline points="{path}" fill="none" stroke="{s.colour}" '
                           f'stroke-width="1.5" data-series="{escape(s.name)}"/>')
    out += _time_axis(axis, top, bottom, marks)
    out.append("</svg>")
    return "".join(out)


def _runs(points: Sequence[tuple[float, float]],
          gap: float | None) -> list[list[tuple[float, float]]]:
    """`points` cut wherever consecutive x values are more than `gap` apart."""
    runs: list[list[tuple[float, float]]] = []
    for point in points:
        if runs and (gap is None or point[0] - runs[-1][-1][0] <= gap):
            runs[-1].append(point)
        else:
            runs.append([point])
    return runs


def _evidence_lines(anomalies: Sequence[AnomalyMark], axis: Axis, top: float,
                    bottom: float) -> list[str]:
    """A thin vertical line at each event an anomaly cites, drawn behind the data."""
    out = []
    for a in anomalies:
        colour = ALLOWED_COLOUR if a.allowed else ANOMALY_COLOUR
        for t in a.times:
            x = axis.x(t)
            out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{bottom}" '
                       f'stroke="{colour}" stroke-opacity="0.55"><title>{escape(a.kind)} '
                       f"#{a.number}: cited event at {t:.3f} s</title></line>")
    return out


def quantile(sorted_values: Sequence[float], q: float) -> float:
    """The q-quantile of already sorted values (nearest rank)."""
    rank = max(math.ceil(q * len(sorted_values)) - 1, 0)
    return sorted_values[rank]


def latency_quantiles(operations: Sequence[Operation], bucket_s: float,
                      ) -> tuple[list[Series], int]:
    """p50/p95/p99 of completed (ok) operations' latency in ms per time bucket, and how
    many of them took zero time (the sim's clock can complete an operation instantly;
    a log axis has no place for 0, and lifting it to a floor would draw a false row)."""
    buckets: dict[int, list[float]] = {}
    for op in operations:
        if op.kind == "ok":
            buckets.setdefault(int(op.end / bucket_s), []).append((op.end - op.start) * 1000)
    zero = sum(1 for values in buckets.values() for v in values if v <= 0)
    series = []
    for name, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
        points = []
        for b in sorted(buckets):
            values = sorted(buckets[b])
            points.append(((b + 0.5) * bucket_s, quantile(values, q)))
        series.append(Series(name, points, QUANTILE_COLOURS[name]))
    return series, zero


def throughput(operations: Sequence[Operation], end_s: float, bucket_s: float) -> list[Series]:
    """Completions per second by outcome, per time bucket."""
    count = int(end_s / bucket_s) + 1
    counts = {kind: [0] * count for kind in OUTCOME_COLOURS}
    for op in operations:
        counts[op.kind][min(int(op.end / bucket_s), count - 1)] += 1
    return [Series(kind, [((i + 0.5) * bucket_s, c / bucket_s) for i, c in enumerate(cs)],
                   OUTCOME_COLOURS[kind]) for kind, cs in counts.items()]


def process_timeline(operations: Sequence[Operation], axis: Axis,
                     marks: Sequence[Phase], anomalies: Sequence[AnomalyMark]) -> str:
    """Each process a row, each operation a bar from invocation to completion."""
    processes = sorted({op.process for op in operations},
                       key=lambda p: (not p.isdigit(), int(p) if p.isdigit() else 0, p))
    row_h, top = 16, 40
    bottom = top + row_h * max(len(processes), 1)
    out = _svg_open("operations per process (invocation to completion)", bottom + 22,
                    "processes")
    out += _phase_labels(axis, marks, 32)
    out += _evidence_lines(anomalies, axis, top, bottom)
    for i, p in enumerate(processes):
        out.append(f'<text x="{LEFT - 6}" y="{top + i * row_h + 12}" class="lane" '
                   f'text-anchor="end">process {escape(p)}</text>')
    shown = operations if len(operations) <= OPS_LIMIT else [
        op for op in operations if op.kind != "ok"][:OPS_LIMIT]
    row = {p: i for i, p in enumerate(processes)}
    for op in shown:
        y = top + row[op.process] * row_h + 2
        x0, x1 = axis.x(op.start), axis.x(op.end)
        out.append(f'<rect x="{x0:.1f}" y="{y}" width="{max(x1 - x0, 1.0):.1f}" '
                   f'height="{row_h - 4}" fill="{OUTCOME_COLOURS.get(op.kind, "#999")}">'
                   f"<title>{escape(op.f)} {op.kind}: {op.start:.3f}–{op.end:.3f} s "
                   f"(history index {op.index})</title></rect>")
    out += _time_axis(axis, top, bottom, marks)
    out.append("</svg>")
    note = ("" if len(shown) == len(operations) else
            f"<p class='muted'>{len(operations)} operations: only the {len(shown)} that "
            "did not end ok are drawn.</p>")
    return "".join(out) + keys_html(OUTCOME_COLOURS.items()) + note


def charts_section(run_dir: Path, results: dict[str, Any], windows_of: Any) -> str:
    """The report's "Over time" section. `windows_of(nemesis_records, end_s)` pairs the
    nemesis events into fault windows."""
    verdict = results["verdict"]
    timeline = read_timeline(run_dir / "history.jsonl", cited_indices(verdict))
    schedule = _read_json(run_dir / "nemesis.json")
    marks = phases(timeline, schedule)
    end = max(timeline.end_s, 1e-3)
    axis = Axis(end)
    bucket = max(0.5, end / 120)
    windows = windows_of(timeline.nemesis, timeline.end_s)
    nodes = list((schedule or {}).get("nodes") or [])
    anomalies = anomaly_marks(verdict, timeline.index_times)
    items = sum(len(v) for v in verdict.get("anomalies", {}).values())
    parts = ["<h2 id='over-time'>Over time</h2><p class='muted'>Every chart shares one "
             "time axis; dashed lines mark the phases (workload and faults from the first "
             "operation, the final heal, the final reads after recovery). Hover for details.</p>"]
    parts.append(fault_lanes(windows, nodes, axis, marks))
    parts.append(anomaly_lanes(anomalies, axis, marks, items - len(anomalies)))
    parts.append(_value_chart(f"throughput (completions/s, {bucket:.1f} s buckets)",
                              "throughput", throughput(timeline.operations, end, bucket),
                              axis, marks, "ops/s"))
    parts.append(keys_html(OUTCOME_COLOURS.items(), line=True))
    quantiles, zero = latency_quantiles(timeline.operations, bucket)
    parts.append(_value_chart(f"latency of operations that completed ok ({bucket:.1f} s "
                              "buckets)",
                              "latency", quantiles, axis, marks, "ms (log)", log_y=True,
                              gap=1.5 * bucket))
    parts.append(keys_html(QUANTILE_COLOURS.items(), line=True))
    if zero:
        parts.append(f"<p class='muted'>{zero} operations completed in 0 ms of simulated "
                     "time; a quantile of 0 has no place on the log axis and is left out."
                     "</p>")
    parts.append(process_timeline(timeline.operations, axis, marks, anomalies))
    parts.append("<h2>Offsets per log</h2>")
    parts.append(keys_html([("acknowledged to a producer", ACKED_COLOUR),
                            ("read by a poll", READ_COLOUR),
                            ("event cited by an anomaly on this log", ANOMALY_COLOUR)]))
    for log in sorted(set(timeline.sends) | set(timeline.polls)):
        series = [Series("read", thin(timeline.polls.get(log, []), POINTS_LIMIT), READ_COLOUR,
                         dots=True),
                  Series("acked", thin(timeline.sends.get(log, []), POINTS_LIMIT),
                         ACKED_COLOUR, dots=True)]
        parts.append(_value_chart(f"log {log}", "offsets", series, axis, marks, "offset",
                                  height=180, anomalies=[a for a in anomalies if log in a.logs]))
    return "".join(parts)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None
