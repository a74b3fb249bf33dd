"""`faultline run --schedule FILE` and `faultline replay --schedule FILE`: a hand-written
fault schedule runs as written, is kept in the run folder, replays exactly, and is
refused with a clear message when it does not fit the run; the example schedule in
`examples/schedules/` reproduces the seed documents' acks=1 loss on its first try."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from harness.cli import cli
from harness.run_config import ConfigError, RunConfig
from nemesis import Schedule

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "schedules"


def write_schedule(path: Path, ops: list[dict[str, object]], *, duration_ms: int = 4000,
                   recovery_ms: int = 1000) -> Path:
    """A schedule file over the default sim cluster's nodes."""
    path.write_text(json.dumps({"nodes": ["n1", "n2", "n3"], "duration_ms": duration_ms,
                                "recovery_ms": recovery_ms, "ops": ops}))
    return path


def kill_n2(path: Path) -> Path:
    """Kill n2 at 1 s and restart it at 2.5 s."""
    return write_schedule(path, [{"f": "kill", "at_ms": 1000, "nodes": ["n2"]},
                                 {"f": "restart", "at_ms": 2500, "nodes": ["n2"]}])


def only_run(out: Path) -> Path:
    (run_dir,) = [p for p in out.iterdir() if p.is_dir() and not p.is_symlink()]
    return run_dir


def test_a_schedule_runs_as_written_is_kept_with_the_run_and_replays(tmp_path: Path) -> None:
    schedule_file = kill_n2(tmp_path / "kill.json")
    out = tmp_path / "results"
    result = CliRunner().invoke(cli, ["run", "--schedule", str(schedule_file), "--seed", "4",
                                      "--final-read", "5", "--out", str(out)])
    assert result.exit_code in (0, 1), result.output
    assert "nemesis kill, 4 s" in result.output  # packages and duration from the file
    run_dir = only_run(out)
    results = json.loads((run_dir / "results.json").read_text())
    config = results["config"]
    assert (config["nemesis"], config["time_limit_s"], config["recovery_s"]) == ("kill", 4, 1)
    # The run's own copy is what the configuration (and the reproduce line) point at.
    kept = run_dir / "nemesis.json"
    assert config["schedule"] == str(kept.resolve())
    assert f"--schedule {kept.resolve()}" in results["reproduce"]
    assert Schedule.read(kept).ops == Schedule.read(schedule_file).ops
    faults = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    kill, restart = [e for e in faults if e["process"] == "nemesis"][:2]
    # Schedule times count from the end of setup; 1.5 s apart as written.
    assert (kill["f"], kill["value"]["nodes"], restart["f"]) == ("kill", ["n2"], "restart")
    assert restart["time"] - kill["time"] == 1_500_000_000
    schedule_file.unlink()  # the run no longer needs the file it was given

    replayed = CliRunner().invoke(cli, ["replay", str(run_dir)])
    assert replayed.exit_code == 0, replayed.output
    assert "determinism: identical" in replayed.output

    other = write_schedule(tmp_path / "pause.json",
                           [{"f": "pause", "at_ms": 500, "nodes": ["n1", "n3"]},
                            {"f": "resume", "at_ms": 3000, "nodes": ["n1", "n3"]}])
    elsewhere = CliRunner().invoke(cli, ["replay", str(run_dir), "--schedule", str(other)])
    assert elsewhere.exit_code == 1, elsewhere.output
    assert f"under {other}" in elsewhere.output
    assert "the runs diverge at line" in elsewhere.output


def test_a_schedule_that_does_not_fit_the_run_is_refused_before_anything_runs(
    tmp_path: Path,
) -> None:
    schedule_file = kill_n2(tmp_path / "kill.json")
    out = tmp_path / "results"
    refusals = {
        ("--time-limit", "30"): "heals everything at 4 s, but --time-limit is 30",
        ("--recovery", "5"): "recovers for 1 s, but --recovery is 5",
        ("--nemesis", "partition"): "injects kill, not --nemesis partition",
        ("--nodes", "1"): "names nodes ['n2', 'n3'], but this run's are n1",
    }
    for extra, message in refusals.items():
        result = CliRunner().invoke(cli, ["run", "--schedule", str(schedule_file), *extra,
                                          "--out", str(out)])
        assert result.exit_code == 2, result.output
        assert message in result.output and "Traceback" not in result.output
    bad = tmp_path / "bad.json"
    bad.write_text('{"nodes": ["n1"], "ops": []}')
    for path, message in ((bad, "missing required field `duration_ms`"),
                          (tmp_path / "absent.json", "cannot read schedule")):
        result = CliRunner().invoke(cli, ["run", "--schedule", str(path), "--out", str(out)])
        assert result.exit_code == 2 and message in result.output, result.output
    clients = write_schedule(tmp_path / "clients.json", [
        {"f": "start-partition", "at_ms": 0, "shape": "one", "grudge": {"n1": ["c9"]}}])
    clients_data = json.loads(clients.read_text())
    clients.write_text(json.dumps({**clients_data, "clients": ["c9"]}))
    try:
        RunConfig.build({"schedule": str(clients), "concurrency": 6})
    except ConfigError as exc:
        assert "names clients ['c9']" in str(exc)
    else:
        raise AssertionError("a schedule naming client c9 of 6 was accepted")
    assert not out.exists() or list(out.iterdir()) == []


def test_the_example_isolated_leader_schedule_loses_acks_1_writes_first_try(
    tmp_path: Path,
) -> None:
    # The seed documents' acks=1 loss: the leader of t1/0 is cut off from the other
    # brokers while every client still reaches it; it acknowledges writes nobody
    # replicates, a new leader is elected, and the old one truncates them on its return.
    out = tmp_path / "results"
    result = CliRunner().invoke(cli, [
        "run", "--schedule", str(EXAMPLES / "isolate-leader.json"), "--acks", "1",
        "--no-enable-idempotence", "--final-read", "5", "--seed", "1", "--out", str(out)])
    assert result.exit_code == 1, result.output
    verdict = json.loads((only_run(out) / "results.json").read_text())["verdict"]
    lost = verdict["anomalies"].get("lost-write", [])
    # t1/0's, and those of any other log the isolated broker led.
    assert "t1/0" in {item["log"] for item in lost}
