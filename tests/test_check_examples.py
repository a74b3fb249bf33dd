"""Hand-written histories, one per anomaly type, each yield exactly their anomaly;
and the verdict rules (allowed sets, modes, unknown, empty) hold on them."""

from __future__ import annotations

from pathlib import Path

import pytest

from checkers import ANOMALIES, check_file

HISTORIES = Path(__file__).parent / "histories"
EXAMPLES = Path(__file__).parent.parent / "examples"


def test_every_anomaly_type_has_a_hand_written_history() -> None:
    assert {path.stem for path in HISTORIES.glob("*.jsonl")} == set(ANOMALIES)


# Anomalies that always come with another: a read from an aborted txn is both Elle's G1a
# and the queue checker's aborted-read.
COMPANIONS = {"G1a": {"aborted-read"}}


@pytest.mark.parametrize("kind", sorted(ANOMALIES))
def test_hand_written_history_yields_exactly_its_anomaly(kind: str) -> None:
    verdict = check_file(str(HISTORIES / f"{kind}.jsonl"), mode="strict")
    assert set(verdict["counts"]) == {kind} | COMPANIONS.get(kind, set())
    assert verdict["valid"] == ("unknown" if kind == "unseen" else False)
    for evidence in verdict["anomalies"][kind]:
        assert evidence["indices"], evidence
        assert all(isinstance(i, int) for i in evidence["indices"])
        assert "log" in evidence


def test_lost_write_evidence_names_the_send_the_log_and_the_offset() -> None:
    verdict = check_file(str(HISTORIES / "lost-write.jsonl"))
    (evidence,) = verdict["anomalies"]["lost-write"]
    # The ok send of value 1 at t0/0 offset 0 (index 1), below the read at offset 1 (index 7).
    assert evidence["indices"] == [1, 7]
    assert evidence["log"] == "t0/0"
    assert evidence["offsets"] == [0] and evidence["values"] == [1]


def test_poll_skip_evidence_lists_what_was_skipped() -> None:
    verdict = check_file(str(HISTORIES / "poll-skip.jsonl"))
    (evidence,) = verdict["anomalies"]["poll-skip"]
    assert evidence["offsets"] == [0, 2] and evidence["skipped"] == [[1, 2]]
    assert evidence["delta"] == 2


def test_allowed_anomaly_keeps_the_verdict_valid() -> None:
    path = str(HISTORIES / "duplicate.jsonl")
    assert check_file(path)["valid"] is False
    verdict = check_file(path, allow=["duplicate"])
    assert verdict["valid"] is True
    assert verdict["counts"] == {"duplicate": 1}


def test_subscribe_mode_allows_poll_skip_but_assign_mode_does_not() -> None:
    path = str(HISTORIES / "poll-skip.jsonl")
    assert check_file(path, mode="subscribe")["valid"] is True
    assert check_file(path, mode="assign")["valid"] is False


def test_int_send_skip_is_allowed_by_default_but_not_in_strict_mode() -> None:
    path = str(HISTORIES / "int-send-skip.jsonl")
    assert check_file(path)["valid"] is True
    assert check_file(path, mode="strict")["valid"] is False


def test_unseen_alone_is_unknown_unless_allowed() -> None:
    path = str(HISTORIES / "unseen.jsonl")
    verdict = check_file(path)
    assert verdict["valid"] == "unknown"
    assert any("unseen" in note for note in verdict["notes"])
    assert verdict["stats"]["logs"]["t0/0"]["unseen"] == 1
    assert check_file(path, allow=["unseen"])["valid"] is True


def test_unknown_mode_or_anomaly_type_is_refused() -> None:
    path = str(HISTORIES / "unseen.jsonl")
    with pytest.raises(ValueError, match="unknown mode"):
        check_file(path, mode="yolo")
    with pytest.raises(ValueError, match="unknown anomaly type"):
        check_file(path, allow=["lost-writes"])


def test_empty_history_is_valid_with_a_note(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_bytes(b"")
    verdict = check_file(str(path))
    assert verdict["valid"] is True
    assert verdict["counts"] == {}
    assert any("nothing ran" in note for note in verdict["notes"])


def test_clean_example_is_valid_and_its_stats_add_up() -> None:
    verdict = check_file(str(EXAMPLES / "clean.jsonl"))
    assert verdict["valid"] is True
    stats = verdict["stats"]
    assert stats["events"] == 24
    assert stats["messages"] == {"sent": 5, "acknowledged": 3, "failed": 1,
                                 "indeterminate": 1, "read": 4}
    assert stats["ops"]["send"] == {"invoke": 4, "ok": 2, "fail": 1, "info": 1}
    assert stats["nemesis"] == {"kill": 1, "restart": 1}
    assert stats["logs"]["t0/0"]["high_offset"] == 1
    assert stats["logs"]["t0/1"]["high_read_offset"] == 1


def test_evidence_is_bounded_but_counts_are_exact(tmp_path: Path) -> None:
    lines = []
    for value in range(50):
        lines.append(f'{{"index":{2 * value},"time":0,"process":{value},"type":"invoke",'
                     f'"f":"send","value":[{{"topic":"t0","key":null,"value":{value}}}]}}')
        lines.append(f'{{"index":{2 * value + 1},"time":0,"process":{value},"type":"ok",'
                     f'"f":"send","value":[{{"topic":"t0","key":null,"value":{value},'
                     f'"partition":0,"offset":{value}}}]}}')
    path = tmp_path / "unread.jsonl"
    path.write_text("\n".join(lines) + "\n")
    verdict = check_file(str(path), max_evidence=5)
    assert verdict["counts"] == {"unseen": 50}
    assert len(verdict["anomalies"]["unseen"]) == 5
    assert any("limited" in note for note in verdict["notes"])


def test_a_node_refusing_its_damaged_files_is_not_unrecoverable() -> None:
    verdict = check_file(str(HISTORIES / "unrecoverable-node.jsonl"), mode="strict")
    # n1 lost power with its disk intact; n2's files were damaged by the harness first.
    assert [e["node"] for e in verdict["anomalies"]["unrecoverable-node"]] == ["n1"]
    assert verdict["anomalies"]["unrecoverable-node"][0]["indices"] == [2, 4]
