"""The fault scenario's own operation timeouts: an operation stuck past its deadline is
recorded as `info` with error "timeout", and its process retires (a new number)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio

from harness.runtime.sim.scenario import ScenarioOptions, run_faults_scenario
from workloads.client.consumer import Consumer
from workloads.client.producer import Delivery

QUIET = ScenarioOptions(duration_s=3.0, recovery_s=0.5, faults=False, ops_per_second=60.0)


def _timed_out(history: bytes, f: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every event of operation `f`, and its `info` completions (all must say "timeout")."""
    events = [e for e in map(json.loads, history.splitlines()) if e["f"] == f]
    timeouts = [e for e in events if e["type"] == "info"]
    assert timeouts and all(e["error"] == "timeout" for e in timeouts)
    return events, timeouts


def test_a_poll_stuck_past_its_deadline_is_info_timeout_and_retires(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def stuck(self: Consumer, timeout_s: float = 1.0) -> list[object]:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    monkeypatch.setattr(Consumer, "poll", stuck)
    history, _ = run_faults_scenario(3, QUIET)
    polls, timeouts = _timed_out(history, "poll")
    invoked = {e["process"]: e["time"] for e in polls if e["type"] == "invoke"}
    for e in timeouts:
        # request.timeout.ms + the poll's 0.2 s + 1 s after the invoke
        assert e["time"] - invoked[e["process"]] == pytest.approx(2.2e9, abs=1e6)
    # A retired process never invokes again.
    for e in timeouts:
        later = [p for p in polls if p["process"] == e["process"] and p["index"] > e["index"]]
        assert later == []


def test_a_send_stuck_past_its_deadline_is_info_timeout_and_retires(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def stuck(self: Delivery) -> object:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    monkeypatch.setattr(Delivery, "wait", stuck)
    history, _ = run_faults_scenario(3, QUIET)
    sends, timeouts = _timed_out(history, "send")
    invoked = {e["process"]: e for e in sends if e["type"] == "invoke"}
    for e in timeouts:
        assert e["value"] == invoked[e["process"]]["value"]
        # delivery.timeout.ms + 1 s after the record was queued (just after the invoke)
        assert 4e9 <= e["time"] - invoked[e["process"]]["time"] < 4.2e9
        later = [s for s in sends if s["process"] == e["process"] and s["index"] > e["index"]]
        assert later == []
