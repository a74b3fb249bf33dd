"""Kafka's default partitioner: murmur2 of the key, sticky partitions for null keys.

A keyed record goes to `toPositive(murmur2(key)) % numPartitions` over *all*
partitions, exactly as the Java client and kafka-python compute it, so a key lands
on the same partition whichever of them produced it. A record without a key sticks
to one partition, chosen at random among those with a leader, until the batch for
it is closed; the next batch picks another (KIP-480). Randomness comes from the
injected rng so simulated runs repeat.
"""

from __future__ import annotations

import functools
import random

_M = 0x5BD1E995
_SEED = 0x9747B28C
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """32-bit MurmurHash2 as `org.apache.kafka.common.utils.Utils.murmur2` (unsigned)."""
    length = len(data)
    h = (_SEED ^ length) & _MASK
    end = length - length % 4
    for i in range(0, end, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    rest = length % 4
    if rest == 3:
        h ^= data[end + 2] << 16
    if rest >= 2:
        h ^= data[end + 1] << 8
    if rest >= 1:
        h ^= data[end]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h


def partition_for_key(key: bytes, num_partitions: int) -> int:
    """The partition Kafka's default partitioner picks for a non-null key."""
    if num_partitions <= 0:
        raise ValueError("a topic has at least one partition")
    return (_murmur2_of_key(bytes(key)) & 0x7FFFFFFF) % num_partitions


# Workloads draw keys from small sets, and hashing in Python costs a few microseconds.
_murmur2_of_key = functools.lru_cache(maxsize=4096)(murmur2)


class DefaultPartitioner:
    """Hash keyed records; stick null-key records to one partition per batch."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._sticky: dict[str, int] = {}

    def partition(
        self, topic: str, key: bytes | None, partitions: list[int], available: list[int]
    ) -> int:
        """Choose a partition; `partitions` are all of the topic's, `available` those led."""
        if key is not None:
            return partitions[partition_for_key(key, len(partitions))]
        current = self._sticky.get(topic)
        if current is None or current not in partitions:
            current = self._choose(partitions, available, exclude=None)
            self._sticky[topic] = current
        return current

    def on_new_batch(self, topic: str, partitions: list[int], available: list[int], prev: int):
        """A batch for the sticky partition filled up or was sent: move to another one."""
        if self._sticky.get(topic) == prev:
            self._sticky[topic] = self._choose(partitions, available, exclude=prev)

    def _choose(self, partitions: list[int], available: list[int], exclude: int | None) -> int:
        pool = available or partitions
        if exclude is not None and len(pool) > 1:
            pool = [p for p in pool if p != exclude]
        return pool[self._rng.randrange(len(pool))]
