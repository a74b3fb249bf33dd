"""A catalogue of named bugs that can be planted in this broker, off unless configured.

Like FoundationDB's BUGGIFY, but deterministic and named: each `Bug` is a mistake a
Kafka implementer really makes (modelled on a published finding), switched on by the
broker setting `faultline.bugs` (comma-separated names). The code that contains it is a
small branch at the real site, marked with a comment, that asks `enabled(NAME)`.

A harness uses the catalogue to measure itself: a fault campaign of the configuration a
bug breaks must find it, and the same campaign without it must come back clean.

Which bugs are on is per broker, not per process: `activate` sets a context variable at
the top of `serve_broker`, so every task a broker starts (in the simulation, many
brokers share one process) inherits that broker's set and nobody else's.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterable
from dataclasses import dataclass

# The broker setting that names the planted bugs.
CONFIG_KEY = "faultline.bugs"


@dataclass(frozen=True)
class Bug:
    """One plantable bug: what it breaks, where, and which real finding it imitates."""

    name: str
    component: str
    description: str
    modelled_on: str
    source: str


_BUGS = (
    Bug(
        name="ack-before-replication",
        component="produce handler",
        description=(
            "An acks=all produce is answered as soon as the leader has appended it, without "
            "waiting for the high watermark to pass it: acks=all silently behaves like acks=1, "
            "so a leader that fails before its followers fetched the batch loses an "
            "acknowledged write when a follower takes over."
        ),
        modelled_on=(
            "Jepsen's 2013 Kafka analysis (acknowledged writes lost on leader change); Kafka "
            "holds an acks=all produce in DelayedProduce until the high watermark passes it, "
            "and KAFKA-1148 fixed a delayed produce completing across a leader change"
        ),
        source="https://aphyr.com/posts/293-call-me-maybe-kafka",
    ),
    Bug(
        name="min-isr-ignored",
        component="replication (partition)",
        description=(
            "The partition ignores the topic's min.insync.replicas and uses 1: acks=all is "
            "accepted and acknowledged while the ISR has shrunk to the leader alone, so losing "
            "that leader loses writes every client was told were replicated."
        ),
        modelled_on=(
            "Jepsen's 2013 Kafka analysis (an ISR of one acknowledges acks=all writes), fixed "
            "in Kafka by min.insync.replicas (KAFKA-1555)"
        ),
        source="https://issues.apache.org/jira/browse/KAFKA-1555",
    ),
    Bug(
        name="hw-max-isr-leo",
        component="replication (high watermark)",
        description=(
            "The leader advances the high watermark to the largest log end offset among its "
            "in-sync followers instead of the smallest: a write counts as committed once any "
            "one follower has it, so an election of another ISR member loses it."
        ),
        modelled_on=(
            "Kafka's high-watermark rule (HW = min LEO over the ISR) and the Raft-style "
            "quorum confusion Redpanda's Jepsen analysis discusses for acks=all"
        ),
        source="https://jepsen.io/analyses/redpanda-21.10.1",
    ),
    Bug(
        name="isr-expand-lagging",
        component="replication (ISR)",
        description=(
            "A follower is added back into the ISR as soon as it fetches, before its log "
            "end offset reaches the leader's high watermark: the controller may then elect "
            "it although it lacks committed records, which are lost."
        ),
        modelled_on=(
            "KAFKA-7128: a lagging high watermark let a follower join the ISR without the "
            "committed data, leading to committed data loss after ISR expansion"
        ),
        source="https://issues.apache.org/jira/browse/KAFKA-7128",
    ),
    Bug(
        name="follower-skips-epoch-check",
        component="replication (fetcher)",
        description=(
            "A follower fetches without its last fetched leader epoch, so the leader never "
            "reports a divergence and the follower never truncates the suffix it wrote in an "
            "older epoch: replicas hold different records at the same offsets, which readers "
            "see once such a follower leads."
        ),
        modelled_on=(
            "KIP-101 (log divergence when followers do not truncate by leader epoch); Jepsen's "
            "Redpanda analysis found inconsistent offsets of this kind"
        ),
        source=(
            "https://cwiki.apache.org/confluence/display/KAFKA/KIP-101+-+Alter+Replication+"
            "Protocol+to+use+Leader+Epoch+rather+than+High+Watermark+for+Truncation"
        ),
    ),
    Bug(
        name="truncate-to-hw",
        component="replication (partition)",
        description=(
            "On becoming a follower a replica truncates its log to its own high watermark "
            "(Kafka before 0.11) instead of asking the leader where the logs diverged: its "
            "high watermark lags the leader's, so it throws away committed records, and if it "
            "is elected before it fetched them back they are lost."
        ),
        modelled_on="KIP-101 scenario 1 / KAFKA-1211 (truncation to the high watermark loses data)",
        source="https://issues.apache.org/jira/browse/KAFKA-1211",
    ),
    Bug(
        name="unclean-election-when-disabled",
        component="controller (leader election)",
        description=(
            "When no in-sync replica is alive, the controller elects any live replica even "
            "though unclean.leader.election.enable is false: the new leader lacks committed "
            "records and the others truncate to it."
        ),
        modelled_on=(
            "Unclean leader election, Kafka's default until KAFKA-4623; Jepsen's 2013 Kafka "
            "analysis lost acknowledged writes this way"
        ),
        source="https://issues.apache.org/jira/browse/KAFKA-4623",
    ),
    Bug(
        name="ack-before-fsync",
        component="log (flush policy)",
        description=(
            "flush.messages (log.flush.interval.messages) is ignored, so under `--flush every` "
            "a batch is acknowledged before any replica fsynced it; a power loss of every "
            "replica loses acknowledged writes."
        ),
        modelled_on=(
            "Redpanda's analysis of why fsync before acknowledging is needed even with "
            "replication (losing unsynced data on nodes leads to global data loss)"
        ),
        source=(
            "https://redpanda.com/blog/why-fsync-is-needed-for-data-safety-in-kafka-or-non-"
            "byzantine-protocols"
        ),
    ),
    Bug(
        name="dedup-window-1",
        component="log (idempotent producer state)",
        description=(
            "The partition remembers only the last batch of each producer instead of five: a "
            "retried batch that is not the newest is no longer recognised as a duplicate, so "
            "an idempotent producer with several batches in flight writes duplicates."
        ),
        modelled_on=(
            "KAFKA-5494 (idempotence with max.in.flight.requests.per.connection up to 5 needs "
            "the broker to retain five batches per producer) and KAFKA-17926"
        ),
        source="https://issues.apache.org/jira/browse/KAFKA-5494",
    ),
    Bug(
        name="producer-state-not-recovered",
        component="log (idempotent producer state)",
        description=(
            "On opening a log after a restart the broker neither loads the producer-state "
            "snapshot nor replays the log, and treats a producer it does not know as new at "
            "any sequence: a batch retried across the restart is appended a second time."
        ),
        modelled_on=(
            "Duplicate writes by idempotent producers in Jepsen's Redpanda analysis (Redpanda "
            "#3039) and Kafka's producer-state snapshot recovery (KAFKA-4817)"
        ),
        source="https://jepsen.io/analyses/redpanda-21.10.1",
    ),
    Bug(
        name="rebalance-keeps-generation",
        component="group coordinator",
        description=(
            "A rebalance after the first does not bump the group's generation: members of the "
            "old and new assignment share one generation number, so two members own the same "
            "partition in the same generation and the fencing of late commits by generation "
            "cannot work."
        ),
        modelled_on=(
            "Kafka's group generation fencing (KAFKA-2557, ILLEGAL_GENERATION); Jepsen's "
            "Bufstream analysis of consumer-group safety"
        ),
        source="https://jepsen.io/analyses/bufstream-0.1.0",
    ),
    Bug(
        name="commit-stale-generation",
        component="group coordinator",
        description=(
            "OffsetCommit is accepted from a member of an older generation (or one the group "
            "already removed) instead of being refused with ILLEGAL_GENERATION or "
            "UNKNOWN_MEMBER_ID: a consumer that lost its partitions moves the group's "
            "committed offset of partitions another member now owns."
        ),
        modelled_on=(
            "KAFKA-2555 (the coordinator blindly accepted commits from old generations) and "
            "KAFKA-9823 (zombie consumers committing after a rebalance)"
        ),
        source="https://issues.apache.org/jira/browse/KAFKA-2555",
    ),
    Bug(
        name="offsets-ack-before-replication",
        component="group coordinator (offsets writer)",
        description=(
            "An OffsetCommit is answered once the coordinator appended it to its "
            "__consumer_offsets partition, before the ISR has it: when the coordinator fails "
            "over, the new one loads an older committed offset and the group re-reads or, "
            "with commits before processing, skips records."
        ),
        modelled_on=(
            "KAFKA-20634 (a coordinator acknowledged offset commits that were truncated "
            "away after a leadership change)"
        ),
        source="https://issues.apache.org/jira/browse/KAFKA-20634",
    ),
    Bug(
        name="torn-tail-kept",
        component="log (recovery)",
        description=(
            "Recovery after an unclean shutdown keeps a torn batch at the end of the active "
            "segment instead of truncating it: later appends land after garbage, and reads "
            "that reach it fail or return corrupt data."
        ),
        modelled_on=(
            "Kafka's LogSegment.recover, which truncates at the first invalid batch after a "
            "crash; torn writes on power loss are what it defends against"
        ),
        source="https://kafka.apache.org/documentation/#design_filesystem",
    ),
)

BUGS: dict[str, Bug] = {bug.name: bug for bug in _BUGS}

_ACTIVE: contextvars.ContextVar[frozenset[str]] = contextvars.ContextVar(
    "faultline_bugs", default=frozenset()
)


class UnknownBugError(ValueError):
    """A bug name that is not in the catalogue."""


def parse(text: str | Iterable[str]) -> frozenset[str]:
    """Bug names from `a,b` (or an iterable of names); UnknownBugError lists the catalogue."""
    names = text.split(",") if isinstance(text, str) else list(text)
    chosen = frozenset(n.strip() for n in names if n.strip())
    unknown = sorted(chosen - set(BUGS))
    if unknown:
        raise UnknownBugError(
            f"unknown bug(s) {', '.join(unknown)}; the catalogue has {', '.join(BUGS)}"
        )
    return chosen


def activate(names: Iterable[str]) -> None:
    """Plant `names` in the current task and every task it starts from now on."""
    _ACTIVE.set(parse(names))


def enabled(name: str) -> bool:
    """Whether bug `name` is planted in the broker running this code."""
    if name not in BUGS:
        raise UnknownBugError(f"no bug named {name!r} in the catalogue")
    return name in _ACTIVE.get()


def active() -> frozenset[str]:
    """The bugs planted in the broker running this code."""
    return _ACTIVE.get()
