"""What the report's charts are drawn from: fault windows, named series, fault colours.

The charts themselves (plain SVG strings, no plotting library) are in
`harness.report.charts`. Times are seconds from the run's start.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

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


def thin(points: list[tuple[float, float]], limit: int) -> list[tuple[float, float]]:
    """At most `limit` points, every k-th kept (in order), so big runs stay small."""
    if len(points) <= limit:
        return points
    step = math.ceil(len(points) / limit)
    return points[::step]
