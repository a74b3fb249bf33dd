"""The simulated disk: contents volatile until fsync, what kill and power loss leave."""

from __future__ import annotations

import random

import pytest
import trio.testing

from harness.runtime.sim.disk import SimDisk, SimStorage
from harness.runtime.sim.errors import NodeCrashedError


async def test_power_loss_keeps_exactly_what_was_fsynced() -> None:
    disk = SimDisk()
    f = SimStorage(disk).open("d/log")
    f.append(b"durable")
    await f.fsync()
    f.append(b"-volatile")
    f.write_at(0, b"D")
    assert f.read(0, 100) == b"Durable-volatile"
    assert disk.unsynced_bytes() == len(b"Durable-volatile")
    disk.survive_power_loss()
    assert SimStorage(disk).open("d/log").read(0, 100) == b"durable"
    assert disk.unsynced_bytes() == 0


async def test_an_unsynced_truncation_is_undone_by_power_loss() -> None:
    disk = SimDisk()
    f = SimStorage(disk).open("log")
    f.append(b"0123456789")
    await f.fsync()
    f.truncate(4)
    f.append(b"xy")
    disk.survive_power_loss()
    assert disk.read_file("log") == b"0123456789"


async def test_kill_keeps_unsynced_writes_as_the_page_cache_does() -> None:
    disk = SimDisk()
    f = SimStorage(disk).open("log")
    f.append(b"never fsynced")
    disk.survive_kill()
    assert disk.durable_file("log") == b"never fsynced"


async def test_a_torn_write_keeps_a_strict_prefix_of_the_unsynced_suffix() -> None:
    seen = set()
    for seed in range(30):
        disk = SimDisk()
        f = SimStorage(disk).open("log")
        f.append(b"synced|")
        await f.fsync()
        f.append(b"abcdefgh")
        disk.survive_power_loss(random.Random(seed))
        content = disk.read_file("log")
        assert (b"synced|abcdefgh").startswith(content) and content.startswith(b"synced|")
        assert content != b"synced|abcdefgh"
        seen.add(len(content))
    assert len(seen) > 3, "tearing always cut at the same place"


async def test_directory_operations_are_durable_at_once_and_rename_moves_contents() -> None:
    disk = SimDisk()
    storage = SimStorage(disk)
    storage.open("a/b/x").append(b"x")
    storage.makedirs("a/c")
    assert storage.listdir("a") == ["b", "c"]
    storage.rename("a/b", "a/d")
    assert storage.listdir("a") == ["c", "d"]
    assert storage.open("a/d/x", create=False).read(0, 10) == b"x"
    disk.survive_power_loss()
    assert storage.exists("a/d/x") and storage.exists("a/c")
    assert storage.open("a/d/x").size() == 0  # the entry survived, the unsynced byte did not
    storage.remove("a")
    assert storage.listdir(".") == []
    with pytest.raises(FileNotFoundError):
        storage.open("a/d/x", create=False)


async def test_a_crashed_incarnation_cannot_touch_the_disk(
    autojump_clock: trio.testing.MockClock,
) -> None:
    disk = SimDisk()
    storage = SimStorage(disk, fsync_latency_s=0.01)
    f = storage.open("log")
    f.append(b"a")
    storage.crash()
    with pytest.raises(NodeCrashedError):
        f.append(b"b")
    with pytest.raises(NodeCrashedError):
        await f.fsync()
    with pytest.raises(NodeCrashedError):
        storage.open("other")
    assert disk.read_file("log") == b"a" and disk.durable_file("log") == b""
