"""The OS node environment: real TCP, real files, the wall clock (DESIGN.md §2).

This module and nothing else in `reference_broker` touches `os`, `time` or sockets.

`OsStorage(root, volatile_until_fsync=True)` keeps every write in process memory
until the file is fsynced, so a SIGKILL of the broker loses exactly what a power
cut would lose: everything not yet fsynced. On fsync the buffered bytes are written
to the file and `os.fsync`ed; reads in between see the buffer. Directory operations
(create, rename, remove) reach the file system at once in both modes; only file
contents are held back.

Two harness-driven faults live here too, set by the OS runtime's control channel
(`harness/commands/broker.py`): `faults` (`StorageFaults`: ENOSPC on writes or on
fsyncs, extra fsync latency), and `tear_to_os`, the power cut of a disk that had
flushed part of the last write: the volatile tail of the file written last reaches the
file up to a random length, every other unsynced byte is lost.
"""

from __future__ import annotations

import errno
import os
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import trio

from reference_broker.env import NodeEnv


class WallClock:
    """The host's wall clock, optionally skewed by `offset_ms` (the process runtime's
    clock nemesis sets it from a file on SIGUSR1; see `harness/commands/broker.py`)."""

    def __init__(self, offset_ms: int = 0) -> None:
        self.offset_ms = offset_ms

    def now_ms(self) -> int:
        """Milliseconds since the Unix epoch, plus the skew."""
        return time.time_ns() // 1_000_000 + self.offset_ms


class OsNetwork:
    """Real TCP through trio."""

    async def listen(self, host: str, port: int) -> list[trio.abc.Listener[trio.abc.Stream]]:
        """Open TCP listeners on host:port (port 0 picks a free port)."""
        listeners = await trio.open_tcp_listeners(port, host=host)
        return list(listeners)

    async def connect(self, host: str, port: int) -> trio.abc.Stream:
        """Open a TCP stream to host:port."""
        return await trio.open_tcp_stream(host, port)


@dataclass
class StorageFaults:
    """Injected disk faults: writes and/or fsyncs fail with ENOSPC (before changing
    anything), and every fsync first waits `fsync_delay_s`."""

    enospc_write: bool = False
    enospc_fsync: bool = False
    fsync_delay_s: float = 0.0


def _no_space(path: str) -> OSError:
    return OSError(errno.ENOSPC, "No space left on device (injected by the harness)", path)


class _Inode:
    """One file's descriptor and, in volatile mode, its not-yet-durable contents.

    Shared by every handle open on the same path, so that all of them see one file.
    In volatile mode the file's logical contents are: the on-disk bytes [0, cut)
    with `overwrites` applied, followed by `tail`. `cut` drops below the on-disk size
    when the file is truncated; the truncation, like the writes, reaches the disk
    only on fsync.
    """

    def __init__(self, path: str, fd: int, volatile: bool) -> None:
        self.path = path
        self.fd = fd
        self.volatile = volatile
        self.disk_size = os.fstat(fd).st_size
        self.cut = self.disk_size
        self.tail = bytearray()
        self.overwrites: list[tuple[int, bytes]] = []
        self.handles = 0
        self.fsyncs_in_flight = 0
        self.fd_closed = False
        # Set once the path no longer names this inode (renamed over or removed).
        self.detached = False

    @property
    def size(self) -> int:
        return self.cut + len(self.tail) if self.volatile else self.disk_size

    @property
    def dirty(self) -> bool:
        return self.volatile and (
            self.cut != self.disk_size or bool(self.tail) or bool(self.overwrites)
        )

    def read(self, offset: int, size: int) -> bytes:
        if offset < 0 or size < 0:
            raise ValueError(f"read of {size} bytes at {offset} in {self.path}")
        end = min(offset + size, self.size)
        if end <= offset:
            return b""
        if not self.volatile:
            return os.pread(self.fd, end - offset, offset)
        parts: list[bytes] = []
        if offset < self.cut:
            disk_end = min(end, self.cut)
            chunk = os.pread(self.fd, disk_end - offset, offset)
            if self.overwrites:
                patched = bytearray(chunk)
                for at, data in self.overwrites:
                    lo, hi = max(at, offset), min(at + len(data), disk_end)
                    if lo < hi:
                        patched[lo - offset : hi - offset] = data[lo - at : hi - at]
                chunk = bytes(patched)
            parts.append(chunk)
        if end > self.cut:
            start = max(offset, self.cut) - self.cut
            parts.append(bytes(self.tail[start : end - self.cut]))
        return b"".join(parts)

    def append(self, data: bytes) -> None:
        if self.volatile:
            self.tail += data
        else:
            written = os.pwrite(self.fd, data, self.disk_size)
            if written != len(data):
                raise OSError(f"short write to {self.path}: {written} of {len(data)} bytes")
            self.disk_size += written

    def write_at(self, offset: int, data: bytes) -> None:
        if offset < 0:
            raise ValueError(f"write at negative offset {offset} in {self.path}")
        if not self.volatile:
            written = os.pwrite(self.fd, data, offset)
            if written != len(data):
                raise OSError(f"short write to {self.path}: {written} of {len(data)} bytes")
            self.disk_size = max(self.disk_size, offset + written)
            return
        end = offset + len(data)
        if offset < self.cut:
            below = data[: self.cut - offset]
            self.overwrites.append((offset, bytes(below)))
            data = data[len(below) :]
            offset = self.cut
        if data:
            start = offset - self.cut
            if start > len(self.tail):
                self.tail += bytes(start - len(self.tail))
            self.tail[start : start + len(data)] = data
        assert self.size >= end

    def truncate(self, size: int) -> None:
        if size < 0:
            raise ValueError(f"truncate {self.path} to negative size {size}")
        if not self.volatile:
            os.ftruncate(self.fd, size)
            self.disk_size = size
            return
        if size >= self.cut:
            keep = size - self.cut
            if keep <= len(self.tail):
                del self.tail[keep:]
            else:
                self.tail += bytes(keep - len(self.tail))
            return
        self.cut = size
        self.tail.clear()
        self.overwrites = [(at, data[: size - at]) for at, data in self.overwrites if at < size]

    def write_back(self) -> None:
        """Apply buffered truncation and writes to the file (volatile mode)."""
        if not self.dirty:
            return
        if self.cut < self.disk_size:
            os.ftruncate(self.fd, self.cut)
        for at, data in self.overwrites:
            os.pwrite(self.fd, data, at)
        if self.tail:
            written = os.pwrite(self.fd, self.tail, self.cut)
            if written != len(self.tail):
                raise OSError(f"short write to {self.path}: {written} of {len(self.tail)} bytes")
        self.disk_size = self.cut + len(self.tail)
        self.cut = self.disk_size
        self.tail = bytearray()
        self.overwrites = []

    def close_fd(self) -> None:
        if not self.fd_closed:
            self.fd_closed = True
            os.close(self.fd)


class OsFile:
    """A handle on a file in an `OsStorage`."""

    def __init__(self, storage: OsStorage, inode: _Inode) -> None:
        self._storage = storage
        self._inode = inode
        self._closed = False
        inode.handles += 1

    @property
    def path(self) -> str:
        """The file's path relative to the storage root (follows renames)."""
        return self._inode.path

    def _live(self) -> _Inode:
        if self._closed:
            raise ValueError(f"I/O on closed storage file {self._inode.path}")
        return self._inode

    def size(self) -> int:
        """Bytes in the file as this node sees them, durable or not."""
        return self._live().size

    def read(self, offset: int, size: int) -> bytes:
        """Up to `size` bytes from `offset`; shorter at end of file."""
        return self._live().read(offset, size)

    def append(self, data: bytes) -> None:
        """Append bytes at the end of the file."""
        inode = self._live()
        if self._storage.faults.enospc_write:
            raise _no_space(inode.path)
        inode.append(data)
        self._storage.last_written = inode

    def write_at(self, offset: int, data: bytes) -> None:
        """Overwrite bytes at `offset`, extending the file if needed."""
        inode = self._live()
        if self._storage.faults.enospc_write:
            raise _no_space(inode.path)
        inode.write_at(offset, data)
        self._storage.last_written = inode

    def truncate(self, size: int) -> None:
        """Cut (or zero-extend) the file to `size` bytes."""
        inode = self._live()
        inode.truncate(size)
        self._storage.last_written = inode

    async def fsync(self) -> None:
        """Write back buffered bytes (volatile mode) and `os.fsync` the file."""
        inode = self._live()
        faults = self._storage.faults
        if faults.fsync_delay_s > 0:
            await trio.sleep(faults.fsync_delay_s)
        if faults.enospc_fsync:
            raise _no_space(inode.path)
        inode.write_back()
        inode.fsyncs_in_flight += 1
        try:
            await trio.to_thread.run_sync(os.fsync, inode.fd)
        finally:
            inode.fsyncs_in_flight -= 1
            self._storage._maybe_release(inode)

    def close(self) -> None:
        """Release the handle. In volatile mode unsynced bytes stay buffered in memory."""
        if self._closed:
            return
        self._closed = True
        self._inode.handles -= 1
        self._storage._maybe_release(self._inode)


class OsStorage:
    """A directory on the host's file system, implementing the `Storage` protocol."""

    def __init__(self, root: Path, *, volatile_until_fsync: bool = False) -> None:
        self.root = Path(root)
        self.volatile_until_fsync = volatile_until_fsync
        self.root.mkdir(parents=True, exist_ok=True)
        self._inodes: dict[str, _Inode] = {}
        self.faults = StorageFaults()
        self.last_written: _Inode | None = None

    def _abs(self, path: str) -> Path:
        pure = PurePosixPath(path)
        if pure.is_absolute() or ".." in pure.parts:
            raise ValueError(f"storage paths are relative and stay under the root: {path!r}")
        return self.root.joinpath(*pure.parts)

    @staticmethod
    def _key(path: str) -> str:
        return str(PurePosixPath(path))

    def open(self, path: str, *, create: bool = True) -> OsFile:
        """Open a file for reading and writing, creating it and its parents if asked."""
        key = self._key(path)
        inode = self._inodes.get(key)
        if inode is None:
            target = self._abs(key)
            flags = os.O_RDWR | getattr(os, "O_CLOEXEC", 0)
            if create:
                target.parent.mkdir(parents=True, exist_ok=True)
                flags |= os.O_CREAT
            fd = os.open(target, flags, 0o644)
            inode = _Inode(key, fd, self.volatile_until_fsync)
            self._inodes[key] = inode
        return OsFile(self, inode)

    def exists(self, path: str) -> bool:
        """Whether a file or directory exists."""
        return self._key(path) in self._inodes or self._abs(path).exists()

    def listdir(self, path: str) -> list[str]:
        """Names in a directory, sorted; empty when it does not exist."""
        target = self._abs(path)
        names = set(os.listdir(target)) if target.is_dir() else set()
        return sorted(names)

    def makedirs(self, path: str) -> None:
        """Create a directory and its parents."""
        self._abs(path).mkdir(parents=True, exist_ok=True)

    def rename(self, src: str, dst: str) -> None:
        """Atomically replace dst with src; buffered contents move with the file."""
        src_key, dst_key = self._key(src), self._key(dst)
        dst_abs = self._abs(dst_key)
        dst_abs.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self._abs(src_key), dst_abs)
        replaced = self._inodes.pop(dst_key, None)
        if replaced is not None:
            # Handles on the replaced file keep an unlinked inode, as on POSIX.
            replaced.path = f"{dst_key} (replaced)"
            replaced.detached = True
            self._maybe_release(replaced)
        if src_key in self._inodes:
            # A file: nothing lives under it. Scanning every open inode here made creating
            # n partitions (one config-file rename each) cost O(n^2).
            moved = {src_key: self._inodes[src_key]}
        else:
            moved = {k: v for k, v in self._inodes.items() if _is_under(k, src_key)}
        for key, inode in moved.items():
            del self._inodes[key]
            new_key = dst_key + key[len(src_key) :]
            inode.path = new_key
            self._inodes[new_key] = inode

    def remove(self, path: str) -> None:
        """Delete a file, or a directory with everything under it; buffers go too."""
        key = self._key(path)
        target = self._abs(key)
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        else:
            target.unlink()
        for k in [k for k in self._inodes if _is_under(k, key)]:
            inode = self._inodes.pop(k)
            inode.path = f"{k} (removed)"
            inode.tail = bytearray()
            inode.overwrites = []
            inode.cut = inode.disk_size
            inode.detached = True
            self._maybe_release(inode)

    async def fsync_dir(self, path: str) -> None:
        """Make a directory's entries durable."""
        if self.faults.fsync_delay_s > 0:
            await trio.sleep(self.faults.fsync_delay_s)
        if self.faults.enospc_fsync:
            raise _no_space(path)
        fd = os.open(self._abs(path), os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            await trio.to_thread.run_sync(os.fsync, fd)
        finally:
            os.close(fd)

    def unsynced_bytes(self) -> int:
        """Bytes buffered in memory and not yet written back (volatile mode)."""
        return sum(
            len(i.tail) + sum(len(d) for _, d in i.overwrites) for i in self._inodes.values()
        )

    def spill_to_os(self) -> int:
        """Hand every buffered write to the OS without fsync; returns the bytes written.

        In volatile mode the broker's memory plays the page cache. A real process crash
        (unlike a power cut) keeps what the process wrote to the page cache, so before
        the process runtime's `kill` takes the broker down it calls this: afterwards
        the files hold exactly what a crashed Kafka broker would leave behind.
        """
        spilled = self.unsynced_bytes()
        for inode in list(self._inodes.values()):
            if not inode.detached:
                inode.write_back()
        return spilled

    def tear_to_os(self, rng: random.Random) -> tuple[str, int, int] | None:
        """A torn write at a power cut (volatile mode): of the file written last, a
        random prefix of its unsynced appended tail reaches the file; nothing else
        unsynced does. Returns (path, bytes kept, bytes of the tail), or None when the
        last write left no appended tail to tear (then nothing is written)."""
        inode = self.last_written
        if inode is None or inode.detached or not inode.tail or inode.cut != inode.disk_size:
            return None
        keep = rng.randrange(len(inode.tail))
        if keep:
            os.pwrite(inode.fd, bytes(inode.tail[:keep]), inode.cut)
        return inode.path, keep, len(inode.tail)

    def _maybe_release(self, inode: _Inode) -> None:
        # An inode with buffered bytes outlives its handles: the data is "in the
        # page cache" of this process until fsync or death.
        if inode.handles > 0 or inode.fsyncs_in_flight > 0:
            return
        if not inode.detached:
            if inode.dirty:
                return
            del self._inodes[inode.path]
        inode.close_fd()


def _is_under(key: str, prefix: str) -> bool:
    return key == prefix or key.startswith(prefix + "/")


def os_node_env(
    data_dir: Path, *, volatile_until_fsync: bool = False, seed: int | None = None
) -> NodeEnv:
    """A NodeEnv on the host: TCP, files under `data_dir`, wall clock, rng seeded by `seed`."""
    return NodeEnv(
        network=OsNetwork(),
        storage=OsStorage(data_dir, volatile_until_fsync=volatile_until_fsync),
        clock=WallClock(),
        rng=random.Random(seed),
    )
