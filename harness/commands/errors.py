"""The one way every `faultline` command reports bad input: click's own style.

Click reports a bad option value as `Error: Invalid value for '--acks': ...` after the
usage line, exit 2; the checks faultline makes itself (a configuration that cannot run,
a folder that is not a run) raise `BadInput`, which click prints the same way, so a
person sees one style whichever check refused the command.
"""

from __future__ import annotations

from typing import NoReturn

import click

from harness import exit_codes


class BadInput(click.UsageError):
    """Bad input found by faultline rather than by click: printed as click prints its
    own usage errors ("Error: ..." under the usage line), exit 2."""

    exit_code = exit_codes.BAD_INPUT

    def __init__(self, message: str) -> None:
        super().__init__(message, ctx=click.get_current_context(silent=True))


class SetupFailed(click.ClickException):
    """The command's input was fine but what it needs could not be had (a target that
    does not start, a file that cannot be written): "Error: ...", exit 2."""

    exit_code = exit_codes.BAD_INPUT


def bad_input(message: str) -> NoReturn:
    """Refuse the command with `message` (see `BadInput`)."""
    raise BadInput(message)


def setup_failed(message: str) -> NoReturn:
    """Stop the command with `message` (see `SetupFailed`)."""
    raise SetupFailed(message)
