"""The one small interface workloads drive clients through, whatever the library.

A `ClientSession` is one client process's connection to the cluster: a producer and
a consumer created on first use. Each call either returns (the operation happened),
raises `OpFailed` (it certainly did not: history `fail`) or raises `OpUnknown` (it
may have: history `info`). Each adapter documents how its library's errors map onto
these two; when in doubt an adapter must say unknown, never failed.

Sessions are async context managers. Leaving the block normally closes the clients
politely (flush, LeaveGroup); calling `crash()` first drops them as a killed process
would: no LeaveGroup, no flush, in-flight requests abandoned.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

# A poll's completion value: log -> [[offset, key, value], ...].
PollRecords = dict[str, list[list[Any]]]


class OpFailed(Exception):
    """The operation certainly did not take effect (history `fail`)."""


class OpUnknown(Exception):
    """The operation may or may not have taken effect (history `info`)."""


class TxnAbortable(OpFailed):
    """An error inside a transaction that aborting it recovers from."""


class TxnFatal(OpUnknown):
    """An error after which the transactional producer cannot go on (fenced)."""


@dataclass(frozen=True)
class Rebalance:
    """What a group rebalance left this process owning."""

    assignment: list[str]
    # None when the library does not expose the generation (confluent-kafka).
    generation: int | None


Acks = Literal["0", "1", "all"]


@dataclass(frozen=True)
class ProducerSettings:
    """The producer's knobs, under Kafka's names; one object from the run's settings
    (which validated them) through the workload to whichever client library runs."""

    acks: Acks = "all"
    enable_idempotence: bool = True
    retries: int = 2**31 - 1
    max_in_flight: int = 5
    linger_ms: int = 0
    delivery_timeout_ms: int = 10_000


@dataclass(frozen=True)
class SessionSpec:
    """Everything a session needs besides the network: where, who, and the client knobs."""

    bootstrap: str
    client_id: str
    group: str | None = None  # group.id of the consumer (needed by subscribe and "committed")
    producer: ProducerSettings = field(default_factory=ProducerSettings)
    request_timeout_ms: int = 2_000
    session_timeout_ms: int = 6_000
    heartbeat_interval_ms: int = 1_000
    max_poll_interval_ms: int = 10_000
    fetch_max_wait_ms: int = 100
    max_poll_records: int = 100
    transactional_id: str | None = None
    isolation_level: Literal["read_committed", "read_uncommitted"] = "read_uncommitted"
    transaction_timeout_ms: int = 10_000

    @property
    def send_timeout_s(self) -> float:
        """How long a send may take before the workload calls its outcome unknown."""
        return (self.producer.delivery_timeout_ms + self.request_timeout_ms) / 1000 + 1.0

    def poll_timeout_s(self, wait_s: float) -> float:
        """How long a poll waiting `wait_s` may take (a group join may block that long)."""
        return wait_s + (self.max_poll_interval_ms + self.request_timeout_ms) / 1000 + 1.0

    @property
    def admin_timeout_s(self) -> float:
        """How long an assign, subscribe or commit may take."""
        return 2 * self.request_timeout_ms / 1000 + 1.0


class ClientSession(Protocol):
    """One client process's producer and consumer, behind ok / OpFailed / OpUnknown."""

    async def send(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Produce `{topic, key, value}` messages; return them with `partition` and `offset`."""
        ...

    async def poll(self, wait_s: float) -> PollRecords:
        """Poll once, waiting up to `wait_s` for records."""
        ...

    async def assign(self, logs: list[str], seek: str) -> None:
        """Consume exactly `logs`, from the beginning or from the group's committed offsets."""
        ...

    async def subscribe(self, topics: list[str], group: str) -> None:
        """Consume what `group` assigns this process from `topics` (joins at the next poll)."""
        ...

    async def commit(self, offsets: dict[str, int]) -> None:
        """Commit, per log, the next offset to read."""
        ...

    async def end_offsets(self, logs: list[str]) -> dict[str, int]:
        """Each log's end offset now (not recorded: used to know when reads caught up)."""
        ...

    async def position(self, log: str) -> int:
        """The offset the next poll of an assigned `log` starts from."""
        ...

    def take_rebalance(self) -> Rebalance | None:
        """The assignment after the latest rebalance since the last call, if any."""
        ...

    def crash(self) -> None:
        """Make leaving the session's block drop the clients without a goodbye."""
        ...

    # -- transactions (sessions whose spec has a transactional_id) -------------------------
    # The producer initialises on first use (InitProducerId with the transactional id,
    # fencing older instances). Inside a begun transaction `send` sends transactionally.
    # An abortable error raises `TxnAbortable` (the caller aborts and records `fail`); a
    # fatal one (fenced) raises `TxnFatal` (the process is done: `info`); a commit whose
    # outcome is unknown raises `OpUnknown`, one that certainly aborted `OpFailed`.

    async def begin_transaction(self) -> None:
        """Start a transaction (initialising the transactional producer on first use)."""
        ...

    async def send_offsets_to_transaction(self, offsets: dict[str, int], group: str) -> None:
        """Commit `group`'s offsets (log -> next offset to read) with the transaction."""
        ...

    async def commit_transaction(self) -> None:
        """Commit the open transaction."""
        ...

    async def abort_transaction(self) -> None:
        """Abort the open transaction."""
        ...


def split_log(log: str) -> tuple[str, int]:
    """`"t1/0"` -> ("t1", 0)."""
    topic, _, partition = log.rpartition("/")
    return topic, int(partition)


def decode_value(raw: bytes | None, where: str) -> int:
    """A message value as the workloads write it (decimal digits); a clear error otherwise."""
    try:
        return int(raw or b"")
    except ValueError:
        shown = "null" if raw is None else repr(raw[:40])
        raise OpUnknown(
            f"{where} holds a value {shown} that no faultline workload wrote; "
            "run workloads on topics of their own"
        ) from None
