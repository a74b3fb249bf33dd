"""How long a fault lasts: duration classes that span Kafka's own timers.

A fault that always ends within a few seconds never outlasts the timers Kafka's failure
handling hangs on, so it never drives the cluster into that handling: a partitioned
leader is replaced only once the controller stops hearing from it for
`broker.session.timeout.ms`; a follower leaves the ISR only after it has lagged for
`replica.lag.time.max.ms`; a consumer is expelled from its group after the group session
timeout, and a rebalance waits at most the rebalance timeout (max.poll.interval.ms) for
its members; a transaction is aborted after `transaction.timeout.ms`.

So each fault first draws a duration class, uniformly among the classes its run has, then
a duration inside the class:

- short: well below the broker session timeout (the cluster rides it out);
- session: around the broker session timeout (the controller may or may not fence);
- lag: longer than replica.lag.time.max.ms (followers drop out of the ISR);
- group: around the group session or rebalance timeout (members are expelled);
- transaction: around transaction.timeout.ms, when the run's producers are transactional.

The timer values come from the configuration the run's brokers and clients use
(`FaultTimers`, built once by the harness), never from copies here.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import NamedTuple

# Kafka's defaults, for schedules made without a run (tests, a bare `generate` call):
# broker.session.timeout.ms, replica.lag.time.max.ms, and the faultline workload's
# consumer session.timeout.ms and max.poll.interval.ms.
DEFAULT_BROKER_SESSION_MS = 9_000
DEFAULT_REPLICA_LAG_MS = 30_000
DEFAULT_GROUP_SESSION_MS = 6_000
DEFAULT_GROUP_REBALANCE_MS = 10_000
# A producer's transaction.timeout.ms (Kafka's client default) and the broker's
# transaction.abort.timed.out.transaction.cleanup.interval.ms.
DEFAULT_TXN_TIMEOUT_MS = 60_000
DEFAULT_TXN_ABORT_INTERVAL_MS = 10_000
# controller.quorum.fetch.timeout.ms + 2 × controller.quorum.election.timeout.ms (the
# election timeout is drawn from [base, 2 × base]): Kafka's defaults.
DEFAULT_CONTROLLER_FAILOVER_MS = 2_000 + 2 * 1_000

# Bounds of each class as fractions of its timer. "Around" a timer spans both sides of it
# so some faults end just before it fires and some just after; "longer than" leaves room
# for the timer's check period (the ISR is checked every replica.lag.time.max.ms / 2).
SHORT = (0.05, 0.7)
AROUND = (0.8, 1.3)
BEYOND = (1.1, 1.6)

CLASSES = ("short", "session", "lag", "group", "transaction")
# A fault that takes down or pauses every node draws only from these: the long classes
# are there for what a partial fault does to the rest of the cluster (a lagging follower
# leaves the ISR, an expelled member's partitions move), and with every node out there
# is no rest of the cluster, only a run without a cluster.
CLUSTER_WIDE_CLASSES = ("short", "session")


@dataclass(frozen=True)
class FaultTimers:
    """The timers of the cluster and clients a schedule is made for, in milliseconds."""

    broker_session_ms: int = DEFAULT_BROKER_SESSION_MS
    replica_lag_ms: int = DEFAULT_REPLICA_LAG_MS
    group_session_ms: int = DEFAULT_GROUP_SESSION_MS
    group_rebalance_ms: int = DEFAULT_GROUP_REBALANCE_MS
    # None: the run's producers are not transactional, so the class is not drawn.
    transaction_timeout_ms: int | None = None
    # How often the transaction coordinator looks for transactions past their timeout.
    txn_abort_interval_ms: int = DEFAULT_TXN_ABORT_INTERVAL_MS
    # The longest the controller quorum takes to notice its leader is gone and elect
    # another; a broker that was the active controller is fenced only after that plus
    # a session timeout (the new controller starts every broker's session afresh).
    controller_failover_ms: int = DEFAULT_CONTROLLER_FAILOVER_MS

    @property
    def txn_abort_ms(self) -> int:
        """The longest an open transaction can stay open untouched: its timeout (Kafka's
        client default when the run's producers are not transactional), then up to one
        abort check interval until the coordinator notices."""
        timeout = self.transaction_timeout_ms or DEFAULT_TXN_TIMEOUT_MS
        return timeout + self.txn_abort_interval_ms

    def __post_init__(self) -> None:
        for name in ("broker_session_ms", "replica_lag_ms", "group_session_ms",
                     "group_rebalance_ms"):
            if getattr(self, name) < 1:
                raise ValueError(f"fault timer {name} must be positive, got {getattr(self, name)}")
        if self.transaction_timeout_ms is not None and self.transaction_timeout_ms < 1:
            raise ValueError("fault timer transaction_timeout_ms must be positive or None")

    def classes(self) -> tuple[str, ...]:
        """The duration classes faults of this run draw from."""
        if self.transaction_timeout_ms is None:
            return CLASSES[:-1]
        return CLASSES

    def bounds(self, name: str) -> tuple[int, int]:
        """The [low, high) milliseconds of duration class `name`."""
        if name == "short":
            return _scaled(self.broker_session_ms, SHORT)
        if name == "session":
            return _scaled(self.broker_session_ms, AROUND)
        if name == "lag":
            return _scaled(self.replica_lag_ms, BEYOND)
        if name == "group":
            # Around the session timeout at the low end, past the rebalance timeout at the
            # high end: a stalled member is expelled either way.
            low, _ = _scaled(self.group_session_ms, AROUND)
            _, high = _scaled(max(self.group_session_ms, self.group_rebalance_ms), AROUND)
            return low, high
        if name == "transaction" and self.transaction_timeout_ms is not None:
            return _scaled(self.transaction_timeout_ms, AROUND)
        raise ValueError(f"no duration class {name!r} here; expected one of {self.classes()}")

    def to_json(self) -> dict[str, int | None]:
        """As recorded beside a schedule."""
        return {
            "broker_session_ms": self.broker_session_ms,
            "replica_lag_ms": self.replica_lag_ms,
            "group_session_ms": self.group_session_ms,
            "group_rebalance_ms": self.group_rebalance_ms,
            "transaction_timeout_ms": self.transaction_timeout_ms,
        }


def _scaled(timer_ms: int, fractions: tuple[float, float]) -> tuple[int, int]:
    low, high = fractions
    return max(1, round(timer_ms * low)), max(2, round(timer_ms * high))


class FaultDuration(NamedTuple):
    """A drawn duration and the class it came from."""

    cls: str
    ms: int


def draw_duration(
    timers: FaultTimers, rng: random.Random, *, cluster_wide: bool = False
) -> FaultDuration:
    """A duration class drawn uniformly among the run's (among CLUSTER_WIDE_CLASSES for
    a fault that takes out every node), then a duration inside it."""
    classes = timers.classes()
    if cluster_wide:
        classes = tuple(c for c in classes if c in CLUSTER_WIDE_CLASSES)
    name = rng.choice(classes)
    low, high = timers.bounds(name)
    return FaultDuration(name, rng.randrange(low, high))
