"""The queue workload pipelines sends: the brokers see several batches of one producer and
partition in flight at once, and the idempotent producer still neither duplicates nor
reorders under kills.

The wire is watched from the client side of each connection (a tap around the sim
network's streams): a Produce request is in flight from when the client writes it until
its response (same correlation id) comes back. Everything else is real: the simulated
3-node KRaft cluster, faultline's trio client, the queue workload, the nemesis executor.
"""

from __future__ import annotations

import io
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

import pytest
import trio

from checkers.verdict import check_file
from harness.progress import CountingWriter, RunCounters
from harness.run_config import RunConfig
from harness.runner import drive
from harness.runtime.sim.cluster import SimCluster
from harness.runtime.sim.run import run_sim
from harness.targets import sim_session, sim_settings
from reference_broker.log.record_batch import parse_header
from reference_broker.protocol.codec import decode_request
from workloads.client.transport import Network
from workloads.queue import QueueWorkload

PRODUCE = 0


class InFlight(NamedTuple):
    """One batch of a Produce request awaiting its response."""

    log: str
    producer_id: int
    base_sequence: int


@dataclass
class WireTap:
    """Produce batches in flight per (connection, log, producer id), and the most seen."""

    connections: int = 0
    pending: dict[tuple[int, int], list[InFlight]] = field(default_factory=dict)
    current: Counter[tuple[int, str, int]] = field(default_factory=Counter)
    most: int = 0
    # Base sequences of batches that were in flight together (idempotent producers).
    overlapping_sequences: list[list[int]] = field(default_factory=list)

    def sent(self, conn: int, frame: bytes) -> None:
        if int.from_bytes(frame[:2], "big", signed=True) != PRODUCE:
            return
        request = decode_request(frame)
        batches = []
        for topic in request.body.topic_data:
            for part in topic.partition_data:
                header = parse_header(part.records)
                batches.append(InFlight(f"{topic.name}/{part.index}", header.producer_id,
                                        header.base_sequence))
        self.pending[(conn, request.header.correlation_id)] = batches
        for b in batches:
            key = (conn, b.log, b.producer_id)
            self.current[key] += 1
            if self.current[key] > 1 and b.producer_id >= 0:
                together = sorted(x.base_sequence for (c, _), xs in self.pending.items()
                                  for x in xs if c == conn and (x.log, x.producer_id)
                                  == (b.log, b.producer_id))
                self.overlapping_sequences.append(together)
            self.most = max(self.most, self.current[key])

    def answered(self, conn: int, frame: bytes) -> None:
        correlation = int.from_bytes(frame[:4], "big", signed=True)
        for b in self.pending.pop((conn, correlation), []):
            self.current[(conn, b.log, b.producer_id)] -= 1

    def closed(self, conn: int) -> None:
        for key in [k for k in self.pending if k[0] == conn]:
            for b in self.pending.pop(key):
                self.current[(conn, b.log, b.producer_id)] -= 1


class _Frames:
    """Splits a byte stream into Kafka frames (4-byte size prefix)."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self.buf += data
        frames = []
        while len(self.buf) >= 4:
            size = int.from_bytes(self.buf[:4], "big")
            if len(self.buf) < 4 + size:
                break
            frames.append(bytes(self.buf[4:4 + size]))
            del self.buf[:4 + size]
        return frames


class TapStream(trio.abc.Stream):
    """A client's stream to a broker, reporting Produce requests and responses."""

    def __init__(self, inner: trio.abc.Stream, tap: WireTap) -> None:
        self.inner, self.tap = inner, tap
        tap.connections += 1
        self.conn = tap.connections
        self.out, self.into = _Frames(), _Frames()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        for frame in self.out.feed(bytes(data)):
            self.tap.sent(self.conn, frame)
        await self.inner.send_all(data)

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        data = await self.inner.receive_some(max_bytes)
        for frame in self.into.feed(bytes(data)):
            self.tap.answered(self.conn, frame)
        return data

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self.inner.send_eof()  # type: ignore[attr-defined]

    async def aclose(self) -> None:
        self.tap.closed(self.conn)
        await self.inner.aclose()


class TapNetwork:
    def __init__(self, inner: Network, tap: WireTap) -> None:
        self.inner, self.tap = inner, tap

    async def connect(self, host: str, port: int) -> trio.abc.Stream:
        return TapStream(await self.inner.connect(host, port), self.tap)


def run_tapped(config: RunConfig, tmp_path: Path) -> tuple[WireTap, Path]:
    """A sim run of `config` (its generated schedule) with every client connection tapped."""
    tap = WireTap()
    history = tmp_path / "history.jsonl"

    async def scenario(cluster: SimCluster) -> None:
        session = sim_session(cluster, config)
        session.env = replace(
            session.env,
            network_for=lambda name: TapNetwork(cluster.client_network(name), tap))
        with history.open("wb") as stream:
            writer = CountingWriter(stream, RunCounters())
            await drive(session, config, QueueWorkload(), writer, progress=io.StringIO())

    run_sim(scenario, config.seed, sim_settings(config))
    return tap, history


KILLS = {"nemesis": "kill", "time-limit": 25, "recovery": 5, "final-read": 15,
         "nemesis-interval": 3, "flush": "every", "rate": 60}


def test_an_idempotent_producer_keeps_several_batches_of_a_partition_in_flight_under_kills(
        tmp_path: Path) -> None:
    config = RunConfig.build({**KILLS, "seed": 4})
    tap, history = run_tapped(config, tmp_path)
    print(f"idempotent: at most {tap.most} batches of one producer and partition in "
          f"flight; {len(tap.overlapping_sequences)} batches sent behind an unanswered one")
    assert tap.most > 1
    # Batches in flight together carry distinct, increasing sequences: the dedup window
    # holds more than one of them.
    assert tap.overlapping_sequences
    assert all(len(set(s)) == len(s) for s in tap.overlapping_sequences)
    verdict = check_file(str(history), mode="subscribe")
    found = set(verdict["anomaly_types"])
    assert not {"duplicate", "key-order", "inconsistent-offsets", "lost-write",
                "int-nonmonotonic-send", "nonmonotonic-send"} & found, found
    assert verdict["valid"] is True, verdict["bad_anomaly_types"]


@pytest.mark.parametrize("seed", [2])
def test_a_plain_producer_pipelines_too(tmp_path: Path, seed: int) -> None:
    config = RunConfig.build({**KILLS, "nemesis": "none", "seed": seed, "acks": "all",
                              "enable-idempotence": "false"})
    tap, _ = run_tapped(config, tmp_path)
    print(f"plain: at most {tap.most} batches of one producer and partition in flight")
    assert tap.most > 1
    assert not tap.overlapping_sequences  # no producer id, no sequences
