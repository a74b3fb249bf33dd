"""The `disk` nemesis package against real broker processes (`ProcessCluster`).

Damage is done to the files of a killed broker in place; ENOSPC and slow fsyncs reach a
running broker through its data dir's `disk-fault` control file and SIGUSR1; torn writes
through a seed file and SIGUSR2. The executor records each fault in the history; the
broker answers as Kafka does (halts on ENOSPC, repairs or refuses damaged files).
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import pytest
import trio

from harness.runtime.process import NodeState, ProcessCluster
from history.writer import HistoryWriter
from nemesis.executor import Executor
from nemesis.ops import AnyFaultOp, CorruptFiles, Damage, Restart, StartDiskFault, StopDiskFault
from workloads.client import KafkaClientError, Producer, ProducerConfig

FSYNC_EVERY = {"log.flush.interval.messages": 1, "log.index.interval.bytes": 1}


def _events(stream: io.BytesIO, f: str) -> list[dict[str, Any]]:
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    return [e for e in events if e["process"] == "nemesis" and e["f"] == f]


async def _send(cluster: ProcessCluster, topic: str, value: bytes, timeout_s: float = 20) -> int:
    config = ProducerConfig.from_kafka({
        "bootstrap.servers": cluster.client_address("n1"), "linger.ms": 0, "acks": "all",
        "delivery.timeout.ms": int(timeout_s * 1000), "request.timeout.ms": 3000,
    })
    with trio.fail_after(timeout_s + 10):
        async with Producer(config) as producer:
            sent = await producer.send_and_wait(topic, value, partition=0)
    assert sent.offset is not None
    return sent.offset


async def _apply(executor: Executor, op: AnyFaultOp) -> None:
    async with trio.open_nursery() as nursery:
        await executor.apply(op, nursery)


async def test_enospc_halts_the_broker_process_and_a_restart_after_space_returns_recovers(
    tmp_path: Path,
) -> None:
    stream = io.BytesIO()
    async with ProcessCluster(tmp_path, 1, settings=FSYNC_EVERY) as cluster:
        executor = Executor(cluster, HistoryWriter(stream), origin=trio.current_time())
        for i in range(3):
            assert await _send(cluster, "t", b"%d" % i) == i
        for op_fault in ({"enospc_write": True}, {"enospc_fsync": True}):
            await _apply(executor, StartDiskFault(at_ms=0, node="n1", **op_fault))
            # Never acknowledged: the broker halts under it.
            with contextlib.suppress(KafkaClientError, trio.TooSlowError):
                await _send(cluster, "t", b"lost?", timeout_s=3)
            with trio.fail_after(10):
                while cluster.broker("n1").state is not NodeState.STOPPED:
                    await trio.sleep(0.05)
            assert cluster.broker("n1").exit_codes[-1] == 1
            await _apply(executor, StopDiskFault(at_ms=0, nodes=["n1"]))
            assert cluster.broker("n1").state is NodeState.RUNNING
        # Every acknowledged write is there and nothing else was stored: the next offset
        # follows the three acknowledged ones (a fsync-failed batch may survive on disk,
        # as Kafka's would, so at most one more).
        assert await _send(cluster, "t", b"after") in (3, 4)
    log = (tmp_path / "nodes" / "n1" / "broker.log").read_text()
    assert "log directory failed: write to" in log and "log directory failed: fsync of" in log
    assert "No space left on device" in log
    starts, stops = _events(stream, "start-disk-fault"), _events(stream, "stop-disk-fault")
    assert [s["value"]["enospc_write"] for s in starts] == [True, False]
    assert [s["value"]["restarted_halted"] for s in stops] == [["n1"], ["n1"]]


async def test_a_slow_fsync_slows_acknowledgements_without_halting(tmp_path: Path) -> None:
    stream = io.BytesIO()
    async with ProcessCluster(tmp_path, 1, settings=FSYNC_EVERY) as cluster:
        executor = Executor(cluster, HistoryWriter(stream), origin=trio.current_time())
        config = ProducerConfig.from_kafka({
            "bootstrap.servers": cluster.client_address("n1"), "linger.ms": 0, "acks": "all"})
        async with Producer(config) as producer:
            await producer.send_and_wait("t", b"warm", partition=0)
            await _apply(executor, StartDiskFault(at_ms=0, node="n1", fsync_delay_ms=1500.0))
            started = trio.current_time()
            await producer.send_and_wait("t", b"slow", partition=0)
            slow = trio.current_time() - started
            await _apply(executor, StopDiskFault(at_ms=0, nodes=["n1"]))
            fast = slow
            for _ in range(3):  # the quickest of three, so a loaded machine's hiccup passes
                started = trio.current_time()
                await producer.send_and_wait("t", b"fast", partition=0)
                fast = min(fast, trio.current_time() - started)
        assert cluster.broker("n1").state is NodeState.RUNNING
    print(f"\nprocess: acks=all send with a 1.5 s fsync stall {slow:.2f} s, after it {fast:.2f} s")
    assert slow >= 1.5 > fast
    assert _events(stream, "stop-disk-fault")[0]["value"]["restarted_halted"] == []


@pytest.mark.slow
async def test_damaged_files_of_a_killed_broker_are_repaired_or_refused_as_kafka_does(
    tmp_path: Path,
) -> None:
    stream = io.BytesIO()
    async with ProcessCluster(tmp_path, 1, settings=FSYNC_EVERY, quorum=True) as cluster:
        executor = Executor(cluster, HistoryWriter(stream), origin=trio.current_time())
        for i in range(20):
            await _send(cluster, "t", b"value-%d" % i)
        for kind in ("segment", "index"):
            await _apply(executor, CorruptFiles(at_ms=0, node="n1", damages=[
                Damage(kind=kind, action="flip", pick=4)]))
            assert cluster.broker("n1").state is NodeState.STOPPED
            await _apply(executor, Restart(at_ms=0, nodes=["n1"]))
            assert cluster.broker("n1").state is NodeState.RUNNING
        hw_file = cluster.broker("n1").data_dir / "t-0" / "high-watermark.checkpoint"
        with trio.fail_after(20):  # a high-watermark checkpoint is written every 5 s
            while not hw_file.exists():
                await trio.sleep(0.2)
        await _apply(executor, CorruptFiles(at_ms=0, node="n1", damages=[
            Damage(kind="checkpoint", action="truncate", pick=1)]))
        await _apply(executor, Restart(at_ms=0, nodes=["n1"]))
        refused = cluster.broker("n1").state is NodeState.STOPPED
    corrupted = _events(stream, "disk-corrupt")
    print(f"\nprocess: {[e['value'] for e in corrupted]}")
    segment, index, checkpoint = (e["value"]["damaged"][0] for e in corrupted)
    assert segment["kind"] == "segment" and {"file", "offset", "bit"} <= set(segment)
    log = (tmp_path / "nodes" / "n1" / "broker.log").read_text()
    directory = segment["file"].split("/")[0]
    assert any(f"recovery of {directory}:" in line and segment["file"] in line
               for line in log.splitlines())
    assert f"{index['file']} is corrupt" in log
    if checkpoint["file"].endswith(".snapshot"):
        # Kafka deletes a corrupt producer snapshot and rebuilds the state from the log.
        assert not refused and f"producer snapshot {checkpoint['file']} is corrupt" in log
        return
    assert checkpoint["file"].endswith("high-watermark.checkpoint"), checkpoint
    assert refused  # Kafka: the log dir goes offline, the broker halts
    [failed] = [e for e in _events(stream, "restart") if "skipped" in e["value"]]
    assert "Delete that file to start" in failed["value"]["skipped"]["n1"]


async def test_a_power_cut_tears_the_last_write_of_a_broker_process(tmp_path: Path) -> None:
    async with ProcessCluster(tmp_path, 1, power_loss=True, torn_writes=True, seed=3,
                              settings={"log.index.interval.bytes": 1}) as cluster:
        for i in range(10):
            await _send(cluster, "t", b"x" * 2000 + b"%d" % i)
        await cluster.power_loss("n1")
        await cluster.restart("n1")
    log = (tmp_path / "nodes" / "n1" / "broker.log").read_text()
    torn = [line for line in log.splitlines() if "power cut on SIGUSR2 with a torn write" in line]
    print(f"\nprocess: {torn}")
    assert torn and "kept" in torn[0]
    assert not (tmp_path / "nodes" / "n1" / "data" / "torn-write-seed").exists()


async def test_damaged_metadata_of_a_killed_broker_is_refused_or_recovered(
    tmp_path: Path,
) -> None:
    stream = io.BytesIO()
    async with ProcessCluster(tmp_path, 1, settings=FSYNC_EVERY, quorum=True) as cluster:
        executor = Executor(cluster, HistoryWriter(stream), origin=trio.current_time())
        await _send(cluster, "t", b"before")
        await _apply(executor, CorruptFiles(at_ms=0, node="n1", damages=[
            Damage(kind="metadata", action="truncate", pick=1)]))
        await _apply(executor, Restart(at_ms=0, nodes=["n1"]))
        running = cluster.broker("n1").state is NodeState.RUNNING
    [corrupt] = _events(stream, "disk-corrupt")
    [damage] = corrupt["value"]["damaged"]
    print(f"\nprocess: {damage}")
    assert damage["kind"] == "metadata" and damage["new_size"] < damage["size"]
    log = (tmp_path / "nodes" / "n1" / "broker.log").read_text()
    if damage["file"].endswith(".log"):
        # The metadata log's torn tail is cut at recovery, loudly.
        assert running and "recovery of __cluster_metadata-0:" in log
    else:
        # quorum-state or the cluster metadata file: the broker will not start on it.
        assert not running
        [restart] = _events(stream, "restart")
        assert restart["value"]["nodes"] == [] and "n1" in restart["value"]["skipped"]
        assert "CRITICAL" in log and damage["file"].rsplit("/", 1)[-1] in log
