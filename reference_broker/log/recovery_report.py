"""What recovery found in a partition directory, and the log lines that say so.

`RecoveryNotes` collects, while `PartitionLog` recovers, every repair (damaged byte
ranges cut out, torn tails truncated, offsets missing between segments or at the end)
and every piece of evidence of offsets handed out before; `RecoveryReport` is the
frozen summary kept on the log. Each repair is logged at WARNING naming the file,
offsets, bytes and reason as it is found; the report is logged at WARNING when
anything was repaired, at INFO otherwise.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from reference_broker import events
from reference_broker.log.recovery_scan import DamagedRange

logger = logging.getLogger("faultline.broker.log")


@dataclass(frozen=True, slots=True)
class OffsetGap:
    """Offsets [start, end) that the log once held or handed out and no longer serves."""

    start: int
    end: int
    reason: str


@dataclass(frozen=True)
class RecoveryReport:
    """What `PartitionLog.open` found and cut.

    `truncated_bytes`: bytes removed from segment files (torn tails and damage);
    `aside_bytes` of them were kept in `aside_files` (`.corrupt`, with a `.reason`
    note each). `gaps`: offset ranges lost (damaged batches, missing segments, lost
    ends); `first_missing_offset` is the lowest offset in any of them, where a
    replica that can refetch from a leader has to start again. `reason` describes the
    first repair, None when the log was intact.
    """

    segments: int
    batches: int
    truncated_bytes: int
    deleted_segments: int
    reason: str | None
    repairs: tuple[str, ...] = ()
    aside_files: tuple[str, ...] = ()
    aside_bytes: int = 0
    gaps: tuple[OffsetGap, ...] = ()
    clean_shutdown: bool = False
    log_end_offset: int = 0
    evidence_end_offset: int = 0

    @property
    def repaired(self) -> bool:
        """Whether recovery changed anything on disk or in the offsets."""
        return bool(self.repairs)

    @property
    def first_missing_offset(self) -> int | None:
        """The lowest offset recovery could not keep, None when nothing is missing."""
        return min((g.start for g in self.gaps), default=None)

    def summary(self) -> str:
        """One line for the broker log."""
        shutdown = "a clean" if self.clean_shutdown else "an unclean"
        text = (
            f"{self.segments} segments, {self.batches} intact batches verified after "
            f"{shutdown} shutdown, log end offset {self.log_end_offset}"
        )
        if not self.repaired:
            return text
        gaps = ", ".join(f"{g.start}..{g.end - 1}" for g in self.gaps) or "none"
        return (
            f"{text}; {len(self.repairs)} repairs: {self.truncated_bytes} bytes cut, "
            f"{self.aside_bytes} kept aside in {len(self.aside_files)} files, offsets "
            f"missing: {gaps}; first: {self.reason}"
        )


@dataclass
class RecoveryNotes:
    """Collects repairs and evidence while a partition directory is recovered."""

    directory: str
    clean_shutdown: bool
    batches: int = 0
    truncated_bytes: int = 0
    aside_bytes: int = 0
    repairs: list[str] = field(default_factory=list)
    aside_files: list[str] = field(default_factory=list)
    gaps: list[OffsetGap] = field(default_factory=list)
    _evidence: dict[str, int] = field(default_factory=dict)

    def evidence(self, source: str, next_offset: int) -> None:
        """`source` shows offsets below `next_offset` were handed out."""
        if next_offset > self._evidence.get(source, -1):
            self._evidence[source] = next_offset

    def evidence_end(self) -> int:
        """One past the highest offset any evidence shows handed out."""
        return max(self._evidence.values(), default=0)

    def _repair(self, message: str) -> None:
        self.repairs.append(message)
        logger.warning("recovery of %s: %s", self.directory, message)

    def damaged(self, path: str, damaged: DamagedRange, *, torn: bool, last_segment: bool) -> None:
        """Note a damaged byte range of segment file `path` (cut out by the caller)."""
        self.truncated_bytes += damaged.size
        # Even a torn tail's readable header counts: those offsets were handed out
        # (stricter than Kafka, which reuses them after truncating).
        lost_to = damaged.claimed_next_offset
        if lost_to is not None:
            self.evidence(f"damaged batch header in {path}", lost_to)
        offsets = (
            f"offsets from {damaged.first_offset}"
            if lost_to is None
            else f"offsets {damaged.first_offset}..{lost_to - 1}"
        )
        where = f"{path} bytes {damaged.start}-{damaged.end} ({damaged.size} bytes, {offsets})"
        if not torn:
            self.aside_bytes += damaged.size
        if torn:
            self._repair(
                f"truncated the torn tail of {where} after an unclean shutdown: {damaged.reason}"
            )
        elif damaged.at_tail and last_segment and not self.clean_shutdown:
            self._repair(
                f"truncated a torn write at the end of {where} after an unclean "
                f"shutdown, bytes kept aside: {damaged.reason}"
            )
        else:
            kind = "damaged tail" if damaged.at_tail else "damaged bytes followed by intact batches"
            self._repair(f"cut out {kind} {where}, bytes kept aside: {damaged.reason}")
        # The offsets lost: up to the next intact batch when one follows, else as far
        # as the damaged header shows (at the tail without one, nothing is known lost
        # below the new log end).
        gap_end = damaged.next_intact_offset or lost_to
        if gap_end is not None and gap_end > damaged.first_offset:
            self.gaps.append(OffsetGap(damaged.first_offset, gap_end, damaged.reason))

    def missing(self, start: int, end: int, why: str) -> None:
        """Offsets [start, end) have no batches (a hole between segments or at the end)."""
        if end <= start:
            return
        # A damaged range already accounts for part of it when its header was readable.
        if any(g.start <= start and end <= g.end for g in self.gaps):
            return
        self.gaps.append(OffsetGap(start, end, why))
        self._repair(
            f"offsets {start}..{end - 1} have no batches ({why}); the log keeps the "
            "gap and never hands these offsets out again"
        )

    def aside(self, path: str) -> None:
        """Note a file written aside holding cut-out bytes."""
        self.aside_files.append(path)

    def report(self, segments: int, log_end_offset: int) -> RecoveryReport:
        """The frozen summary."""
        return RecoveryReport(
            segments=segments,
            batches=self.batches,
            truncated_bytes=self.truncated_bytes,
            deleted_segments=0,
            reason=self.repairs[0] if self.repairs else None,
            repairs=tuple(self.repairs),
            aside_files=tuple(self.aside_files),
            aside_bytes=self.aside_bytes,
            gaps=tuple(sorted(self.gaps, key=lambda g: (g.start, g.end))),
            clean_shutdown=self.clean_shutdown,
            log_end_offset=log_end_offset,
            evidence_end_offset=self.evidence_end(),
        )

    def log(self, report: RecoveryReport) -> None:
        """Log the report: WARNING when anything was repaired, INFO otherwise."""
        level = logging.WARNING if report.repaired else logging.INFO
        logger.log(level, "recovered %s: %s", self.directory, report.summary())
        if report.repaired:
            events.emit("recovery-truncation", dir=self.directory.rstrip("/").rsplit("/", 1)[-1],
                        bytes=report.truncated_bytes, missing_from=report.first_missing_offset)
