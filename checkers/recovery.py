"""Recovery: a broker that crashed must come back on its own data.

Kafka recovers a log after any crash or power cut: it truncates a torn tail, rebuilds
indexes and producer state, and serves again. A broker that refuses to start after a
kill or power loss of an undamaged disk is a recovery bug (its replicas are gone for
good, and with them the cluster's redundancy). The nemesis records each restart, with
the nodes that refused to start under `failed`; a node whose files the harness damaged
(`disk-corrupt`) since it last started may refuse, as Kafka does with a corrupt
checkpoint, and is not counted.
"""

from __future__ import annotations

from typing import Any

from checkers.anomalies import Findings

# Nemesis events that crash nodes named in `nodes`, and the one that damages `node`.
_CRASHES = ("kill", "power-loss")
_DAMAGE = "disk-corrupt"


class RecoveryChecker:
    """Follows the nemesis events of a history; `finish` adds `unrecoverable-node`."""

    def __init__(self, findings: Findings) -> None:
        self.findings = findings
        self._crashed_at: dict[str, int] = {}  # node -> index of the crash
        self._damaged: set[str] = set()  # damaged since they last started

    def nemesis(self, index: int, f: str, value: Any) -> None:
        """Account for one nemesis event."""
        if not isinstance(value, dict):
            return
        if f in _CRASHES:
            for node in value.get("nodes", []):
                self._crashed_at[str(node)] = index
        elif f == _DAMAGE and "node" in value:
            node = str(value["node"])
            self._crashed_at[node] = index
            self._damaged.add(node)
        elif f == "restart":
            for node in value.get("nodes", []):
                self._crashed_at.pop(str(node), None)
                self._damaged.discard(str(node))
            for node, reason in sorted((value.get("failed") or {}).items()):
                if node in self._damaged:
                    continue
                crash = self._crashed_at.get(node)
                self.findings.add("unrecoverable-node", {
                    "indices": [i for i in (crash, index) if i is not None],
                    "log": None,  # a node's, not a log's
                    "node": node,
                    "reason": str(reason),
                    "explanation": [f"{node} crashed (index {crash}) with its disk intact and "
                                    f"refused to start again (index {index}): {reason}"],
                })
