"""Connection handling: frames in, handlers, frames out; and `serve_broker`, the entry point.

Each connection is one task that reads a request, runs its handler and writes the
response before reading the next one, so responses leave in request order, as
Kafka's network layer guarantees by muting a channel while a request is in flight.
Pipelined requests simply wait in the socket buffer.

What goes wrong on a connection stays on that connection:

- a frame whose size is negative or above socket.request.max.bytes, a header that
  cannot be read, an unknown API key, a client that disconnects mid-frame: the
  connection is closed;
- a known API at an unsupported version: an UNSUPPORTED_VERSION response (for
  ApiVersions, Kafka's v0 fallback listing the supported ranges), or a closed connection
  when no response schema exists at that version (a negative one, say);
- a body that does not decode, or breaks its schema (a null in a non-nullable field, a
  negative or oversized length; `protocol/validation.py`): an INVALID_REQUEST response
  and the handler never runs, then the next frame;
- a bug in a handler: logged with its traceback, the connection closed, the broker
  keeps serving everyone else.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import trio
from kafka.protocol.api_key import ApiKey

from .broker import Broker
from .config import BrokerConfig, Listener
from .env import NodeEnv
from .errors import ErrorCode
from .handlers import HANDLERS, CloseConnection, RequestContext
from .membership import ClusterMembership
from .protocol import (
    FrameDecoder,
    MalformedRequestError,
    ProtocolError,
    UnknownApiError,
    UnsupportedVersionError,
    decode_request,
    encode_response,
    error_response,
    receive_frame,
    unsupported_api_versions_frame,
)

logger = logging.getLogger("faultline.broker.server")


@dataclass(frozen=True)
class RunningBroker:
    """What `serve_broker` reports once it accepts connections."""

    broker: Broker
    addresses: list[Listener]

    @property
    def address(self) -> Listener:
        """The first bound address (a real port even when port 0 was asked for)."""
        return self.addresses[0]


def _peer_host(stream: trio.abc.Stream) -> str:
    # Only for DescribeGroups' client_host; streams without a socket (the simulation's
    # memory streams) have no peer address to report.
    sock = getattr(stream, "socket", None)
    if sock is None:
        return ""
    try:
        return "/" + str(sock.getpeername()[0])
    except (OSError, IndexError, TypeError):
        return ""


def _bound_address(listener: trio.abc.Listener[trio.abc.Stream], asked: Listener) -> Listener:
    sock = getattr(listener, "socket", None)
    if sock is None:
        return asked
    host, port = sock.getsockname()[:2]
    return Listener(str(host), int(port))


async def _respond(request_frame: bytes, broker: Broker, client_host: str) -> bytes | None:
    """The framed answer to one request frame, or None for no answer.

    Raises ProtocolError or CloseConnection when the connection must close instead.
    """
    try:
        request = decode_request(request_frame)
    except UnsupportedVersionError as exc:
        if exc.spec.key == ApiKey.ApiVersions:
            return unsupported_api_versions_frame(exc.header)
        if not exc.spec.answerable(exc.header.api_version):
            raise  # no schema to encode an answer in (v-1, v99): close, as Kafka does
        logger.info("%s; answering UNSUPPORTED_VERSION", exc)
        response = error_response(exc.spec, exc.header.api_version, ErrorCode.UNSUPPORTED_VERSION)
        return encode_response(exc.header, response)
    except MalformedRequestError as exc:
        logger.info("%s; answering INVALID_REQUEST", exc)
        response = error_response(exc.spec, exc.header.api_version, ErrorCode.INVALID_REQUEST)
        return encode_response(exc.header, response)
    ctx = RequestContext(request.header, client_host)
    handler = HANDLERS[request.spec.key]
    response = await handler(broker, ctx, request.body)
    if response is None:
        return None
    return encode_response(request.header, response)


async def serve_connection(broker: Broker, stream: trio.abc.Stream) -> None:
    """Serve one client connection until it closes or misbehaves."""
    client_host = _peer_host(stream)
    decoder = FrameDecoder(broker.config.socket_request_max_bytes)
    async with stream:
        while True:
            try:
                request_frame = await receive_frame(stream, decoder)
                if request_frame is None:
                    return
                answer = await _respond(request_frame, broker, client_host)
                if answer is not None:
                    await stream.send_all(answer)
            except (UnknownApiError, UnsupportedVersionError, ProtocolError) as exc:
                logger.info("closing connection from %s: %s", client_host or "peer", exc)
                return
            except CloseConnection as exc:
                logger.debug("closing connection from %s: %s", client_host or "peer", exc)
                return
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            except Exception:
                logger.exception("unexpected error serving %s; closing its connection", client_host)
                return


async def serve_broker(
    env: NodeEnv,
    config: BrokerConfig,
    *,
    task_status: trio.TaskStatus[RunningBroker] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Open the broker from `env`, listen, serve until cancelled, then close the logs.

    Reports a `RunningBroker` (with the bound addresses) through `task_status` once it
    accepts connections. On cancellation (SIGTERM in the CLI) every connection is
    dropped and every log flushed and closed before this returns.
    """
    broker = await Broker.open(env, config)
    # In a cluster the quorum parts hang off the broker before any peer can call in.
    membership = ClusterMembership(env, config, broker) if config.cluster_mode else None
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(broker.run)
            listeners: list[trio.abc.Listener[trio.abc.Stream]] = []
            addresses: list[Listener] = []
            for asked in config.listeners:
                opened = await env.network.listen(asked.host, asked.port)
                listeners.extend(opened)
                addresses.extend(_bound_address(listener, asked) for listener in opened)
            broker.advertise(addresses[0])

            async def handle(stream: trio.abc.Stream) -> None:
                """Serve one accepted connection (trio.serve_listeners' handler)."""
                await serve_connection(broker, stream)

            await nursery.start(
                functools.partial(trio.serve_listeners, handle, listeners, handler_nursery=nursery)
            )
            if membership is not None:
                endpoint = broker.endpoint
                await nursery.start(
                    membership.run, Listener(endpoint.host, endpoint.port)
                )
            logger.info("broker %d serving on %s", broker.node_id, ", ".join(map(str, addresses)))
            task_status.started(RunningBroker(broker, addresses))
    finally:
        with trio.CancelScope(shield=True):
            await broker.close()
