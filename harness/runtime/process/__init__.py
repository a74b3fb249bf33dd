"""The process runtime: brokers as OS processes, every link through a trio fault proxy."""

from harness.runtime.process.cluster import CLIENTS, ClusterError, ProcessCluster
from harness.runtime.process.node import BrokerNode, NodeState
from harness.runtime.process.proxy import FaultProxy, Link, Upstream

__all__ = [
    "CLIENTS",
    "BrokerNode",
    "ClusterError",
    "FaultProxy",
    "Link",
    "NodeState",
    "ProcessCluster",
    "Upstream",
]
