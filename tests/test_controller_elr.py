"""Eligible leader replicas (KIP-966) in the controller's state machine.

With `eligible.leader.replicas.version` on, a broker that registers without the epoch
of a clean shutdown leaves every ISR and ELR (it may have lost unflushed records);
replicas leaving an ISR below min.insync.replicas stay eligible; elections take the
ISR, then the ELR, then the last known leader, and only then an unclean replica.
With the feature off, registration changes no partition, as before.
"""

from __future__ import annotations

from reference_broker.controller.metadata import (
    Controller,
    ControllerConfig,
    Decision,
    MetadataImage,
    PartitionState,
)
from reference_broker.controller.payloads import decode_payload, encode_payload
from reference_broker.controller.records import (
    NO_LEADER,
    PartitionChangeRecord,
    PartitionRecord,
    RegisterBrokerRecord,
)


def commit(controller: Controller, decision: Decision) -> Decision:
    for record in decision.records:
        controller.image.replay(record)
    return decision


def cluster(*, elr: bool = True, unclean: bool = False, min_isr: int = 2) -> Controller:
    """Brokers 1..3 live (session timeout 1 s), topic t0 with one partition on (1, 2, 3)."""
    controller = Controller(
        MetadataImage(),
        ControllerConfig(
            session_timeout_ms=1000,
            unclean_leader_election=unclean,
            eligible_leader_replicas=elr,
            min_insync_replicas=min_isr,
        ),
    )
    for b in (1, 2, 3):
        reg = commit(controller, controller.register_broker(b, f"inc-{b}", "h", 9090 + b, 0))
        assert reg.broker_epoch is not None
        commit(controller, controller.heartbeat(b, reg.broker_epoch, want_fence=False, now_ms=0))
    commit(controller, controller.create_topic("t0", "id0", [(1, 2, 3)]))
    return controller


def state(controller: Controller) -> PartitionState:
    return controller.image.partitions[("id0", 0)]


def keep_alive(controller: Controller, brokers: list[int], now_ms: int) -> None:
    for b in brokers:
        epoch = controller.image.brokers[b].broker_epoch
        commit(controller, controller.heartbeat(b, epoch, want_fence=False, now_ms=now_ms))


def restart(controller: Controller, broker: int, now_ms: int, previous_epoch: int) -> Decision:
    """A new incarnation of `broker` registers and is unfenced."""
    decision = commit(
        controller,
        controller.register_broker(
            broker, f"inc-{broker}-{now_ms}", "h", 9090 + broker, now_ms, previous_epoch
        ),
    )
    assert decision.broker_epoch is not None, decision
    commit(
        controller,
        controller.heartbeat(broker, decision.broker_epoch, want_fence=False, now_ms=now_ms),
    )
    return decision


def fence(controller: Controller, alive: list[int], now_ms: int) -> None:
    """Every broker but `alive` misses its heartbeats and is fenced at `now_ms`."""
    keep_alive(controller, alive, now_ms - 100)
    commit(controller, controller.expire_sessions(now_ms))


# -- registration -----------------------------------------------------------------------------


def test_registration_after_an_unclean_shutdown_leaves_the_isr_in_the_same_decision() -> None:
    controller = cluster()
    keep_alive(controller, [1, 3], 900)  # broker 2's session runs out; not fenced yet
    decision = controller.register_broker(2, "inc-2b", "h", 9092, 1500, -1)
    assert decision.broker_epoch is not None
    # The partition change comes first: it commits with the registration or not at all.
    assert decision.records[0] == PartitionChangeRecord("id0", 0, isr=(1, 3))
    assert isinstance(decision.records[-1], RegisterBrokerRecord)
    commit(controller, decision)
    assert (state(controller).leader, state(controller).isr) == (1, (1, 3))


def test_registration_with_the_epoch_of_its_clean_shutdown_keeps_the_isr() -> None:
    controller = cluster()
    keep_alive(controller, [1, 3], 900)
    previous = controller.image.brokers[2].broker_epoch
    decision = controller.register_broker(2, "inc-2b", "h", 9092, 1500, previous)
    assert [type(r) for r in decision.records] == [RegisterBrokerRecord]
    commit(controller, decision)
    assert state(controller).isr == (1, 2, 3)


def test_registration_naming_an_older_epoch_is_unclean() -> None:
    controller = cluster()
    keep_alive(controller, [1, 3], 900)
    stale = controller.image.brokers[2].broker_epoch - 1
    commit(controller, controller.register_broker(2, "inc-2b", "h", 9092, 1500, stale))
    assert state(controller).isr == (1, 3)


def test_with_the_feature_off_an_unclean_registration_changes_no_partition() -> None:
    controller = cluster(elr=False)
    keep_alive(controller, [1, 3], 900)
    decision = controller.register_broker(2, "inc-2b", "h", 9092, 1500, -1)
    assert [type(r) for r in decision.records] == [RegisterBrokerRecord]
    commit(controller, decision)
    assert state(controller).isr == (1, 2, 3)


def test_an_unclean_leader_registering_again_hands_leadership_to_the_isr() -> None:
    controller = cluster()
    keep_alive(controller, [2, 3], 900)
    commit(controller, controller.register_broker(1, "inc-1b", "h", 9091, 1500, -1))
    s = state(controller)
    assert (s.leader, s.isr, s.leader_epoch) == (2, (2, 3), 1)


# -- the ELR --------------------------------------------------------------------------------


def test_replicas_fenced_below_min_isr_become_eligible_and_the_isr_may_empty() -> None:
    controller = cluster()
    fence(controller, [1, 2], 1500)  # 3 goes: ISR (1, 2) still meets min.insync.replicas 2
    assert (state(controller).isr, state(controller).elr) == ((1, 2), ())
    fence(controller, [1], 2500)  # 2 goes: below min ISR, 2 stays eligible
    assert (state(controller).isr, state(controller).elr) == ((1,), (2,))
    fence(controller, [], 3500)  # the leader goes: nobody in the ISR
    s = state(controller)
    assert (s.leader, s.isr, s.elr, s.last_known_elr) == (NO_LEADER, (), (1, 2), (1,))


def test_an_eligible_replica_that_comes_back_is_elected_and_alone_in_the_isr() -> None:
    controller = cluster()
    fence(controller, [1, 2], 1500)
    fence(controller, [1], 2500)
    fence(controller, [], 3500)
    # Broker 2 was only cut off: it heartbeats again with its epoch, no new registration.
    keep_alive(controller, [2], 4000)
    s = state(controller)
    assert (s.leader, s.isr, s.elr, s.last_known_elr) == (2, (2,), (1,), ())


def test_a_replica_that_lost_data_is_not_elected_while_an_eligible_one_may_return() -> None:
    """The brief's scenario at controller level: 2 and 3 fenced, then the leader 1 loses
    power; 1 comes back without its unflushed records (unclean), while 2 is still away."""
    controller = cluster()
    fence(controller, [1, 2], 1500)
    fence(controller, [1], 2500)
    fence(controller, [], 3500)
    restart(controller, 1, 4000, previous_epoch=-1)
    s = state(controller)
    assert (s.leader, s.isr, s.elr) == (NO_LEADER, (), (2,))
    keep_alive(controller, [2], 4100)  # the eligible replica returns and leads
    assert (state(controller).leader, state(controller).isr) == (2, (2,))


def test_without_the_feature_the_last_isr_member_is_elected_after_losing_data() -> None:
    controller = cluster(elr=False)
    fence(controller, [1, 2], 1500)
    fence(controller, [1], 2500)
    fence(controller, [], 3500)
    assert state(controller).isr == (1,)  # the last member stays
    restart(controller, 1, 4000, previous_epoch=-1)
    assert state(controller).leader == 1  # elected, whatever it lost


def test_unclean_election_still_takes_an_out_of_sync_replica_when_enabled() -> None:
    controller = cluster(unclean=True)
    fence(controller, [1, 2], 1500)
    fence(controller, [1], 2500)
    fence(controller, [], 3500)
    restart(controller, 3, 4000, previous_epoch=-1)  # in neither ISR nor ELR
    s = state(controller)
    assert (s.leader, s.isr, s.elr, s.last_known_elr) == (3, (3,), (), ())


def test_the_last_known_leader_is_elected_when_no_replica_is_eligible() -> None:
    """Every eligible replica restarted uncleanly: the last leader returning is elected
    (uncleanly), as Kafka's balanced recovery does, rather than leaving it offline."""
    controller = cluster()
    fence(controller, [1, 2], 1500)
    fence(controller, [1], 2500)
    fence(controller, [], 3500)
    restart(controller, 2, 4000, previous_epoch=-1)
    s = state(controller)
    assert (s.leader, s.elr, s.last_known_elr) == (NO_LEADER, (1,), (1,))
    restart(controller, 1, 4100, previous_epoch=-1)
    s = state(controller)
    assert (s.leader, s.isr, s.elr, s.last_known_elr) == (1, (1,), (), ())


def test_alter_partition_below_min_isr_fills_the_elr_and_growing_back_empties_it() -> None:
    controller = cluster()
    s = state(controller)
    commit(controller, controller.alter_partition("id0", 0, 1, 0, s.partition_epoch, (1,)))
    assert (state(controller).isr, state(controller).elr) == ((1,), (2, 3))
    s = state(controller)
    commit(controller, controller.alter_partition("id0", 0, 1, 0, s.partition_epoch, (1, 3)))
    assert (state(controller).isr, state(controller).elr) == ((1, 3), ())


def test_a_topic_min_isr_override_decides_when_replicas_become_eligible() -> None:
    controller = cluster(min_isr=2)
    commit(
        controller,
        controller.create_topic("t1", "id1", [(1, 2, 3)], (("min.insync.replicas", "1"),)),
    )
    fence(controller, [1], 1500)
    t0, t1 = controller.image.partitions[("id0", 0)], controller.image.partitions[("id1", 0)]
    assert (t0.isr, t0.elr) == ((1,), (2, 3))
    assert (t1.isr, t1.elr) == ((1,), ())


# -- records --------------------------------------------------------------------------------


def test_elr_fields_survive_the_metadata_log_and_old_records_read_as_empty() -> None:
    change = PartitionChangeRecord("id0", 0, isr=(), elr=(1, 2), last_known_elr=(1,))
    assert decode_payload(encode_payload(change)) == change
    old = (
        b'{"v":1,"type":"PartitionRecord","topic_id":"id0","partition":0,"replicas":[1],'
        b'"isr":[1],"leader":1,"leader_epoch":0,"partition_epoch":0}'
    )
    record = decode_payload(old)
    assert isinstance(record, PartitionRecord)
    assert (record.elr, record.last_known_elr) == ((), ())
