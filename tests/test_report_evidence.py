"""The report's evidence and configuration, as a person reads them: each anomaly type
defined in a sentence, each evidence item a sentence with times in seconds, the cited
events trimmed to what matters, repeated items grouped, settings as command-line text."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from checkers import check_file
from checkers.anomalies import ANOMALIES, EXAMPLES
from harness.cli import cli
from harness.report.config_table import as_option, config_rows, nemesis_text, setting_text
from harness.report.evidence import (
    Events,
    Group,
    Relevant,
    event_detail,
    group_items,
    sentence,
)
from harness.report.html import render_report

HISTORIES = Path(__file__).parent / "histories"
SECONDS = re.compile(r"\d+\.\d{3} s")


def _events(path: Path) -> Events:
    return Events({json.loads(line)["index"]: line.encode()
                   for line in path.read_text().splitlines() if line.strip()})


def test_the_example_table_in_histories_readme_is_the_declared_one() -> None:
    rows = {}
    for line in (HISTORIES / "README.md").read_text().splitlines():
        match = re.match(r"\| `([A-Za-z0-9-]+)` \| (.*) \|$", line)
        if match:
            rows[match.group(1)] = match.group(2)
    assert rows == EXAMPLES
    assert set(EXAMPLES) == set(ANOMALIES)
    assert all(text.endswith(".") and text[0].isupper() for text in ANOMALIES.values())


@pytest.mark.parametrize("kind", list(ANOMALIES))
def test_every_example_anomaly_reads_as_one_sentence_with_times_in_seconds(kind: str) -> None:
    path = HISTORIES / f"{kind}.jsonl"
    verdict = check_file(str(path), mode="strict")
    items = verdict["anomalies"][kind]
    events = _events(path)
    for group in group_items(kind, items):
        text = sentence(group, events)
        assert "\n" not in text and text.endswith(".")
        assert "{" not in text and "[" not in text and "?" not in text, text
        if kind != "unseen" or len(group.items) == 1:
            assert SECONDS.search(text), text


def test_lost_write_sentence_names_value_offset_log_and_the_read_reach() -> None:
    path = HISTORIES / "lost-write.jsonl"
    group = group_items("lost-write", check_file(str(path))["anomalies"]["lost-write"])[0]
    assert sentence(group, _events(path)) == (
        "Value 1 was acknowledged at offset 0 of t0/0 at 0.000 s and never read; offsets up "
        "to 1 of t0/0 were read (by the poll at 0.000 s).")


def test_items_differing_only_in_log_are_one_entry_naming_every_log() -> None:
    items = [{"indices": [5, 7], "group": "g1", "generation": 1, "log": f"t0/{p}",
              "processes": [0, 1], "offsets": [], "values": []} for p in range(6)]
    groups = group_items("split-assignment", items)
    assert len(groups) == 1 and len(groups[0].items) == 6
    text = sentence(groups[0], _events(HISTORIES / "split-assignment.jsonl"))
    assert "t0/0, t0/1, t0/2, t0/3, t0/4, t0/5" in text and "generation 1" in text


def test_losses_along_one_log_are_one_entry_with_offset_ranges() -> None:
    items = [{"indices": [1, 9], "log": "t1/0", "offsets": [o], "values": [100 + o],
              "max_read_offset": 40} for o in (12, 13, 14, 20)]
    items.append({"indices": [1, 9], "log": "t2/0", "offsets": [3], "values": [7],
                  "max_read_offset": 40})
    groups = group_items("lost-write", items)
    assert [len(g.items) for g in groups] == [4, 1]
    text = sentence(groups[0], Events({}))
    assert text.startswith("4 values acknowledged at offsets 12–14, 20 of t1/0")


def test_a_cited_poll_shows_only_the_relevant_offsets() -> None:
    records = [[o, None, 1000 + o] for o in range(41)]
    event = {"index": 9, "time": 7_366_000_000, "process": 2, "type": "ok", "f": "poll",
             "value": {"t1/0": records, "t2/0": [[0, None, 5]]}}
    group = Group("lost-write", [{"indices": [1, 9], "log": "t1/0", "offsets": [12],
                                  "values": [55], "max_read_offset": 40}])
    detail = event_detail(event, Relevant(group))
    assert detail == ("t1/0@12 = 1012, t1/0@40 = 1040 "
                      "(and 39 other records at offsets 0–39)")


def test_report_defines_each_type_and_keeps_raw_json_behind_a_click(tmp_path: Path) -> None:
    shutil.copy(HISTORIES / "aborted-read.jsonl", tmp_path / "history.jsonl")
    verdict = check_file(str(tmp_path / "history.jsonl"))
    (tmp_path / "results.json").write_text(json.dumps({
        "run_id": "r1", "valid": verdict["valid"], "verdict": verdict,
        "config": {"nemesis": "none", "nemesis_interval_s": 5.0, "acks": "all",
                   "enable_idempotence": False, "allow": [], "schedule": None},
        "schedule": {"ops": 0}}))
    html = render_report(tmp_path)
    assert ANOMALIES["aborted-read"] in html
    evidence = html[html.index("<h3 id='a-aborted-read'"):html.index("<h2 id='over-time'>")]
    raw_at = evidence.index("<details><summary>raw JSON</summary>")
    assert "&quot;indices&quot;" not in evidence[:raw_at]  # the dict is not what is shown
    assert "&quot;indices&quot;" in evidence[raw_at:]
    assert "The send of value 1 failed at 0.000 s, yet the poll at 0.000 s returned it" \
        in evidence
    # Configuration as written on the command line, never Python or JSON literals.
    config = html[html.index("<h2>Configuration"):]
    assert "--acks all" in config and "--no-enable-idempotence" in config
    for literal in ("None", "True", "False", "[]", "{}"):
        assert f">{literal}<" not in config
    assert "<td>nemesis</td><td>none</td>" in html


def test_settings_are_written_as_on_the_command_line() -> None:
    config = {"acks": "1", "enable_idempotence": False, "allow": ["int-send-skip"],
              "schedule": None, "nemesis": "kill+pause", "nemesis_interval_s": 2.5}
    rows = {row.option: row.written for row in config_rows(config)}
    assert rows == {"--acks": "--acks 1", "--enable-idempotence": "--no-enable-idempotence",
                    "--allow": "--allow int-send-skip", "--schedule": "not set",
                    "--nemesis": "--nemesis kill+pause",
                    "--nemesis-interval": "--nemesis-interval 2.5"}
    # A setting derived from a schedule file that is gone is shown, not claimed implied.
    moved = {"schedule": "/nonexistent/nemesis.json", "nemesis": "kill", "time_limit_s": 9.0}
    assert [(r.written, r.default) for r in config_rows(moved)] == [
        ("--schedule /nonexistent/nemesis.json", False), ("--nemesis kill", False),
        ("--time-limit 9", False)]
    assert as_option("enable-idempotence", "false") == "--no-enable-idempotence"
    assert as_option("nemesis", "kill+pause") == "--nemesis kill,pause"  # as --nemesis takes it
    assert setting_text(config, "enable-idempotence") == "--no-enable-idempotence"
    assert nemesis_text({"nemesis": "none", "nemesis_interval_s": 5.0}, 0) == "none"
    assert nemesis_text(config, 4) == "kill+pause, one action every ~2.5 s, 4 ops"


def test_check_explain_and_help_define_each_type() -> None:
    runner = CliRunner()
    explained = runner.invoke(cli, ["check", "--explain", "lost-write"])
    assert explained.exit_code == 0
    assert explained.output.startswith(f"lost-write: {ANOMALIES['lost-write']}\n")
    assert EXAMPLES["lost-write"] in explained.output
    unknown = runner.invoke(cli, ["check", "--explain", "nope"])
    assert unknown.exit_code == 2 and "expected one of" in unknown.output
    helped = runner.invoke(cli, ["check", "--help"], terminal_width=80)
    text = " ".join(helped.output.split())
    for kind, meaning in ANOMALIES.items():
        assert f"{kind}: {meaning}" in text
    assert all(len(line) <= 80 for line in helped.output.splitlines())
