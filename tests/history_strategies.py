"""Hypothesis strategies: valid concurrent histories, and mutations injecting one anomaly.

`histories()` draws a configuration and a seed and runs
`history.synthetic.CorrectLogModel`: several processes with overlapping operations,
failed and indeterminate sends, crashes, manual assigns, a consumer group with
rebalances and commits, and final reads. The checkers must call every one valid.

Each mutation takes such a history and returns `Injected`: the mutated events, the
anomaly type it must produce, and the indices (in the mutated history) that the
evidence for it must name. Mutations either edit existing operations in place or add
the operations of fresh processes, interleaved at drawn positions with the rest.
"""

from __future__ import annotations

import copy
import io
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hypothesis import assume
from hypothesis import strategies as st

from history.reader import HistoryReader
from history.synthetic import ModelConfig, generate_history
from history.synthetic_txn import TransformConfig, TransformModel, TxnLogModel, TxnModelConfig
from history.writer import HistoryWriter

Event = dict[str, Any]


@st.composite
def histories(draw: st.DrawFn, max_steps: int = 150, final_reads: bool = True) -> list[Event]:
    """A valid history from the correct-log model, with drawn shape and schedule."""
    slots = draw(st.integers(1, 5))
    config = ModelConfig(
        topics=draw(st.integers(1, 2)),
        partitions=draw(st.integers(1, 3)),
        slots=slots,
        members=draw(st.integers(0, slots)),
        keys=draw(st.integers(1, 6)),
        max_batch=draw(st.integers(1, 4)),
        max_poll=draw(st.integers(1, 5)),
        assign_logs=draw(st.integers(1, 4)),
        p_fail=draw(st.sampled_from([0.0, 0.05, 0.2])),
        p_info=draw(st.sampled_from([0.0, 0.03, 0.15])),
        p_crash_op=draw(st.sampled_from([0.0, 0.02, 0.1])),
        p_nemesis=0.02,
        final_reads=final_reads,
        final_poll=draw(st.integers(1, 20)),
    )
    # A drawn seed rather than st.randoms(): thousands of scheduling choices per history
    # drawn one by one through hypothesis cost ten times more; shrinking still works on
    # the shape and the number of steps.
    seed = draw(st.integers(0, 2**32 - 1))
    return generate_history(random.Random(seed), draw(st.integers(0, max_steps)), config)


def steps_of(events: list[Event]) -> HistoryReader:
    """Write `events` as JSON Lines in memory and return a reader over them."""
    buffer = io.BytesIO()
    writer = HistoryWriter(buffer)
    for event in events:
        writer.write_event(event)
    buffer.seek(0)
    return HistoryReader("<memory>", stream=buffer)


@dataclass
class Injected:
    """A mutated history, the anomaly it must show, and indices its evidence must name."""

    events: list[Event]
    kind: str
    indices: list[int]


# -- facts about a generated history ---------------------------------------------------


class Facts:
    """What mutations need to know of a history: log contents, ids in use, acks."""

    def __init__(self, events: list[Event]) -> None:
        self.events = events
        # log -> offset -> (key, value), from every ok poll (final reads cover all).
        self.contents: dict[str, dict[int, tuple[str | None, int]]] = {}
        self.next_process = 0
        self.next_value = 0
        # value -> index of its ok send completion (and the message there).
        self.acked: dict[int, int] = {}
        self.claims: list[Event] = []
        self.logs: set[str] = set()
        # (log, offset) -> how many completions (ok sends, polls) reported it.
        self.observations: dict[tuple[str, int], int] = {}
        for event in events:
            if isinstance(event["process"], int):
                self.next_process = max(self.next_process, event["process"] + 1)
            if event["f"] == "send" and event["value"]:
                for m in event["value"]:
                    self.next_value = max(self.next_value, m["value"] + 1)
                    if event["type"] == "ok":
                        self.acked[m["value"]] = event["index"]
                        place = (f"{m['topic']}/{m['partition']}", m["offset"])
                        self.observations[place] = self.observations.get(place, 0) + 1
            if event["f"] == "poll" and event["type"] == "ok" and event["value"]:
                for log, records in event["value"].items():
                    self.logs.add(log)
                    for o, k, v in records:
                        self.contents.setdefault(log, {})[o] = (k, v)
                        self.observations[(log, o)] = self.observations.get((log, o), 0) + 1
            if event.get("assignment") and event.get("generation") is not None:
                self.claims.append(event)

    def high(self, log: str) -> int:
        """The highest offset of `log` in the history, -1 if empty."""
        return max(self.contents.get(log, {}), default=-1)

    def new_process(self) -> int:
        """A process id not used in the history."""
        self.next_process += 1
        return self.next_process - 1

    def new_value(self) -> int:
        """A message value not used in the history."""
        self.next_value += 1
        return self.next_value - 1


def _op(process: int, f: str, value: Any, result: Any = None, kind: str = "ok",
        **extra: Any) -> list[Event]:
    return [
        {"process": process, "type": "invoke", "f": f, "value": value, "time": 0},
        {"process": process, "type": kind, "f": f, "value": value if result is None else result,
         "time": 0, **extra},
    ]


def _send(process: int, log: str, messages: list[tuple[str | None, int, int | None]],
          kind: str = "ok") -> list[Event]:
    topic, partition = log.rsplit("/", 1)
    sent = [{"topic": topic, "key": k, "value": v} for k, v, _ in messages]
    acked = [{"topic": topic, "key": k, "value": v, "partition": int(partition), "offset": o}
             for k, v, o in messages]
    return _op(process, "send", sent, sent if kind == "fail" else acked, kind)


def _assign(process: int, logs: list[str]) -> list[Event]:
    return _op(process, "assign", {"logs": logs, "seek": "beginning"})


def _poll(process: int, result: dict[str, list[list[Any]]], **extra: Any) -> list[Event]:
    return _op(process, "poll", None, result, **extra)


def _interleave(draw: st.DrawFn, events: list[Event], new: list[Event]) -> list[Event]:
    """Insert `new` (in its order) at drawn positions of `events`; renumber all."""
    positions = sorted(draw(st.lists(st.integers(0, len(events)), min_size=len(new),
                                     max_size=len(new))))
    out: list[Event] = []
    cursor = 0
    for event, position in zip(new, positions, strict=True):
        out.extend(events[cursor:position])
        cursor = position
        out.append(event)
    out.extend(events[cursor:])
    return _renumber(out)


def _renumber(events: list[Event]) -> list[Event]:
    for i, event in enumerate(events):
        event["index"] = i
        event["time"] = i * 1000
    return events


def _copy(events: list[Event]) -> list[Event]:
    """A deep copy, so mutating events and their values leaves the drawn history intact."""
    return copy.deepcopy(events)


def _pick_log(draw: st.DrawFn, facts: Facts, min_records: int = 0) -> str:
    logs = sorted(log for log in facts.logs if len(facts.contents.get(log, {})) >= min_records)
    assume(logs)
    return draw(st.sampled_from(logs))


# -- mutations, one per anomaly type ---------------------------------------------------


@st.composite
def inconsistent_offsets(draw: st.DrawFn, events: list[Event]) -> Injected:
    """Change the value of one record an ok poll returned, at an offset seen elsewhere too."""
    events = _copy(events)
    facts = Facts(events)
    records = [(e, r) for e in events if e["f"] == "poll" and e["type"] == "ok" and e["value"]
               for log, rs in sorted(e["value"].items()) for r in rs
               if facts.observations[(log, r[0])] >= 2]
    assume(records)
    poll, record = draw(st.sampled_from(records))
    record[2] = facts.new_value()
    return Injected(events, "inconsistent-offsets", [poll["index"]])


@st.composite
def duplicate(draw: st.DrawFn, events: list[Event]) -> Injected:
    """A fresh consumer reads an existing value again at a new offset."""
    facts = Facts(events)
    log = _pick_log(draw, facts, min_records=1)
    offset = draw(st.sampled_from(sorted(facts.contents[log])))
    key, value = facts.contents[log][offset]
    q = facts.new_process()
    new = _assign(q, [log]) + _poll(q, {log: [[facts.high(log) + 1, key, value]]})
    events = _interleave(draw, _copy(events), new)
    return Injected(events, "duplicate", [new[-1]["index"]])


@st.composite
def lost_write(draw: st.DrawFn, events: list[Event]) -> Injected:
    """Drop every read of one acknowledged value below its log's highest read."""
    events = _copy(events)
    facts = Facts(events)
    below = [(log, o, v) for log, content in facts.contents.items()
             for o, (_, v) in content.items() if o < facts.high(log) and v in facts.acked]
    assume(below)
    log, _, value = draw(st.sampled_from(sorted(below)))
    for event in events:
        if event["f"] == "poll" and event["type"] == "ok" and event["value"]:
            records = event["value"].get(log)
            if records:
                kept = [r for r in records if r[2] != value]
                if kept:
                    event["value"][log] = kept
                else:
                    del event["value"][log]
    return Injected(events, "lost-write", [facts.acked[value]])


@st.composite
def unseen(draw: st.DrawFn, events: list[Event]) -> Injected:
    """A fresh producer's acknowledged send that nobody reads."""
    facts = Facts(events)
    log = _pick_log(draw, facts)
    new = _send(facts.new_process(), log, [(None, facts.new_value(), facts.high(log) + 1)])
    events = _interleave(draw, _copy(events), new)
    return Injected(events, "unseen", [new[-1]["index"]])


@st.composite
def aborted_read(draw: st.DrawFn, events: list[Event]) -> Injected:
    """Turn an acknowledged send some poll read into a definite failure."""
    events = _copy(events)
    facts = Facts(events)
    read = {v for content in facts.contents.values() for _, v in content.values()}
    sends = [e for e in events if e["f"] == "send" and e["type"] == "ok"
             and all(m["value"] in read for m in e["value"])]
    assume(sends)
    send = draw(st.sampled_from(sends))
    send["type"] = "fail"
    send["error"] = "injected"
    send["value"] = [{"topic": m["topic"], "key": m["key"], "value": m["value"]}
                     for m in send["value"]]
    return Injected(events, "aborted-read", [send["index"]])


@st.composite
def precommitted_read(draw: st.DrawFn, events: list[Event]) -> Injected:
    """A fresh consumer reads a value before a fresh producer sends it."""
    facts = Facts(events)
    log = _pick_log(draw, facts)
    value = facts.new_value()
    offset = facts.high(log) + 1
    q = facts.new_process()
    reads = _assign(q, [log]) + _poll(q, {log: [[offset, None, value]]})
    new = reads + _send(facts.new_process(), log, [(None, value, offset)])
    events = _interleave(draw, _copy(events), new)
    return Injected(events, "precommitted-read", [reads[-1]["index"]])


def _three(facts: Facts, log: str) -> tuple[list[Event], list[list[Any]]]:
    """A fresh producer appends three values to `log`; returns its events and records."""
    base = facts.high(log) + 1
    values = [facts.new_value() for _ in range(3)]
    send = _send(facts.new_process(), log, [(None, v, base + i) for i, v in enumerate(values)])
    return send, [[base + i, None, v] for i, v in enumerate(values)]


@st.composite
def poll_skip(draw: st.DrawFn, events: list[Event]) -> Injected:
    """A fresh consumer's second poll starts past a value after its first poll's last."""
    facts = Facts(events)
    log = _pick_log(draw, facts)
    send, records = _three(facts, log)
    q, r = facts.new_process(), facts.new_process()
    second = _poll(q, {log: [records[2]]})
    new = (send + _assign(q, [log]) + _poll(q, {log: [records[0]]}) + second
           + _assign(r, [log]) + _poll(r, {log: records}))
    events = _interleave(draw, _copy(events), new)
    return Injected(events, "poll-skip", [second[-1]["index"]])


@st.composite
def nonmonotonic_poll(draw: st.DrawFn, events: list[Event]) -> Injected:
    """A fresh consumer's second poll starts at its first poll's last record again."""
    facts = Facts(events)
    log = _pick_log(draw, facts)
    send, records = _three(facts, log)
    q = facts.new_process()
    second = _poll(q, {log: records[1:]})
    new = send + _assign(q, [log]) + _poll(q, {log: records[:2]}) + second
    events = _interleave(draw, _copy(events), new)
    return Injected(events, "nonmonotonic-poll", [second[-1]["index"]])


@st.composite
def int_poll_skip(draw: st.DrawFn, events: list[Event]) -> Injected:
    """A fresh consumer's one poll jumps over a value between two records."""
    facts = Facts(events)
    log = _pick_log(draw, facts)
    send, records = _three(facts, log)
    q, r = facts.new_process(), facts.new_process()
    skipping = _poll(q, {log: [records[0], records[2]]})
    new = send + _assign(q, [log]) + skipping + _assign(r, [log]) + _poll(r, {log: records})
    events = _interleave(draw, _copy(events), new)
    return Injected(events, "int-poll-skip", [skipping[-1]["index"]])


@st.composite
def int_nonmonotonic_poll(draw: st.DrawFn, events: list[Event]) -> Injected:
    """Reverse the records of one log in one existing ok poll."""
    events = _copy(events)
    candidates = [(e, log) for e in events if e["f"] == "poll" and e["type"] == "ok"
                  and e["value"] for log, records in sorted(e["value"].items())
                  if len(records) >= 2]
    assume(candidates)
    poll, log = draw(st.sampled_from(candidates))
    poll["value"][log].reverse()
    return Injected(events, "int-nonmonotonic-poll", [poll["index"]])


@st.composite
def nonmonotonic_send(draw: st.DrawFn, events: list[Event]) -> Injected:
    """A fresh producer's second send to a log lands before its first."""
    facts = Facts(events)
    log = _pick_log(draw, facts)
    base = facts.high(log) + 1
    a, b = facts.new_value(), facts.new_value()
    p, r = facts.new_process(), facts.new_process()
    second = _send(p, log, [(None, b, base)])
    new = (_send(p, log, [(None, a, base + 1)]) + second + _assign(r, [log])
           + _poll(r, {log: [[base, None, b], [base + 1, None, a]]}))
    events = _interleave(draw, _copy(events), new)
    return Injected(events, "nonmonotonic-send", [second[-1]["index"]])


@st.composite
def int_send_skip(draw: st.DrawFn, events: list[Event]) -> Injected:
    """Another producer's message lands between two messages of one send."""
    facts = Facts(events)
    log = _pick_log(draw, facts)
    base = facts.high(log) + 1
    a, b, c = facts.new_value(), facts.new_value(), facts.new_value()
    p, p2, r = facts.new_process(), facts.new_process(), facts.new_process()
    split = _send(p, log, [(None, a, base), (None, c, base + 2)])
    new = (split + _send(p2, log, [(None, b, base + 1)]) + _assign(r, [log])
           + _poll(r, {log: [[base, None, a], [base + 1, None, b], [base + 2, None, c]]}))
    events = _interleave(draw, _copy(events), new)
    return Injected(events, "int-send-skip", [split[-1]["index"]])


@st.composite
def int_nonmonotonic_send(draw: st.DrawFn, events: list[Event]) -> Injected:
    """One send's second message lands before its first."""
    facts = Facts(events)
    log = _pick_log(draw, facts)
    base = facts.high(log) + 1
    a, b = facts.new_value(), facts.new_value()
    p, r = facts.new_process(), facts.new_process()
    backward = _send(p, log, [(None, a, base + 1), (None, b, base)])
    new = backward + _assign(r, [log]) + _poll(r, {log: [[base, None, b], [base + 1, None, a]]})
    events = _interleave(draw, _copy(events), new)
    return Injected(events, "int-nonmonotonic-send", [backward[-1]["index"]])


@st.composite
def key_order(draw: st.DrawFn, events: list[Event]) -> Injected:
    """A fresh producer's later send of a key lands below its earlier send of it."""
    facts = Facts(events)
    log = _pick_log(draw, facts)
    base = facts.high(log) + 1
    a, b = facts.new_value(), facts.new_value()
    p, r = facts.new_process(), facts.new_process()
    key = "injected-key"
    later = _send(p, log, [(key, b, base)])
    new = (_send(p, log, [(key, a, base + 1)]) + later + _assign(r, [log])
           + _poll(r, {log: [[base, key, b], [base + 1, key, a]]}))
    events = _interleave(draw, _copy(events), new)
    return Injected(events, "key-order", [later[-1]["index"]])


@st.composite
def key_split(draw: st.DrawFn, events: list[Event]) -> Injected:
    """A fresh producer sends a key already seen in one partition to another."""
    facts = Facts(events)
    keyed = [(log, k) for log, content in facts.contents.items()
             for k, _ in content.values() if k is not None]
    assume(keyed)
    log, key = draw(st.sampled_from(sorted(set(keyed))))
    topic, partition = log.rsplit("/", 1)
    other = f"{topic}/{int(partition) + 1}"
    offset = facts.high(other) + 1
    value = facts.new_value()
    p, r = facts.new_process(), facts.new_process()
    send = _send(p, other, [(key, value, offset)])
    new = send + _assign(r, [other]) + _poll(r, {other: [[offset, key, value]]})
    events = _interleave(draw, _copy(events), new)
    return Injected(events, "key-split", [send[-1]["index"]])


@st.composite
def split_assignment(draw: st.DrawFn, events: list[Event]) -> Injected:
    """A second member of the group claims a log another member owns in that generation."""
    facts = Facts(events)
    assume(facts.claims)
    claim = draw(st.sampled_from(facts.claims))
    group = next(e["value"]["group"] for e in events if e["f"] == "subscribe")
    q = facts.new_process()
    rival = _poll(q, {}, assignment=[draw(st.sampled_from(claim["assignment"]))],
                  generation=claim["generation"])
    new = _op(q, "subscribe", {"topics": ["t0"], "group": group}) + rival
    events = _interleave(draw, _copy(events), new)
    return Injected(events, "split-assignment", [rival[-1]["index"]])


@st.composite
def commit_regression(draw: st.DrawFn, events: list[Event]) -> Injected:
    """A fresh group's member commits a log lower than its previous completed commit."""
    facts = Facts(events)
    log = _pick_log(draw, facts, min_records=2)
    q = facts.new_process()
    offsets = sorted(facts.contents[log])[:2]
    records = [[o, *facts.contents[log][o]] for o in offsets]
    lower = _op(q, "commit", {log: offsets[0] + 1})
    new = (_op(q, "subscribe", {"topics": [log.rsplit("/", 1)[0]], "group": "injected"})
           + _poll(q, {log: records}, assignment=[log], generation=1)
           + _op(q, "commit", {log: offsets[1] + 1}) + lower)
    assume(offsets[0] + 1 < offsets[1] + 1)
    events = _interleave(draw, _copy(events), new)
    return Injected(events, "commit-regression", [lower[-1]["index"]])


@st.composite
def lost_by_commit(draw: st.DrawFn, events: list[Event]) -> Injected:
    """A fresh group's member commits past records it never polled."""
    facts = Facts(events)
    log = _pick_log(draw, facts, min_records=1)
    q = facts.new_process()
    commit = _op(q, "commit", {log: facts.high(log) + 1})
    new = (_op(q, "subscribe", {"topics": [log.rsplit("/", 1)[0]], "group": "injected"})
           + _poll(q, {}, assignment=[log], generation=1) + commit)
    events = _interleave(draw, _copy(events), new)
    return Injected(events, "lost-by-commit", [commit[-1]["index"]])


MUTATIONS: dict[str, Callable[[list[Event]], st.SearchStrategy[Injected]]] = {
    "inconsistent-offsets": inconsistent_offsets,
    "duplicate": duplicate,
    "lost-write": lost_write,
    "unseen": unseen,
    "aborted-read": aborted_read,
    "precommitted-read": precommitted_read,
    "poll-skip": poll_skip,
    "nonmonotonic-poll": nonmonotonic_poll,
    "int-poll-skip": int_poll_skip,
    "int-nonmonotonic-poll": int_nonmonotonic_poll,
    "nonmonotonic-send": nonmonotonic_send,
    "int-send-skip": int_send_skip,
    "int-nonmonotonic-send": int_nonmonotonic_send,
    "key-order": key_order,
    "key-split": key_split,
    "split-assignment": split_assignment,
    "commit-regression": commit_regression,
    "lost-by-commit": lost_by_commit,
}


# -- transactional histories -----------------------------------------------------------


@st.composite
def txn_model_configs(draw: st.DrawFn, skew: bool = False) -> TxnModelConfig:
    """A drawn shape of a transactional run (`history.synthetic_txn`)."""
    logs = draw(st.integers(1, 4))
    return TxnModelConfig(
        logs=logs,
        slots=draw(st.integers(1, 5)),
        read_logs=draw(st.integers(1, logs)),
        keys=draw(st.integers(1, 6)),
        max_sends=draw(st.integers(1, 4)),
        p_poll=draw(st.sampled_from([0.0, 0.5, 0.9])),
        p_fail=draw(st.sampled_from([0.0, 0.1, 0.3])),
        p_info=draw(st.sampled_from([0.0, 0.05, 0.2])),
        p_skew=draw(st.sampled_from([0.1, 0.3])) if skew else 0.0,
    )


@st.composite
def txn_histories(draw: st.DrawFn, max_txns: int = 60, skew: bool = False
                  ) -> tuple[list[Event], int]:
    """A history of `txn` operations from the correct transactional model, and how many
    read skews were planted (none unless `skew`)."""
    config = draw(txn_model_configs(skew=skew))
    model = TxnLogModel(random.Random(draw(st.integers(0, 2**32 - 1))), config)
    events = list(model.events(draw(st.integers(1, max_txns))))
    return events, model.planted


@st.composite
def transform_histories(draw: st.DrawFn, max_txns: int = 60, weakness: str | None = None
                        ) -> tuple[list[Event], int]:
    """A consume-transform-produce history (`history.synthetic_txn.TransformModel`) and
    how many findings its planted weakness must give: none without one; for
    `lost-commit`, the inputs transformed twice; for `drop-output`, the outputs dropped."""
    config = TransformConfig(
        partitions=draw(st.integers(1, 3)),
        producers=draw(st.integers(1, 3)),
        transformers=draw(st.integers(1, 3)),
        keys=draw(st.integers(1, 5)),
        max_sends=draw(st.integers(1, 4)),
        p_fail=draw(st.sampled_from([0.0, 0.1, 0.3])),
        p_info=draw(st.sampled_from([0.0, 0.05, 0.2])),
        p_lost_commit=0.3 if weakness == "lost-commit" else 0.0,
        p_drop_output=0.3 if weakness == "drop-output" else 0.0,
    )
    model = TransformModel(random.Random(draw(st.integers(0, 2**32 - 1))), config)
    events = list(model.events(draw(st.integers(1, max_txns))))
    if weakness == "lost-commit":
        return events, len(model.duplicated)
    return events, model.planted
