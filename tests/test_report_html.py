"""Report building blocks: fault windows from nemesis events, SVG charts."""

from __future__ import annotations

from harness.report.html import NemesisRecord, fault_windows
from harness.report.plots import Series, Window, thin, time_chart


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


def test_time_chart_shades_windows_and_draws_series() -> None:
    svg = time_chart("t", [Series("ok", [(0.0, 1.0), (5.0, 3.0)], "#00f")],
                     [Window(1.0, 2.0, "down", "kill n1")], x_max=10.0, y_label="ops/s")
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert "<polyline" in svg and "kill n1" in svg and "#d6c8ef" in svg


def test_thin_keeps_order_and_bounds_points() -> None:
    points = [(float(i), float(i)) for i in range(10_000)]
    kept = thin(points, 1000)
    assert len(kept) <= 1000 and kept == sorted(kept) and kept[0] == points[0]
