"""Out of file descriptors (EMFILE): a topic that does not fit fails clearly, leaves nothing
half created in the metadata or on disk, and the broker keeps serving; an accept loop at
EMFILE backs off instead of spinning.

The broker runs as a real process whose RLIMIT_NOFILE the test lowers with prlimit(2)
once it is up, to a few descriptors above what it holds.
"""

from __future__ import annotations

import os
import resource
import socket
import time
from pathlib import Path

from kafka.protocol.admin import CreateTopicsRequest, CreateTopicsResponse
from kafka.protocol.metadata import (
    ApiVersionsRequest,
    ApiVersionsResponse,
    MetadataRequest,
    MetadataResponse,
)

from reference_broker.errors import ErrorCode
from tests.broker_process import BrokerProcess, running_broker, start_broker
from tests.wire import WireClient


def _open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _limit_fds(pid: int, soft: int) -> None:
    # Only the soft limit: lowering the hard one could not be undone without privileges.
    _, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))


def _create(client: WireClient, name: str, partitions: int) -> tuple[int, str | None]:
    t = CreateTopicsRequest.CreatableTopic
    request = CreateTopicsRequest(
        version=7,
        topics=[
            t(
                name=name,
                num_partitions=partitions,
                replication_factor=1,
                assignments=[],
                configs=[],
            )
        ],
        timeout_ms=30000,
        validate_only=False,
    )
    response = client.request(request, 7)
    assert isinstance(response, CreateTopicsResponse)
    return response.topics[0].error_code, response.topics[0].error_message


def _topic_codes(client: WireClient, names: list[str]) -> dict[str, int]:
    request = MetadataRequest(
        version=9,
        topics=[MetadataRequest.MetadataRequestTopic(name=n) for n in names],
        allow_auto_topic_creation=False,
        include_cluster_authorized_operations=False,
        include_topic_authorized_operations=False,
    )
    response = client.request(request, 9)
    assert isinstance(response, MetadataResponse)
    return {t.name: t.error_code for t in response.topics}


def _serving(broker: BrokerProcess) -> bool:
    with WireClient(broker.host, broker.port, timeout_s=5) as client:
        response = client.request(ApiVersionsRequest(version=3), 3)
    return isinstance(response, ApiVersionsResponse) and response.error_code == 0


def test_a_topic_beyond_the_fd_limit_fails_cleanly_and_leaves_no_trace(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with running_broker(data) as broker:
        with WireClient(broker.host, broker.port, timeout_s=30) as client:
            assert _create(client, "before", 1)[0] == ErrorCode.NONE
            pid = broker.process.pid
            # Room for a few partitions (about four descriptors each), not for fifty.
            _limit_fds(pid, _open_fds(pid) + 24)
            code, message = _create(client, "big", 50)
            assert code == ErrorCode.KAFKA_STORAGE_ERROR
            assert message is not None and "EMFILE" in message and "ulimit -n" in message
            assert _topic_codes(client, ["big"]) == {"big": ErrorCode.UNKNOWN_TOPIC_OR_PARTITION}
            assert sorted(p.name for p in data.glob("big-*")) == []
            # The descriptors of the partitions made before the failure were given back.
            assert _create(client, "after", 2)[0] == ErrorCode.NONE
        assert _serving(broker)
        assert broker.terminate() == 0
    log = broker.log_path.read_text()
    assert "ERROR" in log and "could not create topic big" in log and "ulimit -n" in log

    # The metadata on disk knows exactly the topics that were created.
    with running_broker(data) as again, WireClient(again.host, again.port) as client:
        assert _topic_codes(client, ["before", "after", "big"]) == {
            "before": ErrorCode.NONE,
            "after": ErrorCode.NONE,
            "big": ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
        }


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15 of stat(5); fields[0] here is field 3.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_accepting_at_emfile_backs_off_and_recovers(tmp_path: Path) -> None:
    broker = start_broker(tmp_path / "data")
    try:
        pid = broker.process.pid
        assert _serving(broker)
        _limit_fds(pid, _open_fds(pid) + 3)
        # More connections than descriptors: the kernel completes them all, the broker
        # can accept three and then gets EMFILE from accept().
        clients = [socket.create_connection((broker.host, broker.port)) for _ in range(12)]
        time.sleep(0.5)
        cpu_before = _cpu_seconds(pid)
        time.sleep(2.0)
        spent = _cpu_seconds(pid) - cpu_before
        print(f"\nbroker CPU over 2 s with accept() at EMFILE: {spent:.2f} s")
        assert spent < 0.5, f"the accept loop spun: {spent:.2f} s of CPU in 2 s"
        assert broker.process.poll() is None
        for sock in clients:
            sock.close()
        _limit_fds(pid, 4096)
        assert _serving(broker)
    finally:
        broker.terminate()
    assert "EMFILE" in broker.log_path.read_text()
