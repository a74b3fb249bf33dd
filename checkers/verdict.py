"""One streaming pass over a history, both checkers, and the verdict of DESIGN.md section 5.

Verdict rules: `valid` is false if any anomaly type outside the allowed set was found;
otherwise "unknown" if the only ones outside it are uncertainties (`unseen`: messages
acknowledged but never read, which a longer final read might still find); otherwise
true. An empty history is valid, with a note that nothing ran.
"""

from __future__ import annotations

import gc
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, NotRequired, TypedDict

from checkers.anomalies import ANOMALIES, UNCERTAIN, Findings, allowed_for
from checkers.exactly_once import ExactlyOnceRecorder, eos_cases
from checkers.groups import GroupChecker
from checkers.queue import QueueChecker
from checkers.recovery import RecoveryChecker
from checkers.txn_graph import (
    TxnRecorder,
    build_graph,
    cycle_cases,
    g1a_cases,
    g1b_cases,
    precommitted_own_reads,
)
from history.model import (
    Assign,
    Commit,
    Message,
    NemesisEvent,
    Poll,
    PollResult,
    Send,
    Subscribe,
    Txn,
    TxnMessage,
)
from history.reader import HistoryReader, Step


class Verdict(TypedDict):
    """The checker's answer, as written to results.json (DESIGN.md section 5)."""

    valid: bool | str  # True, False or "unknown"
    anomaly_types: list[str]  # every type found, allowed or not
    bad_anomaly_types: list[str]  # found and not allowed
    allowed: list[str]
    anomalies: dict[str, list[dict[str, Any]]]  # type -> evidence, each naming `indices`
    counts: dict[str, int]  # type -> exact count (evidence may be capped)
    stats: dict[str, Any]
    notes: list[str]
    mode: NotRequired[str]
    history: NotRequired[str]


class _Tally:
    """Counts of operations by f and outcome, and other run-wide figures."""

    __slots__ = ("by_f", "events", "first_time", "last_time", "nemesis", "processes")

    def __init__(self) -> None:
        self.by_f: dict[str, dict[str, int]] = {}
        self.events = 0
        self.nemesis: dict[str, int] = {}
        self.processes: set[int] = set()
        self.first_time: int | None = None
        self.last_time: int | None = None


class _Txns:
    """The transactional side of the pass: graph nodes and exactly-once records."""

    __slots__ = ("eos", "graph_edges", "recorder")

    def __init__(self) -> None:
        self.recorder = TxnRecorder()
        self.eos = ExactlyOnceRecorder()
        self.graph_edges = 0


def _micro_ops(value: list[Any]) -> tuple[list[TxnMessage], list[PollResult], dict[str, int]]:
    """A txn's sends, poll results and committed offsets (merged), in order."""
    sends: list[TxnMessage] = []
    polls: list[PollResult] = []
    commits: dict[str, int] = {}
    for f, payload in value:
        if f == "send":
            sends.append(payload)
        elif f == "poll":
            if payload:
                polls.append(payload)
        else:
            commits.update(payload)
    return sends, polls, commits


def _txn_invoke(event: Txn, queue: QueueChecker, groups: GroupChecker) -> None:
    if not event.value:
        return
    sends, _, commits = _micro_ops(event.value)
    if sends:
        queue.send_invoke(event.index, list[Message](sends))
    if commits:
        groups.commit_invoke(event.process, commits)


def _txn_complete(event: Txn, invoke: Txn, queue: QueueChecker, groups: GroupChecker,
                  txns: _Txns) -> None:
    """Feed a completed transaction to the queue and group checkers (as one send of all
    its messages, its polls, its commit) and record it for the graph and exactly-once."""
    txns.recorder.active = True
    value = event.value if event.value is not None else invoke.value
    sends, polls, commits = _micro_ops(value or [])
    process, index, kind = event.process, event.index, event.type
    messages = list[Message](sends)
    if messages and not (invoke.value and any(f == "send" for f, _ in invoke.value)):
        # Sends decided while the transaction ran were invoked with it.
        queue.send_invoke(invoke.index, messages)
    if kind == "ok":
        if messages:
            queue.send_ok(process, index, messages)
        for result in polls:
            queue.poll(process, index, result, True)
            if process in groups.group_of:
                groups.poll(process, result)
        if commits:
            if not groups.commit_pending(process):
                groups.commit_invoke(process, commits)
            groups.commit_ok(process, index, commits)
        txns.recorder.add(index, invoke.index, process, True, "txn", messages, polls)
    else:
        if messages:
            if kind == "fail":
                queue.send_fail(index, messages)
                txns.recorder.add_failed(index, messages)
            else:
                queue.send_info(process, index, messages)
                txns.recorder.add(index, invoke.index, process, False, "txn", messages, [])
        # Reads are always safe (as Jepsen): the records were there, whatever the outcome.
        for result in polls:
            queue.poll(process, index, result, False)
        groups.commit_done(process)
    txns.eos.txn(index, kind, sends, polls, commits)


def _run(steps: Iterable[Step], queue: QueueChecker, groups: GroupChecker, tally: _Tally,
         txns: _Txns, recovery: RecoveryChecker) -> None:
    """Feed every step to the checkers; the dispatch is inline because this loop is hot.

    It dispatches on `type(event) is ...`, which mypy cannot narrow by; the asserts under
    TYPE_CHECKING state what each branch knows and never run. A completion's invoke is
    the same kind of event (the reader pairs them by process and `f`).
    """
    by_f = tally.by_f
    processes = tally.processes
    group_of = groups.group_of
    recorder = txns.recorder
    events = 0
    event = None
    for event, invoke in steps:
        if not events:
            tally.first_time = event.time
        events += 1
        f = event.f
        kind = event.type
        cls = type(event)
        if cls is NemesisEvent:
            tally.nemesis[f] = tally.nemesis.get(f, 0) + 1
            recovery.nemesis(event.index, f, event.value)
            continue
        if TYPE_CHECKING:
            assert not isinstance(event, NemesisEvent)
        counts = by_f.get(f)
        if counts is None:
            counts = by_f[f] = {"invoke": 0, "ok": 0, "fail": 0, "info": 0}
        counts[kind] += 1
        process = event.process
        if kind == "invoke":
            processes.add(process)
            if cls is Send:
                if TYPE_CHECKING:
                    assert isinstance(event, Send)
                if event.value:
                    queue.send_invoke(event.index, event.value)
            elif cls is Commit:
                if TYPE_CHECKING:
                    assert isinstance(event, Commit)
                if event.value:
                    groups.commit_invoke(process, event.value)
            elif cls is Txn:
                if TYPE_CHECKING:
                    assert isinstance(event, Txn)
                _txn_invoke(event, queue, groups)
            continue
        if event.assignment is not None:
            # A rebalance: the process's positions were reset from committed offsets.
            queue.reset_cursors(process)
            groups.assignment(process, event.index, event.assignment, event.generation)
        if cls is Poll:
            if TYPE_CHECKING:
                assert isinstance(event, Poll)
            if event.value:
                queue.poll(process, event.index, event.value, kind == "ok")
                if process in group_of:
                    groups.poll(process, event.value)
                if recorder.active and kind == "ok":
                    recorder.add(event.index, invoke.index if invoke else event.index,
                                 process, True, "poll", [], [event.value])
        elif cls is Send:
            if TYPE_CHECKING:
                assert isinstance(event, Send) and isinstance(invoke, Send)
            messages = event.value if event.value is not None else invoke.value
            if messages:
                if kind == "ok":
                    queue.send_ok(process, event.index, messages)
                elif kind == "fail":
                    queue.send_fail(event.index, messages)
                else:
                    queue.send_info(process, event.index, messages)
                if recorder.active and kind != "fail":
                    recorder.add(event.index, invoke.index, process, kind == "ok", "send",
                                 messages, [])
        elif cls is Txn:
            if TYPE_CHECKING:
                assert isinstance(event, Txn) and isinstance(invoke, Txn)
            _txn_complete(event, invoke, queue, groups, txns)
        elif cls is Commit:
            if TYPE_CHECKING:
                assert isinstance(event, Commit)
            if kind == "ok" and event.value is not None:
                groups.commit_ok(process, event.index, event.value)
            else:
                groups.commit_done(process)
        elif cls is Assign:
            if TYPE_CHECKING:
                assert isinstance(event, Assign) and isinstance(invoke, Assign)
            assigned = event.value if event.value is not None else invoke.value
            if kind != "fail":
                queue.reset_cursors(process)
                if assigned is not None:
                    queue.keep_send_cursors(process, set(assigned.logs), None)
                    if kind == "ok":
                        groups.assign_ok(process, assigned.logs, assigned.seek)
        elif cls is Subscribe:
            if TYPE_CHECKING:
                assert isinstance(event, Subscribe) and isinstance(invoke, Subscribe)
            subscribed = event.value if event.value is not None else invoke.value
            if kind != "fail":
                queue.reset_cursors(process)
                if subscribed is not None:
                    queue.keep_send_cursors(process, None, set(subscribed.topics))
                    if kind == "ok":
                        groups.subscribe_ok(process, subscribed.group)
        if kind == "info":
            queue.retire(process)
    tally.events = events
    if event is not None:
        tally.last_time = event.time


def check_steps(
    steps: Iterable[Step],
    *,
    allowed: frozenset[str] = frozenset(),
    max_evidence: int = 100,
    pending: dict[int, Any] | None = None,
    txn_orders: Iterable[str] = (),
) -> Verdict:
    """Check a stream of `(event, invoke)` steps and return the verdict.

    `allowed` anomaly types are reported but do not make the verdict invalid;
    `max_evidence` bounds the evidence kept per type (counts stay exact).
    `txn_orders` adds `process` and/or `realtime` order to the transaction graph.
    """
    orders = _txn_orders(txn_orders)
    findings = Findings(max_evidence)
    queue = QueueChecker(findings)
    groups = GroupChecker(findings)
    tally = _Tally()
    txns = _Txns()
    # The pass allocates millions of small acyclic objects; the cyclic collector would
    # rescan them again and again for nothing.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        _run(steps, queue, groups, tally, txns, RecoveryChecker(findings))
        queue.finish()
        groups.finish(queue.logs)
        _finish_txns(txns, queue, findings, orders)
    finally:
        if gc_was_enabled:
            gc.enable()
    verdict = _verdict(findings, queue, groups, tally, allowed, pending or {})
    if txns.recorder.active:
        verdict["stats"]["txn_graph"] = {
            "nodes": len(txns.recorder.nodes), "edges": txns.graph_edges,
            "orders": sorted(orders),
        }
    return verdict


TXN_ORDERS = ("process", "realtime")


def _txn_orders(names: Iterable[str]) -> frozenset[str]:
    orders = frozenset(names)
    unknown = orders - set(TXN_ORDERS)
    if unknown:
        raise ValueError(f"unknown transaction order {sorted(unknown)[0]!r}; expected "
                         f"{' or '.join(TXN_ORDERS)}")
    return orders


def _finish_txns(txns: _Txns, queue: QueueChecker, findings: Findings,
                 orders: frozenset[str]) -> None:
    """The transactional checks, once the version orders are final."""
    eos_cases(txns.eos, queue.read_by, queue.located, findings)
    recorder = txns.recorder
    if not recorder.active:
        return
    precommitted_own_reads(recorder, findings)
    g1a_cases(recorder, queue.located, findings)
    graph = build_graph(recorder, queue.logs, queue.located,
                        process="process" in orders, realtime="realtime" in orders)
    txns.graph_edges = graph.edges
    g1b_cases(graph, findings)
    cycle_cases(graph, findings)


def check_file(
    path: str, *, mode: str = "assign", allow: Iterable[str] = (), max_evidence: int = 100,
    txn_orders: Iterable[str] = (),
) -> Verdict:
    """Read, validate and check the history at `path` in one streaming pass.

    `mode` picks the default allowed anomaly types (see `checkers.anomalies.MODE_ALLOWED`)
    and `allow` adds more. Raises `history.HistoryError` for a malformed file and
    ValueError for an unknown mode or anomaly type.
    """
    allowed = allowed_for(mode, tuple(allow))
    reader = HistoryReader(path)
    verdict = check_steps(reader, allowed=allowed, max_evidence=max_evidence,
                          pending=reader.pending, txn_orders=txn_orders)
    verdict["mode"] = mode
    return verdict


def _verdict(
    findings: Findings,
    queue: QueueChecker,
    groups: GroupChecker,
    tally: _Tally,
    allowed: frozenset[str],
    pending: dict[int, Any],
) -> Verdict:
    counts = {kind: findings.counts[kind] for kind in ANOMALIES if kind in findings.counts}
    bad = [kind for kind in counts if kind not in allowed]
    notes: list[str] = []
    if tally.events == 0:
        notes.append("empty history: nothing ran, so nothing could go wrong")
    if any(findings.counts[kind] > findings.limit for kind in counts):
        notes.append(f"evidence is limited to the first {findings.limit} instances per type; "
                     "counts are exact")
    valid: bool | str
    if any(kind not in UNCERTAIN for kind in bad):
        valid = False
    elif bad:
        valid = "unknown"
        notes.append("only uncertainty beyond the allowed set: acknowledged messages were "
                     "never read (unseen); a longer final read could settle it")
    else:
        valid = True
    ok_sends = len(queue.acked)
    logs = {
        name: {
            "high_offset": order.high_offset(),
            "high_read_offset": order.max_read,
            "occupied_offsets": len(order.values),
            "unseen": queue.unseen_by_log.get(name, 0),
        }
        for name, order in sorted(queue.logs.items())
    }
    stats = {
        "events": tally.events,
        "nemesis": dict(sorted(tally.nemesis.items())),
        "processes": len(tally.processes),
        "ops": {f: dict(by) for f, by in sorted(tally.by_f.items())},
        "pending_at_end": len(pending),
        "messages": {
            "sent": len(queue.send_invoked),
            "acknowledged": ok_sends,
            "failed": len(queue.failed),
            "indeterminate": len(queue.indeterminate),
            "read": len(queue.read_by),
        },
        "logs": logs,
        "commits_without_group": groups.commits_without_group,
        "duration_ns": (tally.last_time - tally.first_time)
        if tally.first_time is not None and tally.last_time is not None else 0,
    }
    return {
        "valid": valid,
        "anomaly_types": list(counts),
        "bad_anomaly_types": bad,
        "allowed": sorted(allowed),
        "anomalies": {kind: findings.evidence.get(kind, []) for kind in counts},
        "counts": counts,
        "stats": stats,
        "notes": notes,
    }
