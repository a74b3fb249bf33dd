"""The simulated cluster's own view over a run, written to `RUN_DIR/cluster.jsonl`.

Attribution (`checkers.attribution`) explains an anomaly by what the cluster did
around it: who led each log, in which epoch, with which ISR, whether a new leader came
from outside the ISR (unclean), who was controller, which nodes were up, and what a
power cut took from each replica. The sim can read all of it from the brokers' state.

It is sampled at history events (every send, poll and fault the run records), not by
polling: one sample costs a dictionary walk over each live broker's partitions, and a
line is written only when something changed. Times are nanoseconds from the run's
origin, the same clock as the history's `time`. Lines, one JSON object each:

- `{"kind": "start", "origin_s": ..., "nodes": [...]}` first (origin in trio seconds,
  the stamps of `nodes/nK.log`);
- `{"kind": "log", "time", "log", "leader", "epoch", "isr", "replicas", "unclean"}`
  when a log's leader, epoch or ISR changes (`unclean`: the new leader was not in the
  ISR last seen, null when unknown);
- `{"kind": "controller", "time", "controller"}` and `{"kind": "node", "time", "node",
  "up"}` on change;
- `{"kind": "power-loss", "time", "node", "lost": {log: [[offset, value], ...]},
  "unsynced_bytes"}`: the workload records a node's power cut took (appended, never
  fsynced), taken from its disk just before the cut.
"""

from __future__ import annotations

import json
from typing import IO, Any

import trio

from harness.oracle import batch_values, log_of_path

from .cluster import SimCluster
from .disk import SimDisk


class ClusterRecorder:
    """Writes the cluster timeline of one run to `stream` (see the module docstring)."""

    def __init__(self, cluster: SimCluster, stream: IO[str], *, origin: float) -> None:
        self.cluster = cluster
        self.stream = stream
        self.origin = origin
        # log -> (leader, epoch, isr) last written
        self._logs: dict[str, tuple[str | None, int, tuple[str, ...]]] = {}
        self._controller: str | None = None
        self._up: dict[str, bool] = {name: True for name in cluster.nodes}
        self._write({"kind": "start", "origin_s": origin, "nodes": list(cluster.nodes)})
        cluster.power_loss_observers.append(self.power_loss)

    def _now_ns(self) -> int:
        return round((trio.current_time() - self.origin) * 1e9)

    def _write(self, line: dict[str, Any]) -> None:
        self.stream.write(json.dumps(line, separators=(",", ":")) + "\n")

    def sample(self) -> None:
        """Write whatever changed since the last sample."""
        cluster = self.cluster
        now: int | None = None
        # Brokers added since the start appear, retired ones go down for good.
        members = list(cluster.nodes)
        for name in [*members, *(n for n in self._up if n not in members)]:
            up = cluster.node(name).up
            if up != self._up.get(name):
                now = self._now_ns() if now is None else now
                self._up[name] = up
                self._write({"kind": "node", "time": now, "node": name, "up": up})
        # Per log: the live leader in the newest epoch, as `SimCluster.leader_of`.
        best: dict[str, tuple[int, str, tuple[str, ...], tuple[str, ...]]] = {}
        seen: set[str] = set()
        for node in cluster._live_brokers():
            for (topic, index), p in node[1].partitions.items():
                if topic.startswith("__"):
                    continue
                log = f"{topic}/{index}"
                seen.add(log)
                if p.is_leader and (log not in best or p.leader_epoch > best[log][0]):
                    best[log] = (p.leader_epoch, node[0].name,
                                 tuple(sorted(f"n{i}" for i in p.isr)),
                                 tuple(f"n{i}" for i in p.replicas))
        for log in sorted(seen | set(self._logs)):
            found = best.get(log)
            state = (found[1], found[0], found[2]) if found else (None, -1, ())
            last = self._logs.get(log)
            if last is not None and (state == last or (found is None and last[0] is None)):
                continue
            now = self._now_ns() if now is None else now
            unclean: bool | None = None
            if found is not None and last is not None and last[2] and found[0] != last[1]:
                unclean = found[1] not in last[2]
            self._logs[log] = state if found else (None, last[1] if last else -1,
                                                   last[2] if last else ())
            self._write({"kind": "log", "time": now, "log": log,
                         "leader": state[0], "epoch": found[0] if found else None,
                         "isr": list(state[2]), "replicas": list(found[3]) if found else [],
                         "unclean": unclean})
        controller = cluster.controller() if cluster.quorum else None
        if controller != self._controller:
            self._controller = controller
            self._write({"kind": "controller", "time": self._now_ns() if now is None else now,
                         "controller": controller})

    def power_loss(self, node: str, disk: SimDisk) -> None:
        """Called just before `node`'s power cut: record what it is about to lose."""
        lost: dict[str, list[tuple[int, int]]] = {}
        for inode in disk.files.values():
            if not inode.journaled or inode.dirty_from is None:
                continue
            values: list[tuple[int, int]] = []
            batch_values(bytes(inode.content[inode.dirty_from:]), values)
            if values:
                lost.setdefault(log_of_path(inode.path), []).extend(values)
        self._write({"kind": "power-loss", "time": self._now_ns(), "node": node,
                     "lost": {log: sorted(v) for log, v in sorted(lost.items())},
                     "unsynced_bytes": disk.unsynced_bytes()})
