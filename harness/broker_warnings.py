"""Warnings the brokers logged during a run, gathered from their logs under `nodes/`.

A broker's log never reaches the console (the sim writes each node's records to
`nodes/nK.log`, a broker process writes into `nodes/nK/broker.log`), yet some of its
warnings are the strongest signal a run has: a follower truncating below its high
watermark means acknowledged (committed) records left that replica, which only an
unclean election or lost unflushed data can cause. `scan` counts them for results.json,
the console summary and the report.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# "<...> WARNING faultline.broker.x: message" in both the sim's and a process's format.
_WARNING = re.compile(r"\b(WARNING|ERROR|CRITICAL) ([\w.]+): (.*)$")
_BELOW_HW = re.compile(r"truncating to \d+, below the high watermark \d+")

# Lines kept per node; the counts stay exact.
EXAMPLES_PER_NODE = 5


@dataclass
class BrokerWarnings:
    """How many warnings each node's broker logged, the truncations below the high
    watermark among them, and the first lines of each node's."""

    by_node: Counter[str] = field(default_factory=Counter)
    below_high_watermark: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return sum(self.by_node.values())

    def to_json(self) -> dict[str, Any]:
        """results.json's `broker_warnings`."""
        return {
            "count": self.count,
            "by_node": dict(sorted(self.by_node.items())),
            "truncated_below_high_watermark": dict(sorted(self.below_high_watermark.items())),
            "examples": self.examples,
        }

    def console_line(self) -> str | None:
        """One line for the run's summary, None when the brokers logged no warning."""
        if not self.count:
            return None
        truncations = sum(self.below_high_watermark.values())
        text = f"brokers logged {self.count} warning{'s' if self.count != 1 else ''}"
        if truncations:
            nodes = ", ".join(sorted(self.below_high_watermark))
            text += (f", {truncations} truncating below the high watermark ({nodes}): "
                     "acknowledged records left a replica")
        return text + "; see nodes/ and the report"


def scan(nodes_dir: Path) -> BrokerWarnings:
    """The warnings in every node log under `nodes_dir` (`nK.log` or `nK/*.log`)."""
    found = BrokerWarnings()
    if not nodes_dir.is_dir():
        return found
    for path in sorted(nodes_dir.glob("*.log")) + sorted(nodes_dir.glob("*/*.log")):
        node = path.stem if path.parent == nodes_dir else path.parent.name
        with open(path, encoding="utf-8", errors="replace") as stream:
            for line in stream:
                match = _WARNING.search(line)
                if match is None:
                    continue
                found.by_node[node] += 1
                if _BELOW_HW.search(match.group(3)):
                    found.below_high_watermark[node] += 1
                kept = found.examples.setdefault(node, [])
                if len(kept) < EXAMPLES_PER_NODE:
                    kept.append(line.rstrip("\n"))
    return found
