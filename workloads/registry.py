"""`WORKLOADS`: every workload by the name `faultline run --workload` takes."""

from __future__ import annotations

from collections.abc import Callable

from workloads.base import Workload
from workloads.exactly_once import ExactlyOnceWorkload
from workloads.group import GroupWorkload
from workloads.keyed_order import KeyedOrderWorkload
from workloads.queue import QueueWorkload
from workloads.txn import TxnWorkload

WORKLOADS: dict[str, Callable[[], Workload]] = {
    "queue": QueueWorkload,
    "keyed-order": KeyedOrderWorkload,
    "group": GroupWorkload,
    "txn": TxnWorkload,
    "exactly-once": ExactlyOnceWorkload,
}
