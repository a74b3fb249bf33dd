"""Expectations: every way a run and a configuration can hold or fail, the claims they add
up to, the campaign's exit code, the JUnit XML a CI reads, and the guarantee table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from junitparser import Error, Failure, JUnitXml, Skipped

from harness import exit_codes
from harness.campaign.matrix import Cell, Expectation, Matrix
from harness.campaign.results import CampaignResults, judge
from harness.campaign.summary import CampaignInfo, campaign_json, terminal_table
from harness.campaign.task import RunRecord
from harness.report.campaign import render_campaign
from harness.run_config import RunConfig

SAFE = Expectation.parse("safe")
LOSSY = Expectation.parse("lossy-ok", ["lost-write"])


def cell(index: int, expectation: Expectation, claim: str | None = None,
         error: str | None = None) -> Cell:
    return Cell(index, f"config {index}", {"time-limit": 5.0, "nemesis": "none"}, expectation,
                claim, error)


def record(cell_index: int, seed: int, bad: tuple[str, ...] = (), *,
           error: str | None = None, valid: bool | str | None = None,
           harness_errors: int = 0) -> RunRecord:
    if valid is None and error is None:
        valid = not bad
    config = RunConfig.build({"time-limit": 5.0, "nemesis": "none", "seed": seed}).to_json()
    return RunRecord(cell=cell_index, seed=seed, run_name=f"{cell_index:02d}-run-s{seed}",
                     valid=valid, config=config, counts=dict.fromkeys(bad, 2), bad=bad,
                     examples={k: f"indices [1, 2], log t1/0 ({k})" for k in bad},
                     availability={"share": 0.5, "final_heal_s": 10.0, "recovery_s": 1.5},
                     error=error, harness_errors=harness_errors)


@pytest.mark.parametrize(("expectation", "bad", "outcome", "violations"), [
    (SAFE, (), "pass", ()),
    (SAFE, ("lost-write",), "violated", ("lost-write",)),
    (SAFE, ("unseen",), "unknown", ("unseen",)),
    (SAFE, ("unseen", "duplicate"), "violated", ("unseen", "duplicate")),
    (LOSSY, ("lost-write",), "demonstrated", ()),
    (LOSSY, ("unseen",), "pass", ()),  # tolerated, but not what demonstrates the claim
    (LOSSY, ("lost-write", "duplicate"), "violated", ("duplicate",)),
    (Expectation.parse(["duplication"]), ("duplicate",), "demonstrated", ()),
])
def test_judging_one_run(expectation: Expectation, bad: tuple[str, ...], outcome: str,
                         violations: tuple[str, ...]) -> None:
    judgement = judge(record(0, 1, bad), cell(0, expectation))
    assert (judgement.outcome, judgement.violations) == (outcome, violations)


def test_a_run_that_could_not_run_is_an_error() -> None:
    assert judge(record(0, 1, error="setup error: no broker"), cell(0, SAFE)).outcome == "error"


def results_of(cells: list[Cell], records: list[RunRecord]) -> CampaignResults:
    results = CampaignResults(Matrix("t", tuple(cells), (1, 2, 3)))
    for r in records:
        results.add(r, f"faultline replay results/runs/{r.run_name}")
    return results


def test_configuration_statuses_and_the_exit_code() -> None:
    cells = [cell(0, SAFE), cell(1, LOSSY), cell(2, LOSSY), cell(3, SAFE, error="bad combo")]
    held = results_of(cells, [record(0, 1), record(0, 2), record(1, 1, ("lost-write",)),
                              record(2, 1), record(2, 2, ("unseen",))])
    statuses = [c.status for c in held.cells]
    assert statuses == ["held", "demonstrated", "not demonstrated", "skipped"]
    # A weak configuration whose weakness never showed does not fail the campaign.
    assert held.exit_code() == exit_codes.VALID

    violated = results_of(cells, [record(0, 1), record(0, 2, ("duplicate",))])
    assert violated.cells[0].status == "violated"
    assert violated.exit_code() == exit_codes.ANOMALIES
    first = violated.cells[0].first_failure()
    assert first is not None and first.seed == 2

    unknown = results_of(cells, [record(0, 1, ("unseen",))])
    assert unknown.cells[0].status == "unknown"
    assert unknown.exit_code() == exit_codes.UNKNOWN

    errored = results_of(cells, [record(0, 1, error="the run crashed")])
    assert errored.cells[0].status == "error"
    assert errored.exit_code() == exit_codes.BAD_INPUT

    # A violation outranks an error, and an error outranks unknown.
    both = results_of(cells, [record(0, 1, error="x"), record(1, 1, ("duplicate",)),
                              record(2, 1, ("unseen",))])
    assert both.exit_code() == exit_codes.ANOMALIES


def test_a_harness_error_is_faultlines_failure_counted_apart_and_outranking_all(
        tmp_path: Path) -> None:
    from harness.campaign.junit import write_junit

    # Even with anomalies a weak configuration tolerates, the run says nothing about it.
    judgement = judge(record(0, 1, ("lost-write",), harness_errors=2), cell(0, LOSSY))
    assert judgement.outcome == "harness-error"

    cells = [cell(0, SAFE, "c"), cell(1, LOSSY, "c")]
    results = results_of(cells, [record(0, 1, ("duplicate",)), record(0, 2),
                                 record(1, 1, ("lost-write",), harness_errors=1),
                                 record(1, 2, ("lost-write",))])
    assert [c.status for c in results.cells] == ["violated", "harness-error"]
    assert results.exit_code() == exit_codes.HARNESS_ERROR == 4
    assert results.claims()[0]["verdict"] == "harness error"
    data = campaign_data(tmp_path, results)
    config = data["configurations"][1]
    assert config["outcomes"]["harness-error"] == 1
    assert config["outcomes"]["demonstrated"] == 1
    assert config["first_failing_run"] == "01-run-s1"
    assert [r["harness_errors"] for r in data["runs"] if r["cell"] == 1] == [1, 0]

    xml = JUnitXml.fromfile(str(write_junit(tmp_path / "junit.xml", data)))
    case = {c.name: c for suite in xml for c in suite}["config 1 seed 1"]
    assert isinstance(case.result[0], Error)
    assert case.result[0].type == "harness-error"
    assert "HARNESS ERROR" in case.result[0].message


def test_claims_are_reproduced_only_when_every_side_shows() -> None:
    claim = "acks=1 may lose; acks=all does not"
    cells = [cell(0, LOSSY, claim), cell(1, SAFE, claim)]
    assert results_of(cells, [record(0, 1, ("lost-write",)), record(1, 1)]).claims()[0][
        "verdict"] == "reproduced"
    assert results_of(cells, [record(0, 1), record(1, 1)]).claims()[0][
        "verdict"] == "not demonstrated"
    assert results_of(cells, [record(0, 1, ("lost-write",)), record(1, 1, ("lost-write",))]
                      ).claims()[0]["verdict"] == "violated"


def test_families_count_runs_and_mark_violations() -> None:
    results = results_of([cell(0, LOSSY)], [record(0, 1, ("lost-write",)),
                                            record(0, 2, ("lost-write", "duplicate")),
                                            record(0, 3)])
    families = results.cells[0].families()
    assert families["loss"] == {"runs": 2, "violations": 0}
    assert families["duplication"] == {"runs": 1, "violations": 1}
    assert families["ordering"] == {"runs": 0, "violations": 0}


def campaign_data(tmp_path: Path, results: CampaignResults) -> dict[str, Any]:
    info = CampaignInfo(command="faultline campaign --test", engine="test", created="now",
                        started_monotonic=0.0)
    return campaign_json(results, info, wall_seconds=12.0)


def test_junit_has_a_case_per_configuration_and_seed_with_reasons(tmp_path: Path) -> None:
    from harness.campaign.junit import write_junit

    cells = [cell(0, SAFE), cell(1, LOSSY), cell(2, SAFE, error="acks=1 with idempotence")]
    results = results_of(cells, [record(0, 1), record(0, 2, ("duplicate",)),
                                 record(0, 3, ("unseen",)), record(1, 1, ("lost-write",)),
                                 record(1, 2, error="setup error: port in use")])
    results.cells[1].skipped_seeds.append(3)
    data = campaign_data(tmp_path, results)
    path = write_junit(tmp_path / "junit.xml", data)

    xml = JUnitXml.fromfile(str(path))
    suites = {suite.name: suite for suite in xml}
    assert set(suites) == {"config 0", "config 1", "config 2"}
    by_name = {case.name: case for suite in xml for case in suite}
    assert len(by_name) == 9  # 3 configurations x 3 seeds, whatever became of each

    failure = by_name["config 0 seed 2"].result[0]
    assert isinstance(failure, Failure)
    assert "duplicate" in failure.message and "faultline replay" in failure.message
    assert "indices [1, 2]" in failure.message
    assert isinstance(by_name["config 0 seed 3"].result[0], Skipped)
    assert "unknown" in by_name["config 0 seed 3"].result[0].message
    assert by_name["config 0 seed 1"].is_passed
    assert by_name["config 1 seed 1"].is_passed  # loss was expected there
    assert isinstance(by_name["config 1 seed 2"].result[0], Error)
    assert "fail-fast" in by_name["config 1 seed 3"].result[0].message
    assert "cannot run" in by_name["config 2 seed 1"].result[0].message
    assert (suites["config 0"].tests, suites["config 0"].failures) == (3, 1)

    # Each case carries the run's full configuration.
    text = path.read_text()
    assert "name=\"acks\" value=\"all\"" in text and "name=\"time-limit\" value=\"5\"" in text
    assert "name=\"seed\" value=\"2\"" in text


def test_the_terminal_table_and_the_page_show_k_of_n_per_family(tmp_path: Path) -> None:
    results = results_of([cell(0, SAFE, "c"), cell(1, LOSSY, "c")],
                         [record(0, 1), record(0, 2), record(1, 1, ("lost-write",)),
                          record(1, 2)])
    data = campaign_data(tmp_path, results)
    table = terminal_table(data)
    header, _, first, second = table.splitlines()[:4]
    assert header.split()[:9] == ["#", "configuration", "expect", "runs", "loss",
                                  "duplication", "ordering", "group", "phantom"]
    assert "held" in first and "0/2" in first
    assert "demonstrated" in second and "1/2" in second
    assert "reproduced" in table
    page = render_campaign(data)
    assert "1 of 2" in page and "runs/01-run-s1/report.html" in page
    assert "class='fam tolerated'" in page and "class='fam ok'" in page
