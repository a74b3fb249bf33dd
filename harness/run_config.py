"""The configuration of one run: what `faultline run` was asked to do, as plain data.

A `RunConfig` is everything needed to repeat a run: target, cluster size, topic and
producer/consumer knobs (Kafka's names), workload, nemesis, durations and seed. It is
written into `results.json`, and `faultline replay` rebuilds it from there.

Each setting is declared once, on its field (`harness.settings`); `SETTINGS` is the
table made from those declarations. Validation happens here, once, with messages a
user can act on (`ConfigError`): each value against its declaration, then the rules
between settings. The runner may assume a validated config.
"""

from __future__ import annotations

import datetime as _dt
import random
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, get_args

from checkers.anomalies import ANOMALIES
from harness.settings import ConfigError, command_line, resolve, setting, settings_of
from nemesis import Schedule, ScheduleError
from nemesis import packages as nemesis_packages
from reference_broker import bugs as reference_bugs
from workloads.adapters import Acks
from workloads.base import CommitStrategy, IsolationLevel
from workloads.registry import WORKLOADS

TARGETS = ("sim", "process", "tansu", "external")
CLIENT_LIBRARIES = ("faultline", "kafka-python", "confluent-kafka")
ACKS: tuple[Acks, ...] = get_args(Acks)
COMMIT_STRATEGIES: tuple[CommitStrategy, ...] = get_args(CommitStrategy)
ISOLATION_LEVELS: tuple[IsolationLevel, ...] = get_args(IsolationLevel)
# Workloads made of transactions: they need transactional producers.
TXN_WORKLOADS = ("txn", "exactly-once")

# Packages each target can inject; sim and process implement every FaultTarget primitive.
TANSU_PACKAGES = frozenset({"pause"})
FAULT_COMMANDS = ("kill", "restart", "pause", "resume")


def _check_nemesis(spec: str) -> None:
    try:
        nemesis_packages.parse(spec)
    except ValueError as exc:
        raise ConfigError(f"--nemesis: {exc}") from None


# The settings a --schedule determines: its faults and their timing.
SCHEDULE_SETS = ("nemesis", "time-limit", "recovery")


def _check_schedule(path: str | None) -> None:
    if path is not None:
        read_schedule(path)


def read_schedule(path: str) -> Schedule:
    """The fault schedule in file `path`; ConfigError saying what is wrong with it."""
    try:
        return Schedule.read(path)
    except ScheduleError as exc:
        raise ConfigError(f"--schedule: {exc}") from None


def _from_schedule(v: Mapping[str, Any], made: Any, otherwise: Any) -> Any:
    """A default taken from the --schedule file when one is given (`made` of it)."""
    path = v["schedule"]
    return otherwise if path is None else made(read_schedule(path))


def _check_allow(types: tuple[str, ...]) -> None:
    unknown = [name for name in types if name not in ANOMALIES]
    if unknown:
        raise ConfigError(f"--allow: unknown anomaly type {unknown[0]!r}; expected one of "
                          f"{', '.join(ANOMALIES)}")


def _check_bugs(names: tuple[str, ...]) -> None:
    try:
        reference_bugs.parse(names)
    except reference_bugs.UnknownBugError as exc:
        raise ConfigError(f"--bug: {exc}") from None


def _check_flush(flush: str) -> None:
    flush_settings(flush)


@dataclass(frozen=True)
class RunConfig:
    """One run, fully described. Durations are seconds (simulated on the sim target).

    Each field is a setting (`harness.settings`): its declaration here is the one place
    its option name, type, default, help and allowed values are written.
    """

    target: str = setting(
        "sim", "Where the cluster runs: simulated, broker processes, one Tansu broker, or "
        "any Kafka-compatible cluster (--bootstrap-servers).", choices=TARGETS)
    client: str = setting(
        "faultline", "Client library the workload drives (third-party ones need a "
        "real-socket target).", choices=CLIENT_LIBRARIES)
    workload: str = setting("queue", "What the clients do.", choices=tuple(WORKLOADS))
    schedule: str | None = setting(
        None, "Run this fault schedule (a JSON file in the format of a run's nemesis.json) "
        "instead of generating one; it sets --nemesis, --time-limit and --recovery.",
        metavar="FILE", check=_check_schedule, path=True)
    nemesis: str = setting(
        "mixed", "Comma-separated fault packages (on a --vary axis joined with +):\n\n\b\n"
        + nemesis_packages.describe(), check=_check_nemesis,
        normalize=lambda text: text.replace("+", ","), default_text="mixed; --schedule's",
        derive=lambda v: _from_schedule(
            v, lambda s: ",".join(s.fault_packages()) or "none", "mixed"))
    nemesis_interval_s: float = setting(
        5.0, "Mean seconds between fault starts (each fault lasts a duration drawn around "
        "Kafka's timers).", name="nemesis-interval", minimum=0.01)
    time_limit_s: float = setting(
        60.0, "Seconds of workload under faults (simulated on --target sim).",
        name="time-limit", minimum=0.1, default_text="60; --schedule's duration",
        derive=lambda v: _from_schedule(v, lambda s: s.duration_ms / 1000, 60.0))
    recovery_s: float = setting(
        10.0, "Seconds the workload goes on after the final heal, before the final reads "
        "(the time to recover is measured in it).", name="recovery", minimum=0.0,
        default_text="10; --schedule's",
        derive=lambda v: _from_schedule(v, lambda s: s.recovery_ms / 1000, 10.0))
    final_read_s: float = setting(
        30.0, "Seconds the final read may take at most.", name="final-read", minimum=0.1)
    rate: float = setting(50.0, "Target client operations per second.", minimum=0.01)
    concurrency: int = setting(6, "Client processes alive at once.", minimum=1)
    crash_probability: float = setting(
        0.01, "Chance per operation that a client crashes (info, replaced).",
        minimum=0.0, maximum=1.0)
    seed: int = setting(
        0, "Seed of every random choice.", default_text="random, printed", axis=False,
        # The one unseeded choice, made when no seed is given and printed, so the run
        # itself is seeded.
        derive=lambda _: random.SystemRandom().randrange(1_000_000))
    nodes: int = setting(
        3, "Brokers.", minimum=1, default_text="3; 1 for tansu",
        derive=lambda v: 1 if v["target"] == "tansu" else 3)
    partitions: int = setting(2, "Partitions per topic.", minimum=1)
    # Kafka's recommended durable setup: three replicas, two of them in sync before an
    # acks=all write is acknowledged, both lowered to fit fewer nodes.
    replication_factor: int = setting(
        3, "Replication factor of the topics; above 1 the sim and process brokers form "
        "one KRaft cluster.", minimum=1, default_text="3, at most --nodes",
        derive=lambda v: min(3, v["nodes"]))
    min_insync_replicas: int = setting(
        2, "min.insync.replicas of the topics.", minimum=1,
        default_text="2, at most the replication factor",
        derive=lambda v: min(2, v["replication-factor"]))
    acks: Acks = setting("all", "Producer acks.", choices=ACKS)
    # As Kafka's producer does: left unset, idempotence is on exactly when acks=all.
    enable_idempotence: bool = setting(
        True, "Producer enable.idempotence.", default_text="true with --acks all",
        derive=lambda v: v["acks"] == "all")
    delivery_timeout_ms: int = setting(
        10_000, "Producer delivery.timeout.ms: how long a send may be retried before it "
        "fails (Kafka's default is 120000; shorter keeps runs brisk).", minimum=1)
    unclean_leader_election: bool = setting(False, "unclean.leader.election.enable.")
    # Kafka's feature name is eligible.leader.replicas.version (0 or 1); the run setting
    # is the on/off choice it makes.
    eligible_leader_replicas: bool = setting(
        False, "eligible.leader.replicas.version=1 (KIP-966): a broker that restarts "
        "without a clean shutdown leaves every ISR until it has caught up, and replicas "
        "that left an ISR below min.insync.replicas may still be elected.")
    replica_lag_time_max_ms: int = setting(
        30_000, "replica.lag.time.max.ms: a follower this far behind leaves the ISR.",
        minimum=1)
    flush: str = setting(
        "never", "fsync policy: every (log.flush.interval.messages=1), N ms "
        "(log.flush.interval.ms=N) or never (Kafka's default).", check=_check_flush)
    torn_writes: bool = setting(
        True, "On a power loss the file written last keeps a random part of its "
        "un-fsynced bytes, as a disk that flushed some of its sectors (a torn write) "
        "(sim and process targets).")
    commit: CommitStrategy = setting(
        "after", "Group workload: commit before processing (at-most-once), after "
        "(at-least-once) or auto (enable.auto.commit).", choices=COMMIT_STRATEGIES)
    isolation_level: IsolationLevel = setting(
        "read_uncommitted", "Consumers' isolation.level: read_committed never returns records "
        "of aborted or still-open transactions. The final reads of txn and exactly-once "
        "always read committed.", choices=ISOLATION_LEVELS)
    transactional: bool = setting(
        False, "Producers use transactions (txn and exactly-once always do; with queue each "
        "send is its own transaction).", default_text="true for txn and exactly-once",
        derive=lambda v: v["workload"] in TXN_WORKLOADS)
    eos_offsets_outside_txn: bool = setting(
        False, "Planted weakness for checking the checker (exactly-once): commit the input "
        "offsets with a plain consumer commit after the transaction instead of inside it, "
        "so a member that crashes in between is re-processed (eos-duplicate).")
    accept_tradeoffs: bool = setting(
        False, "Anomalies a documented trade-off of this configuration explains (flush "
        "never + power loss, acks=0/1 leader loss, unclean election, commit before, "
        "idempotence off) do not fail the run; unexplained ones still do.")
    allow: tuple[str, ...] = setting(
        (), "Anomaly type that does not invalidate the verdict (repeatable).",
        metavar="TYPE", check=_check_allow)
    bootstrap_servers: str | None = setting(
        None, "--target external: host:port[,host:port...].")
    fault_cmds: dict[str, str] = setting(
        {}, "--target external: shell command for kill, restart, pause or resume; {node} "
        "becomes the node's host:port (repeatable).", name="fault-cmd",
        metavar="ACTION=CMD")
    bugs: tuple[str, ...] = setting(
        (), "Plant this bug of the reference broker's catalogue (repeatable; `faultline "
        "bugs` lists them): the sim and process brokers run with it, so a campaign can show "
        "that its faults find it.", name="bug", metavar="NAME", check=_check_bugs)

    @classmethod
    def build(cls, given: Mapping[str, Any]) -> RunConfig:
        """A validated config from the settings a person gave (by setting name, as text
        or typed values); the others take their derived or declared defaults."""
        config = cls(**resolve(SETTINGS, given))
        config.validate()
        return config

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

    @property
    def client_names(self) -> list[str]:
        """Client hosts c1..cK, one per concurrent client process (fault targets)."""
        return [f"c{i}" for i in range(1, self.concurrency + 1)]

    def fault_schedule(self) -> Schedule | None:
        """The --schedule this run follows, or None when it generates its own."""
        return None if self.schedule is None else read_schedule(self.schedule)

    def broker_settings(self) -> dict[str, object]:
        """Kafka broker settings for the faultline brokers this run starts."""
        settings: dict[str, object] = {
            "num.partitions": self.partitions,
            "default.replication.factor": self.replication_factor,
            "min.insync.replicas": self.min_insync_replicas,
            "unclean.leader.election.enable": self.unclean_leader_election,
            "eligible.leader.replicas.version": 1 if self.eligible_leader_replicas else 0,
            "replica.lag.time.max.ms": self.replica_lag_time_max_ms,
            # As Jepsen's Kafka test does: the 3 s default only delays every run's first join.
            "group.initial.rebalance.delay.ms": 0,
        }
        # Kafka's transaction log wants 3 replicas, 2 in sync: fewer nodes could never
        # serve InitProducerId, so the transaction state log fits the cluster.
        settings["transaction.state.log.replication.factor"] = min(3, self.nodes)
        settings["transaction.state.log.min.isr"] = min(2, self.nodes)
        settings.update(flush_settings(self.flush))
        if self.bugs:
            settings[reference_bugs.CONFIG_KEY] = ",".join(self.bugs)
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
        data["bugs"] = list(self.bugs)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunConfig:
        """Rebuild a config written by `to_json`; unknown keys are a ConfigError."""
        by_attr = {s.attr: s for s in SETTINGS.values()}
        # Runs recorded before the setting existed ran without torn writes: replay them so.
        data = {"torn_writes": False, **data}
        unknown = sorted(set(data) - set(by_attr))
        if unknown:
            raise ConfigError(f"results.json has unknown run settings {unknown}")
        values = {by_attr[attr].name: value for attr, value in data.items()}
        # Every recorded setting is given, so nothing is derived (or drawn at random).
        missing = {s.name: s.default for s in SETTINGS.values() if s.name not in values}
        return cls.build({**missing, **values})

    def with_schedule(self, path: str) -> RunConfig:
        """This configuration following the schedule in file `path`: its packages, time
        limit and recovery come from that file."""
        taken = {"schedule", *SCHEDULE_SETS}
        given = {s.name: getattr(self, s.attr) for s in SETTINGS.values() if s.name not in taken}
        return RunConfig.build({**given, "schedule": path})

    def command(self) -> str:
        """The `faultline run` command line that runs this configuration again."""
        return command_line(SETTINGS, self, always=("seed",))

    # -- validation ------------------------------------------------------------------

    def validate(self) -> None:
        """Raise ConfigError naming the first setting that cannot work."""
        for s in SETTINGS.values():
            s.check(getattr(self, s.attr))
        packages = self.packages
        self._check_transactions()
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
        if self.schedule is not None:
            self._check_schedule_fits(read_schedule(self.schedule))
        for key in self.fault_cmds:
            if key not in FAULT_COMMANDS:
                raise ConfigError(f"--fault-cmd must name one of {', '.join(FAULT_COMMANDS)}, "
                                  f"not {key!r}")
        if self.bugs and self.target not in ("sim", "process"):
            raise ConfigError(f"--bug plants a bug in faultline's reference broker, which "
                              f"--target {self.target} does not run: use --target sim or "
                              "process")
        if self.target == "tansu" and self.nodes != 1:
            raise ConfigError("--target tansu runs exactly one node: use --nodes 1")


    def _check_transactions(self) -> None:
        """Raise ConfigError for a transactional run that cannot work."""
        if self.workload in TXN_WORKLOADS and not self.transactional:
            raise ConfigError(f"--workload {self.workload} is made of transactions: drop "
                              "--no-transactional")
        if self.transactional and self.workload not in ("queue", *TXN_WORKLOADS):
            raise ConfigError(f"--transactional is for the queue, txn and exactly-once "
                              f"workloads; --workload {self.workload} sends outside "
                              "transactions")
        if self.eos_offsets_outside_txn and self.workload != "exactly-once":
            raise ConfigError("--eos-offsets-outside-txn is for --workload exactly-once only")
        if not self.transactional:
            return
        if self.client == "kafka-python":
            raise ConfigError("--client kafka-python has no transactional session in faultline: "
                              "use --client confluent-kafka or faultline")
        if not self.enable_idempotence:
            raise ConfigError("a transactional producer is idempotent: drop "
                              "--no-enable-idempotence (and keep --acks all)")

    def _check_schedule_fits(self, schedule: Schedule) -> None:
        """Raise ConfigError unless the schedule's timing, packages, nodes and clients are
        this run's."""
        where = f"--schedule {self.schedule}"
        if round(self.time_limit_s * 1000) != schedule.duration_ms:
            raise ConfigError(f"{where} heals everything at {schedule.duration_ms / 1000:g} s, "
                              f"but --time-limit is {self.time_limit_s:g}: drop --time-limit")
        if round(self.recovery_s * 1000) != schedule.recovery_ms:
            raise ConfigError(f"{where} recovers for {schedule.recovery_ms / 1000:g} s, but "
                              f"--recovery is {self.recovery_s:g}: drop --recovery")
        runs = ",".join(schedule.fault_packages()) or "none"
        if self.packages != nemesis_packages.parse(runs):
            raise ConfigError(f"{where} injects {runs}, not --nemesis {self.nemesis}: drop "
                              "--nemesis")
        if self.target in ("sim", "process"):
            foreign = sorted(set(schedule.nodes) - set(self.node_names))
            if foreign:
                raise ConfigError(f"{where} names nodes {foreign}, but this run's are "
                                  f"{', '.join(self.node_names)} (--nodes {self.nodes})")
        if self.target == "sim":
            foreign = sorted(set(schedule.clients) - set(self.client_names))
            if foreign:
                raise ConfigError(f"{where} names clients {foreign}, but this run's are "
                                  f"{', '.join(self.client_names)} "
                                  f"(--concurrency {self.concurrency})")


def _has_fault_cmds(cmds: dict[str, str], package: str) -> bool:
    pairs = {"kill": ("kill", "restart"), "pause": ("pause", "resume")}
    return all(name in cmds for name in pairs[package])


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


SETTINGS = settings_of(RunConfig)


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
