"""`run_sim`: the single entry point that runs a scenario on a simulated cluster.

Everything happens inside one `trio.run` on a `MockClock(autojump_threshold=0)`:
virtual time jumps to the next timer whenever every task is blocked, so a minute
of simulated timeouts costs no wall time. trio's scheduler is seeded
(`scheduler.seeded_scheduler`) and every random choice — link jitter, torn writes,
each broker's and client's rng — is derived from the one `seed`, so a scenario that
records only what it observes writes byte-identical histories for equal seeds.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import trio
import trio.testing

from .clock import DEFAULT_EPOCH_MS
from .cluster import SimCluster
from .errors import SimStalled
from .network import DEFAULT_PIPE_CAPACITY, SimNetwork
from .scheduler import derive_rng, on_stall, seeded_scheduler, skip_busy_io_polls

T = TypeVar("T")


@dataclass(frozen=True)
class SimSettings:
    """The simulated cluster's shape and the physics of its network and disks."""

    nodes: int = 3
    # Every link takes at least this long, as on a real loopback. Zero would be faster
    # (no timer per delivered chunk) but lets a retry loop spin in zero virtual time.
    base_latency_ms: float = 0.1
    fsync_latency_ms: float = 0.5
    pipe_capacity: int = DEFAULT_PIPE_CAPACITY
    tear_on_power_loss: bool = False
    epoch_ms: int = DEFAULT_EPOCH_MS
    broker_settings: Mapping[str, object] = field(default_factory=dict)
    # One KRaft cluster (replicated topics) instead of independent single-node brokers.
    quorum: bool = False
    # Nodes configured but not started, for `SimCluster.add_broker` (quorum only).
    spare_nodes: int = 0


@dataclass(frozen=True)
class SimResult(Generic[T]):
    """What the scenario returned and how much virtual time the run took."""

    value: T
    virtual_seconds: float


@contextmanager
def _ctrl_c_cancels(scope: trio.CancelScope, interrupted: list[int]) -> Iterator[None]:
    """While inside, Ctrl-C cancels `scope` (the whole simulation, which then unwinds as
    at its end) and is noted in `interrupted`, instead of trio raising KeyboardInterrupt
    inside whichever simulated task happens to run: landing in the middle of a client's
    or a broker's cleanup, that leaves cancel scopes in a state trio refuses."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    token = trio.lowlevel.current_trio_token()

    def on_sigint(signum: int, frame: object) -> None:
        interrupted.append(signum)
        token.run_sync_soon(scope.cancel)  # safe from a signal handler

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def run_sim(
    scenario: Callable[[SimCluster], Awaitable[T]],
    seed: int,
    settings: SimSettings | None = None,
) -> SimResult[T]:
    """Start a cluster, run `scenario(cluster)` to completion, stop everything.

    Must be called outside any trio run (it is one). Brokers are stopped by
    cancellation once the scenario returns. Raises SimStalled, after cancelling
    everything, if simulated time stands still (see `scheduler.STALLED_BATCHES`).
    """
    settings = settings or SimSettings()

    async def main() -> tuple[T, float]:
        skip_busy_io_polls()
        stalls: list[SimStalled] = []
        interrupted: list[int] = []
        result: tuple[T, float] | None = None
        with trio.CancelScope() as everything:

            def stop(error: SimStalled) -> None:
                stalls.append(error)
                everything.cancel()

            on_stall(stop)
            with _ctrl_c_cancels(everything, interrupted):
                result = await _run_cluster()
        if interrupted:
            raise KeyboardInterrupt
        if stalls or result is None:
            raise stalls[0]
        return result

    async def _run_cluster() -> tuple[T, float]:
        network = SimNetwork(
            derive_rng(seed, "network"),
            base_latency_ms=settings.base_latency_ms,
            pipe_capacity=settings.pipe_capacity,
        )
        async with trio.open_nursery() as nursery:
            cluster = SimCluster(
                nursery,
                network,
                seed=seed,
                nodes=settings.nodes,
                broker_settings=settings.broker_settings,
                fsync_latency_ms=settings.fsync_latency_ms,
                tear_on_power_loss=settings.tear_on_power_loss,
                epoch_ms=settings.epoch_ms,
                quorum=settings.quorum,
                spare_nodes=settings.spare_nodes,
            )
            try:
                await cluster.start()
                value = await scenario(cluster)
            finally:
                # Teardown ends every node as SIGKILL ends a stopped process too: a paused
                # node's shutdown must not wait on its frozen I/O (no timer would ever
                # move time again, and trio would spin on an idle clock forever).
                for host in network.hosts.values():
                    host.resume()
                nursery.cancel_scope.cancel()
        return value, trio.current_time()

    with seeded_scheduler(seed):
        value, elapsed = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    return SimResult(value, elapsed)
