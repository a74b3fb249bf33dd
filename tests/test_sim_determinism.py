"""The simulation is deterministic: equal seeds write byte-identical histories.

The scenario is the full one — trio producers and consumers on three brokers while
the nemesis partitions, kills, pauses, power-cuts, skews clocks, slows links and
resets connections — shortened so that the fault rotation still goes all the way
round in the default suite.
"""

from __future__ import annotations

import hashlib
import os
import random
import socket
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from trio._core import _run as trio_run_module

from harness.runner import first_divergence
from harness.runtime.sim.scenario import ScenarioOptions, run_faults_scenario

# Seven faults, each held for 0.5 s after 0.5 s of calm: the rotation takes 7 s.
FULL_ROTATION = ScenarioOptions(duration_s=7.5, recovery_s=1.0, fault_interval_s=0.5)
NEMESIS_FS = {
    "start-partition",
    "kill",
    "pause",
    "power-loss",
    "clock-skew",
    "start-link-fault",
    "reset-connections",
}


def _history(seed: int) -> bytes:
    history, _ = run_faults_scenario(seed, FULL_ROTATION)
    return history


def _fs(history: bytes) -> set[str]:
    import json

    return {json.loads(line)["f"] for line in history.splitlines()}


def test_same_seed_gives_byte_identical_history_under_every_fault() -> None:
    first, second = _history(11), _history(11)
    assert _fs(first) >= NEMESIS_FS, "the rotation did not exercise every fault"
    assert {"send", "poll", "assign"} <= _fs(first)
    assert len(first.splitlines()) > 200
    assert first_divergence(first, second) is None
    assert hashlib.sha256(first).hexdigest() == hashlib.sha256(second).hexdigest()


def test_different_seeds_give_different_histories() -> None:
    assert hashlib.sha256(_history(1)).digest() != hashlib.sha256(_history(2)).digest()


def test_first_divergence_names_the_line_and_both_versions() -> None:
    assert first_divergence(b"a\nb\n", b"a\nb\n") is None
    assert first_divergence(b"a\nb\nc\n", b"a\nX\nc\n") == (2, "b", "X")
    assert first_divergence(b"a\n", b"a\nb\n") == (2, "<end of history>", "b")


def test_the_scheduler_seed_and_flag_are_restored_after_a_run() -> None:
    flag = trio_run_module._ALLOW_DETERMINISTIC_SCHEDULING
    state = trio_run_module._r.getstate()
    run_faults_scenario(3, ScenarioOptions(duration_s=1.0, recovery_s=0.5, faults=False))
    assert flag == trio_run_module._ALLOW_DETERMINISTIC_SCHEDULING
    assert trio_run_module._r.getstate() == state


class _Forbidden(Exception):
    pass


@pytest.fixture
def no_host_resources(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Make wall clocks, os.urandom, threads and sockets raise; record audited socket use.

    trio's own wakeup socketpair (AF_UNIX, made when a run starts) is the one socket
    allowed: it is how trio's run loop is woken, not a network connection.
    """
    seen: list[str] = []
    active = True

    def forbid(name: str) -> Any:
        def raiser(*args: object, **kwargs: object) -> Any:
            seen.append(name)
            raise _Forbidden(f"the simulation called {name}")

        return raiser

    for name in ("time", "time_ns", "monotonic", "monotonic_ns", "sleep"):
        monkeypatch.setattr(time, name, forbid(f"time.{name}"))
    monkeypatch.setattr(os, "urandom", forbid("os.urandom"))
    monkeypatch.setattr(threading.Thread, "start", forbid("threading.Thread.start"))
    monkeypatch.setattr(socket, "create_connection", forbid("socket.create_connection"))
    monkeypatch.setattr(socket, "getaddrinfo", forbid("socket.getaddrinfo"))

    def audit(event: str, args: tuple[Any, ...]) -> None:
        if not active:
            return
        if event in ("socket.connect", "socket.bind", "socket.getaddrinfo", "socket.sendto"):
            seen.append(event)
        elif event == "socket.__new__" and args[1] in (socket.AF_INET, socket.AF_INET6):
            seen.append(f"{event} {args[1]!r}")

    # Audit hooks cannot be removed; this one goes quiet when the test ends.
    sys.addaudithook(audit)
    yield seen
    active = False


def test_a_sim_run_touches_no_wall_clock_urandom_thread_or_socket(
    no_host_resources: list[str],
) -> None:
    global_rng_state = random.getstate()
    history, result = run_faults_scenario(5, FULL_ROTATION)
    assert no_host_resources == []
    assert random.getstate() == global_rng_state, "something drew from the global rng"
    assert result.virtual_seconds > FULL_ROTATION.duration_s
    assert len(history.splitlines()) > 200
