"""Transactions as an Elle-style dependency graph, and the anomalies read from it.

Nodes are committed (`ok`) and possibly committed (`info`) operations: every `txn`
operation, and (once the history has shown a `txn`) every plain `send` and `poll` as a
single-operation transaction. Failed transactions are not nodes; reading from them is
G1a. Each node is named by the history index of its completion.

Edges, inferred from the per-log version orders (offset -> value) the queue checker
builds, as Jepsen's Kafka checker describes them (`jepsen.tests.kafka`):

- ww: T1 wrote v1 to log L, T2 wrote v2 to L, and v2 is the next value after v1 in L's
  version order written by a node other than T1 (aborted and unknown writers skipped).
- wr: T2 read a value T1 wrote (T1 != T2; reading one's own write is a
  precommitted-read).
- rw: T1's highest read of L was offset o; T2 != T1 wrote the next value of L after o
  (skipping T1's own writes, and those of the transaction T1 read at o, whose later
  writes are G1b instead): T1 did not see T2's write. Only each transaction's final
  read of a log gives rw edges, as in Jepsen. Kafka consumers read a log from their
  position rather than a snapshot, so a consumer that is merely behind also yields rw
  edges; G-single and G2-item say the reads were not a consistent snapshot.
- process (optional): consecutive nodes of one process.
- realtime (optional): T1 completed before T2 was invoked (transitively reduced as
  Elle does: each node links from the frontier of completions before its invoke).

Anomalies, beyond the cycles of `checkers.cycles`:

- G1a (aborted read): a committed read (an `ok` txn or poll) returned a value written
  by a `txn` that failed (aborted). The queue checker also reports it as aborted-read.
- G1b (intermediate read): a committed transaction T2's highest read of L was value v
  at offset o, written by T1 != T2, and T1 also wrote L at an offset above o: T2 saw
  part of T1's writes to L but not T1's final write there (Jepsen's kafka notes this
  as the intermediate read of a log).
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field
from typing import Any

from checkers.anomalies import Findings
from checkers.cycles import EDGE_NAMES, PROCESS, REALTIME, RW, WR, WW, Cycle, Succ, find_cycles
from checkers.version_order import LogOrder
from history.model import Message, PollResult

# value -> (log, offset, observing index), as `QueueChecker.located` holds it.
Located = dict[int, tuple[str, int, int]]


@dataclass(slots=True)
class TxnNode:
    """What the graph needs of one committed or possibly committed operation."""

    index: int  # history index of its completion (the node's name)
    invoke: int  # history index of its invocation
    process: int
    committed: bool  # `ok` (True) or `info` (False)
    f: str
    writes: list[int] = field(default_factory=list)  # values sent, in order
    reads: list[int] = field(default_factory=list)  # every value read
    # log -> (offset, value) of the highest record read from it.
    final_reads: dict[str, tuple[int, int]] = field(default_factory=dict)


@dataclass(slots=True)
class OwnRead:
    """A transaction read a value it had itself sent, before its commit."""

    index: int
    invoke: int
    log: str
    offset: int
    value: int


class TxnRecorder:
    """Collects, during the streaming pass, the nodes of the dependency graph."""

    def __init__(self) -> None:
        self.active = False
        self.nodes: list[TxnNode] = []
        # value -> completion index of the failed `txn` that sent it.
        self.failed: dict[int, int] = {}
        self.own_reads: list[OwnRead] = []

    def add(self, index: int, invoke: int, process: int, committed: bool, f: str,
            sends: list[Message], polls: list[PollResult]) -> None:
        """Record one `ok` (committed) or `info` operation as a node."""
        node = TxnNode(index, invoke, process, committed, f, [m.value for m in sends])
        if committed and polls:
            reads = node.reads
            final = node.final_reads
            mine = set(node.writes) if f == "txn" else ()
            for result in polls:
                for log, records in result.items():
                    if not records:
                        continue
                    high = final.get(log)
                    for o, _key, v in records:
                        reads.append(v)
                        if high is None or o > high[0]:
                            high = (o, v)
                        if v in mine:
                            self.own_reads.append(OwnRead(index, invoke, log, o, v))
                    if high is not None:
                        final[log] = high
        self.nodes.append(node)

    def add_failed(self, index: int, sends: list[Message]) -> None:
        """Record the sends of a `txn` that failed (aborted)."""
        failed = self.failed
        for m in sends:
            failed[m.value] = index


@dataclass(slots=True)
class TxnGraph:
    """The dependency graph over the recorded nodes, with what explains each edge."""

    nodes: list[TxnNode]
    succ: Succ
    # value -> node id of its writer.
    writer: dict[int, int]
    located: Located
    # log -> (occupied offsets written by nodes, ascending; their writers' node ids).
    chains: dict[str, tuple[list[int], list[int]]]
    # (node id, log) -> (offset, value) of that node's highest write to the log.
    last_write: dict[tuple[int, str], tuple[int, int]]
    edges: int = 0


def _link(succ: Succ, u: int, v: int, kind: int) -> None:
    targets = succ[u]
    targets[v] = targets.get(v, 0) | kind


def build_graph(recorder: TxnRecorder, logs: dict[str, LogOrder], located: Located, *,
                process: bool = False, realtime: bool = False) -> TxnGraph:
    """Return the graph of ww, wr and rw edges (and process / realtime order if asked)
    between the recorded nodes; `logs` and `located` are the queue checker's version
    orders after its `finish`."""
    nodes = recorder.nodes
    succ: Succ = [{} for _ in nodes]
    writer: dict[int, int] = {}
    for n, node in enumerate(nodes):
        for v in node.writes:
            writer[v] = n
    # ww: consecutive node writes in each log's version order.
    chains: dict[str, tuple[list[int], list[int]]] = {}
    last_write: dict[tuple[int, str], tuple[int, int]] = {}
    for name, order in logs.items():
        values = order.values
        offsets: list[int] = []
        writers: list[int] = []
        previous = -1
        for o in order.offsets:
            w = writer.get(values[o])
            if w is None:
                continue
            offsets.append(o)
            writers.append(w)
            last_write[(w, name)] = (o, values[o])
            if previous >= 0 and previous != w:
                _link(succ, previous, w, WW)
            previous = w
        if offsets:
            chains[name] = (offsets, writers)
    for n, node in enumerate(nodes):
        # wr: every value read, from its writer.
        for v in node.reads:
            w = writer.get(v)
            if w is not None and w != n:
                _link(succ, w, n, WR)
        # rw: the next write after each final read, by someone who was not seen.
        for log, (o, v) in node.final_reads.items():
            chain = chains.get(log)
            if chain is None:
                continue
            offsets, writers = chain
            read_from = writer.get(v, -1)
            i = bisect_right(offsets, o)
            while i < len(offsets) and writers[i] in (n, read_from):
                i += 1
            if i < len(offsets):
                _link(succ, n, writers[i], RW)
    if process:
        last_of: dict[int, int] = {}
        for n in sorted(range(len(nodes)), key=lambda m: nodes[m].index):
            p = nodes[n].process
            if p in last_of:
                _link(succ, last_of[p], n, PROCESS)
            last_of[p] = n
    if realtime:
        _realtime(nodes, succ)
    edges = sum(len(targets) for targets in succ)
    return TxnGraph(nodes, succ, writer, located, chains, last_write, edges)


def _realtime(nodes: list[TxnNode], succ: Succ) -> None:
    """Elle's realtime order: walk invocations and completions in history order; each
    invoked node follows every node on the frontier (completed, not yet followed by a
    later completion); a completion replaces on the frontier the nodes it follows."""
    points: list[tuple[int, int]] = []
    for n, node in enumerate(nodes):
        points.append((node.invoke, n))
        if node.committed:
            points.append((node.index, n))
    points.sort()
    frontier: set[int] = set()
    before: dict[int, list[int]] = {}
    for at, n in points:
        if at == nodes[n].invoke:
            before[n] = list(frontier)
            for m in frontier:
                _link(succ, m, n, REALTIME)
        else:
            frontier.difference_update(before.pop(n, ()))
            frontier.add(n)


# -- the anomalies ----------------------------------------------------------------------


def g1a_cases(recorder: TxnRecorder, located: Located, findings: Findings) -> None:
    """Add a G1a finding for each committed read of a value a failed txn wrote; returns
    nothing (the findings hold the evidence: the failed txn's and the reader's indices,
    the log, offset and value)."""
    failed = recorder.failed
    if not failed:
        return
    for node in recorder.nodes:
        for v in node.reads:
            writer = failed.get(v)
            if writer is None:
                continue
            where = located.get(v)
            log, offset = (where[0], where[1]) if where else (None, None)
            at = f" at offset {offset} of {log}" if where else ""
            findings.add("G1a", {
                "indices": sorted({writer, node.index}), "log": log,
                "offsets": [offset] if where else [], "values": [v],
                "explanation": [
                    f"T1 (index {writer}) sent {v}{at} and aborted (failed); "
                    f"T2 (index {node.index}) read it and committed",
                ],
            })


def g1b_cases(graph: TxnGraph, findings: Findings) -> None:
    """Add a G1b finding for each committed transaction whose final read of a log was a
    non-final write of another transaction to that log; returns nothing (evidence: the
    writer's and the reader's indices, the log, the offset read and the writer's later
    offset, both values)."""
    nodes = graph.nodes
    writer = graph.writer
    last_write = graph.last_write
    for n, node in enumerate(nodes):
        for log, (o, v) in node.final_reads.items():
            w = writer.get(v)
            if w is None or w == n:
                continue
            last = last_write.get((w, log))
            if last is None or last[0] <= o:
                continue
            t1 = nodes[w].index
            findings.add("G1b", {
                "indices": sorted({t1, node.index}), "log": log, "offsets": [o, last[0]],
                "values": [v, last[1]],
                "explanation": [
                    f"T1 (index {t1}) wrote {v} to {log} at offset {o} and later "
                    f"{last[1]} at offset {last[0]} in the same transaction; T2 (index "
                    f"{node.index}) read {log} only up to {v}, an intermediate state",
                ],
            })


def precommitted_own_reads(recorder: TxnRecorder, findings: Findings) -> None:
    """Add a precommitted-read finding for each transaction that read its own send before
    committing (Kafka's read_committed consumers never see uncommitted records)."""
    for own in recorder.own_reads:
        findings.add("precommitted-read", {
            "indices": sorted({own.invoke, own.index}), "log": own.log,
            "offsets": [own.offset], "values": [own.value], "send_invoked": own.invoke,
        })


def cycle_cases(graph: TxnGraph, findings: Findings) -> None:
    """Add a finding for each cycle `find_cycles` reports (G0, G1c, G-single, G2-item),
    the shortest first; returns nothing. The evidence lists the transactions' indices,
    every edge (`steps`) and the cycle explained edge by edge in words."""
    for cycle in find_cycles(graph.succ):
        findings.add(cycle.kind, explain_cycle(graph, cycle))


def explain_cycle(graph: TxnGraph, cycle: Cycle) -> dict[str, Any]:
    """The evidence of one cycle: indices, steps, and one sentence per edge."""
    nodes = graph.nodes
    name = {n: f"T{i + 1} (index {nodes[n].index})" for i, n in enumerate(cycle.nodes)}
    short = {n: f"T{i + 1}" for i, n in enumerate(cycle.nodes)}
    steps: list[dict[str, Any]] = []
    lines: list[str] = []
    for i, u in enumerate(cycle.nodes):
        v = cycle.nodes[(i + 1) % len(cycle.nodes)]
        kind = cycle.types[i]
        step = _explain_edge(graph, u, v, kind)
        step_text = step.pop("text")
        text = step_text.format(a=name[u], b=name[v], sa=short[u], sb=short[v])
        lines.append(text)
        steps.append({"from": nodes[u].index, "to": nodes[v].index,
                      "type": EDGE_NAMES[kind], **step})
    first = cycle.nodes[0]
    lines.append(f"so {short[first]} must come before itself: a cycle of "
                 f"{len(cycle.nodes)} transactions")
    logs = [s["log"] for s in steps if s.get("log")]
    orders = sorted({EDGE_NAMES[t] for t in cycle.types if t in (PROCESS, REALTIME)})
    evidence: dict[str, Any] = {
        "indices": sorted(nodes[n].index for n in cycle.nodes),
        "log": logs[0] if logs else None,
        "logs": sorted(set(logs)),
        "offsets": [o for s in steps for o in s.get("offsets", [])],
        "values": [x for s in steps for x in s.get("values", [])],
        "length": len(cycle.nodes),
        "steps": steps,
        "explanation": lines,
    }
    if orders:
        evidence["orders"] = orders
    return evidence


def _explain_edge(graph: TxnGraph, u: int, v: int, kind: int) -> dict[str, Any]:
    """Why the edge u -> v of type `kind` exists; `text` has {a}/{b} placeholders."""
    nodes = graph.nodes
    located = graph.located
    a, b = nodes[u], nodes[v]
    if kind == WW:
        for value in a.writes:
            where = located.get(value)
            chain = graph.chains.get(where[0]) if where else None
            if where is None or chain is None:
                continue
            log, o = where[0], where[1]
            offsets, writers = chain
            i = bisect_right(offsets, o)
            if i < len(offsets) and writers[i] == v:
                nxt = offsets[i]
                nv = _value_at(graph, log, nxt, v)
                return {"log": log, "offsets": [o, nxt], "values": [value, nv],
                        "text": f"{{a}} wrote {value} to {log} at offset {o}; {{b}} wrote "
                                f"{nv}, the next version of {log}, at offset {nxt}"}
    elif kind == WR:
        for value in b.reads:
            if graph.writer.get(value) == u:
                where = located.get(value)
                log, o = (where[0], where[1]) if where else ("?", -1)
                return {"log": log, "offsets": [o], "values": [value],
                        "text": f"{{a}} wrote {value} to {log} at offset {o}; {{b}} read it"}
    elif kind == RW:
        for log, (o, value) in a.final_reads.items():
            chain = graph.chains.get(log)
            if chain is None:
                continue
            offsets, writers = chain
            read_from = graph.writer.get(value, -1)
            i = bisect_right(offsets, o)
            while i < len(offsets) and writers[i] in (u, read_from):
                i += 1
            if i < len(offsets) and writers[i] == v:
                nv = _value_at(graph, log, offsets[i], v)
                return {"log": log, "offsets": [o, offsets[i]], "values": [value, nv],
                        "text": f"{{a}} read {log} only up to offset {o} (value {value}); "
                                f"{{b}} wrote {nv} there at offset {offsets[i]}, a later "
                                f"version {{sa}} did not see"}
    elif kind == PROCESS:
        return {"process": a.process,
                "text": f"{{a}} and then {{b}} ran on process {a.process}, in that order"}
    elif kind == REALTIME:
        return {"text": f"{{a}} completed before {{b}} was invoked (at index {b.invoke})"}
    return {"text": f"{{a}} precedes {{b}} ({EDGE_NAMES[kind]})"}


def _value_at(graph: TxnGraph, log: str, offset: int, n: int) -> int | None:
    """The value node `n` wrote at `offset` of `log`."""
    for value in graph.nodes[n].writes:
        where = graph.located.get(value)
        if where is not None and where[0] == log and where[1] == offset:
            return value
    return None
