"""Report building blocks: fault windows from nemesis events, fault lanes, latency
quantiles and phases for the charts."""

from __future__ import annotations

import re

import pytest

from harness.progress import RunCounters
from harness.report.charts import (
    Axis,
    Operation,
    Timeline,
    _value_chart,
    fault_lanes,
    latency_quantiles,
    phases,
)
from harness.report.html import NemesisRecord, fault_windows
from harness.report.plots import Window, thin


def test_fault_windows_pair_starts_with_their_stops_per_node() -> None:
    events = [
        NemesisRecord(1.0, "kill", {"nodes": ["n1", "n2"]}, None),
        NemesisRecord(2.0, "restart", {"nodes": ["n1"]}, None),
        NemesisRecord(3.0, "start-partition", {"shape": "halves"}, None),
        NemesisRecord(4.0, "stop-partition", {"unblocked": []}, None),
        NemesisRecord(5.0, "reset-connections", {"nodes": ["n3"]}, None),
        NemesisRecord(6.0, "pause", {"nodes": ["n3"]}, "skipped: n3 is down"),
    ]
    windows = fault_windows(events, end_s=9.0)
    assert Window(1.0, 2.0, "down", "kill n1", "n1") in windows  # each in its node's lane
    assert Window(1.0, 9.0, "down", "kill n2", "n2") in windows  # never restarted: open to the end
    assert Window(3.0, 4.0, "partition", "partition halves", "") in windows  # network-wide
    assert any(w.kind == "reset" and w.start == w.end == 5.0 for w in windows)
    assert not any(w.kind == "paused" for w in windows)  # a skipped op broke nothing


def test_disk_and_membership_events_are_fault_windows_and_in_the_status_line() -> None:
    events = [
        NemesisRecord(1.0, "disk-corrupt", {"node": "n1", "crash": "kill", "damaged": []}, None),
        NemesisRecord(2.0, "restart", {"nodes": ["n1"]}, None),
        NemesisRecord(3.0, "start-disk-fault", {"node": "n2", "enospc_write": True,
                                                "enospc_fsync": False, "fsync_delay_ms": 0.0},
                      None),
        NemesisRecord(4.0, "stop-disk-fault", {"nodes": ["n2"], "restarted_halted": ["n2"]},
                      None),
        NemesisRecord(5.0, "reassign", {"log": "t1/0", "replicas": ["n2", "n3", "n4"]}, None),
    ]
    windows = fault_windows(events, end_s=9.0)
    assert Window(1.0, 2.0, "down", "disk damage n1", "n1") in windows
    assert Window(3.0, 4.0, "disk", "disk ENOSPC n2", "n2") in windows
    assert Window(5.0, 5.0, "membership", "reassign t1/0", "") in windows
    counters = RunCounters()
    for record in events[:3]:
        counters.observe("nemesis", "info", record.f, record.value, None)
        if record.f == "disk-corrupt":
            assert counters.faults_active() == "down n1"
    assert counters.faults_active() == "disk n2"
    counters.observe("nemesis", "info", "stop-disk-fault", {"nodes": ["n2"]}, None)
    assert counters.faults_active() == "none"


def test_overlapping_faults_get_one_lane_per_node_each_labelled() -> None:
    windows = [Window(1.0, 5.0, "down", "kill n1", "n1"), Window(2.0, 6.0, "down", "kill n2", "n2"),
               Window(3.0, 4.0, "partition", "partition halves", "")]
    svg = fault_lanes(windows, ["n1", "n2", "n3"], Axis(10.0), [])
    bars = re.findall(r'<rect x="([\d.]+)" y="([\d.]+)"[^>]*class="fault"><title>([^<]*)', svg)
    lanes = {title.split(":")[0]: float(y) for _x, y, title in bars}
    assert len(set(lanes.values())) == 3  # three faults, three lanes: nothing blends
    assert lanes["partition halves"] < lanes["kill n1"] < lanes["kill n2"]  # network first
    assert all(f">{name}</text>" in svg for name in ("network", "n1", "n2", "n3"))


def test_latency_quantiles_have_no_floor() -> None:
    ops = [Operation("0", "send", 1.0, 1.0, "ok", 1),  # instant in simulated time
           Operation("1", "send", 1.0, 1.0, "ok", 2),
           Operation("2", "send", 1.0, 1.2, "ok", 3)]
    series, zero = latency_quantiles(ops, bucket_s=1.0)
    assert zero == 2
    by_name = {s.name: list(s.points) for s in series}
    assert by_name["p50"] == [(1.5, 0.0)]  # the true value, not lifted to 0.01 ms
    assert by_name["p99"] == [(1.5, pytest.approx(200.0))]
    svg = _value_chart("latency", "latency", series, Axis(3.0), [], "ms", log_y=True)
    assert svg.count("<polyline") == 2  # p95 and p99 drawn; p50 = 0 has no place on a log axis


def test_a_latency_line_breaks_where_no_operation_completed() -> None:
    ops = [Operation("0", "send", t, t + 0.01, "ok", i) for i, t in enumerate((0.2, 1.2, 5.2))]
    series, _ = latency_quantiles(ops, bucket_s=1.0)
    svg = _value_chart("latency", "latency", series[:1], Axis(6.0), [], "ms", log_y=True,
                       gap=1.5)
    assert svg.count("<polyline") == 2  # 0.5 s to 1.5 s, then 5.5 s alone: no line over 2-5 s


def test_phases_come_from_the_first_operation_and_the_schedule() -> None:
    timeline = Timeline(end_s=30.0, first_invoke_s=5.0,
                        nemesis=[(11.2, "stop-partition", {"final": True})])
    marks = phases(timeline, {"duration_ms": 6000, "recovery_ms": 10000})
    assert [(m.time, m.label) for m in marks] == [
        (0.0, "setup"), (5.0, "workload + faults"), (11.2, "final heal, recovery"),
        (21.0, "final reads")]


def test_thin_keeps_order_and_bounds_points() -> None:
    points = [(float(i), float(i)) for i in range(10_000)]
    kept = thin(points, 1000)
    assert len(kept) <= 1000 and kept == sorted(kept) and kept[0] == points[0]
