"""Starting reference brokers from tests: as a real `faultline broker` process, or in-process.

- `start_broker` / `running_broker` (re-exported from `harness.broker_process`): the CLI as a
  subprocess on a free port, for tests that need SIGKILL, SIGTERM or the command line.
- `in_process_broker`: `serve_broker` inside the test's own trio run, on a real loopback
  TCP port and real files under a directory, for fast protocol and client tests. Blocking
  Kafka clients talk to it from `trio.to_thread.run_sync`.
- `RawConnection`: one trio TCP connection that sends exact request bytes and reads frames,
  for tests that need to control every byte.
"""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

import trio
from kafka.protocol.api_message import ApiMessage

from harness.broker_process import BrokerProcess, BrokerStartError, running_broker, start_broker
from reference_broker.config import BrokerConfig
from reference_broker.os_env import os_node_env
from reference_broker.server import RunningBroker, serve_broker
from tests.wire import encode_request

__all__ = [
    "BrokerProcess",
    "BrokerStartError",
    "RawConnection",
    "RunningBroker",
    "bootstrap_of",
    "in_process_broker",
    "running_broker",
    "start_broker",
]


@asynccontextmanager
async def in_process_broker(
    data_dir: Path,
    settings: Mapping[str, object] | None = None,
    *,
    seed: int = 0,
) -> AsyncIterator[RunningBroker]:
    """Run a broker in this trio run on 127.0.0.1 (free port); stop it cleanly on exit."""
    props: dict[str, object] = {"listeners": "PLAINTEXT://127.0.0.1:0"}
    props.update(settings or {})
    config = BrokerConfig.from_properties(props)
    env = os_node_env(data_dir, volatile_until_fsync=config.volatile_until_fsync, seed=seed)
    async with trio.open_nursery() as nursery:
        running: RunningBroker = await nursery.start(serve_broker, env, config)
        try:
            yield running
        finally:
            nursery.cancel_scope.cancel()


def bootstrap_of(running: RunningBroker) -> str:
    """`host:port` of an in-process broker, for a client's bootstrap servers."""
    return f"{running.address.host}:{running.address.port}"


class RawConnection:
    """A raw Kafka connection on trio: exact bytes out, whole frames in."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.correlation_id = 0
        self._buffer = bytearray()

    @classmethod
    async def open(cls, running: RunningBroker) -> RawConnection:
        """Connect to an in-process broker."""
        return cls(await trio.open_tcp_stream(running.address.host, running.address.port))

    async def aclose(self) -> None:
        """Close the connection."""
        await self.stream.aclose()

    async def send_raw(self, data: bytes) -> None:
        """Write bytes exactly as given."""
        await self.stream.send_all(data)

    def encode(self, request: ApiMessage, version: int) -> bytes:
        """The framed bytes of `request` at `version` with the next correlation id."""
        self.correlation_id += 1
        return encode_request(request, version, self.correlation_id)

    async def read_frame(self) -> bytes | None:
        """One response frame without its size prefix; None if the broker closed the connection."""
        while True:
            if len(self._buffer) >= 4:
                (size,) = struct.unpack_from(">i", self._buffer)
                if len(self._buffer) >= 4 + size:
                    frame = bytes(self._buffer[4 : 4 + size])
                    del self._buffer[: 4 + size]
                    return frame
            try:
                data = await self.stream.receive_some(65536)
            except trio.BrokenResourceError:
                return None
            if not data:
                return None
            self._buffer += data

    async def request(
        self, request: ApiMessage, version: int, response_class: type[ApiMessage]
    ) -> ApiMessage:
        """Send `request` and decode the response to it."""
        await self.send_raw(self.encode(request, version))
        frame = await self.read_frame()
        if frame is None:
            raise ConnectionError("broker closed the connection instead of answering")
        return response_class.decode(frame, version=version, header=True)
