"""The `disk` nemesis package in the sim: each fault kind is injected through the SimDisk,
recorded in the history with what was done, and met by Kafka's behaviour in the broker.

One run (RF 3, min.insync 2, acks=all, fsync every batch) takes a hand-built schedule with
one fault of each kind on one node at a time; the tests read its history, its nodes' logs
and its verdict. Kafka's behaviour, per fault:

- a damaged segment: recovery cuts the damage out (kept aside) or truncates the tail,
  loudly, and the replica refetches from the leader;
- a damaged index: rebuilt from the log, with a warning;
- ENOSPC on a write or on an fsync: the log dir goes offline and the broker halts; it
  comes back when the harness frees space and restarts it;
- a slow fsync: the broker waits, nothing halts;
- a damaged high-watermark checkpoint: the broker refuses to start, saying what to do.

No acknowledged acks=all write is lost across any single-node disk fault.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from harness.run_config import RunConfig
from harness.runner import RunOutcome, run
from harness.runtime.sim.disk import SimDisk
from nemesis.disk import file_kind, plan_damage
from nemesis.generate import generate
from nemesis.ops import (
    AnyFaultOp,
    CorruptFiles,
    Damage,
    Restart,
    Schedule,
    StartDiskFault,
    StopDiskFault,
)

CONFIG = RunConfig(seed=5, time_limit_s=36.0, recovery_s=6.0, final_read_s=15.0, nemesis="disk",
                   flush="every", rate=60.0)

OPS: list[AnyFaultOp] = [
    CorruptFiles(at_ms=4_000, node="n1", damages=[Damage(kind="segment", action="flip", pick=3)]),
    Restart(at_ms=6_000, nodes=["n1"]),
    StartDiskFault(at_ms=9_000, node="n2", fsync_delay_ms=1_000.0),
    StopDiskFault(at_ms=12_000, nodes=["n2"]),
    StartDiskFault(at_ms=14_000, node="n3", enospc_write=True),
    StopDiskFault(at_ms=18_000, nodes=["n3"]),
    StartDiskFault(at_ms=21_000, node="n1", enospc_fsync=True),
    StopDiskFault(at_ms=25_000, nodes=["n1"]),
    # Late, so that n2's segments have grown past an index entry.
    CorruptFiles(at_ms=28_000, node="n2", damages=[Damage(kind="index", action="flip", pick=1)]),
    Restart(at_ms=31_000, nodes=["n2"]),
]


def _schedule(config: RunConfig, ops: list[AnyFaultOp]) -> Schedule:
    return Schedule(
        nodes=config.node_names,
        clients=config.client_names,
        packages=["disk"],
        seed=config.seed,
        duration_ms=round(config.time_limit_s * 1000),
        recovery_ms=round(config.recovery_s * 1000),
        ops=ops,
    )


@pytest.fixture(scope="module")
def disk_run(tmp_path_factory: pytest.TempPathFactory) -> RunOutcome:
    return run(CONFIG, tmp_path_factory.mktemp("disk"), schedule=_schedule(CONFIG, OPS))


def _events(outcome: RunOutcome, f: str) -> list[dict[str, Any]]:
    lines = (outcome.run_dir / "history.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["process"] == "nemesis" and e["f"] == f]


def _log(outcome: RunOutcome, node: str) -> str:
    return (outcome.run_dir / "nodes" / f"{node}.log").read_text()


def test_no_acknowledged_write_is_lost_across_single_node_disk_faults(
    disk_run: RunOutcome,
) -> None:
    verdict = disk_run.verdict
    print(f"\ndisk faults (sim): counts {verdict['counts']}, "
          f"messages {verdict['stats']['messages']}")
    assert verdict["valid"] is True, verdict["counts"]
    assert disk_run.exit_code == 0  # nor a harness error (a `fail` found appended)
    assert verdict["stats"]["messages"]["acknowledged"] > 50


def test_a_damaged_segment_is_recorded_and_repaired_loudly(disk_run: RunOutcome) -> None:
    first = _events(disk_run, "disk-corrupt")[0]
    assert first["value"]["node"] == "n1" and first["value"]["crash"] == "kill"
    [damage] = first["value"]["damaged"]
    assert damage["kind"] == "segment" and damage["action"] == "flip"
    assert {"file", "offset", "bit", "size"} <= set(damage)
    directory = damage["file"].split("/")[0]
    repairs = [line for line in _log(disk_run, "n1").splitlines()
               if "WARNING" in line and f"recovery of {directory}:" in line]
    assert repairs and damage["file"] in repairs[0], repairs


def test_a_damaged_index_is_rebuilt_with_a_warning(disk_run: RunOutcome) -> None:
    second = _events(disk_run, "disk-corrupt")[1]
    [damage] = second["value"]["damaged"]
    assert second["value"]["node"] == "n2" and damage["kind"] == "index"
    assert any("WARNING" in line and f"{damage['file']} is corrupt" in line and "rebuilt" in line
               for line in _log(disk_run, "n2").splitlines())


def test_enospc_on_write_halts_the_broker_until_space_returns(disk_run: RunOutcome) -> None:
    start, stop = _events(disk_run, "start-disk-fault")[1], _events(disk_run, "stop-disk-fault")[1]
    assert start["value"] == {"node": "n3", "enospc_write": True, "enospc_fsync": False,
                              "fsync_delay_ms": 0.0}
    assert stop["value"]["restarted_halted"] == ["n3"]
    log = _log(disk_run, "n3")
    assert "CRITICAL" in log and "log directory failed" in log and "No space left" in log
    # Back after the restart: it serves again.
    served = [line for line in log.splitlines() if "serving on" in line]
    assert len(served) >= 2


def test_enospc_on_fsync_halts_the_broker_too(disk_run: RunOutcome) -> None:
    start, stop = _events(disk_run, "start-disk-fault")[2], _events(disk_run, "stop-disk-fault")[2]
    assert start["value"]["node"] == "n1" and start["value"]["enospc_fsync"] is True
    assert stop["value"]["restarted_halted"] == ["n1"]
    log = _log(disk_run, "n1").splitlines()
    assert any("CRITICAL" in line and "fsync of" in line for line in log)


def test_a_slow_fsync_delays_but_never_halts(disk_run: RunOutcome) -> None:
    start, stop = _events(disk_run, "start-disk-fault")[0], _events(disk_run, "stop-disk-fault")[0]
    assert start["value"]["fsync_delay_ms"] == 1_000.0
    assert stop["value"]["restarted_halted"] == []
    assert "CRITICAL" not in _log(disk_run, "n2")


def test_a_damaged_high_watermark_checkpoint_keeps_the_broker_from_starting(
    tmp_path: Path,
) -> None:
    config = RunConfig(**{**CONFIG.to_json(), "time_limit_s": 12.0, "recovery_s": 3.0})
    ops: list[AnyFaultOp] = [
        CorruptFiles(at_ms=6_000, node="n2",
                     damages=[Damage(kind="checkpoint", action="truncate", pick=0)]),
        Restart(at_ms=8_000, nodes=["n2"]),
    ]
    outcome = run(config, tmp_path, schedule=_schedule(config, ops))
    [corrupt] = _events(outcome, "disk-corrupt")
    [damage] = corrupt["value"]["damaged"]
    restarts = _events(outcome, "restart")
    assert damage["file"].endswith("/high-watermark.checkpoint"), damage
    # Refused, with the reason and the way out, at the op's restart and the final heal.
    assert len(restarts) == 2 and all("n2" in r["value"]["skipped"] for r in restarts), restarts
    assert "Delete that file to start" in restarts[0]["value"]["skipped"]["n2"]
    assert any("CRITICAL" in line and damage["file"] in line
               for line in _log(outcome, "n2").splitlines())
    # The two other replicas carry on: nothing acknowledged is lost.
    assert outcome.verdict["valid"] is True, outcome.verdict["counts"]


@pytest.mark.parametrize(("pick", "expected_file", "refused"), [
    (2, "__cluster_metadata-0/00000000000000000000.log", False),
    (1, "__cluster_metadata-0/quorum-state", True),
])
def test_damaged_metadata_is_recovered_or_refused_as_kafka_does(
    tmp_path: Path, pick: int, expected_file: str, refused: bool
) -> None:
    """A cut metadata log loses its tail and the node refetches it from the quorum (a
    torn tail, loudly); a cut quorum-state file could make the node vote twice in an
    epoch, so the broker refuses to start and says what to do, as Kafka does."""
    config = RunConfig(**{**CONFIG.to_json(), "time_limit_s": 12.0, "recovery_s": 3.0})
    ops: list[AnyFaultOp] = [
        CorruptFiles(at_ms=6_000, node="n2",
                     damages=[Damage(kind="metadata", action="truncate", pick=pick)]),
        Restart(at_ms=8_000, nodes=["n2"]),
    ]
    outcome = run(config, tmp_path, schedule=_schedule(config, ops))
    [corrupt] = _events(outcome, "disk-corrupt")
    [damage] = corrupt["value"]["damaged"]
    assert damage["file"] == expected_file and damage["new_size"] < damage["size"]
    first_restart = _events(outcome, "restart")[0]["value"]
    log = _log(outcome, "n2").splitlines()
    if refused:
        assert first_restart["nodes"] == []
        assert "not a valid quorum-state file" in first_restart["skipped"]["n2"]
        assert any("CRITICAL" in line and "quorum-state" in line for line in log)
    else:
        assert first_restart["nodes"] == ["n2"]
        assert any("WARNING" in line and "recovery of __cluster_metadata-0:" in line
                   and "torn tail" in line for line in log)
    assert outcome.verdict["valid"] is True, outcome.verdict["counts"]


def test_torn_writes_are_on_by_default_in_the_sim_and_can_be_turned_off() -> None:
    from harness.targets import sim_settings

    assert sim_settings(RunConfig.build({})).tear_on_power_loss is True
    off = RunConfig.build({"torn-writes": "false"})
    assert sim_settings(off).tear_on_power_loss is False
    assert "--no-torn-writes" in off.command()


def test_the_same_seed_gives_a_byte_identical_history_with_the_disk_package(
    tmp_path: Path,
) -> None:
    config = RunConfig(**{**CONFIG.to_json(), "time_limit_s": 20.0, "recovery_s": 3.0,
                          "nemesis_interval_s": 3.0})
    schedule = generate("disk", nodes=config.node_names, clients=config.client_names,
                        duration_ms=20_000, interval_ms=3_000, recovery_ms=3_000, seed=2)
    assert any(isinstance(op, CorruptFiles) for op in schedule.ops)
    histories = [
        (run(config, tmp_path / str(i), schedule=schedule).run_dir / "history.jsonl").read_bytes()
        for i in range(2)
    ]
    assert histories[0] == histories[1]
    assert b'"disk-corrupt"' in histories[0]


def test_damage_is_drawn_from_the_pick_among_files_of_its_kind() -> None:
    files = {"t1-0/00000000000000000000.log": 100, "t1-0/00000000000000000000.index": 16,
             "t1-0/high-watermark.checkpoint": 12, "__cluster_metadata-0/quorum-state": 50,
             "clock-offset-ms": 3, "t1-0/0.5-9.corrupt": 9, "t1-0/empty.log": 0}
    assert file_kind("clock-offset-ms") is None and file_kind("t1-0/0.5-9.corrupt") is None
    flip = plan_damage(Damage(kind="segment", action="flip", pick=7), files)
    assert flip is not None and flip.path == "t1-0/00000000000000000000.log"
    assert flip == plan_damage(Damage(kind="segment", action="flip", pick=7), files)
    assert flip.damage.flip_offset is not None and 0 <= flip.damage.flip_offset < 100
    cut = plan_damage(Damage(kind="metadata", action="truncate", pick=7), files)
    assert cut is not None and cut.damage.truncate_to is not None and cut.damage.truncate_to < 50
    assert plan_damage(Damage(kind="index", action="flip", pick=1), {"a-0/0.index": 0}) is None


def test_a_sim_disk_flip_and_cut_are_durable() -> None:
    disk = SimDisk()
    from harness.runtime.sim.disk import SimStorage

    f = SimStorage(disk).open("a-0/0.log")
    f.append(b"\x00\x01\x02\x03")
    disk.flip_bit("a-0/0.log", 1, 7)
    disk.survive_power_loss()
    assert disk.read_file("a-0/0.log") == b"\x00\x81\x02\x03"
    disk.cut("a-0/0.log", 2)
    disk.survive_power_loss()
    assert disk.read_file("a-0/0.log") == b"\x00\x81"


def test_a_run_recorded_before_torn_writes_existed_replays_without_them() -> None:
    recorded = RunConfig().to_json()
    del recorded["torn_writes"]
    assert RunConfig.from_json(recorded).torn_writes is False
    assert RunConfig.from_json(RunConfig().to_json()).torn_writes is True
