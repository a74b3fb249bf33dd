"""Per-node wall clocks for the simulation: trio's virtual time plus an epoch and a skew.

A node's `now_ms` only feeds values stored in data (record timestamps); timeouts use
trio's clock, which a skew does not touch — exactly as bumping a host's wall clock
leaves its monotonic clock alone.
"""

from __future__ import annotations

import trio

# 2024-01-01T00:00:00Z: a fixed, plausible wall-clock start so timestamps look real
# yet never depend on when the simulation ran.
DEFAULT_EPOCH_MS = 1_704_067_200_000


class SimClock:
    """A node's wall clock: `epoch_ms` + virtual milliseconds elapsed + `skew_ms`."""

    def __init__(self, epoch_ms: int = DEFAULT_EPOCH_MS) -> None:
        self.epoch_ms = epoch_ms
        self.skew_ms = 0

    def now_ms(self) -> int:
        """Milliseconds since the Unix epoch, as this node believes."""
        return self.epoch_ms + int(trio.current_time() * 1000) + self.skew_ms

    def bump(self, delta_ms: int) -> None:
        """Shift this clock by `delta_ms` from now on (cumulative)."""
        self.skew_ms += delta_ms

    def reset(self) -> None:
        """Put this clock back in step with the simulation's time."""
        self.skew_ms = 0
