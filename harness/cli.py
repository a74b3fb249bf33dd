"""The `faultline` command line: one click group, each subcommand in `harness/commands/`.

Subcommands are imported only when invoked, so `faultline broker` does not load the
checkers and `faultline check` does not load the broker.
"""

from __future__ import annotations

import importlib

import click

from harness import exit_codes

# name -> (module under harness.commands, attribute, one-line help shown in `faultline --help`)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "check": ("check", "check", "Check a history file for anomalies; write the verdict beside it."),
    "broker": ("broker", "broker", "Run one reference broker node on real TCP and files."),
    "run": ("run", "run", "Run a cluster under faults with a workload; check it; write a report."),
    "report": ("report", "report", "Re-render a run's report.html (and results/index.html)."),
    "replay": ("replay", "replay", "Re-run a sim run from its seed and config; compare histories."),
    "shrink": ("shrink", "shrink",
               "Shrink a failing sim run to a minimal reproducer in RUN_DIR/shrunk/."),
    "serve": ("serve", "serve", "Browse a results folder on a local web server (127.0.0.1)."),
    "campaign": ("campaign", "campaign",
                 "Run a matrix of configurations x seeds; check each against expectations."),
    "bugs": ("bugs", "bugs",
             "List the bugs --bug can plant in the reference broker, and what finds each."),
}


class LazyGroup(click.Group):
    """A click group that imports a subcommand's module only when it is used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = COMMANDS.get(cmd_name)
        if entry is None:
            return None
        module_name, attr, _ = entry
        module = importlib.import_module(f"harness.commands.{module_name}")
        return getattr(module, attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]},
             epilog=exit_codes.HELP)
@click.version_option(package_name="faultline")
def cli() -> None:
    """faultline: a Jepsen-style correctness lab for Kafka-style logs.

    Each command's --help lists its exit codes.
    """


def main() -> None:
    """Console-script entry point; click usage errors exit 2 as bad input should."""
    cli(prog_name="faultline")


if __name__ == "__main__":
    main()
