"""`faultline sim`: run the simulated faults scenario, write history.jsonl, optionally twice.

With `--check-determinism` the scenario runs twice with the same seed and the two
histories are compared byte for byte; the first diverging event is printed with
its line number and both versions, which is where to start looking for a source of
nondeterminism (a wall-clock read, an unseeded rng, iteration over a set of objects).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import click

EXIT_OK = 0
EXIT_DIVERGED = 1


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


@click.command("sim")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of every random choice.")
@click.option(
    "--time-limit",
    type=click.FloatRange(min=0.1),
    default=20.0,
    show_default=True,
    help="Simulated seconds of workload under faults (a quiet recovery period follows).",
)
@click.option(
    "--check-determinism",
    is_flag=True,
    help="Run twice with the seed and report the first diverging event, or 'identical'.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Directory for history.jsonl [default: results/sim-seed<SEED>].",
)
@click.option("--no-faults", is_flag=True, help="Run the workload without the nemesis.")
def sim(
    seed: int, time_limit: float, check_determinism: bool, out: Path | None, no_faults: bool
) -> None:
    """Run 3 simulated brokers and trio clients under a fault rotation, deterministically."""
    from harness.runtime.sim.scenario import ScenarioOptions, run_faults_scenario

    out = out or Path("results") / f"sim-seed{seed}"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise click.ClickException(f"cannot create output directory {out}: {exc}") from None
    options = ScenarioOptions(duration_s=time_limit, faults=not no_faults)
    history, result = run_faults_scenario(seed, options)
    path = out / "history.jsonl"
    path.write_bytes(history)
    digest = hashlib.sha256(history).hexdigest()
    click.echo(
        f"seed {seed}: {len(history.splitlines())} events, {result.value} completed operations, "
        f"{result.virtual_seconds:.1f} simulated s"
    )
    click.echo(f"history: {path} (sha256 {digest})")
    if not check_determinism:
        return
    again, _ = run_faults_scenario(seed, options)
    divergence = first_divergence(history, again)
    if divergence is None:
        again_digest = hashlib.sha256(again).hexdigest()
        click.echo(f"determinism: identical (second run sha256 {again_digest})")
        return
    number, first, second = divergence
    click.echo(f"determinism: the runs diverge at line {number} of history.jsonl")
    click.echo(f"  run 1: {first}")
    click.echo(f"  run 2: {second}")
    raise SystemExit(EXIT_DIVERGED)
