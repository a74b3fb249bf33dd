"""`WORKLOADS`: every workload by the name `faultline run --workload` takes."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

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


class Coordinated(NamedTuple):
    """The consumer groups and transactional ids a workload's first topic group uses:
    whose coordinators the coordinator fault packages aim at."""

    groups: tuple[str, ...] = ()
    transactional_ids: tuple[str, ...] = ()


COORDINATED: dict[str, Coordinated] = {
    "queue": Coordinated(groups=("queue-0",)),
    "keyed-order": Coordinated(),
    "group": Coordinated(groups=("group-0",)),
    "txn": Coordinated(transactional_ids=("txn-0", "txn-1")),
    "exactly-once": Coordinated(groups=("eos-0",), transactional_ids=("eos-0-0", "eos-0-1")),
}
