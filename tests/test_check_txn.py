"""Transactional checks: the dependency graph's cycles (G0, G1c, G-single, G2-item) with
their explanations, G1a, G1b, aborted and precommitted reads fed by `txn` operations,
exactly-once findings, and valid transactional histories that give no findings."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings

from checkers import check_file, check_steps
from checkers.cycles import RW, WR, WW, find_cycles, strongly_connected
from harness.cli import cli
from harness.report.evidence import Events, Relevant, event_detail, group_items, sentence
from history import HistoryError, encode_event
from tests.history_strategies import steps_of, transform_histories, txn_histories

HISTORIES = Path(__file__).parent / "histories"
SETTINGS = settings(max_examples=80, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def _only(path: str, kind: str, **options: Any) -> dict[str, Any]:
    verdict = check_file(str(HISTORIES / path), mode="strict", **options)
    (evidence,) = verdict["anomalies"][kind]
    return evidence


def _types(evidence: dict[str, Any]) -> list[str]:
    return [step["type"] for step in evidence["steps"]]


# -- the hand-built histories, with their evidence ----------------------------------------


def test_g0_is_two_transactions_writing_two_logs_in_opposite_orders() -> None:
    evidence = _only("G0.jsonl", "G0")
    assert evidence["indices"] == [1, 3]
    assert _types(evidence) == ["ww", "ww"]
    assert evidence["logs"] == ["t0/0", "t0/1"]
    assert evidence["explanation"][0] == (
        "T1 (index 1) wrote 1 to t0/0 at offset 0; T2 (index 3) wrote 3, the next version "
        "of t0/0, at offset 1")


def test_g1c_is_a_cycle_of_reads() -> None:
    evidence = _only("G1c.jsonl", "G1c")
    assert evidence["indices"] == [2, 3]
    assert _types(evidence) == ["wr", "wr"]
    assert "T2 (index 3) read it" in evidence["explanation"][0]


def test_g_single_names_the_missed_write_and_the_read_that_closes_the_cycle() -> None:
    evidence = _only("G-single.jsonl", "G-single")
    assert evidence["indices"] == [3, 5]
    assert _types(evidence) == ["rw", "wr"]
    assert evidence["steps"][0] == {"from": 5, "to": 3, "type": "rw", "log": "t0/0",
                                    "offsets": [0, 1], "values": [1, 3]}
    assert evidence["explanation"] == [
        "T1 (index 5) read t0/0 only up to offset 0 (value 1); T2 (index 3) wrote 3 there "
        "at offset 1, a later version T1 did not see",
        "T2 (index 3) wrote 4 to t0/1 at offset 0; T1 (index 5) read it",
        "so T1 must come before itself: a cycle of 2 transactions",
    ]


def test_g2_item_has_two_anti_dependencies() -> None:
    evidence = _only("G2-item.jsonl", "G2-item")
    assert evidence["indices"] == [4, 5]
    assert _types(evidence) == ["rw", "rw"]


def test_g1a_names_the_aborted_txn_and_the_committed_reader() -> None:
    verdict = check_file(str(HISTORIES / "G1a.jsonl"), mode="strict")
    (g1a,) = verdict["anomalies"]["G1a"]
    (aborted,) = verdict["anomalies"]["aborted-read"]
    assert g1a["indices"] == aborted["indices"] == [1, 3]
    assert g1a["values"] == [1] and g1a["log"] == "t0/0" and g1a["offsets"] == [0]


def test_g1b_names_the_intermediate_and_the_final_write() -> None:
    evidence = _only("G1b.jsonl", "G1b")
    assert evidence["indices"] == [1, 3]
    assert evidence["offsets"] == [0, 1] and evidence["values"] == [1, 2]


def test_exactly_once_findings_name_input_and_outputs() -> None:
    duplicate = _only("eos-duplicate.jsonl", "eos-duplicate")
    assert duplicate["indices"] == [3, 5] and duplicate["values"] == [1, 11, 13]
    loss = _only("eos-loss.jsonl", "eos-loss")
    assert loss["indices"] == [3] and loss["values"] == [1] and loss["offsets"] == [0]
    order = _only("eos-order.jsonl", "eos-order")
    assert order["inputs"] == [1, 2] and order["offsets"] == [1, 0]


@pytest.mark.parametrize("kind", ["G0", "G1c", "G1b", "G-single", "G2-item"])
def test_what_kafka_does_not_promise_is_allowed_outside_strict_mode(kind: str) -> None:
    path = str(HISTORIES / f"{kind}.jsonl")
    for mode in ("assign", "subscribe"):
        verdict = check_file(path, mode=mode)
        assert verdict["valid"] is True and kind in verdict["counts"]
    assert check_file(path, mode="strict")["valid"] is False


@pytest.mark.parametrize("kind", ["G1a", "eos-duplicate", "eos-loss", "eos-order"])
def test_what_kafka_promises_is_flagged_in_every_mode(kind: str) -> None:
    for mode in ("assign", "subscribe", "strict"):
        assert check_file(str(HISTORIES / f"{kind}.jsonl"), mode=mode)["valid"] is False


# -- txn operations feeding the queue checks ---------------------------------------------


def _write(tmp_path: Path, events: list[dict[str, Any]]) -> str:
    path = tmp_path / "history.jsonl"
    with open(path, "w") as stream:
        for i, event in enumerate(events):
            stream.write(json.dumps({"index": i, "time": i * 1000, **event}) + "\n")
    return str(path)


def _txn(process: int, invoke: list[Any], done: list[Any], kind: str = "ok",
         **extra: Any) -> list[dict[str, Any]]:
    return [{"process": process, "type": "invoke", "f": "txn", "value": invoke},
            {"process": process, "type": kind, "f": "txn", "value": done, **extra}]


def _send(value: int, offset: int | None = None, key: str = "k1") -> list[Any]:
    message: dict[str, Any] = {"topic": "t0", "key": key, "value": value}
    if offset is not None:
        message.update(partition=0, offset=offset)
    return ["send", message]


def _final_poll(process: int, records: list[list[Any]]) -> list[dict[str, Any]]:
    assign = {"logs": ["t0/0"], "seek": "beginning"}
    return [{"process": process, "type": "invoke", "f": "assign", "value": assign},
            {"process": process, "type": "ok", "f": "assign", "value": assign},
            {"process": process, "type": "invoke", "f": "poll", "value": None},
            {"process": process, "type": "ok", "f": "poll", "value": {"t0/0": records}}]


def test_a_plain_poll_of_an_aborted_txns_send_is_an_aborted_read(tmp_path: Path) -> None:
    path = _write(tmp_path, [*_txn(0, [_send(1)], [_send(1)], "fail", error="aborted"),
                             *_final_poll(1, [[0, "k1", 1]])])
    verdict = check_file(path, mode="strict")
    assert verdict["anomalies"]["aborted-read"][0]["indices"] == [1, 5]


def test_reading_a_send_of_an_info_txn_is_not_an_aborted_read(tmp_path: Path) -> None:
    path = _write(tmp_path, [*_txn(0, [_send(1)], [_send(1)], "info", error="timeout"),
                             *_final_poll(1, [[0, "k1", 1]])])
    verdict = check_file(path, mode="strict")
    assert verdict["counts"] == {} and verdict["valid"] is True


def test_a_txn_reading_its_own_send_is_a_precommitted_read(tmp_path: Path) -> None:
    path = _write(tmp_path, [
        *_txn(0, [_send(1), ["poll", None]],
              [_send(1, 0), ["poll", {"t0/0": [[0, "k1", 1]]}]]),
    ])
    verdict = check_file(path, mode="strict")
    assert list(verdict["counts"]) == ["precommitted-read"]
    assert verdict["anomalies"]["precommitted-read"][0]["indices"] == [0, 1]


def test_a_txn_commit_feeds_the_group_checker(tmp_path: Path) -> None:
    subscribe = {"topics": ["t0"], "group": "g1"}
    path = _write(tmp_path, [
        {"process": 0, "type": "invoke", "f": "subscribe", "value": subscribe},
        {"process": 0, "type": "ok", "f": "subscribe", "value": subscribe},
        *_txn(1, [_send(1), _send(2)], [_send(1, 0), _send(2, 1)]),
        # The member commits offset 2 of t0/0 in a txn having polled only offset 1.
        *_txn(0, [["poll", None], ["commit", {"t0/0": 2}]],
              [["poll", {"t0/0": [[1, "k1", 2]]}], ["commit", {"t0/0": 2}]]),
        *_final_poll(2, [[0, "k1", 1], [1, "k1", 2]]),
    ])
    verdict = check_file(path, mode="strict")
    assert list(verdict["counts"]) == ["lost-by-commit"]


def test_a_malformed_micro_op_is_a_history_error(tmp_path: Path) -> None:
    path = _write(tmp_path, _txn(0, [["send", {"topic": "t0", "value": "x", "key": None}]],
                                 [["send", {"topic": "t0", "value": "x", "key": None}]]))
    with pytest.raises(HistoryError, match=r"txn micro-op 0 \(send\) has a malformed payload"):
        check_file(path)


# -- process and realtime order -----------------------------------------------------------


def test_realtime_and_process_order_close_a_cycle_only_when_asked(tmp_path: Path) -> None:
    # T1 completes before T2 is invoked, yet T2's write sits below T1's in t0/0.
    path = _write(tmp_path, [
        *_txn(0, [_send(1)], [_send(1, 1)]),
        *_txn(0, [_send(2)], [_send(2, 0)]),
        *_final_poll(1, [[0, "k1", 2], [1, "k1", 1]]),
    ])
    assert "G0" not in check_file(path, mode="strict")["counts"]
    for order in ("realtime", "process"):
        verdict = check_file(path, mode="strict", txn_orders=[order])
        (evidence,) = verdict["anomalies"]["G0"]
        assert evidence["orders"] == [order] and evidence["indices"] == [1, 3]
        assert sorted(_types(evidence)) == sorted(["ww", order])
    with pytest.raises(ValueError, match="unknown transaction order"):
        check_file(path, txn_orders=["wallclock"])


# -- graph search ----------------------------------------------------------------------


def test_components_and_cycles_on_a_small_graph() -> None:
    # 0 -ww-> 1 -wr-> 2 -rw-> 0, and 3 -> 4 (acyclic).
    succ: list[dict[int, int]] = [{1: WW}, {2: WR}, {0: RW}, {4: WW}, {}]
    assert [sorted(c) for c in strongly_connected(succ, range(5))] == [[0, 1, 2]]
    (cycle,) = find_cycles(succ)
    assert cycle.kind == "G-single" and sorted(cycle.nodes) == [0, 1, 2]
    assert sorted(cycle.types) == sorted([WW, WR, RW])


def test_a_long_chain_and_ring_are_searched_without_recursion() -> None:
    n = 50_000
    succ: list[dict[int, int]] = [{i + 1: WW} for i in range(n - 1)] + [{0: WW}]
    (cycle,) = find_cycles(succ)
    assert cycle.kind == "G0" and len(cycle.nodes) == n


# -- generated histories -------------------------------------------------------------


@SETTINGS
@given(txn_histories())
def test_histories_of_a_correct_transactional_log_give_no_findings(
    drawn: tuple[list[dict[str, Any]], int],
) -> None:
    events, _ = drawn
    for orders in ((), ("process", "realtime")):
        verdict = check_steps(steps_of(events), txn_orders=orders)
        assert verdict["counts"] == {}, verdict["anomalies"]
        assert verdict["valid"] is True


@SETTINGS
@given(txn_histories(skew=True))
def test_planted_read_skews_are_found_as_g_single(
    drawn: tuple[list[dict[str, Any]], int],
) -> None:
    events, planted = drawn
    verdict = check_steps(steps_of(events))
    found = verdict["counts"].get("G-single", 0)
    # Two plants may share one strongly connected component, which gives one cycle.
    assert (found > 0) == (planted > 0), (planted, verdict["counts"])
    assert set(verdict["counts"]) <= {"G-single"}
    for evidence in verdict["anomalies"].get("G-single", []):
        assert _types(evidence).count("rw") == 1


@SETTINGS
@given(transform_histories())
def test_correct_consume_transform_produce_histories_give_no_findings(
    drawn: tuple[list[dict[str, Any]], int],
) -> None:
    events, _ = drawn
    verdict = check_steps(steps_of(events))
    assert verdict["counts"] == {}, verdict["anomalies"]


@SETTINGS
@given(transform_histories(weakness="lost-commit"))
def test_offsets_committed_outside_the_transaction_and_lost_duplicate_outputs(
    drawn: tuple[list[dict[str, Any]], int],
) -> None:
    events, duplicated = drawn
    verdict = check_steps(steps_of(events))
    assert set(verdict["counts"]) <= {"eos-duplicate"}, verdict["counts"]
    # A lost commit duplicates its inputs once a replacement transforms them again.
    assert verdict["counts"].get("eos-duplicate", 0) == duplicated


@SETTINGS
@given(transform_histories(weakness="drop-output"))
def test_each_dropped_output_is_one_eos_loss(drawn: tuple[list[dict[str, Any]], int]) -> None:
    events, planted = drawn
    verdict = check_steps(steps_of(events))
    # A history without a single output is not a consume-transform-produce one.
    outputs = any(mop[0] == "send" and "input" in mop[1] for event in events
                  if event["f"] == "txn" for mop in event["value"] or [])
    assert verdict["counts"].get("eos-loss", 0) == (planted if outputs else 0)
    assert set(verdict["counts"]) <= {"eos-loss"}


def test_a_txn_may_list_its_sends_only_on_completion(tmp_path: Path) -> None:
    # The transform decides its output as it runs; the output is read after it completes.
    path = _write(tmp_path, [
        *_txn(0, [_send(1)], [_send(1, 0)]),
        *_txn(1, [["poll", None]],
              [["poll", {"t0/0": [[0, "k1", 1]]}],
               ["send", {"topic": "out", "key": "k1", "value": 2, "partition": 0, "offset": 0,
                         "input": 1}], ["commit", {"t0/0": 1}]]),
        {"process": 2, "type": "invoke", "f": "poll", "value": None},
        {"process": 2, "type": "ok", "f": "poll", "value": {"out/0": [[0, "k1", 2]]}},
    ])
    verdict = check_file(path, mode="strict")
    assert verdict["counts"] == {}, verdict["anomalies"]


# -- the command line --------------------------------------------------------------------


def test_faultline_check_prints_the_explained_cycle(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["check", str(HISTORIES / "G-single.jsonl"),
                                      "--mode", "strict", "--out",
                                      str(tmp_path / "verdict.json")], terminal_width=80)
    assert result.exit_code == 1
    text = " ".join(result.output.split())
    assert "G-single, indices [3, 5]:" in text
    assert ("T1 (index 5) read t0/0 only up to offset 0 (value 1); T2 (index 3) wrote 3 "
            "there at offset 1, a later version T1 did not see") in text
    assert "so T1 must come before itself: a cycle of 2 transactions" in text


def test_report_sentences_of_txn_findings_cite_times(tmp_path: Path) -> None:
    path = HISTORIES / "G1a.jsonl"
    lines = path.read_text().splitlines()
    events = Events({json.loads(line)["index"]: line.encode() for line in lines})
    verdict = check_file(str(path))
    for kind in ("aborted-read", "G1a"):
        (group,) = group_items(kind, verdict["anomalies"][kind])
        text = sentence(group, events)
        assert "?" not in text and re.search(r"\d\.\d+ s", text) and text.endswith("."), text


def test_writer_puts_txn_send_fields_in_canonical_order() -> None:
    event = {"index": 0, "time": 0, "process": 0, "type": "ok", "f": "txn",
             "value": [["send", {"input": 3, "offset": 1, "partition": 0, "value": 4,
                                 "key": None, "topic": "out"}], ["poll", None]]}
    assert encode_event(event) == (
        b'{"index":0,"time":0,"process":0,"type":"ok","f":"txn","value":[["send",'
        b'{"topic":"out","key":null,"value":4,"partition":0,"offset":1,"input":3}],'
        b'["poll",null]]}\n')


def test_report_tells_a_txn_event_by_its_micro_ops() -> None:
    path = HISTORIES / "G-single.jsonl"
    verdict = check_file(str(path), mode="strict")
    (group,) = group_items("G-single", verdict["anomalies"]["G-single"])
    events = [json.loads(line) for line in path.read_text().splitlines()]
    relevant = Relevant(group)
    assert event_detail(events[3], relevant) == "sent t0/0@1 = 3, t0/1@0 = 4"
    assert event_detail(events[5], relevant) == "polled t0/0@0 = 1; t0/1@0 = 4"
