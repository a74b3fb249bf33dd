"""The broker's retention task deletes old segments and moves the log start offset."""

from __future__ import annotations

from pathlib import Path

import trio

from tests.broker_process import RawConnection, in_process_broker
from tests.test_broker_wire import create_topic, list_offset, produce
from tests.wire import record_batch

DAY_MS = 86_400_000


async def test_retention_task_deletes_old_segments(tmp_path: Path) -> None:
    settings = {
        "log.segment.bytes": "600",
        "log.retention.ms": str(DAY_MS),
        "log.retention.check.interval.ms": "50",
    }
    async with in_process_broker(tmp_path, settings) as running:
        conn = await RawConnection.open(running)
        assert await create_topic(conn, "old") == 0
        # Records stamped in 2023: far older than a day, so every closed segment may go.
        for i in range(6):
            response = await produce(conn, "old", 0, record_batch([bytes([i]) * 300]))
            assert response.error_code == 0
        with trio.fail_after(10):
            while (await list_offset(conn, "old", 0, -2))[1] == 0:
                await trio.sleep(0.05)
        error, earliest, _ = await list_offset(conn, "old", 0, -2)
        assert error == 0 and 0 < earliest < 6
        assert await list_offset(conn, "old", 0, -1) == (0, 6, -1)
        await conn.aclose()


async def test_retention_keeps_data_younger_than_retention_ms(tmp_path: Path) -> None:
    settings = {"log.segment.bytes": "600", "log.retention.check.interval.ms": "50"}
    async with in_process_broker(tmp_path, settings) as running:
        conn = await RawConnection.open(running)
        assert await create_topic(conn, "young", retention_ms="-1") == 0
        for i in range(6):
            assert (
                await produce(conn, "young", 0, record_batch([bytes([i]) * 300]))
            ).error_code == 0
        await trio.sleep(0.5)  # ten retention checks
        assert await list_offset(conn, "young", 0, -2) == (0, 0, -1)
        await conn.aclose()
