"""Client-side partition assignors (range, roundrobin, cooperative-sticky), as in Kafka.

The group leader decodes every member's `ConsumerProtocolSubscription` (Kafka's
consumer embedded protocol, encoded with kafka-python's schema classes so that
kafka-python and Java members read it), runs the assignor the coordinator chose
and encodes one `ConsumerProtocolAssignment` per member.

- range: per topic, partitions in order split into contiguous ranges over the
  members subscribed to it (sorted: static members by instance id first, then
  member ids), the first members getting one extra.
- roundrobin: all partitions of all topics, sorted, dealt to the sorted members in
  turn, skipping members not subscribed to a partition's topic.
- cooperative-sticky (KIP-429): a balanced assignment that keeps as many owned
  partitions in place as balance allows; a partition moving from one member to
  another is left out of this round (its owner revokes it and rejoins) and given
  to its new owner in the next, so no partition is ever owned twice.

All three are pure functions of their inputs: same members, same assignment.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from kafka.protocol.consumer.metadata import (
    ConsumerProtocolAssignment,
    ConsumerProtocolSubscription,
)

from .cluster import TopicPartition
from .errors import GroupError

Assignment = dict[str, set[TopicPartition]]


@dataclass
class MemberSubscription:
    """One member's JoinGroup metadata, decoded."""

    member_id: str
    group_instance_id: str | None
    topics: list[str]
    owned: list[TopicPartition] = field(default_factory=list)
    generation: int = -1

    @property
    def sort_key(self) -> tuple[int, str]:
        """Static members first (by instance id), then dynamic ones by member id."""
        if self.group_instance_id is not None:
            return (0, self.group_instance_id)
        return (1, self.member_id)


def decode_subscription(
    member_id: str, group_instance_id: str | None, metadata: bytes
) -> MemberSubscription:
    """Decode a member's protocol metadata from a JoinGroup response."""
    try:
        sub = ConsumerProtocolSubscription.decode(bytes(metadata))
    except Exception as exc:
        raise GroupError(
            f"member {member_id} sent subscription metadata this client cannot decode: {exc!r}"
        ) from exc
    owned = [
        TopicPartition(tp.topic, p)
        for tp in (getattr(sub, "owned_partitions", None) or ())
        for p in tp.partitions
    ]
    generation = getattr(sub, "generation_id", -1)
    return MemberSubscription(
        member_id,
        group_instance_id,
        list(sub.topics),
        owned,
        -1 if generation is None else generation,
    )


def encode_subscription(
    topics: Iterable[str], owned: Iterable[TopicPartition], generation: int, version: int
) -> bytes:
    """This member's JoinGroup metadata at ConsumerProtocolSubscription `version`."""
    by_topic: dict[str, list[int]] = defaultdict(list)
    for tp in owned:
        by_topic[tp.topic].append(tp.partition)
    sub = ConsumerProtocolSubscription(
        version=version,
        topics=sorted(topics),
        user_data=None,
        owned_partitions=[
            ConsumerProtocolSubscription.TopicPartition(topic=t, partitions=sorted(ps))
            for t, ps in sorted(by_topic.items())
        ],
        generation_id=generation,
    )
    return bytes(sub.encode())


def encode_assignment(partitions: Iterable[TopicPartition], version: int = 0) -> bytes:
    """A member's ConsumerProtocolAssignment bytes."""
    by_topic: dict[str, list[int]] = defaultdict(list)
    for tp in partitions:
        by_topic[tp.topic].append(tp.partition)
    assignment = ConsumerProtocolAssignment(
        version=version,
        assigned_partitions=[
            ConsumerProtocolAssignment.TopicPartition(topic=t, partitions=sorted(ps))
            for t, ps in sorted(by_topic.items())
        ],
        user_data=b"",
    )
    return bytes(assignment.encode())


def decode_assignment(data: bytes) -> set[TopicPartition]:
    """The partitions in a SyncGroup assignment (empty bytes: nothing assigned)."""
    if not data:
        return set()
    try:
        assignment = ConsumerProtocolAssignment.decode(bytes(data))
    except Exception as exc:
        raise GroupError(f"the group leader sent an undecodable assignment: {exc!r}") from exc
    return {
        TopicPartition(tp.topic, p) for tp in assignment.assigned_partitions for p in tp.partitions
    }


class Assignor(Protocol):
    """A partition assignment strategy run by the group leader."""

    name: str
    cooperative: bool
    subscription_version: int

    def assign(
        self, partitions_per_topic: Mapping[str, int], members: list[MemberSubscription]
    ) -> Assignment:
        """Map member id -> partitions, given each topic's partition count."""
        ...


class RangeAssignor:
    """Kafka's RangeAssignor."""

    name = "range"
    cooperative = False
    subscription_version = 0

    def assign(
        self, partitions_per_topic: Mapping[str, int], members: list[MemberSubscription]
    ) -> Assignment:
        """Contiguous ranges of each topic's partitions per subscribed member."""
        result: Assignment = {m.member_id: set() for m in members}
        by_topic: dict[str, list[MemberSubscription]] = defaultdict(list)
        for m in members:
            for t in set(m.topics):
                by_topic[t].append(m)
        for topic, subscribed in by_topic.items():
            count = partitions_per_topic.get(topic)
            if not count:
                continue
            subscribed.sort(key=lambda m: m.sort_key)
            per, extra = divmod(count, len(subscribed))
            start = 0
            for i, m in enumerate(subscribed):
                length = per + (1 if i < extra else 0)
                result[m.member_id].update(
                    TopicPartition(topic, p) for p in range(start, start + length)
                )
                start += length
        return result


class RoundRobinAssignor:
    """Kafka's RoundRobinAssignor."""

    name = "roundrobin"
    cooperative = False
    subscription_version = 0

    def assign(
        self, partitions_per_topic: Mapping[str, int], members: list[MemberSubscription]
    ) -> Assignment:
        """Deal all sorted partitions to the sorted members in turn."""
        result: Assignment = {m.member_id: set() for m in members}
        ordered = sorted(members, key=lambda m: m.sort_key)
        if not ordered:
            return result
        topics = sorted({t for m in members for t in m.topics if t in partitions_per_topic})
        turn = 0
        for topic in topics:
            for p in range(partitions_per_topic[topic]):
                for _ in range(len(ordered)):
                    m = ordered[turn % len(ordered)]
                    turn += 1
                    if topic in m.topics:
                        result[m.member_id].add(TopicPartition(topic, p))
                        break
        return result


class CooperativeStickyAssignor:
    """KIP-429's cooperative-sticky assignor: balanced, sticky, two-phase moves."""

    name = "cooperative-sticky"
    cooperative = True
    subscription_version = 2

    def assign(
        self, partitions_per_topic: Mapping[str, int], members: list[MemberSubscription]
    ) -> Assignment:
        """A balanced sticky assignment minus partitions still owned by another member."""
        target = sticky_balanced(partitions_per_topic, members)
        owner = current_owners(partitions_per_topic, members)
        return {
            member: {tp for tp in tps if owner.get(tp, member) == member}
            for member, tps in target.items()
        }


def current_owners(
    partitions_per_topic: Mapping[str, int], members: list[MemberSubscription]
) -> dict[TopicPartition, str]:
    """Who owns each partition now, by the members' own claims.

    A partition claimed by two members goes to the one with the higher generation;
    with equal generations neither keeps it (as Kafka's sticky assignor does).
    """
    claims: dict[TopicPartition, list[tuple[int, str]]] = defaultdict(list)
    for m in members:
        for tp in m.owned:
            if tp.partition < partitions_per_topic.get(tp.topic, 0) and tp.topic in m.topics:
                claims[tp].append((m.generation, m.member_id))
    owners: dict[TopicPartition, str] = {}
    for tp, claimants in claims.items():
        claimants.sort(reverse=True)
        if len(claimants) > 1 and claimants[0][0] == claimants[1][0]:
            continue
        owners[tp] = claimants[0][1]
    return owners


def sticky_balanced(
    partitions_per_topic: Mapping[str, int], members: list[MemberSubscription]
) -> Assignment:
    """A balanced assignment that keeps owned partitions where balance allows."""
    ordered = sorted(members, key=lambda m: m.sort_key)
    ids = [m.member_id for m in ordered]
    subscribed = {m.member_id: set(m.topics) for m in ordered}
    all_partitions = sorted(
        TopicPartition(t, p)
        for t in {t for m in ordered for t in m.topics}
        for p in range(partitions_per_topic.get(t, 0))
    )
    result: Assignment = {i: set() for i in ids}
    if not ids:
        return result
    owners = current_owners(partitions_per_topic, members)

    def eligible(tp: TopicPartition) -> list[str]:
        return [i for i in ids if tp.topic in subscribed[i]]

    same_subscriptions = len({frozenset(s) for s in subscribed.values()}) == 1
    unassigned: list[TopicPartition] = []
    if same_subscriptions:
        total, count = len(all_partitions), len(ids)
        min_quota, extra_slots = divmod(total, count)
        owned_by: dict[str, list[TopicPartition]] = defaultdict(list)
        for tp in all_partitions:
            if tp in owners:
                owned_by[owners[tp]].append(tp)
            else:
                unassigned.append(tp)
        # Members keep up to min_quota owned partitions; the ones owning more may keep
        # one extra while extra slots last (most-owning first, then member order).
        for i in sorted(ids, key=lambda i: (-len(owned_by[i]), ids.index(i))):
            keep = owned_by[i][:min_quota]
            if len(owned_by[i]) > min_quota and extra_slots > 0:
                keep = owned_by[i][: min_quota + 1]
                extra_slots -= 1
            result[i].update(keep)
            unassigned.extend(owned_by[i][len(keep) :])
        unassigned.sort()
        for tp in unassigned:
            below = [i for i in ids if len(result[i]) < min_quota]
            if below:
                result[below[0]].add(tp)
                continue
            room = [i for i in ids if len(result[i]) == min_quota]
            if extra_slots > 0 and room:
                result[room[0]].add(tp)
                extra_slots -= 1
                continue
            least = min(ids, key=lambda i: (len(result[i]), ids.index(i)))
            result[least].add(tp)
        return result
    # Members subscribe to different topics: keep valid owned partitions, place the
    # rest on the least loaded eligible member, then move partitions from the most
    # to the least loaded eligible members until no move improves balance.
    for tp in all_partitions:
        owner = owners.get(tp)
        if owner is not None:
            result[owner].add(tp)
        else:
            unassigned.append(tp)
    for tp in unassigned:
        candidates = eligible(tp)
        target = min(candidates, key=lambda i: (len(result[i]), ids.index(i)))
        result[target].add(tp)
    for _ in range(len(all_partitions) * len(ids)):
        moved = False
        for i in sorted(ids, key=lambda i: (-len(result[i]), ids.index(i))):
            for tp in sorted(result[i]):
                candidates = eligible(tp)
                least = min(candidates, key=lambda j: (len(result[j]), ids.index(j)))
                if len(result[least]) + 1 < len(result[i]):
                    result[i].discard(tp)
                    result[least].add(tp)
                    moved = True
                    break
            if moved:
                break
        if not moved:
            break
    return result


ASSIGNORS: dict[str, Assignor] = {
    a.name: a for a in (RangeAssignor(), RoundRobinAssignor(), CooperativeStickyAssignor())
}
