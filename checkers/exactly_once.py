"""Exactly-once (consume-transform-produce) findings.

History shape (DESIGN.md section 4 `txn` operations): each transaction of the
`exactly-once` workload polls the input topic (`["poll", {"in/0": [[offset, key,
value], ...]}]`), sends one output record per input record it transformed
(`["send", {"topic": "out", "key": key, "value": w, "input": v}]`: `input` is the input
*value* v, unique in the run, that output value w was made from) and commits the input
offsets in the same transaction (`["commit", {"in/0": next_offset}]`, as
`send_offsets_to_transaction` does). A final read of the output topic (plain polls or
txn polls) shows what the output holds.

An output record *appears* in the output if the transaction that sent it committed
(`ok`) or if any poll returned its value (an `info` transaction that did commit).

- eos-duplicate: two or more output records that appear in the output name the same
  input value.
- eos-loss: a committed transaction polled input value v at offset o of log L and
  committed an offset past o for L, yet no output record naming v appears.
- eos-order: input values v1 < v2 (offsets o1 < o2 of one input log, same key) whose
  outputs both appear in one output log, v2's output at a lower offset than v1's.
  Compares each input's first appearing output.

Only histories with at least one send carrying `input` are checked.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from checkers.anomalies import Findings
from history.model import PollResult, TxnMessage

# value -> (log, offset, observing index), as `QueueChecker.located` holds it.
Located = dict[int, tuple[str, int, int]]


@dataclass(slots=True)
class Output:
    """One output record: its value, the input it names, and the txn that sent it."""

    value: int
    input: int
    index: int
    committed: bool


@dataclass(slots=True)
class Consumed:
    """An input record a committed transaction polled and committed past."""

    value: int
    log: str
    offset: int
    key: str | None
    index: int


@dataclass
class ExactlyOnceRecorder:
    """Collects outputs and committed consumption during the streaming pass."""

    outputs: list[Output] = field(default_factory=list)
    consumed: dict[int, Consumed] = field(default_factory=dict)

    def txn(self, index: int, kind: str, sends: list[TxnMessage], polls: list[PollResult],
            commits: dict[str, int]) -> None:
        """Record one completed txn (`ok`, `fail` or `info`)."""
        if kind == "fail":
            return
        committed = kind == "ok"
        for m in sends:
            if m.input is not None:
                self.outputs.append(Output(m.value, m.input, index, committed))
        if not committed or not commits:
            return
        for result in polls:
            for log, records in result.items():
                upto = commits.get(log)
                if upto is None:
                    continue
                for o, key, v in records:
                    if o < upto and v not in self.consumed:
                        self.consumed[v] = Consumed(v, log, o, key, index)


def eos_cases(recorder: ExactlyOnceRecorder, read_by: dict[int, int], located: Located,
              findings: Findings) -> None:
    """Add eos-duplicate, eos-loss and eos-order findings; returns nothing.

    `read_by` maps a value to the first poll that returned it and `located` a value to
    its place in the version orders (both from the queue checker after `finish`).
    """
    if not recorder.outputs:
        return
    appearing: dict[int, list[Output]] = {}
    for out in recorder.outputs:
        if out.committed or out.value in read_by:
            appearing.setdefault(out.input, []).append(out)
    for v, outs in sorted(appearing.items()):
        if len(outs) < 2:
            continue
        where = located.get(v)
        findings.add("eos-duplicate", {
            "indices": sorted({o.index for o in outs}),
            "log": where[0] if where else None, "offsets": [where[1]] if where else [],
            "values": [v, *(o.value for o in outs)],
            "explanation": [f"input {v} was transformed into {len(outs)} output records "
                            f"that all appear: "
                            + ", ".join(f"{o.value} (sent by index {o.index})" for o in outs)],
        })
    for v, c in sorted(recorder.consumed.items()):
        if v in appearing:
            continue
        findings.add("eos-loss", {
            "indices": [c.index], "log": c.log, "offsets": [c.offset], "values": [v],
            "explanation": [f"the transaction at index {c.index} consumed input {v} at "
                            f"offset {c.offset} of {c.log} and committed past it, but no "
                            "output record of it appears"],
        })
    _order_cases(recorder, appearing, located, findings)


def _order_cases(recorder: ExactlyOnceRecorder, appearing: dict[int, list[Output]],
                 located: Located, findings: Findings) -> None:
    """Per input log and key, outputs must land in input order."""
    by_key: dict[tuple[str, str | None], list[tuple[int, int, Output]]] = {}
    for v, c in recorder.consumed.items():
        outs = appearing.get(v)
        if not outs:
            continue
        by_key.setdefault((c.log, c.key), []).append((c.offset, v, outs[0]))
    for (log, key), entries in sorted(by_key.items(), key=lambda item: (item[0][0],
                                                                       str(item[0][1]))):
        entries.sort()
        previous: tuple[int, int, Output, tuple[str, int, int]] | None = None
        for offset, v, out in entries:
            where = located.get(out.value)
            if where is None:
                continue
            if previous is not None and previous[3][0] == where[0] and where[1] < previous[3][1]:
                p_offset, p_v, p_out, p_where = previous
                findings.add("eos-order", {
                    "indices": sorted({p_out.index, out.index}), "log": where[0],
                    "key": key, "offsets": [p_where[1], where[1]],
                    "values": [p_out.value, out.value], "inputs": [p_v, v],
                    "explanation": [
                        f"inputs {p_v} and {v} (key {key}) sit at offsets {p_offset} and "
                        f"{offset} of {log}, but their outputs {p_out.value} and "
                        f"{out.value} landed at offsets {p_where[1]} and {where[1]} of "
                        f"{where[0]}, in the other order"],
                })
            if previous is None or previous[3][0] != where[0] or where[1] > previous[3][1]:
                previous = (offset, v, out, where)
