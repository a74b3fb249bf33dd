"""The invoke/complete state machine shared by the reader and the writer.

Each client process runs one operation at a time: it is idle, then busy after an
`invoke`, then idle again after exactly one completion (`ok`, `fail` or `info`).
"""

from __future__ import annotations

from history.model import AnyClientEvent


class PairingError(Exception):
    """An event breaks the one-operation-at-a-time rule; the message says how."""


class Pairing:
    """Pairs each completion with its process's pending invocation.

    `pending` maps a busy process to its invoke event. `observe` returns the invoke a
    completion closes (None for an invoke) or raises PairingError.
    """

    __slots__ = ("pending",)

    def __init__(self) -> None:
        self.pending: dict[int, AnyClientEvent] = {}

    def observe(self, event: AnyClientEvent) -> AnyClientEvent | None:
        """Record one client event; return the invoke it completes, if it is a completion."""
        process = event.process
        if event.type == "invoke":
            busy = self.pending.get(process)
            if busy is not None:
                raise PairingError(
                    f"process {process} invokes {event.f} while its {busy.f} invoked at "
                    f"index {busy.index} has not completed (one operation at a time)"
                )
            self.pending[process] = event
            return None
        invoke = self.pending.pop(process, None)
        if invoke is None:
            raise PairingError(
                f"{event.type} {event.f} by process {process} has no pending invoke "
                "(a completion needs an earlier invoke by the same process)"
            )
        if invoke.f != event.f:
            raise PairingError(
                f"{event.type} {event.f} by process {process} completes a {invoke.f} "
                f"invoked at index {invoke.index}"
            )
        if event.f == "crash" and event.type != "info":
            raise PairingError(f"a crash completes as info, not {event.type}")
        return invoke
