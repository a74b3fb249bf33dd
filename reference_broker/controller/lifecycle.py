"""`BrokerLifecycle`: a broker's registration and heartbeats (Kafka's BrokerLifecycleManager).

On start the broker draws an incarnation id and registers with the active
controller, which answers with a broker epoch; the broker starts fenced. It then
heartbeats every `broker.heartbeat.interval.ms`, reporting how far its metadata
image has replayed; once that reaches its own registration the controller unfences
it. A broker whose session expired is fenced by the controller and unfenced again
by its next heartbeat; one whose epoch is no longer current (STALE_BROKER_EPOCH:
the controller knows a newer registration) registers again. `shutdown` asks for a
controlled shutdown, so that its leadership moves before it goes.

Registration names the broker epoch of this node's last clean shutdown
(`previous_broker_epoch`, from its clean-shutdown marker; -1 when it crashed), so that
the controller can tell a restart that may have lost unflushed records (KIP-966). The
controller only compares it for a new incarnation, so retries may repeat it.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable

import trio

from ..errors import ErrorCode
from ..metadata.store import random_uuid
from .client import ControllerClient

logger = logging.getLogger("faultline.broker.lifecycle")

STALE_BROKER_EPOCH = 77
DUPLICATE_BROKER_REGISTRATION = 101
# How long DUPLICATE_BROKER_REGISTRATION may go on before it is more likely a second
# process with this node.id than this broker's own previous incarnation, whose session
# the controller keeps until broker.session.timeout.ms (9 s by default) passes.
DUPLICATE_SUSPECT_S = 30.0


class BrokerLifecycle:
    """Registers this broker and keeps its session alive. Run `run()` in a nursery."""

    def __init__(
        self,
        client: ControllerClient,
        *,
        host: str,
        port: int,
        heartbeat_interval_ms: int,
        metadata_offset: Callable[[], int],
        rng: random.Random,
        previous_broker_epoch: int = -1,
    ) -> None:
        self.client = client
        self.host = host
        self.port = port
        self.heartbeat_interval_s = heartbeat_interval_ms / 1000
        self.metadata_offset = metadata_offset
        self.incarnation_id = random_uuid(rng)
        self.broker_epoch = -1
        self.previous_broker_epoch = previous_broker_epoch
        self.fenced = True
        self._changed = trio.Event()
        # When registration was first refused as a duplicate, and whether that was said.
        self._duplicate_since: float | None = None
        self._duplicate_warned = False

    def _set(self, *, broker_epoch: int | None = None, fenced: bool | None = None) -> None:
        if broker_epoch is not None:
            self.broker_epoch = broker_epoch
            self.client.broker_epoch = broker_epoch
        if fenced is not None:
            self.fenced = fenced
        self._changed.set()
        self._changed = trio.Event()

    async def wait_unfenced(self) -> None:
        """Return once the controller has unfenced this broker."""
        while self.fenced:
            await self._changed.wait()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Register, then heartbeat until cancelled.

        Reports started at once: registering needs an active controller, which in
        combined mode needs this node's own listener serving first.
        """
        task_status.started()
        while True:
            if self.broker_epoch < 0:
                await self._register()
            else:
                await self._heartbeat()
            await trio.sleep(self.heartbeat_interval_s)

    async def _register(self) -> None:
        result = await self.client.register_broker(
            self.incarnation_id, self.host, self.port, self.previous_broker_epoch
        )
        if result.error_code == ErrorCode.NONE:
            logger.info(
                "broker %d registered with epoch %d (previous epoch %d)",
                self.client.node_id,
                result.broker_epoch,
                self.previous_broker_epoch,
            )
            self._set(broker_epoch=result.broker_epoch, fenced=True)
            self._duplicate_since = None
        elif result.error_code == DUPLICATE_BROKER_REGISTRATION:
            self._refused_as_duplicate()
            return
        else:
            logger.info("registration failed with error %d; retrying", result.error_code)

    def _refused_as_duplicate(self) -> None:
        """The controller still holds a live registration of this id by another
        incarnation: after a restart, this broker's own until its session expires; said
        once, and once more (as a warning) if it lasts far longer than a session."""
        now = trio.current_time()
        if self._duplicate_since is None:
            self._duplicate_since = now
            logger.info(
                "broker id %d: the controller still holds the registration of a previous "
                "incarnation (its session has not expired yet); retrying",
                self.client.node_id,
            )
        elif not self._duplicate_warned and now - self._duplicate_since > DUPLICATE_SUSPECT_S:
            self._duplicate_warned = True
            logger.warning(
                "broker id %d has been refused as registered by another live process for "
                "%.0f s; is a second broker running with the same node.id?",
                self.client.node_id,
                now - self._duplicate_since,
            )

    async def _heartbeat(self) -> None:
        result = await self.client.heartbeat(
            self.broker_epoch,
            current_metadata_offset=self.metadata_offset(),
            want_fence=False,
        )
        if result.error_code == STALE_BROKER_EPOCH:
            logger.info("broker epoch %d is stale; registering again", self.broker_epoch)
            self._set(broker_epoch=-1, fenced=True)
            await self._register()
        elif result.error_code == ErrorCode.NONE and result.is_fenced != self.fenced:
            logger.info(
                "broker %d is %s",
                self.client.node_id,
                "fenced" if result.is_fenced else "unfenced",
            )
            self._set(fenced=result.is_fenced)

    async def shutdown(self, timeout_s: float) -> bool:
        """Controlled shutdown: ask to be fenced so leadership moves first.

        Returns whether the controller confirmed within `timeout_s`.
        """
        if self.broker_epoch < 0:
            return False
        with trio.move_on_after(timeout_s):
            while True:
                result = await self.client.heartbeat(
                    self.broker_epoch,
                    current_metadata_offset=self.metadata_offset(),
                    want_fence=True,
                    want_shutdown=True,
                )
                if result.error_code == ErrorCode.NONE and result.should_shutdown:
                    self._set(fenced=True)
                    return True
                await trio.sleep(self.heartbeat_interval_s / 4)
        return False
