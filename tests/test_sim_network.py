"""The simulated network's links: hold, latency, jitter, bandwidth, reset, crash, pause;
and the agenda of timed wake-ups that delivers its bytes."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
import trio
import trio.testing

from harness.runtime.sim.clock import Agenda
from harness.runtime.sim.errors import NodeCrashedError
from harness.runtime.sim.network import HostNetwork, SimNetwork
from nemesis.target import LinkFault


async def pair(
    fabric: SimNetwork, nursery: trio.Nursery
) -> tuple[HostNetwork, HostNetwork, trio.abc.Stream, trio.abc.Stream]:
    server, client = fabric.incarnate("s"), fabric.incarnate("c")
    [listener] = await server.listen("s", 1)
    client_end = await client.connect("s", 1)
    server_end = await listener.accept()
    return server, client, client_end, server_end


async def test_held_bytes_wait_and_flow_after_unblock(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fabric = SimNetwork(random.Random(0), base_latency_ms=1)
    async with trio.open_nursery() as nursery:
        _, _, c, s = await pair(fabric, nursery)
        fabric.block("c", "s")
        await c.send_all(b"held")
        with trio.move_on_after(60) as waited:
            await s.receive_some()
        assert waited.cancelled_caught
        await s.send_all(b"other way")  # one-way: s -> c still flows
        assert await c.receive_some() == b"other way"
        fabric.unblock("c", "s")
        assert await s.receive_some() == b"held"


async def test_a_writer_stalls_once_the_pipe_buffer_is_full(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fabric = SimNetwork(random.Random(0), pipe_capacity=10)
    async with trio.open_nursery() as nursery:
        _, _, c, s = await pair(fabric, nursery)
        fabric.block("c", "s")
        await c.send_all(b"0123456789")
        with trio.move_on_after(10) as stalled:
            await c.send_all(b"x")
        assert stalled.cancelled_caught
        fabric.heal()
        assert await s.receive_some() == b"0123456789"
        await c.send_all(b"y")
        assert await s.receive_some() == b"y"


async def test_connect_across_a_held_link_completes_only_after_the_heal(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fabric = SimNetwork(random.Random(0))
    server, client = fabric.incarnate("s"), fabric.incarnate("c")
    await server.listen("s", 1)
    fabric.block("s", "c")  # the SYN-ACK would be dropped
    with trio.move_on_after(30) as waited:
        await client.connect("s", 1)
    assert waited.cancelled_caught
    fabric.heal()
    with trio.fail_after(1):
        await client.connect("s", 1)


async def test_connect_to_nothing_is_refused_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fabric = SimNetwork(random.Random(0))
    client = fabric.incarnate("c")
    fabric.add_host("s")
    start = trio.current_time()
    with pytest.raises(ConnectionRefusedError):
        await client.connect("s", 1)
    assert trio.current_time() - start < 0.01
    with pytest.raises(OSError, match="unknown host"):
        await client.connect("nowhere", 1)


async def test_latency_jitter_keeps_order_and_bandwidth_serializes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fabric = SimNetwork(random.Random(0), base_latency_ms=0)
    async with trio.open_nursery() as nursery:
        _, _, c, s = await pair(fabric, nursery)
        fabric.set_fault("c", "s", LinkFault(latency_ms=50, jitter_ms=40))
        start = trio.current_time()
        for i in range(20):
            await c.send_all(bytes([i]))
        received = b""
        while len(received) < 20:
            received += await s.receive_some()
        assert received == bytes(range(20)), "jitter reordered a stream"
        assert 0.01 <= trio.current_time() - start <= 0.09
        fabric.set_fault("c", "s", LinkFault(bandwidth_bytes_per_s=1000))
        start = trio.current_time()
        await c.send_all(b"x" * 2000)
        got = 0
        while got < 2000:
            got += len(await s.receive_some())
        assert trio.current_time() - start == pytest.approx(2.0, abs=0.01)


async def test_reset_breaks_both_ends_and_drops_bytes_in_flight(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fabric = SimNetwork(random.Random(0))
    async with trio.open_nursery() as nursery:
        _, _, c, s = await pair(fabric, nursery)
        fabric.block("c", "s")
        await c.send_all(b"lost")
        fabric.reset("s")
        with pytest.raises(trio.BrokenResourceError):
            await s.receive_some()
        with pytest.raises(trio.BrokenResourceError):
            await c.send_all(b"more")


async def test_a_crashed_host_resets_its_peers_after_what_it_already_sent(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fabric = SimNetwork(random.Random(0))
    async with trio.open_nursery() as nursery:
        server, _, c, s = await pair(fabric, nursery)
        await s.send_all(b"last words")
        fabric.crash("s")
        assert await c.receive_some() == b"last words"
        with pytest.raises(trio.BrokenResourceError):
            await c.receive_some()
        with pytest.raises(NodeCrashedError):
            await s.send_all(b"from beyond")
        with pytest.raises(ConnectionRefusedError):
            await fabric.incarnate("c2").connect("s", 1)
        reborn = fabric.incarnate("s")
        await reborn.listen("s", 1)
        await fabric.incarnate("c3").connect("s", 1)
        assert not server.alive


async def test_a_paused_host_neither_sends_nor_receives_until_resumed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fabric = SimNetwork(random.Random(0))
    async with trio.open_nursery() as nursery:
        _, _, c, s = await pair(fabric, nursery)
        fabric.hosts["s"].pause()
        received: list[bytes | bytearray] = []

        async def serve() -> None:
            data = await s.receive_some()
            received.append(data)
            await s.send_all(data.upper())

        nursery.start_soon(serve)
        await c.send_all(b"ping")  # the kernel still takes the bytes
        with trio.move_on_after(30) as waited:
            await c.receive_some()
        assert waited.cancelled_caught and received == []
        fabric.hosts["s"].resume()
        assert await c.receive_some() == b"PING"


async def test_the_peer_reads_end_of_stream_after_a_close(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fabric = SimNetwork(random.Random(0))
    async with trio.open_nursery() as nursery:
        _, _, c, s = await pair(fabric, nursery)
        await c.send_all(b"bye")
        await c.aclose()
        assert await s.receive_some() == b"bye"
        assert await s.receive_some() == b""
        assert await s.receive_some() == b""
        with pytest.raises(trio.ClosedResourceError):
            await c.send_all(b"x")


class _StepCounter(trio.abc.Instrument):
    """Counts the task steps of one task."""

    def __init__(self, task: trio.lowlevel.Task) -> None:
        self.task = task
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task is self.task:
            self.steps += 1


async def test_a_delivery_wakes_the_reader_once_when_it_arrives(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fabric = SimNetwork(random.Random(0), base_latency_ms=5)
    async with trio.open_nursery() as nursery:
        _, _, c, s = await pair(fabric, nursery)
        arrivals: list[tuple[bytes | bytearray, float]] = []
        reader: list[trio.lowlevel.Task] = []

        async def read() -> None:
            reader.append(trio.lowlevel.current_task())
            for _ in range(3):
                arrivals.append((await s.receive_some(), trio.current_time()))

        nursery.start_soon(read)
        await trio.testing.wait_all_tasks_blocked()
        counter = _StepCounter(reader[0])
        trio.lowlevel.add_instrument(counter)
        sent_at = trio.current_time()
        for chunk in (b"a", b"b", b"c"):
            await c.send_all(chunk)  # three chunks, one instant: no wake-up before arrival
            await trio.lowlevel.checkpoint()
        await trio.sleep(1)
        trio.lowlevel.remove_instrument(counter)
    assert [data for data, _ in arrivals] == [b"a", b"b", b"c"]
    assert all(at == pytest.approx(sent_at + 0.005) for _, at in arrivals)
    # Woken once at the arrival, then a checkpoint per receive with bytes ready.
    assert counter.steps == 3


async def test_the_agenda_moves_time_to_each_event_in_order_around_trio_timers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    agenda = Agenda.for_this_run()
    assert agenda is not None
    start = trio.current_time()
    seen: list[tuple[str, float]] = []

    def note(name: str) -> Callable[[], None]:
        return lambda: seen.append((name, trio.current_time() - start))

    agenda.call_at(start + 3, note("c"))
    agenda.call_at(start + 1, note("a"))
    dropped = agenda.call_at(start + 2, note("never"))
    agenda.call_at(start + 2, note("b"))
    agenda.cancel(dropped)
    await trio.sleep(1.5)
    seen.append(("trio sleep", trio.current_time() - start))
    await agenda.sleep_until(start + 4)
    assert seen == [("a", 1), ("trio sleep", 1.5), ("b", 2), ("c", 3)]
    assert trio.current_time() - start == 4


async def test_an_agenda_sleep_is_a_cancellable_checkpoint(
    autojump_clock: trio.testing.MockClock,
) -> None:
    agenda = Agenda.for_this_run()
    assert agenda is not None
    start = trio.current_time()
    with trio.move_on_after(1) as scope:
        await agenda.sleep_until(start + 5)
    assert scope.cancelled_caught and trio.current_time() - start == 1
    await trio.sleep(10)  # the cancelled wake-up must not fire into another wait
    assert trio.current_time() - start == 11
    with trio.CancelScope() as scope:
        scope.cancel()
        await agenda.sleep_until(start)  # due already: still a checkpoint
        pytest.fail("a cancelled sleep_until returned")


async def test_without_an_autojumping_clock_deliveries_use_trio_timers() -> None:
    assert Agenda.for_this_run() is None  # real clock: nothing may move time but time
    fabric = SimNetwork(random.Random(0), base_latency_ms=2)
    async with trio.open_nursery() as nursery:
        _, _, c, s = await pair(fabric, nursery)
        start = trio.current_time()
        await c.send_all(b"slow")
        assert await s.receive_some() == b"slow"
        assert trio.current_time() - start >= 0.002


async def test_two_networks_in_one_run_share_one_agenda(
    autojump_clock: trio.testing.MockClock,
) -> None:
    first, second = SimNetwork(random.Random(0)), SimNetwork(random.Random(1))
    assert first.agenda is second.agenda is Agenda.for_this_run()
