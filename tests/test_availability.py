"""Availability under faults and recovery: known answers from hand-built histories, and
one real sim run that writes them into results.json and the report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from harness.availability import measure_availability
from harness.cli import cli


class History:
    """A history written by hand, one event per call, in time order."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.process = 0

    def op(self, f: str, at_s: float, kind: str = "ok", value: Any = None,
           invoke: Any = None) -> None:
        """An operation invoked 10 ms before `at_s` and completing at `at_s`."""
        self.process += 1
        for t, typ, v in ((at_s - 0.01, "invoke", invoke), (at_s, kind, value)):
            self.events.append({"time": round(t * 1e9), "process": self.process, "type": typ,
                                "f": f, "value": v})

    def send(self, at_s: float, kind: str = "ok") -> None:
        msg = {"topic": "t0", "key": "k", "value": len(self.events)}
        self.op("send", at_s, kind, [{**msg, "partition": 0, "offset": 1}], [msg])

    def poll(self, at_s: float, records: bool = True) -> None:
        self.op("poll", at_s, "ok", {"t0/0": [[1, "k", 1]]} if records else {"t0/0": []})

    def nemesis(self, f: str, at_s: float, value: Any) -> None:
        self.events.append({"time": round(at_s * 1e9), "process": "nemesis", "type": "info",
                            "f": f, "value": value})

    def write(self, path: Path) -> Path:
        events = sorted(self.events, key=lambda e: e["time"])
        path.write_text("".join(json.dumps({"index": i, **e}) + "\n"
                                for i, e in enumerate(events)))
        return path


def busy_outside(h: History, start: float, end: float, until: float) -> None:
    """Sends and polls with records every 0.1 s outside [start, end], up to `until`."""
    t = 0.1
    while t < until:
        if not start - 0.05 <= t <= end + 0.25:
            h.send(t)
            h.poll(t + 0.02)
        t = round(t + 0.1, 3)


def test_windows_count_only_when_a_send_was_acknowledged_and_a_poll_returned_records(
        tmp_path: Path) -> None:
    h = History()
    busy_outside(h, 10, 14, 20)
    h.nemesis("start-partition", 10, {"shape": "halves"})
    h.nemesis("stop-partition", 14, {})
    h.send(10.5)
    h.poll(10.2)          # [10, 11): both
    h.send(11.5)
    h.poll(11.2)          # [11, 12): both
    h.send(12.5)
    h.poll(12.2, records=False)  # [12, 13): an empty poll serves no one
    h.send(13.5, kind="fail")
    h.poll(13.2)          # [13, 14): the send failed
    a = measure_availability(h.write(tmp_path / "h.jsonl"))
    assert a.window_s == 1.0 and a.windows == 4 and a.fault_time_s == pytest.approx(4.0)
    assert a.share == pytest.approx(0.5)
    assert a.send_share == pytest.approx(0.75)
    assert a.poll_share == pytest.approx(0.75)
    assert a.final_heal_s == pytest.approx(14.0)
    # The first acknowledged send after the heal, at 14.3 s.
    assert a.recovery_s == pytest.approx(0.3)
    data = a.to_json()
    assert data["share"] == 0.5 and data["windows"] == 4


def test_overlapping_faults_merge_and_a_short_last_window_weighs_by_its_length(
        tmp_path: Path) -> None:
    h = History()
    busy_outside(h, 2, 5.5, 20)
    h.nemesis("kill", 2, {"nodes": ["n1"]})
    h.nemesis("pause", 3, {"nodes": ["n2"]})
    h.nemesis("restart", 4, {"nodes": ["n1"]})
    h.nemesis("resume", 5.5, {"nodes": ["n2"]})
    for t in (2.5, 3.5, 4.5):
        h.send(t)
        h.poll(t + 0.1)
    a = measure_availability(h.write(tmp_path / "h.jsonl"))
    assert a.windows == 4 and a.fault_time_s == pytest.approx(3.5)
    assert a.share == pytest.approx(3 / 3.5)
    assert a.final_heal_s == pytest.approx(5.5)


def test_a_workload_that_never_polls_is_judged_on_its_sends_alone(tmp_path: Path) -> None:
    h = History()
    t = 0.1
    while t < 20:
        if not 9.9 <= t <= 12.3:
            h.send(t)
        t = round(t + 0.1, 3)
    h.nemesis("start-partition", 10, {"shape": "one"})
    h.nemesis("stop-partition", 12, {})
    h.send(10.5)
    a = measure_availability(h.write(tmp_path / "h.jsonl"))
    assert a.poll_share is None
    assert a.share == a.send_share == pytest.approx(0.5)


def test_a_slow_workload_gets_wider_windows(tmp_path: Path) -> None:
    h = History()
    for t in (1.0, 5.0, 9.0, 13.0, 17.0):   # 10 completions in 20 s: 0.5 per second
        h.send(t)
        h.poll(t + 1)
    h.op("poll", 20.0)
    h.nemesis("start-partition", 2, {"shape": "one"})
    h.nemesis("stop-partition", 12, {})
    a = measure_availability(h.write(tmp_path / "h.jsonl"))
    assert a.window_s == pytest.approx(5 / (11 / 20))
    # Windows [2, 11.09) and [11.09, 12): the first saw a send (5.0) and a poll (6.0).
    assert a.windows == 2
    assert a.share == pytest.approx((a.window_s) / 10)


def test_no_faults_no_share_and_a_dead_cluster_has_none_and_never_recovers(
        tmp_path: Path) -> None:
    h = History()
    busy_outside(h, 100, 100, 5)
    a = measure_availability(h.write(tmp_path / "calm.jsonl"))
    assert a.share is None and a.final_heal_s is None and a.recovery_s is None

    h = History()
    busy_outside(h, 5, 100, 5)
    h.nemesis("kill", 5, {"nodes": ["n1", "n2", "n3"]})
    t = 5.5
    while t < 20:
        h.send(t, kind="info")
        h.poll(t, records=False)
        t += 0.5
    h.nemesis("restart", 15, {"nodes": ["n1", "n2", "n3"]})
    a = measure_availability(h.write(tmp_path / "dead.jsonl"))
    assert a.share == 0.0 and a.send_share == 0.0 and a.poll_share == 0.0
    assert a.final_heal_s == pytest.approx(15.0) and a.recovery_s is None


def test_transactions_that_send_and_read_count_as_sends_and_polls(tmp_path: Path) -> None:
    h = History()
    busy_outside(h, 10, 11, 20)
    h.nemesis("start-partition", 10, {"shape": "one"})
    h.nemesis("stop-partition", 11, {})
    h.op("txn", 10.5, "ok",
         [["send", {"topic": "t0", "key": "k", "value": 9, "partition": 0, "offset": 3}],
          ["poll", {"t0/0": [[2, "k", 8]]}]],
         [["send", {"topic": "t0", "key": "k", "value": 9}], ["poll", None]])
    a = measure_availability(h.write(tmp_path / "h.jsonl"))
    assert a.share == pytest.approx(1.0)


def test_a_real_sim_run_reports_availability_in_results_and_report(tmp_path: Path) -> None:
    out = tmp_path / "results"
    result = CliRunner().invoke(cli, [
        "run", "--time-limit", "12", "--recovery", "5", "--final-read", "10",
        "--nemesis", "partition", "--nemesis-interval", "2", "--seed", "3",
        "--out", str(out)])
    assert result.exit_code in (0, 1), result.output
    run_dir = max(out.glob("2*"))
    availability = json.loads((run_dir / "results.json").read_text())["availability"]
    print("sim run availability:", availability)
    assert availability["windows"] > 0 and availability["window_s"] >= 1.0
    for key in ("share", "send_share", "poll_share"):
        assert 0.0 <= availability[key] <= 1.0
    assert availability["share"] <= min(availability["send_share"], availability["poll_share"])
    assert availability["recovery_s"] is not None
    report = (run_dir / "report.html").read_text()
    assert "served sends and polls" in report


def test_a_clock_strobe_ends_where_the_final_heal_stops_it(tmp_path: Path) -> None:
    h = History()
    busy_outside(h, 10, 14, 20)
    h.nemesis("clock-strobe", 10, {"node": "n1", "delta_ms": 64, "period_ms": 32,
                                   "duration_ms": 40_000})
    h.nemesis("clock-reset", 14, {"nodes": ["n1"], "final": True})
    a = measure_availability(h.write(tmp_path / "h.jsonl"))
    assert a.fault_time_s == pytest.approx(4.0)
    assert a.final_heal_s == pytest.approx(14.0)
    assert a.recovery_s == pytest.approx(0.3)
