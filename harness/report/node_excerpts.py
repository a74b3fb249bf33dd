"""Node-log lines around an anomaly, for the report.

The sim stamps every line of `nodes/nK.log` with simulated seconds (`[  12.345 sim s]`);
the history's times are nanoseconds from the run's origin, which `cluster.jsonl`'s
first line records. An excerpt is each relevant node's lines inside an anomaly's time
window (widened a little on both sides, capped), so the report shows what each broker
did then, embedded in the self-contained page.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

_STAMP = re.compile(r"^\[\s*([0-9.]+) sim s\]")

# Seconds of log shown before and after an anomaly's window.
MARGIN_S = 1.0


@dataclass(frozen=True)
class Excerpt:
    """Lines of one node's log inside a window, and how many were left out."""

    node: str
    lines: list[str]
    omitted: int


def run_origin_s(run_dir: Path) -> float | None:
    """The trio time of the history's zero (cluster.jsonl), None when not recorded."""
    path = run_dir / "cluster.jsonl"
    if not path.exists():
        return None
    with open(path, encoding="utf-8") as stream:
        first = stream.readline()
    try:
        return float(json.loads(first)["origin_s"])
    except (ValueError, KeyError, TypeError):
        return None


def node_excerpt(run_dir: Path, node: str, start_ns: int, end_ns: int, *,
                 limit: int = 30) -> Excerpt | None:
    """`node`'s log lines stamped within [start - MARGIN_S, end + MARGIN_S] (history
    time), at most `limit` (the first half and the last half); None without a log."""
    path = run_dir / "nodes" / f"{node}.log"
    origin = run_origin_s(run_dir)
    if origin is None or not path.exists():
        return None
    low = origin + start_ns / 1e9 - MARGIN_S
    high = origin + end_ns / 1e9 + MARGIN_S
    picked: list[str] = []
    with open(path, encoding="utf-8") as stream:
        for line in stream:
            match = _STAMP.match(line)
            if match and low <= float(match.group(1)) <= high:
                picked.append(line.rstrip("\n"))
    if len(picked) <= limit:
        return Excerpt(node, picked, 0)
    half = limit // 2
    return Excerpt(node, [*picked[:half], "…", *picked[-half:]], len(picked) - 2 * half)
