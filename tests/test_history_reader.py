"""The history model: the reader validates and pairs as it streams, the writer is stable."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from history import HistoryError, HistoryReader, HistoryWriter, write_history
from history.model import Poll, Send

SEND_INVOKE: dict[str, Any] = {"index": 0, "time": 10, "process": 3, "type": "invoke", "f": "send",
               "value": [{"topic": "t0", "key": "k3", "value": 17}]}
SEND_OK: dict[str, Any] = {"index": 1, "time": 20, "process": 3, "type": "ok", "f": "send",
           "value": [{"topic": "t0", "key": "k3", "value": 17, "partition": 2, "offset": 40}]}


def lines(*events: dict | str) -> bytes:
    return b"".join(
        (e if isinstance(e, str) else json.dumps(e)).encode() + b"\n" for e in events
    )


def read_all(tmp_path: Path, data: bytes) -> list:
    path = tmp_path / "history.jsonl"
    path.write_bytes(data)
    return list(HistoryReader(str(path)))


def error_of(tmp_path: Path, data: bytes) -> HistoryError:
    with pytest.raises(HistoryError) as caught:
        read_all(tmp_path, data)
    return caught.value


def test_reader_pairs_each_completion_with_its_invoke(tmp_path: Path) -> None:
    steps = read_all(tmp_path, lines(SEND_INVOKE, SEND_OK))
    (invoke, none), (done, paired) = steps
    assert none is None and paired is invoke
    assert isinstance(done, Send) and done.f == "send" and done.value is not None
    assert done.value[0].partition == 2 and done.value[0].offset == 40


def test_reader_decodes_poll_records_as_offset_key_value(tmp_path: Path) -> None:
    steps = read_all(tmp_path, lines(
        {"index": 0, "time": 0, "process": 1, "type": "invoke", "f": "poll", "value": None},
        {"index": 1, "time": 1, "process": 1, "type": "ok", "f": "poll",
         "value": {"t0/2": [[40, "k3", 17], [41, None, 18]]}},
    ))
    poll = steps[1][0]
    assert isinstance(poll, Poll)
    assert poll.value == {"t0/2": [(40, "k3", 17), (41, None, 18)]}


def test_nemesis_events_take_any_f_and_are_not_paired(tmp_path: Path) -> None:
    steps = read_all(tmp_path, lines(
        {"index": 0, "time": 0, "process": "nemesis", "type": "info", "f": "start-partition",
         "value": {"grudge": [[1], [2, 3]]}},
    ))
    assert steps[0][0].f == "start-partition" and steps[0][1] is None


def test_reader_reports_operations_left_open(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    path.write_bytes(lines(SEND_INVOKE))
    reader = HistoryReader(str(path))
    list(reader)
    assert list(reader.pending) == [3] and reader.events == 1


def test_reader_streams_events_before_a_later_error() -> None:
    """Events come out one line at a time: the error on line 3 is raised only after
    the first two were yielded, so nothing is loaded whole."""
    stream = io.BytesIO(lines(SEND_INVOKE, SEND_OK, "{not json"))
    reader = iter(HistoryReader("h.jsonl", stream=stream))
    assert next(reader)[0].index == 0
    assert next(reader)[0].index == 1
    with pytest.raises(HistoryError, match=r"^h\.jsonl:3: not valid JSON"):
        next(reader)


@pytest.mark.parametrize(
    ("data", "line", "message"),
    [
        (lines(SEND_INVOKE, "garbage"), 2, "not valid JSON"),
        (lines(SEND_INVOKE) + json.dumps(SEND_OK).encode()[:30], 2, "truncated last line"),
        (lines({k: v for k, v in SEND_INVOKE.items() if k != "time"}), 1,
         "missing required field `time`"),
        (lines({**SEND_OK, "index": 0}), 1, "ok send by process 3 has no pending invoke"),
        (lines(SEND_INVOKE, {**SEND_INVOKE, "index": 1}), 2,
         "process 3 invokes send while its send invoked at index 0 has not completed"),
        (lines({**SEND_INVOKE, "type": "started"}), 1, "unknown type 'started'"),
        (lines({**SEND_INVOKE, "f": "produce"}), 1, "unknown f 'produce'"),
        (lines(SEND_INVOKE, {**SEND_OK, "index": 5}), 2, "index 5 out of sequence: expected 1"),
        (lines(SEND_INVOKE, {**SEND_OK, "f": "poll", "value": None}), 2,
         "ok poll by process 3 completes a send invoked at index 0"),
        (lines(SEND_INVOKE, {**SEND_OK, "value": [{**SEND_OK["value"][0], "offset": -1}]}), 2,
         "Expected `int` >= 0"),
        (lines(SEND_INVOKE, {**SEND_OK, "value": [{**SEND_OK["value"][0], "value": 99}]}), 2,
         "send completion lists values [99] but its invoke at index 0 listed [17]"),
        (lines({"index": 0, "time": 0, "process": 1, "type": "invoke", "f": "poll",
                "value": None},
               {"index": 1, "time": 0, "process": 1, "type": "ok", "f": "poll",
                "value": {"t0": [[0, None, 1]]}}), 2, "not of the form 'topic/partition'"),
        (lines({"index": 0, "time": 0, "process": 1, "type": "invoke", "f": "crash",
                "value": None},
               {"index": 1, "time": 0, "process": 1, "type": "ok", "f": "crash",
                "value": None}), 2, "a crash completes as info, not ok"),
        (lines(SEND_INVOKE, ""), 2, "empty line"),
    ],
)
def test_malformed_history_names_file_and_line(
    tmp_path: Path, data: bytes, line: int, message: str
) -> None:
    error = error_of(tmp_path, data)
    assert error.line == line
    assert str(error).startswith(f"{tmp_path / 'history.jsonl'}:{line}: ")
    assert message in str(error)


def test_missing_file_is_a_history_error(tmp_path: Path) -> None:
    with pytest.raises(HistoryError, match="cannot open history"):
        list(HistoryReader(str(tmp_path / "nope.jsonl")))


def test_writer_layout_is_stable_and_matches_the_contract() -> None:
    stream = io.BytesIO()
    writer = HistoryWriter(stream)
    # Keys given in a scrambled order come out in the canonical one.
    writer.append(3, "invoke", "send", [{"value": 17, "key": "k3", "topic": "t0"}], time=10)
    writer.append(3, "ok", "send", [{"offset": 40, "partition": 2, "value": 17, "key": "k3",
                                     "topic": "t0"}], time=20)
    assert stream.getvalue() == (
        b'{"index":0,"time":10,"process":3,"type":"invoke","f":"send",'
        b'"value":[{"topic":"t0","key":"k3","value":17}]}\n'
        b'{"index":1,"time":20,"process":3,"type":"ok","f":"send",'
        b'"value":[{"topic":"t0","key":"k3","value":17,"partition":2,"offset":40}]}\n'
    )


def test_writer_refuses_a_second_invoke_on_a_busy_process() -> None:
    writer = HistoryWriter(io.BytesIO())
    writer.append(1, "invoke", "poll", time=0)
    with pytest.raises(Exception, match="has not completed"):
        writer.append(1, "invoke", "poll", time=1)


def test_writer_refuses_unknown_f_and_type() -> None:
    writer = HistoryWriter(io.BytesIO())
    with pytest.raises(ValueError, match="unknown client f"):
        writer.append(1, "invoke", "produce", time=0)
    with pytest.raises(ValueError, match="unknown event type"):
        writer.append(1, "begun", "poll", time=0)


def test_written_history_reads_back_equal(tmp_path: Path) -> None:
    events = [
        {**SEND_INVOKE},
        {"index": 1, "time": 15, "process": "nemesis", "type": "info", "f": "kill",
         "value": {"nodes": [1]}},
        {**SEND_OK, "index": 2, "assignment": ["t0/2"], "generation": 4},
    ]
    path = tmp_path / "h.jsonl"
    write_history(str(path), events)
    read = [event for event, _ in HistoryReader(str(path))]
    assert [e.index for e in read] == [0, 1, 2]
    rebalanced = read[2]
    assert isinstance(rebalanced, Send)
    assert rebalanced.assignment == ["t0/2"] and rebalanced.generation == 4
    assert [json.loads(line) for line in path.read_text().splitlines()] == events
