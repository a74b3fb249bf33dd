"""Timeouts of the quorum, named after Kafka's `controller.quorum.*` settings."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RaftConfig:
    """Quorum timing in milliseconds.

    `election_timeout_ms` is the base of the randomised election timeout (a node waits
    between one and two of them); `fetch_timeout_ms` is how long a follower goes
    without a successful fetch before it stands for election, and a leader that has
    not heard from a majority for 1.5 times it resigns (Kafka's check-quorum).
    """

    election_timeout_ms: int = 1000
    fetch_timeout_ms: int = 2000
    election_backoff_max_ms: int = 1000
    request_timeout_ms: int = 2000
    # How long a follower waits between empty fetches; Kafka long-polls at the leader
    # instead, which a sans-I/O core expresses as a short poll interval.
    fetch_interval_ms: int = 50
    max_fetch_entries: int = 64

    def __post_init__(self) -> None:
        for name in (
            "election_timeout_ms",
            "fetch_timeout_ms",
            "election_backoff_max_ms",
            "request_timeout_ms",
            "fetch_interval_ms",
            "max_fetch_entries",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"RaftConfig.{name} must be positive, got {getattr(self, name)}")
