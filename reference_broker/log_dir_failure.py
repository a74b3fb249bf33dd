"""What the broker does when its disk fails: Kafka's LogDirFailureChannel, one log dir.

Kafka marks a log directory offline on the first I/O error in it (a full disk on a
write or an fsync, EIO, a read-only remount) and, when no log directory is left
online, halts the broker (`Exit.halt`: no clean shutdown, no last flush). This broker
has one log directory, its whole storage, so the first such error halts it: an
operator (here, the harness) frees space or replaces the disk and restarts it, and
recovery then finds only what had reached the disk before the error.

`FailureAwareStorage` wraps the node's `Storage`: an `OSError` whose errno says the
disk itself failed (`DISK_ERRNOS`) is reported to the channel and re-raised; from then
on every call fails at once with EIO ("log directory offline"), so nothing more is
written while the broker unwinds. Errors that say a path is wrong (ENOENT, EEXIST, ...)
are ordinary control flow and pass through untouched. The first report cancels the
broker's nursery (`on_failure`, set by `serve_broker`), which then ends with
`LogDirFailedError`; the runtimes treat that as a halted process (the OS runtime exits
with `HALT_EXIT_CODE`).
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable

from reference_broker.env import Storage, StorageFile

logger = logging.getLogger("faultline.broker.log_dir")

# errno values that mean the disk (not the caller) failed.
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EIO, errno.EDQUOT, errno.EROFS})
# Kafka's Exit.halt(1) after its last log directory went offline.
HALT_EXIT_CODE = 1


class LogDirFailedError(Exception):
    """The broker halted because its log directory failed (the message says why)."""


class LogDirFailureChannel:
    """Where storage reports a failed log directory; the broker halts on the first report."""

    def __init__(self) -> None:
        self.reason: str | None = None
        # Called once, on the first failure: the broker's way to stop everything.
        self.on_failure: Callable[[], object] | None = None

    def fail(self, reason: str) -> None:
        """Mark the log directory offline (only the first reason is kept)."""
        if self.reason is not None:
            return
        self.reason = reason
        logger.critical(
            "log directory failed: %s. Every log in it is offline and this broker halts "
            "(Kafka's behaviour with a single log.dirs entry). Free space or replace the "
            "disk, then restart the broker: recovery keeps what reached the disk.",
            reason,
        )
        if self.on_failure is not None:
            self.on_failure()

    def error(self) -> LogDirFailedError:
        """The exception a halted broker ends with."""
        return LogDirFailedError(f"log directory failed: {self.reason}; broker halted")

    def check(self) -> None:
        """Raise EIO if the log directory is already offline."""
        if self.reason is not None:
            raise OSError(errno.EIO, f"log directory offline after: {self.reason}")


def _is_disk_error(exc: OSError) -> bool:
    return exc.errno in DISK_ERRNOS


class FailureAwareFile:
    """A `StorageFile` whose disk errors take the log directory offline."""

    __slots__ = ("_channel", "_inner")

    def __init__(self, inner: StorageFile, channel: LogDirFailureChannel) -> None:
        self._inner = inner
        self._channel = channel

    @property
    def path(self) -> str:
        """The wrapped file's path."""
        return self._inner.path

    def _failed(self, what: str, exc: OSError) -> None:
        if _is_disk_error(exc):
            self._channel.fail(f"{what} {self._inner.path}: {exc.strerror or exc}")

    def size(self) -> int:
        """Bytes in the file."""
        return self._inner.size()

    def read(self, offset: int, size: int) -> bytes:
        """Up to `size` bytes from `offset`."""
        self._channel.check()
        try:
            return self._inner.read(offset, size)
        except OSError as exc:
            self._failed("read of", exc)
            raise

    def append(self, data: bytes) -> None:
        """Append bytes."""
        self._channel.check()
        try:
            self._inner.append(data)
        except OSError as exc:
            self._failed("write to", exc)
            raise

    def write_at(self, offset: int, data: bytes) -> None:
        """Overwrite bytes at `offset`."""
        self._channel.check()
        try:
            self._inner.write_at(offset, data)
        except OSError as exc:
            self._failed("write to", exc)
            raise

    def truncate(self, size: int) -> None:
        """Cut the file to `size` bytes."""
        self._channel.check()
        try:
            self._inner.truncate(size)
        except OSError as exc:
            self._failed("truncation of", exc)
            raise

    async def fsync(self) -> None:
        """Make the file durable."""
        self._channel.check()
        try:
            await self._inner.fsync()
        except OSError as exc:
            self._failed("fsync of", exc)
            raise

    def close(self) -> None:
        """Release the handle."""
        self._inner.close()


class FailureAwareStorage:
    """A `Storage` whose disk errors take the log directory offline (see module doc)."""

    def __init__(self, inner: Storage, channel: LogDirFailureChannel) -> None:
        self.inner = inner
        self.channel = channel

    def _failed(self, what: str, path: str, exc: OSError) -> None:
        if _is_disk_error(exc):
            self.channel.fail(f"{what} {path}: {exc.strerror or exc}")

    def open(self, path: str, *, create: bool = True) -> FailureAwareFile:
        """Open a file (see `Storage.open`)."""
        self.channel.check()
        try:
            return FailureAwareFile(self.inner.open(path, create=create), self.channel)
        except OSError as exc:
            self._failed("open of", path, exc)
            raise

    def exists(self, path: str) -> bool:
        """Whether a file or directory exists."""
        return self.inner.exists(path)

    def listdir(self, path: str) -> list[str]:
        """Names in a directory."""
        self.channel.check()
        return self.inner.listdir(path)

    def makedirs(self, path: str) -> None:
        """Create a directory and its parents."""
        self.channel.check()
        try:
            self.inner.makedirs(path)
        except OSError as exc:
            self._failed("creation of", path, exc)
            raise

    def rename(self, src: str, dst: str) -> None:
        """Atomically replace dst with src."""
        self.channel.check()
        try:
            self.inner.rename(src, dst)
        except OSError as exc:
            self._failed("rename to", dst, exc)
            raise

    def remove(self, path: str) -> None:
        """Delete a file or a directory tree."""
        self.channel.check()
        try:
            self.inner.remove(path)
        except OSError as exc:
            self._failed("removal of", path, exc)
            raise

    async def fsync_dir(self, path: str) -> None:
        """Make a directory's entries durable."""
        self.channel.check()
        try:
            await self.inner.fsync_dir(path)
        except OSError as exc:
            self._failed("fsync of directory", path, exc)
            raise
