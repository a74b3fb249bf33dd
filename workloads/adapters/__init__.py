"""Client sessions: one interface (`ClientSession`) over faultline's client and third-party ones.

`open_session` picks the implementation named by `WorkloadEnv.client_library`:
"faultline" (both runtimes), "kafka-python" or "confluent-kafka" (real TCP only).
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from workloads.client import TcpNetwork

from .native import NativeSession
from .session import (
    Acks,
    ClientSession,
    OpFailed,
    OpUnknown,
    PollRecords,
    ProducerSettings,
    Rebalance,
    SessionSpec,
    TxnAbortable,
    TxnFatal,
)

if TYPE_CHECKING:
    from contextlib import AbstractAsyncContextManager

    from workloads.base import WorkloadEnv

CLIENT_LIBRARIES = ("faultline", "kafka-python", "confluent-kafka")


class ClientLibraryError(ValueError):
    """The requested client library cannot be used here."""


def open_session(
    env: WorkloadEnv, endpoint: str, spec: SessionSpec, rng: random.Random
) -> AbstractAsyncContextManager[ClientSession]:
    """A session of `env.client_library` reaching `spec.bootstrap` from client `endpoint`."""
    library = env.client_library
    network = env.network_for(endpoint)
    if library == "faultline":
        return NativeSession(spec, network=network, clock_ms=env.clock_ms_for(endpoint), rng=rng)
    if library not in CLIENT_LIBRARIES:
        raise ClientLibraryError(
            f"unknown client library {library!r}; use one of {', '.join(CLIENT_LIBRARIES)}"
        )
    if not isinstance(network, TcpNetwork):
        raise ClientLibraryError(
            f"{library} opens its own sockets and threads, so it cannot run inside the "
            "simulation; use --client faultline with the sim target, or pick the process, "
            "tansu or external target for a third-party client"
        )
    if library == "kafka-python":
        from .kafka_python import KafkaPythonSession

        return KafkaPythonSession(spec)
    from .confluent import ConfluentSession

    return ConfluentSession(spec)


__all__ = [
    "CLIENT_LIBRARIES",
    "Acks",
    "ClientLibraryError",
    "ClientSession",
    "OpFailed",
    "OpUnknown",
    "PollRecords",
    "ProducerSettings",
    "Rebalance",
    "SessionSpec",
    "TxnAbortable",
    "TxnFatal",
    "open_session",
]
