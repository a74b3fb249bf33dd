"""`faultline broker`: one reference broker node on real TCP and files.

    faultline broker --data-dir DIR [--listen 127.0.0.1:9092] [--config FILE.toml]
                     [--set name=value]... [--seed N]

Settings use Apache Kafka's names (see `--help-config`). Once it accepts
connections the broker prints `listening on HOST:PORT` to stdout (flushed), so a
launcher can start it on port 0 and learn the real port. SIGTERM or Ctrl-C shut it
down cleanly: connections are dropped, every log is flushed and closed, exit 0.
Exit 2 on a bad configuration or an unusable data dir.
"""

from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path

import click
import trio

EXIT_BAD_INPUT = 2


def _print_help_config(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from reference_broker.config import describe_settings

    click.echo(describe_settings())
    ctx.exit(0)


@click.command("broker")
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
        click.echo(f"faultline broker: {exc}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        click.echo(f"faultline broker: cannot create data dir {data_dir}: {exc}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    env = os_node_env(data_dir, volatile_until_fsync=config.volatile_until_fsync, seed=seed)
    try:
        trio.run(_main, env, config)
    except (MetadataCorruptError, OSError, BaseExceptionGroup) as exc:
        # Setup failures (port in use, unreadable data dir) arrive wrapped by nurseries.
        leaves = _leaves(exc)
        if not all(isinstance(e, MetadataCorruptError | OSError) for e in leaves):
            raise
        for leaf in leaves:
            click.echo(f"faultline broker: {leaf}", err=True)
        sys.exit(EXIT_BAD_INPUT)


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


async def _main(env: object, config: object) -> None:
    from reference_broker.server import serve_broker

    async with trio.open_nursery() as nursery:
        # Signals are received from the start, so a SIGTERM during startup is honoured too.
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            running = await nursery.start(serve_broker, env, config)
            for address in running.addresses:
                print(f"listening on {address.host}:{address.port}", flush=True)
            async for signum in signals:
                logging.getLogger("faultline.broker").info(
                    "received %s; shutting down", signal.Signals(signum).name
                )
                break
        nursery.cancel_scope.cancel()
