"""Decode request frames and encode response frames with kafka-python's JSON-schema messages.

Only the 4-byte size prefix is hand-written (framing.py); headers and bodies, including
flexible versions and tagged fields, go through `kafka.protocol`'s compiled codecs.

A request header is decoded in two steps because its own version depends on the
API and version it names: header v1 (no tagged fields) is read first, and if that
API version is flexible, re-read as header v2. Kafka's special cases:

- ApiVersions responses always use response header v0, so that a client that sent
  a version the broker does not know can still read the answer;
- an ApiVersions request of a version newer than the broker serves is answered with
  a v0 response carrying UNSUPPORTED_VERSION and the supported ranges (KIP-511).

The other direction, for requests this node sends to its peers (`reference_broker.peer`),
is `encode_request` and `decode_response`.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from kafka.protocol.api_header import RequestHeader as KafkaRequestHeader
from kafka.protocol.api_header import ResponseHeader as KafkaResponseHeader
from kafka.protocol.api_key import ApiKey
from kafka.protocol.api_message import ApiMessage
from kafka.protocol.schemas.fields.codecs.encode_buffer import EncodeBufferPool

from ..errors import ErrorCode
from .apis import ALL_APIS, SUPPORTED_APIS, ApiSpec
from .framing import ProtocolError
from .validation import InvalidBodyError, check_body

_HEADER_V1 = KafkaRequestHeader._struct.compiled_decode_from(
    1, compact=False, tagged=False, data_class=KafkaRequestHeader
)
_HEADER_V2 = KafkaRequestHeader._struct.compiled_decode_from(
    2, compact=False, tagged=True, data_class=KafkaRequestHeader
)
_RESPONSE_HEADER_V0 = KafkaResponseHeader._struct.compiled_decode_from(
    0, compact=False, tagged=False, data_class=KafkaResponseHeader
)
_RESPONSE_HEADER_V1 = KafkaResponseHeader._struct.compiled_decode_from(
    1, compact=False, tagged=True, data_class=KafkaResponseHeader
)


@dataclass(frozen=True, slots=True)
class RequestHeader:
    """The fields of a request header the broker uses."""

    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None


@dataclass(frozen=True, slots=True)
class Request:
    """A decoded request: its header, the API it belongs to and its body."""

    header: RequestHeader
    spec: ApiSpec
    body: ApiMessage

    @property
    def version(self) -> int:
        """The API version the client used (responses must use the same)."""
        return self.header.api_version


class UnknownApiError(ProtocolError):
    """The request names an API key this broker does not serve; Kafka closes the connection."""

    def __init__(self, header: RequestHeader) -> None:
        super().__init__(f"unknown or unsupported api key {header.api_key}")
        self.header = header


class UnsupportedVersionError(ProtocolError):
    """A known API at a version outside the range this broker serves."""

    def __init__(self, header: RequestHeader, spec: ApiSpec) -> None:
        super().__init__(
            f"{spec.key.name} v{header.api_version} is not supported "
            f"(this broker serves v{spec.min_version}..v{spec.max_version})"
        )
        self.header = header
        self.spec = spec


class MalformedRequestError(ProtocolError):
    """The header parsed but the body did not; carries what is needed for an error response."""

    def __init__(self, header: RequestHeader, spec: ApiSpec, reason: str) -> None:
        super().__init__(f"malformed {spec.key.name} v{header.api_version} body: {reason}")
        self.header = header
        self.spec = spec


def decode_header(frame: bytes | memoryview) -> tuple[RequestHeader, int]:
    """Decode the request header; returns it and the offset where the body starts.

    Raises ProtocolError when not even a v1 header can be read.
    """
    view = memoryview(frame)
    try:
        raw, pos = _HEADER_V1(view, 0)
    except Exception as exc:  # truncated or garbage header: kafka-python raises various types
        raise ProtocolError(f"unreadable request header ({len(view)} bytes): {exc!r}") from exc
    api_key, version = raw.request_api_key, raw.request_api_version
    spec = ALL_APIS.get(api_key)
    if spec is not None and spec.supports(version) and spec.flexible(version):
        try:
            raw, pos = _HEADER_V2(view, 0)
        except Exception as exc:
            raise ProtocolError(f"unreadable flexible request header: {exc!r}") from exc
    if pos > len(view):
        raise ProtocolError(f"truncated request header ({len(view)} bytes)")
    header = RequestHeader(api_key, version, raw.correlation_id, raw.client_id)
    return header, pos


def decode_request(frame: bytes | memoryview) -> Request:
    """Decode one request frame (without its size prefix).

    Raises UnknownApiError, UnsupportedVersionError, MalformedRequestError (also for a
    body that breaks its schema: a null where the field is not nullable, a negative or
    oversized length; see validation.py), or ProtocolError for an unreadable header.
    """
    header, pos = decode_header(frame)
    spec = ALL_APIS.get(header.api_key)
    if spec is None:
        raise UnknownApiError(header)
    if not spec.supports(header.api_version):
        raise UnsupportedVersionError(header, spec)
    view = memoryview(frame)
    try:
        # The schema's rules first (nullability, lengths, counts): kafka-python's decoder
        # would turn some breaches into None or [] and hand them to a handler.
        check_body(spec.request, header.api_version, view, pos)
    except InvalidBodyError as exc:
        raise MalformedRequestError(header, spec, str(exc)) from exc
    try:
        body, end = _body_decoder(spec, header.api_version)(view, pos)
    except Exception as exc:  # struct.error, ValueError, IndexError, UnicodeDecodeError...
        raise MalformedRequestError(header, spec, repr(exc)) from exc
    if end > len(view):
        # kafka-python's decoders slice past the end silently; a short body is truncated.
        raise MalformedRequestError(
            header, spec, f"body needs {end - pos} bytes, frame has {len(view) - pos}"
        )
    return Request(header, spec, body)


_DECODERS: dict[tuple[int, int], Callable[[memoryview, int], tuple[ApiMessage, int]]] = {}


def _body_decoder(
    spec: ApiSpec, version: int
) -> Callable[[memoryview, int], tuple[ApiMessage, int]]:
    # ApiMessage.decode, minus its habit of dropping the end position we need to check.
    key = (spec.key, version)
    decoder = _DECODERS.get(key)
    if decoder is None:
        flexible = spec.flexible(version)
        decoder = spec.request._struct.compiled_decode_from(
            version, compact=flexible, tagged=flexible, data_class=spec.request[None]
        )
        _DECODERS[key] = decoder
    return decoder


_RESPONSE_HEAD = struct.Struct(">ii")  # frame size, correlation id
_ENCODERS: dict[tuple[type[ApiMessage], int], tuple[Callable[[ApiMessage, Any], None], bool]] = {}


def _response_encoder(
    cls: type[ApiMessage], api_key: int, version: int
) -> tuple[Callable[[ApiMessage, Any], None], bool]:
    # (kafka-python's compiled body encoder, whether the response header has tagged fields)
    key = (cls, version)
    found = _ENCODERS.get(key)
    if found is None:
        flexible = cls.flexible_version_q(version)
        encoder = cls._struct.compiled_encode_into(version, compact=flexible, tagged=flexible)
        # ApiVersions answers carry header v0 at every version (see the module docstring).
        found = _ENCODERS[key] = (encoder, flexible and api_key != ApiKey.ApiVersions)
    return found


def encode_response(header: RequestHeader, response: ApiMessage) -> bytes:
    """Encode `response` as the answer to `header`, framed, at the request's version.

    The body is kafka-python's compiled encoder writing into its pooled buffer; the
    size and the response header (a correlation id, plus an empty tagged-field count
    when flexible) are packed here, because building kafka-python's header object per
    response costs as much as encoding a small body.
    """
    version = header.api_version
    if version != response.API_VERSION:
        response.API_VERSION = version
    encoder, tagged = _response_encoder(type(response), header.api_key, version)
    with EncodeBufferPool.acquire() as out:
        start = _RESPONSE_HEAD.size + tagged
        out.ensure(start)
        if tagged:
            out.buf[_RESPONSE_HEAD.size] = 0
        out.pos = start
        encoder(response, out)
        _RESPONSE_HEAD.pack_into(out.buf, 0, out.pos - 4, header.correlation_id)
        return bytes(memoryview(out.buf)[: out.pos])


def error_response(spec: ApiSpec, version: int, code: ErrorCode) -> ApiMessage:
    """A response of `spec` at `version` with schema defaults and a top-level error code.

    APIs whose errors live only per partition (Produce, Fetch before v7) get an empty
    response, which a client reads as "no answer for my partitions" and retries.
    """
    response = spec.response(version=version)
    field = spec.response.fields.get("error_code")
    if field is not None and field.for_version_q(version):
        response.error_code = int(code)
    return response


def api_versions_response(
    version: int, error: ErrorCode = ErrorCode.NONE, keys: Collection[int] | None = None
) -> ApiMessage:
    """The ApiVersions answer: every API of `keys` (default: the client APIs) with its
    version range."""
    spec = SUPPORTED_APIS[ApiKey.ApiVersions]
    entry = spec.response.ApiVersion
    listed = SUPPORTED_APIS.values() if keys is None else [ALL_APIS[k] for k in keys]
    return spec.response(
        version=version,
        error_code=int(error),
        api_keys=[
            entry(api_key=int(s.key), min_version=s.min_version, max_version=s.max_version)
            for s in sorted(listed, key=lambda s: s.key)
        ],
        throttle_time_ms=0,
    )


def unsupported_api_versions_frame(
    header: RequestHeader, keys: Collection[int] | None = None
) -> bytes:
    """Kafka's answer to an ApiVersions request newer than the broker: v0 with the ranges
    of `keys` (default: the client APIs)."""
    response = api_versions_response(0, ErrorCode.UNSUPPORTED_VERSION, keys)
    response.with_header(correlation_id=header.correlation_id)
    return bytes(response.encode(header=True, framed=True))


class MalformedResponseError(ProtocolError):
    """A peer's response frame does not decode as the answer to the request sent."""


def encode_request(body: ApiMessage, version: int, correlation_id: int, client_id: str) -> bytes:
    """Frame `body` as a request at `version` with a request header, as a client sends it.

    Sets the version and header on `body` itself (kafka-python keeps them there).
    """
    # The version first: kafka-python builds the header from it.
    body.API_VERSION = version
    body.with_header(correlation_id=correlation_id, client_id=client_id)
    return bytes(body.encode(header=True, framed=True))


def decode_response(
    frame: bytes | memoryview,
    request_class: type[ApiMessage],
    version: int,
    expected_correlation_id: int,
) -> ApiMessage:
    """Decode a response frame (without its size prefix) to a `request_class` request.

    Raises MalformedResponseError when the correlation id is not the expected one (the
    connection is out of step), or the body is truncated, too long or undecodable.
    """
    spec = ALL_APIS.get(request_class.API_KEY)
    if spec is None:
        raise ValueError(f"no response schema for API key {request_class.API_KEY}")
    view = memoryview(frame)
    # ApiVersions answers always carry header v0 (see the module docstring).
    tagged_header = spec.flexible(version) and spec.key != ApiKey.ApiVersions
    try:
        header, pos = (_RESPONSE_HEADER_V1 if tagged_header else _RESPONSE_HEADER_V0)(view, 0)
    except Exception as exc:  # kafka-python raises various types on garbage
        raise MalformedResponseError(
            f"unreadable {spec.key.name} response header ({len(view)} bytes): {exc!r}"
        ) from exc
    if pos > len(view):
        raise MalformedResponseError(f"truncated {spec.key.name} response header")
    if header.correlation_id != expected_correlation_id:
        raise MalformedResponseError(
            f"{spec.key.name} response has correlation id {header.correlation_id}, "
            f"expected {expected_correlation_id}"
        )
    try:
        body, end = _response_decoder(spec, version)(view, pos)
    except Exception as exc:
        raise MalformedResponseError(
            f"malformed {spec.key.name} v{version} response: {exc!r}"
        ) from exc
    if end != len(view):
        raise MalformedResponseError(
            f"{spec.key.name} v{version} response body is {len(view) - pos} bytes, "
            f"its fields take {end - pos}"
        )
    return body


_RESPONSE_DECODERS: dict[tuple[int, int], Callable[[memoryview, int], tuple[ApiMessage, int]]] = {}


def _response_decoder(
    spec: ApiSpec, version: int
) -> Callable[[memoryview, int], tuple[ApiMessage, int]]:
    key = (spec.key, version)
    decoder = _RESPONSE_DECODERS.get(key)
    if decoder is None:
        if not 0 <= version <= spec.response.max_version:
            raise ValueError(f"{spec.key.name} has no response schema for v{version}")
        flexible = spec.flexible(version)
        decoder = spec.response._struct.compiled_decode_from(
            version, compact=flexible, tagged=flexible, data_class=spec.response[None]
        )
        _RESPONSE_DECODERS[key] = decoder
    return decoder
