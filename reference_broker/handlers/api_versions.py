"""ApiVersions: which APIs and versions this broker serves."""

from __future__ import annotations

from typing import TYPE_CHECKING

from kafka.protocol.api_message import ApiMessage

from ..protocol import api_versions_response
from .context import RequestContext

if TYPE_CHECKING:
    from ..broker import Broker


async def handle_api_versions(
    broker: Broker, ctx: RequestContext, request: ApiMessage
) -> ApiMessage:
    """Answer with every supported API key and its version range."""
    return api_versions_response(ctx.version)
