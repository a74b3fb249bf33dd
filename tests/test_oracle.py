"""The ground-truth oracle: no send the history calls `fail` is in any replica's log.

- every nemesis package, in the sim, over seeds (a couple in the default suite, many
  under `-m slow`): the oracle finds no harness error, and it is not blind: every
  acknowledged value is in its ground truth;
- a value a replica appended and then lost (truncated, or lost to a power cut) is still
  in the ground truth;
- a send rewritten from `ok` to `fail` after a real run (what a wrongly classified
  client error would write) is caught: a harness error with its history index and where
  the value was found, exit code 4, its own section in results.json and its own console
  message.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from kafka.record.default_records import DefaultRecordBatchBuilder

from harness import exit_codes
from harness.commands.run import summary_lines
from harness.oracle import GroundTruth, check_failed_sends
from harness.run_config import RunConfig
from harness.runner import Executed, RunOutcome, conclude, execute, load_workload
from harness.runtime.sim.disk import SimDisk, SimStorage
from history.model import Send
from history.reader import HistoryReader
from nemesis.packages import PACKAGES

FAST_SEEDS = (1,)
SLOW_SEEDS = tuple(range(2, 22))


def run_sim(tmp_path: Path, settings: dict[str, Any]) -> tuple[RunOutcome, Executed]:
    config = RunConfig.build({"time-limit": 5.0, "recovery": 3.0, "final-read": 5.0,
                              **settings})
    run_dir = tmp_path / f"run-{settings.get('nemesis')}-{settings.get('seed')}"
    run_dir.mkdir()
    workload = load_workload(config.workload)
    started = time.monotonic()
    executed = execute(config, run_dir, workload=workload)
    outcome = conclude(config, run_dir, executed, workload, wall_start=started, index=False)
    return outcome, executed


def acknowledged_values(history: Path) -> list[int]:
    return [m.value for event, _ in HistoryReader(str(history))
            if isinstance(event, Send) and event.type == "ok" for m in event.value or []]


def assert_no_harness_error(tmp_path: Path, settings: dict[str, Any]) -> None:
    outcome, executed = run_sim(tmp_path, settings)
    assert outcome.oracle_checked
    assert outcome.harness_errors == [], "\n".join(str(e) for e in outcome.harness_errors)
    assert outcome.exit_code != exit_codes.HARNESS_ERROR
    truth = executed.ground_truth
    assert truth is not None and truth.unparsed_bytes == 0
    # Not blind: the leader appended every value it acknowledged.
    acknowledged = acknowledged_values(outcome.run_dir / "history.jsonl")
    assert acknowledged, "the run acknowledged nothing: it proves nothing"
    assert [v for v in acknowledged if not truth.where(v)] == []
    results = json.loads((outcome.run_dir / "results.json").read_text())
    assert results["harness_errors"] == []
    assert results["harness_verdict"]["verdict"] == "ok"


@pytest.mark.parametrize("seed", FAST_SEEDS)
@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_no_send_recorded_fail_is_in_any_log_under_each_package(
        tmp_path: Path, package: str, seed: int) -> None:
    assert_no_harness_error(tmp_path, {"nemesis": package, "seed": seed})


def test_no_send_recorded_fail_is_in_any_log_with_acks_1(tmp_path: Path) -> None:
    assert_no_harness_error(tmp_path, {"nemesis": "mixed", "seed": 1, "acks": "1",
                                       "enable-idempotence": False})


@pytest.mark.slow
@pytest.mark.parametrize("seed", SLOW_SEEDS)
@pytest.mark.parametrize("package", sorted(PACKAGES))
@pytest.mark.parametrize("acks", ["all", "1"])
def test_no_send_recorded_fail_is_in_any_log_over_many_seeds(
        tmp_path: Path, package: str, seed: int, acks: str) -> None:
    assert_no_harness_error(tmp_path, {"nemesis": package, "seed": seed, "acks": acks,
                                       "enable-idempotence": acks == "all",
                                       "time-limit": 15.0})


def batch(base_offset: int, values: list[int]) -> bytes:
    builder = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=False,
                                        producer_id=-1, producer_epoch=-1, base_sequence=-1,
                                        batch_size=1 << 20)
    for i, value in enumerate(values):
        builder.append(i, timestamp=0, key=None, value=str(value).encode(), headers=[])
    raw = bytearray(builder.build())
    raw[0:8] = base_offset.to_bytes(8, "big")
    return bytes(raw)


def test_values_a_replica_appended_then_lost_are_still_ground_truth() -> None:
    disk = SimDisk()
    storage = SimStorage(disk)
    log = storage.open("t1-0/00000000000000000000.log")
    log.append(batch(0, [10, 11]))
    log.append(batch(2, [12]))
    log.truncate(len(batch(0, [10, 11])))  # a follower truncating its diverging suffix
    log.append(batch(2, [13]))  # not fsynced: a power cut takes it back
    disk.survive_power_loss()
    storage.open("__cluster_metadata-0/00000000000000000000.log").append(batch(0, [14]))

    truth = GroundTruth.from_disks({"n1": disk})
    assert [(s.node, s.log, s.offset) for s in truth.where(12)] == [("n1", "t1/0", 2)]
    assert [(s.log, s.offset) for s in truth.where(13)] == [("t1/0", 2)]
    assert [s.offset for s in truth.where(11)] == [1]
    assert truth.where(14) == []  # the broker's own logs hold no workload values
    assert truth.where(99) == []


def rewrite_first_ok_send_as_fail(history: Path) -> tuple[int, int]:
    """What a client that misclassified an error would have written: the first
    acknowledged send recorded `fail`. Returns its history index and value."""
    lines = history.read_text().splitlines()
    for n, line in enumerate(lines):
        event = json.loads(line)
        if event["f"] == "send" and event["type"] == "ok" and len(event["value"]) == 1:
            message = event["value"][0]
            event["type"] = "fail"
            event["value"] = [{k: message[k] for k in ("topic", "key", "value")}]
            event["error"] = "OpFailed: injected by the test"
            lines[n] = json.dumps(event, separators=(",", ":"))
            history.write_text("\n".join(lines) + "\n")
            return event["index"], message["value"]
    raise AssertionError("no acknowledged one-message send to rewrite")


def test_a_send_wrongly_recorded_fail_is_a_harness_error(tmp_path: Path) -> None:
    config = RunConfig.build({"time-limit": 4.0, "recovery": 2.0, "final-read": 5.0,
                              "nemesis": "none", "seed": 5})
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    workload = load_workload(config.workload)
    executed = execute(config, run_dir, workload=workload)
    index, value = rewrite_first_ok_send_as_fail(run_dir / "history.jsonl")
    assert executed.ground_truth is not None
    outcome = conclude(config, run_dir, executed, workload, wall_start=time.monotonic(),
                       index=False)

    assert outcome.exit_code == exit_codes.HARNESS_ERROR == 4
    [error] = [e for e in outcome.harness_errors if e.index == index]
    assert error.value == value and error.error == "OpFailed: injected by the test"
    # RF 3: the leader and both followers appended it.
    assert {s.node for s in error.found} == {"n1", "n2", "n3"}
    assert all(s.log.startswith(error.topic + "/") for s in error.found)

    results = json.loads((run_dir / "results.json").read_text())
    assert results["exit_code"] == 4
    assert results["harness_verdict"]["verdict"] == "HARNESS ERROR"
    [entry] = [e for e in results["harness_errors"] if e["index"] == index]
    assert entry["value"] == value and len(entry["found"]) == 3
    # The system's verdict stays its own: the read of a "failed" value is its anomaly
    # only as far as the history goes, which is why the harness error outranks it.
    assert "aborted-read" in results["verdict"]["counts"]

    console = "\n".join(summary_lines(outcome))
    assert "HARNESS ERROR: 1 value(s) recorded `fail` were appended by a broker" in console
    assert f"history index {index}" in console and f"value {value}" in console
    assert "verdict: HARNESS ERROR" in console
    assert "Harness errors" in (run_dir / "report.html").read_text()


def test_a_history_with_no_failed_send_needs_no_decoding(tmp_path: Path) -> None:
    history = tmp_path / "h.jsonl"
    history.write_text(json.dumps({"index": 0, "time": 0, "process": 0, "type": "invoke",
                                   "f": "send", "value": [{"topic": "t1", "key": None,
                                                           "value": 1}]}) + "\n")
    truth = GroundTruth({"n1": []})
    assert check_failed_sends(str(history), truth) == []
    assert truth._index is None


def test_faultline_run_exits_4_and_says_harness_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    import harness.runner as runner
    from harness.cli import cli

    real_execute = runner.execute
    injected: list[tuple[int, int]] = []

    def execute_then_misrecord(config: RunConfig, run_dir: Path, **kwargs: Any) -> Executed:
        executed = real_execute(config, run_dir, **kwargs)
        injected.append(rewrite_first_ok_send_as_fail(run_dir / "history.jsonl"))
        return executed

    monkeypatch.setattr(runner, "execute", execute_then_misrecord)
    result = CliRunner().invoke(cli, ["run", "--nemesis", "none", "--time-limit", "4",
                                      "--recovery", "1", "--final-read", "5", "--seed", "5",
                                      "--out", str(tmp_path)])
    assert result.exit_code == exit_codes.HARNESS_ERROR, result.output
    [(index, value)] = injected
    assert "HARNESS ERROR: 1 value(s) recorded `fail` were appended by a broker" in result.output
    assert f"value {value}" in result.output and f"history index {index}" in result.output
    assert "verdict: HARNESS ERROR" in result.output
    assert "reproduce: faultline replay" in result.output


def test_run_help_documents_exit_code_4() -> None:
    from click.testing import CliRunner

    from harness.cli import cli

    result = CliRunner().invoke(cli, ["run", "--help"])
    assert result.exit_code == 0
    assert "4 harness error" in " ".join(result.output.split())
