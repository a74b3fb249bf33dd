"""The Kafka timers a run's fault durations are drawn around, read from the run's config.

One place: the brokers' timers come from the very broker settings the run starts its
brokers with (`RunConfig.broker_settings`, read the way the broker reads them, so unset
keys take the broker's own defaults), and the group timers from the session settings the
workload's consumers use.
"""

from __future__ import annotations

from harness.run_config import RunConfig
from nemesis.timing import FaultTimers
from reference_broker.config import BrokerConfig
from workloads.adapters.session import SessionSpec


def fault_timers(config: RunConfig) -> FaultTimers:
    """The timers of the cluster and clients `config` runs."""
    broker = BrokerConfig.from_properties(config.broker_settings())
    consumer = SessionSpec(bootstrap="", client_id="")
    return FaultTimers(
        broker_session_ms=broker.broker_session_timeout_ms,
        replica_lag_ms=broker.replica_lag_time_max_ms,
        group_session_ms=consumer.session_timeout_ms,
        group_rebalance_ms=consumer.max_poll_interval_ms,
        # The workloads' producers are not transactional.
        transaction_timeout_ms=None,
    )
