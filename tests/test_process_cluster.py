"""ProcessCluster: real broker processes behind the harness's proxies, and never left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import trio

from harness.runtime.process import ClusterError, NodeState, ProcessCluster
from workloads.client import Producer, ProducerConfig


def alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def wait_all_dead(pids: list[int], timeout_s: float = 5.0) -> list[int]:
    """The pids still alive after up to `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not any(alive(p) for p in pids):
            return []
        time.sleep(0.05)
    return [p for p in pids if alive(p)]


async def test_three_brokers_start_with_own_dirs_and_logs_and_advertise_their_proxies(
    tmp_path: Path,
) -> None:
    async with ProcessCluster(tmp_path, 3) as cluster:
        assert cluster.nodes == ["n1", "n2", "n3"]
        assert cluster.clients == ["clients"]
        for name in cluster.nodes:
            node = cluster.broker(name)
            assert node.state is NodeState.RUNNING
            assert node.data_dir == tmp_path / "nodes" / name / "data"
            assert node.data_dir.is_dir()
            assert "listening on" in node.log_path.read_text()
            assert node.address is not None
            # The proxy is a different port from the broker's own.
            assert cluster.client_address(name) != f"{node.address.host}:{node.address.port}"
        config = ProducerConfig.from_kafka({"bootstrap.servers": cluster.client_address("n2")})
        async with Producer(config) as producer:
            await producer.cluster.create_topic("adv", 1)
            meta = await producer.send_and_wait("adv", b"x")
            assert meta.offset == 0
            # Metadata sends the client to n2's proxy, not to the broker's real port.
            [advertised] = producer.cluster.brokers.values()
            assert advertised.node_id == 2
            assert f"{advertised.host}:{advertised.port}" == cluster.client_address("n2")
        peers = cluster.peer_addresses("n1")
        assert set(peers) == {2, 3}
        assert len({*peers.values(), *cluster.bootstrap.split(",")}) == 5
        pids = [cluster.broker(n).pid for n in cluster.nodes]
    assert all(p is not None for p in pids)
    assert wait_all_dead([p for p in pids if p is not None], 1.0) == []


async def test_brokers_are_stopped_when_the_body_fails(tmp_path: Path) -> None:
    pids: list[int] = []
    with pytest.raises(RuntimeError, match="the test failed"):
        async with ProcessCluster(tmp_path, 2) as cluster:
            pids = [p for p in (cluster.broker(n).pid for n in cluster.nodes) if p is not None]
            await cluster.pause("n1")  # even a stopped (SIGSTOP) broker must go
            raise RuntimeError("the test failed")
    assert len(pids) == 2
    assert wait_all_dead(pids, 1.0) == []


async def test_unknown_node_names_are_errors_that_list_the_nodes(tmp_path: Path) -> None:
    async with ProcessCluster(tmp_path, 1) as cluster:
        with pytest.raises(ClusterError, match=r"nodes are \['n1'\]"):
            await cluster.kill("n7")
        with pytest.raises(ClusterError, match="no link"):
            await cluster.block("n1", "n1")
        with pytest.raises(ClusterError, match="power_loss=True"):
            await cluster.power_loss("n1")


HARNESS = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    import trio
    from harness.runtime.process import ProcessCluster

    async def main():
        async with ProcessCluster(Path(sys.argv[1]), 3) as cluster:
            pids = [cluster.broker(n).pid for n in cluster.nodes]
            print(" ".join(map(str, pids)), flush=True)
            await trio.sleep_forever()

    trio.run(main)
    """
)


def run_harness(tmp_path: Path) -> tuple[subprocess.Popen[str], list[int]]:
    """Start a harness process owning a 3-node cluster; return it and its brokers' pids."""
    harness = subprocess.Popen(
        [sys.executable, "-c", HARNESS, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert harness.stdout is not None
    line = harness.stdout.readline()
    pids = [int(p) for p in line.split()]
    assert len(pids) == 3, f"harness printed {line!r}"
    assert all(alive(p) for p in pids)
    return harness, pids


def test_a_sigkilled_harness_leaves_no_broker_behind(tmp_path: Path) -> None:
    harness, pids = run_harness(tmp_path)
    harness.send_signal(signal.SIGKILL)
    harness.wait()
    # No cleanup code ran: only PR_SET_PDEATHSIG can have killed them.
    assert wait_all_dead(pids) == []


def test_an_interrupted_harness_stops_its_brokers(tmp_path: Path) -> None:
    harness, pids = run_harness(tmp_path)
    harness.send_signal(signal.SIGINT)  # Ctrl-C
    assert harness.wait(timeout=20) != 0
    assert wait_all_dead(pids) == []
    # Stopped by the harness (clean shutdown logged), not by the kernel.
    assert "received SIGTERM" in (tmp_path / "nodes" / "n1" / "broker.log").read_text()
    assert os.getpid() not in pids


async def test_a_broker_that_dies_on_its_own_reads_as_stopped_and_can_be_restarted(
    tmp_path: Path,
) -> None:
    async with ProcessCluster(tmp_path, 1) as cluster:
        node = cluster.broker("n1")
        assert node.pid is not None
        os.kill(node.pid, signal.SIGKILL)  # behind the cluster's back
        with trio.fail_after(2):
            while node.state is not NodeState.STOPPED:
                await trio.sleep(0.01)
        assert node.exit_codes == [-signal.SIGKILL]
        with pytest.raises(ClusterError, match="not running"):
            await cluster.pause("n1")
        await cluster.restart("n1")
        assert node.state is NodeState.RUNNING
        config = ProducerConfig.from_kafka({"bootstrap.servers": cluster.bootstrap})
        async with Producer(config) as producer:
            assert (await producer.send_and_wait("again", b"x")).offset == 0
