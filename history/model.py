"""Typed events of the history format (DESIGN.md section 4).

Client events are a msgspec tagged union on `f`, so one decode both validates the
envelope and gives each operation's value its own shape. Nemesis events have free-form
`f` and `value` and are decoded separately.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

import msgspec

EventType = Literal["invoke", "ok", "fail", "info"]
SeekMode = Literal["committed", "beginning"]

# Offsets and partitions are never negative; rejecting them at decode keeps the
# checkers' arithmetic on positions sound.
Natural = Annotated[int, msgspec.Meta(ge=0)]
# A poll returns, per log, [offset, key, value] triples.
Record = tuple[Natural, str | None, int]
PollResult = dict[str, list[Record]]


class Message(msgspec.Struct, forbid_unknown_fields=True):
    """One message of a send: `partition` and `offset` are known only on completion."""

    topic: str
    key: str | None
    value: int
    partition: Natural | None = None
    offset: Natural | None = None


class AssignValue(msgspec.Struct, forbid_unknown_fields=True):
    """Manual assignment of logs and where to start reading them."""

    logs: list[str]
    seek: SeekMode


class SubscribeValue(msgspec.Struct, forbid_unknown_fields=True):
    """Group subscription: the group decides which logs of these topics the process owns."""

    topics: list[str]
    group: str


class ClientEvent(msgspec.Struct, tag_field="f", kw_only=True):
    """Fields common to every client event; subclasses fix `f` and the shape of `value`."""

    # The operation; the tag msgspec decodes by, also readable as an attribute.
    f: ClassVar[str]

    index: int
    time: int
    process: int
    type: EventType
    error: str | None = None
    # Set on a completion when a group rebalance changed what the process owns.
    assignment: list[str] | None = None
    generation: int | None = None


class Send(ClientEvent, tag="send", kw_only=True):
    """Produce messages; the completion lists them again with partition and offset."""

    f: ClassVar[str] = "send"
    value: list[Message] | None


class Poll(ClientEvent, tag="poll", kw_only=True):
    """One consumer poll; the completion maps each log to the records it returned."""

    f: ClassVar[str] = "poll"
    value: PollResult | None


class Assign(ClientEvent, tag="assign", kw_only=True):
    """Manually assign logs to the process's consumer."""

    f: ClassVar[str] = "assign"
    value: AssignValue | None


class Subscribe(ClientEvent, tag="subscribe", kw_only=True):
    """Subscribe the process's consumer to topics as a member of a group."""

    f: ClassVar[str] = "subscribe"
    value: SubscribeValue | None


class Commit(ClientEvent, tag="commit", kw_only=True):
    """Commit, per log, the next offset to read (as Kafka commits)."""

    f: ClassVar[str] = "commit"
    value: dict[str, Natural] | None


class Crash(ClientEvent, tag="crash", kw_only=True):
    """Tear down the process's client; always completes `info`."""

    f: ClassVar[str] = "crash"
    value: None = None


# A micro-operation of a transaction: `["send", {...}]`, `["poll", null | {...}]` or
# `["commit", {"t0/2": 42}]`. Decoded loosely here (msgspec cannot tell tuples apart by
# their first element); the reader converts each payload to its typed shape.
MicroF = Literal["send", "poll", "commit"]
MicroOp = tuple[MicroF, Any]


class TxnMessage(Message, forbid_unknown_fields=True, kw_only=True):
    """A send inside a transaction; `input` names the input value a consume-transform-
    produce transaction transformed into this output message (null otherwise)."""

    input: int | None = None


class Txn(ClientEvent, tag="txn", kw_only=True):
    """One Kafka transaction: its micro-operations in order (DESIGN.md section 4).

    After the reader has checked the event, each send payload is a `TxnMessage`, each
    poll payload a `PollResult` (or None on invoke) and each commit a dict of log to
    next offset.
    """

    f: ClassVar[str] = "txn"
    value: list[MicroOp] | None


class NemesisEvent(msgspec.Struct, kw_only=True):
    """A fault event; not paired with invocations and never checked for pairing."""

    index: int
    time: int
    process: Literal["nemesis"]
    type: EventType
    f: str
    value: Any = None
    error: str | None = None


AnyClientEvent = Send | Poll | Assign | Subscribe | Commit | Crash | Txn
Event = Send | Poll | Assign | Subscribe | Commit | Crash | Txn | NemesisEvent

CLIENT_FS: tuple[str, ...] = ("send", "poll", "assign", "subscribe", "commit", "crash", "txn")
EVENT_TYPES: tuple[str, ...] = ("invoke", "ok", "fail", "info")


def split_log(name: str) -> tuple[str, int]:
    """Split a log name `"topic/partition"` into its topic and partition number.

    Raises ValueError with a readable message when the name has another form.
    """
    topic, sep, partition = name.rpartition("/")
    if not sep or not topic or not partition.isdigit():
        raise ValueError(f"log name {name!r} is not of the form 'topic/partition'")
    return topic, int(partition)
