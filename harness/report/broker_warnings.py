"""The report's section on the warnings brokers logged (results.json's
`broker_warnings`, gathered by `harness.broker_warnings`)."""

from __future__ import annotations

from html import escape
from typing import Any


def broker_warnings_html(results: dict[str, Any]) -> str:
    """A short section: the count per node, truncations below the high watermark called
    out, and each node's first warning lines; empty when there were none."""
    data = results.get("broker_warnings") or {}
    if not data.get("count"):
        return ""
    below = data.get("truncated_below_high_watermark") or {}
    parts = [f"<h2>Broker warnings</h2><p>{data['count']} warning(s) in the brokers' logs "
             "(nodes/): " + escape(", ".join(f"{node} {n}" for node, n
                                            in data.get("by_node", {}).items())) + ".</p>"]
    if below:
        parts.append("<p class='invalid'>Truncated below the high watermark (acknowledged "
                     "records left a replica: an unclean election or lost unflushed data): "
                     + escape(", ".join(f"{node} {n}x" for node, n in below.items()))
                     + ".</p>")
    for node, lines in data.get("examples", {}).items():
        text = escape("\n".join(lines))
        parts.append(f"<details><summary>{escape(node)}: first {len(lines)}</summary>"
                     f"<pre>{text}</pre></details>")
    return "".join(parts)
