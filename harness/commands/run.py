"""`faultline run`: a cluster under faults, a workload recording a history, the verdict.

    faultline run                                   # sim, 3 brokers, queue, mixed faults, 60 s
    faultline run --nemesis kill,partition --seed 7 --flush every
    faultline run --target process --client kafka-python --time-limit 20
    faultline run --check-determinism               # sim: run twice, compare histories

Writes `results/<run-id>/` (history.jsonl, results.json, nemesis.json, report.html,
nodes/) and regenerates `results/index.html`. Exit 0 valid, 1 anomalies (or unknown),
2 setup error.
"""

from __future__ import annotations

import hashlib
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from nemesis import packages as nemesis_packages

if TYPE_CHECKING:
    from harness.run_config import RunConfig
    from harness.runner import RunOutcome

EXIT_VALID = 0
EXIT_ANOMALIES = 1
EXIT_SETUP = 2


def _fault_cmd(
    ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> dict[str, str]:
    cmds: dict[str, str] = {}
    for value in values:
        name, sep, cmd = value.partition("=")
        if not sep or not cmd.strip():
            raise click.BadParameter(f"expected ACTION='shell command', got {value!r}")
        cmds[name.strip()] = cmd
    return cmds


def run_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The options `run` shares with anything that builds a RunConfig."""
    options = [
        click.option("--target", type=click.Choice(["sim", "process", "tansu", "external"]),
                     default="sim", show_default=True,
                     help="Where the cluster runs: simulated, broker processes, one Tansu "
                          "broker, or any Kafka-compatible cluster (--bootstrap-servers)."),
        click.option("--client", type=click.Choice(["faultline", "kafka-python",
                                                    "confluent-kafka"]),
                     default="faultline", show_default=True,
                     help="Client library the workload drives (third-party ones need a "
                          "real-socket target)."),
        click.option("--workload", default="queue", show_default=True,
                     help="queue, keyed-order or group."),
        click.option("--nemesis", default="mixed", show_default=True,
                     help="Comma-separated fault packages:\n\n\b\n"
                          + nemesis_packages.describe()),
        click.option("--nemesis-interval", type=click.FloatRange(min=0.01), default=5.0,
                     show_default=True, help="Mean seconds between fault actions."),
        click.option("--time-limit", type=click.FloatRange(min=0.1), default=60.0,
                     show_default=True,
                     help="Seconds of workload under faults (simulated on --target sim)."),
        click.option("--recovery", type=click.FloatRange(min=0), default=10.0,
                     show_default=True, help="Quiet seconds after the final heal."),
        click.option("--final-read", type=click.FloatRange(min=0.1), default=30.0,
                     show_default=True, help="Seconds the final read may take at most."),
        click.option("--rate", type=click.FloatRange(min=0.01), default=50.0,
                     show_default=True, help="Target client operations per second."),
        click.option("--concurrency", type=click.IntRange(min=1), default=6,
                     show_default=True, help="Client processes alive at once."),
        click.option("--crash-probability", type=click.FloatRange(0, 1), default=0.01,
                     show_default=True,
                     help="Chance per operation that a client crashes (info, replaced)."),
        click.option("--seed", type=int, default=None,
                     help="Seed of every random choice [default: random, printed]."),
        click.option("--nodes", type=click.IntRange(min=1), default=None,
                     help="Brokers [default: 3; 1 for tansu]."),
        click.option("--partitions", type=click.IntRange(min=1), default=2,
                     show_default=True, help="Partitions per topic."),
        click.option("--acks", type=click.Choice(["0", "1", "all"]), default="all",
                     show_default=True, help="Producer acks."),
        click.option("--enable-idempotence/--no-enable-idempotence", default=True,
                     show_default=True, help="Producer enable.idempotence."),
        click.option("--min-insync-replicas", type=click.IntRange(min=1), default=None,
                     help="min.insync.replicas of the topics [default: 2, at most the "
                          "replication factor]."),
        click.option("--replication-factor", type=click.IntRange(min=1), default=None,
                     help="Replication factor of the topics; above 1 the sim and process "
                          "brokers form one KRaft cluster [default: 3, at most --nodes]."),
        click.option("--unclean-leader-election/--no-unclean-leader-election", default=False,
                     show_default=True, help="unclean.leader.election.enable."),
        click.option("--flush", default="never", show_default=True,
                     help="fsync policy: every (log.flush.interval.messages=1), N ms "
                          "(log.flush.interval.ms=N) or never (Kafka's default)."),
        click.option("--commit", type=click.Choice(["before", "after", "auto"]),
                     default="after", show_default=True,
                     help="Group workload: commit before processing (at-most-once), after "
                          "(at-least-once) or auto (enable.auto.commit)."),
        click.option("--allow", multiple=True, metavar="TYPE",
                     help="Anomaly type that does not invalidate the verdict (repeatable)."),
        click.option("--bootstrap-servers", default=None,
                     help="--target external: host:port[,host:port...]."),
        click.option("--fault-cmd", "fault_cmd", multiple=True, callback=_fault_cmd,
                     metavar="ACTION=CMD",
                     help="--target external: shell command for kill, restart, pause or "
                          "resume; {node} becomes the node's host:port (repeatable)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def config_from_options(options: dict[str, Any]) -> RunConfig:
    """A validated RunConfig from `run`'s keyword options; ConfigError if it cannot run."""
    from harness.run_config import RunConfig

    target = options["target"]
    nodes = options["nodes"] or (1 if target == "tansu" else 3)
    replication_factor = options["replication_factor"] or min(RunConfig.replication_factor, nodes)
    min_insync_replicas = options["min_insync_replicas"] or min(
        RunConfig.min_insync_replicas, replication_factor
    )
    seed = options["seed"]
    if seed is None:
        # The one unseeded choice, made here and printed, so the run itself is seeded.
        seed = random.SystemRandom().randrange(1_000_000)
    config = RunConfig(
        target=target,
        client=options["client"],
        workload=options["workload"],
        nemesis=options["nemesis"],
        nemesis_interval_s=options["nemesis_interval"],
        time_limit_s=options["time_limit"],
        recovery_s=options["recovery"],
        final_read_s=options["final_read"],
        rate=options["rate"],
        concurrency=options["concurrency"],
        crash_probability=options["crash_probability"],
        seed=seed,
        nodes=nodes,
        partitions=options["partitions"],
        acks=options["acks"],
        enable_idempotence=options["enable_idempotence"],
        min_insync_replicas=min_insync_replicas,
        replication_factor=replication_factor,
        unclean_leader_election=options["unclean_leader_election"],
        flush=options["flush"],
        commit=options["commit"],
        allow=tuple(options["allow"]),
        bootstrap_servers=options["bootstrap_servers"],
        fault_cmds=options["fault_cmd"],
    )
    config.validate()
    return config


def summary_lines(outcome: RunOutcome) -> list[str]:
    """The closing table of a run: verdict table, where the results are, timings."""
    from harness.commands.check import summary_table

    lines = [summary_table(dict(outcome.verdict))]
    clock = "simulated " if outcome.config.target == "sim" else ""
    lines.append(f"run:    {outcome.run_dir}")
    lines.append(f"report: {outcome.run_dir / 'report.html'}")
    lines.append(f"seed {outcome.config.seed}; {outcome.run_seconds:.1f} {clock}s in "
                 f"{outcome.wall_seconds:.1f} s wall time")
    return lines


@click.command("run")
@run_options
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              default=Path("results"), show_default=True,
              help="Folder that receives results/<run-id>/.")
@click.option("--check-determinism", is_flag=True,
              help="Sim only: run a second time with the same seed and name the first "
                   "diverging history event (exit 1 if they differ).")
def run(out: Path, check_determinism: bool, **options: Any) -> None:
    """Run a cluster under faults with a workload, check the history, write a report."""
    from harness.run_config import ConfigError
    from harness.runner import RunSetupError, first_divergence, replay_history
    from harness.runner import run as run_once

    try:
        config = config_from_options(options)
        if check_determinism and config.target != "sim":
            raise ConfigError("--check-determinism needs --target sim (real targets run in "
                              "real time and cannot repeat exactly)")
        click.echo(f"faultline run: seed {config.seed}, target {config.target}, "
                   f"workload {config.workload}, nemesis {config.nemesis}, "
                   f"{config.time_limit_s:g} s")
        outcome = run_once(config, out, progress=sys.stderr)
    except (ConfigError, RunSetupError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_SETUP)
    for line in summary_lines(outcome):
        click.echo(line)
    code = outcome.exit_code
    if check_determinism:
        started = time.monotonic()
        first = (outcome.run_dir / "history.jsonl").read_bytes()
        with tempfile.TemporaryDirectory(prefix="faultline-determinism-") as scratch:
            again = replay_history(outcome.config, Path(scratch), progress=sys.stderr)
        code = max(code, report_determinism(first, again, first_divergence))
        click.echo(f"(second run: {time.monotonic() - started:.1f} s wall time)")
    sys.exit(code)


def report_determinism(
    first: bytes,
    second: bytes,
    divergence_of: Callable[[bytes, bytes], tuple[int, str, str] | None],
) -> int:
    """Print whether two histories are identical or where they diverge; exit code."""
    divergence = divergence_of(first, second)
    if divergence is None:
        click.echo(f"determinism: identical ({len(first.splitlines())} events, sha256 "
                   f"{hashlib.sha256(second).hexdigest()})")
        return EXIT_VALID
    number, a, b = divergence
    click.echo(f"determinism: the runs diverge at line {number} of history.jsonl "
               f"(event index {number - 1})")
    click.echo(f"  run 1: {a}")
    click.echo(f"  run 2: {b}")
    return EXIT_ANOMALIES
