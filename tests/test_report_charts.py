"""The report's charts in a real browser (Debian's headless chromium): no two legend
entries overlap, and every anomaly item has a visible marker on the timeline.

Screenshots of the failing and the passing report are taken on every run; with
FAULTLINE_UPDATE_SCREENSHOTS=1 they replace docs/report-failing.png and
docs/report-passing.png, which README links.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness.cli import cli

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DOCS = Path(__file__).resolve().parent.parent / "docs"
# The same faults: acks=1 without idempotence loses, duplicates and reorders writes
# (four anomaly types, 13 items); the defaults (acks=all, idempotence) come through.
FAULTS = ["--nemesis", "kill,partition,pause", "--nemesis-interval", "2", "--time-limit", "8"]
FAILING = [*FAULTS, "--acks", "1", "--no-enable-idempotence", "--seed", "3"]
PASSING = [*FAULTS, "--seed", "4"]
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--window-size=1100,4200"]

# Run in the page after it loaded: the boxes of legend entries and of anomaly markers,
# written into the DOM so --dump-dom carries them out.
PROBE = """
<script>
window.addEventListener('load', function(){
  function box(el){ var r = el.getBoundingClientRect();
    return {x: r.left + scrollX, y: r.top + scrollY, w: r.width, h: r.height}; }
  var legends = [];
  document.querySelectorAll('.keys').forEach(function(k){
    legends.push(Array.prototype.map.call(k.querySelectorAll('.key'), function(e){
      return {text: e.textContent, box: box(e)}; })); });
  document.querySelectorAll('svg.chart').forEach(function(svg){
    legends.push(Array.prototype.map.call(svg.querySelectorAll('text.ph'), function(e){
      return {text: e.textContent, box: box(e)}; })); });
  var markers = Array.prototype.map.call(document.querySelectorAll('[data-anomaly]'),
    function(g){
      g.scrollIntoView({block: 'center'});
      var r = g.getBoundingClientRect(), svg = box(g.ownerSVGElement);
      var hit = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
      return {id: g.getAttribute('data-anomaly'), box: box(g), svg: svg,
              on_top: !!hit && g.contains(hit)}; });
  var out = document.createElement('pre'); out.id = 'probe';
  out.textContent = JSON.stringify({legends: legends, markers: markers,
                                    height: document.documentElement.scrollHeight});
  document.body.appendChild(out);
});
</script>
"""


def chromium(args: list[str], profile: Path) -> str:
    if not CHROMIUM:
        pytest.skip("Debian's chromium is not installed here (.ci/run installs it)")
    result = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args],
                            capture_output=True, text=True, timeout=120, check=True)
    return result.stdout


def run_report(out: Path, args: list[str]) -> Path:
    result = CliRunner().invoke(cli, ["run", *args, "--out", str(out)])
    assert result.exit_code in (0, 1), result.output
    (run_dir,) = [p for p in out.iterdir() if p.is_dir() and not p.is_symlink()]
    return run_dir


def probe(run_dir: Path, tmp: Path) -> dict:
    page = tmp / "probed.html"
    page.write_text((run_dir / "report.html").read_text().replace("</body>", PROBE + "</body>"))
    dom = chromium(["--virtual-time-budget=5000", "--dump-dom", page.as_uri()], tmp / "profile")
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    assert found, "the probe script did not run"
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&")
                      .replace("&lt;", "<").replace("&gt;", ">"))


def overlaps(a: dict, b: dict) -> bool:
    return (a["x"] < b["x"] + b["w"] and b["x"] < a["x"] + a["w"]
            and a["y"] < b["y"] + b["h"] and b["y"] < a["y"] + a["h"])


def screenshot(run_dir: Path, tmp: Path, name: str, height: int) -> Path:
    """The whole page (the window as tall as the page, up to 16000 px)."""
    shot = tmp / name
    chromium([f"--window-size=1100,{min(height + 20, 16000)}", f"--screenshot={shot}",
              (run_dir / "report.html").as_uri()], tmp / "shot-profile")
    assert shot.stat().st_size > 10_000
    if os.environ.get("FAULTLINE_UPDATE_SCREENSHOTS") == "1":
        DOCS.mkdir(exist_ok=True)
        shutil.copyfile(shot, DOCS / name)
    return shot


@pytest.mark.parametrize("args, name", [(FAILING, "report-failing.png"),
                                        (PASSING, "report-passing.png")])
def test_legends_do_not_overlap_and_every_anomaly_is_marked(args: list[str], name: str,
                                                            tmp_path: Path) -> None:
    run_dir = run_report(tmp_path / "results", args)
    verdict = json.loads((run_dir / "results.json").read_text())["verdict"]
    found = probe(run_dir, tmp_path)

    for entries in found["legends"]:
        for i, a in enumerate(entries):
            assert a["box"]["w"] > 0, a
            for b in entries[i + 1:]:
                assert not overlaps(a["box"], b["box"]), (a, b)

    expected = {f"{kind}#{n}" for kind, items in verdict["anomalies"].items()
                for n in range(1, len(items) + 1)}
    markers = {m["id"]: m for m in found["markers"]}
    assert set(markers) == expected
    for m in markers.values():
        box, svg = m["box"], m["svg"]
        assert box["w"] >= 5 and box["h"] >= 5, m
        assert svg["x"] <= box["x"] and box["x"] + box["w"] <= svg["x"] + svg["w"], m
        assert m["on_top"], f"marker {m['id']} is hidden under another element"
    if name == "report-failing.png":
        assert len(expected) >= 5, "the failing configuration found too few anomalies"
    else:
        assert not verdict["bad_anomaly_types"]
    screenshot(run_dir, tmp_path, name, found["height"])
