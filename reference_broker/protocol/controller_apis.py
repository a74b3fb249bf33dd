"""The inter-broker APIs of KRaft combined mode, and the one version of each this broker speaks.

kafka-python ships schemas for the client APIs only; these classes are compiled by
its `load_json` from the schema files in `reference_broker.protocol.schemas`, so they
encode and decode exactly like the client APIs (flexible versions, tagged fields).

- Quorum (KIP-595, KIP-853): Vote, BeginQuorumEpoch, EndQuorumEpoch at v1, the
  versions Kafka 3.9+ controllers send. Directory ids and endpoints exist on the wire
  but the quorum here is static (`controller.quorum.voters`), so they stay empty/zero.
- AlterPartition at v1: v2+ name topics by id only, and like the data plane (Fetch up
  to v12, see `apis.py`) the replication code names topics by name.
- BrokerRegistration v4 and BrokerHeartbeat v1: the newest, no topic ids involved.

Raft's Fetch is the ordinary Fetch API (v12, with `ClusterId`, `LastFetchedEpoch`,
`DivergingEpoch`, `CurrentLeader`), served from `SUPPORTED_APIS`.
"""

from __future__ import annotations

from kafka.protocol.api_message import ApiMessage

from . import schemas

VOTE_VERSION = 1
BEGIN_QUORUM_EPOCH_VERSION = 1
END_QUORUM_EPOCH_VERSION = 1
ALTER_PARTITION_VERSION = 1
BROKER_REGISTRATION_VERSION = 4
BROKER_HEARTBEAT_VERSION = 1
RAFT_FETCH_VERSION = 12
"""The Fetch version quorum members pull the metadata log with."""

# kafka-python ships no type information, so mypy checks the `load_json` class keyword
# against object.__init_subclass__ and rejects it; each class line ignores that call-arg.


class VoteRequest(ApiMessage, load_json=schemas):  # type: ignore[call-arg]
    """A candidate asks a voter for its vote in a new epoch (API key 52)."""


class VoteResponse(ApiMessage, load_json=schemas):  # type: ignore[call-arg]
    """A voter's answer to VoteRequest."""


class BeginQuorumEpochRequest(ApiMessage, load_json=schemas):  # type: ignore[call-arg]
    """A newly elected leader announces itself to the voters (API key 53)."""


class BeginQuorumEpochResponse(ApiMessage, load_json=schemas):  # type: ignore[call-arg]
    """A voter's acknowledgement of BeginQuorumEpoch."""


class EndQuorumEpochRequest(ApiMessage, load_json=schemas):  # type: ignore[call-arg]
    """A resigning leader asks the voters to elect a successor (API key 54)."""


class EndQuorumEpochResponse(ApiMessage, load_json=schemas):  # type: ignore[call-arg]
    """A voter's acknowledgement of EndQuorumEpoch."""


class AlterPartitionRequest(ApiMessage, load_json=schemas):  # type: ignore[call-arg]
    """A partition leader asks the controller to change the ISR (API key 56)."""


class AlterPartitionResponse(ApiMessage, load_json=schemas):  # type: ignore[call-arg]
    """The controller's answer: the partition state it committed, or an error."""


class BrokerRegistrationRequest(ApiMessage, load_json=schemas):  # type: ignore[call-arg]
    """A starting broker registers with the active controller (API key 62)."""


class BrokerRegistrationResponse(ApiMessage, load_json=schemas):  # type: ignore[call-arg]
    """The controller's answer, carrying the new broker epoch."""


class BrokerHeartbeatRequest(ApiMessage, load_json=schemas):  # type: ignore[call-arg]
    """A broker's periodic liveness report to the active controller (API key 63)."""


class BrokerHeartbeatResponse(ApiMessage, load_json=schemas):  # type: ignore[call-arg]
    """The controller's answer: whether the broker is fenced, caught up, may shut down."""


UNREGISTER_BROKER_VERSION = 0


class UnregisterBrokerRequest(ApiMessage, load_json=schemas):  # type: ignore[call-arg]
    """An administrator removes a decommissioned broker's registration (API key 64)."""


class UnregisterBrokerResponse(ApiMessage, load_json=schemas):  # type: ignore[call-arg]
    """The controller's answer: BROKER_ID_NOT_REGISTERED when there is no such broker."""
