"""Anomaly names, what each means, and which are allowed by default per workload mode.

Names follow Jepsen's Kafka checker (`jepsen.tests.kafka`) plus faultline's key and
group anomalies. A run's declared guarantees decide validity: an anomaly type in the
allowed set is reported but does not make the verdict invalid.
"""

from __future__ import annotations

# type -> its definition in one sentence, shown by `faultline check --help` and
# `--explain TYPE`, the summary table and the run report. The only declaration of it.
ANOMALIES: dict[str, str] = {
    "inconsistent-offsets": "Two different values were observed at the same offset of one log.",
    "duplicate": "One value was observed at two positions (two offsets, or two logs).",
    "lost-write": "An acknowledged value at or below the highest offset read from its log "
                  "was never read by anyone.",
    "unseen": "An acknowledged value was never read because no read got that far "
              "(uncertain, not proof of loss).",
    "aborted-read": "A poll returned a value whose send had definitely failed.",
    "precommitted-read": "A poll returned a value before its send was invoked (or it was "
                         "never sent).",
    "poll-skip": "A process's next poll of a log started past offsets holding values, "
                 "skipping them.",
    "nonmonotonic-poll": "A process's next poll of a log went back to or before the offset "
                         "it had last read.",
    "int-poll-skip": "Within one poll, two consecutive records of a log skipped offsets "
                     "holding values.",
    "int-nonmonotonic-poll": "Within one poll, a record of a log came at or before the "
                             "offset of the record before it.",
    "nonmonotonic-send": "A process's next send to a log landed at or below the offset of "
                         "its previous send there.",
    "int-send-skip": "Within one send, consecutive messages to a log did not land at "
                     "adjacent offsets.",
    "int-nonmonotonic-send": "Within one send, a later message to a log landed at or below "
                             "an earlier one.",
    "key-order": "One producer's later send of a key landed below its earlier send of the "
                 "same key.",
    "key-split": "One key was acknowledged or read in two partitions of one topic.",
    "split-assignment": "Two members of one consumer group owned the same log in the same "
                        "generation.",
    "commit-regression": "A group's committed offset for a log went backward.",
    "lost-by-commit": "A group committed a log's offset past records that no member of the "
                      "group had polled.",
    "G0": "Transactions' writes form a cycle: each wrote a log right after another's write "
          "there, around a loop (write cycle).",
    "G1a": "A committed transaction or poll read a value written by a transaction that "
           "aborted (aborted read).",
    "G1b": "A committed transaction's last read of a log stopped between two writes of one "
           "other transaction there (intermediate read).",
    "G1c": "Transactions form a cycle of write and read dependencies, at least one a read "
           "(circular information flow).",
    "G-single": "Transactions form a dependency cycle with exactly one anti-dependency: one "
                "missed a later write by another that depends on it (read skew).",
    "G2-item": "Transactions form a dependency cycle with two or more anti-dependencies "
               "(each missed a later write of the next).",
    "eos-duplicate": "One input record was transformed into two or more output records that "
                     "all appear in the output.",
    "eos-loss": "An input record was consumed and its offset committed by a committed "
                "transaction, yet no output record of it appears.",
    "eos-order": "Two input records of one key and log appear in the output in the other "
                 "order.",
    "unrecoverable-node": "A broker crashed (kill or power loss, its disk intact) and refused "
                          "to start again on its own data.",
}

# type -> the smallest history that shows it (tests/histories/<type>.jsonl), in words;
# tests/histories/README.md's table is checked against these.
EXAMPLES: dict[str, str] = {
    "inconsistent-offsets": "two sends are both acknowledged at t0/0 offset 0; two readers "
                            "see different values there",
    "duplicate": "one poll returns value 1 at offsets 0 and 1",
    "lost-write": "value 1 is acknowledged at offset 0, a poll reads offset 1, nobody ever "
                  "reads value 1",
    "unseen": "value 1 is acknowledged; the only poll returns nothing (verdict `unknown`, "
              "not invalid)",
    "aborted-read": "the send of value 1 fails, yet a poll returns it",
    "precommitted-read": "a poll returns value 1 before any send of value 1 is invoked",
    "poll-skip": "process 1 polls offset 0, then its next poll starts at offset 2 (offset 1 "
                 "exists)",
    "nonmonotonic-poll": "process 1 polls offsets 0-1, then its next poll starts at offset 1 "
                         "again",
    "int-poll-skip": "one poll returns offsets 0 and 2 of a log whose offset 1 exists",
    "int-nonmonotonic-poll": "one poll returns offset 1 before offset 0",
    "nonmonotonic-send": "process 0's second send lands at offset 0, below its first at "
                         "offset 1",
    "int-send-skip": "one send's two messages land at offsets 0 and 2; another producer's at "
                     "1 (allowed outside `--mode strict`)",
    "int-nonmonotonic-send": "one send's second message lands before its first",
    "key-order": "process 0 sends key k1 to offset 1, re-assigns (as Jepsen, that drops its "
                 "per-log send cursor), then sends k1 again and it lands at offset 0",
    "key-split": "key k1 is acknowledged in t0/0 and in t0/1",
    "split-assignment": "processes 0 and 1 of group g1 both report owning t0/0 in "
                        "generation 1",
    "commit-regression": "process 0 commits t0/0 at 2, then (after that completed) at 1",
    "lost-by-commit": "group g1 commits t0/0 at 2 though no member polled offsets 0 and 1",
    "G0": "T1 writes t0/0 then T2 does; T2 writes t0/1 then T1 does",
    "G1a": "a txn sending value 1 aborts, yet a committed txn reads it (aborted-read too)",
    "G1b": "T1 writes 1 and 2 to t0/0; T2 commits having read t0/0 only up to 1",
    "G1c": "T1 reads what T2 wrote to t0/1 and T2 reads what T1 wrote to t0/0",
    "G-single": "T2 writes t0/0 and t0/1; T1 reads T2's write to t0/1 but not the one to "
                "t0/0",
    "G2-item": "T1 and T2 each read one log and write the other; neither sees the other's "
               "write",
    "eos-duplicate": "input 1 is transformed twice, by two committed txns",
    "eos-loss": "a committed txn consumes input 1 and commits past it but sends no output",
    "eos-order": "inputs 1 and 2 of key k1 are at t0/0 offsets 0 and 1; their outputs land at "
                 "out/0 offsets 1 and 0",
    "unrecoverable-node": "n1 loses power; its restart fails: the broker cannot start",
}


# Families of anomaly types, the columns of a campaign's guarantee table. Each type is in
# exactly one. `loss` holds what loses acknowledged data, on the log (lost-write, unseen,
# and inconsistent-offsets: an acknowledged offset reused for another value after a
# truncation) or through a group's commits; `phantom` holds reads of values that were
# never successfully written.
FAMILIES: dict[str, tuple[str, ...]] = {
    "loss": ("lost-write", "unseen", "inconsistent-offsets", "lost-by-commit"),
    "duplication": ("duplicate",),
    "ordering": ("poll-skip", "nonmonotonic-poll", "int-poll-skip", "int-nonmonotonic-poll",
                 "nonmonotonic-send", "int-send-skip", "int-nonmonotonic-send", "key-order",
                 "key-split"),
    "group": ("split-assignment", "commit-regression"),
    "phantom": ("aborted-read", "precommitted-read"),
    "transaction": ("G0", "G1a", "G1b", "G1c", "G-single", "G2-item"),
    "exactly-once": ("eos-duplicate", "eos-loss", "eos-order"),
    "recovery": ("unrecoverable-node",),
}
FAMILY_OF: dict[str, str] = {kind: family for family, kinds in FAMILIES.items()
                             for kind in kinds}

# Uncertainty rather than proof: alone (and not allowed) they make the verdict "unknown".
UNCERTAIN: frozenset[str] = frozenset({"unseen"})

# Workload mode -> anomaly types expected by design in that mode.
#  - int-send-skip: other producers' messages may interleave with one send's batch
#    (Jepsen allows it in every mode).
#  - subscribe: a rebalance may move a log away and back between two polls of one
#    process, so cross-poll skips and rewinds are expected (Jepsen allows both).
#  - G0, G1c: Kafka transactions do not isolate writes, so interleaved writes of two
#    transactions make ww cycles, and with them ww+wr cycles (Jepsen allows G0 always
#    and G1c whenever it infers ww edges, as faultline does).
#  - G-single, G2-item, G1b: a Kafka consumer reads each log from its own position, not
#    from a snapshot, and one poll may stop inside another transaction's records
#    (max.poll.records), so a read_committed consumer that is behind or stops early
#    yields rw edges and intermediate reads (Jepsen's kafka checker draws no rw edges at
#    all). `strict` holds transactions to snapshot reads and flags them.
#  What Kafka does promise stays flagged in every mode: G1a / aborted-read,
#  precommitted-read, the exactly-once findings, and lost or duplicated data.
_TXN_ALLOWED = frozenset({"G0", "G1c", "G1b", "G-single", "G2-item"})
MODE_ALLOWED: dict[str, frozenset[str]] = {
    "assign": frozenset({"int-send-skip"}) | _TXN_ALLOWED,
    "subscribe": frozenset({"int-send-skip", "poll-skip", "nonmonotonic-poll"}) | _TXN_ALLOWED,
    "strict": frozenset(),
}
DEFAULT_MODE = "assign"


def allowed_for(mode: str, extra: tuple[str, ...] | list[str] = ()) -> frozenset[str]:
    """Return the allowed anomaly types for `mode` plus `extra`.

    Raises ValueError naming the valid choices for an unknown mode or anomaly type.
    """
    if mode not in MODE_ALLOWED:
        raise ValueError(f"unknown mode {mode!r}; expected one of {', '.join(MODE_ALLOWED)}")
    for name in extra:
        if name not in ANOMALIES:
            raise ValueError(
                f"unknown anomaly type {name!r}; expected one of {', '.join(ANOMALIES)}"
            )
    return MODE_ALLOWED[mode] | frozenset(extra)


class Findings:
    """Anomalies found so far: every one counted, the first `limit` of each type kept.

    A badly broken run can produce millions of instances of one anomaly; the count stays
    exact while the evidence kept (what a person reads) stays bounded.
    """

    __slots__ = ("counts", "evidence", "limit")

    def __init__(self, limit: int = 1000) -> None:
        self.limit = limit
        self.counts: dict[str, int] = {}
        self.evidence: dict[str, list[dict[str, object]]] = {}

    def add(self, kind: str, evidence: dict[str, object]) -> None:
        """Record one instance of anomaly `kind`; `evidence` must name its history indices."""
        count = self.counts.get(kind, 0)
        self.counts[kind] = count + 1
        if count < self.limit:
            self.evidence.setdefault(kind, []).append(evidence)


def explain(kind: str) -> str:
    """A few lines on anomaly type `kind`: its definition, family, in which workload modes
    it is allowed by default, and the smallest example. ValueError naming the known types
    for an unknown one."""
    if kind not in ANOMALIES:
        raise ValueError(f"unknown anomaly type {kind!r}; expected one of {', '.join(ANOMALIES)}")
    modes = [mode for mode, allowed in MODE_ALLOWED.items() if kind in allowed]
    lines = [
        f"{kind}: {ANOMALIES[kind]}",
        f"family: {FAMILY_OF[kind]}",
        "allowed by default in mode(s): " + (", ".join(modes) or "none"),
        f"smallest example (tests/histories/{kind}.jsonl): {EXAMPLES[kind]}",
    ]
    if kind in UNCERTAIN:
        lines.append("alone, it makes the verdict unknown rather than invalid")
    return "\n".join(lines)
