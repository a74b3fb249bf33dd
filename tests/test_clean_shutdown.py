"""The clean-shutdown marker (`.kafka_cleanshutdown`): written durably on a clean stop,
read and removed at the next start, anything unreadable taken as an unclean stop."""

from __future__ import annotations

import trio

from harness.runtime.sim.disk import SimDisk, SimStorage
from reference_broker.clean_shutdown import (
    CLEAN_SHUTDOWN_FILE,
    mark_clean_shutdown,
    take_previous_broker_epoch,
)


def test_the_marker_names_the_epoch_once_and_survives_a_power_cut() -> None:
    disk = SimDisk()

    async def main() -> tuple[int, bytes, int]:
        await mark_clean_shutdown(SimStorage(disk), 42)
        disk.survive_power_loss()  # written with fsync: the marker is durable
        storage = SimStorage(disk)
        handle = storage.open(CLEAN_SHUTDOWN_FILE, create=False)
        content = handle.read(0, handle.size())
        handle.close()
        first = await take_previous_broker_epoch(storage)
        disk.survive_power_loss()
        # A crash of the incarnation that read it must not find it again.
        second = await take_previous_broker_epoch(SimStorage(disk))
        return first, content, second

    first, content, second = trio.run(main)
    assert content == b'{"version":0,"brokerEpoch":42}'  # Kafka's format
    assert (first, second) == (42, -1)


def test_no_marker_or_an_unreadable_one_is_an_unclean_shutdown() -> None:
    disk = SimDisk()

    async def main() -> list[int]:
        storage = SimStorage(disk)
        epochs = [await take_previous_broker_epoch(storage)]
        for garbage in (b"", b"not json", b'{"version":1,"brokerEpoch":7}', b'{"version":0}'):
            handle = storage.open(CLEAN_SHUTDOWN_FILE)
            handle.truncate(0)
            handle.append(garbage)
            await handle.fsync()
            handle.close()
            epochs.append(await take_previous_broker_epoch(storage))
            assert not storage.exists(CLEAN_SHUTDOWN_FILE)
        return epochs

    assert trio.run(main) == [-1] * 5
