"""The reference broker as a real OS process (`faultline broker ...`), started and stopped
by the harness, benchmarks and tests.

The broker prints `listening on HOST:PORT` once bound (port 0 picks a free port), which is
how the launcher learns its address without racing for a port; a node with a controller
listener (controller.listener.names) then prints `controller listening on HOST:PORT`.

`start_broker` is the blocking launcher for tests and benchmarks. The process runtime
(`harness/runtime/process`) spawns brokers from its trio run with the same command
(`broker_command`) and `die_with_parent` as the child's preexec hook, so that the
kernel kills a broker whose harness died without cleaning up.
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

_LISTENING = re.compile(rb"listening on (\S+):(\d+)")
_CONTROLLER_LISTENING = re.compile(rb"controller listening on (\S+):(\d+)")
_PR_SET_PDEATHSIG = 1


def parse_listening(line: bytes) -> tuple[str, int] | None:
    """The (host, port) of a broker's `listening on HOST:PORT` line (a client listener),
    else None."""
    match = _LISTENING.match(line.strip())
    return (match.group(1).decode(), int(match.group(2))) if match else None


def parse_controller_listening(line: bytes) -> tuple[str, int] | None:
    """The (host, port) of a broker's `controller listening on HOST:PORT` line, else None."""
    match = _CONTROLLER_LISTENING.match(line.strip())
    return (match.group(1).decode(), int(match.group(2))) if match else None


def has_controller_listener(settings: Mapping[str, object] | None) -> bool:
    """Whether a broker started with `settings` opens a controller listener."""
    return bool(str((settings or {}).get("controller.listener.names", "")).strip())


def broker_command(
    data_dir: Path, *, listen: str = "127.0.0.1:0", settings: Mapping[str, object] | None = None
) -> list[str]:
    """The argv of `faultline broker` on `data_dir` with Kafka-named `settings`.

    `listen` becomes `--listen` (the single PLAINTEXT listener) unless `settings` name
    the `listeners` themselves (e.g. with a CONTROLLER listener).
    """
    cmd = [sys.executable, "-m", "harness.cli", "broker", "--data-dir", str(data_dir)]
    if "listeners" not in (settings or {}):
        cmd += ["--listen", listen]
    for name, value in (settings or {}).items():
        rendered = str(value).lower() if isinstance(value, bool) else str(value)
        cmd += ["--set", f"{name}={rendered}"]
    return cmd


def _resolve_prctl() -> Callable[..., int] | None:
    # Resolved in the parent, once: after fork() only the plain function call is safe,
    # dlopen/dlsym could wait forever on a lock another thread held at fork time.
    if not sys.platform.startswith("linux"):
        return None
    return ctypes.CDLL(None, use_errno=True).prctl


_prctl = _resolve_prctl()


def die_with_parent(parent_pid: int) -> None:
    """In a forked child (preexec_fn): get SIGKILL when the spawning thread dies (Linux).

    PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, so spawn from a
    thread that lives as long as the harness (the trio run's own thread), never from a
    worker thread. If the parent already died before prctl took effect, die now.
    """
    if _prctl is None:
        return
    if _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        os._exit(125)
    if os.getppid() != parent_pid:
        os._exit(125)


class BrokerStartError(RuntimeError):
    """Raised when a broker process exits or stays silent instead of listening."""


@dataclass
class BrokerProcess:
    """A running `faultline broker` process."""

    process: subprocess.Popen[bytes]
    host: str
    port: int
    data_dir: Path
    log_path: Path
    _pump: threading.Thread | None = field(default=None, repr=False)
    controller: tuple[str, int] | None = None
    """(host, port) of its controller listener, if it has one."""

    @property
    def bootstrap(self) -> str:
        """`host:port` for a Kafka client's bootstrap.servers."""
        return f"{self.host}:{self.port}"

    def kill(self) -> None:
        """SIGKILL: no shutdown hooks, un-fsynced data in process memory is gone."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def terminate(self, timeout_s: float = 20.0) -> int:
        """SIGTERM and wait for the clean shutdown; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._pump is not None:
            self._pump.join(timeout=5)
        return self.process.returncode


def start_broker(
    data_dir: Path,
    *,
    settings: Mapping[str, object] | None = None,
    listen: str = "127.0.0.1:0",
    log_path: Path | None = None,
    start_timeout_s: float = 20.0,
) -> BrokerProcess:
    """Start `faultline broker` on `listen` with Kafka-named `settings`; wait until it listens."""
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_path or data_dir.parent / f"{data_dir.name}.log"
    cmd = broker_command(data_dir, listen=listen, settings=settings)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    assert process.stdout is not None
    log = open(log_path, "ab")  # noqa: SIM115 - owned by the pump thread below
    deadline = time.monotonic() + start_timeout_s
    address: tuple[str, int] | None = None
    controller: tuple[str, int] | None = None
    wants_controller = has_controller_listener(settings)
    while address is None or (wants_controller and controller is None):
        line = process.stdout.readline()
        if not line:
            log.close()
            process.wait()
            raise BrokerStartError(
                f"broker exited with code {process.returncode} before listening; see {log_path}"
            )
        log.write(line)
        log.flush()
        address = address or parse_listening(line)
        controller = controller or parse_controller_listening(line)
        waiting = address is None or (wants_controller and controller is None)
        if waiting and time.monotonic() > deadline:
            process.kill()
            raise BrokerStartError(f"broker did not report listening in {start_timeout_s}s")

    def pump() -> None:
        # The broker's output must be drained or it blocks on a full pipe.
        with log:
            for chunk in iter(lambda: process.stdout.readline(), b""):  # type: ignore[union-attr]
                log.write(chunk)
                log.flush()

    pump_thread = threading.Thread(target=pump, name="broker-log-pump", daemon=True)
    pump_thread.start()
    return BrokerProcess(
        process, address[0], address[1], data_dir, log_path, pump_thread, controller
    )


@contextmanager
def running_broker(data_dir: Path, **kwargs: object) -> Iterator[BrokerProcess]:
    """`start_broker` as a context manager that never leaves the process behind."""
    broker = start_broker(data_dir, **kwargs)  # type: ignore[arg-type]
    try:
        yield broker
    finally:
        if broker.process.poll() is None:
            broker.terminate()
