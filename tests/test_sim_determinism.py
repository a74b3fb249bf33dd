"""The simulation is deterministic: equal seeds write byte-identical histories, on the
path users run.

`faultline run` with its default mixed faults, twice with one seed, must agree byte for
byte (`--check-determinism` is that check); and a schedule that goes through every kind
of fault — partition, kill, pause, power loss, clock skew, slow links, connection
resets — run twice through `harness.runner.execute`, as `faultline run --schedule`
does, must too. Neither may touch a wall clock, os.urandom, a thread or a socket.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from trio._core import _run as trio_run_module

from harness import exit_codes
from harness.cli import cli
from harness.run_config import RunConfig
from harness.runner import Executed, execute, first_divergence
from nemesis import Schedule

NODES = ["n1", "n2", "n3"]
# Seven faults, each held for 0.5 s after 0.5 s of calm: the rotation takes 7 s.
ROTATION = Schedule.from_json(json.dumps({
    "nodes": NODES, "clients": ["c1", "c2"], "duration_ms": 7500, "recovery_ms": 1000,
    "ops": [
        {"f": "start-partition", "at_ms": 500, "shape": "one",
         "grudge": {"n1": ["n2", "n3", "c1"], "n2": ["n1"], "n3": ["n1"], "c1": ["n1"]}},
        {"f": "stop-partition", "at_ms": 1000},
        {"f": "kill", "at_ms": 1500, "nodes": ["n2"]},
        {"f": "restart", "at_ms": 2000, "nodes": ["n2"]},
        {"f": "pause", "at_ms": 2500, "nodes": ["n3"]},
        {"f": "resume", "at_ms": 3000, "nodes": ["n3"]},
        {"f": "power-loss", "at_ms": 3500, "nodes": ["n1"]},
        {"f": "restart", "at_ms": 4000, "nodes": ["n1"]},
        {"f": "clock-skew", "at_ms": 4500, "node": "n2", "delta_ms": -30000},
        {"f": "clock-reset", "at_ms": 5000, "nodes": ["n2"]},
        {"f": "start-link-fault", "at_ms": 5500, "links": [["n1", "n2"], ["n2", "n1"]],
         "latency_ms": 40.0, "jitter_ms": 20.0},
        {"f": "stop-link-fault", "at_ms": 6000},
        {"f": "reset-connections", "at_ms": 6500, "nodes": ["n3"]},
    ],
}))
NEMESIS_FS = {
    "start-partition",
    "kill",
    "pause",
    "power-loss",
    "clock-skew",
    "start-link-fault",
    "reset-connections",
}
# The rotation's run: short phases, two client processes, all fault packages.
ROTATION_RUN = {"time-limit": 7.5, "recovery": 1, "final-read": 5, "nemesis": "mixed"}


def _run(seed: int, folder: Path, schedule: Schedule | None = ROTATION,
         **settings: object) -> tuple[bytes, Executed]:
    config = RunConfig.build({"seed": seed, **ROTATION_RUN, **settings})
    folder.mkdir(parents=True)
    executed = execute(config, folder, schedule=schedule)
    return (folder / "history.jsonl").read_bytes(), executed


def _fs(history: bytes) -> set[str]:
    return {json.loads(line)["f"] for line in history.splitlines()}


def test_faultline_run_with_mixed_faults_is_byte_identical_for_one_seed(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["run", "--seed", "11", "--time-limit", "20",
                                      "--nemesis-interval", "2", "--recovery", "2",
                                      "--final-read", "10",
                                      "--check-determinism", "--out", str(tmp_path)])
    assert result.exit_code != exit_codes.BAD_INPUT, result.output
    assert "determinism: identical" in result.output, result.output
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir() and not p.is_symlink()]
    history = (run_dir / "history.jsonl").read_bytes()
    faults = {e["f"] for e in map(json.loads, history.splitlines()) if e["process"] == "nemesis"}
    assert len(faults) >= 4, f"the mixed nemesis hardly ran: {faults}"
    assert {"send", "poll"} <= _fs(history)


def test_same_seed_gives_byte_identical_history_under_every_fault(tmp_path: Path) -> None:
    first, _ = _run(11, tmp_path / "a")
    second, _ = _run(11, tmp_path / "b")
    assert _fs(first) >= NEMESIS_FS, "the rotation did not exercise every fault"
    assert {"send", "poll", "assign"} <= _fs(first)
    assert len(first.splitlines()) > 100
    assert first_divergence(first, second) is None
    assert hashlib.sha256(first).hexdigest() == hashlib.sha256(second).hexdigest()


def test_different_seeds_give_different_histories(tmp_path: Path) -> None:
    one, _ = _run(1, tmp_path / "1")
    two, _ = _run(2, tmp_path / "2")
    assert hashlib.sha256(one).digest() != hashlib.sha256(two).digest()


def test_first_divergence_names_the_line_and_both_versions() -> None:
    assert first_divergence(b"a\nb\n", b"a\nb\n") is None
    assert first_divergence(b"a\nb\nc\n", b"a\nX\nc\n") == (2, "b", "X")
    assert first_divergence(b"a\n", b"a\nb\n") == (2, "<end of history>", "b")


def test_the_scheduler_seed_and_flag_are_restored_after_a_run(tmp_path: Path) -> None:
    flag = trio_run_module._ALLOW_DETERMINISTIC_SCHEDULING
    state = trio_run_module._r.getstate()
    _run(3, tmp_path / "quiet", schedule=None, nemesis="none", **{"time-limit": 1.0})
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

    def forbid(name: str, real: Any = None) -> Any:
        def raiser(*args: object, **kwargs: object) -> Any:
            # logging stamps each record's `created` from the wall clock; node logs
            # print simulated time instead, so that reading never reaches a file.
            if real is not None and sys._getframe(1).f_globals.get("__name__") == "logging":
                return real(*args, **kwargs)
            seen.append(name)
            raise _Forbidden(f"the simulation called {name}")

        return raiser

    for name in ("time", "time_ns", "monotonic", "monotonic_ns", "sleep"):
        monkeypatch.setattr(time, name, forbid(f"time.{name}", getattr(time, name)))
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
    no_host_resources: list[str], tmp_path: Path,
) -> None:
    global_rng_state = random.getstate()
    history, executed = _run(5, tmp_path / "run")
    assert no_host_resources == []
    assert random.getstate() == global_rng_state, "something drew from the global rng"
    assert executed.seconds > ROTATION.duration_ms / 1000
    assert len(history.splitlines()) > 100
