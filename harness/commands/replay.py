"""`faultline replay RUN_DIR`: re-run a sim run from its recorded seed and configuration
and compare the new history with the recorded one, byte for byte.

`--schedule FILE` re-runs it under another fault schedule instead (same seed, workload
and cluster) and names the first event where the histories part.

Exit 0 when identical, 1 naming the first diverging event, 2 when RUN_DIR cannot be
replayed (not a sim run, missing or malformed results.json), 130 on Ctrl-C.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import click

from harness import exit_codes
from harness.commands.errors import bad_input


@click.command(
    "replay", epilog="Exit codes: 0 identical history, 1 the histories diverge, 2 not a "
    "sim run folder, 130 interrupted.")
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--keep", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Keep the replayed history in this folder [default: a temporary one].")
@click.option("--schedule", "schedule_file", type=click.Path(dir_okay=False), default=None,
              metavar="FILE", help="Replay under this fault schedule (nemesis.json format) "
              "instead of the one the run followed.")
def replay(run_dir: Path, keep: Path | None, schedule_file: str | None) -> None:
    """Re-run RUN_DIR's sim run and show whether the histories match."""
    from harness.commands.run import report_determinism
    from harness.run_config import ConfigError, RunConfig
    from harness.runner import first_divergence, replay_history
    from nemesis import Schedule, ScheduleError

    try:
        results = json.loads((run_dir / "results.json").read_text())
        settings = dict(results["config"])
        # The schedule as it ran (a hand-built one included), not regenerated; read from
        # this folder wherever it has moved since.
        schedule_path = run_dir / "nemesis.json"
        if settings.get("schedule") is not None:
            settings["schedule"] = str(schedule_path)
        config = RunConfig.from_json(settings)
        recorded = (run_dir / "history.jsonl").read_bytes()
        schedule = (Schedule.read(schedule_path) if schedule_path.is_file() else None)
        if schedule_file is not None:
            config, schedule = config.with_schedule(schedule_file), None
    except (OSError, KeyError, TypeError, json.JSONDecodeError, ConfigError,
            ScheduleError) as exc:
        bad_input(f"cannot replay {run_dir}: {exc}")
    if config.target != "sim":
        bad_input(f"{run_dir} ran on --target {config.target}; only sim runs replay "
                  "exactly (real targets run in real time)")
    under = f" under {schedule_file}" if schedule_file is not None else ""
    click.echo(f"replaying {run_dir.name}{under}: seed {config.seed}, "
               f"{len(recorded.splitlines())} recorded events")
    started = time.monotonic()
    try:
        if keep is not None:
            again = replay_history(config, keep, schedule=schedule, progress=sys.stderr)
        else:
            with tempfile.TemporaryDirectory(prefix="faultline-replay-") as scratch:
                again = replay_history(config, Path(scratch), schedule=schedule,
                                       progress=sys.stderr)
    except KeyboardInterrupt:
        click.echo("\ninterrupted: the replay was stopped before it finished", err=True)
        sys.exit(exit_codes.INTERRUPTED)
    code = report_determinism(recorded, again, first_divergence)
    click.echo(f"({time.monotonic() - started:.1f} s wall time)")
    sys.exit(code)
