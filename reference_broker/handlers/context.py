"""What every request handler receives besides the broker and the request body."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kafka.protocol.api_message import ApiMessage

from ..protocol import RequestHeader

if TYPE_CHECKING:
    from ..broker import Broker


@dataclass(frozen=True, slots=True)
class RequestContext:
    """The request's header and where it came from."""

    header: RequestHeader
    client_host: str

    @property
    def version(self) -> int:
        """The API version of the request; the response uses the same."""
        return self.header.api_version

    @property
    def client_id(self) -> str:
        """The client id from the header ("" when null)."""
        return self.header.client_id or ""


class CloseConnection(Exception):
    """A handler's way to say "answer by closing the connection" (acks=0 errors, as Kafka)."""


Handler = Callable[["Broker", RequestContext, ApiMessage], Awaitable[ApiMessage | None]]
