"""`faultline campaign`: many runs from one command, judged against expectations.

    faultline campaign --seeds 10 --vary acks=1,all --nemesis partition,kill
    faultline campaign --preset kafka-guarantees            # Kafka's documented claims
    faultline campaign --matrix my-matrix.toml --junit junit.xml
    faultline campaign --seeds 20 --scheduler tcp://10.0.0.5:8786   # on a Dask cluster
    faultline campaign --seeds 5 --nemesis power-loss --shrink      # shrink each failure

Writes `results/<stamp>-campaign-<name>/`: `runs/<run-id>/` (each an ordinary run
folder that `faultline replay` reproduces), `campaign.json`, `campaign.html`; prints
the guarantee table; regenerates `results/index.html`. Exit codes: `harness.exit_codes`
(0 every expectation held, 1 one was violated, 2 bad input or setup error or a run
that could not run, 3 unknown, 130 interrupted: the finished runs and a partial matrix
are kept).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import os
import re
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import click

from harness import exit_codes
from harness.commands.errors import bad_input, setup_failed
from harness.commands.run import given_settings, list_packages_if_asked, run_options

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h)?\s*$")


def parse_duration(text: str) -> float:
    """Seconds from "90", "90s", "10m" or "1.5h"; ConfigError otherwise."""
    from harness.settings import ConfigError

    match = _DURATION.match(text)
    if match is None:
        raise ConfigError(f"--time-budget expects seconds or a duration such as 90s, 10m "
                          f"or 1h, not {text!r}")
    scale = {"s": 1, None: 1, "m": 60, "h": 3600}[match.group(2)]
    return float(match.group(1)) * scale


@click.command("campaign", epilog=exit_codes.HELP.replace(
    "0 valid", "0 every expectation held").replace("1 anomalies found",
                                                   "1 an expectation was violated"))
@run_options(exclude=("seed",))
@click.option("--vary", "axes", multiple=True, metavar="NAME=V1,V2,...",
              help="An axis of the matrix: a run setting and its values (repeatable); "
                   "every combination of the axes is a configuration. Nemesis packages "
                   "within one value are joined with +, e.g. --vary nemesis=kill,partition+pause.")
@click.option("--matrix", "matrix_file", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="A TOML matrix file: [settings], [vary] and "
                                 "[[configuration]] entries with expectations.")
@click.option("--preset", default=None,
              help="A shipped matrix: kafka-guarantees runs Kafka's documented claims; "
                   "bug-NAME is aimed at a planted bug (`faultline bugs`).")
@click.option("--seeds", type=int, default=None,
              help="Run seeds 1..N of every configuration [default: the matrix's, else 1].")
@click.option("--seed-range", default=None, metavar="A..B",
              help="Run seeds A..B (inclusive) of every configuration.")
@click.option("--expect", default=None,
              help="Expectation of configurations that declare none: safe, lossy-ok, or "
                   "comma-separated anomaly types and families  [default: safe]")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Local worker processes [default: the number of cores].")
@click.option("--scheduler", default=None, metavar="tcp://HOST:PORT",
              help="Run on a Dask distributed cluster through this scheduler instead of "
                   "local workers (pip install -e '.[distributed]').")
@click.option("--time-budget", default=None, metavar="DURATION",
              help="Start no run after this long (90s, 10m, 1h); runs started finish.")
@click.option("--until-first-failure", is_flag=True,
              help="Stop the campaign at the first run that violates its expectation.")
@click.option("--fail-fast", is_flag=True,
              help="Skip a configuration's remaining seeds once one of its runs failed.")
@click.option("--shrink", "shrink", is_flag=True,
              help="Shrink the first violating run of each violated configuration (sim "
                   "runs) into its folder's shrunk/ and show the shrunk command.")
@click.option("--guided", is_flag=True,
              help="Coverage-guided schedules: each generation of runs mutates the "
                   "schedules that reached fault-space states not reached before "
                   "(seeded, deterministic; sim and process targets).")
@click.option("--guided-batch", type=click.IntRange(min=1), default=None, metavar="N",
              help="Seeds per generation of a --guided campaign [default: 4]; results "
                   "of a generation steer the next.")
@click.option("--junit", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write JUnit XML here: one test case per (configuration, seed).")
@click.option("--name", default=None, help="Name of the campaign [default: the matrix's].")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              default=Path("results"), show_default=True,
              help="Folder that receives results/<campaign-id>/.")
def campaign(axes: tuple[str, ...], matrix_file: Path | None, preset: str | None,
             seeds: int | None, seed_range: str | None, expect: str | None,
             workers: int | None, scheduler: str | None, time_budget: str | None,
             until_first_failure: bool, fail_fast: bool, shrink: bool, guided: bool,
             guided_batch: int | None, junit: Path | None,
             name: str | None, out: Path, **options: Any) -> None:
    """Run a matrix of configurations x seeds and judge each configuration against its
    expectation; print and write the guarantee table."""
    from harness.campaign.driver import StopRules, run_campaign
    from harness.campaign.engines import DaskEngine, Engine, EngineError, LocalEngine
    from harness.campaign.matrix import (
        build_matrix,
        parse_axis,
        parse_seeds,
        read_matrix_file,
        read_preset,
    )
    from harness.campaign.progress import CampaignProgress
    from harness.campaign.results import CampaignResults, Judgement
    from harness.campaign.summary import (
        CampaignInfo,
        campaign_json,
        terminal_table,
        write_campaign_json,
    )
    from harness.campaign.task import RunRecord
    from harness.settings import ConfigError

    list_packages_if_asked(options)
    command = shlex.join(["faultline", *sys.argv[1:]]) if sys.argv else "faultline campaign"
    try:
        if matrix_file is not None and preset is not None:
            raise ConfigError("give --matrix or --preset, not both")
        if workers is not None and scheduler is not None:
            raise ConfigError("--workers is for local runs; a Dask cluster's size is its "
                              "workers' (drop --workers or --scheduler)")
        source = (read_matrix_file(matrix_file) if matrix_file is not None
                  else read_preset(preset) if preset is not None else None)
        chosen_seeds = (parse_seeds(seeds, seed_range)
                        if seeds is not None or seed_range is not None else None)
        matrix = build_matrix(source, fixed=given_settings(options),
                              axes=[parse_axis(text) for text in axes],
                              seeds=chosen_seeds, expect=expect)
        budget = parse_duration(time_budget) if time_budget is not None else None
        if guided_batch is not None and not guided:
            raise ConfigError("--guided-batch only applies with --guided")
        planner = None
        if guided:
            from harness.campaign.driver import plan
            from harness.campaign.guided import DEFAULT_BATCH, GuidedPlan

            planner = GuidedPlan(matrix, plan(matrix), batch=guided_batch or DEFAULT_BATCH)
    except ConfigError as exc:
        bad_input(str(exc))
    if name:
        matrix = dataclasses.replace(matrix, name=name)

    runnable = matrix.runnable
    total = len(runnable) * len(matrix.seeds)
    click.echo(f"faultline campaign {matrix.name}: {len(matrix.cells)} configuration"
               f"{'s' if len(matrix.cells) != 1 else ''} x {len(matrix.seeds)} seed"
               f"{'s' if len(matrix.seeds) != 1 else ''} ({_seed_text(matrix.seeds)})")
    for cell in matrix.cells:
        state = f"cannot run: {cell.error}" if cell.error else (
            f"expect {cell.expectation.name}")
        click.echo(f"  [{cell.index}] {cell.label}: {state}")
    if not runnable:
        bad_input("no configuration of the matrix can run (reasons above)")

    folder = _campaign_folder(out, matrix.name)
    try:
        engine: Engine = (DaskEngine(scheduler) if scheduler is not None
                          else LocalEngine(workers or os.cpu_count() or 1,
                                           log_dir=folder / "workers"))
    except (EngineError, ConfigError) as exc:
        setup_failed(str(exc))
    except KeyboardInterrupt:
        click.echo("\ninterrupted before any run started", err=True)
        sys.exit(exit_codes.INTERRUPTED)
    shared = _shared_cluster_under_faults(matrix)
    if shared and engine.slots > 1:
        engine.close(abandon=True)
        shutil.rmtree(folder, ignore_errors=True)
        bad_input(f"configuration '{shared}' injects faults into one external "
                  "cluster, so runs at the same time would break each other's: use "
                  f"--workers 1 (this engine runs {engine.slots} at once)")
    click.echo(f"{total} runs on {engine.description} -> {folder}")

    started = time.monotonic()
    info = CampaignInfo(command=command, engine=engine.description,
                        created=_dt.datetime.now().isoformat(timespec="seconds"),
                        started_monotonic=started)
    progress = CampaignProgress(sys.stderr, total)

    def save(results: CampaignResults) -> None:
        write_campaign_json(folder, campaign_json(results, info,
                                                  time.monotonic() - started))

    def on_change(results: CampaignResults, record: RunRecord | None,
                  judgement: Judgement | None) -> None:
        replay = results.replays.get(record.run_name) if record is not None else None
        progress.update(results, record, judgement, replay)

    rules = StopRules(time_budget_s=budget, until_first_failure=until_first_failure,
                      fail_fast=fail_fast)
    results = run_campaign(matrix, folder, engine, rules, on_change=on_change, save=save,
                           planner=planner)
    progress.finish(results)
    if shrink and not results.interrupted:
        _shrink_failures(results, folder, workers or min(2, os.cpu_count() or 1))
    data = campaign_json(results, info, time.monotonic() - started)
    write_campaign_json(folder, data)
    try:
        _render(folder, out, data, junit)
    except KeyboardInterrupt:
        results.interrupted = True
    click.echo(terminal_table(data))
    if results.interrupted:
        click.echo(f"interrupted: kept the {results.runs} finished run"
                   f"{'s' if results.runs != 1 else ''}; the matrix is partial", err=True)
    elif results.stopped:
        click.echo(f"stopped early: {results.stopped}")
    click.echo(f"campaign: {folder}")
    click.echo(f"report:   {folder / 'campaign.html'}")
    if junit is not None:
        click.echo(f"junit:    {junit}")
    sys.exit(exit_codes.INTERRUPTED if results.interrupted else data["exit_code"])


def _shrink_failures(results: Any, folder: Path, workers: int) -> None:
    """Shrink the first violating run of each violated configuration (`--shrink`);
    what came of each goes into `results.shrinks`."""
    from harness.shrink import ShrinkError, headline_type, shrink_run

    for record, violations in results.to_shrink():
        run_dir = folder / "runs" / record.run_name
        click.echo(f"shrinking {record.run_name} ({', '.join(violations)})")
        try:
            report = shrink_run(run_dir, types=(headline_type(violations),),
                                workers=workers)
        except ShrinkError as exc:
            results.shrinks[record.run_name] = {"error": str(exc)}
            click.echo(f"  not shrunk: {exc}")
            continue
        except KeyboardInterrupt:
            results.interrupted = True
            return
        results.shrinks[record.run_name] = report.to_json()
        click.echo(f"  shrunk: {report.command}")


def _render(folder: Path, out: Path, data: dict[str, Any], junit: Path | None) -> None:
    from harness.campaign.junit import write_junit
    from harness.report import render_index
    from harness.report.campaign import write_campaign_report

    write_campaign_report(folder, data)
    if junit is not None:
        write_junit(junit, data)
    render_index(out)


def _shared_cluster_under_faults(matrix: Any) -> str | None:
    """The label of a configuration that breaks an external cluster all runs share."""
    for cell in matrix.runnable:
        config = cell.config(matrix.seeds[0])
        if config.target == "external" and config.packages:
            return str(cell.label)
    return None


def _campaign_folder(out: Path, name: str) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%dT%H%M%S")
    slug = re.sub(r"[^A-Za-z0-9._+-]+", "-", name).strip("-") or "matrix"
    out.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, 1000):
        path = out / (f"{stamp}-campaign-{slug}" + ("" if attempt == 1 else f"-{attempt}"))
        try:
            path.mkdir()
        except FileExistsError:
            continue
        (path / "runs").mkdir()
        return path
    raise click.ClickException(f"no free campaign folder name under {out}")


def _seed_text(seeds: tuple[int, ...]) -> str:
    if len(seeds) > 2 and seeds == tuple(range(seeds[0], seeds[-1] + 1)):
        return f"seeds {seeds[0]}..{seeds[-1]}"
    return "seed" + ("s " if len(seeds) > 1 else " ") + ", ".join(map(str, seeds))
