"""`QuorumDriver`: the I/O edge of one Raft quorum member (KRaft's KafkaRaftClient loop).

The sans-I/O `RaftNode` decides; the driver gives it time, a disk and a network:

- a timer loop sleeps until `next_deadline_ms()` (or until something changes the
  deadlines), calls `tick`, makes the step durable (`sync`) and only then hands the
  step's outgoing requests to the senders;
- one sender task per destination takes requests from a small mailbox, sends each
  through the transport and feeds the reply back with `receive`; a peer that is slow
  or unreachable delays only its own mailbox, and a full mailbox drops its oldest
  message (Raft resends on its timers, as it would after a lost packet);
- inbound requests arrive through `handle_request` (the broker's Vote, BeginQuorumEpoch,
  EndQuorumEpoch and Fetch handlers), which returns the reply; the handler awaits
  `sync()` before the reply leaves;
- committed entries are handed, in offset order, to a listener (the ControllerService
  replays them into its metadata image), and `wait_committed` wakes proposers.

Time is `trio.current_time()` in milliseconds, never the wall clock, and randomness
is the injected rng, so the driver runs unchanged in the simulation.
"""

from __future__ import annotations

import base64
import hashlib
import math
import random
from collections import deque
from collections.abc import Callable, Iterable
from typing import Protocol

import trio

from ..config import BrokerConfig
from .metadata_log import DurableRaftLog
from .quorum_store import DurableQuorumStore
from .raft import (
    BeginQuorumEpochResponse,
    EndQuorumEpochResponse,
    Entry,
    FetchRequest,
    FetchResponse,
    Message,
    NotLeader,
    RaftConfig,
    RaftNode,
    VoteResponse,
)
from .raft.messages import FETCH_OK

_RESPONSES = (VoteResponse, BeginQuorumEpochResponse, EndQuorumEpochResponse, FetchResponse)
_MAILBOX_SIZE = 16
_APPLY_CHUNK = 256


class Transport(Protocol):
    """How Raft requests reach a peer (`RaftTransport` over the Kafka protocol)."""

    async def send(self, message: Message) -> Message | None:
        """Send a request-type message; its reply, or None when the peer is unreachable."""
        ...

    async def aclose(self) -> None:
        """Close every connection."""
        ...


class NotCommittedError(Exception):
    """A proposal did not commit under the epoch that proposed it.

    Either another entry now holds its offset (it is certainly lost), or this node
    stopped leading that epoch first (it may still commit under the next leader).
    """


def cluster_id_for(voter_ids: Iterable[int]) -> str:
    """A Kafka-style cluster id (22 characters of base64url) determined by the voter ids.

    Every node derives the same id from `controller.quorum.voters` without talking to
    the others; only the ids count, since each node may see its peers at different
    addresses (through fault proxies).
    """
    ids = ",".join(str(v) for v in sorted(set(voter_ids)))
    digest = hashlib.sha256(f"faultline-kraft:{ids}".encode()).digest()[:16]
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def raft_config_from(config: BrokerConfig) -> RaftConfig:
    """The quorum timings of a broker's config (Kafka's controller.quorum.* settings)."""
    return RaftConfig(
        election_timeout_ms=config.controller_quorum_election_timeout_ms,
        fetch_timeout_ms=config.controller_quorum_fetch_timeout_ms,
        election_backoff_max_ms=config.controller_quorum_election_backoff_max_ms,
        request_timeout_ms=config.controller_quorum_request_timeout_ms,
    )


def now_ms() -> int:
    """Milliseconds on trio's clock (virtual in the simulation)."""
    # The epsilon keeps a wake-up at exactly `deadline / 1000` from flooring to
    # `deadline - 1` and spinning on a timer that never looks expired.
    return math.floor(trio.current_time() * 1000 + 1e-3)


class _Mailbox:
    """Requests waiting for one destination; the oldest is dropped when it is full."""

    def __init__(self) -> None:
        self.queue: deque[Message] = deque(maxlen=_MAILBOX_SIZE)
        self.changed = trio.Event()

    def put(self, message: Message) -> None:
        self.queue.append(message)
        self.changed.set()

    async def get(self) -> Message:
        while not self.queue:
            self.changed = trio.Event()
            await self.changed.wait()
        return self.queue.popleft()


class QuorumDriver:
    """Runs a `RaftNode` over a durable log and store and a transport. See the module docstring.

    Construct inside trio (the node's timers start from trio's clock), then run
    `run()` in a nursery; `handle_request` works before and after `run` too.
    """

    def __init__(
        self,
        node_id: int,
        voters: Iterable[int],
        log: DurableRaftLog,
        store: DurableQuorumStore,
        transport: Transport,
        rng: random.Random,
        config: RaftConfig | None = None,
    ) -> None:
        self.node_id = node_id
        self.log = log
        self.store = store
        self.transport = transport
        self.node = RaftNode(node_id, frozenset(voters), log, store, rng, now_ms(), config)
        self._listener: Callable[[Entry], None] | None = None
        self._outbox: list[Message] = []
        self._mailboxes: dict[int, _Mailbox] = {}
        self._nursery: trio.Nursery | None = None
        self._wake = trio.Event()
        self._progress = trio.Event()
        self._stepped = trio.Event()
        self._applied = 0
        self._role = self._role_now()
        self.state_version = 0

    # -- what the rest of the node reads -----------------------------------------------------

    @property
    def cluster_id(self) -> str:
        """The cluster id the quorum's members share (inbound requests must name it)."""
        return self.store.cluster_id

    @property
    def voters(self) -> frozenset[int]:
        """The quorum's voter ids."""
        return self.node.quorum.voters

    @property
    def epoch(self) -> int:
        """The current quorum epoch as this node knows it."""
        return self.node.epoch

    @property
    def leader_id(self) -> int | None:
        """The quorum leader of the current epoch, when known."""
        return self.node.leader_id

    @property
    def is_leader(self) -> bool:
        """Whether this node leads the current epoch."""
        return self.node.is_leader

    @property
    def is_ready_leader(self) -> bool:
        """Whether this node leads and its epoch's LeaderChange record is committed."""
        return self.node.is_ready_leader

    @property
    def high_watermark(self) -> int:
        """Entries below this offset are committed."""
        return self.node.high_watermark

    @property
    def applied_offset(self) -> int:
        """Entries below this offset have been handed to the listener."""
        return self._applied

    def set_listener(self, listener: Callable[[Entry], None]) -> None:
        """Receive every committed entry, in order, from offset 0 on (one listener)."""
        if self._listener is not None:
            raise RuntimeError("the quorum driver already has a commit listener")
        self._listener = listener

    # -- proposing ------------------------------------------------------------------------

    def propose(self, payload: object) -> int | NotLeader:
        """Append `payload` if this node leads; its offset, committed once the HW passes it."""
        result = self.node.propose(payload)
        self._after_step()
        return result

    async def wait_committed(self, offset: int, epoch: int | None = None) -> None:
        """Return once the entry at `offset` is committed and applied.

        With `epoch` (the epoch that proposed it), raise NotCommittedError when a
        different entry commits there or this node stops leading `epoch` first.
        """
        while True:
            if self._applied > offset:
                if epoch is not None:
                    (entry,) = self.log.read(offset, 1)
                    if entry.epoch != epoch:
                        raise NotCommittedError(
                            f"offset {offset} committed with an entry of epoch {entry.epoch}; "
                            f"the proposal of epoch {epoch} was lost"
                        )
                return
            if epoch is not None and (self.node.epoch != epoch or not self.node.is_leader):
                raise NotCommittedError(
                    f"node {self.node_id} stopped leading epoch {epoch} before offset {offset} "
                    "committed; it may still commit under the next leader"
                )
            await self._progress.wait()

    async def wait_progress(self) -> None:
        """Return at the next commit or change of leadership (for watchers)."""
        await self._progress.wait()

    # -- inbound ---------------------------------------------------------------------------

    def handle_request(self, message: Message) -> Message:
        """Run an inbound request through the node; returns the reply to send.

        The caller must `await sync()` before the reply leaves: a vote or a fetched
        entry is only promised once it is durable.
        """
        out = self.node.receive(message, now_ms())
        reply: Message | None = None
        for m in out:
            if reply is None and isinstance(m, _RESPONSES) and m.dst == message.src:
                reply = m
            else:
                self._outbox.append(m)
        self._after_step()
        if reply is None:
            raise RuntimeError(f"node {self.node_id} produced no reply to {message!r}")
        return reply

    async def handle_fetch(self, message: FetchRequest, max_wait_ms: int) -> Message:
        """A Fetch, long-polled as Kafka's leader does: an answer with nothing new waits up
        to `max_wait_ms` for an append, a high watermark move or a change of leadership,
        then is computed again. Like `handle_request`, the caller syncs before replying.
        """
        reply = self.handle_request(message)
        if not (
            isinstance(reply, FetchResponse)
            and reply.error == FETCH_OK
            and not reply.entries
            and reply.diverging is None
            and max_wait_ms > 0
        ):
            return reply
        seen = (self.log.end_offset, self.node.high_watermark, self._role)
        with trio.move_on_after(max_wait_ms / 1000):
            while (self.log.end_offset, self.node.high_watermark, self._role) == seen:
                await self._stepped.wait()
        return self.handle_request(message)

    async def sync(self) -> None:
        """Make the log and the election state durable as they are now."""
        await self.store.sync()
        await self.log.sync()

    # -- the loop ------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Drive the node until cancelled; closes the transport on the way out."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                await self._timer_loop()
        finally:
            self._nursery = None
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                await self.transport.aclose()

    async def _timer_loop(self) -> None:
        while True:
            deadline_ms = self.node.next_deadline_ms()
            if deadline_ms > now_ms():
                with trio.move_on_at(deadline_ms / 1000):
                    await self._wake.wait()
            else:
                await trio.lowlevel.checkpoint()
            self._wake = trio.Event()
            self._outbox += self.node.tick(now_ms())
            self._note_step()
            out, self._outbox = self._outbox, []
            if out or self.log.sync_owed or self.store.sync_owed:
                await self.sync()
            for message in out:
                self._mailbox(message.dst).put(message)
            # Entries that were waiting for this sync (a single voter's own appends).
            self._apply_committed()

    def _mailbox(self, dst: int) -> _Mailbox:
        mailbox = self._mailboxes.get(dst)
        if mailbox is None:
            mailbox = self._mailboxes[dst] = _Mailbox()
            assert self._nursery is not None
            self._nursery.start_soon(self._sender, mailbox, name=f"raft-sender-{dst}")
        return mailbox

    async def _sender(self, mailbox: _Mailbox) -> None:
        while True:
            message = await mailbox.get()
            reply = await self.transport.send(message)
            if reply is not None:
                self._outbox += self.node.receive(reply, now_ms())
                self._after_step()

    def _after_step(self) -> None:
        """After a step outside the timer loop: wake the loop to send what it produced."""
        self._wake.set()
        self._note_step()

    def _note_step(self) -> None:
        """After any step: wake long-polled fetches, apply commits, note role changes."""
        self._stepped.set()
        self._stepped = trio.Event()
        self._apply_committed()
        role = self._role_now()
        if role != self._role:
            self._role = role
            self.state_version += 1
            self._notify_progress()

    def _role_now(self) -> tuple[int, int | None, bool, bool]:
        node = self.node
        return (node.epoch, node.leader_id, node.is_leader, node.is_ready_leader)

    def _apply_committed(self) -> None:
        limit = self.node.high_watermark
        if self.node.is_leader:
            # A leader counts its own unsynced appends in the HW (alone, a single voter
            # commits at once); nothing is applied, and so answered, before it is durable.
            limit = min(limit, self.log.durable_end_offset)
        if self._applied >= limit:
            return
        while self._applied < limit:
            for entry in self.log.read(self._applied, min(limit - self._applied, _APPLY_CHUNK)):
                if self._listener is not None:
                    self._listener(entry)
                self._applied = entry.offset + 1
        self._notify_progress()

    def _notify_progress(self) -> None:
        self._progress.set()
        self._progress = trio.Event()
