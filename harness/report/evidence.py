"""The anomaly evidence of a run report, written for a person.

The checker records each anomaly as a dict naming history indices, logs, offsets and
values (`checkers/queue.py`, `checkers/groups.py`). Here each becomes a sentence with
times in seconds since the run started, a small table of the history events it cites
showing only the offsets and values that matter, and the raw JSON one click away.
Items that differ only in their log (one pair of polls owning six logs) or that repeat
one loss along a log (166 offsets of one log never read) are grouped into one entry.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from html import escape
from typing import Any

from checkers.anomalies import ANOMALIES

GROUPS_SHOWN = 8  # evidence groups rendered per anomaly type
ITEMS_CITED = 3  # items of one group whose events the table cites
EVENTS_SHOWN = 12  # history events in one group's table
RECORDS_SHOWN = 6  # records or messages of one event named in its table cell

# Kinds whose items along one log are grouped into one entry (a run of lost offsets);
# the rest are grouped only when they differ in nothing but their log.
_ALONG_A_LOG = frozenset({"lost-write", "unseen", "inconsistent-offsets"})


@dataclass
class Group:
    """Evidence items told as one: same anomaly, differing only in log (or offset)."""

    kind: str
    items: list[dict[str, Any]] = field(default_factory=list)

    @property
    def logs(self) -> list[str]:
        """The distinct logs of the items, in order of first appearance."""
        seen: dict[str, None] = {}
        for item in self.items:
            for log in item.get("logs") or [item.get("log")]:
                if log is not None:
                    seen.setdefault(str(log), None)
        return list(seen)

    @property
    def cited(self) -> list[int]:
        """The history indices whose events the group's table shows, in order."""
        indices: set[int] = set()
        for item in self.items[:ITEMS_CITED]:
            indices.update(item.get("indices") or [])
        return sorted(indices)[:EVENTS_SHOWN]


def group_items(kind: str, items: Iterable[dict[str, Any]]) -> list[Group]:
    """`items` of anomaly `kind` grouped, in order of each group's first item."""
    groups: dict[str, Group] = {}
    for item in items:
        if kind in _ALONG_A_LOG:
            key = json.dumps([item.get("log"), item.get("max_read_offset")])
        else:
            key = json.dumps({k: v for k, v in item.items() if k not in ("log", "logs")},
                             sort_keys=True, default=str)
        groups.setdefault(key, Group(kind)).items.append(item)
    return list(groups.values())


def evidence_indices(verdict: Mapping[str, Any]) -> set[int]:
    """Every history index the rendered evidence cites."""
    wanted: set[int] = set()
    for kind, items in verdict.get("anomalies", {}).items():
        for group in group_items(kind, items)[:GROUPS_SHOWN]:
            wanted.update(group.cited)
    return wanted


# -- sentences ----------------------------------------------------------------------


def _s(seconds: float | None) -> str:
    return "?" if seconds is None else f"{seconds:.3f} s"


def _ranges(numbers: Iterable[int], limit: int = 8) -> str:
    """`[1, 2, 3, 7]` as "1–3, 7" (the first `limit` runs, then how many more)."""
    ordered = sorted(set(numbers))
    runs: list[str] = []
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        runs.append(str(ordered[i]) if i == j else f"{ordered[i]}–{ordered[j]}")
        i = j + 1
    if len(runs) > limit:
        return ", ".join(runs[:limit]) + f" and {len(runs) - limit} more runs"
    return ", ".join(runs)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


class Events:
    """The decoded history events the evidence cites, and when each happened."""

    def __init__(self, raw: Mapping[int, bytes]) -> None:
        self.by_index: dict[int, dict[str, Any]] = {i: json.loads(line)
                                                    for i, line in raw.items()}

    def time(self, index: int | None) -> float | None:
        event = self.by_index.get(index) if index is not None else None
        return None if event is None else event["time"] / 1e9

    def at(self, index: int | None) -> str:
        return _s(self.time(index))

    def of(self, item: Mapping[str, Any], f: str | None = None,
           kind: str | None = None) -> int | None:
        """The first cited index of `item` whose event is an `f` completed as `kind`."""
        for i in item.get("indices") or []:
            event = self.by_index.get(i)
            if event and (f is None or event["f"] == f) and (kind is None or event["type"] == kind):
                return int(i)
        return None


def sentence(group: Group, events: Events) -> str:
    """The group told in one sentence, times in seconds since the run started."""
    item = group.items[0]
    n = len(group.items)
    logs = group.logs
    log = ", ".join(logs) if len(logs) <= 6 else f"{', '.join(logs[:6])} and {len(logs) - 6} more"
    offsets = item.get("offsets") or []
    values = item.get("values") or []
    indices = item.get("indices") or []
    first, last = (indices[0], indices[-1]) if indices else (None, None)
    p = item.get("process")
    kind = group.kind
    if kind == "lost-write":
        every_offset = [o for it in group.items for o in it.get("offsets") or []]
        times = [events.time((it.get("indices") or [None])[0]) for it in group.items]
        known = [t for t in times if t is not None]
        when = ("at ?" if not known else f"at {_s(known[0])}" if min(known) == max(known)
                else f"between {_s(min(known))} and {_s(max(known))}")
        reach = (f"offsets up to {item.get('max_read_offset')} of {log} were read "
                f"(by the poll at {events.at(last)})")
        if n == 1:
            return (f"Value {values[0]} was acknowledged at offset {offsets[0]} of {log} "
                    f"{when} and never read; {reach}.")
        return (f"{n} values acknowledged at offsets {_ranges(every_offset)} of {log} "
                f"{when} were never read; {reach}.")
    if kind == "unseen":
        every_offset = [o for it in group.items for o in it.get("offsets") or []]
        if n == 1:
            where = f" at offset {offsets[0]} of {log}" if offsets else ""
            return (f"Value {values[0]} was acknowledged{where} at {events.at(first)} and "
                    "never read; no read got that far.")
        return (f"{n} values acknowledged at offsets {_ranges(every_offset)} of {log} were "
                "never read; no read got that far.")
    if kind == "inconsistent-offsets":
        shown = ", ".join(str(v) for v in values)
        seen = " and ".join(events.at(i) for i in indices[:4])
        example = f"offset {offsets[0]} held values {shown} (seen at {seen})"
        if n == 1:
            return f"Offset {offsets[0]} of {log} held different values: {shown} (seen at {seen})."
        every_offset = [o for it in group.items for o in it.get("offsets") or []]
        return (f"{n} offsets of {log} ({_ranges(every_offset)}) each held two or more "
                f"different values; for example {example}.")
    if kind == "duplicate":
        places = ", ".join(f"{lg} offset {o}" for lg, o in
                           zip(item.get("logs") or [log] * len(offsets), offsets, strict=False))
        return f"Value {values[0]} was read at {places} (events at " \
               f"{', '.join(events.at(i) for i in indices[:4])})."
    if kind == "aborted-read":
        # The send may be a plain one or inside a transaction that aborted.
        fail = events.of(item, "send", "fail") or events.of(item, "txn", "fail")
        read = events.of(item, "poll") or events.of(item, "txn", "ok")
        where = f" at offset {offsets[0]} of {log}" if offsets else ""
        return (f"The send of value {values[0]} failed at {events.at(fail)}, yet the poll at "
                f"{events.at(read)} returned it{where}.")
    if kind == "precommitted-read":
        read = events.of(item, "poll") or events.of(item, "txn", "ok")
        invoked = item.get("send_invoked")
        send = ("was never invoked" if invoked is None
                else f"was invoked only at {events.at(invoked)}")
        return (f"The poll at {events.at(read)} returned value {values[0]} at offset "
                f"{offsets[0]} of {log}, but its send {send}.")
    if kind in ("poll-skip", "int-poll-skip"):
        skipped = item.get("skipped") or []
        between = max(int(item.get("delta", 1)) - 1, len(skipped))
        eg = ", ".join(f"offset {o}: value {v}" for o, v in skipped[:3])
        head = (f"Within one poll at {events.at(first)}, process {p} read offset {offsets[0]} "
                f"of {log} and then offset {offsets[1]}" if kind == "int-poll-skip" else
                f"Process {p} read offset {offsets[0]} of {log} at {events.at(first)}; its next "
                f"poll, at {events.at(last)}, started at offset {offsets[1]}")
        return f"{head}, skipping {_plural(between, 'offset')} that hold values ({eg})."
    if kind in ("nonmonotonic-poll", "int-nonmonotonic-poll"):
        if kind == "int-nonmonotonic-poll":
            return (f"Within one poll at {events.at(first)}, process {p} read offset "
                    f"{offsets[1]} of {log} after offset {offsets[0]}.")
        return (f"Process {p} read up to offset {offsets[0]} of {log} at {events.at(first)}; "
                f"its next poll, at {events.at(last)}, went back to offset {offsets[1]}.")
    if kind in ("nonmonotonic-send", "key-order"):
        key = f" (key {item.get('key')})" if kind == "key-order" else ""
        return (f"Process {p}'s send of value {values[0]}{key} landed at offset {offsets[0]} "
                f"of {log} at {events.at(first)}; its later send of value {values[1]}{key} "
                f"landed below it, at offset {offsets[1]} ({events.at(last)}).")
    if kind in ("int-send-skip", "int-nonmonotonic-send"):
        how = ("not at adjacent offsets" if kind == "int-send-skip"
               else "the later one below the earlier")
        return (f"One send by process {p}, completed at {events.at(first)}, put value "
                f"{values[0]} at offset {offsets[0]} and value {values[1]} at offset "
                f"{offsets[1]} of {log}: {how}.")
    if kind == "key-split":
        return (f"Key {item.get('key')} of topic {item.get('topic')} appeared in {log} "
                f"(events at {', '.join(events.at(i) for i in indices[:4])}).")
    if kind == "split-assignment":
        a, b = (item.get("processes") or [None, None])[:2]
        owned = f"logs {log}" if len(logs) > 1 else log
        return (f"Processes {a} and {b} of group {item.get('group')} both owned {owned} in "
                f"generation {item.get('generation')} (their polls at {events.at(first)} "
                f"and {events.at(last)}).")
    if kind == "commit-regression":
        return (f"Process {p} of group {item.get('group')} committed {log} at offset "
                f"{offsets[0]} ({events.at(first)}), then at offset {offsets[1]} "
                f"({events.at(last)}), going backward.")
    if kind == "lost-by-commit":
        commit = events.of(item, "commit")
        missed = int(item.get("missed", len(offsets)))
        eg = ", ".join(f"offset {o}: value {v}" for o, v in zip(offsets, values, strict=False))
        return (f"Group {item.get('group')} committed {log} at offset {item.get('committed')} "
                f"at {events.at(commit)}, though no member had polled "
                f"{_plural(missed, 'record')} below it ({eg}).")
    if item.get("explanation"):
        # Transactional and exactly-once evidence explains itself, step by step.
        told = "; ".join(item["explanation"])
        when = ", ".join(events.at(i) for i in indices[:4])
        return f"{told[0].upper()}{told[1:]} (events at {when})."
    return f"{ANOMALIES.get(kind, kind)} (events {', '.join(map(str, indices))})"


# -- the cited events -----------------------------------------------------------------


class Relevant:
    """What of an event matters to a group: its logs, offsets and values."""

    def __init__(self, group: Group) -> None:
        self.logs = set(group.logs)
        self.offsets: set[int] = set()
        self.values: set[Any] = set()
        for item in group.items[:ITEMS_CITED]:
            self.offsets.update(item.get("offsets") or [])
            self.values.update(item.get("values") or [])
            self.offsets.update(o for o, _v in item.get("skipped") or [])
            for name in ("max_read_offset", "committed"):
                if item.get(name) is not None:
                    self.offsets.add(item[name])

    def keeps(self, log: str, offset: Any, value: Any) -> bool:
        return value in self.values or (log in self.logs and offset in self.offsets)


def _others(logs: list[str]) -> str:
    """The messages of a send that do not matter here, by log."""
    if not logs:
        return ""
    counts: dict[str, int] = {}
    for log in logs:
        counts[log] = counts.get(log, 0) + 1
    where = ", ".join(f"{n} to {log}" if n > 1 else log for log, n in counts.items())
    return f" (and {_plural(len(logs), 'other message')}: {where})"


def event_detail(event: Mapping[str, Any], relevant: Relevant) -> str:
    """The part of `event` that matters to the evidence, in a few words."""
    f, value = event["f"], event.get("value")
    if f == "send" and isinstance(value, list):
        kept: list[str] = []
        other_logs: list[str] = []
        for m in value:
            log = f"{m.get('topic')}/{m.get('partition')}" if m.get("partition") is not None \
                else str(m.get("topic"))
            if relevant.keeps(log, m.get("offset"), m.get("value")) and len(kept) < RECORDS_SHOWN:
                at = f"@{m['offset']}" if m.get("offset") is not None else ""
                kept.append(f"{log}{at} = {m.get('value')}")
            else:
                other_logs.append(log)
        return ", ".join(kept) + _others(other_logs)
    if f == "poll" and isinstance(value, dict):
        parts = []
        for log, records in value.items():
            kept, other_offsets = [], []
            for record in records:
                o, _key, v = record[0], record[1], record[2]
                if relevant.keeps(log, o, v) and len(kept) < RECORDS_SHOWN:
                    kept.append(f"{log}@{o} = {v}")
                else:
                    other_offsets.append(o)
            if kept or log in relevant.logs:
                text = ", ".join(kept) or f"{log}: nothing relevant"
                if other_offsets:
                    text += (f" (and {_plural(len(other_offsets), 'other record')} at offsets "
                             f"{min(other_offsets)}–{max(other_offsets)})")
                parts.append(text)
        if not value:
            parts.append("no records")
        elif not parts:
            parts.append(f"records of {', '.join(value)} only")
        if event.get("assignment") is not None:
            parts.append(f"owns {', '.join(event['assignment'])} in generation "
                         f"{event.get('generation')}")
        return "; ".join(parts)
    if f == "commit" and isinstance(value, dict):
        return ", ".join(f"{log} at {o}" for log, o in value.items()
                         if log in relevant.logs) or json.dumps(value)
    if f == "txn" and isinstance(value, list):
        # A transaction: its sends, polls and commits told as those operations are.
        sends = [mop[1] for mop in value if mop[0] == "send" and isinstance(mop[1], dict)]
        parts = ["sent " + event_detail({"f": "send", "value": sends}, relevant)] if sends \
            else []
        for op, payload in value:
            if op in ("poll", "commit") and isinstance(payload, dict):
                told = event_detail({"f": op, "value": payload}, relevant)
                parts.append(("polled " if op == "poll" else "committed ") + told)
        return "; ".join(parts) or "nothing read or sent"
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _table(group: Group, events: Events) -> str:
    relevant = Relevant(group)
    rows = []
    for i in group.cited:
        event = events.by_index.get(i)
        if event is None:
            rows.append(f"<tr><td>{i}</td><td colspan='4' class='muted'>not in the history"
                        "</td></tr>")
            continue
        error = f" ({event['error']})" if event.get("error") else ""
        rows.append(f"<tr><td>{i}</td><td>{event['time'] / 1e9:.3f}</td>"
                    f"<td>{escape(str(event['process']))}</td>"
                    f"<td>{escape(event['type'])} {escape(event['f'])}{escape(error)}</td>"
                    f"<td>{escape(event_detail(event, relevant))}</td></tr>")
    return ("<table class='cited'><tr><th>event</th><th>time (s)</th><th>process</th>"
            f"<th>what</th><th>relevant part</th></tr>{''.join(rows)}</table>")


def _raw(group: Group, events: Events) -> str:
    items = "\n".join(json.dumps(item) for item in group.items[:50])
    more = f"\n… {len(group.items) - 50} more items" if len(group.items) > 50 else ""
    lines = "\n".join(json.dumps(events.by_index[i]) for i in group.cited
                      if i in events.by_index)
    return (f"<details><summary>raw JSON</summary><pre>{escape(items + more)}\n\n"
            f"{escape(lines)}</pre></details>")


def group_html(group: Group, events: Events) -> str:
    """One evidence entry: the sentence, the cited events, the raw JSON behind a click."""
    count = (f" <span class='muted'>({len(group.items)} items)</span>"
             if len(group.items) > 1 else "")
    return (f"<div class='ev'><p>{escape(sentence(group, events))}{count}</p>"
            f"{_table(group, events)}{_raw(group, events)}</div>")


def kind_html(kind: str, items: list[dict[str, Any]], events: Events) -> str:
    """The definition of anomaly `kind` and its grouped evidence."""
    groups = group_items(kind, items)
    parts = [f"<p class='def'>{escape(ANOMALIES.get(kind, ''))}</p>"]
    parts.extend(group_html(group, events) for group in groups[:GROUPS_SHOWN])
    if len(groups) > GROUPS_SHOWN:
        parts.append(f"<p class='muted'>{len(groups) - GROUPS_SHOWN} more groups of evidence "
                     "in results.json</p>")
    return "".join(parts)
