"""Property tests: the checkers call every history of a correct log valid, and find
every anomaly a mutation injects, under its name, with the injected indices as evidence."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from checkers import ANOMALIES, FAMILIES, check_steps
from history.synthetic import CorrectLogModel, ModelConfig
from tests.history_strategies import MUTATIONS, histories, steps_of

SETTINGS = settings(
    max_examples=60, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
MORE = settings(SETTINGS, max_examples=200)


@MORE
@given(histories())
def test_histories_of_a_correct_log_are_valid(events: list[dict]) -> None:
    verdict = check_steps(steps_of(events))
    assert verdict["counts"] == {}, verdict["anomalies"]
    assert verdict["valid"] is True


@MORE
@given(histories(final_reads=False))
def test_without_final_reads_only_unseen_can_appear(events: list[dict]) -> None:
    verdict = check_steps(steps_of(events))
    assert set(verdict["counts"]) <= {"unseen"}, verdict["anomalies"]
    assert verdict["valid"] == ("unknown" if verdict["counts"] else True)


def test_every_anomaly_type_has_a_mutation() -> None:
    # Transactional and exactly-once types are drawn in tests/test_check_txn.py; a node's
    # recovery is read from nemesis events, which the generated histories do not hold.
    txn_kinds = set(FAMILIES["transaction"]) | set(FAMILIES["exactly-once"])
    assert set(MUTATIONS) == set(ANOMALIES) - txn_kinds - set(FAMILIES["recovery"])


@pytest.mark.parametrize("kind", sorted(MUTATIONS))
def test_injected_anomaly_is_reported_with_its_indices(kind: str) -> None:
    @SETTINGS
    @given(st.data(), histories(max_steps=80))
    def check(data: st.DataObject, events: list[dict]) -> None:
        injected = data.draw(MUTATIONS[kind](events))
        verdict = check_steps(steps_of(injected.events), max_evidence=100_000)
        assert injected.kind in verdict["counts"], (kind, verdict["counts"])
        evidence = verdict["anomalies"][injected.kind]
        assert any(set(injected.indices) <= set(item["indices"]) for item in evidence), (
            injected.indices, evidence,
        )
        assert verdict["valid"] is not True

    check()



def test_large_busy_history_of_a_correct_log_is_valid() -> None:
    """The benchmark's shape at a smaller scale: 50 client slots, 10 logs, a big group."""
    config = ModelConfig(topics=2, partitions=5, slots=50, members=40, keys=40, max_batch=4,
                         max_poll=20, assign_logs=2, p_fail=0.02, p_info=0.002,
                         p_crash_op=0.001, p_nemesis=0.001)
    events = list(CorrectLogModel(random.Random(7), config).events(steps=30_000))
    verdict = check_steps(steps_of(events))
    assert verdict["valid"] is True, verdict["counts"]
    stats = verdict["stats"]
    assert stats["events"] == len(events) > 15_000
    assert len(stats["logs"]) == 10
    # The final reads saw every acknowledged message, and the group committed.
    assert stats["messages"]["read"] >= stats["messages"]["acknowledged"] > 0
    assert stats["ops"]["commit"]["ok"] > 0 and stats["ops"]["poll"]["ok"] > 0
