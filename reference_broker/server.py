"""Connection handling: frames in, handlers, frames out; and `serve_broker`, the entry point.

Each connection is one task that reads a request, runs its handler and writes the
response before reading the next one, so responses leave in request order, as
Kafka's network layer guarantees by muting a channel while a request is in flight.
Pipelined requests simply wait in the socket buffer.

Memory for requests is bounded broker-wide, not only per frame: every frame reserves
its announced size from one pool of queued.max.request.bytes before its body is read
and holds it until its request is handled; a connection whose frame does not fit is
not read until another request gives bytes back (`protocol/memory_pool.py`).

What goes wrong on a connection stays on that connection:

- a frame whose size is negative or above socket.request.max.bytes, a header that
  cannot be read, an unknown API key, an API this listener does not serve, a client
  that disconnects mid-frame: the connection is closed;
- a known API at an unsupported version: an UNSUPPORTED_VERSION response (for
  ApiVersions, Kafka's v0 fallback listing the supported ranges), or a closed connection
  when no response schema exists at that version (a negative one, say);
- a body that does not decode, or breaks its schema (a null in a non-nullable field, a
  negative or oversized length; `protocol/validation.py`): an INVALID_REQUEST response
  and the handler never runs, then the next frame;
- a bug in a handler: logged with its traceback, the connection closed, the broker
  keeps serving everyone else.

Each listener serves one table of handlers (`handlers.BROKER_HANDLERS` on client
listeners, `handlers.CONTROLLER_HANDLERS` on the controller listeners of
controller.listener.names). A request for an API outside the table closes the
connection before its version or body is looked at, as Kafka's SocketServer does with
an API its listener's ApiVersionManager does not enable: a Vote or BrokerHeartbeat on
a client port never reaches the quorum, whatever its client id says.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Mapping
from dataclasses import dataclass

import trio
from kafka.protocol.api_key import ApiKey

from . import bugs
from .broker import Broker
from .config import BrokerConfig, Listener
from .env import NodeEnv
from .errors import ErrorCode
from .handlers import BROKER_HANDLERS, CONTROLLER_HANDLERS, CloseConnection, RequestContext
from .handlers.context import Handler
from .log_dir_failure import FailureAwareStorage, LogDirFailureChannel
from .membership import ClusterMembership
from .protocol import (
    FrameDecoder,
    MalformedRequestError,
    MemoryPool,
    ProtocolError,
    Request,
    RequestHeader,
    UnknownApiError,
    UnsupportedVersionError,
    decode_request,
    encode_response,
    error_response,
    receive_request,
    unsupported_api_versions_frame,
)

logger = logging.getLogger("faultline.broker.server")


class ApiNotEnabledError(ProtocolError):
    """A request for an API the listener it arrived on does not serve."""

    def __init__(self, header: RequestHeader) -> None:
        super().__init__(
            f"API key {header.api_key} (v{header.api_version}) is not enabled on this listener"
        )
        self.header = header


@dataclass(frozen=True)
class RunningBroker:
    """What `serve_broker` reports once it accepts connections."""

    broker: Broker
    addresses: list[Listener]
    """Every bound listener (named, real ports): the client listeners, then the controller's."""
    controller_addresses: list[Listener]

    @property
    def address(self) -> Listener:
        """The inter-broker listener's bound address (what clients use)."""
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
    return Listener(str(host), int(port), asked.name)


def _require_enabled(header: RequestHeader, handlers: Mapping[int, Handler]) -> None:
    if header.api_key not in handlers:
        raise ApiNotEnabledError(header)


def _decode_enabled(request_frame: bytes, handlers: Mapping[int, Handler]) -> Request:
    """`decode_request`, but an API outside `handlers` raises ApiNotEnabledError first,
    even when its version or body is bad too (so nothing tells it apart from an API
    the broker does not know)."""
    try:
        request = decode_request(request_frame)
    except (UnsupportedVersionError, MalformedRequestError) as exc:
        _require_enabled(exc.header, handlers)
        raise
    _require_enabled(request.header, handlers)
    return request


async def _respond(
    request_frame: bytes,
    broker: Broker,
    client_host: str,
    handlers: Mapping[int, Handler] = BROKER_HANDLERS,
) -> bytes | None:
    """The framed answer to one request frame, or None for no answer.

    Raises ProtocolError or CloseConnection when the connection must close instead.
    """
    try:
        request = _decode_enabled(request_frame, handlers)
    except UnsupportedVersionError as exc:
        if exc.spec.key == ApiKey.ApiVersions:
            return unsupported_api_versions_frame(exc.header, handlers.keys())
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
    handler = handlers[request.spec.key]
    response = await handler(broker, ctx, request.body)
    if response is None:
        return None
    return encode_response(request.header, response)


async def serve_connection(
    broker: Broker,
    stream: trio.abc.Stream,
    handlers: Mapping[int, Handler] = BROKER_HANDLERS,
    pool: MemoryPool | None = None,
) -> None:
    """Serve one connection with the APIs of `handlers` (its listener's table) until it
    closes or misbehaves.

    Each request frame holds its size in `pool` (the broker-wide queued.max.request.bytes
    budget; unbounded if None) from before its body is read until it has been handled.
    """
    client_host = _peer_host(stream)
    decoder = FrameDecoder(broker.config.socket_request_max_bytes)
    pool = pool if pool is not None else MemoryPool(None)
    async with stream:
        while True:
            try:
                received = await receive_request(stream, decoder, pool)
                if received is None:
                    return
                try:
                    answer = await _respond(received.body, broker, client_host, handlers)
                finally:
                    received.reservation.release()
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
    # Planted bugs (none unless configured) follow every task this broker starts.
    bugs.activate(config.bugs)
    if config.bugs:
        logger.info("broker %d runs with planted bugs: %s", config.node_id,
                       ", ".join(sorted(config.bugs)))
    # A disk error anywhere in the one log directory halts the broker, as in Kafka.
    channel = LogDirFailureChannel()
    env = dataclasses.replace(env, storage=FailureAwareStorage(env.storage, channel))
    try:
        broker = await Broker.open(env, config)
        # In a cluster the quorum parts hang off the broker before any peer can call in.
        membership = ClusterMembership(env, config, broker) if config.cluster_mode else None
    except Exception as exc:
        if channel.reason is not None:
            raise channel.error() from None
        # Its data cannot be used (damaged files, another cluster's): say why, loudly.
        logger.critical("broker %d cannot start: %s", config.node_id, exc)
        raise
    try:
        async with trio.open_nursery() as nursery:
            # A failed log dir ends everything at once (no watcher task: one more task would
            # change the seeded schedule of every simulated run).
            channel.on_failure = nursery.cancel_scope.cancel
            await nursery.start(broker.run)
            # The inter-broker listener first: it is what clients are told and what this
            # node registers with.
            inter_broker = config.inter_broker_listener
            client_side = [inter_broker, *(x for x in config.client_listeners if x != inter_broker)]
            bound: list[Listener] = []
            bound_controller: list[Listener] = []
            request_memory = MemoryPool(config.queued_max_request_bytes)
            for asked in [*client_side, *config.controller_listeners]:
                controller = config.is_controller_listener(asked)
                handlers = CONTROLLER_HANDLERS if controller else BROKER_HANDLERS
                opened = await env.network.listen(asked.host, asked.port)
                for listener in opened:
                    (bound_controller if controller else bound).append(
                        _bound_address(listener, asked)
                    )
                await nursery.start(
                    functools.partial(
                        trio.serve_listeners,
                        functools.partial(_serve_with, broker, handlers, request_memory),
                        opened,
                        handler_nursery=nursery,
                    )
                )
            broker.advertise(bound[0])
            if membership is not None:
                endpoint = broker.endpoint
                await nursery.start(membership.run, Listener(endpoint.host, endpoint.port))
            everything = [*bound, *bound_controller]
            logger.info("broker %d serving on %s", broker.node_id, ", ".join(
                f"{x.name}://{x}" for x in everything
            ))
            task_status.started(RunningBroker(broker, everything, bound_controller))
    except BaseException as exc:
        if channel.reason is None:
            raise
        # Halted: whatever the unwinding tasks raised is a consequence of the failed disk.
        raise channel.error() from (None if isinstance(exc, trio.Cancelled) else exc)
    finally:
        # A halt is not a shutdown (Kafka's Exit.halt): no last flush on a failed disk.
        if channel.reason is None:
            with trio.CancelScope(shield=True):
                await broker.close()
    if channel.reason is not None:
        raise channel.error()


async def _serve_with(
    broker: Broker, handlers: Mapping[int, Handler], pool: MemoryPool, stream: trio.abc.Stream
) -> None:
    """Serve one accepted connection of a listener (trio.serve_listeners' handler)."""
    await serve_connection(broker, stream, handlers, pool)
