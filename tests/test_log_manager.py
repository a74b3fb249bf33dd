"""LogManager: every partition of a node under one root, reopened with its config."""

from __future__ import annotations

from pathlib import Path

import pytest

from reference_broker.log import LogConfig, LogManager
from reference_broker.os_env import OsStorage
from tests.test_log_partition import ManualClock, all_records, values
from tests.test_log_record_batch import build_batch


async def test_manager_reopens_every_partition_with_its_topic_config(tmp_path: Path) -> None:
    storage = OsStorage(tmp_path)
    manager = LogManager.open(storage, ManualClock(), LogConfig())
    small = LogConfig.from_kafka({"segment.bytes": "1024", "flush.messages": "1"})
    for partition in range(3):
        log = manager.create("orders", partition, small)
        log.append_as_leader(build_batch(values(partition + 1)), 0)
    manager.create("audit.log-v2", 0).append_as_leader(build_batch([b"x"]), 0)
    await manager.close()

    reopened = LogManager.open(OsStorage(tmp_path), ManualClock(), LogConfig())
    assert sorted((log.topic, log.partition) for log in reopened.all()) == [
        ("audit.log-v2", 0),
        ("orders", 0),
        ("orders", 1),
        ("orders", 2),
    ]
    orders_2 = reopened.get("orders", 2)
    assert orders_2 is not None
    assert orders_2.config == small
    assert all_records(orders_2) == list(enumerate(values(3)))
    audit = reopened.get("audit.log-v2", 0)
    assert audit is not None and audit.config == LogConfig()
    assert reopened.get("orders", 3) is None


def test_manager_delete_removes_the_partition_directory(tmp_path: Path) -> None:
    manager = LogManager.open(OsStorage(tmp_path), ManualClock(), LogConfig())
    manager.create("t", 0).append_as_leader(build_batch([b"x"]), 0)
    assert (tmp_path / "t-0").is_dir()
    manager.delete("t", 0)
    assert not (tmp_path / "t-0").exists()
    assert manager.get("t", 0) is None
    assert LogManager.open(OsStorage(tmp_path), ManualClock(), LogConfig()).get("t", 0) is None


def test_manager_rejects_illegal_topic_names(tmp_path: Path) -> None:
    manager = LogManager.open(OsStorage(tmp_path), ManualClock(), LogConfig())
    for bad in ("", "..", "a/b", "x" * 250, "spaced name"):
        with pytest.raises(ValueError, match="illegal topic name"):
            manager.create(bad, 0)


def test_manager_update_config_persists(tmp_path: Path) -> None:
    manager = LogManager.open(OsStorage(tmp_path), ManualClock(), LogConfig())
    manager.create("t", 0)
    new = LogConfig(retention_ms=1000)
    manager.update_config("t", new)
    log = manager.get("t", 0)
    assert log is not None and log.config == new
    again = LogManager.open(OsStorage(tmp_path), ManualClock(), LogConfig()).get("t", 0)
    assert again is not None and again.config == new


async def test_manager_flushes_logs_whose_policy_is_due(tmp_path: Path) -> None:
    clock = ManualClock()
    storage = OsStorage(tmp_path, volatile_until_fsync=True)
    manager = LogManager.open(storage, clock, LogConfig())
    eager = manager.create("eager", 0, LogConfig(flush_messages=1))
    lazy = manager.create("lazy", 0)
    eager.append_as_leader(build_batch(values(2)), 0)
    lazy.append_as_leader(build_batch(values(2)), 0)
    await manager.flush_due(clock.now_ms())
    assert eager.unflushed_messages == 0
    assert lazy.unflushed_messages == 2
    crashed = LogManager.open(OsStorage(tmp_path, volatile_until_fsync=True), clock, LogConfig())
    eager_after, lazy_after = crashed.get("eager", 0), crashed.get("lazy", 0)
    assert eager_after is not None and eager_after.log_end_offset == 2
    assert eager_after.config.flush_messages == 1
    assert lazy_after is not None and lazy_after.log_end_offset == 0
