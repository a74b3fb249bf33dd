"""The runner: target + workload + nemesis schedule + checker -> `results/<run-id>/`.

One run, in order (DESIGN.md §6, Jepsen's test lifecycle):

1. start the target (sim: inside one seeded `trio.run` on a MockClock);
2. `workload.setup` creates the topics;
3. main phase: `workload.run` for `time_limit`, while the nemesis executor applies the
   generated schedule's ops at their times;
4. `Executor.heal_everything` at `time_limit`, while the workload goes on for
   `recovery_s` more, so the history shows how long the cluster took to serve again;
5. `workload.final_reads` until caught up or `final_read_s`;
6. check `history.jsonl` with the workload's checker mode plus `--allow`; in the sim,
   also check the history against ground truth (`harness.oracle`: no send recorded
   `fail` may be in any replica's log, else the run has harness errors, exit 4);
   measure availability under faults and the time to recover (`harness.availability`),
   write `results.json`, `nemesis.json`, node logs, `report.html`, `results/index.html`.

Every event, workload and nemesis, goes through one `CountingWriter`, which also feeds
the live progress line. Nothing in steps 2-5 reads the wall clock in the sim.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import trio

from checkers.verdict import Verdict, check_file
from harness import exit_codes
from harness.availability import Availability, measure_availability
from harness.broker_warnings import scan as scan_broker_warnings
from harness.coverage import read_coverage
from harness.explanations import CLUSTER_TIMELINE, attribute, cause_lines, separate
from harness.fault_timers import fault_timers
from harness.oracle import GroundTruth, HarnessError, check_failed_sends
from harness.progress import CountingWriter, RunCounters, show_progress
from harness.run_config import ConfigError, RunConfig
from harness.targets import CLUSTER_HOME, REPLICATED_TOPICS, Session
from nemesis import Executor, Schedule, generate
from workloads.adapters import ProducerSettings
from workloads.base import Workload, WorkloadOptions, WorkloadSetupError
from workloads.recorder import HistoryRecorder
from workloads.registry import COORDINATED

# Evidence items kept per anomaly type for a run (the summary shows the first).
ATTRIBUTION_EVIDENCE = 5000

# How long past `until` the workload may take to wind its processes down.
WIND_DOWN_S = 30.0


class RunSetupError(RuntimeError):
    """The run could not start (bad config, target unreachable); the message says why."""


class RunStalled(RuntimeError):
    """The run could not finish: its simulation stood still (a livelock); nothing was
    checked. The message says where, and the seed reproduces it."""


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped the run; its folder was finished with verdict "interrupted" and
    the history recorded so far was checked (`results.json`). Still a KeyboardInterrupt,
    so a campaign or shrink that catches Ctrl-C stops as before."""

    def __init__(self, run_dir: Path, events: int) -> None:
        super().__init__(f"interrupted: the run stopped after {events} history events; "
                         f"what was recorded is checked in {run_dir}")
        self.run_dir = run_dir
        self.events = events


def is_interrupt(exc: BaseException) -> bool:
    """Whether `exc` is Ctrl-C: a KeyboardInterrupt, bare or inside the exception
    group a trio nursery wraps it in."""
    if isinstance(exc, KeyboardInterrupt):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return exc.subgroup(lambda e: isinstance(e, KeyboardInterrupt)) is not None
    return False


@dataclass
class RunOutcome:
    """What a finished run produced."""

    run_dir: Path
    config: RunConfig
    verdict: Verdict
    exit_code: int
    wall_seconds: float
    run_seconds: float  # trio time: simulated seconds in the sim
    events: int
    history_sha256: str
    availability: Availability
    # Sends recorded `fail` that a broker appended (sim only; see `harness.oracle`).
    harness_errors: list[HarnessError]
    # Whether the ground-truth oracle ran (the sim) or could not (real targets).
    oracle_checked: bool
    # The likely cause of each anomaly type, as the console prints them.
    causes: list[str] = field(default_factory=list)
    # The run's verdict: the checker's, or with --accept-tradeoffs only unexplained ones.
    valid: bool | str = True
    # results.json's `explanations` section (`harness.explanations.separate`).
    explanations: dict[str, Any] = field(default_factory=dict)
    # The summary's line on the warnings brokers logged into nodes/ (None: none).
    broker_warnings: str | None = None


@dataclass(frozen=True)
class Executed:
    """What `execute` ran: the schedule, the trio seconds it took, and in the sim the
    ground truth of what every broker appended (None for real targets)."""

    schedule: Schedule
    seconds: float
    ground_truth: GroundTruth | None


def load_workload(name: str) -> Workload:
    """The registered workload called `name`; ConfigError listing the known ones."""
    registry = workload_registry()
    factory = registry.get(name)
    if factory is None:
        raise ConfigError(f"--workload must be one of {', '.join(sorted(registry))}, not {name!r}")
    return factory()


def workload_registry() -> dict[str, Callable[[], Workload]]:
    """Name -> factory of every workload (from `workloads.registry`)."""
    from workloads.registry import WORKLOADS

    return dict(WORKLOADS)


def workload_options(config: RunConfig, topics: tuple[str, ...]) -> WorkloadOptions:
    """The workload's knobs from the run config."""
    return WorkloadOptions(
        topics=topics,
        partitions=config.partitions,
        replication_factor=config.replication_factor,
        min_insync_replicas=config.min_insync_replicas,
        producer=ProducerSettings(
            acks=config.acks,
            enable_idempotence=config.enable_idempotence,
            delivery_timeout_ms=config.delivery_timeout_ms,
        ),
        commit=config.commit,
        rate=config.rate,
        concurrency=config.concurrency,
        crash_probability=config.crash_probability,
        isolation_level=config.isolation_level,
        transactional=config.transactional,
        eos_offsets_outside_txn=config.eos_offsets_outside_txn,
    )


def make_schedule(config: RunConfig, session: Session, topics: tuple[str, ...]) -> Schedule:
    """The nemesis schedule for this run, generated from its packages and seed."""
    return generate_for(config, nodes=list(session.fault_target.nodes),
                        clients=list(session.fault_target.clients), topics=topics)


def generate_for(config: RunConfig, *, nodes: list[str], clients: list[str],
                 topics: Sequence[str], seed: int | None = None) -> Schedule:
    """The generated schedule of `config` (with `seed` instead of its own, if given) for a
    cluster of `nodes` and `clients` serving `topics`."""
    return generate(
        config.nemesis,
        nodes=nodes,
        clients=clients,
        duration_ms=round(config.time_limit_s * 1000),
        interval_ms=max(1, round(config.nemesis_interval_s * 1000)),
        recovery_ms=round(config.recovery_s * 1000),
        seed=config.seed if seed is None else seed,
        logs=[f"{t}/{p}" for t in topics for p in range(config.partitions)],
        timers=fault_timers(config),
        groups=COORDINATED[config.workload].groups,
        transactional_ids=COORDINATED[config.workload].transactional_ids,
    )


async def drive(
    session: Session,
    config: RunConfig,
    workload: Workload,
    writer: CountingWriter,
    *,
    schedule: Schedule | None = None,
    on_schedule: Callable[[Schedule], None] | None = None,
    progress: IO[str] | None = None,
) -> Schedule:
    """Run setup, main phase under the schedule, heal, recovery and final reads.

    `schedule` replaces the generated one (known-answer tests build schedules by hand);
    `on_schedule` sees the schedule before it runs (the runner saves it).
    """
    counters = writer.counters
    origin = trio.current_time()
    recorder = HistoryRecorder(writer, lambda: round((trio.current_time() - origin) * 1e9))
    if session.start_timeline is not None:
        session.start_timeline(origin)
    topics = tuple(session.topic_homes)
    opts = workload_options(config, topics)
    env = session.env
    async with trio.open_nursery() as outer:
        outer.start_soon(_progress, counters, origin, session.simulated, progress)
        counters.phase = "setup"
        await workload.setup(env, opts)
        if schedule is None:
            schedule = config.fault_schedule() or make_schedule(config, session, topics)
        if on_schedule is not None:
            on_schedule(schedule)
        executor = Executor(session.fault_target, writer, origin=origin)
        start = trio.current_time()
        until = start + schedule.duration_ms / 1000
        recovered = until + schedule.recovery_ms / 1000
        counters.phase = "workload"
        async with trio.open_nursery() as main:
            # The workload runs through the recovery period: the time the cluster takes
            # to serve again after the final heal is part of what a run measures.
            main.start_soon(_workload_main, workload, env, opts, recorder, recovered)
            async with trio.open_nursery() as strobes:
                await _apply_ops(executor, schedule, start, strobes)
                await trio.sleep_until(until)
                counters.phase = "heal"
                await executor.heal_everything()
            counters.phase = "recovery"
        counters.phase = "final-reads"
        deadline = trio.current_time() + config.final_read_s
        with trio.move_on_at(deadline + WIND_DOWN_S):
            await workload.final_reads(env, opts, recorder, deadline)
        counters.phase = "done"
        outer.cancel_scope.cancel()
    return schedule


async def _progress(counters: RunCounters, origin: float, simulated: bool,
                    stream: IO[str] | None) -> None:
    await show_progress(counters, origin=origin, simulated=simulated, stream=stream)


async def _workload_main(workload: Workload, env: Any, opts: WorkloadOptions,
                         recorder: HistoryRecorder, until: float) -> None:
    # A workload that does not stop by itself is stopped: the schedule goes on regardless.
    with trio.move_on_at(until + WIND_DOWN_S):
        await workload.run(env, opts, recorder, until)


async def _apply_ops(executor: Executor, schedule: Schedule, start: float,
                     strobes: trio.Nursery) -> None:
    for op in schedule.ops:
        await trio.sleep_until(start + op.at_ms / 1000)
        await executor.apply(op, strobes)


# -- one whole run --------------------------------------------------------------------


def execute(
    config: RunConfig,
    run_dir: Path,
    *,
    schedule: Schedule | None = None,
    progress: IO[str] | None = None,
    workload: Workload | None = None,
) -> Executed:
    """Run the target and workload, writing `history.jsonl`, `nemesis.json` and node logs
    into `run_dir`. Returns the schedule that ran, the trio seconds the run took and (sim)
    the ground truth of the brokers' appends.

    Raises RunSetupError when the target cannot start.
    """
    from harness.targets import TargetSetupError

    workload = workload or load_workload(config.workload)
    counters = RunCounters()
    history_path = run_dir / "history.jsonl"

    def save_schedule(s: Schedule) -> None:
        (run_dir / "nemesis.json").write_bytes(s.to_json() + b"\n")

    with open(history_path, "wb") as stream:
        writer = CountingWriter(stream, counters)
        try:
            if config.target == "sim":
                return _execute_sim(config, run_dir, workload, writer, schedule,
                                    save_schedule, progress)
            ran, seconds = _execute_real(config, run_dir, workload, writer, schedule,
                                         save_schedule, progress)
            return Executed(ran, seconds, None)
        except TargetSetupError as exc:
            raise RunSetupError(str(exc)) from None
        except ExceptionGroup as group:
            # A workload that cannot prepare the cluster fails inside the run's nurseries.
            setup, rest = group.split(WorkloadSetupError)
            if setup is None or rest is not None:
                raise
            raise RunSetupError(str(_first_leaf(setup))) from None


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first exception of a (nested) group that is not itself a group."""
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first


def _execute_sim(config: RunConfig, run_dir: Path, workload: Workload, writer: CountingWriter,
                 schedule: Schedule | None, save: Callable[[Schedule], None],
                 progress: IO[str] | None) -> Executed:
    from harness.runtime.sim.cluster import SimCluster
    from harness.runtime.sim.cluster_view import ClusterRecorder
    from harness.runtime.sim.disk import SimDisk
    from harness.runtime.sim.errors import SimStalled
    from harness.runtime.sim.node_logs import node_log_files
    from harness.runtime.sim.run import run_sim
    from harness.targets import sim_session, sim_settings

    # The nodes' disks outlive the cluster: read after teardown, their journals hold
    # every append up to the very end (followers may still have been catching up).
    disks: dict[str, SimDisk] = {}

    async def scenario(cluster: SimCluster) -> Schedule:
        disks.update((name, cluster.node(name).disk) for name in cluster.nodes)
        session = sim_session(cluster, config)
        with open(run_dir / CLUSTER_TIMELINE, "w", encoding="utf-8") as timeline:
            # The same origin as the history's times: `drive` takes it at once, with no
            # checkpoint in between.
            recorder = ClusterRecorder(cluster, timeline, origin=trio.current_time())
            writer.after_event = recorder.sample
            try:
                ran = await drive(session, config, workload, writer, schedule=schedule,
                                  on_schedule=save, progress=progress)
            finally:
                writer.after_event = None
        _write_sim_node_logs(cluster, run_dir)
        return ran

    try:
        with node_log_files(run_dir / "nodes"):
            result = run_sim(scenario, config.seed, sim_settings(config))
    except SimStalled as exc:
        raise RunStalled(f"{exc}; the history so far is in {run_dir / 'history.jsonl'} "
                         f"and the brokers' logs in {run_dir / 'nodes'}") from None
    return Executed(result.value, result.virtual_seconds, GroundTruth.from_disks(disks))


def _write_sim_node_logs(cluster: Any, run_dir: Path) -> None:
    """A short per-node summary at the end of each node's log: incarnations, state and
    disk at the end of the run."""
    nodes_dir = run_dir / "nodes"
    nodes_dir.mkdir(exist_ok=True)
    for name in cluster.nodes:
        node = cluster.node(name)
        lines = [
            f"node {name} (id {node.node_id}), simulated",
            f"incarnations: {node.incarnation} (1 = never restarted)",
            f"up at the end: {node.up}",
            f"clock skew at the end: {node.clock.skew_ms} ms",
            f"topics hosted: {sorted(t for t, n in cluster.topic_homes.items() if n == name)}",
        ]
        describe = getattr(node.disk, "describe", None)
        if callable(describe):
            lines.append(f"disk: {describe()}")
        with open(nodes_dir / f"{name}.log", "a", encoding="utf-8") as log:
            log.write("-- at the end of the run --\n" + "\n".join(lines) + "\n")


def _execute_real(config: RunConfig, run_dir: Path, workload: Workload, writer: CountingWriter,
                  schedule: Schedule | None, save: Callable[[Schedule], None],
                  progress: IO[str] | None) -> tuple[Schedule, float]:
    from harness.targets import open_real_target

    async def main() -> tuple[Schedule, float]:
        start = trio.current_time()
        async with open_real_target(config, run_dir) as session:
            ran = await drive(session, config, workload, writer, schedule=schedule,
                              on_schedule=save, progress=progress)
        return ran, trio.current_time() - start

    return trio.run(main)


def run(
    config: RunConfig,
    out: Path,
    *,
    run_dir: Path | None = None,
    schedule: Schedule | None = None,
    progress: IO[str] | None = None,
    workload: Workload | None = None,
    index: bool = True,
) -> RunOutcome:
    """One complete run: execute, check, write results, report and (unless `index` is
    False, as in a campaign that renders it once at the end) the index of `out`."""
    from harness.run_config import new_run_dir

    config.validate()
    if workload is None:
        workload = load_workload(config.workload)
    run_dir = run_dir or new_run_dir(out, config)
    wall_start = time.monotonic()
    try:
        executed = execute(config, run_dir, schedule=schedule, progress=progress,
                           workload=workload)
    except BaseException as exc:
        if not is_interrupt(exc):
            raise
        events = conclude_interrupted(config, run_dir, workload, wall_start=wall_start,
                                      index=index)
        raise RunInterrupted(run_dir, events) from None
    return conclude(config, run_dir, executed, workload, wall_start=wall_start, index=index)


def conclude(
    config: RunConfig,
    run_dir: Path,
    executed: Executed,
    workload: Workload,
    *,
    wall_start: float,
    index: bool = True,
) -> RunOutcome:
    """Check the history `execute` wrote into `run_dir` (the checker, and in the sim the
    ground-truth oracle) and write results.json, the report and the index."""
    from harness.report import render_index, write_report

    ran, seconds = executed.schedule, executed.seconds
    if config.schedule is not None:
        # The run's own copy of the schedule it followed: the reproduce command and a
        # replay still work when the given file changes or goes.
        config = config.with_schedule(str((run_dir / "nemesis.json").resolve()))
    history_path = run_dir / "history.jsonl"
    # Attribution needs every instance's evidence to call a type explained.
    verdict = check_file(str(history_path), mode=workload.checker_mode, allow=config.allow,
                         max_evidence=ATTRIBUTION_EVIDENCE)
    truth = executed.ground_truth
    harness_errors = [] if truth is None else check_failed_sends(str(history_path), truth)
    explanations = separate(verdict, attribute(run_dir, verdict, config, truth),
                            accept_tradeoffs=config.accept_tradeoffs)
    wall = time.monotonic() - wall_start
    digest = hashlib.sha256(history_path.read_bytes()).hexdigest()
    exit_code = exit_codes.for_verdict(explanations["valid"],
                                       harness_errors=len(harness_errors))
    availability = measure_availability(history_path)
    warnings = scan_broker_warnings(run_dir / "nodes")
    coverage = read_coverage(run_dir)
    results = {
        "run_id": run_dir.name,
        "valid": explanations["valid"],
        "exit_code": exit_code,
        # The system's verdict is `valid`; this one is faultline's own (harness.oracle).
        "harness_verdict": _harness_verdict(truth, harness_errors),
        "harness_errors": [e.to_json() for e in harness_errors],
        "config": config.to_json(),
        "seed": config.seed,
        "checker_mode": workload.checker_mode,
        "topology": {
            "topics": _topic_homes(config),
            "note": (
                f"one KRaft cluster of {config.nodes} brokers, replication factor "
                f"{config.replication_factor}, min.insync.replicas {config.min_insync_replicas}"
                if config.replicated
                else "replication factor 1: each topic lives alone on one broker"
            ),
        },
        "schedule": {"ops": len(ran.ops), "file": "nemesis.json"},
        "timing": {
            "wall_seconds": round(wall, 3),
            "run_seconds": round(seconds, 3),
            "clock": "simulated" if config.target == "sim" else "real",
        },
        "history": {"file": "history.jsonl", "sha256": digest,
                    "events": verdict["stats"]["events"]},
        "availability": availability.to_json(),
        "broker_warnings": warnings.to_json(),
        "reproduce": config.command(),
        "verdict": verdict,
        "explanations": explanations,
        "coverage": coverage.to_json(),
    }
    (run_dir / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    write_report(run_dir)
    if index:
        render_index(run_dir.parent)
    return RunOutcome(run_dir, config, verdict, exit_code, wall, seconds,
                      verdict["stats"]["events"], digest, availability, harness_errors,
                      truth is not None, cause_lines(explanations), explanations["valid"],
                      explanations, warnings.console_line())


def conclude_interrupted(config: RunConfig, run_dir: Path, workload: Workload, *,
                         wall_start: float, index: bool = True) -> int:
    """Finish the folder of a run that Ctrl-C stopped: check the history recorded so far
    and write results.json with `valid` "interrupted" (exit 130), the report and the
    index, so `faultline report` and the index still read it. Returns the events checked.

    The partial verdict is kept under `verdict` for a person to read; it proves nothing
    about the run, which never reached its final reads.
    """
    from harness.report import render_index, write_report

    history_path = run_dir / "history.jsonl"
    verdict: Verdict | None = None
    note = "stopped by Ctrl-C before the final reads; the verdict covers what was recorded"
    try:
        verdict = check_file(str(history_path), mode=workload.checker_mode,
                             allow=config.allow, max_evidence=ATTRIBUTION_EVIDENCE)
    except (OSError, ValueError) as exc:  # HistoryError is a ValueError
        note = f"stopped by Ctrl-C; the history recorded so far could not be checked: {exc}"
    events = verdict["stats"]["events"] if verdict is not None else 0
    data = history_path.read_bytes() if history_path.is_file() else b""
    results = {
        "run_id": run_dir.name,
        "valid": "interrupted",
        "exit_code": exit_codes.INTERRUPTED,
        "interrupted": {"note": note, "checked_valid": None if verdict is None
                        else verdict["valid"]},
        "harness_verdict": {"checked": False, "verdict": "not checked",
                            "note": "the run was interrupted"},
        "harness_errors": [],
        "config": config.to_json(),
        "seed": config.seed,
        "checker_mode": workload.checker_mode,
        "topology": {"topics": _topic_homes(config), "note": "interrupted run"},
        "schedule": {"ops": 0, "file": "nemesis.json"},
        "timing": {
            "wall_seconds": round(time.monotonic() - wall_start, 3),
            "run_seconds": 0.0,
            "clock": "simulated" if config.target == "sim" else "real",
        },
        "history": {"file": "history.jsonl", "sha256": hashlib.sha256(data).hexdigest(),
                    "events": events},
        "availability": measure_availability(history_path).to_json()
        if verdict is not None else {},
        "broker_warnings": scan_broker_warnings(run_dir / "nodes").to_json(),
        "reproduce": config.command(),
        "verdict": verdict if verdict is not None else _empty_verdict(),
        "explanations": {},
    }
    (run_dir / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    if not (run_dir / "nemesis.json").is_file():
        # Interrupted during setup: the schedule was never generated.
        (run_dir / "nemesis.json").write_bytes(
            Schedule(nodes=list(config.node_names), duration_ms=0).to_json() + b"\n")
    write_report(run_dir)
    if index:
        render_index(run_dir.parent)
    return events


def _empty_verdict() -> dict[str, Any]:
    return {"valid": "unknown", "counts": {}, "anomalies": {}, "allowed": [], "notes": [],
            "stats": {"events": 0, "processes": 0, "logs": [],
                      "messages": {"sent": 0, "acknowledged": 0, "read": 0}}}


def _harness_verdict(truth: GroundTruth | None, errors: list[HarnessError]) -> dict[str, Any]:
    """results.json's word on faultline itself: checked against ground truth or not."""
    if truth is None:
        return {"checked": False, "verdict": "not checked",
                "note": "only the sim can see every broker's appends (ground truth)"}
    if errors:
        from harness.oracle import EXPLANATION, HEADLINE

        return {"checked": True, "verdict": HEADLINE, "count": len(errors),
                "note": EXPLANATION}
    note = "no send recorded `fail` is in any replica's log (everything ever appended)"
    if truth.unparsed_bytes:
        note += f"; {truth.unparsed_bytes} journal bytes were not whole batches and unread"
    return {"checked": True, "verdict": "ok", "note": note}


def reproduce_command(config: RunConfig, run_dir: Path) -> str:
    """The command that reproduces a run: `faultline replay` for a sim run (same seed,
    same schedule, byte-identical history), else the `faultline run` command line."""
    if config.target == "sim":
        return f"faultline replay {shlex.quote(str(run_dir))}"
    return config.command()


def _topic_homes(config: RunConfig) -> dict[str, str]:
    if config.replicated:
        return dict.fromkeys(REPLICATED_TOPICS, CLUSTER_HOME)
    if config.target in ("sim", "process"):
        return {f"t{n.removeprefix('n')}": n for n in config.node_names}
    if config.target == "tansu":
        return dict.fromkeys(("t1", "t2", "t3"), "n1")
    return {"<run-id>-t1..t3": config.bootstrap_servers or ""}


def replay_history(config: RunConfig, scratch: Path, *, schedule: Schedule | None = None,
                   progress: IO[str] | None = None) -> bytes:
    """Run `config` again (sim only, under `schedule` if given) into `scratch` and return
    the history bytes."""
    if config.target != "sim":
        raise ConfigError("only sim runs can be replayed: real targets depend on real time")
    scratch.mkdir(parents=True, exist_ok=True)
    execute(config, scratch, schedule=schedule, progress=progress)
    return (scratch / "history.jsonl").read_bytes()


def first_divergence(a: bytes, b: bytes) -> tuple[int, str, str] | None:
    """(1-based line number, line of a, line of b) where two histories first differ."""
    lines_a, lines_b = a.splitlines(), b.splitlines()
    for number, (la, lb) in enumerate(zip(lines_a, lines_b, strict=False), start=1):
        if la != lb:
            return number, la.decode(), lb.decode()
    if len(lines_a) != len(lines_b):
        number = min(len(lines_a), len(lines_b)) + 1
        tail_a = lines_a[number - 1].decode() if len(lines_a) >= number else "<end of history>"
        tail_b = lines_b[number - 1].decode() if len(lines_b) >= number else "<end of history>"
        return number, tail_a, tail_b
    return None
