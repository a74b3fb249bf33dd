"""Errors the simulation raises into the code it runs."""

from __future__ import annotations


class NodeCrashedError(OSError):
    """I/O attempted by an incarnation of a node that the simulation has crashed.

    A killed process does nothing at all; in the simulation its cancelled tasks may
    still run `finally` blocks, and every disk or network call they make raises this,
    so that a crash never turns into a graceful shutdown (no last flush, no goodbye).
    """


class SimStalled(RuntimeError):
    """Simulated time stood still while tasks kept running: a livelock.

    On a MockClock time moves only when every task is blocked, so tasks that keep each
    other runnable forever (a retry loop without a backoff, say) would spin at one
    instant for ever. The run is stopped and says where it stood.
    """
