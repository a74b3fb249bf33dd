"""Partition reassignment and UnregisterBroker in the controller's metadata machine (KIP-455).

A reassignment starts with the target replicas first and the leaving ones after them,
completes in the AlterPartition that brings the last target replica into the ISR
(moving leadership into the target and bumping the leader epoch), can be cancelled, and
is refused with Kafka's errors. Its state is in the records, so an image replayed from
the encoded log (a new controller) continues it.
"""

from __future__ import annotations

from reference_broker.controller.metadata import (
    Controller,
    ControllerConfig,
    Decision,
    Errors,
    MetadataImage,
)
from reference_broker.controller.payloads import decode_payload, encode_payload
from reference_broker.controller.raft import LeaderChange
from tests.test_controller_metadata import cluster, commit

KEY = ("id0", 0)


def with_broker_4() -> Controller:
    controller = cluster(brokers=4)
    state = controller.image.partitions[KEY]
    assert (state.replicas, state.leader) == ((1, 2, 3), 1)
    return controller


def expand_isr(controller: Controller, isr: tuple[int, ...]) -> None:
    state = controller.image.partitions[KEY]
    decision = controller.alter_partition(
        "id0", 0, state.leader, state.leader_epoch, state.partition_epoch, isr
    )
    assert decision.error is Errors.NONE, decision.error
    commit(controller, decision)


def test_a_reassignment_adds_first_and_completes_when_the_target_is_in_sync() -> None:
    controller = with_broker_4()
    decision = commit(controller, controller.alter_reassignment("id0", 0, (4, 2, 3)))
    assert decision.error is Errors.NONE
    state = controller.image.partitions[KEY]
    assert state.replicas == (4, 2, 3, 1)
    assert (state.adding_replicas, state.removing_replicas) == ((4,), (1,))
    assert (state.leader, state.isr, state.leader_epoch) == (1, (1, 2, 3), 0)
    assert [t for t, _i, _s in controller.reassignments()] == ["id0"]

    expand_isr(controller, (1, 2, 3, 4))
    state = controller.image.partitions[KEY]
    assert state.replicas == (4, 2, 3)
    assert (state.adding_replicas, state.removing_replicas) == ((), ())
    # The leader left the replica set: the first target replica in the ISR leads now,
    # in a new leader epoch, and the removed replica left the ISR.
    assert state.leader == 4 and state.isr == (2, 3, 4)
    assert state.leader_epoch == 1
    assert controller.reassignments() == []


def test_removing_a_follower_keeps_the_leader_but_bumps_its_epoch() -> None:
    controller = with_broker_4()
    commit(controller, controller.alter_reassignment("id0", 0, (1, 2, 4)))
    expand_isr(controller, (1, 2, 3, 4))
    state = controller.image.partitions[KEY]
    assert (state.replicas, state.leader, state.isr) == ((1, 2, 4), 1, (1, 2, 4))
    assert state.leader_epoch == 1


def test_a_reordering_or_shrinking_target_already_in_sync_completes_at_once() -> None:
    controller = with_broker_4()
    commit(controller, controller.alter_reassignment("id0", 0, (3, 2, 1)))
    state = controller.image.partitions[KEY]
    assert (state.replicas, state.leader, state.leader_epoch) == ((3, 2, 1), 1, 0)
    commit(controller, controller.alter_reassignment("id0", 0, (2, 3)))
    state = controller.image.partitions[KEY]
    assert (state.replicas, state.isr, state.leader) == ((2, 3), (2, 3), 2)
    assert controller.reassignments() == []


def test_cancelling_reverts_to_the_original_replicas() -> None:
    controller = with_broker_4()
    commit(controller, controller.alter_reassignment("id0", 0, (4, 2, 3)))
    decision = commit(controller, controller.alter_reassignment("id0", 0, None))
    assert decision.error is Errors.NONE
    state = controller.image.partitions[KEY]
    # The replicas not being added, in their current order (Kafka's revert), so the
    # removing ones come back after the target's.
    assert (state.replicas, state.isr, state.leader) == ((2, 3, 1), (1, 2, 3), 1)
    assert (state.adding_replicas, state.removing_replicas) == ((), ())
    again = controller.alter_reassignment("id0", 0, None)
    assert again.error is Errors.NO_REASSIGNMENT_IN_PROGRESS


def test_a_new_target_replaces_an_ongoing_reassignment_from_the_original_replicas() -> None:
    controller = cluster(brokers=5)
    commit(controller, controller.alter_reassignment("id0", 0, (4, 2, 3)))
    commit(controller, controller.alter_reassignment("id0", 0, (5, 2, 3)))
    state = controller.image.partitions[KEY]
    assert state.replicas == (5, 2, 3, 1)
    assert (state.adding_replicas, state.removing_replicas) == ((5,), (1,))


def test_invalid_targets_are_refused_with_kafkas_errors() -> None:
    controller = with_broker_4()
    assert controller.alter_reassignment("nope", 0, (1, 2, 3)).error is (
        Errors.UNKNOWN_TOPIC_OR_PARTITION
    )
    assert controller.alter_reassignment("id0", 7, (1, 2, 3)).error is (
        Errors.UNKNOWN_TOPIC_OR_PARTITION
    )
    for bad in ((), (1, 1, 2), (1, 2, 9)):
        decision = controller.alter_reassignment("id0", 0, bad)
        assert decision.error is Errors.INVALID_REPLICA_ASSIGNMENT, bad
        assert decision.message
    refused = controller.alter_reassignment("id0", 0, (1, 2), allow_factor_change=False)
    assert refused.error is Errors.INVALID_REPLICATION_FACTOR
    assert controller.image.partitions[KEY].replicas == (1, 2, 3)


def test_a_reassignment_in_progress_survives_replaying_the_encoded_log() -> None:
    controller = Controller(MetadataImage(), ControllerConfig(session_timeout_ms=1000))
    log: list[bytes] = []

    def logged(decision: Decision) -> None:
        assert decision.error is Errors.NONE
        commit(controller, decision)
        log.append(encode_payload(decision.records))

    for b in range(1, 5):
        registration = controller.register_broker(b, f"inc-{b}", "h", 9090 + b, 0)
        logged(registration)
        assert registration.broker_epoch is not None
        logged(controller.heartbeat(b, registration.broker_epoch, want_fence=False, now_ms=0))
    logged(controller.create_topic("t0", "id0", [(1, 2, 3)]))
    logged(controller.alter_reassignment("id0", 0, (4, 2, 3)))

    # A new active controller replays the metadata log: the reassignment is still there.
    image = MetadataImage()
    for payload in log:
        decoded = decode_payload(payload)
        for record in decoded if isinstance(decoded, tuple) else (decoded,):
            assert not isinstance(record, LeaderChange)
            image.replay(record)
    assert image.partitions[KEY] == controller.image.partitions[KEY]
    assert image.partitions[KEY].adding_replicas == (4,)
    successor = Controller(image)
    expand_isr(successor, (1, 2, 3, 4))
    assert successor.image.partitions[KEY].replicas == (4, 2, 3)


def test_unregistering_takes_a_broker_out_of_every_isr_and_forgets_it() -> None:
    controller = with_broker_4()
    assert controller.unregister_broker(9).error is Errors.BROKER_ID_NOT_REGISTERED
    decision = commit(controller, controller.unregister_broker(1))
    assert decision.error is Errors.NONE
    assert 1 not in controller.image.brokers
    state = controller.image.partitions[KEY]
    assert 1 not in state.isr and state.leader == 2
