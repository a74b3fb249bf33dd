"""Anomaly names, what each means, and which are allowed by default per workload mode.

Names follow Jepsen's Kafka checker (`jepsen.tests.kafka`) plus faultline's key and
group anomalies. A run's declared guarantees decide validity: an anomaly type in the
allowed set is reported but does not make the verdict invalid.
"""

from __future__ import annotations

# type -> one-line meaning, as printed by `faultline check --help` and the summary table.
ANOMALIES: dict[str, str] = {
    "inconsistent-offsets": "two different values observed at one offset of a log",
    "duplicate": "one value observed at two positions (offsets or logs)",
    "lost-write": "a committed send at or below a log's highest read offset, never read",
    "unseen": "an acknowledged send never read by the end (reads never got past it)",
    "aborted-read": "a poll returned a value whose send definitely failed",
    "precommitted-read": "a poll returned a value before its send was invoked (or never sent)",
    "poll-skip": "a process's next poll of a log skipped values after its previous poll",
    "nonmonotonic-poll": "a process's next poll of a log went back to or before its last read",
    "int-poll-skip": "within one poll, consecutive records of a log skipped values",
    "int-nonmonotonic-poll": "within one poll, consecutive records of a log went backward",
    "nonmonotonic-send": "a process's next send to a log landed at or before its previous one",
    "int-send-skip": "within one send, consecutive messages to a log were not adjacent",
    "int-nonmonotonic-send": "within one send, consecutive messages to a log went backward",
    "key-order": "one producer's later send of a key landed below its earlier send of it",
    "key-split": "one key observed in two partitions of one topic",
    "split-assignment": "two members of one group own one log in the same generation",
    "commit-regression": "a group's committed offset for a log went backward",
    "lost-by-commit": "a group committed past an offset no member of the group polled",
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
MODE_ALLOWED: dict[str, frozenset[str]] = {
    "assign": frozenset({"int-send-skip"}),
    "subscribe": frozenset({"int-send-skip", "poll-skip", "nonmonotonic-poll"}),
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
