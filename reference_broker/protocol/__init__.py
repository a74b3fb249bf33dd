"""Kafka wire protocol for the reference broker: framing, the API table and the codec."""

from .apis import ALL_APIS, CONTROLLER_APIS, SUPPORTED_APIS, ApiSpec
from .codec import (
    MalformedRequestError,
    MalformedResponseError,
    Request,
    RequestHeader,
    UnknownApiError,
    UnsupportedVersionError,
    api_versions_response,
    decode_header,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
    error_response,
    unsupported_api_versions_frame,
)
from .framing import (
    FrameDecoder,
    InvalidFrameSizeError,
    ProtocolError,
    ReceivedFrame,
    frame,
    receive_frame,
    receive_request,
)
from .memory_pool import MemoryPool, Reservation

__all__ = [
    "ALL_APIS",
    "CONTROLLER_APIS",
    "SUPPORTED_APIS",
    "ApiSpec",
    "FrameDecoder",
    "InvalidFrameSizeError",
    "MalformedRequestError",
    "MalformedResponseError",
    "MemoryPool",
    "ProtocolError",
    "ReceivedFrame",
    "Request",
    "RequestHeader",
    "Reservation",
    "UnknownApiError",
    "UnsupportedVersionError",
    "api_versions_response",
    "decode_header",
    "decode_request",
    "decode_response",
    "encode_request",
    "encode_response",
    "error_response",
    "frame",
    "receive_frame",
    "receive_request",
    "unsupported_api_versions_frame",
]
