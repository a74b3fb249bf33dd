"""The Kafka timers a run's fault durations are drawn around, read from the run's config.

One place: the brokers' timers come from the very broker settings the run starts its
brokers with (`RunConfig.broker_settings`, read the way the broker reads them, so unset
keys take the broker's own defaults), and the group timers from the session settings the
workload's consumers use.
"""

from __future__ import annotations

from collections.abc import Mapping

from harness.run_config import RunConfig
from nemesis.timing import FaultTimers
from reference_broker.config import BrokerConfig
from reference_broker.txn.config import TxnConfig
from workloads.adapters.session import SessionSpec


def fault_timers(config: RunConfig) -> FaultTimers:
    """The timers of the cluster and clients `config` runs."""
    # Without transactional producers there is no transaction timeout to draw around.
    spec = SessionSpec(bootstrap="", client_id="")
    return timers_from_settings(
        config.broker_settings(),
        transaction_timeout_ms=spec.transaction_timeout_ms if config.transactional else None,
    )


def timers_from_settings(settings: Mapping[str, object], *,
                         transaction_timeout_ms: int | None = None) -> FaultTimers:
    """The timers of brokers started with Kafka broker `settings` and of the faultline
    workload's clients; `transaction_timeout_ms` is the producers' transaction.timeout.ms
    (a client setting; the broker refuses more than its transaction.max.timeout.ms)."""
    broker = BrokerConfig.from_properties(settings)
    txn = TxnConfig.from_properties(settings)
    consumer = SessionSpec(bootstrap="", client_id="")
    return FaultTimers(
        broker_session_ms=broker.broker_session_timeout_ms,
        replica_lag_ms=broker.replica_lag_time_max_ms,
        group_session_ms=consumer.session_timeout_ms,
        group_rebalance_ms=consumer.max_poll_interval_ms,
        transaction_timeout_ms=(None if transaction_timeout_ms is None
                                else min(transaction_timeout_ms, txn.max_timeout_ms)),
        txn_abort_interval_ms=txn.abort_check_interval_ms,
        # A follower calls an election after its fetch timeout, and the election timeout is
        # drawn from [base, 2 × base].
        controller_failover_ms=broker.controller_quorum_fetch_timeout_ms
        + 2 * broker.controller_quorum_election_timeout_ms,
    )
