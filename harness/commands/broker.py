"""`faultline broker`: one reference broker node on real TCP and files.

    faultline broker --data-dir DIR [--listen 127.0.0.1:9092] [--config FILE.toml]
                     [--set name=value]... [--seed N]

Settings use Apache Kafka's names (see `--help-config`). Once it accepts
connections the broker prints `listening on HOST:PORT` to stdout (flushed), one line
per client listener, the inter-broker listener first, then `controller listening on
HOST:PORT` per controller listener (controller.listener.names), so a launcher can
start it on port 0 and learn the real ports. `--listen` replaces `listeners` with
the single `PLAINTEXT://HOST:PORT`. SIGTERM or Ctrl-C shut it
down cleanly: connections are dropped, every log is flushed and closed, exit 0.
Exit 2 on a bad configuration or an unusable data dir.

Two signals serve the process runtime's nemesis (harness/runtime/process), which
has no network control endpoint into the broker:

- SIGUSR1 re-reads `<data-dir>/clock-offset-ms` (an integer, absent = 0) and skews
  the wall clock used for record timestamps by that many milliseconds. The file is
  also read at startup, so a skew outlives a restart, as a wrong host clock would.
- SIGUSR2 is a *process crash that keeps the page cache*: with
  `faultline.storage.volatile.until.fsync=true` the broker's memory stands in for the
  page cache, so SIGKILL alone would behave as a power cut. On SIGUSR2 the broker
  writes every buffered byte to its files WITHOUT fsync (what the kernel would keep
  after a crash) and exits at once with `os._exit(137)` (128 + SIGKILL): no flush,
  no clean shutdown, no logs closed. If `<data-dir>/torn-write-seed` exists (written
  by the harness just before), the crash is a *power cut with a torn write* instead:
  of the file written last, a prefix of its unsynced tail drawn from that seed reaches
  the file and every other unsynced byte is lost (the seed file is removed).
- SIGUSR1 also re-reads `<data-dir>/disk-fault` (JSON: `enospc_write`, `enospc_fsync`,
  `fsync_delay_ms`; absent = a healthy disk), the harness's disk nemesis: the storage
  then fails writes or fsyncs with ENOSPC, or slows every fsync. Read at startup too,
  so a full disk stays full across a restart.

A disk error (ENOSPC, EIO) halts the broker as Kafka does when its only log directory
fails: it logs why at CRITICAL, hands what it had written to the OS (as a halted
process's page cache would) and exits 1 at once.
"""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click
import trio

from harness import exit_codes
from harness.commands.errors import bad_input, setup_failed

if TYPE_CHECKING:
    from reference_broker.config import BrokerConfig
    from reference_broker.env import NodeEnv

CLOCK_OFFSET_FILE = "clock-offset-ms"
DISK_FAULT_FILE = "disk-fault"
TORN_WRITE_FILE = "torn-write-seed"


def _print_help_config(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from reference_broker.config import describe_settings

    click.echo(describe_settings())
    ctx.exit(0)


@click.command(
    "broker", epilog="Exit codes: 0 stopped cleanly, 1 halted on a failed disk (ENOSPC, "
    "EIO), 2 bad configuration or data directory, 137 crashed on purpose on SIGUSR2 (as "
    "SIGKILL would, buffered writes left unsynced).")
@click.option(
    "--data-dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory of the node's logs and metadata (created if missing).",
)
@click.option(
    "--listen",
    default=None,
    metavar="HOST:PORT",
    help="Address to bind (sets `listeners`); port 0 picks a free port. Default 127.0.0.1:9092.",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="TOML file of Kafka config names, e.g. `num.partitions = 3`.",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="NAME=VALUE",
    help="Override one config (repeatable), e.g. --set log.flush.interval.messages=1.",
)
@click.option("--seed", type=int, default=None, help="Seed of the node's rng (ids, cluster id).")
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
    help="Verbosity of the broker's log on stderr.",
)
@click.option(
    "--help-config",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_help_config,
    help="List every supported config name and exit.",
)
def broker(
    data_dir: Path,
    listen: str | None,
    config_file: Path | None,
    overrides: tuple[str, ...],
    seed: int | None,
    log_level: str,
) -> None:
    """Run one reference broker node on real TCP and files."""
    from reference_broker.config import BrokerConfig, ConfigError
    from reference_broker.log_dir_failure import LogDirFailedError
    from reference_broker.metadata import MetadataCorruptError
    from reference_broker.os_env import os_node_env

    logging.basicConfig(
        level=getattr(logging, log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    settings = list(overrides)
    if listen is not None:
        settings.append(f"listeners=PLAINTEXT://{listen}")
    try:
        config = BrokerConfig.load(config_file, settings)
    except ConfigError as exc:
        bad_input(str(exc))
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        setup_failed(f"cannot create data dir {data_dir}: {exc}")
    env = os_node_env(data_dir, volatile_until_fsync=config.volatile_until_fsync, seed=seed)
    try:
        _apply_clock_offset(env, data_dir)
        _apply_disk_fault(env, data_dir)
        trio.run(_main, env, config, data_dir)
    except (MetadataCorruptError, OSError, LogDirFailedError, BaseExceptionGroup) as exc:
        # Setup failures (port in use, unreadable data dir) arrive wrapped by nurseries.
        leaves = _leaves(exc)
        if any(isinstance(e, LogDirFailedError) for e in leaves):
            _halt(env)
        if not all(isinstance(e, MetadataCorruptError | OSError) for e in leaves):
            raise
        setup_failed("; ".join(str(leaf) for leaf in leaves))


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _apply_clock_offset(env: NodeEnv, data_dir: Path) -> None:
    """Set the wall clock's skew from `<data_dir>/clock-offset-ms` (absent: no skew)."""
    from reference_broker.os_env import WallClock

    path = data_dir / CLOCK_OFFSET_FILE
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        text = "0"
    try:
        offset_ms = int(text or "0")
    except ValueError:
        raise OSError(f"{path} must hold an integer of milliseconds, not {text!r}") from None
    assert isinstance(env.clock, WallClock)
    if env.clock.offset_ms != offset_ms:
        logging.getLogger("faultline.broker").info("clock skewed by %d ms", offset_ms)
    env.clock.offset_ms = offset_ms


def _apply_disk_fault(env: NodeEnv, data_dir: Path) -> None:
    """Set the storage's injected faults from `<data_dir>/disk-fault` (absent: none)."""
    from reference_broker.os_env import OsStorage, StorageFaults

    assert isinstance(env.storage, OsStorage)
    path = data_dir / DISK_FAULT_FILE
    try:
        spec = json.loads(path.read_text() or "{}")
    except FileNotFoundError:
        spec = {}
    except ValueError as exc:
        raise OSError(f"{path} must hold a JSON object: {exc}") from None
    faults = StorageFaults(
        enospc_write=bool(spec.get("enospc_write", False)),
        enospc_fsync=bool(spec.get("enospc_fsync", False)),
        fsync_delay_s=float(spec.get("fsync_delay_ms", 0.0)) / 1000,
    )
    if faults != env.storage.faults:
        logging.getLogger("faultline.broker").warning("disk faults injected: %s", faults)
    env.storage.faults = faults


def _halt(env: NodeEnv) -> None:
    """Exit at once after the log directory failed (the broker logged why)."""
    from reference_broker.log_dir_failure import HALT_EXIT_CODE
    from reference_broker.os_env import OsStorage

    assert isinstance(env.storage, OsStorage)
    # A halted process's writes stay in the page cache; only the failed one is not there.
    spilled = env.storage.spill_to_os()
    os.write(2, f"halted: log directory failed ({spilled} unsynced bytes left to the OS)\n"
             .encode())
    os._exit(HALT_EXIT_CODE)


def _crash_keeping_page_cache(env: NodeEnv, data_dir: Path) -> None:
    """Write buffered bytes to the files without fsync, then die as SIGKILL would; or,
    when the harness left a torn-write seed, cut the power tearing the last write."""
    from reference_broker.os_env import OsStorage

    assert isinstance(env.storage, OsStorage)
    seed_file = data_dir / TORN_WRITE_FILE
    try:
        seed = int(seed_file.read_text().strip())
    except (OSError, ValueError):
        seed = None
    if seed is not None:
        seed_file.unlink(missing_ok=True)
        torn = env.storage.tear_to_os(random.Random(seed))
        what = "nothing torn" if torn is None else f"{torn[0]} kept {torn[1]} of {torn[2]} bytes"
        os.write(2, f"power cut on SIGUSR2 with a torn write: {what}\n".encode())
        os._exit(exit_codes.CRASHED)
    spilled = env.storage.spill_to_os()
    # Straight to stderr: the logging machinery may buffer, and nothing runs after this.
    os.write(2, f"crashing on SIGUSR2 ({spilled} unsynced bytes left to the OS)\n".encode())
    os._exit(exit_codes.CRASHED)  # as if SIGKILLed


async def _main(env: NodeEnv, config: BrokerConfig, data_dir: Path) -> None:
    from reference_broker.server import serve_broker

    log = logging.getLogger("faultline.broker")
    async with trio.open_nursery() as nursery:
        # Signals are received from the start, so a SIGTERM during startup is honoured too.
        # Handling SIGUSR1/2 in the trio loop (not in a raw signal handler) means they act
        # between two broker steps, never in the middle of a write.
        with trio.open_signal_receiver(
            signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2
        ) as signals:
            running = await nursery.start(serve_broker, env, config)
            for address in running.addresses:
                # The controller listeners are announced apart: clients must not use them.
                prefix = "controller " if address in running.controller_addresses else ""
                print(f"{prefix}listening on {address.host}:{address.port}", flush=True)
            async for signum in signals:
                if signum == signal.SIGUSR1:
                    try:
                        _apply_clock_offset(env, data_dir)
                    except OSError as exc:
                        log.error("clock offset not changed: %s", exc)
                    try:
                        _apply_disk_fault(env, data_dir)
                    except OSError as exc:
                        log.error("disk faults not changed: %s", exc)
                    continue
                if signum == signal.SIGUSR2:
                    _crash_keeping_page_cache(env, data_dir)
                log.info("received %s; shutting down", signal.Signals(signum).name)
                break
        nursery.cancel_scope.cancel()
