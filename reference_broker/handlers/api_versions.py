"""ApiVersions: which APIs and versions this listener serves."""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING

from kafka.protocol.api_message import ApiMessage

from ..protocol import api_versions_response
from .context import Handler, RequestContext

if TYPE_CHECKING:
    from ..broker import Broker


def api_versions_handler(keys: Collection[int]) -> Handler:
    """The ApiVersions handler of a listener that serves exactly the APIs `keys`.

    As Kafka's ApiVersionManager: a client listener lists the client and inter-broker
    data APIs, a controller listener the quorum and broker-to-controller ones, and
    neither lists what only the other serves.
    """
    listed = frozenset(keys)

    async def handle_api_versions(
        broker: Broker, ctx: RequestContext, request: ApiMessage
    ) -> ApiMessage:
        """Answer with every API key this listener serves and its version range."""
        return api_versions_response(ctx.version, keys=listed)

    return handle_api_versions
