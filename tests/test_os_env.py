"""The OS node environment: real files (durable and power-cut modes), TCP, wall clock."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import trio

from reference_broker.log import LogConfig, PartitionLog
from reference_broker.os_env import OsNetwork, OsStorage, WallClock, os_node_env
from tests.test_log_partition import ManualClock, all_records, values
from tests.test_log_record_batch import build_batch


def on_disk(root: Path, path: str) -> bytes:
    return (root / path).read_bytes()


@pytest.mark.parametrize("volatile", [False, True])
async def test_storage_file_operations_read_back_what_was_written(
    tmp_path: Path, volatile: bool
) -> None:
    storage = OsStorage(tmp_path, volatile_until_fsync=volatile)
    f = storage.open("dir/sub/file.bin")
    f.append(b"hello ")
    f.append(b"world")
    assert f.size() == 11
    assert f.read(0, 100) == b"hello world"
    assert f.read(6, 3) == b"wor"
    f.write_at(0, b"J")
    f.write_at(9, b"LDS")
    assert f.read(0, 100) == b"Jello worLDS"
    f.truncate(5)
    assert f.read(0, 100) == b"Jello"
    f.truncate(7)
    assert f.read(0, 100) == b"Jello\0\0"
    await f.fsync()
    assert on_disk(tmp_path, "dir/sub/file.bin") == b"Jello\0\0"
    assert storage.listdir("dir") == ["sub"]
    assert storage.listdir("missing") == []
    assert storage.exists("dir/sub/file.bin")
    f.close()
    with pytest.raises(ValueError, match="closed"):
        f.read(0, 1)


async def test_durable_mode_writes_reach_the_file_at_once(tmp_path: Path) -> None:
    storage = OsStorage(tmp_path)
    f = storage.open("a.log")
    f.append(b"abc")
    assert on_disk(tmp_path, "a.log") == b"abc"


async def test_volatile_mode_keeps_unsynced_bytes_off_the_disk(tmp_path: Path) -> None:
    storage = OsStorage(tmp_path, volatile_until_fsync=True)
    f = storage.open("a.log")
    f.append(b"durable|")
    await f.fsync()
    f.append(b"volatile")
    f.write_at(0, b"D")
    assert f.read(0, 100) == b"Durable|volatile"
    assert on_disk(tmp_path, "a.log") == b"durable|"
    # A power cut: a fresh storage on the same directory, the first never closed.
    after_crash = OsStorage(tmp_path, volatile_until_fsync=True)
    g = after_crash.open("a.log")
    assert g.read(0, 100) == b"durable|"
    await f.fsync()
    assert on_disk(tmp_path, "a.log") == b"Durable|volatile"


async def test_volatile_truncate_is_not_durable_until_fsync(tmp_path: Path) -> None:
    storage = OsStorage(tmp_path, volatile_until_fsync=True)
    f = storage.open("a.log")
    f.append(b"0123456789")
    await f.fsync()
    f.truncate(4)
    f.append(b"xy")
    f.write_at(1, b"Z")
    assert f.read(0, 100) == b"0Z23xy"
    assert on_disk(tmp_path, "a.log") == b"0123456789"
    await f.fsync()
    assert on_disk(tmp_path, "a.log") == b"0Z23xy"


async def test_volatile_buffers_follow_rename_and_die_with_remove(tmp_path: Path) -> None:
    storage = OsStorage(tmp_path, volatile_until_fsync=True)
    f = storage.open("p/x.tmp")
    f.append(b"snapshot")
    storage.rename("p/x.tmp", "p/x.snap")
    assert f.path == "p/x.snap"
    assert not storage.exists("p/x.tmp")
    g = storage.open("p/x.snap")
    assert g.read(0, 100) == b"snapshot"
    assert on_disk(tmp_path, "p/x.snap") == b""
    await g.fsync()
    assert on_disk(tmp_path, "p/x.snap") == b"snapshot"
    h = storage.open("p/y.log")
    h.append(b"gone")
    h.close()
    assert storage.open("p/y.log").read(0, 10) == b"gone"  # still buffered after close
    storage.remove("p")
    assert not (tmp_path / "p").exists()
    assert storage.open("p/y.log").read(0, 10) == b""
    assert storage.unsynced_bytes() == 0


async def test_two_handles_on_one_path_share_contents(tmp_path: Path) -> None:
    for volatile in (False, True):
        storage = OsStorage(tmp_path / str(volatile), volatile_until_fsync=volatile)
        a, b = storage.open("f"), storage.open("f")
        a.append(b"one")
        b.append(b"two")
        assert a.read(0, 10) == b.read(0, 10) == b"onetwo"


def test_storage_paths_stay_under_the_root(tmp_path: Path) -> None:
    storage = OsStorage(tmp_path)
    for bad in ("/etc/passwd", "../escape", "a/../../b"):
        with pytest.raises(ValueError, match="relative"):
            storage.open(bad)


async def test_power_cut_loses_exactly_the_unflushed_suffix_of_a_log(tmp_path: Path) -> None:
    storage = OsStorage(tmp_path, volatile_until_fsync=True)
    log = PartitionLog.open(storage, "t-0", LogConfig(segment_bytes=2048), ManualClock())
    for i in range(30):
        log.append_as_leader(build_batch(values(2, 2 * i)), 0)
    await log.flush()
    durable = log.log_end_offset
    assert log.segment_count > 1
    for i in range(30, 45):
        log.append_as_leader(build_batch(values(2, 2 * i)), 0)
    assert log.log_end_offset > durable
    # The segment rolled after the last flush survives as a name: the offsets before its
    # base were handed out, so they are retired rather than handed out again.
    rolled = max(int(p.name.split(".")[0]) for p in (tmp_path / "t-0").glob("*.log"))
    assert rolled > durable
    crashed = OsStorage(tmp_path, volatile_until_fsync=True)
    recovered = PartitionLog.open(crashed, "t-0", LogConfig(segment_bytes=2048), ManualClock())
    assert all_records(recovered) == list(enumerate(values(durable)))
    assert recovered.log_end_offset == rolled


async def test_tcp_network_connects_over_loopback() -> None:
    network = OsNetwork()
    listeners = await network.listen("127.0.0.1", 0)
    assert isinstance(listeners[0], trio.SocketListener)
    port = listeners[0].socket.getsockname()[1]

    async def echo_once(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        stream = await listeners[0].accept()
        async with stream:
            await stream.send_all((await stream.receive_some(100)).upper())

    async with trio.open_nursery() as nursery:
        await nursery.start(echo_once)
        with trio.fail_after(10):
            client = await network.connect("127.0.0.1", port)
            async with client:
                await client.send_all(b"ping")
                assert await client.receive_some(100) == b"PING"
    for listener in listeners:
        await listener.aclose()


def test_wall_clock_and_seeded_rng(tmp_path: Path) -> None:
    now = WallClock().now_ms()
    assert abs(now - time.time() * 1000) < 5_000
    a = os_node_env(tmp_path / "a", seed=7)
    b = os_node_env(tmp_path / "b", seed=7, volatile_until_fsync=True)
    assert [a.rng.random() for _ in range(3)] == [b.rng.random() for _ in range(3)]
    assert isinstance(b.storage, OsStorage) and b.storage.volatile_until_fsync
