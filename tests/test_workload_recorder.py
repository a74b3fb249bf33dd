"""HistoryRecorder: pairs every invoke with one completion and maps outcomes onto ok/fail/info."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import trio
import trio.testing

from history.pairing import PairingError
from history.reader import HistoryReader
from history.writer import HistoryWriter
from workloads.adapters import OpFailed, OpUnknown, Rebalance
from workloads.recorder import HistoryRecorder, Retired


def recorder() -> tuple[HistoryRecorder, io.BytesIO]:
    stream = io.BytesIO()
    return HistoryRecorder(HistoryWriter(stream), lambda: round(trio.current_time() * 1e9)), stream


def events(stream: io.BytesIO, tmp_path: Path) -> list:
    path = tmp_path / "h.jsonl"
    path.write_bytes(stream.getvalue())
    return [event for event, _ in HistoryReader(str(path))]


async def test_processes_and_values_are_never_reused() -> None:
    rec, _ = recorder()
    assert [rec.new_process() for _ in range(3)] == [0, 1, 2]
    values = [rec.next_value() for _ in range(1000)]
    assert len(set(values)) == 1000


async def test_perform_records_ok_fail_and_info_and_retires_on_info(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    rec, stream = recorder()

    async def ok() -> dict[str, int]:
        await trio.sleep(0.5)
        return {"t1/0": 3}

    async def failed() -> None:
        raise OpFailed("rejected")

    async def unknown() -> None:
        raise OpUnknown("no answer")

    assert await rec.perform(0, "commit", {"t1/0": 3}, ok, timeout_s=1) == (True, {"t1/0": 3})
    assert await rec.perform(0, "commit", {"t1/0": 3}, failed, timeout_s=1) == (False, None)
    with pytest.raises(Retired):
        await rec.perform(0, "commit", {"t1/0": 3}, unknown, timeout_s=1)
    written = events(stream, tmp_path)
    assert [(e.type, e.f) for e in written] == [
        ("invoke", "commit"), ("ok", "commit"),
        ("invoke", "commit"), ("fail", "commit"),
        ("invoke", "commit"), ("info", "commit"),
    ]
    assert written[1].time - written[0].time == 500_000_000
    assert written[3].error == "OpFailed: rejected"
    assert written[5].error == "OpUnknown: no answer"
    assert rec.completions == {"ok": 1, "fail": 1, "info": 1}


async def test_an_operation_past_its_timeout_is_unknown(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    rec, stream = recorder()

    async def hangs() -> None:
        await trio.sleep_forever()

    with pytest.raises(Retired, match="timeout"):
        await rec.perform(4, "poll", None, hangs, timeout_s=2.5)
    invoke, info = events(stream, tmp_path)
    assert info.time - invoke.time == 2_500_000_000
    assert (info.type, info.error) == ("info", "timeout: no outcome within 2.5 s")


async def test_a_rebalance_is_written_on_the_completion(tmp_path: Path) -> None:
    rec, stream = recorder()
    changes = [Rebalance(["t1/0", "t1/1"], 7), None]

    async def poll() -> dict[str, list[list[object]]]:
        return {"t1/0": [[0, "k", 1]]}

    await rec.perform(2, "poll", None, poll, timeout_s=1, rebalance=lambda: changes.pop(0))
    await rec.perform(2, "poll", None, poll, timeout_s=1, rebalance=lambda: changes.pop(0))
    first, second = events(stream, tmp_path)[1::2]
    assert (first.assignment, first.generation) == (["t1/0", "t1/1"], 7)
    assert (second.assignment, second.generation) == (None, None)


async def test_a_crash_is_an_info_completion(tmp_path: Path) -> None:
    rec, stream = recorder()
    rec.crash(9)
    invoke, info = events(stream, tmp_path)
    assert (invoke.f, invoke.type) == ("crash", "invoke")
    assert (info.f, info.type, info.error) == ("crash", "info", "client crashed")


async def test_a_second_invoke_while_one_is_pending_is_refused() -> None:
    rec, _ = recorder()
    rec.invoke(1, "poll", None)
    with pytest.raises(PairingError):
        rec.invoke(1, "send", [{"topic": "t1", "key": None, "value": 1}])


async def test_an_operation_cut_short_by_an_outer_deadline_completes_info(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    rec, stream = recorder()

    async def hangs() -> None:
        await trio.sleep_forever()

    with trio.move_on_after(1):
        await rec.perform(3, "poll", None, hangs, timeout_s=10)
    invoke, info = events(stream, tmp_path)
    assert (info.type, info.f, info.error) == ("info", "poll", "cancelled: the phase ended first")
    assert info.time - invoke.time == 1_000_000_000
