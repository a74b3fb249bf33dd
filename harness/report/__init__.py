"""Run reports: `report.html` per run (inline CSS and SVG) and `results/index.html`."""

from harness.report.html import render_index, render_report, write_report

__all__ = ["render_index", "render_report", "write_report"]
