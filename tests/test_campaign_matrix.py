"""Campaign matrices: axes, matrix files, presets, seeds, and the cells that cannot run."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from checkers.anomalies import FAMILIES
from harness.campaign.matrix import (
    Expectation,
    build_matrix,
    parse_axis,
    parse_seeds,
    preset_names,
    read_matrix_file,
    read_preset,
)
from harness.commands.run import config_from_options
from harness.commands.run import run as run_command
from harness.run_config import SETTINGS, RunConfig
from harness.settings import ConfigError


def test_every_run_setting_is_an_axis_but_the_seed() -> None:
    for name, setting in SETTINGS.items():
        assert setting.spec.axis == (name != "seed"), name
    for name in ("acks", "min-insync-replicas", "replication-factor", "enable-idempotence",
                 "flush", "commit", "unclean-leader-election", "nemesis", "workload",
                 "client", "target", "partitions"):
        assert name in SETTINGS


def test_an_axis_parses_values_with_the_settings_own_types() -> None:
    assert parse_axis("acks=0,1,all").values == ("0", "1", "all")
    assert parse_axis("enable-idempotence=true,off").values == (True, False)
    assert parse_axis("partitions=1,4").values == (1, 4)
    assert parse_axis("nemesis=kill,partition+pause").values == ("kill", "partition,pause")


@pytest.mark.parametrize(("text", "message"), [
    ("acks=2", "--acks must be one of 0, 1, all"),
    ("ack=1", "unknown setting 'ack'"),
    ("seed=1,2", "seed cannot be an axis"),
    ("partitions=one", "--partitions must be a whole number"),
    ("partitions=0", "--partitions must be at least 1"),
    ("nemesis=kill,bogus", "unknown nemesis package"),
    ("acks", "NAME=V1,V2"),
    ("acks=1,1", "repeated"),
])
def test_a_bad_axis_says_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_axis(text)


def test_axes_multiply_and_invalid_combinations_are_kept_with_their_reason() -> None:
    matrix = build_matrix(None, fixed={"time-limit": 5.0},
                          axes=[parse_axis("acks=1,all"),
                                parse_axis("enable-idempotence=true,false")],
                          seeds=(1, 2, 3))
    labels = [cell.label for cell in matrix.cells]
    assert labels == ["acks=1 enable-idempotence=true", "acks=1 enable-idempotence=false",
                      "acks=all enable-idempotence=true", "acks=all enable-idempotence=false"]
    bad = matrix.cells[0]
    assert bad.error is not None and "Kafka requires acks=all" in bad.error
    assert [c.index for c in matrix.runnable] == [1, 2, 3]
    config = matrix.cells[1].config(2)
    assert (config.acks, config.enable_idempotence, config.seed, config.time_limit_s) == (
        "1", False, 2, 5.0)


def test_settings_not_given_are_derived_per_configuration() -> None:
    matrix = build_matrix(None, fixed={}, axes=[parse_axis("acks=1,all"),
                                                parse_axis("nodes=1,5")], seeds=(1,))
    configs = {cell.label: cell.config(1) for cell in matrix.cells}
    # Kafka's producer: idempotence is on by default exactly when acks=all.
    assert configs["acks=1 nodes=1"].enable_idempotence is False
    assert configs["acks=all nodes=5"].enable_idempotence is True
    # Replication factor 3 and min.insync 2, lowered to fit one node.
    one = configs["acks=all nodes=1"]
    assert (one.replication_factor, one.min_insync_replicas) == (1, 1)
    five = configs["acks=all nodes=5"]
    assert (five.replication_factor, five.min_insync_replicas) == (3, 2)


def test_a_setting_given_twice_is_refused() -> None:
    with pytest.raises(ConfigError, match="--acks is also an axis"):
        build_matrix(None, fixed={"acks": "1"}, axes=[parse_axis("acks=1,all")], seeds=None)


def test_seeds_and_seed_ranges() -> None:
    assert parse_seeds(3, None) == (1, 2, 3)
    assert parse_seeds(None, "5..7") == (5, 6, 7)
    assert parse_seeds(None, None) == (1,)
    for bad in ("7..5", "a..b", "5", "-1..2"):
        with pytest.raises(ConfigError, match="--seed-range"):
            parse_seeds(None, bad)
    with pytest.raises(ConfigError, match="not both"):
        parse_seeds(2, "1..2")


def test_expectations_from_names_families_and_lists() -> None:
    assert Expectation.parse(None).name == "safe" and not Expectation.parse("safe").weak
    lossy = Expectation.parse("lossy-ok")
    assert lossy.weak and lossy.tolerated == frozenset(FAMILIES["loss"])
    mixed = Expectation.parse(["duplication", "key-order"], ["duplicate"])
    assert mixed.tolerated == {"duplicate", "key-order"}
    assert mixed.demonstrates == {"duplicate"}
    assert Expectation.parse("duplicate,key-order").tolerated == {"duplicate", "key-order"}
    with pytest.raises(ConfigError, match="neither an anomaly type nor a family"):
        Expectation.parse(["lost-writes"])
    with pytest.raises(ConfigError, match="does not tolerate"):
        Expectation.parse(["duplicate"], ["lost-write"])


MATRIX = """
name = "mine"
seeds = 2

[settings]
time-limit = 4
nemesis = "none"

[vary]
partitions = [1, 3]

[[configuration]]
name = "weak"
claim = "acks=1 may lose"
expect = "lossy-ok"
acks = "1"

[[configuration]]
name = "strong"
claim = "acks=1 may lose"
acks = "all"
"""


def test_a_matrix_file_crosses_configurations_with_axes(tmp_path: Path) -> None:
    path = tmp_path / "m.toml"
    path.write_text(MATRIX)
    matrix = build_matrix(read_matrix_file(path), fixed={"rate": 20.0}, axes=[], seeds=None)
    assert matrix.name == "mine" and matrix.seeds == (1, 2)
    assert [c.label for c in matrix.cells] == ["weak partitions=1", "weak partitions=3",
                                               "strong partitions=1", "strong partitions=3"]
    weak = matrix.cells[1].config(2)
    assert (weak.acks, weak.partitions, weak.time_limit_s, weak.rate, weak.nemesis) == (
        "1", 3, 4.0, 20.0, "none")
    assert matrix.cells[0].expectation.name == "lossy-ok"
    assert matrix.cells[2].expectation.name == "safe"
    assert {c.claim for c in matrix.cells} == {"acks=1 may lose"}
    # A command-line axis replaces the file's axis of the same name.
    narrowed = build_matrix(read_matrix_file(path), fixed={}, axes=[parse_axis("partitions=2")],
                            seeds=(9,))
    assert [c.label for c in narrowed.cells] == ["weak partitions=2", "strong partitions=2"]
    assert narrowed.seeds == (9,)


@pytest.mark.parametrize(("text", "message"), [
    ("nme = 'x'", "unknown key"),
    ("[settings]\nacks = '2'", "--acks must be one of"),
    ("[settings]\nack = '1'", r"\[settings\]: unknown setting 'ack'"),
    ("[[configuration]]\nname = 'x'\nexpect = 'sometimes'", "configuration 1 \\(x\\)"),
    ("[vary]\nacks = '1'", "expected a list"),
    ("seeds = 'three'", "seeds must be a whole number"),
    ("this is not toml", "not valid TOML"),
])
def test_a_bad_matrix_file_names_the_file_and_the_problem(tmp_path: Path, text: str,
                                                          message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as caught:
        build_matrix(read_matrix_file(path), fixed={}, axes=[], seeds=None)
    assert str(path) in str(caught.value)


def test_the_kafka_guarantees_preset_states_each_claim_with_runnable_configurations() -> None:
    assert "kafka-guarantees" in preset_names()
    matrix = build_matrix(read_preset("kafka-guarantees"), fixed={}, axes=[], seeds=None)
    assert matrix.runnable == list(matrix.cells)
    claims: dict[str | None, list[bool]] = {}
    for cell in matrix.cells:
        claims.setdefault(cell.claim, []).append(cell.expectation.weak)
    assert None not in claims and len(claims) == 6
    safe = [c.config(1) for c in matrix.cells if not c.expectation.weak]
    # Every configuration that must not lose is Kafka's durable setup.
    for config in safe:
        assert (config.acks, config.replication_factor, config.min_insync_replicas,
                config.unclean_leader_election) == ("all", 3, 2, False)
        assert config.flush == "every" and config.target == "sim"
    with pytest.raises(ConfigError, match=r"unknown preset 'nope'; presets: .*kafka-guarantees"):
        read_preset("nope")


def test_reproduce_command_rebuilds_the_same_configuration() -> None:
    config = RunConfig.build({"seed": 7, "acks": "1", "nodes": 5, "nemesis": "kill,pause",
                              "allow": ("unseen",), "flush": "every"})
    command = config.command()
    assert command.startswith("faultline run ") and "--seed 7" in command
    assert "--replication-factor" not in command  # derived, so not written
    ctx = run_command.make_context("run", shlex.split(command)[2:])
    assert config_from_options(dict(ctx.params)) == config


def test_a_schedule_in_a_matrix_file_is_found_beside_it_and_sets_its_own_timing(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "matrices"
    folder.mkdir()
    (folder / "kill.json").write_text(
        '{"nodes": ["n1", "n2", "n3"], "duration_ms": 8000, "recovery_ms": 2000, "ops": '
        '[{"f": "kill", "at_ms": 1000, "nodes": ["n2"]}]}')
    (folder / "m.toml").write_text(
        '[settings]\ntime-limit = 30\nrecovery = 5\nnemesis = "partition"\n\n'
        '[[configuration]]\nname = "scheduled"\nschedule = "kill.json"\n\n'
        '[[configuration]]\nname = "generated"\n')
    matrix = build_matrix(read_matrix_file(folder / "m.toml"), fixed={"time-limit": 20},
                          axes=[], seeds=(1,))
    scheduled, generated = matrix.cells
    assert scheduled.error is None and generated.error is None
    config = scheduled.config(1)
    # Relative to the matrix file, not the working directory; its faults and timing are
    # the schedule's, not the campaign-wide ones.
    assert config.schedule == str(folder / "kill.json")
    assert (config.nemesis, config.time_limit_s, config.recovery_s) == ("kill", 8.0, 2.0)
    other = generated.config(1)
    assert (other.schedule, other.nemesis, other.time_limit_s) == (None, "partition", 20.0)


def test_the_kafka_guarantees_preset_runs_its_unclean_rows_on_its_own_schedule() -> None:
    matrix = build_matrix(read_preset("kafka-guarantees"), fixed={}, axes=[], seeds=(1,))
    unclean = [c for c in matrix.cells if c.label.startswith("unclean election")]
    assert len(unclean) == 2 and all(c.error is None for c in unclean)
    for cell in unclean:
        config = cell.config(1)
        assert config.schedule is not None and Path(config.schedule).is_file()
        assert config.nemesis == "kill"
