"""Reports: `report.html` per run, `campaign.html` per campaign, `results/index.html`.

Each is self-contained (inline CSS and SVG) and rendered from files in the results
folder alone, so `faultline report` can re-render any of them at any time.
"""

from harness.report.campaign import render_campaign, write_campaign_report
from harness.report.html import render_report, write_report
from harness.report.index import render_index

__all__ = [
    "render_campaign",
    "render_index",
    "render_report",
    "write_campaign_report",
    "write_report",
]
