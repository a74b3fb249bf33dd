"""Streaming, validating reader of JSON Lines histories.

The reader never holds more than one line: it yields each event with the invoke it
completes, so a checker can build compact summaries in one pass over a file of any size.
Any malformation stops the read with one HistoryError naming the file and line.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import IO, TYPE_CHECKING, NoReturn

import msgspec

from history.errors import HistoryError
from history.model import (
    CLIENT_FS,
    EVENT_TYPES,
    AnyClientEvent,
    Assign,
    Commit,
    Crash,
    Event,
    Natural,
    NemesisEvent,
    Poll,
    PollResult,
    Send,
    Subscribe,
    Txn,
    TxnMessage,
    split_log,
)
from history.pairing import Pairing, PairingError

# An event and, for a completion, the invoke it completes.
Step = tuple[Event, AnyClientEvent | None]

_client_decoder = msgspec.json.Decoder(AnyClientEvent)
# The typed shapes of a transaction's poll and commit payloads.
_PollPayload = PollResult
_CommitPayload = dict[str, Natural]
_nemesis_decoder = msgspec.json.Decoder(NemesisEvent)


class HistoryReader:
    """Iterate over a history file's events, validated and paired.

    Iterating yields `(event, invoke)`: `invoke` is the pending invocation a completion
    closes, None for invocations and nemesis events. After a full iteration,
    `pending` holds the operations that never completed (Jepsen treats them as `info`)
    and `events` the number of events read.
    """

    def __init__(self, path: str, stream: IO[bytes] | None = None) -> None:
        self.path = path
        self._stream = stream
        self._pairing = Pairing()
        self._good_logs: set[str] = set()
        self.events = 0

    @property
    def pending(self) -> dict[int, AnyClientEvent]:
        """Invocations still open at the point the reader has reached."""
        return self._pairing.pending

    def __iter__(self) -> Iterator[Step]:
        if self._stream is not None:
            yield from self._steps(self._stream)
            return
        try:
            stream = open(self.path, "rb")  # noqa: SIM115 - closed by the with below
        except OSError as error:
            raise HistoryError(self.path, 0, f"cannot open history: {error.strerror}") from None
        with stream:
            yield from self._steps(stream)

    def _steps(self, stream: IO[bytes]) -> Iterator[Step]:
        decode = _client_decoder.decode
        pending = self._pairing.pending
        check_value = self._check_value
        good = self._good_logs
        expected = 0
        for lineno, line in enumerate(stream, 1):
            try:
                event: AnyClientEvent = decode(line)
            except (msgspec.ValidationError, msgspec.DecodeError) as error:
                # Nemesis events are rare: they take the slow path, which also explains
                # any line that is neither.
                nemesis = self._decode_slow(line, lineno, error)
                if nemesis.index != expected:
                    self._out_of_sequence(lineno, nemesis.index, expected)
                expected += 1
                yield nemesis, None
                continue
            if event.index != expected:
                self._out_of_sequence(lineno, event.index, expected)
            expected += 1
            cls = type(event)
            # The common cases inline; anything unusual goes through the state machine,
            # which raises with the explanation.
            process = event.process
            if event.type == "invoke":
                if process in pending:
                    self._pairing_error(event, lineno)
                pending[process] = event
                invoke = None
            else:
                invoke = pending.pop(process, None)
                if invoke is None or invoke.f != event.f or cls is Crash:
                    if invoke is not None:
                        pending[process] = invoke
                    invoke = self._pairing_error(event, lineno)
            value = event.value
            if value is not None:
                if cls is Poll:
                    if TYPE_CHECKING:
                        assert isinstance(value, dict)
                    if not good.issuperset(value):
                        check_value(event, invoke, lineno)
                else:
                    check_value(event, invoke, lineno)
            yield event, invoke
        self.events = expected

    def _out_of_sequence(self, lineno: int, index: int, expected: int) -> NoReturn:
        self._fail(
            lineno,
            f"index {index} out of sequence: expected {expected} "
            "(indices are dense from 0, one event per line)",
        )

    def _decode_slow(
        self, line: bytes, lineno: int, error: msgspec.ValidationError | msgspec.DecodeError
    ) -> NemesisEvent:
        """Decode a line the fast client decoder refused: a nemesis event, or an error."""
        if isinstance(error, msgspec.DecodeError) and not isinstance(
            error, msgspec.ValidationError
        ):
            if not line.endswith(b"\n"):
                self._fail(lineno, "truncated last line (no newline; was the writer cut off?)")
            if not line.strip():
                self._fail(lineno, "empty line (each line must hold one JSON event)")
            self._fail(lineno, f"not valid JSON: {error}")
        try:
            return _nemesis_decoder.decode(line)
        except (msgspec.ValidationError, msgspec.DecodeError):
            pass
        message = str(error)
        raw = msgspec.json.decode(line)
        if isinstance(raw, dict):
            if message.endswith("`$.f`") or "missing required field `f`" in message:
                if "f" not in raw:
                    self._fail(lineno, "event has no `f` field")
                self._fail(
                    lineno,
                    f"unknown f {raw['f']!r} for client process {raw.get('process')!r} "
                    f"(expected one of {', '.join(CLIENT_FS)}; "
                    "nemesis events need process \"nemesis\")",
                )
            if message.endswith("`$.type`"):
                self._fail(
                    lineno,
                    f"unknown type {raw.get('type')!r} (expected one of {', '.join(EVENT_TYPES)})",
                )
        self._fail(lineno, f"invalid event: {message}")

    def _check_value(
        self, event: AnyClientEvent, invoke: AnyClientEvent | None, lineno: int
    ) -> None:
        """Validate what the typed decode cannot: log names and send completions.

        Called only for events with a value. It dispatches on `type(event) is ...` for
        speed; the asserts under TYPE_CHECKING tell mypy what each branch knows and never
        run. The invoke of a completion is the same kind of event as the completion.
        """
        good = self._good_logs
        kind = type(event)
        try:
            if kind is Poll:
                if TYPE_CHECKING:
                    assert isinstance(event, Poll) and event.value is not None
                if not good.issuperset(event.value):
                    for name in event.value:
                        split_log(name)
                        good.add(name)
            elif kind is Send:
                if TYPE_CHECKING:
                    assert isinstance(event, Send) and event.value is not None
                    assert invoke is None or isinstance(invoke, Send)
                if invoke is not None:
                    sent = invoke.value
                    if sent is not None and (
                        len(sent) != len(event.value)
                        or any(a.value != b.value for a, b in zip(sent, event.value, strict=True))
                    ):
                        raise ValueError(
                            f"send completion lists values {[m.value for m in event.value]} "
                            f"but its invoke at index {invoke.index} listed "
                            f"{[m.value for m in sent]}"
                        )
            elif kind is Txn:
                if TYPE_CHECKING:
                    assert isinstance(event, Txn) and event.value is not None
                    assert invoke is None or isinstance(invoke, Txn)
                self._check_txn(event, invoke)
            elif kind is Commit:
                if TYPE_CHECKING:
                    assert isinstance(event, Commit) and event.value is not None
                for name in event.value:
                    if name not in good:
                        split_log(name)
                        good.add(name)
            elif kind is Assign:
                if TYPE_CHECKING:
                    assert isinstance(event, Assign) and event.value is not None
                for name in event.value.logs:
                    split_log(name)
            elif kind is Subscribe:
                if TYPE_CHECKING:
                    assert isinstance(event, Subscribe) and event.value is not None
                for topic in event.value.topics:
                    if "/" in topic:
                        raise ValueError(f"subscribe names topics, not logs: {topic!r}")
            if event.assignment is not None:
                for name in event.assignment:
                    split_log(name)
        except ValueError as error:
            self._fail(lineno, str(error))

    def _check_txn(self, event: Txn, invoke: Txn | None) -> None:
        """Convert a transaction's micro-op payloads to their typed shapes, in place.

        Raises ValueError (turned into a HistoryError) for a payload of the wrong shape,
        a bad log name, or a completion whose sends differ from its invoke's.
        """
        assert event.value is not None
        good = self._good_logs
        sent: list[int] = []
        for position, (f, payload) in enumerate(event.value):
            try:
                if f == "send":
                    message = msgspec.convert(payload, TxnMessage)
                    event.value[position] = (f, message)
                    sent.append(message.value)
                elif f == "poll":
                    if payload is not None:
                        result = msgspec.convert(payload, _PollPayload)
                        for name in result:
                            if name not in good:
                                split_log(name)
                                good.add(name)
                        event.value[position] = (f, result)
                else:
                    offsets = msgspec.convert(payload, _CommitPayload)
                    for name in offsets:
                        if name not in good:
                            split_log(name)
                            good.add(name)
                    event.value[position] = (f, offsets)
            except msgspec.ValidationError as error:
                raise ValueError(
                    f"txn micro-op {position} ({f}) has a malformed payload: {error}"
                ) from None
        if invoke is not None and invoke.value is not None:
            invoked = [payload.value for f, payload in invoke.value if f == "send"]
            # A transaction may decide its sends as it runs (consume-transform-produce
            # sends what it polled): then only the completion lists them.
            if invoked and invoked != sent:
                raise ValueError(
                    f"txn completion sends values {sent} but its invoke at index "
                    f"{invoke.index} sent {invoked}"
                )

    def _pairing_error(self, event: AnyClientEvent, lineno: int) -> AnyClientEvent | None:
        """Run `event` through the pairing state machine, turning its error into ours."""
        try:
            return self._pairing.observe(event)
        except PairingError as error:
            self._fail(lineno, str(error))

    def _fail(self, lineno: int, problem: str) -> NoReturn:
        raise HistoryError(self.path, lineno, problem)


def read_history(path: str) -> Iterator[Step]:
    """Yield `(event, invoke)` for each event of the history file at `path`."""
    return iter(HistoryReader(path))
