"""One campaign run as a task: what a worker process (local or Dask) is given and returns.

The worker runs the ordinary runner into a scratch folder and sends the whole run
folder back as a gzipped tar inside a `RunRecord`, with the figures the campaign
aggregates; the campaign unpacks it under its own `runs/`. A worker may share no disk
with the campaign (Dask workers on other machines), so the archive is the one way
results come back, on every engine.
"""

from __future__ import annotations

import io
import json
import tarfile
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The simulation seeds trio's scheduler through module state, so two runs in one
# process (a Dask worker with several threads) must take turns to stay deterministic.
_ONE_RUN_AT_A_TIME = threading.Lock()


@dataclass(frozen=True)
class RunRequest:
    """A run to do: which cell and seed, its full configuration, its folder's name."""

    cell: int
    seed: int
    config: dict[str, Any]  # RunConfig.to_json()
    run_name: str
    # A schedule to run instead of generating one (`Schedule` as JSON builtins): a
    # coverage-guided campaign (nemesis.guided) sends each run's mutated schedule.
    schedule: dict[str, Any] | None = None


@dataclass(frozen=True)
class RunRecord:
    """What came back from one run."""

    cell: int
    seed: int
    run_name: str
    valid: bool | str | None  # None: the run did not finish (see `error`)
    config: dict[str, Any] = field(default_factory=dict)  # RunConfig.to_json() of the run
    counts: dict[str, int] = field(default_factory=dict)  # every anomaly type found
    bad: tuple[str, ...] = ()  # types outside the run's allowed set
    examples: dict[str, str] = field(default_factory=dict)  # type -> first evidence, one line
    availability: dict[str, Any] = field(default_factory=dict)
    history_sha256: str = ""
    events: int = 0
    run_seconds: float = 0.0
    wall_seconds: float = 0.0
    error: str | None = None
    # Sends recorded `fail` that a broker appended (sim oracle): faultline's own failure.
    harness_errors: int = 0
    archive: bytes = b""  # the run folder, tar.gz
    # results.json's `coverage` (harness.coverage): the states the run reached.
    coverage: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """As written into campaign.json (without the archive)."""
        return {
            "cell": self.cell, "seed": self.seed, "run": self.run_name, "valid": self.valid,
            "config": self.config,
            "counts": self.counts, "bad": list(self.bad), "examples": self.examples,
            "availability": self.availability, "history_sha256": self.history_sha256,
            "events": self.events, "run_seconds": round(self.run_seconds, 3),
            "wall_seconds": round(self.wall_seconds, 3), "error": self.error,
            "harness_errors": self.harness_errors,
            "coverage": self.coverage,
        }


def execute(request: RunRequest) -> RunRecord:
    """Run `request` in a scratch folder and return its record with the folder packed.

    Never raises for a failed run: a setup error or a crash of the run itself comes
    back as `error`, with whatever the run wrote so far.
    """
    from harness.commands.check import first_example
    from harness.run_config import RunConfig
    from harness.runner import RunSetupError, RunStalled, run
    from nemesis.ops import Schedule

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="faultline-task-") as scratch:
        run_dir = Path(scratch) / request.run_name
        run_dir.mkdir()
        try:
            config = RunConfig.from_json(request.config)
            schedule = (None if request.schedule is None
                        else Schedule.from_json(json.dumps(request.schedule)))
            with _ONE_RUN_AT_A_TIME:
                outcome = run(config, Path(scratch), run_dir=run_dir, schedule=schedule,
                              index=False)
        except RunSetupError as exc:
            return _failed(request, f"setup error: {exc}", run_dir, started)
        except RunStalled as exc:
            return _failed(request, f"the run could not finish: {exc}", run_dir, started)
        except Exception:
            return _failed(request, f"the run crashed:\n{traceback.format_exc()}", run_dir,
                           started)
        verdict = outcome.verdict
        return RunRecord(
            cell=request.cell,
            seed=request.seed,
            run_name=request.run_name,
            valid=outcome.valid,
            config=request.config,
            counts=dict(verdict["counts"]),
            # A configuration that accepts its documented trade-offs is judged by the
            # anomalies they do not explain.
            bad=tuple(outcome.explanations["unexplained_types"]
                      if outcome.config.accept_tradeoffs and outcome.explanations
                      else verdict["bad_anomaly_types"]),
            examples={kind: first_example(items)
                      for kind, items in verdict["anomalies"].items()},
            availability=outcome.availability.to_json(),
            history_sha256=outcome.history_sha256,
            events=outcome.events,
            run_seconds=outcome.run_seconds,
            wall_seconds=time.monotonic() - started,
            harness_errors=len(outcome.harness_errors),
            archive=pack(run_dir),
            coverage=_coverage(run_dir),
        )


def _coverage(run_dir: Path) -> dict[str, Any]:
    """results.json's `coverage` of a finished run ({} when it has none)."""
    try:
        data = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    coverage = data.get("coverage") if isinstance(data, dict) else None
    return coverage if isinstance(coverage, dict) else {}


def _failed(request: RunRequest, error: str, run_dir: Path, started: float) -> RunRecord:
    return RunRecord(cell=request.cell, seed=request.seed, run_name=request.run_name,
                     valid=None, config=request.config, error=error,
                     wall_seconds=time.monotonic() - started, archive=pack(run_dir))


def pack(folder: Path) -> bytes:
    """`folder` and everything in it as a gzipped tar (names relative to `folder`)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=1) as tar:
        for path in sorted(folder.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(folder)), recursive=False)
    return buffer.getvalue()


def unpack(archive: bytes, folder: Path) -> None:
    """Extract an archive made by `pack` into `folder` (plain files and folders only)."""
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        tar.extractall(folder, filter="data")
