"""The report's section on fault-space coverage (results.json's `coverage`, read by
`harness.coverage`): per event kind how often it happened and in which fault contexts,
and the kinds never reached."""

from __future__ import annotations

from collections import defaultdict
from html import escape
from typing import Any

from harness.coverage import kind_of


def coverage_html(results: dict[str, Any]) -> str:
    """A small table, one row per event kind; empty when the run recorded no coverage."""
    data = results.get("coverage")
    if not data:
        return ""
    contexts: dict[str, list[str]] = defaultdict(list)
    for state, n in data.get("states", {}).items():
        contexts[kind_of(state)].append(f"{state.split('@', 1)[1]} ×{n}")
    rows = []
    for kind, n in data.get("kinds", {}).items():
        where = ", ".join(contexts.get(kind, [])) or "—"
        style = "" if n else " class='muted'"
        rows.append(f"<tr{style}><td>{escape(kind)}</td><td>{n}</td>"
                    f"<td>{escape(where)}</td></tr>")
    missing = data.get("kinds_missing", [])
    return (f"<h2>Coverage</h2><p>{data.get('distinct_states', 0)} distinct states reached "
            "(a state is an event kind in the fault packages in force, or healed within "
            "10 s; <i>quiet</i>: none)"
            + (f"; never reached: {escape(', '.join(missing))}" if missing else "")
            + ".</p><table><tr><th>event</th><th>count</th><th>fault contexts</th></tr>"
            + "".join(rows) + "</table>")
