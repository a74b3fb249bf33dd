"""The queue checker: Jepsen's Kafka-checker semantics over one streaming pass.

One pass over the history feeds `QueueChecker`'s handlers, which keep only compact
per-log version orders (offset -> value), per-value facts (who sent it, how the send
ended, who first read it, where it was first seen) and per-process cursors. Checks that
need the final version order (skips across gaps, lost writes, positions of sends whose
offset was unknown) are recorded as small candidates and settled in `finish`.

Definitions (L is a log, v a value; values are unique per run):

- version order of L: every (offset, value) any poll returned (`ok`, `info` or `fail`
  alike, as in Jepsen: reads are always supposed to be safe) and every (offset, value)
  of a send that must have committed (`ok`; an `info` send only where a poll saw it).
  A *dense index* counts occupied offsets only, so gaps are not skips.
- inconsistent-offsets: two different values at one offset of L.
- duplicate: one value observed at two positions (two offsets, or two logs).
- lost-write: v's send completed `ok` at offset o of L, o is at or below the highest
  offset any poll returned from L, and no poll ever returned v.
- unseen: v's send completed `ok`, no poll returned v, and it is not a lost-write
  (reads never got past it, or its offset is unknown). Uncertainty, not proof.
- aborted-read: a poll returned v and v's send completed `fail`.
- precommitted-read: a poll completed (returning v) before any send of v was invoked,
  i.e. the read saw a value no client had yet offered to the log (or one never sent).
  A `txn`'s sends count as invoked with the transaction, even when only its completion
  lists them; a transaction reading its own send is a precommitted-read as well
  (`checkers.txn_graph`).
- int-poll-skip / int-nonmonotonic-poll: within one poll, consecutive records r1, r2 of
  L whose dense indices differ by more than one / by less than one.
- poll-skip / nonmonotonic-poll: for one process, the last record of L in one `ok` poll
  and the first record of L in its next `ok` poll that returned L, compared the same
  way. A process's cursors reset on `assign`, `subscribe`, `crash`, any `info`
  completion and any completion carrying a new `assignment` (a rebalance).
- int-send-skip / int-nonmonotonic-send: within one send, consecutive messages to L
  whose positions differ by more than one / less than one dense index.
- nonmonotonic-send: for one process, its next send's first message to L landed at or
  before its previous send's last message to L. As in Jepsen, an `assign`/`subscribe`
  keeps only the send cursors of logs (topics) it still names.
- key-order: one process sent key k twice, the second send invoked after the first
  completed, both acknowledged into the same partition, the second at a lower offset.
- key-split: key k (not null) observed in two partitions of one topic.

Positions of values whose send completed without an offset come from reads; a pair with
an unknown position proves nothing and is skipped (Jepsen does the same).
"""

from __future__ import annotations

from checkers.anomalies import Findings
from checkers.version_order import LogOrder
from history.model import Message, PollResult

# How many skipped records a skip's evidence lists.
_SKIPPED_SHOWN = 8

# (log, offset, index of the first event that observed the value there)
Located = tuple[str, int, int]


class QueueChecker:
    """Streaming state of the queue checker; feed it events, then call `finish`."""

    def __init__(self, findings: Findings) -> None:
        self.findings = findings
        self.logs: dict[str, LogOrder] = {}
        # Per-topic key -> partition it was first seen in (and the index that saw it).
        self._key_partition: dict[str, dict[str, int]] = {}
        self._key_first: dict[tuple[str, str], int] = {}
        self._key_splits: dict[tuple[str, str], dict[int, int]] = {}
        # value -> index of the (first) send invoke carrying it.
        self.send_invoked: dict[int, int] = {}
        # value -> completion index of an `ok` send (its position is in the version order).
        self.acked: dict[int, int] = {}
        # value -> completion index of a `fail` / `info` send.
        self.failed: dict[int, int] = {}
        self.indeterminate: dict[int, int] = {}
        # value -> index of the first completion of a poll returning it.
        self.read_by: dict[int, int] = {}
        # Built by finish() from the version orders: value -> where it was first seen,
        # and value -> every position for values seen at more than one.
        self.located: dict[int, Located] = {}
        self._dups: dict[int, list[Located]] = {}
        # (log, offset) -> {value: first observing index} where values disagree.
        self._conflicts: dict[tuple[str, int], dict[int, int]] = {}
        # value -> (read index, log, offset) for reads before any send of it was invoked.
        self._early_reads: dict[int, tuple[int, str, int]] = {}
        # process -> log -> (offset, value, index) of its last ok poll's last record.
        self._poll_cursor: dict[int, dict[str, tuple[int, int, int]]] = {}
        # process -> log -> (value, offset or None, index) of its last send's last message.
        self._send_cursor: dict[int, dict[str, tuple[int, int | None, int]]] = {}
        # process -> log -> key -> (offset, value, index) of its highest send of the key,
        # then the same for its highest send of it by an earlier op (-1s if none).
        self._key_cursor: dict[int, dict[str, dict[str, tuple[int, int, int, int, int, int]]]]
        self._key_cursor = {}
        # Settled in finish(): (kind, log, o1, o2, v1, v2, i1, i2, process).
        self._gaps: list[tuple[str, str, int, int, int, int, int, int, int]] = []
        # Pairs of sends to one log where a position was unknown, settled in finish()
        # from where reads saw the values: (kind, log, v1, v2, i1, i2, process).
        self._unresolved_pairs: list[tuple[str, str, int, int, int, int, int]] = []
        self._info_sends: list[tuple[int, int, list[int], dict[str, tuple[int, int | None, int]]]]
        self._info_sends = []
        # (value, log, offset, index) an `info` send reported; they join the version order
        # in finish() if some poll saw the value (then the send must have committed).
        self._info_positions: list[tuple[int, str, int, int]] = []
        # log -> acknowledged messages never read and not lost, after finish().
        self.unseen_by_log: dict[str, int] = {}

    # -- logs -------------------------------------------------------------------------

    def _log(self, name: str) -> LogOrder:
        order = self.logs.get(name)
        if order is None:
            order = self.logs[name] = LogOrder(name)
            self._key_partition.setdefault(order.topic, {})
        return order

    def _conflict(self, log: str, offset: int, first: int, value: int, index: int) -> None:
        values = self._conflicts.get((log, offset))
        if values is None:
            first_index = self.logs[log].observers[offset]
            values = self._conflicts[(log, offset)] = {first: first_index}
        values.setdefault(value, index)

    def _key_seen(self, order: LogOrder, key: str, index: int) -> None:
        """Slow path of key-split tracking: a key's first sighting, or another partition."""
        table = self._key_partition[order.topic]
        first = table.get(key)
        if first is None:
            table[key] = order.partition
            self._key_first[(order.topic, key)] = index
            return
        splits = self._key_splits.setdefault(
            (order.topic, key), {first: self._key_first[(order.topic, key)]}
        )
        splits.setdefault(order.partition, index)

    # -- polls ------------------------------------------------------------------------

    def poll(self, process: int, index: int, result: PollResult, ok: bool) -> None:
        """A poll completed at `index` returning `result`; `ok` polls advance cursors."""
        read_by = self.read_by
        send_invoked = self.send_invoked
        cursor = self._poll_cursor.setdefault(process, {}) if ok else None
        for log, records in result.items():
            if not records:
                continue
            order = self.logs.get(log) or self._log(log)
            values = order.values
            observers = order.observers
            keys = self._key_partition[order.topic]
            partition = order.partition
            prev_o = records[0][0] - 1
            prev_v = 0
            backward = False
            for o, k, v in records:
                seen = values.get(o)
                if seen is None:
                    values[o] = v
                    observers[o] = index
                    # A record at a known offset had its key checked when first seen.
                    if k is not None and keys.get(k) != partition:
                        self._key_seen(order, k, index)
                elif seen != v:
                    self._conflict(log, o, seen, v, index)
                    if k is not None and keys.get(k) != partition:
                        self._key_seen(order, k, index)
                if v not in read_by:
                    read_by[v] = index
                    if v not in send_invoked:
                        self._early_reads.setdefault(v, (index, log, o))
                if o != prev_o + 1:
                    backward = backward or o <= prev_o
                    self._poll_pair("int", log, prev_o, o, prev_v, v, index, index, process)
                prev_o = o
                prev_v = v
            high = max(r[0] for r in records) if backward else prev_o
            if high > order.max_read:
                order.max_read = high
                order.max_read_index = index
            if cursor is not None:
                last = cursor.get(log)
                if last is not None and records[0][0] != last[0] + 1:
                    self._poll_pair("ext", log, last[0], records[0][0], last[1], records[0][2],
                                    last[2], index, process)
                cursor[log] = (prev_o, prev_v, index)

    def _poll_pair(
        self, scope: str, log: str, o1: int, o2: int, v1: int, v2: int, i1: int, i2: int,
        process: int,
    ) -> None:
        """Two consecutive reads of `log` whose offsets are not adjacent."""
        if o2 <= o1:
            kind = "int-nonmonotonic-poll" if scope == "int" else "nonmonotonic-poll"
            self._poll_order(kind, log, o1, o2, v1, v2, i1, i2, process)
        else:
            kind = "int-poll-skip" if scope == "int" else "poll-skip"
            self._gaps.append((kind, log, o1, o2, v1, v2, i1, i2, process))

    def _poll_order(
        self, kind: str, log: str, o1: int, o2: int, v1: int, v2: int, i1: int, i2: int,
        process: int,
    ) -> None:
        self.findings.add(kind, {
            "indices": sorted({i1, i2}), "process": process, "log": log,
            "offsets": [o1, o2], "values": [v1, v2],
        })

    def reset_cursors(self, process: int) -> None:
        """Forget where `process` was reading (assign, subscribe, rebalance, crash)."""
        self._poll_cursor.pop(process, None)

    def retire(self, process: int) -> None:
        """`process` got an `info`: a new process replaces it, so drop all its cursors."""
        self._poll_cursor.pop(process, None)
        self._send_cursor.pop(process, None)
        self._key_cursor.pop(process, None)

    def keep_send_cursors(self, process: int, logs: set[str] | None, topics: set[str] | None
                          ) -> None:
        """After assign/subscribe keep only send cursors of the named logs or topics."""
        cursors = self._send_cursor.get(process)
        if not cursors:
            return
        for log in list(cursors):
            if logs is not None and log in logs:
                continue
            if topics is not None and log.rpartition("/")[0] in topics:
                continue
            del cursors[log]

    # -- sends ------------------------------------------------------------------------

    def send_invoke(self, index: int, messages: list[Message]) -> None:
        """A send of `messages` was invoked at `index`."""
        send_invoked = self.send_invoked
        for m in messages:
            send_invoked.setdefault(m.value, index)

    def send_fail(self, index: int, messages: list[Message]) -> None:
        """A send completed `fail` at `index`: none of its messages were written."""
        for m in messages:
            self.failed[m.value] = index

    def send_ok(self, process: int, index: int, messages: list[Message]) -> None:
        """A send completed `ok` at `index`; `messages` carry partition and offset."""
        acked = self.acked
        logs = self.logs
        cursor = self._send_cursor.get(process)
        if cursor is None:
            cursor = self._send_cursor[process] = {}
        key_cursor = self._key_cursor.get(process)
        if key_cursor is None:
            key_cursor = self._key_cursor[process] = {}
        # Per log: (value, offset, index) of this op's last message to it so far.
        this_op: dict[str, tuple[int, int | None, int]] = {}
        for m in messages:
            v = m.value
            acked[v] = index
            if m.partition is None:
                continue
            log = f"{m.topic}/{m.partition}"
            order = logs.get(log) or self._log(log)
            o = m.offset
            k = m.key
            if o is not None:
                seen = order.values.get(o)
                if seen is None:
                    order.values[o] = v
                    order.observers[o] = index
                elif seen != v:
                    self._conflict(log, o, seen, v, index)
                if k is not None:
                    # The common case inline: a later op's send of the key, further on.
                    keys_of_log = key_cursor.get(log)
                    if keys_of_log is None:
                        keys_of_log = key_cursor[log] = {}
                    last = keys_of_log.get(k)
                    if last is None:
                        keys_of_log[k] = (o, v, index, -1, -1, -1)
                    elif last[2] != index and o > last[0]:
                        keys_of_log[k] = (o, v, index, last[0], last[1], last[2])
                    else:
                        self._key_order(process, keys_of_log, log, k, o, v, index)
            if k is not None and self._key_partition[order.topic].get(k) != order.partition:
                self._key_seen(order, k, index)
            previous = this_op.get(log)
            if previous is None:
                previous = cursor.get(log)
                if previous is not None and (o is None or previous[1] is None or o <= previous[1]):
                    self._send_pair("ext", log, previous, (v, o, index), process)
            elif o is None or previous[1] is None or o != previous[1] + 1:
                self._send_pair("int", log, previous, (v, o, index), process)
            this_op[log] = (v, o, index)
        cursor.update(this_op)

    def _key_order(
        self,
        process: int,
        keys_of_log: dict[str, tuple[int, int, int, int, int, int]],
        log: str,
        k: str,
        o: int,
        v: int,
        index: int,
    ) -> None:
        """Compare one acknowledged keyed send with the process's earlier sends of the key.

        Only earlier ops count: one batch's messages have no defined order among
        themselves, so each entry also keeps the highest send by an earlier op.
        """
        last = keys_of_log[k]
        # The highest send of this key by an earlier op: `last` itself, or what it kept.
        earlier = last[:3] if last[2] != index else last[3:]
        if o < earlier[0]:
            self.findings.add("key-order", {
                "indices": [earlier[2], index], "process": process, "log": log, "key": k,
                "offsets": [earlier[0], o], "values": [earlier[1], v],
            })
        if o > last[0]:
            keys_of_log[k] = (o, v, index, *earlier)

    def send_info(self, process: int, index: int, messages: list[Message]) -> None:
        """A send completed `info`: its messages may or may not have been written.

        Positions of these values are known only from reads, so the order checks for
        this send are settled in `finish` against the process's cursors as they are now.
        """
        values = []
        for m in messages:
            self.indeterminate[m.value] = index
            values.append(m.value)
            if m.partition is not None and m.offset is not None:
                self._info_positions.append((m.value, f"{m.topic}/{m.partition}", m.offset, index))
        snapshot = dict(self._send_cursor.get(process, {}))
        self._info_sends.append((process, index, values, snapshot))

    def _send_pair(
        self,
        scope: str,
        log: str,
        first: tuple[int, int | None, int],
        second: tuple[int, int | None, int],
        process: int,
    ) -> None:
        """Compare two sends to `log`: within one op (`int`) or consecutive ops (`ext`)."""
        v1, o1, i1 = first
        v2, o2, i2 = second
        if o1 is None or o2 is None:
            kind = "int-send" if scope == "int" else "nonmonotonic-send"
            self._unresolved_pairs.append((kind, log, v1, v2, i1, i2, process))
            return
        self._send_offsets(scope, log, o1, o2, v1, v2, i1, i2, process)

    def _send_offsets(
        self, scope: str, log: str, o1: int, o2: int, v1: int, v2: int, i1: int, i2: int,
        process: int,
    ) -> None:
        if o2 <= o1:
            kind = "int-nonmonotonic-send" if scope == "int" else "nonmonotonic-send"
            self.findings.add(kind, {
                "indices": sorted({i1, i2}), "process": process, "log": log,
                "offsets": [o1, o2], "values": [v1, v2],
            })
        elif scope == "int" and o2 != o1 + 1:
            self._gaps.append(("int-send-skip", log, o1, o2, v1, v2, i1, i2, process))

    # -- the end ----------------------------------------------------------------------

    def _resolve(self, value: int) -> tuple[str, int] | None:
        """Where `value` sits in the version order (its first position), if anywhere."""
        where = self.located.get(value)
        return (where[0], where[1]) if where is not None else None

    def _locate(self) -> None:
        """Invert the version orders: where each value is, and which sit at two places."""
        located = self.located
        dups = self._dups
        for name, order in self.logs.items():
            observers = order.observers
            for o, v in order.values.items():
                here = (name, o, observers[o])
                first = located.setdefault(v, here)
                if first is not here:
                    dups.setdefault(v, [first]).append(here)
        for (log, o), values in self._conflicts.items():
            first_value = self.logs[log].values[o]
            for v, index in values.items():
                if v == first_value:
                    continue
                here = (log, o, index)
                first = located.setdefault(v, here)
                if first is not here:
                    dups.setdefault(v, [first]).append(here)

    def _settle_info_sends(self) -> None:
        """Order checks of `info` sends, now that reads have placed their values."""
        for process, index, values, cursors in self._info_sends:
            this_op: dict[str, tuple[int, int, int]] = {}
            for v in values:
                where = self._resolve(v)
                if where is None:
                    continue
                log, o = where
                previous = this_op.get(log)
                if previous is not None:
                    self._send_offsets("int", log, previous[1], o, previous[0], v,
                                       index, index, process)
                else:
                    last = cursors.get(log)
                    if last is not None:
                        self._unresolved_pairs.append(
                            ("nonmonotonic-send", log, last[0], v, last[2], index, process)
                        )
                this_op[log] = (v, o, index)

    def _settle_pairs(self) -> None:
        """Send pairs whose positions were unknown at the time: compare where reads saw them."""
        for kind, log, v1, v2, i1, i2, process in self._unresolved_pairs:
            first = self._resolve(v1)
            second = self._resolve(v2)
            if first is None or second is None or first[0] != log or second[0] != log:
                continue
            scope = "int" if kind == "int-send" else "ext"
            self._send_offsets(scope, log, first[1], second[1], v1, v2, i1, i2, process)

    def _settle_gaps(self) -> None:
        """A forward jump between two reads or sends is a skip only over occupied offsets."""
        for kind, log, o1, o2, v1, v2, i1, i2, process in self._gaps:
            order = self.logs[log]
            skipped = order.between(o1, o2)
            if not skipped:
                continue
            self.findings.add(kind, {
                "indices": sorted({i1, i2}), "process": process, "log": log,
                "offsets": [o1, o2], "values": [v1, v2], "delta": len(skipped) + 1,
                "skipped": [[o, order.values[o]] for o in skipped[:_SKIPPED_SHOWN]],
            })

    def finish(self) -> None:
        """Settle every deferred check and add the remaining anomalies to the findings."""
        add = self.findings.add
        for v, log, o, index in self._info_positions:
            if v in self.read_by:
                order = self._log(log)
                seen = order.values.get(o)
                if seen is None:
                    order.values[o] = v
                    order.observers[o] = index
                elif seen != v:
                    self._conflict(log, o, seen, v, index)
        for order in self.logs.values():
            order.freeze()
        self._locate()
        self._settle_info_sends()
        self._settle_pairs()
        self._settle_gaps()

        for (log, offset), values in sorted(self._conflicts.items()):
            add("inconsistent-offsets", {
                "indices": sorted(set(values.values())), "log": log, "offsets": [offset],
                "values": sorted(values),
            })
        for value, positions in sorted(self._dups.items()):
            ordered = sorted(positions)
            add("duplicate", {
                "indices": sorted({index for _, _, index in ordered}), "log": ordered[0][0],
                "logs": [log for log, _, _ in ordered],
                "offsets": [offset for _, offset, _ in ordered], "values": [value],
            })
        read_by = self.read_by
        for value, fail_index in sorted(self.failed.items()):
            reader = read_by.get(value)
            if reader is not None:
                where = self.located.get(value)
                add("aborted-read", {
                    "indices": sorted({fail_index, reader}),
                    "log": where[0] if where else None,
                    "offsets": [where[1]] if where else [], "values": [value],
                })
        for value, (read_index, log, offset) in sorted(self._early_reads.items()):
            send_index = self.send_invoked.get(value)
            if send_index is not None and send_index < read_index:
                # Sent by a transaction that listed the send only on completion (a
                # consume-transform-produce output): invoked before this read after all.
                continue
            add("precommitted-read", {
                "indices": [read_index] if send_index is None else [read_index, send_index],
                "log": log, "offsets": [offset], "values": [value],
                "send_invoked": send_index,
            })
        self._lost_and_unseen()
        for (topic, key), partitions in sorted(self._key_splits.items()):
            add("key-split", {
                "indices": sorted(set(partitions.values())), "topic": topic, "key": key,
                "log": f"{topic}/{min(partitions)}",
                "logs": [f"{topic}/{p}" for p in sorted(partitions)], "offsets": [],
                "values": [],
            })

    def _lost_and_unseen(self) -> None:
        """Acknowledged values nobody read: lost below the highest read, else unseen."""
        add = self.findings.add
        read_by = self.read_by
        logs = self.logs
        located = self.located
        for value, index in self.acked.items():
            if value in read_by:
                continue
            # Unread, so its only positions come from acknowledgements.
            where = located.get(value)
            if where is not None and where[1] <= logs[where[0]].max_read:
                order = logs[where[0]]
                add("lost-write", {
                    "indices": [index, order.max_read_index], "log": where[0],
                    "offsets": [where[1]], "values": [value], "max_read_offset": order.max_read,
                })
            else:
                log = where[0] if where is not None else "?"
                self.unseen_by_log[log] = self.unseen_by_log.get(log, 0) + 1
                add("unseen", {
                    "indices": [index], "log": where[0] if where is not None else None,
                    "offsets": [where[1]] if where is not None else [], "values": [value],
                })
