"""The client's partitioner and assignors, as pure functions, against kafka-python's.

murmur2 must equal the Java client's (vectors from Kafka's own tests) and kafka-python's
on any bytes; range and roundrobin must produce exactly kafka-python's assignments; the
cooperative-sticky assignor must be valid, balanced, sticky and never hand a partition to
a new owner while its old owner still holds it.
"""

from __future__ import annotations

import random
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st
from kafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from kafka.coordinator.assignors.range import RangePartitionAssignor
from kafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from kafka.partitioner.default import murmur2 as kafka_python_murmur2
from kafka.protocol.consumer.group import JoinGroupResponse
from kafka.protocol.consumer.metadata import ConsumerProtocolSubscription

from workloads.client.assignors import (
    CooperativeStickyAssignor,
    MemberSubscription,
    RangeAssignor,
    RoundRobinAssignor,
    decode_assignment,
    decode_subscription,
    encode_assignment,
    encode_subscription,
)
from workloads.client.cluster import TopicPartition
from workloads.client.partitioner import DefaultPartitioner, murmur2, partition_for_key


def test_murmur2_matches_java_vectors() -> None:
    # org.apache.kafka.common.utils.UtilsTest#testMurmur2 (signed ints there).
    vectors = {b"21": -973932308, b"foobar": -790332482, b"a-little-bit-long-string": -985981536}
    for data, signed in vectors.items():
        assert murmur2(data) == signed & 0xFFFFFFFF


@given(st.binary(max_size=64))
def test_murmur2_matches_kafka_python(data: bytes) -> None:
    assert murmur2(data) == kafka_python_murmur2(data)


@given(st.binary(min_size=0, max_size=32), st.integers(min_value=1, max_value=64))
def test_keyed_partition_matches_kafka_python(key: bytes, partitions: int) -> None:
    assert (
        partition_for_key(key, partitions) == (kafka_python_murmur2(key) & 0x7FFFFFFF) % partitions
    )


def test_null_keys_stick_to_one_partition_until_a_new_batch() -> None:
    partitioner = DefaultPartitioner(random.Random(7))
    parts = [0, 1, 2, 3]
    first = partitioner.partition("t", None, parts, parts)
    assert all(partitioner.partition("t", None, parts, parts) == first for _ in range(50))
    partitioner.on_new_batch("t", parts, parts, first)
    second = partitioner.partition("t", None, parts, parts)
    assert second != first
    # Only partitions with a leader are chosen when some have one.
    partitioner.on_new_batch("t", parts, [3], second)
    assert partitioner.partition("t", None, parts, [3]) == 3


def test_same_seed_same_sticky_choices() -> None:
    def choices(seed: int) -> list[int]:
        p = DefaultPartitioner(random.Random(seed))
        out = []
        for _ in range(20):
            current = p.partition("t", None, list(range(8)), list(range(8)))
            out.append(current)
            p.on_new_batch("t", list(range(8)), list(range(8)), current)
        return out

    assert choices(3) == choices(3)


# -- assignors ----------------------------------------------------------------------------

members_strategy = st.lists(
    st.sets(st.sampled_from(["a", "b", "c"]), min_size=1), min_size=1, max_size=6
)
counts_strategy = st.fixed_dictionaries(
    {t: st.integers(min_value=1, max_value=9) for t in ["a", "b", "c"]}
)


class _Cluster:
    """The two methods of kafka-python's ClusterMetadata its assignors call."""

    def __init__(self, counts: dict[str, int]) -> None:
        self.counts = counts

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        return set(range(self.counts[topic])) if topic in self.counts else None


def _kafka_python(
    assignor: type[AbstractPartitionAssignor], counts: dict[str, int], subs: list[set[str]]
) -> dict:
    members = [
        JoinGroupResponse.JoinGroupResponseMember(
            member_id=f"m{i}",
            group_instance_id=None,
            metadata=ConsumerProtocolSubscription(0, sorted(topics), b""),
        )
        for i, topics in enumerate(subs)
    ]
    result = assignor.assign(_Cluster(counts), members)
    return {
        m: {TopicPartition(t, p) for t, ps in a.assigned_partitions for p in ps}
        for m, a in result.items()
    }


def _ours(assignor: object, counts: dict[str, int], subs: list[set[str]]) -> dict:
    members = [MemberSubscription(f"m{i}", None, sorted(t)) for i, t in enumerate(subs)]
    return assignor.assign(counts, members)  # type: ignore[attr-defined]


@settings(max_examples=60)
@given(counts_strategy, members_strategy)
def test_range_equals_kafka_python(counts: dict[str, int], subs: list[set[str]]) -> None:
    assert _ours(RangeAssignor(), counts, subs) == _kafka_python(
        RangePartitionAssignor, counts, subs
    )


@settings(max_examples=60)
@given(counts_strategy, members_strategy)
def test_roundrobin_equals_kafka_python(counts: dict[str, int], subs: list[set[str]]) -> None:
    ours = _ours(RoundRobinAssignor(), counts, subs)
    if len({frozenset(s) for s in subs}) == 1:
        assert ours == _kafka_python(RoundRobinPartitionAssignor, counts, subs)
    # kafka-python 3.0.12 raises KeyError on unequal subscriptions; ours must be valid.
    wanted = {TopicPartition(t, p) for s in subs for t in s for p in range(counts[t])}
    assert Counter(tp for tps in ours.values() for tp in tps) == Counter(wanted)
    for i, topics in enumerate(subs):
        assert all(tp.topic in topics for tp in ours[f"m{i}"])


@settings(max_examples=80)
@given(
    st.integers(min_value=1, max_value=12),
    st.integers(min_value=1, max_value=5),
    st.integers(min_value=1, max_value=5),
    st.randoms(use_true_random=False),
)
def test_cooperative_sticky_two_phase_moves_are_valid_balanced_and_sticky(
    partitions: int, before: int, after: int, rnd: random.Random
) -> None:
    assignor = CooperativeStickyAssignor()
    counts = {"t": partitions}
    members = [MemberSubscription(f"m{i}", None, ["t"]) for i in range(before)]
    owned = assignor.assign(counts, members)
    # Membership changes: some leave, some join; survivors report what they own.
    survivors = members[: min(before, after)]
    joined = [MemberSubscription(f"n{i}", None, ["t"]) for i in range(max(0, after - before))]
    current = [
        MemberSubscription(m.member_id, None, ["t"], sorted(owned[m.member_id]), 1)
        for m in survivors
    ] + joined
    rnd.shuffle(current)
    first = assignor.assign(counts, current)
    # Round 1: nothing is given to a member while another survivor still owns it.
    for member, tps in first.items():
        for tp in tps:
            holders = [m.member_id for m in current if tp in m.owned]
            assert holders in ([], [member])
    # Round 2: owners dropped what they lost; the result is complete and balanced.
    second_input = [
        MemberSubscription(m.member_id, None, ["t"], sorted(first[m.member_id]), 2) for m in current
    ]
    second = assignor.assign(counts, second_input)
    flat = [tp for tps in second.values() for tp in tps]
    assert sorted(flat) == [TopicPartition("t", p) for p in range(partitions)]
    sizes = [len(tps) for tps in second.values()]
    assert max(sizes) - min(sizes) <= 1
    # Sticky: a survivor keeps at least min(owned, fair share) of its partitions.
    share = partitions // len(current)
    for m in survivors:
        kept = owned[m.member_id] & second[m.member_id]
        assert len(kept) >= min(len(owned[m.member_id]), share)


def test_subscription_and_assignment_bytes_round_trip_through_kafka_python() -> None:
    data = encode_subscription(["t", "u"], [TopicPartition("t", 1)], 5, 2)
    decoded = ConsumerProtocolSubscription.decode(data)
    assert list(decoded.topics) == ["t", "u"]
    assert decoded.generation_id == 5
    ours = decode_subscription("m", None, data)
    assert ours.owned == [TopicPartition("t", 1)] and ours.generation == 5
    legacy = decode_subscription("m", None, ConsumerProtocolSubscription(0, ["t"], b"").encode())
    assert legacy.owned == [] and legacy.generation == -1
    tps = {TopicPartition("t", 0), TopicPartition("u", 3)}
    assert decode_assignment(encode_assignment(tps, 1)) == tps
    assert decode_assignment(b"") == set()
