"""`WORKLOADS`: every workload by the name `faultline run --workload` takes."""

from __future__ import annotations

from collections.abc import Callable

from workloads.base import Workload
from workloads.group import GroupWorkload
from workloads.keyed_order import KeyedOrderWorkload
from workloads.queue import QueueWorkload

WORKLOADS: dict[str, Callable[[], Workload]] = {
    # Workload declares checker_mode as a settable attribute and QueueWorkload's is a
    # read-only property; the runner only reads it, so the protocol should declare a
    # read-only property (workloads/base.py, pending its rewrite).
    "queue": QueueWorkload,  # type: ignore[dict-item]
    "keyed-order": KeyedOrderWorkload,
    "group": GroupWorkload,
}
