"""All partition logs of one node, under one storage root.

Each partition lives in `<topic>-<partition>/`. A topic's config overrides are
persisted in every one of its partition directories as `topic.config` (Kafka
property names, one `key=value` a line) so that a directory alone is enough to
reopen its log with the right settings.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from reference_broker.env import Clock, Storage, StorageFile
from reference_broker.log.config import LogConfig
from reference_broker.log.partition_log import PartitionLog

TOPIC_CONFIG_FILE = "topic.config"
_TOPIC_NAME = re.compile(r"^[a-zA-Z0-9._-]{1,249}$")
_PARTITION_DIR = re.compile(r"^(?P<topic>[a-zA-Z0-9._-]+)-(?P<partition>\d+)$")


def partition_dir(topic: str, partition: int) -> str:
    """Kafka's directory name for a partition."""
    return f"{topic}-{partition}"


def check_topic_name(topic: str) -> None:
    """Raise ValueError unless `topic` is a legal Kafka topic name."""
    if not _TOPIC_NAME.match(topic) or topic in (".", ".."):
        raise ValueError(
            f"illegal topic name {topic!r}: use 1 to 249 characters from [a-zA-Z0-9._-], "
            "not '.' or '..'"
        )


def partition_dirs(storage: Storage) -> list[str]:
    """Names of the partition directories (`<topic>-<partition>`) under the storage root."""
    return [n for n in storage.listdir("") if _PARTITION_DIR.match(n) is not None]


class LogManager:
    """The partition logs of a node. Create with `LogManager.open`."""

    def __init__(self, storage: Storage, clock: Clock, default_config: LogConfig) -> None:
        self.storage = storage
        self.clock = clock
        self.default_config = default_config
        self._logs: dict[tuple[str, int], PartitionLog] = {}

    @classmethod
    def open(cls, storage: Storage, clock: Clock, default_config: LogConfig) -> LogManager:
        """Open and recover every partition directory found under the storage root."""
        manager = cls(storage, clock, default_config)
        for name in storage.listdir(""):
            match = _PARTITION_DIR.match(name)
            if match is None:
                continue
            topic, partition = match["topic"], int(match["partition"])
            config = manager._read_topic_config(name)
            manager._logs[(topic, partition)] = PartitionLog.open(storage, name, config, clock)
        return manager

    def _read_topic_config(self, directory: str) -> LogConfig:
        path = f"{directory}/{TOPIC_CONFIG_FILE}"
        if not self.storage.exists(path):
            return self.default_config
        f = self.storage.open(path, create=False)
        try:
            text = f.read(0, f.size()).decode("utf-8")
        finally:
            f.close()
        props: dict[str, str] = {}
        for line in text.splitlines():
            key, sep, value = line.partition("=")
            if sep:
                props[key.strip()] = value.strip()
        try:
            return LogConfig.from_kafka(props, base=self.default_config)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None

    def _write_topic_config(self, directory: str, config: LogConfig) -> StorageFile:
        """Write the overrides file; returns its open handle, not yet fsynced."""
        defaults = self.default_config.to_kafka()
        overrides = {k: v for k, v in config.to_kafka().items() if defaults.get(k) != v}
        path = f"{directory}/{TOPIC_CONFIG_FILE}"
        tmp = path + ".tmp"
        f = self.storage.open(tmp)
        f.truncate(0)
        f.append("".join(f"{k}={v}\n" for k, v in sorted(overrides.items())).encode())
        self.storage.rename(tmp, path)
        return f

    def get(self, topic: str, partition: int) -> PartitionLog | None:
        """The log of a partition, if this node has it."""
        return self._logs.get((topic, partition))

    def create(self, topic: str, partition: int, config: LogConfig | None = None) -> PartitionLog:
        """Create (or return the existing) log of a partition, persisting its config."""
        existing = self._logs.get((topic, partition))
        if existing is not None:
            return existing
        check_topic_name(topic)
        if partition < 0:
            raise ValueError(f"partition number must not be negative, got {partition}")
        directory = partition_dir(topic, partition)
        config = config or self.default_config
        self.storage.makedirs(directory)
        written: StorageFile | None = None
        try:
            written = self._write_topic_config(directory, config)
            log = PartitionLog.open(self.storage, directory, config, self.clock)
        except BaseException:
            # Typically EMFILE: leave neither an open handle nor a half-made directory that
            # the next start would take for a partition of this topic.
            if written is not None:
                written.close()
            if self.storage.exists(directory):
                self.storage.remove(directory)
            raise
        # The config file becomes durable with the log's next flush.
        log.sync_with_next_flush(written)
        self._logs[(topic, partition)] = log
        return log

    def update_config(self, topic: str, config: LogConfig) -> None:
        """Apply and persist a new config to every local partition of `topic`."""
        for (t, _), log in self._logs.items():
            if t == topic:
                log.sync_with_next_flush(self._write_topic_config(log.directory, config))
                log.config = config

    def delete(self, topic: str, partition: int) -> None:
        """Remove a partition's log and its directory."""
        log = self._logs.pop((topic, partition), None)
        if log is not None:
            log.delete()
        elif self.storage.exists(partition_dir(topic, partition)):
            self.storage.remove(partition_dir(topic, partition))

    def repaired(self) -> list[PartitionLog]:
        """Logs whose recovery changed something (to be flushed before serving)."""
        return [
            log for log in self._logs.values() if log.recovery is not None and log.recovery.repaired
        ]

    def all(self) -> Iterable[PartitionLog]:
        """Every partition log of the node."""
        return list(self._logs.values())

    def enforce_retention(self, now_ms: int) -> int:
        """Apply retention to every log; returns the number of segments deleted."""
        return sum(log.enforce_retention(now_ms) for log in self._logs.values())

    async def flush_due(self, now_ms: int) -> None:
        """Flush every log whose flush.messages / flush.ms says so."""
        for log in list(self._logs.values()):
            if log.flush_due(now_ms):
                await log.flush()

    async def close(self) -> None:
        """Close every log cleanly (flush, snapshot, high watermark checkpoint)."""
        for log in list(self._logs.values()):
            await log.close()
