"""PeerChannel against a real broker: over loopback TCP and over the simulated network.

Every failure mode a peer can show — refusing, holding, restarting, answering too much,
a caller giving up half way — must end in `PeerUnavailableError` (or the caller's own
cancellation) and a channel whose next request is answered correctly.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
import trio.testing
from kafka.protocol.metadata import (
    ApiVersionsRequest,
    ApiVersionsResponse,
    MetadataRequest,
    MetadataResponse,
)

from harness.runtime.sim.cluster import BROKER_PORT, SimCluster
from harness.runtime.sim.network import SimNetwork
from reference_broker.config import BrokerConfig
from reference_broker.os_env import OsNetwork, os_node_env
from reference_broker.peer import PeerChannel, PeerUnavailableError
from reference_broker.server import RunningBroker, serve_broker

TIMEOUT_S = 2.0


def _config(port: int = 0) -> BrokerConfig:
    return BrokerConfig.from_properties({"listeners": f"PLAINTEXT://127.0.0.1:{port}"})


@asynccontextmanager
async def tcp_broker(data_dir: Path, port: int = 0, seed: int = 1) -> AsyncIterator[RunningBroker]:
    """A real broker on loopback; stopped (its listener closed) when the block exits."""
    env = os_node_env(data_dir, seed=seed)
    async with trio.open_nursery() as nursery:
        running = await nursery.start(serve_broker, env, _config(port))
        yield running
        nursery.cancel_scope.cancel()


async def _metadata(channel: PeerChannel) -> MetadataResponse:
    response = await channel.request(MetadataRequest(version=12, topics=None), 12)
    assert isinstance(response, MetadataResponse)
    return response


# -- loopback TCP ----------------------------------------------------------------------


async def test_requests_round_trip_to_a_real_broker_over_tcp(tmp_path: Path) -> None:
    async with tcp_broker(tmp_path) as running:
        channel = PeerChannel(
            OsNetwork(),
            running.address.host,
            running.address.port,
            client_id="peer-7",
            request_timeout_s=TIMEOUT_S,
        )
        versions = await channel.request(ApiVersionsRequest(version=3), 3)
        assert isinstance(versions, ApiVersionsResponse)
        assert versions.error_code == 0
        assert any(k.api_key == 1 for k in versions.api_keys)  # Fetch
        metadata = await _metadata(channel)
        assert metadata.brokers[0].port == running.address.port
        assert metadata.cluster_id == running.broker.cluster_id
        assert channel.connects == 1  # both requests on one connection
        await channel.aclose()


async def test_refused_connect_is_peer_unavailable_and_names_the_peer(tmp_path: Path) -> None:
    # A port that was just bound and released: nothing listens there now.
    async with tcp_broker(tmp_path) as running:
        port = running.address.port
    channel = PeerChannel(OsNetwork(), "127.0.0.1", port, client_id="c", request_timeout_s=1)
    with pytest.raises(PeerUnavailableError, match=f"127.0.0.1:{port}"):
        await channel.request(ApiVersionsRequest(version=3), 3)
    assert not channel.connected


async def test_a_server_that_holds_the_request_times_out_and_the_next_one_reconnects() -> None:
    answering = trio.Event()

    async def silent_then_fine(stream: trio.abc.Stream) -> None:
        # The first connection is read and never answered; later ones are closed
        # at once, which shows the channel really dialled again.
        if not answering.is_set():
            answering.set()
            async with stream:
                while await stream.receive_some():
                    pass
        else:
            await stream.aclose()

    async with trio.open_nursery() as nursery:
        [listener] = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listener.socket.getsockname()[1]
        nursery.start_soon(trio.serve_listeners, silent_then_fine, [listener])
        channel = PeerChannel(OsNetwork(), "127.0.0.1", port, client_id="c", request_timeout_s=0.3)
        started = trio.current_time()
        with pytest.raises(PeerUnavailableError, match=r"did not answer .* within 0.3s"):
            await channel.request(ApiVersionsRequest(version=3), 3)
        assert 0.3 <= trio.current_time() - started < 2
        assert not channel.connected
        with pytest.raises(PeerUnavailableError, match="closed the connection"):
            await channel.request(ApiVersionsRequest(version=3), 3)
        assert channel.connects == 2
        nursery.cancel_scope.cancel()


async def test_the_channel_reconnects_after_the_broker_restarts(tmp_path: Path) -> None:
    async with tcp_broker(tmp_path / "a") as running:
        port = running.address.port
        channel = PeerChannel(OsNetwork(), "127.0.0.1", port, client_id="c", request_timeout_s=2)
        await _metadata(channel)
    # The old connection is dead: the request sent on it fails, the next one redials.
    async with tcp_broker(tmp_path / "b", port=port, seed=2) as restarted:
        with pytest.raises(PeerUnavailableError):
            await _metadata(channel)
        metadata = await _metadata(channel)
        assert metadata.cluster_id == restarted.broker.cluster_id
        assert metadata.cluster_id != running.broker.cluster_id  # really the new broker
        assert channel.connects == 2


async def test_a_response_larger_than_the_bound_is_refused_before_it_is_read(
    tmp_path: Path,
) -> None:
    async with tcp_broker(tmp_path) as running:
        channel = PeerChannel(
            OsNetwork(),
            "127.0.0.1",
            running.address.port,
            client_id="c",
            request_timeout_s=2,
            max_response_bytes=64,
        )
        with pytest.raises(PeerUnavailableError, match=r"outside 0\.\.64"):
            await channel.request(ApiVersionsRequest(version=3), 3)
        assert not channel.connected


async def test_concurrent_requests_each_get_their_own_answer(tmp_path: Path) -> None:
    async with tcp_broker(tmp_path) as running:
        channel = PeerChannel(
            OsNetwork(), "127.0.0.1", running.address.port, client_id="c", request_timeout_s=2
        )
        results: dict[int, object] = {}

        async def ask(i: int) -> None:
            if i % 2:
                results[i] = await channel.request(ApiVersionsRequest(version=3), 3)
            else:
                results[i] = await _metadata(channel)

        async with trio.open_nursery() as nursery:
            for i in range(8):
                nursery.start_soon(ask, i)
        for i, response in results.items():
            assert isinstance(response, ApiVersionsResponse if i % 2 else MetadataResponse)
        assert len(results) == 8 and channel.connects == 1


async def test_aclose_fails_later_requests() -> None:
    channel = PeerChannel(OsNetwork(), "127.0.0.1", 9, client_id="c", request_timeout_s=1)
    await channel.aclose()
    with pytest.raises(PeerUnavailableError, match="closed"):
        await channel.request(ApiVersionsRequest(version=3), 3)


# -- the simulated network -------------------------------------------------------------


@asynccontextmanager
async def sim_broker(seed: int = 0) -> AsyncIterator[tuple[SimCluster, PeerChannel]]:
    """One broker `n1` on a SimNetwork and a channel to it from client host `c`."""
    async with trio.open_nursery() as nursery:
        cluster = SimCluster(nursery, SimNetwork(random.Random(seed)), seed=seed, nodes=1)
        await cluster.start()
        channel = PeerChannel(
            cluster.client_network("c"),
            "n1",
            BROKER_PORT,
            client_id="c",
            request_timeout_s=TIMEOUT_S,
        )
        yield cluster, channel
        await channel.aclose()
        nursery.cancel_scope.cancel()


async def test_sim_round_trip_to_a_simulated_broker(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with sim_broker() as (_, channel):
        metadata = await _metadata(channel)
        assert (metadata.brokers[0].host, metadata.brokers[0].port) == ("n1", BROKER_PORT)
        versions = await channel.request(ApiVersionsRequest(version=3), 3)
        assert versions.error_code == 0
        assert channel.connects == 1


async def test_sim_held_link_times_out_in_virtual_time_then_recovers_after_heal(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with sim_broker() as (cluster, channel):
        await _metadata(channel)
        await cluster.block("n1", "c")  # answers are held
        started = trio.current_time()
        with pytest.raises(PeerUnavailableError, match="did not answer"):
            await _metadata(channel)
        assert trio.current_time() - started == pytest.approx(TIMEOUT_S)
        # While the link is held even the connect hangs; that too is bounded.
        with pytest.raises(PeerUnavailableError, match="did not answer"):
            await _metadata(channel)
        await cluster.heal_network()
        await _metadata(channel)
        assert channel.connects == 2


async def test_sim_channel_reaches_a_restarted_broker(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with sim_broker() as (cluster, channel):
        await _metadata(channel)
        await cluster.kill("n1")
        with pytest.raises(PeerUnavailableError, match="unreachable"):
            await _metadata(channel)  # reset by the crash
        with pytest.raises(PeerUnavailableError, match="refused"):
            await _metadata(channel)  # nothing listens while it is down
        await cluster.restart("n1")
        metadata = await _metadata(channel)
        assert metadata.brokers[0].host == "n1"
        assert channel.connects == 2


async def test_sim_a_cancelled_request_never_leaves_its_answer_for_the_next_one(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with sim_broker() as (cluster, channel):
        await cluster.block("n1", "c")
        with trio.move_on_after(0.5) as gave_up:
            await channel.request(ApiVersionsRequest(version=3), 3)
        assert gave_up.cancelled_caught
        assert not channel.connected  # dropped: its answer may still be on the way
        await cluster.heal_network()
        # The held ApiVersions answer must not be taken for this Metadata request.
        metadata = await _metadata(channel)
        assert metadata.brokers[0].host == "n1"
