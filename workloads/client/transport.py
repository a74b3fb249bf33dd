"""How the client reaches brokers: any object with `async connect(host, port) -> Stream`.

This is the dialing half of `reference_broker.env.Network`. The client never opens a
socket itself, so the same code runs over real TCP (`TcpNetwork`) and over the
simulated network of issue 5, which hands back trio memory streams.
"""

from __future__ import annotations

import time
from typing import Protocol

import trio


class Network(Protocol):
    """What the client dials through."""

    async def connect(self, host: str, port: int) -> trio.abc.Stream:
        """Open a stream to host:port; raise OSError when it cannot."""
        ...


class TcpNetwork:
    """Real TCP through trio (no socket options beyond trio's defaults: TCP_NODELAY is on)."""

    async def connect(self, host: str, port: int) -> trio.abc.Stream:
        """Open a TCP stream to host:port."""
        return await trio.open_tcp_stream(host, port)


def wall_clock_ms() -> int:
    """The host's wall clock in ms: the default record timestamp source on real TCP.

    The simulated runtime injects its own `clock_ms`; this is the one place the
    client package reads the host clock, as `reference_broker.os_env` is for the broker.
    """
    return time.time_ns() // 1_000_000


def parse_address(address: str) -> tuple[str, int]:
    """Split `host:port` (or `[v6]:port`) into its parts, with an actionable error."""
    host, sep, port = address.strip().rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"broker address {address!r} is not host:port (e.g. 127.0.0.1:9092)")
    return host.strip("[]"), int(port)
