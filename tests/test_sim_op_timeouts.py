"""A workload operation stuck past its deadline, in a sim run driven as `faultline run`
drives it: recorded as `info` with a "timeout" error, and its process retires (a new
process number takes over)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio

from harness.run_config import RunConfig
from harness.runner import execute
from workloads.adapters.session import SessionSpec
from workloads.client.consumer import Consumer
from workloads.client.producer import Delivery
from workloads.queue import POLL_WAIT_S

QUIET = {"seed": 3, "nemesis": "none", "time-limit": 20.0, "recovery": 0.5, "final-read": 1.0}


def _history(folder: Path) -> list[dict[str, Any]]:
    folder.mkdir()
    execute(RunConfig.build(QUIET), folder)
    return [json.loads(line) for line in (folder / "history.jsonl").read_text().splitlines()]


def _timed_out(events: list[dict[str, Any]], f: str) -> tuple[list[dict[str, Any]],
                                                                list[dict[str, Any]]]:
    """Every event of operation `f`, and its completions that timed out (at least one;
    none of `f` may complete `ok`, since every one is stuck)."""
    ops = [e for e in events if e["f"] == f]
    timeouts = [e for e in ops if e["type"] == "info" and e["error"].startswith("timeout")]
    assert timeouts and not [e for e in ops if e["type"] == "ok"]
    return ops, timeouts


def _invoked(ops: list[dict[str, Any]], completion: dict[str, Any]) -> dict[str, Any]:
    """The invoke that `completion` completes: its process's last before it."""
    return [e for e in ops if e["type"] == "invoke" and e["process"] == completion["process"]
            and e["index"] < completion["index"]][-1]


def _retired(ops: list[dict[str, Any]], completion: dict[str, Any]) -> bool:
    return not [e for e in ops if e["process"] == completion["process"]
                and e["index"] > completion["index"]]


def test_a_poll_stuck_past_its_deadline_is_info_timeout_and_retires(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    async def stuck(self: Consumer, timeout_s: float = 1.0) -> list[object]:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    monkeypatch.setattr(Consumer, "poll", stuck)
    polls, timeouts = _timed_out(_history(tmp_path / "run"), "poll")
    limit = SessionSpec("", "").poll_timeout_s(POLL_WAIT_S)
    for e in timeouts:
        waited = (e["time"] - _invoked(polls, e)["time"]) / 1e9
        assert limit <= waited <= limit + 1.0, (waited, limit)
        assert _retired(polls, e)


def test_a_send_stuck_past_its_deadline_is_info_timeout_and_retires(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    async def stuck(self: Delivery) -> object:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    monkeypatch.setattr(Delivery, "wait", stuck)
    sends, timeouts = _timed_out(_history(tmp_path / "run"), "send")
    limit = SessionSpec("", "").send_timeout_s
    for e in timeouts:
        invoke = _invoked(sends, e)
        assert e["value"][0]["value"] == invoke["value"][0]["value"]
        waited = (e["time"] - invoke["time"]) / 1e9
        assert limit <= waited <= limit + 0.5, (waited, limit)
        assert _retired(sends, e)
