"""The CI examples in examples/ci stay true: their YAML parses, and the campaign command
each runs is accepted by `faultline campaign` and builds a matrix every configuration of
which can run against an external cluster."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.campaign.matrix import build_matrix, parse_axis, read_matrix_file
from harness.commands.campaign import campaign
from harness.commands.run import given_settings

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "ci"


def campaign_commands(document: Any) -> list[str]:
    """Every `faultline campaign ...` command line in a CI file's scripts and steps."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
        elif isinstance(node, str) and node.strip().startswith("faultline campaign"):
            found.append(node.strip())

    walk(document)
    return found


@pytest.mark.parametrize("name", ["github-actions.yml", "gitlab-ci.yml"])
def test_the_ci_example_runs_a_valid_campaign_and_publishes_junit(name: str) -> None:
    document = yaml.safe_load((EXAMPLES / name).read_text())
    (command,) = campaign_commands(document)
    command = command.replace("${{ job.services.kafka.id }}", "0123abcd")
    args = shlex.split(command)[2:]
    ctx = campaign.make_context("campaign", args)
    params = dict(ctx.params)
    assert params["junit"] == Path("junit.xml")
    matrix_path = ROOT / params["matrix_file"]
    matrix = build_matrix(read_matrix_file(matrix_path), fixed=given_settings(params),
                          axes=[parse_axis(a) for a in params["axes"]], seeds=None)
    assert matrix.runnable == list(matrix.cells), [c.error for c in matrix.cells]
    configs = [cell.config(seed) for cell in matrix.cells for seed in matrix.seeds]
    assert {c.target for c in configs} == {"external"}
    assert all(c.bootstrap_servers for c in configs)
    safe = [cell for cell in matrix.cells if not cell.expectation.weak]
    assert safe and all(cell.config(1).acks == "all" for cell in safe)
    # The JUnit file is published to the CI's test report.
    if name == "gitlab-ci.yml":
        assert document["faultline"]["artifacts"]["reports"]["junit"] == "junit.xml"
    else:
        steps = document["jobs"]["correctness"]["steps"]
        assert any(step.get("with", {}).get("report_paths") == "junit.xml" for step in steps)
