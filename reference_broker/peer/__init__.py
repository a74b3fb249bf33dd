"""Connections from this node to its peers: the inter-broker side of the Kafka protocol."""

from .channel import DEFAULT_MAX_RESPONSE_BYTES, PeerChannel, PeerUnavailableError

__all__ = ["DEFAULT_MAX_RESPONSE_BYTES", "PeerChannel", "PeerUnavailableError"]
