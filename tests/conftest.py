"""Shared fixtures: real broker processes on loopback with data dirs under tmp_path."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harness.broker_process import BrokerProcess, start_broker

StartBroker = Callable[..., BrokerProcess]


@pytest.fixture
def broker_factory(tmp_path: Path) -> Iterator[StartBroker]:
    """Start `faultline broker` processes; every one is stopped when the test ends.

    Call it as `broker_factory(settings={...}, data_dir=...)`; a restart passes the same data_dir.
    """
    started: list[BrokerProcess] = []

    def start(
        *, settings: dict[str, object] | None = None, data_dir: Path | None = None
    ) -> BrokerProcess:
        directory = data_dir or tmp_path / f"broker-{len(started)}"
        broker = start_broker(
            directory, settings=settings, log_path=tmp_path / f"broker-{len(started)}.log"
        )
        started.append(broker)
        return broker

    yield start
    for broker in started:
        if broker.process.poll() is None:
            broker.kill()


@pytest.fixture
def broker(broker_factory: StartBroker) -> BrokerProcess:
    """One reference broker with default settings (3 partitions per auto-created topic)."""
    return broker_factory(settings={"num.partitions": 3})
