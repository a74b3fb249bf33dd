"""`PeerChannel`: one Kafka-protocol connection from this node to one peer node.

What Kafka's `NetworkClient` is to a broker's inter-broker senders, reduced to what the
quorum, the controller client and the replica fetchers need: a request goes out, its
response comes back, one at a time, over a connection opened on first use.

Failure is simple on purpose. Any transport error — connect refused, reset, EOF, a
response that is not the answer to the request, or no answer within the request
timeout — closes the connection and raises `PeerUnavailableError`; the next request
dials again. A caller cancelled mid-request leaves no half-read response behind either:
the connection is dropped, since its next bytes would belong to the abandoned request.
The channel starts no tasks, so it cannot leak one.
"""

from __future__ import annotations

import logging

import trio
from kafka.protocol.api_message import ApiMessage

from ..env import Network
from ..protocol import FrameDecoder, ProtocolError, decode_response, encode_request, receive_frame

logger = logging.getLogger("faultline.broker.peer")

DEFAULT_MAX_RESPONSE_BYTES = 100 * 2**20


class PeerUnavailableError(Exception):
    """The peer could not be reached or did not answer properly; the request may be retried."""


class PeerChannel:
    """One connection to `host:port`, one request at a time, reconnecting lazily.

    Concurrent callers queue on a lock, so responses can never be paired with the wrong
    request; use one channel per peer and per independent stream of requests.
    """

    def __init__(
        self,
        network: Network,
        host: str,
        port: int,
        *,
        client_id: str,
        request_timeout_s: float,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        if request_timeout_s <= 0:
            raise ValueError(f"request_timeout_s must be positive, got {request_timeout_s}")
        if max_response_bytes <= 0:
            raise ValueError(f"max_response_bytes must be positive, got {max_response_bytes}")
        self.network = network
        self.host = host
        self.port = port
        self.client_id = client_id
        self.request_timeout_s = request_timeout_s
        self.max_response_bytes = max_response_bytes
        self._lock = trio.Lock()
        self._stream: trio.abc.Stream | None = None
        self._decoder = FrameDecoder(max_response_bytes)
        self._correlation_id = 0
        self._closed = False
        self.connects = 0
        """How many connections this channel has opened (for tests and diagnostics)."""

    def __repr__(self) -> str:
        return f"PeerChannel({self.host}:{self.port}, client_id={self.client_id!r})"

    @property
    def connected(self) -> bool:
        """Whether a connection is open right now (it may still turn out to be dead)."""
        return self._stream is not None

    async def request(self, body: ApiMessage, version: int) -> ApiMessage:
        """Send `body` at `version` and return the peer's response.

        Raises PeerUnavailableError when the peer cannot be reached, closes or resets
        the connection, answers with something malformed, or does not answer within
        `request_timeout_s` (connecting included).
        """
        async with self._lock:
            if self._closed:
                raise PeerUnavailableError(f"{self!r} is closed")
            done = False
            try:
                with trio.fail_after(self.request_timeout_s):
                    response = await self._exchange(body, version)
                done = True
                return response
            except trio.TooSlowError:
                raise PeerUnavailableError(
                    f"{self.host}:{self.port} did not answer {type(body).__name__} within "
                    f"{self.request_timeout_s:g}s"
                ) from None
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise PeerUnavailableError(
                    f"{self.host}:{self.port} is unreachable ({type(body).__name__}): {exc}"
                ) from exc
            except ProtocolError as exc:
                raise PeerUnavailableError(
                    f"{self.host}:{self.port} answered {type(body).__name__} badly: {exc}"
                ) from exc
            finally:
                if not done:
                    # Whatever happened, this connection may hold bytes of an abandoned
                    # exchange: never reuse it.
                    await self._drop()

    async def _exchange(self, body: ApiMessage, version: int) -> ApiMessage:
        stream = await self._connect()
        self._correlation_id = (self._correlation_id + 1) & 0x7FFFFFFF
        correlation_id = self._correlation_id
        await stream.send_all(encode_request(body, version, correlation_id, self.client_id))
        frame = await receive_frame(stream, self._decoder)
        if frame is None:
            raise trio.BrokenResourceError("the peer closed the connection")
        return decode_response(frame, type(body), version, correlation_id)

    async def _connect(self) -> trio.abc.Stream:
        if self._stream is None:
            stream = await self.network.connect(self.host, self.port)
            if self._closed:  # aclose() ran while we dialled
                await trio.aclose_forcefully(stream)
                raise trio.ClosedResourceError(f"{self!r} was closed")
            self._stream = stream
            self._decoder = FrameDecoder(self.max_response_bytes)
            self.connects += 1
            logger.debug("%s: connected (connection %d)", self, self.connects)
        return self._stream

    async def _drop(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            # Forceful: it must not wait on a dead peer, and works when cancelled.
            await trio.aclose_forcefully(stream)

    async def aclose(self) -> None:
        """Close the connection; later requests raise PeerUnavailableError."""
        self._closed = True
        await self._drop()
