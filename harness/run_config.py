"""The configuration of one run: what `faultline run` was asked to do, as plain data.

A `RunConfig` is everything needed to repeat a run: target, cluster size, topic and
producer/consumer knobs (Kafka's names), workload, nemesis, durations and seed. It is
written into `results.json`, and `faultline replay` rebuilds it from there.

Validation happens here, once, with messages a user can act on (`ConfigError`); the
runner may assume a validated config.
"""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from nemesis import packages as nemesis_packages

TARGETS = ("sim", "process", "tansu", "external")
CLIENT_LIBRARIES = ("faultline", "kafka-python", "confluent-kafka")
ACKS = ("0", "1", "all")
COMMIT_STRATEGIES = ("before", "after", "auto")

# Packages each target can inject; sim and process implement every FaultTarget primitive.
TANSU_PACKAGES = frozenset({"pause"})


class ConfigError(ValueError):
    """A run configuration that cannot run; the message says what to change."""


@dataclass(frozen=True)
class RunConfig:
    """One run, fully described. Durations are seconds (simulated on the sim target)."""

    target: str = "sim"
    client: str = "faultline"
    workload: str = "queue"
    nemesis: str = "mixed"
    nemesis_interval_s: float = 5.0
    time_limit_s: float = 60.0
    recovery_s: float = 10.0
    final_read_s: float = 30.0
    rate: float = 50.0
    concurrency: int = 6
    crash_probability: float = 0.01
    seed: int = 0
    nodes: int = 3
    partitions: int = 2
    acks: str = "all"
    enable_idempotence: bool = True
    # Kafka's recommended durable setup: three replicas, two of them in sync before an
    # acks=all write is acknowledged (`faultline run` lowers both to fit fewer --nodes).
    min_insync_replicas: int = 2
    replication_factor: int = 3
    unclean_leader_election: bool = False
    flush: str = "never"
    commit: str = "after"
    allow: tuple[str, ...] = ()
    bootstrap_servers: str | None = None
    fault_cmds: dict[str, str] = field(default_factory=dict)

    # -- derived ---------------------------------------------------------------------

    @property
    def packages(self) -> tuple[str, ...]:
        """The nemesis packages this run injects (empty for "none")."""
        return nemesis_packages.parse(self.nemesis)

    @property
    def replicated(self) -> bool:
        """Whether the faultline brokers run as one replicated KRaft cluster.

        Replication factor 1 keeps the single-node layout (topic tK alone on node nK).
        """
        return self.target in ("sim", "process") and self.replication_factor > 1

    @property
    def node_names(self) -> list[str]:
        """n1..nN for the sim and process targets; the single broker otherwise."""
        return [f"n{i}" for i in range(1, self.nodes + 1)]

    def broker_settings(self) -> dict[str, object]:
        """Kafka broker settings for the faultline brokers this run starts."""
        settings: dict[str, object] = {
            "num.partitions": self.partitions,
            "default.replication.factor": self.replication_factor,
            "min.insync.replicas": self.min_insync_replicas,
            "unclean.leader.election.enable": self.unclean_leader_election,
            # As Jepsen's Kafka test does: the 3 s default only delays every run's first join.
            "group.initial.rebalance.delay.ms": 0,
        }
        settings.update(flush_settings(self.flush))
        return settings

    def tag(self) -> str:
        """A short label of what makes this run different, for its directory name."""
        nemesis = self.nemesis.replace(",", "+")
        return f"{self.target}-{self.workload}-{nemesis}-s{self.seed}"

    # -- serialization ---------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """The config as JSON-ready data (tuples as lists)."""
        data = asdict(self)
        data["allow"] = list(self.allow)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunConfig:
        """Rebuild a config written by `to_json`; unknown keys are a ConfigError."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"results.json has unknown run settings {unknown}")
        values = dict(data)
        if "allow" in values:
            values["allow"] = tuple(values["allow"])
        config = cls(**values)
        config.validate()
        return config

    # -- validation ------------------------------------------------------------------

    def validate(self) -> None:
        """Raise ConfigError naming the first setting that cannot work."""
        _choice("--target", self.target, TARGETS)
        _choice("--client", self.client, CLIENT_LIBRARIES)
        _choice("--acks", self.acks, ACKS)
        _choice("--commit", self.commit, COMMIT_STRATEGIES)
        try:
            packages = self.packages
        except ValueError as exc:
            raise ConfigError(f"--nemesis: {exc}") from None
        if self.acks != "all" and self.enable_idempotence:
            raise ConfigError(
                f"--acks {self.acks} with an idempotent producer: Kafka requires acks=all "
                "for enable.idempotence; add --no-enable-idempotence"
            )
        if self.min_insync_replicas > self.replication_factor:
            raise ConfigError(
                f"--min-insync-replicas {self.min_insync_replicas} exceeds "
                f"--replication-factor {self.replication_factor}: acks=all could never succeed"
            )
        if self.target in ("sim", "process", "tansu") and self.replication_factor > self.nodes:
            raise ConfigError(
                f"--replication-factor {self.replication_factor} needs at least that many "
                f"--nodes, not {self.nodes}"
            )
        if self.target == "sim" and self.client != "faultline":
            raise ConfigError(
                f"--client {self.client} runs only against real sockets: use --target "
                "process, tansu or external (the sim target runs faultline's trio client)"
            )
        if self.target == "external" and not self.bootstrap_servers:
            raise ConfigError(
                "--target external needs --bootstrap-servers host:port[,host:port...]"
            )
        if self.target != "external" and self.bootstrap_servers:
            raise ConfigError("--bootstrap-servers is for --target external only")
        if self.target == "tansu":
            unsupported = sorted(set(packages) - TANSU_PACKAGES)
            if unsupported:
                raise ConfigError(
                    f"--target tansu can inject only {sorted(TANSU_PACKAGES)} (it runs one "
                    f"Tansu process with in-memory storage, so a kill or power loss would "
                    f"erase every log, and its links are not proxied); not {unsupported}. "
                    "Use --nemesis pause or --nemesis none"
                )
        if self.target == "external" and packages:
            supported = {p for p in ("kill", "pause") if _has_fault_cmds(self.fault_cmds, p)}
            unsupported = sorted(set(packages) - supported)
            if unsupported:
                raise ConfigError(
                    "--target external injects no faults of its own: pass --nemesis none, or "
                    "give shell commands with --fault-cmd (kill=... and restart=... for the "
                    "kill package, pause=... and resume=... for pause; {node} is replaced by "
                    f"the node's host:port); cannot inject {unsupported}"
                )
        for key in self.fault_cmds:
            _choice("--fault-cmd", key, ("kill", "restart", "pause", "resume"))
        if self.target == "tansu" and self.nodes != 1:
            raise ConfigError("--target tansu runs exactly one node: use --nodes 1")
        _at_least("--nodes", self.nodes, 1)
        _at_least("--partitions", self.partitions, 1)
        _at_least("--concurrency", self.concurrency, 1)
        if self.time_limit_s <= 0:
            raise ConfigError(f"--time-limit must be positive, got {self.time_limit_s}")
        if self.rate <= 0:
            raise ConfigError(f"--rate must be positive, got {self.rate}")
        if self.nemesis_interval_s <= 0:
            raise ConfigError(
                f"--nemesis-interval must be positive, got {self.nemesis_interval_s}"
            )
        if self.recovery_s < 0 or self.final_read_s <= 0:
            raise ConfigError("recovery must be >= 0 and the final read time positive")
        flush_settings(self.flush)


def _has_fault_cmds(cmds: dict[str, str], package: str) -> bool:
    pairs = {"kill": ("kill", "restart"), "pause": ("pause", "resume")}
    return all(name in cmds for name in pairs[package])


def _choice(option: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{option} must be one of {', '.join(choices)}, not {value!r}")


def _at_least(option: str, value: int, low: int) -> None:
    if value < low:
        raise ConfigError(f"{option} must be at least {low}, got {value}")


_FLUSH_MS = re.compile(r"^(\d+)\s*ms$")


def flush_settings(flush: str) -> dict[str, object]:
    """Broker settings for `--flush`: every (fsync each batch), N ms, or never.

    every -> log.flush.interval.messages=1; "N ms" -> log.flush.interval.ms=N (checked
    every min(N, 100) ms); never -> Kafka's default, which leaves fsync to the OS (that
    is, in this lab, to nobody: a power loss loses everything since the last roll).
    """
    text = flush.strip().lower()
    if text == "every":
        return {"log.flush.interval.messages": 1}
    if text == "never":
        return {}
    match = _FLUSH_MS.match(text)
    if match is None and text.isdigit():
        match = re.match(r"^(\d+)$", text)
    if match is None:
        raise ConfigError(f"--flush must be 'every', 'never' or a period such as '500ms', "
                          f"not {flush!r}")
    ms = int(match.group(1))
    if ms < 1:
        raise ConfigError("--flush period must be at least 1 ms")
    return {"log.flush.interval.ms": ms, "log.flush.scheduler.interval.ms": min(ms, 100)}


def new_run_dir(out: Path, config: RunConfig, now: _dt.datetime | None = None) -> Path:
    """Create and return `out/<timestamp>-<tag>`, never reusing an existing directory."""
    stamp = (now or _dt.datetime.now()).strftime("%Y%m%dT%H%M%S")
    base = f"{stamp}-{config.tag()}"
    out.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, 1000):
        name = base if attempt == 1 else f"{base}-{attempt}"
        path = out / name
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path
    raise ConfigError(f"could not find a free run directory name under {out}")
