"""JUnit XML of a campaign, for CI: one test suite per configuration, one test case per
(configuration, seed).

- a run that violated its configuration's expectation is a `<failure>` whose message
  names the anomaly types, the first evidence and the replay command;
- a run that could not run is an `<error>`, and so is a run with harness errors
  (`type="harness-error"`: faultline recorded `fail` for a send a broker appended; a
  failure of faultline, not of the configuration);
- an unknown run (acknowledged messages never read, nothing disproved), a seed skipped
  by `--fail-fast` and a run never started are `<skipped>`, with the reason;
- every test case carries the run's full configuration as `<properties>`, as pytest's
  `record_property` does.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from harness.run_config import SETTINGS, RunConfig


def junit_xml(data: dict[str, Any]) -> bytes:
    """The JUnit XML document of a campaign.json's content."""
    root = ET.Element("testsuites", name=f"faultline campaign {data['campaign']}")
    runs_by_cell: dict[int, list[dict[str, Any]]] = {}
    for run in data["runs"]:
        runs_by_cell.setdefault(run["cell"], []).append(run)
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for config in data["configurations"]:
        suite = ET.SubElement(root, "testsuite", name=config["label"])
        props = ET.SubElement(suite, "properties")
        _property(props, "expectation", config["expectation"]["name"])
        if config["claim"]:
            _property(props, "claim", config["claim"])
        counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
        time_total = 0.0
        classname = f"faultline.{data['campaign']}.{config['index']:02d}"
        for run in sorted(runs_by_cell.get(config["index"], []), key=lambda r: r["seed"]):
            counts["tests"] += 1
            time_total += run["wall_seconds"]
            case = ET.SubElement(suite, "testcase", classname=classname,
                                 name=f"{config['label']} seed {run['seed']}",
                                 time=f"{run['wall_seconds']:.3f}")
            _run_properties(case, run)
            outcome = run["outcome"]
            if outcome == "violated":
                counts["failures"] += 1
                failure = ET.SubElement(case, "failure", type="anomalies",
                                        message=_failure_message(run))
                failure.text = _evidence_text(run)
            elif outcome == "error":
                counts["errors"] += 1
                error = ET.SubElement(case, "error", type="run-error",
                                      message=(run["error"] or "").splitlines()[0][:300])
                error.text = run["error"]
            elif outcome == "harness-error":
                counts["errors"] += 1
                error = ET.SubElement(case, "error", type="harness-error", message=(
                    f"HARNESS ERROR: {run['harness_errors']} send(s) recorded fail were "
                    "appended by a broker; a faultline bug, not the configuration's. "
                    f"Reproduce: {run['replay']}"))
            elif outcome == "unknown":
                counts["skipped"] += 1
                ET.SubElement(case, "skipped", message=(
                    "unknown: acknowledged messages were never read "
                    f"({', '.join(run['violations'])}); nothing was disproved. "
                    f"Reproduce: {run['replay']}"))
            elif run["bad"]:
                out = ET.SubElement(case, "system-out")
                out.text = (f"{outcome}: {', '.join(run['bad'])}, tolerated by the "
                            f"expectation {config['expectation']['name']}")
        not_run = [("skipped by --fail-fast", seed) for seed in config["seeds_skipped"]]
        if config["error"] is not None:
            not_run = [(f"configuration cannot run: {config['error']}", seed)
                       for seed in data["seeds"]]
        elif data["partial"]:
            done = set(config["seeds_run"]) | set(config["seeds_skipped"])
            reason = "not run: the campaign was interrupted" if data["interrupted"] else (
                f"not run: {data['stopped'] or 'the campaign stopped early'}")
            not_run += [(reason, seed) for seed in data["seeds"] if seed not in done]
        for reason, seed in not_run:
            counts["tests"] += 1
            counts["skipped"] += 1
            case = ET.SubElement(suite, "testcase", classname=classname,
                                 name=f"{config['label']} seed {seed}", time="0")
            ET.SubElement(case, "skipped", message=reason)
        for key, value in counts.items():
            suite.set(key, str(value))
            totals[key] += value
        suite.set("time", f"{time_total:.3f}")
    for key, value in totals.items():
        root.set(key, str(value))
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def write_junit(path: Path, data: dict[str, Any]) -> Path:
    """Write the JUnit XML of `data` to `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(junit_xml(data))
    return path


def _property(parent: ET.Element, name: str, value: object) -> None:
    ET.SubElement(parent, "property", name=name, value=str(value))


def _run_properties(case: ET.Element, run: dict[str, Any]) -> None:
    props = ET.SubElement(case, "properties")
    _property(props, "seed", run["seed"])
    _property(props, "run", run["run"])
    _property(props, "replay", run["replay"])
    if run.get("history_sha256"):
        _property(props, "history_sha256", run["history_sha256"])
    config = run.get("config")
    if config:
        built = RunConfig.from_json(config)
        for s in SETTINGS.values():
            _property(props, s.name, s.format(getattr(built, s.attr)))


def _failure_message(run: dict[str, Any]) -> str:
    kinds = run["violations"]
    first = kinds[0]
    example = run["examples"].get(first, "")
    counts = ", ".join(f"{k} ×{run['counts'].get(k, 0)}" for k in kinds)
    return f"{counts}; first {first}: {example}; reproduce: {run['replay']}"


def _evidence_text(run: dict[str, Any]) -> str:
    lines = [f"{kind} ×{run['counts'].get(kind, 0)}: {run['examples'].get(kind, '')}"
             for kind in run["violations"]]
    lines.append(f"reproduce: {run['replay']}")
    return "\n".join(lines)
