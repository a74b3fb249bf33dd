"""The controller's metadata machine: fencing elects from the ISR, unclean only when enabled,
AlterPartition validated against the partition epoch, preferred-leader election."""

from __future__ import annotations

from reference_broker.controller.metadata import (
    Controller,
    ControllerConfig,
    Decision,
    Errors,
    MetadataImage,
)
from reference_broker.controller.records import NO_LEADER, FenceBrokerRecord


def commit(controller: Controller, decision: Decision) -> Decision:
    for record in decision.records:
        controller.image.replay(record)
    return decision


def cluster(unclean: bool = False, brokers: int = 3) -> Controller:
    controller = Controller(
        MetadataImage(), ControllerConfig(session_timeout_ms=1000, unclean_leader_election=unclean)
    )
    for b in range(1, brokers + 1):
        reg = commit(
            controller, controller.register_broker(b, f"inc-{b}", "127.0.0.1", 9090 + b, 0)
        )
        assert controller.image.brokers[b].fenced
        assert reg.broker_epoch is not None
        commit(controller, controller.heartbeat(b, reg.broker_epoch, want_fence=False, now_ms=0))
        assert controller.image.is_live(b)
    commit(controller, controller.create_topic("t0", "id0", [(1, 2, 3)]))
    return controller


def keep_alive(controller: Controller, brokers: list[int], now_ms: int) -> None:
    for b in brokers:
        epoch = controller.image.brokers[b].broker_epoch
        commit(controller, controller.heartbeat(b, epoch, want_fence=False, now_ms=now_ms))


def test_missed_heartbeats_fence_the_leader_and_elect_the_next_isr_member() -> None:
    controller = cluster()
    assert controller.image.partitions[("id0", 0)].leader == 1
    keep_alive(controller, [2, 3], 900)
    decision = commit(controller, controller.expire_sessions(1500))
    assert FenceBrokerRecord(1, controller.image.brokers[1].broker_epoch) in decision.records
    state = controller.image.partitions[("id0", 0)]
    assert (state.leader, state.isr) == (2, (2, 3))
    assert (state.leader_epoch, state.partition_epoch) == (1, 1)


def test_fenced_follower_leaves_the_isr_without_a_leader_change() -> None:
    controller = cluster()
    keep_alive(controller, [1, 3], 900)
    commit(controller, controller.expire_sessions(1500))
    state = controller.image.partitions[("id0", 0)]
    assert (state.leader, state.isr, state.leader_epoch) == (1, (1, 3), 0)


def test_no_live_isr_member_leaves_the_partition_leaderless_when_unclean_is_off() -> None:
    controller = cluster()
    commit(controller, controller.alter_partition("id0", 0, 1, 0, 0, (1,)))
    keep_alive(controller, [2, 3], 900)
    commit(controller, controller.expire_sessions(1500))
    state = controller.image.partitions[("id0", 0)]
    assert state.leader == NO_LEADER and state.isr == (1,), "the ISR keeps its last member"
    # The last ISR member returns: it is elected, cleanly.
    reg = commit(controller, controller.register_broker(1, "inc-1b", "127.0.0.1", 9091, 2000))
    assert reg.broker_epoch is not None
    commit(controller, controller.heartbeat(1, reg.broker_epoch, want_fence=False, now_ms=2000))
    assert controller.image.partitions[("id0", 0)].leader == 1


def test_unclean_election_picks_a_live_out_of_sync_replica_only_when_enabled() -> None:
    controller = cluster(unclean=True)
    commit(controller, controller.alter_partition("id0", 0, 1, 0, 0, (1,)))
    keep_alive(controller, [2, 3], 900)
    commit(controller, controller.expire_sessions(1500))
    state = controller.image.partitions[("id0", 0)]
    assert (state.leader, state.isr) == (2, (2,))


def test_alter_partition_with_a_stale_partition_epoch_is_rejected() -> None:
    controller = cluster()
    first = commit(controller, controller.alter_partition("id0", 0, 1, 0, 0, (1, 2)))
    assert first.error is Errors.NONE
    assert first.partition is not None and first.partition.partition_epoch == 1
    stale = controller.alter_partition("id0", 0, 1, 0, 0, (1, 2, 3))
    assert stale.error is Errors.INVALID_UPDATE_VERSION and stale.records == ()
    assert (
        controller.alter_partition("id0", 0, 2, 0, 1, (1, 2)).error is Errors.NOT_LEADER_OR_FOLLOWER
    )
    assert controller.alter_partition("id0", 0, 1, 0, 1, (2, 3)).error is Errors.INVALID_REQUEST
    expand = commit(controller, controller.alter_partition("id0", 0, 1, 0, 1, (1, 2, 3)))
    assert expand.error is Errors.NONE
    assert controller.image.partitions[("id0", 0)].isr == (1, 2, 3)


def test_alter_partition_cannot_add_a_fenced_broker() -> None:
    controller = cluster()
    commit(controller, controller.alter_partition("id0", 0, 1, 0, 0, (1, 2)))
    keep_alive(controller, [1, 2], 900)
    commit(controller, controller.expire_sessions(1500))
    decision = controller.alter_partition("id0", 0, 1, 0, 1, (1, 2, 3))
    assert decision.error is Errors.INELIGIBLE_REPLICA


def test_preferred_leader_election_returns_leadership_to_the_first_replica() -> None:
    controller = cluster()
    keep_alive(controller, [2, 3], 900)
    commit(controller, controller.expire_sessions(1500))
    assert controller.image.partitions[("id0", 0)].leader == 2
    reg = commit(controller, controller.register_broker(1, "inc-1b", "127.0.0.1", 9091, 1600))
    assert reg.broker_epoch is not None
    commit(controller, controller.heartbeat(1, reg.broker_epoch, want_fence=False, now_ms=1600))
    assert controller.image.partitions[("id0", 0)].leader == 2, "1 is not in the ISR yet"
    assert controller.elect_preferred_leaders().records == ()
    state = controller.image.partitions[("id0", 0)]
    commit(controller, controller.alter_partition("id0", 0, 2, 1, state.partition_epoch, (2, 3, 1)))
    commit(controller, controller.elect_preferred_leaders())
    state = controller.image.partitions[("id0", 0)]
    assert (state.leader, state.leader_epoch) == (1, 2)


def test_second_process_cannot_take_a_live_brokers_id_and_stale_epochs_are_refused() -> None:
    controller = cluster()
    duplicate = controller.register_broker(2, "intruder", "127.0.0.1", 9999, 500)
    assert duplicate.error is Errors.DUPLICATE_BROKER_REGISTRATION
    old_epoch = controller.image.brokers[3].broker_epoch
    commit(controller, controller.register_broker(3, "inc-3b", "127.0.0.1", 9093, 5000))
    assert controller.heartbeat(3, old_epoch, False, 5000).error is Errors.STALE_BROKER_EPOCH


def test_deleting_a_topic_removes_it_and_its_partitions() -> None:
    controller = cluster()
    decision = commit(controller, controller.delete_topic("t0"))
    assert decision.error is Errors.NONE
    assert "t0" not in controller.image.topics and controller.image.partitions == {}
    assert controller.delete_topic("t0").error is Errors.UNKNOWN_TOPIC_OR_PARTITION
    # The name is free again, under a new id.
    assert commit(controller, controller.create_topic("t0", "id1", [(2,)])).error is Errors.NONE
    assert controller.image.topics["t0"] == "id1"


def test_a_topic_config_enables_unclean_election_for_that_topic_only() -> None:
    controller = cluster()
    configs = (("unclean.leader.election.enable", "true"),)
    commit(controller, controller.create_topic("dirty", "id-d", [(1, 2, 3)], configs))
    for topic_id in ("id0", "id-d"):
        commit(controller, controller.alter_partition(topic_id, 0, 1, 0, 0, (1,)))
    keep_alive(controller, [2, 3], 900)
    commit(controller, controller.expire_sessions(1500))
    assert controller.image.partitions[("id0", 0)].leader == NO_LEADER
    dirty = controller.image.partitions[("id-d", 0)]
    assert (dirty.leader, dirty.isr) == (2, (2,))
    assert controller.image.topic_configs["id-d"] == configs


def test_a_topic_config_can_forbid_unclean_election_the_cluster_allows() -> None:
    controller = cluster(unclean=True)
    configs = (("unclean.leader.election.enable", "false"),)
    commit(controller, controller.create_topic("clean", "id-c", [(1, 2, 3)], configs))
    commit(controller, controller.alter_partition("id-c", 0, 1, 0, 0, (1,)))
    keep_alive(controller, [2, 3], 900)
    commit(controller, controller.expire_sessions(1500))
    assert controller.image.partitions[("id-c", 0)].leader == NO_LEADER


def test_an_unreadable_unclean_election_config_is_invalid() -> None:
    controller = cluster()
    configs = (("unclean.leader.election.enable", "maybe"),)
    assert controller.create_topic("x", "id-x", [(1,)], configs).error is Errors.INVALID_CONFIG


def test_replicas_are_striped_over_unfenced_brokers() -> None:
    controller = cluster(brokers=4)
    assert controller.assign_replicas(4, 3, start=1) == [
        (2, 3, 4),
        (3, 4, 1),
        (4, 1, 2),
        (1, 2, 3),
    ]
    keep_alive(controller, [1, 2, 3], 900)
    commit(controller, controller.expire_sessions(1500))
    assert controller.assign_replicas(1, 4, start=0) is Errors.INVALID_REPLICATION_FACTOR
    assert controller.assign_replicas(2, 3, start=0) == [(1, 2, 3), (2, 3, 1)]


def test_errors_carry_kafkas_numeric_codes() -> None:
    assert Errors.NONE.code == 0
    assert Errors.STALE_BROKER_EPOCH.code == 77
    assert Errors.DUPLICATE_BROKER_REGISTRATION.code == 101
    assert Errors.INVALID_UPDATE_VERSION.code == 95
    assert all(isinstance(e.code, int) for e in Errors)


def test_a_controlled_shutdown_fences_the_broker_and_moves_its_leadership() -> None:
    controller = cluster()
    epoch = controller.image.brokers[1].broker_epoch
    assert controller.shut_down_broker(1, epoch + 7).error is Errors.STALE_BROKER_EPOCH
    commit(controller, controller.shut_down_broker(1, epoch))
    assert not controller.image.is_live(1)
    state = controller.image.partitions[("id0", 0)]
    assert (state.leader, state.isr) == (2, (2, 3))
    assert controller.shut_down_broker(1, epoch).records == (), "already fenced"


def test_a_fenced_broker_has_no_session_so_its_new_incarnation_registers_at_once() -> None:
    controller = Controller(MetadataImage(), ControllerConfig(session_timeout_ms=1000))
    first = commit(controller, controller.register_broker(1, "inc-1", "127.0.0.1", 9091, 0))
    assert controller.image.brokers[1].fenced
    # It dies before its first heartbeat unfences it; its next process starts at once.
    # Kafka's BrokerHeartbeatManager.hasValidSession is false for a fenced broker.
    again = commit(controller, controller.register_broker(1, "inc-1b", "127.0.0.1", 9091, 100))
    assert again.error is Errors.NONE
    assert again.broker_epoch is not None and first.broker_epoch is not None
    assert again.broker_epoch > first.broker_epoch
    assert controller.image.brokers[1].incarnation_id == "inc-1b"


def test_after_failover_fenced_brokers_stay_without_a_session_and_unfenced_ones_get_one() -> None:
    controller = cluster()
    keep_alive(controller, [2, 3], 900)
    commit(controller, controller.expire_sessions(1500))
    assert controller.image.brokers[1].fenced and controller.image.is_live(2)
    # Another controller becomes active over the same image (Kafka's
    # ClusterControlManager.activate): every broker's session starts afresh, but a
    # fenced broker still has no valid session.
    successor = Controller(controller.image, controller.config)
    successor.reset_sessions(2000)
    back = commit(successor, successor.register_broker(1, "inc-1b", "127.0.0.1", 9091, 2100))
    assert back.error is Errors.NONE
    assert controller.image.brokers[1].incarnation_id == "inc-1b"
    assert successor.has_valid_session(2, 2100) and successor.has_valid_session(3, 2100)
    # An unfenced broker's old incarnation keeps its fresh session: a new process with
    # its id is refused until that session expires, as in Kafka.
    refused = successor.register_broker(2, "inc-2b", "127.0.0.1", 9092, 2100)
    assert refused.error is Errors.DUPLICATE_BROKER_REGISTRATION
    later = successor.register_broker(2, "inc-2b", "127.0.0.1", 9092, 3000)
    assert later.error is Errors.NONE


def test_the_next_session_expiry_is_the_earliest_among_unfenced_brokers() -> None:
    controller = cluster()
    keep_alive(controller, [2], 400)
    keep_alive(controller, [3], 700)
    assert controller.next_session_expiry() == 1000  # broker 1's, from its heartbeat at 0
    commit(controller, controller.expire_sessions(1000))
    assert not controller.image.is_live(1)
    # A fenced broker has no session to expire; the next to check is broker 2's.
    assert controller.next_session_expiry() == 1400
    commit(controller, controller.expire_sessions(1700))
    assert controller.next_session_expiry() is None
