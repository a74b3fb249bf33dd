"""Transactions across a broker restart, and WriteTxnMarkers kept off client listeners.

A `faultline broker` process is SIGKILLed (or stopped cleanly) while a confluent-kafka
transaction is open: after the restart the partition still knows the transaction
(replayed from the log, or from the producer snapshot), so read_committed readers stay
below it, and the coordinator, reloaded from `__transaction_state`, aborts it once its
timeout passes; then the data after it becomes visible and the aborted data never does.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from kafka.protocol.producer import WriteTxnMarkersRequest

from harness.broker_process import start_broker
from tests.test_controller_listener import _api_keys, _closes
from tests.test_txn_clients import read_all

TIMEOUT_MS = 8000
SETTINGS = {
    "offsets.topic.num.partitions": 1,
    "transaction.state.log.num.partitions": 1,
    "transaction.abort.timed.out.transaction.cleanup.interval.ms": 200,
    "group.initial.rebalance.delay.ms": 0,
    "log.flush.interval.messages": 1,
}


def _marker_request() -> WriteTxnMarkersRequest:
    marker = WriteTxnMarkersRequest.WritableTxnMarker
    return WriteTxnMarkersRequest(
        version=1,
        markers=[
            marker(
                producer_id=1,
                producer_epoch=0,
                transaction_result=True,
                topics=[marker.WritableTxnMarkerTopic(name="t", partition_indexes=[0])],
                coordinator_epoch=0,
            )
        ],
    )


def test_write_txn_markers_is_not_served_to_clients(tmp_path: Path) -> None:
    broker = start_broker(tmp_path / "node", settings=SETTINGS)
    try:
        assert 27 not in _api_keys(broker.bootstrap)
        assert _closes(broker.bootstrap, _marker_request(), 1)
    finally:
        broker.terminate()


@pytest.mark.parametrize("stop", ["sigkill", "clean"])
def test_open_transaction_survives_a_restart_and_times_out(tmp_path: Path, stop: str) -> None:
    from confluent_kafka import Producer

    data = tmp_path / "node"
    broker = start_broker(data, settings=SETTINGS)
    try:
        producer = Producer(
            {
                "bootstrap.servers": broker.bootstrap,
                "transactional.id": "tx-restart",
                "transaction.timeout.ms": TIMEOUT_MS,
            }
        )
        producer.init_transactions(10)
        producer.begin_transaction()
        producer.produce("t", b"pending")
        producer.flush(10)
        started = time.monotonic()
        if stop == "sigkill":
            broker.kill()
        else:
            broker.terminate()
        broker = start_broker(data, settings=SETTINGS)
        plain = Producer({"bootstrap.servers": broker.bootstrap})
        plain.produce("t", b"after")
        plain.flush(10)
        held_back = read_all(broker.bootstrap, "t", "read_committed", 1, wait_s=2)
        if time.monotonic() - started < TIMEOUT_MS / 1000:
            # Still within the transaction's timeout: the LSO stays at its first offset.
            assert held_back == []
        else:
            pytest.skip("the restart outlasted the transaction timeout; nothing to check")
        time.sleep(max(0.0, TIMEOUT_MS / 1000 + 1.5 - (time.monotonic() - started)))
        committed = read_all(broker.bootstrap, "t", "read_committed", 1)
        uncommitted = read_all(broker.bootstrap, "t", "read_uncommitted", 2)
    finally:
        broker.terminate()
    assert committed == [b"after"]
    assert uncommitted == [b"pending", b"after"]
