"""queued.max.request.bytes: one byte budget for the request frames of every connection.

A frame's announced size is reserved before its body is read; without room the
connection is not read at all (backpressure), small requests still pass, and a real
broker process attacked by ten connections holding most of a large frame each stays
within the budget plus a fixed overhead.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from pathlib import Path

import pytest
import trio
import trio.testing
from kafka.protocol.metadata import ApiVersionsRequest, ApiVersionsResponse

from reference_broker.protocol import (
    FrameDecoder,
    MemoryPool,
    ProtocolError,
    ReceivedFrame,
    frame,
    receive_request,
)
from reference_broker.protocol.framing import RECEIVE_CHUNK
from tests.broker_process import BrokerProcess, running_broker
from tests.wire import WireClient

KIB = 1024
MIB = 1024 * KIB


async def test_a_frame_waits_for_room_without_reading_its_body() -> None:
    pool = MemoryPool(300 * KIB)
    first_send, first_receive = trio.testing.memory_stream_pair()
    second_send, second_receive = trio.testing.memory_stream_pair()
    first_body, second_body = b"a" * (200 * KIB), b"b" * (200 * KIB)
    await first_send.send_all(frame(first_body))
    first = await receive_request(first_receive, FrameDecoder(MIB), pool)
    assert first is not None and first.body == first_body
    assert pool.in_use == 200 * KIB

    second_decoder = FrameDecoder(MIB)
    got: list[ReceivedFrame | None] = []

    async def receive_second() -> None:
        got.append(await receive_request(second_receive, second_decoder, pool))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receive_second)
        nursery.start_soon(second_send.send_all, frame(second_body))
        await trio.testing.wait_all_tasks_blocked()
        # 200 KiB + 200 KiB do not fit in 300 KiB: the second connection read its size
        # (and at most one receive chunk) and then stopped reading.
        assert got == []
        assert second_decoder.buffered <= RECEIVE_CHUNK
        assert pool.in_use == 200 * KIB
        first.reservation.release()
    assert got[0] is not None and got[0].body == second_body
    assert pool.in_use == 200 * KIB
    got[0].reservation.release()
    assert pool.in_use == 0


async def test_small_frames_pass_while_a_large_one_waits() -> None:
    pool = MemoryPool(300 * KIB)
    holder = await pool.reserve(200 * KIB)
    big_send, big_receive = trio.testing.memory_stream_pair()
    small_send, small_receive = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(receive_request, big_receive, FrameDecoder(MIB), pool)
        nursery.start_soon(big_send.send_all, frame(b"x" * (200 * KIB)))
        await trio.testing.wait_all_tasks_blocked()
        await small_send.send_all(frame(b"ApiVersions"))
        with trio.fail_after(1):
            small = await receive_request(small_receive, FrameDecoder(MIB), pool)
        assert small is not None and small.body == b"ApiVersions"
        small.reservation.release()
        nursery.cancel_scope.cancel()
    holder.release()
    assert pool.in_use == 0  # the cancelled wait took nothing


async def test_a_connection_closed_mid_frame_gives_its_bytes_back() -> None:
    pool = MemoryPool(MIB)
    send, receive = trio.testing.memory_stream_pair()
    await send.send_all(struct.pack(">i", 1000) + b"partial")
    await send.aclose()
    with pytest.raises(ProtocolError, match="inside a frame"):
        await receive_request(receive, FrameDecoder(MIB), pool)
    assert pool.in_use == 0


def test_the_pool_refuses_sizes_it_can_never_hold() -> None:
    async def main() -> None:
        with pytest.raises(ValueError):
            await MemoryPool(10).reserve(11)

    trio.run(main)


# The attack: ten connections each announce a 30 MiB frame and send 28 MiB of it, then
# stall. Without a broker-wide budget the broker holds all 280 MiB.
CONNECTIONS = 10
CLAIMED = 30 * MIB
SENT = 28 * MIB
QUEUED_MAX = 48 * MIB
# What the broker may use beyond its idle size: the budget plus the bytearray's growth
# slack and a receive chunk per connection.
ALLOWED_GROWTH = QUEUED_MAX + 16 * MIB


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def _api_versions_answered(broker: BrokerProcess) -> float:
    start = time.monotonic()
    with WireClient(broker.host, broker.port, timeout_s=5) as client:
        response = client.request(ApiVersionsRequest(version=3), 3)
    assert isinstance(response, ApiVersionsResponse) and response.error_code == 0
    return time.monotonic() - start


def test_ten_stalled_large_frames_stay_within_the_budget(tmp_path: Path) -> None:
    settings = {
        "socket.request.max.bytes": 32 * MIB,
        "queued.max.request.bytes": QUEUED_MAX,
    }
    with running_broker(tmp_path / "data", settings=settings) as broker:
        pid = broker.process.pid
        _api_versions_answered(broker)
        idle_kib = _status_kib(pid, "VmRSS")
        payload = struct.pack(">i", CLAIMED) + b"\x00" * SENT
        sockets: list[socket.socket] = []
        sent: list[int] = []
        lock = threading.Lock()

        def attack() -> None:
            sock = socket.create_connection((broker.host, broker.port))
            with lock:
                sockets.append(sock)
            view, total = memoryview(payload), 0
            sock.settimeout(1.0)
            deadline = time.monotonic() + 4
            while total < len(payload) and time.monotonic() < deadline:
                try:
                    total += sock.send(view[total : total + MIB])
                except TimeoutError:
                    continue  # the broker stopped reading this connection
            with lock:
                sent.append(total)

        threads = [threading.Thread(target=attack, daemon=True) for _ in range(CONNECTIONS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        time.sleep(0.5)  # let the broker take what was sent
        served_in = _api_versions_answered(broker)
        peak_kib, now_kib = _status_kib(pid, "VmHWM"), _status_kib(pid, "VmRSS")
        growth = (peak_kib - idle_kib) * KIB
        print(
            f"\n{CONNECTIONS} connections sent {sum(sent) / MIB:.0f} MiB of stalled frames; "
            f"broker RSS idle {idle_kib / KIB:.0f} MiB, peak (VmHWM) {peak_kib / KIB:.0f} MiB, "
            f"now {now_kib / KIB:.0f} MiB (growth {growth / MIB:.0f} MiB, allowed "
            f"{ALLOWED_GROWTH / MIB:.0f}); ApiVersions answered in {served_in * 1000:.0f} ms"
        )
        assert growth < ALLOWED_GROWTH
        for sock in sockets:
            sock.close()
        assert broker.process.poll() is None
        _api_versions_answered(broker)
