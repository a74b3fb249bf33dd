"""An in-memory disk per node whose file contents are volatile until fsync.

`SimDisk` is what survives a node: its files, each holding the bytes the node sees
(`content`) and the bytes that would survive a power cut (`durable`). `SimStorage`
is one incarnation's view of that disk and implements `reference_broker.env.Storage`;
a crash kills the view (every later call raises `NodeCrashedError`) and the disk
decides what the next incarnation finds:

- `kill` (SIGKILL): the OS page cache survives the process, so every write survives;
- `power_loss`: only what was fsynced survives; with `tear`, the last written file
  keeps a random part of its un-fsynced change (a torn write), as a disk that had
  flushed some sectors of it.

Directory entries (create, rename, remove) are durable at once, like
`reference_broker.os_env.OsStorage` in volatile mode, so both runtimes lose the
same things on a power cut: file contents that were not fsynced.

Every disk also keeps `appends`, a journal of the bytes ever appended to a segment
file (`*.log`) of a workload topic (not `__`-internal ones). It outlives truncation,
power cuts and segment deletion, so the harness's ground-truth oracle
(`harness.oracle`) can see everything a replica ever appended, not only what its log
holds at the end. The journal keeps references to the `bytes` objects the broker
hands to `append` (it already makes them), so it costs one list entry per append.
"""

from __future__ import annotations

import errno
import functools
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePosixPath

import trio

from .clock import Agenda
from .errors import NodeCrashedError


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """Bytes appended to a segment file: the file's path then, and the bytes."""

    path: str
    data: bytes


def journals_appends(path: str) -> bool:
    """Whether appends to `path` go into the disk's journal: the segment files of topics
    a workload writes (the broker's own `__cluster_metadata`, `__consumer_offsets` hold
    no workload values)."""
    return path.endswith(".log") and not path.startswith("__")


class SimInode:
    """One file: what the node reads and what would survive a power cut."""

    __slots__ = ("content", "dirty_from", "durable", "journaled", "path")

    def __init__(self, path: str) -> None:
        self.path = path
        self.journaled = journals_appends(path)
        self.content = bytearray()
        self.durable = bytearray()
        # Lowest offset changed since the last fsync; None when content == durable.
        self.dirty_from: int | None = None

    def mark_dirty(self, offset: int) -> None:
        """Note a change at `offset` or beyond since the last fsync."""
        if self.dirty_from is None or offset < self.dirty_from:
            self.dirty_from = offset

    def sync(self) -> None:
        """Make the content durable, copying only what changed since the last sync."""
        if self.dirty_from is None:
            return
        start = min(self.dirty_from, len(self.durable))
        self.durable[start:] = self.content[start:]
        self.dirty_from = None

    def unsynced_bytes(self) -> int:
        """How many bytes of content a power cut would lose or change."""
        if self.dirty_from is None:
            return 0
        return max(len(self.content), len(self.durable)) - self.dirty_from

    def lose_volatile(self, tear: random.Random | None) -> None:
        """Revert to the durable bytes; with `tear`, keep a random prefix of the change."""
        if self.dirty_from is None:
            return
        if tear is not None and len(self.content) > self.dirty_from:
            cut = tear.randrange(self.dirty_from, len(self.content))
            self.durable[self.dirty_from : cut] = self.content[self.dirty_from : cut]
        self.content = bytearray(self.durable)
        self.dirty_from = None


# A broker opens and lists the same few paths again and again; PurePosixPath is slow.
@functools.lru_cache(maxsize=4096)
def _normalize(path: str) -> str:
    pure = PurePosixPath(path)
    if pure.is_absolute() or ".." in pure.parts:
        raise ValueError(f"storage paths are relative and stay under the root: {path!r}")
    return str(pure)


def _is_under(key: str, prefix: str) -> bool:
    return prefix == "." or key == prefix or key.startswith(prefix + "/")


class SimDisk:
    """A node's durable state across incarnations: files and directories by path.

    Injected disk faults live here, so they outlast a restart as a full disk would:
    `enospc_write` fails every write (append, write_at) with ENOSPC before it changes
    anything, `enospc_fsync` fails every fsync with ENOSPC, and `fsync_stall_s` is added
    to every fsync's latency.
    """

    def __init__(self) -> None:
        self.files: dict[str, SimInode] = {}
        self.dirs: set[str] = set()
        self.last_written: SimInode | None = None
        self.enospc_write = False
        self.enospc_fsync = False
        self.fsync_stall_s = 0.0
        # Everything ever appended to a workload topic's segment files (see above).
        self.appends: list[JournalEntry] = []

    def unsynced_bytes(self) -> int:
        """Bytes a power cut would lose or change, over all files."""
        return sum(inode.unsynced_bytes() for inode in self.files.values())

    def read_file(self, path: str) -> bytes:
        """A file's current content (for tests and debugging)."""
        return bytes(self.files[_normalize(path)].content)

    def durable_file(self, path: str) -> bytes:
        """What a power cut would leave of a file (for tests and debugging)."""
        return bytes(self.files[_normalize(path)].durable)

    def survive_kill(self) -> None:
        """A process crash: the page cache outlives the process, so everything persists."""
        for inode in self.files.values():
            inode.sync()

    def flip_bit(self, path: str, offset: int, bit: int) -> None:
        """Flip one bit of a file, durably (a disk fault found on the next read)."""
        inode = self.files[_normalize(path)]
        inode.sync()
        inode.content[offset] ^= 1 << bit
        inode.durable[offset] = inode.content[offset]

    def cut(self, path: str, size: int) -> None:
        """Truncate a file to `size` bytes, durably."""
        inode = self.files[_normalize(path)]
        inode.sync()
        del inode.content[size:]
        del inode.durable[size:]

    def survive_power_loss(self, tear: random.Random | None = None) -> None:
        """A power cut: un-fsynced contents are lost; `tear` tears the last write."""
        for inode in self.files.values():
            inode.lose_volatile(tear if inode is self.last_written else None)
        self.last_written = None


class SimFile:
    """A handle on a file of a `SimStorage`."""

    __slots__ = ("_closed", "_inode", "_storage")

    def __init__(self, storage: SimStorage, inode: SimInode) -> None:
        self._storage = storage
        self._inode = inode
        self._closed = False

    @property
    def path(self) -> str:
        """The file's path relative to the storage root (follows renames)."""
        return self._inode.path

    def _live(self) -> SimInode:
        self._storage.check_alive()
        if self._closed:
            raise ValueError(f"I/O on closed storage file {self._inode.path}")
        return self._inode

    def size(self) -> int:
        """Bytes in the file as the node sees them, durable or not."""
        return len(self._live().content)

    def read(self, offset: int, size: int) -> bytes:
        """Up to `size` bytes from `offset`; shorter at end of file."""
        if offset < 0 or size < 0:
            raise ValueError(f"read of {size} bytes at {offset} in {self.path}")
        return bytes(self._live().content[offset : offset + size])

    def append(self, data: bytes) -> None:
        """Append bytes; volatile until the next fsync."""
        inode = self._live()
        if self._storage.disk.enospc_write:
            raise _no_space(inode.path)
        inode.mark_dirty(len(inode.content))
        inode.content += data
        disk = self._storage.disk
        disk.last_written = inode
        if inode.journaled:
            disk.appends.append(JournalEntry(inode.path, bytes(data)))

    def write_at(self, offset: int, data: bytes) -> None:
        """Overwrite bytes at `offset`, zero-extending the file if needed."""
        if offset < 0:
            raise ValueError(f"write at negative offset {offset} in {self.path}")
        inode = self._live()
        if self._storage.disk.enospc_write:
            raise _no_space(inode.path)
        content = inode.content
        if offset > len(content):
            content += bytes(offset - len(content))
        inode.mark_dirty(offset)
        content[offset : offset + len(data)] = data
        disk = self._storage.disk
        disk.last_written = inode
        if inode.journaled:
            disk.appends.append(JournalEntry(inode.path, bytes(data)))

    def truncate(self, size: int) -> None:
        """Cut (or zero-extend) the file to `size` bytes."""
        if size < 0:
            raise ValueError(f"truncate {self.path} to negative size {size}")
        inode = self._live()
        content = inode.content
        if size < len(content):
            inode.mark_dirty(size)
            del content[size:]
        elif size > len(content):
            inode.mark_dirty(len(content))
            content += bytes(size - len(content))
        self._storage.disk.last_written = inode

    async def fsync(self) -> None:
        """Make everything written so far durable, then take the disk's fsync latency."""
        await self._storage.before_io()
        inode = self._live()
        if self._storage.disk.enospc_fsync:
            raise _no_space(inode.path)
        inode.sync()
        await self._storage.fsync_delay()

    def close(self) -> None:
        """Release the handle; unsynced bytes stay in the page cache."""
        self._closed = True


class SimStorage:
    """One incarnation's view of a `SimDisk`, implementing the broker's `Storage`.

    `gate` is awaited before every fsync (the pause model: a frozen node's I/O waits);
    `fsync_latency_s` is how long an fsync takes in virtual time.
    """

    def __init__(
        self,
        disk: SimDisk,
        *,
        fsync_latency_s: float = 0.0,
        gate: Callable[[], object] | None = None,
    ) -> None:
        self.disk = disk
        self.fsync_latency_s = fsync_latency_s
        self._gate = gate
        self.alive = True

    def crash(self) -> None:
        """End this incarnation: every later call through it raises NodeCrashedError."""
        self.alive = False

    def check_alive(self) -> None:
        """Raise NodeCrashedError if this incarnation has crashed."""
        if not self.alive:
            raise NodeCrashedError("this node has crashed; its storage is gone with it")

    async def before_io(self) -> None:
        """Wait while the node is paused, then check it still lives."""
        if self._gate is not None:
            await self._gate()  # type: ignore[misc]
        self.check_alive()

    async def fsync_delay(self) -> None:
        """Spend the disk's fsync latency, plus any injected stall (always a checkpoint)."""
        latency = self.fsync_latency_s + self.disk.fsync_stall_s
        if latency > 0:
            agenda = Agenda.for_this_run()  # a sleep without a cancel scope, if available
            if agenda is not None:
                await agenda.sleep_until(trio.current_time() + latency)
            else:
                await trio.sleep(latency)
        else:
            await trio.lowlevel.checkpoint()
        self.check_alive()

    def open(self, path: str, *, create: bool = True) -> SimFile:
        """Open a file, creating it (and its parents) if asked."""
        self.check_alive()
        key = _normalize(path)
        inode = self.disk.files.get(key)
        if inode is None:
            if key in self.disk.dirs:
                raise IsADirectoryError(f"{key} is a directory")
            if not create:
                raise FileNotFoundError(f"no such file in node storage: {key}")
            self._add_parents(key)
            inode = self.disk.files[key] = SimInode(key)
        return SimFile(self, inode)

    def _add_parents(self, key: str) -> None:
        # `key` is normalized (relative, single slashes): its parents are its prefixes.
        dirs = self.disk.dirs
        end = key.rfind("/")
        while end > 0:
            dirs.add(key[:end])
            end = key.rfind("/", 0, end)

    def exists(self, path: str) -> bool:
        """Whether a file or directory exists."""
        self.check_alive()
        key = _normalize(path)
        return key == "." or key in self.disk.files or key in self.disk.dirs

    def listdir(self, path: str) -> list[str]:
        """Names in a directory, sorted; empty when it does not exist."""
        self.check_alive()
        key = _normalize(path)
        prefix = "" if key == "." else key + "/"
        names = set()
        for entry in (*self.disk.files, *self.disk.dirs):
            if entry.startswith(prefix):
                names.add(entry[len(prefix) :].split("/", 1)[0])
        return sorted(names)

    def makedirs(self, path: str) -> None:
        """Create a directory and its parents."""
        self.check_alive()
        key = _normalize(path)
        if key in self.disk.files:
            raise FileExistsError(f"{key} is a file")
        if key != ".":
            self.disk.dirs.add(key)
            self._add_parents(key)

    def rename(self, src: str, dst: str) -> None:
        """Atomically replace dst with src (a file or a whole directory)."""
        self.check_alive()
        src_key, dst_key = _normalize(src), _normalize(dst)
        disk = self.disk
        if src_key not in disk.files and src_key not in disk.dirs:
            raise FileNotFoundError(f"rename: no such file or directory: {src_key}")
        if dst_key in disk.files:
            # Open handles keep the replaced file's inode, unlinked, as on POSIX.
            del disk.files[dst_key]
        self._add_parents(dst_key)
        for key in [k for k in disk.files if _is_under(k, src_key)]:
            inode = disk.files.pop(key)
            inode.path = dst_key + key[len(src_key) :]
            inode.journaled = journals_appends(inode.path)
            disk.files[inode.path] = inode
        moved_dirs = [d for d in disk.dirs if _is_under(d, src_key)]
        for d in moved_dirs:
            disk.dirs.discard(d)
        for d in moved_dirs:
            disk.dirs.add(dst_key + d[len(src_key) :])

    def remove(self, path: str) -> None:
        """Delete a file, or a directory with everything under it."""
        self.check_alive()
        key = _normalize(path)
        disk = self.disk
        if key not in disk.files and key not in disk.dirs:
            raise FileNotFoundError(f"remove: no such file or directory: {key}")
        for k in [k for k in disk.files if _is_under(k, key)]:
            inode = disk.files.pop(k)
            if disk.last_written is inode:
                disk.last_written = None
        for d in [d for d in disk.dirs if _is_under(d, key)]:
            disk.dirs.discard(d)

    async def fsync_dir(self, path: str) -> None:
        """Directory entries are durable at once here; this only costs the fsync latency."""
        await self.before_io()
        if self.disk.enospc_fsync:
            raise _no_space(path)
        await self.fsync_delay()


def _no_space(path: str) -> OSError:
    return OSError(errno.ENOSPC, "No space left on device (injected by the nemesis)", path)
