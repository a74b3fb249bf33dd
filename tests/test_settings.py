"""Run settings are declared once: the run config, `faultline run`'s options, the
campaign's axes and the reproduce command all come from the same table."""

from __future__ import annotations

from dataclasses import fields

import pytest
from click.testing import CliRunner

from harness import exit_codes
from harness.cli import cli
from harness.run_config import SETTINGS, RunConfig
from harness.settings import ConfigError


def test_every_field_of_the_run_config_is_a_declared_setting() -> None:
    assert {f.name for f in fields(RunConfig)} == {s.attr for s in SETTINGS.values()}
    for s in SETTINGS.values():
        assert s.help.strip(), s.name
        s.check(s.default)  # every default is itself a valid value


@pytest.mark.parametrize("command", ["run", "campaign"])
def test_the_commands_offer_an_option_per_setting_with_its_help(command: str) -> None:
    result = CliRunner().invoke(cli, [command, "--help"], terminal_width=200)
    assert result.exit_code == 0
    for s in SETTINGS.values():
        if command == "campaign" and s.name == "seed":
            assert "--seed " not in result.output  # a campaign has --seeds instead
            continue
        assert s.option in result.output, s.option
    assert "3 unknown" in result.output and "130 interrupted" in result.output


@pytest.mark.parametrize(("name", "raw", "value"), [
    ("enable-idempotence", "yes", True),
    ("enable-idempotence", False, False),
    ("partitions", "4", 4),
    ("time-limit", 7, 7.0),
    ("acks", 1, "1"),
    ("allow", "unseen+duplicate", ("unseen", "duplicate")),
    ("allow", ["unseen"], ("unseen",)),
    ("fault-cmd", ["kill=docker kill k", "restart=docker start k"],
     {"kill": "docker kill k", "restart": "docker start k"}),
    ("nemesis", "partition+kill", "partition,kill"),
])
def test_values_parse_from_text_and_toml(name: str, raw: object, value: object) -> None:
    assert SETTINGS[name].parse(raw) == value


@pytest.mark.parametrize(("name", "raw", "message"), [
    ("enable-idempotence", "maybe", "must be true or false"),
    ("crash-probability", "1.5", "at most 1"),
    ("flush", "sometimes", "--flush must be"),
    ("allow", "lost-writes", "unknown anomaly type"),
    ("fault-cmd", ["kill"], "ACTION='shell command'"),
    ("workload", "queues", "--workload must be one of"),
])
def test_bad_values_name_the_option(name: str, raw: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        SETTINGS[name].parse(raw)


def test_validation_checks_each_value_then_the_rules_between_settings() -> None:
    with pytest.raises(ConfigError, match="--partitions must be at least 1"):
        RunConfig(partitions=0).validate()
    with pytest.raises(ConfigError, match="Kafka requires acks=all"):
        RunConfig.build({"acks": "1", "enable-idempotence": True})
    assert RunConfig.build({"acks": "0", "seed": 1}).enable_idempotence is False
    with pytest.raises(ConfigError, match="unknown setting"):
        RunConfig.build({"ack": "1"})


def test_an_unknown_verdict_has_its_own_exit_code() -> None:
    assert exit_codes.for_verdict(True) == exit_codes.VALID == 0
    assert exit_codes.for_verdict(False) == exit_codes.ANOMALIES == 1
    assert exit_codes.for_verdict("unknown") == exit_codes.UNKNOWN == 3
    assert len({exit_codes.VALID, exit_codes.ANOMALIES, exit_codes.BAD_INPUT,
                exit_codes.UNKNOWN, exit_codes.INTERRUPTED}) == 5
