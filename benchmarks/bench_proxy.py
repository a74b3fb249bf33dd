"""The fault proxy's added latency on loopback: request/response round trips to a real
`faultline broker`, direct and through a healthy `FaultProxy`.

The proxy runs in this process's trio run, as in the process runtime; the client is a
blocking socket in a worker thread (one connection, one request in flight, TCP_NODELAY),
so both paths are measured by the same client. Requests are ApiVersions v0 (a few bytes
each way) and a Produce of one 100-byte record (acks=1). Prints median and p99 per path
and the proxy's added median and p99 (target: under 1 ms median). Not a test:

    python3 benchmarks/bench_proxy.py [--round-trips 5000]
"""

from __future__ import annotations

import argparse
import random
import socket
import statistics
import struct
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import trio
from kafka.protocol.producer import ProduceRequest
from kafka.record.default_records import DefaultRecordBatchBuilder

from harness.broker_process import running_broker
from harness.runtime.process.proxy import FaultProxy, Link, Upstream

WARMUP = 200


def api_versions_frame(correlation_id: int) -> bytes:
    """ApiVersions v0 request frame."""
    client_id = b"bench"
    body = struct.pack(">hhih", 18, 0, correlation_id, len(client_id)) + client_id
    return struct.pack(">i", len(body)) + body


def produce_frame(correlation_id: int, topic: str) -> bytes:
    """Produce v3 of one 100-byte record to partition 0, acks=1."""
    builder = DefaultRecordBatchBuilder(
        magic=2, compression_type=0, is_transactional=False,
        producer_id=-1, producer_epoch=-1, base_sequence=-1, batch_size=1 << 20,
    )  # fmt: skip
    builder.append(0, timestamp=int(time.time() * 1000), key=None, value=b"v" * 100, headers=[])
    batch = bytes(builder.build())
    request = ProduceRequest[3](
        transactional_id=None,
        acks=1,
        timeout_ms=5000,
        topic_data=[(topic, [(0, batch)])],
    )
    header = struct.pack(">hhih", 0, 3, correlation_id, 5) + b"bench"
    body = header + request.encode()
    return struct.pack(">i", len(body)) + body


def measure(address: tuple[str, int], frame: Callable[[int], bytes], count: int) -> list[float]:
    """Seconds per round trip of `count` sequential requests on one connection."""
    with socket.create_connection(address) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        samples: list[float] = []
        for i in range(WARMUP + count):
            request = frame(i)
            started = time.perf_counter()
            sock.sendall(request)
            size = struct.unpack(">i", _read(sock, 4))[0]
            response = _read(sock, size)
            elapsed = time.perf_counter() - started
            if struct.unpack(">i", response[:4])[0] != i:
                raise RuntimeError("response out of order")
            if i >= WARMUP:
                samples.append(elapsed)
        return samples


def _read(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise RuntimeError("broker closed the connection")
        data += chunk
    return bytes(data)


def p99(samples: list[float]) -> float:
    """The 99th percentile."""
    return statistics.quantiles(samples, n=100)[98]


async def run(broker_address: Upstream, count: int) -> None:
    """Measure direct vs proxied round trips and print the figures."""
    proxy = FaultProxy(
        Link("clients", "n1", random.Random(0)),
        Link("n1", "clients", random.Random(1)),
        broker_address,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(proxy.serve)
        direct = (broker_address.host, broker_address.port)
        proxied = (proxy.listen_host, proxy.listen_port)
        kinds: dict[str, Callable[[int], bytes]] = {
            "ApiVersions": api_versions_frame,
            "Produce 100 B": lambda i: produce_frame(i, "bench"),
        }
        print(f"{count} sequential round trips per case, one connection, loopback")
        print(f"{'request':<14} {'path':<8} {'median ms':>10} {'p99 ms':>10}")
        for name, frame in kinds.items():
            figures = {}
            for path, address in (("direct", direct), ("proxied", proxied)):
                samples = await trio.to_thread.run_sync(measure, address, frame, count)
                figures[path] = (statistics.median(samples), p99(samples))
                median, tail = figures[path]
                print(f"{name:<14} {path:<8} {median * 1e3:>10.3f} {tail * 1e3:>10.3f}")
            added_median = figures["proxied"][0] - figures["direct"][0]
            added_p99 = figures["proxied"][1] - figures["direct"][1]
            print(
                f"{name:<14} {'added':<8} {added_median * 1e3:>10.3f} {added_p99 * 1e3:>10.3f}"
                f"   (target: added median < 1 ms: {'met' if added_median < 1e-3 else 'MISSED'})"
            )
        nursery.cancel_scope.cancel()


def main() -> None:
    """Start a broker, then measure."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--round-trips", type=int, default=5000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir, running_broker(Path(workdir) / "n1") as broker:
        trio.run(run, Upstream(broker.host, broker.port), args.round_trips)


if __name__ == "__main__":
    main()
