"""Recording one Kafka transaction as a `txn` operation (DESIGN.md section 4).

`perform_txn` is `HistoryRecorder.perform` for transactions: it writes the invoke with
the planned micro-operations, begins the transaction, lets the workload's body run its
sends, polls and offset commits (filling in each micro-op's result in place as it
completes), then commits — or aborts, when the body asks to or an error says so — and
writes exactly one completion:

- `ok`: commit_transaction returned.
- `fail`: the transaction certainly did not commit: it was aborted on purpose, an
  abortable error (`TxnAbortable`) or a definite failure (`OpFailed`) came first and the
  transaction was aborted, or the commit itself certainly aborted.
- `info`: unknown — a fatal error (`TxnFatal`: fenced), an `OpUnknown` (a commit that
  timed out), running past the timeout, or the phase ending. The process retires
  (`Retired`), as for any `info`.

The completion value always lists every micro-op of the invoke (the reader insists the
sends match), with results for those that ran; a body that decides its sends as it
goes (consume-transform-produce) appends them to `ops`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import trio

from workloads.adapters import ClientSession, OpFailed, OpUnknown, Rebalance, TxnFatal
from workloads.recorder import HistoryRecorder, Retired, describe

# A micro-op as the history writes it: ["send", {...}], ["poll", {...}|None], ["commit", {...}].
MicroOps = list[list[Any]]


@dataclass
class TxnOutcome:
    """How one recorded transaction ended.

    `ok`: it committed. `session_usable`: False when the producer is left in a state the
    process should not go on from (an abort that failed): the workload ends the session
    and a new process takes over.
    """

    ok: bool
    ops: MicroOps
    session_usable: bool = True


async def perform_txn(
    recorder: HistoryRecorder,
    session: ClientSession,
    process: int,
    ops: MicroOps,
    body: Callable[[MicroOps], Awaitable[bool]],
    *,
    timeout_s: float,
    rebalance: Callable[[], Rebalance | None] | None = None,
) -> TxnOutcome:
    """Record one transaction of `process` (see the module docstring).

    `ops` is the invoke value; `body(ops)` runs the micro-ops inside the begun
    transaction, updating `ops` in place, and returns True to commit or False to abort
    on purpose. Raises `Retired` after an `info` completion.
    """
    recorder.invoke(process, "txn", [list(op) for op in ops])
    outcome = "info"
    error: str | None = None
    usable = True
    try:
        with trio.move_on_after(timeout_s):
            try:
                await session.begin_transaction()
                commit = await body(ops)
                if commit:
                    await session.commit_transaction()
                    outcome = "ok"
                else:
                    error = "aborted on purpose"
                    usable = await _abort(session)
                    outcome = "fail"
            except TxnFatal as exc:
                outcome, error = "info", describe(exc)
            except OpFailed as exc:
                # Abortable or definite: the transaction has not committed; abort it so
                # the producer can go on (an abort before anything was sent is harmless).
                error = describe(exc)
                usable = await _abort(session)
                outcome = "fail"
            except OpUnknown as exc:
                outcome, error = "info", describe(exc)
    except trio.Cancelled:
        recorder.complete(process, "info", "txn", ops, error="cancelled: the phase ended first")
        raise
    extra: dict[str, Any] = {}
    change = rebalance() if rebalance is not None else None
    if change is not None:
        extra = {"assignment": change.assignment}
        if change.generation is not None:
            extra["generation"] = change.generation
    if outcome == "info":
        if error is None:
            error = f"timeout: no outcome within {timeout_s:.3g} s"
        recorder.complete(process, "info", "txn", ops, error=error, **extra)
        raise Retired(error)
    recorder.complete(process, outcome, "txn", ops, error=error, **extra)
    return TxnOutcome(outcome == "ok", ops, usable)


async def _abort(session: ClientSession) -> bool:
    """Abort the open transaction; False when that failed (the session is spent)."""
    try:
        await session.abort_transaction()
    except (OpFailed, OpUnknown):
        return False
    return True
