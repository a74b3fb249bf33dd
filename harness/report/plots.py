"""Inline SVG charts for the report: time series with fault windows shaded.

Plain SVG strings, no plotting library: a chart is a box with axes, tick labels, shaded
fault windows behind, and series drawn as polylines or dots. Times are seconds from the
run's start.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

# One colour per fault kind, pale enough that series drawn over it stay legible.
FAULT_COLOURS = {
    "partition": "#f6c9c9",
    "link": "#f9e1b5",
    "down": "#d6c8ef",
    "paused": "#c8dcef",
    "clock": "#d3ecd0",
    "reset": "#999999",
}


@dataclass(frozen=True)
class Window:
    """A fault in force from `start` to `end` seconds (equal for an instant fault)."""

    start: float
    end: float
    kind: str
    label: str
    node: str = ""  # the node it struck; "" for a network-wide fault


@dataclass(frozen=True)
class Series:
    """A named series of (x, y) points drawn as a line or as dots."""

    name: str
    points: Sequence[tuple[float, float]]
    colour: str
    dots: bool = False


def _nice_ticks(low: float, high: float, count: int = 6) -> list[float]:
    if high <= low:
        high = low + 1
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step) * step
    ticks = []
    value = first
    while value <= high + 1e-9:
        ticks.append(round(value, 10))
        value += step
    return ticks


def _fmt(value: float) -> str:
    if abs(value) >= 1000 or value == int(value):
        return f"{value:.0f}"
    return f"{value:.3g}"


def time_chart(
    title: str,
    series: Sequence[Series],
    windows: Sequence[Window],
    *,
    x_max: float,
    y_label: str,
    log_y: bool = False,
    width: int = 1000,
    height: int = 240,
) -> str:
    """An SVG chart of `series` over [0, x_max] seconds with `windows` shaded."""
    left, right, top, bottom = 60, 12, 26, 34
    plot_w, plot_h = width - left - right, height - top - bottom
    ys = [y for s in series for _, y in s.points]
    if log_y:
        ys = [y for y in ys if y > 0]
        lo = 10 ** math.floor(math.log10(min(ys))) if ys else 1.0
        hi = 10 ** math.ceil(math.log10(max(ys))) if ys else 10.0
        hi = max(hi, lo * 10)
    else:
        lo, hi = 0.0, max(ys, default=1.0) * 1.08 or 1.0
    x_max = max(x_max, 1e-9)

    def sx(x: float) -> float:
        return left + plot_w * min(max(x / x_max, 0.0), 1.0)

    def sy(y: float) -> float:
        if log_y:
            y = max(y, lo)
            frac = (math.log10(y) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))
        else:
            frac = (y - lo) / (hi - lo)
        return top + plot_h * (1 - min(max(frac, 0.0), 1.0))

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" class="chart" role="img" '
           f'aria-label="{escape(title)}">',
           f'<text x="{left}" y="16" class="ct">{escape(title)}</text>']
    for w in windows:
        colour = FAULT_COLOURS.get(w.kind, "#dddddd")
        x0, x1 = sx(w.start), sx(w.end)
        tip = f"<title>{escape(w.label)}: {w.start:.1f}–{w.end:.1f} s</title>"
        if x1 - x0 < 1.5:
            out.append(f'<line x1="{x0:.1f}" x2="{x0:.1f}" y1="{top}" y2="{top + plot_h}" '
                       f'stroke="{colour}" stroke-dasharray="3,2">{tip}</line>')
        else:
            out.append(f'<rect x="{x0:.1f}" y="{top}" width="{x1 - x0:.1f}" height="{plot_h}" '
                       f'fill="{colour}" fill-opacity="0.55">{tip}</rect>')
    out.append(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" '
               'stroke="#888"/>')
    for t in _nice_ticks(0, x_max, 10):
        x = sx(t)
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top + plot_h}" y2="{top + plot_h + 4}" '
                   'stroke="#888"/>')
        out.append(f'<text x="{x:.1f}" y="{top + plot_h + 16}" class="tk" '
                   f'text-anchor="middle">{_fmt(t)}</text>')
    y_ticks = ([10 ** e for e in range(round(math.log10(lo)), round(math.log10(hi)) + 1)]
               if log_y else _nice_ticks(lo, hi, 4))
    for t in y_ticks:
        y = sy(t)
        out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" '
                   'stroke="#e4e4e4"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" class="tk" '
                   f'text-anchor="end">{_fmt(t)}</text>')
    out.append(f'<text x="{left + plot_w / 2}" y="{height - 4}" class="tk" '
               'text-anchor="middle">time (s)</text>')
    out.append(f'<text x="12" y="{top + plot_h / 2}" class="tk" text-anchor="middle" '
               f'transform="rotate(-90 12 {top + plot_h / 2})">{escape(y_label)}</text>')
    for s in series:
        if not s.points:
            continue
        if s.dots:
            dots = "".join(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="1.6"/>'
                           for x, y in s.points)
            out.append(f'<g fill="{s.colour}" fill-opacity="0.7">{dots}</g>')
        else:
            path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in s.points)
            out.append(f'<polyline points="{path}" fill="none" stroke="{s.colour}" '
                       'stroke-width="1.5"/>')
    legend_x = left + plot_w
    for s in reversed(series):
        label = escape(s.name)
        legend_x -= 12 + 7 * len(s.name)
        out.append(f'<rect x="{legend_x}" y="8" width="9" height="9" fill="{s.colour}"/>'
                   f'<text x="{legend_x + 12}" y="16" class="tk">{label}</text>')
    out.append("</svg>")
    return "".join(out)


def thin(points: list[tuple[float, float]], limit: int) -> list[tuple[float, float]]:
    """At most `limit` points, every k-th kept (in order), so big runs stay small."""
    if len(points) <= limit:
        return points
    step = math.ceil(len(points) / limit)
    return points[::step]
