"""In the sim, every broker logger's lines land in `nodes/<node>.log` stamped with
simulated time, lines logged outside any node's tasks in `nodes/harness.log`, and none
reach the console."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import trio
import trio.testing

from harness.runtime.sim.node_logs import CURRENT_NODE, node_log_files

LOGGERS = ("faultline.broker.controller", "faultline.broker.quorum",
           "faultline.broker.raft_transport", "faultline.broker.group",
           "faultline.broker.lifecycle", "faultline.broker.replication")


def test_every_broker_logger_goes_to_its_node_file_in_sim_time(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async def main() -> None:
        await trio.sleep(12.5)

        async def node(name: str) -> None:
            CURRENT_NODE.set(name)
            for logger in LOGGERS:
                logging.getLogger(logger).warning("hello from %s", name)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(node, "n1")
            nursery.start_soon(node, "n2")
        logging.getLogger("faultline.broker.group").warning("no node context")

    with node_log_files(tmp_path):
        trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    for name in ("n1", "n2"):
        text = (tmp_path / f"{name}.log").read_text()
        for logger in LOGGERS:
            assert f"[    12.500 sim s] WARNING {logger}: hello from {name}" in text
    assert "12.500 sim s] WARNING faultline.broker.group: no node context" in (
        tmp_path / "harness.log").read_text()
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
