"""`faultline shrink`: the search on synthetic predicates (no runs), and real sim runs
shrunk end to end: the examples reach at most 2 faults and 1/4 of the operations, the
shrunk run is re-checked, its command.txt reproduces it, and `campaign --shrink`."""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from harness.cli import cli
from harness.shrink import ShrinkError, headline_type, shrink_run
from harness.shrink.search import (
    MIN_RATE,
    Candidate,
    SearchStopped,
    ShrinkResult,
    ddmin,
    fault_units,
    initial_candidate,
    shrink,
)
from nemesis import Schedule, generate
from nemesis.ops import Kill, PowerLoss, Restart, StartPartition, StopPartition

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "schedules"
# A short lossy sim run (as in test_campaign_cli): power cuts of single-replica brokers
# under flush never, two of them in 3 simulated seconds.
TINY = ["--time-limit", "3", "--recovery", "1", "--final-read", "5", "--nemesis-interval",
        "1", "--replication-factor", "1", "--flush", "never", "--nemesis", "power-loss",
        "--rate", "100"]
# A seed whose tiny power-loss schedule holds two power losses: most faults now last
# longer than the 3 s run (fault durations span the broker's timers), so few seeds do.
TINY_SEED = "8"


# -- the search, on synthetic predicates -----------------------------------------------


def subsets_probe(wanted: set[int], asked: list[list[int]]) -> Any:
    def holds(subsets: list[list[int]]) -> int | None:
        asked.extend(subsets)
        return next((i for i, s in enumerate(subsets) if wanted <= set(s)), None)

    return holds


def test_ddmin_finds_the_two_items_a_synthetic_failure_needs() -> None:
    asked: list[list[int]] = []
    assert ddmin(list(range(16)), subsets_probe({3, 11}, asked)) == [3, 11]
    assert asked[0] == []  # the empty set is asked first
    assert len(asked) < 16 * 4  # far fewer tests than subsets
    assert ddmin(list(range(8)), subsets_probe(set(), [])) == []
    assert ddmin(list(range(5)), subsets_probe({0, 1, 2, 3, 4}, [])) == [0, 1, 2, 3, 4]


def mixed_schedule(seed: int) -> Schedule:
    return generate("mixed", nodes=["n1", "n2", "n3"], clients=[f"c{i}" for i in range(1, 7)],
                    duration_ms=60_000, interval_ms=5_000, recovery_ms=10_000, seed=seed,
                    logs=["t1/0", "t1/1"])


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_fault_units_pair_each_start_with_its_stop(seed: int) -> None:
    schedule = mixed_schedule(seed)
    units = fault_units(schedule)
    # Every op is in exactly one unit, and units keep the original order of starts.
    assert sorted(id(op) for u in units for op in u.ops()) == sorted(map(id, schedule.ops))
    assert [u.start_ms for u in units] == sorted(u.start_ms for u in units)
    for unit in units:
        for start in unit.starts:
            if isinstance(start, Kill | PowerLoss):
                assert all(isinstance(s, Restart) for s in unit.stops)
            if isinstance(start, StartPartition):
                assert all(isinstance(s, StopPartition) for s in unit.stops)
        assert all(stop.at_ms >= unit.start_ms for stop in unit.stops)
    # Dropping any one unit leaves a valid schedule in which no stop lost its start.
    candidate = initial_candidate(schedule, concurrency=6, rate=50)
    for i in range(len(units)):
        fewer = Candidate(candidate.frame, candidate.faults[:i] + candidate.faults[i + 1:],
                          6, 50)
        again = Schedule.from_json(fewer.schedule().to_json())
        assert len(again.ops) == len(schedule.ops) - len(units[i].ops())
        kinds = [type(op) for op in again.ops]
        assert kinds.count(Restart) <= kinds.count(Kill) + kinds.count(PowerLoss)


def test_shrink_on_a_synthetic_property_reaches_the_floor() -> None:
    """The property: one fault (the third that lasts 1 s or more) is present and its
    window still covers 1 s past its start."""
    schedule = mixed_schedule(7)
    original = initial_candidate(schedule, concurrency=6, rate=50)
    target = [f for f in original.faults
              if f.end_ms is None or f.end_ms - f.start_ms >= 1000][2]
    calls: list[int] = []

    def probe(candidates: Sequence[Candidate]) -> int | None:
        calls.append(len(candidates))
        for i, c in enumerate(candidates):
            kept = [f for f in c.faults if f.number == target.number]
            if kept and (kept[0].end_ms is None or kept[0].end_ms - kept[0].start_ms >= 1000):
                return i
        return None

    result = shrink(original, probe)
    assert result.complete
    best = result.best
    assert [f.number for f in best.faults] == [target.number]
    assert best.concurrency == 1 and best.rate == MIN_RATE
    assert best.faults[0].start_ms == 0  # moved to the start
    assert best.duration_ms < schedule.duration_ms and best.recovery_ms == 0
    assert result.kept[0] is original and result.kept[-1] == best
    assert result.tried == sum(calls)


def test_a_stopped_search_returns_the_smallest_candidate_kept_so_far() -> None:
    original = initial_candidate(mixed_schedule(7), concurrency=6, rate=50)
    asked = 0

    def probe(candidates: Sequence[Candidate]) -> int | None:
        nonlocal asked
        asked += 1
        if asked > 3:
            raise SearchStopped
        return 0  # everything holds

    result = shrink(original, probe)
    assert not result.complete
    assert result.best == result.kept[-1] and len(result.kept) == 3 + 1


def test_the_headline_type_is_certain_loss_first() -> None:
    assert headline_type(["inconsistent-offsets", "unseen", "split-assignment"]) == \
        "inconsistent-offsets"
    assert headline_type(["key-order", "lost-write"]) == "lost-write"
    assert headline_type(["unseen"]) == "unseen"


# -- real runs ---------------------------------------------------------------------------


def run(tmp_path: Path, *args: str) -> Path:
    out = tmp_path / "results"
    result = CliRunner().invoke(cli, ["run", *args, "--out", str(out)])
    assert result.exit_code in (0, 1), result.output
    return max(out.glob("2*"))


def shrink_cli(*args: str) -> Any:
    return CliRunner().invoke(cli, ["shrink", *args])


def results(run_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((run_dir / "results.json").read_text())
    return data


def test_a_tiny_lossy_run_shrinks_and_its_command_reproduces_it(tmp_path: Path) -> None:
    run_dir = run(tmp_path, *TINY, "--seed", TINY_SEED)
    assert "lost-write" in results(run_dir)["verdict"]["bad_anomaly_types"]
    index = (tmp_path / "results" / "index.html").read_text()
    result = shrink_cli(str(run_dir))
    assert result.exit_code == 0, result.output
    shrunk = run_dir / "shrunk"
    for name in ("history.jsonl", "results.json", "nemesis.json", "report.html",
                 "nodes/n1.log", "schedule.json", "command.txt"):
        assert (shrunk / name).is_file(), name
    after = results(shrunk)
    assert "lost-write" in after["verdict"]["bad_anomaly_types"]
    assert "faults: 2 -> 1" in result.output and "operations: " in result.output
    # Candidates ran in a scratch folder: the results index did not change.
    assert (tmp_path / "results" / "index.html").read_text() == index
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == \
        sorted(["index.html", "latest", run_dir.name])

    # command.txt is a `faultline run` line that shows the anomaly again.
    words = shlex.split((shrunk / "command.txt").read_text())
    assert words[:3] == ["faultline", "run", "--schedule"]
    assert words[3] == str((shrunk / "schedule.json").resolve())
    again = run(tmp_path / "again", *words[2:])
    assert "lost-write" in results(again)["verdict"]["bad_anomaly_types"]
    assert (again / "history.jsonl").read_bytes() == (shrunk / "history.jsonl").read_bytes()


def test_the_shrunk_run_is_rechecked_and_never_lacks_the_anomaly(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A search that (wrongly) ends at a candidate without faults: the re-run shows no
    loss, so shrink falls back to the last candidate that does, here the original."""
    import harness.shrink as shrink_module

    run_dir = run(tmp_path, *TINY, "--seed", TINY_SEED)

    def lying_search(original: Candidate, probe: Any) -> ShrinkResult:
        fault_free = Candidate(original.frame, (), original.concurrency, original.rate)
        return ShrinkResult(fault_free, [original, fault_free], 1, True)

    monkeypatch.setattr(shrink_module, "shrink", lying_search)
    report = shrink_run(run_dir, workers=1)
    assert len(report.after.faults) == len(report.before.faults) == 2
    assert "lost-write" in results(run_dir / "shrunk")["verdict"]["bad_anomaly_types"]


def test_shrink_refuses_runs_it_cannot_shrink(tmp_path: Path) -> None:
    valid = run(tmp_path, "--time-limit", "2", "--recovery", "1", "--final-read", "3",
                "--nemesis", "none", "--seed", "1")
    result = shrink_cli(str(valid))
    assert result.exit_code == 2 and "shows no anomaly" in result.output
    assert not (valid / "shrunk").exists()

    data = results(valid)
    data["config"]["target"] = "process"
    (valid / "results.json").write_text(json.dumps(data))
    result = shrink_cli(str(valid))
    assert result.exit_code == 2 and "only sim runs can be shrunk" in result.output

    result = shrink_cli(str(tmp_path / "missing"))
    assert result.exit_code == 2 and "cannot shrink" in result.output
    with pytest.raises(ShrinkError, match="cannot shrink"):
        shrink_run(tmp_path / "missing")


def test_campaign_shrink_shrinks_the_first_failure_of_a_violated_configuration(
        tmp_path: Path) -> None:
    out = tmp_path / "results"
    result = CliRunner().invoke(cli, ["campaign", *TINY, "--seeds", "1", "--expect", "safe",
                                      "--workers", "1", "--shrink", "--out", str(out)])
    assert result.exit_code == 1, result.output
    folder = next(out.glob("*-campaign-*"))
    data = json.loads((folder / "campaign.json").read_text())
    cell = data["configurations"][0]
    assert cell["status"] == "violated"
    shrunk = cell["shrunk"]
    assert shrunk["faults"][1] <= shrunk["faults"][0] and shrunk["faults"][1] <= 2
    assert shrunk["operations"][1] < shrunk["operations"][0]
    run_dir = folder / "runs" / cell["first_failing_run"]
    assert shrunk["command"] == (run_dir / "shrunk" / "command.txt").read_text().strip()
    assert f"shrunk ({shrunk['types'][0]}; faults" in result.output
    assert shrunk["command"] in result.output


# -- the examples (each a few shrinks' worth of sim runs) --------------------------------


def shrink_example(tmp_path: Path, *args: str) -> tuple[Path, Any, float]:
    run_dir = run(tmp_path, *args)
    started = time.monotonic()
    report = shrink_run(run_dir, workers=2)
    wall = time.monotonic() - started
    print("\n".join(report.lines()))
    return run_dir, report, wall


@pytest.mark.slow
def test_the_acks1_example_shrinks_to_one_fault_and_a_quarter_of_the_ops(
        tmp_path: Path) -> None:
    run_dir, report, wall = shrink_example(
        tmp_path, "--schedule", str(EXAMPLES / "isolate-leader.json"), "--acks", "1",
        "--no-enable-idempotence", "--seed", "1")
    assert report.types == ("lost-write",)
    assert len(report.after.faults) <= 2
    assert report.operations_after * 4 <= report.operations_before
    assert "lost-write" in results(run_dir / "shrunk")["verdict"]["bad_anomaly_types"]
    print(f"acks=1 example: {wall:.1f} s wall, {report.cpu_seconds:.1f} s CPU")


@pytest.mark.slow
def test_the_flush_never_example_shrinks_to_one_fault_and_a_quarter_of_the_ops(
        tmp_path: Path) -> None:
    run_dir, report, wall = shrink_example(
        tmp_path, "--schedule", str(EXAMPLES / "power-loss-all.json"), "--seed", "1")
    assert report.types == ("lost-write",)
    assert len(report.after.faults) <= 2
    assert report.operations_after * 4 <= report.operations_before
    assert "lost-write" in results(run_dir / "shrunk")["verdict"]["bad_anomaly_types"]
    print(f"flush-never example: {wall:.1f} s wall, {report.cpu_seconds:.1f} s CPU")


@pytest.mark.slow
def test_a_default_mixed_failing_run_shrinks_to_two_faults(tmp_path: Path) -> None:
    run_dir, report, wall = shrink_example(tmp_path, "--seed", "102", "--time-limit", "30")
    print(f"mixed seed 102: {wall:.1f} s wall, {report.cpu_seconds:.1f} s CPU")
    assert len(report.before.faults) > 2
    assert len(report.after.faults) <= 2
    assert set(report.types) <= set(results(run_dir / "shrunk")["verdict"]["bad_anomaly_types"])
