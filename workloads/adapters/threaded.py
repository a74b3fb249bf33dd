"""What the blocking third-party adapters share: every library call off the trio thread.

A blocking client (kafka-python, confluent-kafka) is called only through `call`, which
runs the function in a worker thread with `trio.to_thread.run_sync` while holding the
session's lock, so one library object is never used by two threads at once. Calls are
not abandoned on cancellation: each blocking call has its own library timeout, and a
thread must not be left touching a client the session is about to close.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import partial
from types import TracebackType
from typing import Any, Self, TypeVar

import trio

from .session import OpUnknown, Rebalance, SessionSpec

T = TypeVar("T")


class ThreadedSession:
    """Base of the blocking adapters: the lock, the thread hop, the rebalance mailbox."""

    def __init__(self, spec: SessionSpec) -> None:
        self.spec = spec
        self._lock = threading.Lock()
        self._crashed = False
        # Written by the library's rebalance callback (in a worker thread), read by the
        # session's task between calls.
        self._rebalance: Rebalance | None = None
        # log -> next offset after the records this session's polls returned.
        self._polled_next: dict[str, int] = {}
        # A library call outlived its own timeout and was abandoned still holding the
        # lock: the clients must not be touched again (not even to close them).
        self._wedged = False

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `fn(*args, **kwargs)` in a worker thread, holding the session's lock."""

        def locked() -> T:
            with self._lock:
                return fn(*args, **kwargs)

        return await trio.to_thread.run_sync(partial(locked))

    async def call_bounded(self, limit_s: float, fn: Callable[..., T], *args: Any) -> T:
        """`call`, but abandon the worker thread if `fn` has not returned after `limit_s`
        (librdkafka's transactional calls can block past their own timeout while a
        coordinator is down): raises OpUnknown and leaves the session wedged."""

        def locked() -> T:
            with self._lock:
                return fn(*args)

        with trio.move_on_after(limit_s):
            return await trio.to_thread.run_sync(locked, abandon_on_cancel=True)
        self._wedged = True
        raise OpUnknown(
            f"{getattr(fn, '__name__', 'the call')} did not return within {limit_s:.3g} s "
            "(past the library's own timeout); the client is abandoned"
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Shielded: a cancelled workload must still release the library's sockets and
        # threads; `_close` is bounded by the library's own timeouts.
        if self._wedged:
            return
        with trio.CancelScope(shield=True):
            await self.call(self._close, polite=exc is None and not self._crashed)

    def _close(self, *, polite: bool) -> None:
        raise NotImplementedError

    def crash(self) -> None:
        """Make leaving the block drop the clients without a goodbye where the library allows."""
        self._crashed = True

    def take_rebalance(self) -> Rebalance | None:
        """The assignment after the latest rebalance since the last call, if any."""
        # No lock: the callback's single attribute store is atomic, and the session's
        # calls are sequential, so no poll is running while the workload asks.
        change, self._rebalance = self._rebalance, None
        return change
