"""The group checker: consumer-group anomalies from subscribe, assignment and commit events.

A process belongs to the group named by its `ok` `subscribe` (and stays in it after a
later `assign`, as a Kafka consumer keeps its group.id). Definitions:

- split-assignment: two different processes of one group report owning the same log
  with the same `generation` (from `assignment`/`generation` on completions).
- commit-regression: an `ok` commit by a member of group g sets log L to offset c, while
  a commit of L by g that completed `ok` before this commit was invoked had set it to
  c' > c. Commits that overlap in time are not ordered, so they are not compared. A
  declared reset ends the comparison: an `ok` `assign` with `"seek": "beginning"` by a
  member of g naming L (commits after it may start again from the beginning).
- lost-by-commit: g committed offset c for L (an `ok` commit; c is the next offset to
  read), yet some occupied offset o < c of L's version order was never returned to any
  member of g by a poll. Only `ok` commits count: an `info` commit may not have happened.
"""

from __future__ import annotations

from bisect import bisect_right

from checkers.anomalies import Findings
from checkers.version_order import LogOrder
from history.model import PollResult

# How many passed-over offsets one lost-by-commit evidence item lists.
_SHOWN = 32


class GroupChecker:
    """Streaming state of the group checker; feed it events, then call `finish`."""

    def __init__(self, findings: Findings) -> None:
        self.findings = findings
        self.group_of: dict[int, str] = {}
        # (group, generation, log) -> (process, index) of the first claim.
        self._claims: dict[tuple[str, int, str], tuple[int, int]] = {}
        # (group, log) -> (offset, index, epoch) of the highest completed commit.
        self._committed: dict[tuple[str, str], tuple[int, int, int]] = {}
        self._epoch: dict[tuple[str, str], int] = {}
        # process -> what _committed said, per log, when its pending commit was invoked.
        self._at_invoke: dict[int, dict[str, tuple[int, int, int] | None]] = {}
        # (group, log) -> strictly increasing (offset, index) of commits that raised it.
        self._raises: dict[tuple[str, str], list[tuple[int, int]]] = {}
        # (group, log) -> offsets polled by members.
        self._polled: dict[tuple[str, str], set[int]] = {}
        self.commits_without_group = 0

    def subscribe_ok(self, process: int, group: str) -> None:
        """`process` joined `group`."""
        self.group_of[process] = group

    def assignment(self, process: int, index: int, logs: list[str], generation: int | None
                   ) -> None:
        """A completion at `index` reports that `process` owns `logs` in `generation`."""
        group = self.group_of.get(process)
        if group is None or generation is None:
            return
        claims = self._claims
        for log in logs:
            first = claims.setdefault((group, generation, log), (process, index))
            if first[0] != process:
                self.findings.add("split-assignment", {
                    "indices": [first[1], index], "group": group, "generation": generation,
                    "log": log, "processes": [first[0], process], "offsets": [], "values": [],
                })

    def assign_ok(self, process: int, logs: list[str], seek: str) -> None:
        """`process` assigned itself `logs`; seeking to the beginning declares a reset."""
        group = self.group_of.get(process)
        if group is None or seek != "beginning":
            return
        for log in logs:
            key = (group, log)
            self._epoch[key] = self._epoch.get(key, 0) + 1
            self._committed.pop(key, None)

    def commit_invoke(self, process: int, offsets: dict[str, int]) -> None:
        """`process` invoked a commit: remember what had been committed before it."""
        group = self.group_of.get(process)
        if group is None:
            return
        committed = self._committed
        self._at_invoke[process] = {log: committed.get((group, log)) for log in offsets}

    def commit_pending(self, process: int) -> bool:
        """Whether `process` has a commit invoked and not yet completed."""
        return process in self._at_invoke

    def commit_ok(self, process: int, index: int, offsets: dict[str, int]) -> None:
        """`process`'s commit completed `ok` at `index`, setting `offsets`."""
        before = self._at_invoke.pop(process, None)
        group = self.group_of.get(process)
        if group is None or before is None:
            self.commits_without_group += 1
            return
        for log, offset in offsets.items():
            key = (group, log)
            epoch = self._epoch.get(key, 0)
            earlier = before.get(log)
            if earlier is not None and earlier[2] == epoch and earlier[0] > offset:
                self.findings.add("commit-regression", {
                    "indices": [earlier[1], index], "group": group, "log": log,
                    "offsets": [earlier[0], offset], "values": [], "process": process,
                })
            current = self._committed.get(key)
            if current is None or current[2] != epoch or offset > current[0]:
                self._committed[key] = (offset, index, epoch)
            raises = self._raises.setdefault(key, [])
            if not raises or offset > raises[-1][0]:
                raises.append((offset, index))

    def commit_done(self, process: int) -> None:
        """`process`'s commit completed `fail` or `info`: it counts for nothing."""
        self._at_invoke.pop(process, None)

    def poll(self, process: int, result: PollResult) -> None:
        """A poll by `process` returned `result`: members of its group processed these."""
        group = self.group_of.get(process)
        if group is None:
            return
        polled = self._polled
        for log, records in result.items():
            if records:
                offsets = polled.get((group, log))
                if offsets is None:
                    offsets = polled[(group, log)] = set()
                offsets.update([r[0] for r in records])

    def finish(self, logs: dict[str, LogOrder]) -> None:
        """Find lost-by-commit against the final version orders `logs`."""
        for (group, log), raises in sorted(self._raises.items()):
            order = logs.get(log)
            if order is None:
                continue
            polled = self._polled.get((group, log), set())
            missed = [o for o in order.below(raises[-1][0]) if o not in polled]
            if not missed:
                continue
            # The commit that first passed the lowest missed offset.
            passing = raises[bisect_right([offset for offset, _ in raises], missed[0])]
            shown = missed[:_SHOWN]
            values = [order.values[o] for o in shown]
            seen_at = [order.observers[o] for o in shown]
            self.findings.add("lost-by-commit", {
                "indices": sorted({passing[1], *seen_at}), "group": group, "log": log,
                "committed": passing[0], "offsets": shown, "values": values,
                "missed": len(missed),
            })
