"""`results/index.html` in a real browser: the runs' differing settings become columns,
and the filter in the page's address shows exactly the matching runs."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness.cli import cli
from harness.report import render_index

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
QUICK = ["--nemesis", "none", "--time-limit", "2", "--recovery", "0.5", "--final-read", "3"]


def dom_of(page: Path, fragment: str, profile: Path) -> str:
    """The page's DOM after its scripts ran, from headless Chromium."""
    assert CHROMIUM, "Debian's chromium is needed for this test (.ci/run installs it)"
    result = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={profile}", "--dump-dom",
         f"{page.as_uri()}{fragment}"],
        capture_output=True, text=True, timeout=90, check=True)
    return result.stdout


def rows(dom: str) -> list[tuple[dict[str, str], bool]]:
    """(data-c-* attributes, hidden?) of each run row."""
    found = []
    for tag in re.findall(r"<tr data-run[^>]*>", dom):
        attrs = dict(re.findall(r'data-c-([\w-]+)="([^"]*)"', tag))
        found.append((attrs, "hidden" in tag))
    return found


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("results")
    for args in (["--acks", "1", "--flush", "every"], ["--acks", "1"], ["--acks", "all"]):
        result = CliRunner().invoke(cli, ["run", *QUICK, *args, "--seed", "1", "--out",
                                          str(out)])
        assert result.exit_code == 0, result.output
    return out


def test_the_index_has_a_column_for_each_setting_that_differs(results_dir: Path) -> None:
    page = (results_dir / "index.html").read_text()
    header = re.search(r"<tr><th data-sort>run</th>(.*?)</tr>", page)
    assert header is not None
    columns = re.findall(r"<th data-sort>([^<]+)</th>", header.group(1))
    # acks, idempotence, flush and min.insync always; the rest only when runs differ.
    assert columns == ["verdict", "target", "workload", "nemesis", "min-insync-replicas",
                       "acks", "enable-idempotence", "flush", "seed", "date", "duration",
                       "failing anomalies", "allowed anomalies"]
    assert "partitions" not in columns  # the same in every run


def test_latest_points_at_the_last_run(results_dir: Path) -> None:
    latest = results_dir / "latest"
    assert latest.is_symlink() and not latest.readlink().is_absolute()
    config = json.loads((latest / "results.json").read_text())["config"]
    assert config["acks"] == "all"  # the third run, the last one made
    assert "latest" not in (results_dir / "index.html").read_text()  # not listed as a run


def test_a_folder_of_ones_own_called_latest_is_left_alone(results_dir: Path,
                                                         tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(results_dir, copy, symlinks=True)
    (copy / "latest").unlink()
    (copy / "latest").mkdir()
    (copy / "latest" / "notes.txt").write_text("mine")
    render_index(copy)
    assert (copy / "latest" / "notes.txt").read_text() == "mine"


def test_allowed_anomalies_are_apart_from_failing_ones(tmp_path: Path) -> None:
    run = tmp_path / "20261204T101500-sim-queue-none-s1"
    run.mkdir()
    (run / "results.json").write_text(json.dumps({
        "run_id": run.name, "valid": False, "seed": 1, "config": {"acks": "1"},
        "timing": {"run_seconds": 12.5},
        "verdict": {"allowed": ["duplicate"], "counts": {"lost-write": 2, "duplicate": 3}}}))
    page = render_index(tmp_path).read_text()
    row = re.search(r"<tr data-run.*?</tr>", page)
    assert row is not None
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row.group(0))
    assert cells[-4:] == ["2026-12-04 10:15:00", "12.5 s", "lost-write 2", "duplicate 3"]


def test_clicking_a_column_head_sorts_the_runs(results_dir: Path, tmp_path: Path) -> None:
    click = ("<script>window.addEventListener('load', function(){"
             "var th = Array.prototype.filter.call(document.querySelectorAll('th'),"
             "function(t){ return t.textContent.trim() === 'flush'; })[0];"
             "th.click();});</script></body>")
    shutil.copytree(results_dir, tmp_path / "copy", symlinks=True)
    page = (tmp_path / "copy" / "sorted.html")
    page.write_text((results_dir / "index.html").read_text().replace("</body>", click))
    before = [attrs["flush"] for attrs, _ in rows(dom_of(results_dir / "index.html", "",
                                                         tmp_path / "b"))]
    order = [attrs["flush"] for attrs, _ in rows(dom_of(page, "", tmp_path / "p"))]
    assert before != sorted(before)  # the click had something to do
    assert order == sorted(before)


def test_the_filter_in_the_address_shows_only_matching_runs(results_dir: Path,
                                                            tmp_path: Path) -> None:
    page = results_dir / "index.html"
    everything = rows(dom_of(page, "", tmp_path / "p1"))
    assert len(everything) == 3 and not any(hidden for _, hidden in everything)

    acks_1 = rows(dom_of(page, "#acks=1", tmp_path / "p2"))
    assert sorted((attrs["acks"], hidden) for attrs, hidden in acks_1) == [
        ("1", False), ("1", False), ("all", True)]

    both = rows(dom_of(page, "#acks=1&flush=every", tmp_path / "p3"))
    shown = [attrs for attrs, hidden in both if not hidden]
    assert [(a["acks"], a["flush"]) for a in shown] == [("1", "every")]
    assert "1 of 3 runs shown" in dom_of(page, "#acks=1&flush=every", tmp_path / "p4")
