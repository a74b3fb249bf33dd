"""Edge cases of the anomaly definitions: what must and must not be reported."""

from __future__ import annotations

import io
from typing import Any

from checkers import Verdict, check_steps
from history import HistoryReader, HistoryWriter


class History:
    """A tiny builder: operations complete immediately unless split by hand."""

    def __init__(self) -> None:
        self.buffer = io.BytesIO()
        self.writer = HistoryWriter(self.buffer)

    def event(self, process: int, type: str, f: str, value: Any = None, **extra: Any) -> int:
        return self.writer.append(process, type, f, value, time=self.writer.next_index,
                                  **extra)

    def op(self, process: int, f: str, value: Any, result: Any = "same", type: str = "ok",
           **extra: Any) -> int:
        self.event(process, "invoke", f, value)
        return self.event(process, type, f, value if result == "same" else result, **extra)

    def send(self, process: int, log: str, messages: list[tuple[str | None, int, int | None]],
             type: str = "ok") -> int:
        topic, partition = log.split("/")
        sent = [{"topic": topic, "key": k, "value": v} for k, v, _ in messages]
        done = [{"topic": topic, "key": k, "value": v, "partition": int(partition),
                 "offset": o} for k, v, o in messages]
        return self.op(process, "send", sent, done if type != "fail" else sent, type)

    def assign(self, process: int, logs: list[str], seek: str = "beginning") -> int:
        return self.op(process, "assign", {"logs": logs, "seek": seek})

    def poll(self, process: int, result: dict[str, list[list[Any]]], **extra: Any) -> int:
        return self.op(process, "poll", None, result, **extra)

    def subscribe(self, process: int, group: str = "g1") -> int:
        return self.op(process, "subscribe", {"topics": ["t0"], "group": group})

    def check(self, **options: Any) -> Verdict:
        self.buffer.seek(0)
        return check_steps(HistoryReader("<memory>", stream=self.buffer), **options)


def test_info_send_seen_by_a_read_joins_the_version_order() -> None:
    h = History()
    h.send(0, "t0/0", [(None, 1, 0)], type="info")
    h.send(1, "t0/0", [(None, 2, 1)])
    h.assign(2, ["t0/0"])
    h.poll(2, {"t0/0": [[1, None, 1]]})
    counts = h.check()["counts"]
    # The info send must have committed (value 1 was read) at offset 0, so value 1 sits
    # at two offsets, and offset 1 holds two values.
    assert counts == {"inconsistent-offsets": 1, "duplicate": 1, "lost-write": 1}


def test_info_send_nobody_read_is_neither_lost_nor_unseen() -> None:
    h = History()
    h.send(0, "t0/0", [(None, 1, None)], type="info")
    h.send(1, "t0/0", [(None, 2, 1)])
    h.assign(2, ["t0/0"])
    h.poll(2, {"t0/0": [[1, None, 2]]})
    verdict = h.check()
    assert verdict["counts"] == {} and verdict["valid"] is True


def test_read_of_a_value_never_sent_is_a_precommitted_read() -> None:
    h = History()
    h.assign(0, ["t0/0"])
    read = h.poll(0, {"t0/0": [[0, None, 99]]})
    verdict = h.check()
    assert verdict["counts"] == {"precommitted-read": 1}
    (evidence,) = verdict["anomalies"]["precommitted-read"]
    assert evidence["indices"] == [read] and evidence["send_invoked"] is None


def test_read_of_a_send_still_in_flight_is_not_precommitted() -> None:
    h = History()
    h.event(0, "invoke", "send", [{"topic": "t0", "key": None, "value": 1}])
    h.assign(1, ["t0/0"])
    h.poll(1, {"t0/0": [[0, None, 1]]})
    h.event(0, "ok", "send", [{"topic": "t0", "key": None, "value": 1, "partition": 0,
                               "offset": 0}])
    assert h.check()["counts"] == {}


def test_gap_in_offsets_without_a_value_in_it_is_not_a_skip() -> None:
    # Offsets 1 and 3 hold nothing anyone saw (as transaction markers would): not skips.
    h = History()
    h.send(0, "t0/0", [(None, 1, 0), (None, 2, 2), (None, 3, 4)])
    h.assign(1, ["t0/0"])
    h.poll(1, {"t0/0": [[0, None, 1], [2, None, 2]]})
    h.poll(1, {"t0/0": [[4, None, 3]]})
    assert h.check(allowed=frozenset())["counts"] == {}


def test_rebalance_assignment_resets_a_process_poll_cursor() -> None:
    h = History()
    h.send(0, "t0/0", [(None, 1, 0), (None, 2, 1), (None, 3, 2)])
    h.subscribe(1)
    h.poll(1, {"t0/0": [[0, None, 1], [1, None, 2]]}, assignment=["t0/0"], generation=1)
    # Rebalanced: the process resumed from the committed offset 0, reading 0 again.
    h.poll(1, {"t0/0": [[0, None, 1], [1, None, 2], [2, None, 3]]}, assignment=["t0/0"],
           generation=2)
    assert h.check()["counts"] == {}


def test_same_poll_without_rebalance_is_nonmonotonic() -> None:
    h = History()
    h.send(0, "t0/0", [(None, 1, 0), (None, 2, 1), (None, 3, 2)])
    h.subscribe(1)
    h.poll(1, {"t0/0": [[0, None, 1], [1, None, 2]]}, assignment=["t0/0"], generation=1)
    h.poll(1, {"t0/0": [[0, None, 1], [1, None, 2], [2, None, 3]]})
    assert h.check()["counts"] == {"nonmonotonic-poll": 1}


def test_one_batch_may_order_a_key_either_way_but_later_sends_may_not() -> None:
    h = History()
    # Within one send a key's two messages have no defined order: not key-order...
    h.send(0, "t0/0", [("k", 1, 2), ("k", 2, 1)])
    # ...but the next send of k, invoked after that one completed, landing below it is.
    h.assign(0, ["t0/1"])  # drops the per-log send cursor, as Jepsen does
    later = h.send(0, "t0/0", [("k", 3, 0)])
    verdict = h.check()
    assert verdict["counts"]["key-order"] == 1
    assert verdict["anomalies"]["key-order"][0]["indices"][1] == later


def test_overlapping_commits_are_not_ordered_so_not_a_regression() -> None:
    h = History()
    h.send(9, "t0/0", [(None, 1, 0), (None, 2, 1)])
    h.subscribe(0)
    h.subscribe(1)
    h.poll(0, {"t0/0": [[0, None, 1], [1, None, 2]]})
    h.poll(1, {"t0/0": [[0, None, 1]]})
    h.event(1, "invoke", "commit", {"t0/0": 1})
    h.op(0, "commit", {"t0/0": 2})
    h.event(1, "ok", "commit", {"t0/0": 1})
    assert h.check()["counts"] == {}


def test_seek_to_beginning_declares_a_reset_for_commit_regression() -> None:
    h = History()
    h.send(9, "t0/0", [(None, 1, 0), (None, 2, 1)])
    h.subscribe(0)
    h.poll(0, {"t0/0": [[0, None, 1], [1, None, 2]]}, assignment=["t0/0"], generation=1)
    h.op(0, "commit", {"t0/0": 2})
    h.assign(0, ["t0/0"], seek="beginning")
    h.poll(0, {"t0/0": [[0, None, 1]]})
    h.op(0, "commit", {"t0/0": 1})
    assert h.check()["counts"] == {}


def test_failed_commit_counts_for_nothing() -> None:
    h = History()
    h.send(9, "t0/0", [(None, 1, 0), (None, 2, 1)])
    h.subscribe(0)
    h.op(0, "commit", {"t0/0": 2}, type="fail")
    h.assign(5, ["t0/0"])
    h.poll(5, {"t0/0": [[0, None, 1], [1, None, 2]]})
    assert h.check()["counts"] == {}


def test_same_log_in_different_generations_is_not_split() -> None:
    h = History()
    h.subscribe(0)
    h.subscribe(1)
    h.poll(0, {}, assignment=["t0/0"], generation=1)
    h.poll(1, {}, assignment=["t0/0"], generation=2)
    assert h.check()["counts"] == {}


def test_different_groups_may_own_the_same_log() -> None:
    h = History()
    h.subscribe(0, group="g1")
    h.subscribe(1, group="g2")
    h.poll(0, {}, assignment=["t0/0"], generation=1)
    h.poll(1, {}, assignment=["t0/0"], generation=1)
    assert h.check()["counts"] == {}


def test_lost_by_commit_needs_a_member_of_that_group_to_have_polled() -> None:
    h = History()
    h.send(9, "t0/0", [(None, 1, 0)])
    h.assign(5, ["t0/0"])
    h.poll(5, {"t0/0": [[0, None, 1]]})  # read, but not by g1
    h.subscribe(0)
    commit = h.op(0, "commit", {"t0/0": 1})
    verdict = h.check()
    assert verdict["counts"] == {"lost-by-commit": 1}
    evidence = verdict["anomalies"]["lost-by-commit"][0]
    assert commit in evidence["indices"] and evidence["offsets"] == [0]
    assert evidence["group"] == "g1" and evidence["values"] == [1]
