"""One broker node of the process runtime: a `faultline broker` OS process on a data dir.

A `BrokerNode` survives its processes: `start` runs a new process on the same data
dir and log file (appended), which is what `restart` after a kill or power loss is.

The process is spawned from the trio run's own thread (not trio's worker threads, which
`trio.lowlevel.open_process` uses): PR_SET_PDEATHSIG is tied to the spawning *thread*,
and a broker must die with the harness, not with an idle worker thread. It runs in its
own process group, so a Ctrl-C at the harness's terminal reaches only the harness, which
then stops its brokers itself. Its exit is awaited through a pidfd, cancellably.
"""

from __future__ import annotations

import contextlib
import enum
import os
import signal
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import NamedTuple

import trio

from harness.broker_process import (
    BrokerStartError,
    broker_command,
    die_with_parent,
    has_controller_listener,
    parse_controller_listening,
    parse_listening,
)
from harness.runtime.process.proxy import Upstream

# How long a process may take to act on SIGUSR2 (crash) or SIGTERM before SIGKILL.
GRACE_S = 10.0
# How long to wait, after a process exited, for its output to be copied to the log.
OUTPUT_DRAIN_S = 2.0


class NodeState(enum.Enum):
    """Where a node's process is."""

    STOPPED = "stopped"
    RUNNING = "running"
    PAUSED = "paused"


class BrokerNode:
    """A broker node: its name, id, directories and (when running) its process."""

    def __init__(
        self,
        name: str,
        node_id: int,
        node_dir: Path,
        settings: Mapping[str, object],
        *,
        listen_host: str = "127.0.0.1",
    ) -> None:
        self.name = name
        self.node_id = node_id
        self.node_dir = node_dir
        self.data_dir = node_dir / "data"
        self.log_path = node_dir / "broker.log"
        self.settings = dict(settings)
        self.listen_host = listen_host
        self._state = NodeState.STOPPED
        self.address: Upstream | None = None
        self.controller_address: Upstream | None = None
        """Its controller listener's real address (nodes with controller.listener.names)."""
        self.exit_codes: list[int] = []
        self._popen: subprocess.Popen[bytes] | None = None
        self._pidfd: int | None = None
        self._output_done = trio.Event()

    def __repr__(self) -> str:
        return f"BrokerNode({self.name}, id={self.node_id}, {self.state.value}, pid={self.pid})"

    @property
    def state(self) -> NodeState:
        """Stopped, running or paused; a process that exited on its own reads as stopped."""
        if self._popen is not None and self._popen.poll() is not None:
            self._forget(self._popen.returncode)
        return self._state

    @property
    def pid(self) -> int | None:
        """The running (or paused) process's id."""
        return self._popen.pid if self._popen is not None else None

    async def start(self, nursery: trio.Nursery, *, timeout_s: float = 20.0) -> Upstream:
        """Run a broker process on the data dir; return once it listens.

        `nursery` owns the task copying the broker's output to `broker.log`; it must
        outlive the process.
        """
        if self.state is not NodeState.STOPPED:
            raise RuntimeError(f"{self.name} is already {self.state.value}")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = broker_command(self.data_dir, listen=f"{self.listen_host}:0", settings=self.settings)
        read_fd, write_fd = os.pipe()
        try:
            popen = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=write_fd,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                process_group=0,
                preexec_fn=_die_with(os.getpid()),
            )
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        self._popen = popen
        self._pidfd = os.pidfd_open(popen.pid)
        self._state = NodeState.RUNNING
        output = trio.lowlevel.FdStream(read_fd)
        self._output_done = trio.Event()
        try:
            with trio.fail_after(timeout_s):
                found = await nursery.start(
                    _pump_output,
                    output,
                    self.log_path,
                    self._output_done,
                    has_controller_listener(self.settings),
                )
        except BaseException as exc:
            await self.kill()
            if isinstance(exc, trio.TooSlowError):
                raise BrokerStartError(
                    f"{self.name} did not report listening in {timeout_s}s; see {self.log_path}"
                ) from None
            if isinstance(exc, BrokerStartError):
                raise BrokerStartError(
                    f"{self.name} exited with code {self.exit_codes[-1]} before listening; "
                    f"see {self.log_path}"
                ) from None
            raise
        self.address = Upstream(*found.client)
        self.controller_address = Upstream(*found.controller) if found.controller else None
        return self.address

    async def wait(self) -> int:
        """Wait for the process to exit; returns its exit code (negative: killed by signal)."""
        popen, pidfd = self._popen, self._pidfd
        if popen is None or pidfd is None:
            raise RuntimeError(f"{self.name} has no process")
        while popen.poll() is None:
            # ClosedResourceError: reaped meanwhile by `state` (poll), which closed the pidfd.
            with contextlib.suppress(trio.ClosedResourceError):
                await trio.lowlevel.wait_readable(pidfd)
        if self._popen is popen:
            self._forget(popen.returncode)
        # Its last words (e.g. the SIGUSR2 crash line) reach broker.log before we return.
        with trio.move_on_after(OUTPUT_DRAIN_S):
            await self._output_done.wait()
        return popen.returncode

    def _forget(self, code: int) -> None:
        if self._pidfd is not None:
            trio.lowlevel.notify_closing(self._pidfd)
            os.close(self._pidfd)
        self._popen = None
        self._pidfd = None
        self.address = None
        self.controller_address = None
        self._state = NodeState.STOPPED
        self.exit_codes.append(code)

    def signal(self, signum: int) -> None:
        """Send a signal to the process (no-op when it is gone)."""
        if self._popen is not None and self._popen.poll() is None:
            self._popen.send_signal(signum)

    async def kill(self) -> int:
        """SIGKILL and reap; works on a paused process too."""
        if self._popen is None:
            return self.exit_codes[-1] if self.exit_codes else 0
        self.signal(signal.SIGKILL)
        with trio.CancelScope(shield=True):
            code = await self.wait()
        return code

    async def crash_keeping_page_cache(self) -> int:
        """SIGUSR2: the broker writes its volatile buffers to the OS unsynced and exits 137.

        A paused broker is continued so that it can act; one that does not exit within
        GRACE_S is SIGKILLed.
        """
        if self._popen is None:
            raise RuntimeError(f"{self.name} is not running")
        self.signal(signal.SIGUSR2)
        self.signal(signal.SIGCONT)
        with trio.move_on_after(GRACE_S):
            return await self.wait()
        return await self.kill()

    async def terminate(self, timeout_s: float = GRACE_S) -> int:
        """SIGTERM (after SIGCONT, should it be paused) and wait; SIGKILL if it lingers."""
        if self._popen is None:
            return self.exit_codes[-1] if self.exit_codes else 0
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)
        with trio.move_on_after(timeout_s):
            return await self.wait()
        return await self.kill()

    async def pause(self) -> None:
        """SIGSTOP; returns once the kernel reports the process stopped."""
        if self.state is not NodeState.RUNNING:
            raise RuntimeError(f"cannot pause {self.name}: it is {self.state.value}")
        self.signal(signal.SIGSTOP)
        self._state = NodeState.PAUSED
        await _until_proc_state(self.pid, stopped=True)

    async def resume(self) -> None:
        """SIGCONT; returns once the process runs again."""
        if self.state is not NodeState.PAUSED:
            raise RuntimeError(f"cannot resume {self.name}: it is {self.state.value}")
        self.signal(signal.SIGCONT)
        self._state = NodeState.RUNNING
        await _until_proc_state(self.pid, stopped=False)


def _die_with(parent_pid: int) -> Callable[[], None]:
    def preexec() -> None:
        die_with_parent(parent_pid)

    return preexec


async def _until_proc_state(pid: int | None, *, stopped: bool) -> None:
    # Signals are delivered asynchronously; /proc/<pid>/stat says when it took effect.
    if pid is None:
        return
    stat = Path(f"/proc/{pid}/stat")
    with trio.move_on_after(2.0):
        while True:
            try:
                state = stat.read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                return
            if (state in ("T", "t")) == stopped:
                return
            await trio.sleep(0.001)


class Listening(NamedTuple):
    """Where a started broker listens: (host, port) of its client and controller listeners."""

    client: tuple[str, int]
    controller: tuple[str, int] | None


async def _pump_output(
    output: trio.lowlevel.FdStream,
    log_path: Path,
    done: trio.Event,
    wants_controller: bool,
    *,
    task_status: trio.TaskStatus[Listening] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Copy the broker's output to its log; report its addresses from `listening on` (and,
    with `wants_controller`, `controller listening on`)."""
    try:
        await _copy_output(output, log_path, wants_controller, task_status)
    finally:
        done.set()


async def _copy_output(
    output: trio.lowlevel.FdStream,
    log_path: Path,
    wants_controller: bool,
    task_status: trio.TaskStatus[Listening],
) -> None:
    pending = b""
    listening = False
    client: tuple[str, int] | None = None
    controller: tuple[str, int] | None = None
    async with output:
        with open(log_path, "ab") as log:
            while True:
                chunk = await output.receive_some(65536)
                if not chunk:
                    break
                # Small synchronous writes: the log is a local file, written as it comes.
                log.write(chunk)
                log.flush()
                if listening:
                    continue
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    client = client or parse_listening(line)
                    controller = controller or parse_controller_listening(line)
                    if client is not None and (controller is not None or not wants_controller):
                        listening = True
                        task_status.started(Listening(client, controller))
                        break
    if not listening:
        raise BrokerStartError("the broker exited before listening")
