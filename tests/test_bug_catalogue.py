"""The catalogue of plantable broker bugs: its shape, the `--bug` setting from the command
line to the broker, `faultline bugs`, and real detections of two cheap bugs.

The per-bug campaigns (each bug found by its preset, each preset clean without it) are
in test_bug_campaigns.py, marked slow.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import trio
from click.testing import CliRunner

from harness.broker_process import BrokerStartError, running_broker, start_broker
from harness.bug_presets import bug_campaigns
from harness.campaign.matrix import build_matrix, parse_axis, read_preset
from harness.cli import cli
from harness.run_config import RunConfig
from harness.runner import run
from harness.settings import ConfigError
from reference_broker import bugs
from reference_broker.config import BrokerConfig
from reference_broker.config import ConfigError as BrokerConfigError

BROKER = Path(__file__).resolve().parent.parent / "reference_broker"
PRESETS = Path(__file__).resolve().parent.parent / "harness" / "campaign" / "presets"


def test_the_catalogue_has_at_least_twelve_documented_bugs() -> None:
    assert len(bugs.BUGS) >= 12
    for name, bug in bugs.BUGS.items():
        assert bug.name == name
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", name), name
        assert len(bug.description) > 80, name
        assert bug.component and bug.modelled_on, name
        assert bug.source.startswith("https://"), name


def test_every_bug_is_one_marked_branch_at_its_code_site() -> None:
    sources = {p: p.read_text() for p in BROKER.rglob("*.py") if p.name != "bugs.py"}
    for name in bugs.BUGS:
        asking = [p for p, text in sources.items() if f'bugs.enabled("{name}")' in text]
        marked = [p for p, text in sources.items() if f"PLANTED BUG {name}:" in text]
        assert asking, f"no code asks bugs.enabled({name!r})"
        assert set(asking) == set(marked), f"{name}: unmarked branch in {asking}"


def test_no_bug_is_on_unless_configured() -> None:
    assert BrokerConfig.from_properties({}).bugs == frozenset()
    assert not any(bugs.enabled(name) for name in bugs.BUGS)
    with pytest.raises(bugs.UnknownBugError):
        bugs.enabled("no-such-bug")


def test_the_broker_setting_names_bugs_and_refuses_unknown_ones() -> None:
    config = BrokerConfig.from_properties(
        {"faultline.bugs": "ack-before-fsync, dedup-window-1"})
    assert config.bugs == {"ack-before-fsync", "dedup-window-1"}
    with pytest.raises(BrokerConfigError, match=r"unknown bug.*the catalogue has"):
        BrokerConfig.from_properties({"faultline.bugs": "ack-before-fsync,nope"})


def test_each_broker_task_tree_sees_only_its_own_bugs() -> None:
    # In the sim many brokers share a process: a bug planted in one must not leak.
    seen: dict[str, list[bool]] = {"a": [], "b": []}

    async def broker(label: str, planted: tuple[str, ...]) -> None:
        bugs.activate(planted)

        async def child() -> None:
            await trio.sleep(0.01)
            seen[label].append(bugs.enabled("ack-before-fsync"))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(child)
            nursery.start_soon(child)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(broker, "a", ("ack-before-fsync",))
            nursery.start_soon(broker, "b", ())

    trio.run(main)
    assert seen == {"a": [True, True], "b": [False, False]}
    assert not bugs.enabled("ack-before-fsync")


def test_the_run_setting_reaches_the_broker_settings_and_the_reproduce_command() -> None:
    assert "faultline.bugs" not in RunConfig().broker_settings()
    config = RunConfig.build({"bug": ("ack-before-fsync", "torn-tail-kept"), "seed": 4})
    assert config.broker_settings()["faultline.bugs"] == "ack-before-fsync,torn-tail-kept"
    assert "--bug ack-before-fsync --bug torn-tail-kept" in config.command()
    again = RunConfig.from_json(json.loads(json.dumps(config.to_json())))
    assert again == config
    assert BrokerConfig.from_properties(
        {"faultline.bugs": config.broker_settings()["faultline.bugs"]}
    ).bugs == {"ack-before-fsync", "torn-tail-kept"}


def test_an_unknown_bug_is_refused_with_the_catalogue() -> None:
    with pytest.raises(ConfigError, match=r"--bug: unknown bug.*ack-before-replication"):
        RunConfig.build({"bug": ("ack-before-fsync", "nope")})
    result = CliRunner().invoke(cli, ["run", "--bug", "nope"])
    assert result.exit_code == 2
    assert "the catalogue has" in result.output


def test_a_bug_needs_a_target_that_runs_the_reference_broker() -> None:
    with pytest.raises(ConfigError, match="--target sim or process"):
        RunConfig.build({"target": "tansu", "bug": ("ack-before-fsync",), "nemesis": "none"})


def test_bug_is_a_campaign_axis() -> None:
    axis = parse_axis("bug=ack-before-fsync,torn-tail-kept")
    assert axis.values == (("ack-before-fsync",), ("torn-tail-kept",))
    matrix = build_matrix(None, fixed={}, axes=[axis], seeds=(1,))
    assert [c.config(1).bugs for c in matrix.cells] == [
        ("ack-before-fsync",), ("torn-tail-kept",)]


def test_every_bug_has_a_preset_that_builds_with_and_without_it() -> None:
    campaigns = bug_campaigns()
    assert [c.bug.name for c in campaigns] == list(bugs.BUGS)
    for c in campaigns:
        matrix = read_preset(c.preset)
        assert matrix.seeds == (1, 2, 3, 4, 5)
        for fixed in ({}, {"bug": (c.bug.name,)}):
            built = build_matrix(matrix, fixed=fixed, axes=[], seeds=None)
            assert [cell.error for cell in built.cells] == [None], c.preset
            config = built.cells[0].config(1)
            assert config.bugs == tuple(fixed.get("bug", ()))
            # The configuration that must not lose data, and Kafka's producer knobs.
            assert (config.acks, config.replication_factor, config.min_insync_replicas,
                    config.flush, config.enable_idempotence) == ("all", 3, 2, "every", True)


def test_faultline_bugs_lists_names_descriptions_sources_and_campaigns() -> None:
    result = CliRunner().invoke(cli, ["bugs"])
    assert result.exit_code == 0, result.output
    for name, bug in bugs.BUGS.items():
        assert f"{name}  [{bug.component}]" in result.output
        assert f"source: {bug.source}" in result.output
        assert f"faultline campaign --preset bug-{name} --bug {name}" in result.output
    assert f"{len(bugs.BUGS)} bugs;" in result.output
    one = CliRunner().invoke(cli, ["bugs", "ack-before-fsync", "--json"])
    assert one.exit_code == 0, one.output
    (entry,) = json.loads(one.output)
    assert entry["name"] == "ack-before-fsync"
    assert "--schedule bug-power-loss-all.json" in entry["configuration"]
    unknown = CliRunner().invoke(cli, ["bugs", "nope"])
    assert unknown.exit_code == 2
    assert "the catalogue has" in unknown.output


# Two cheap bugs, each found by one seeded sim run of its preset's configuration that
# the same run without the bug passes.
CHEAP = {
    "ack-before-fsync": {"lost-write", "unseen"},
    "ack-before-replication": {"lost-write", "inconsistent-offsets"},
}


@pytest.mark.parametrize("name", sorted(CHEAP))
def test_a_cheap_bug_is_found_and_its_run_without_it_is_clean(
    name: str, tmp_path: Path
) -> None:
    matrix = build_matrix(read_preset(f"bug-{name}"), fixed={}, axes=[], seeds=None)
    clean = matrix.cells[0].config(1)
    planted = RunConfig.build({**matrix.cells[0].given, "seed": 1, "bug": (name,)})
    without = run(clean, tmp_path / "without", index=False)
    assert without.verdict["valid"] is True, without.verdict["anomaly_types"]
    found = run(planted, tmp_path / "with", index=False)
    assert found.verdict["valid"] is False
    assert set(found.verdict["bad_anomaly_types"]) & CHEAP[name], found.verdict["anomaly_types"]


def test_a_broker_process_runs_with_the_bugs_its_settings_name(tmp_path: Path) -> None:
    # The process target hands run settings to `faultline broker --set`, as here.
    with running_broker(tmp_path / "data", settings={"faultline.bugs": "ack-before-fsync"}) as b:
        b.terminate()
    assert "runs with planted bugs: ack-before-fsync" in b.log_path.read_text()
    with pytest.raises(BrokerStartError, match="exited with code"):
        start_broker(tmp_path / "bad", settings={"faultline.bugs": "nope"})
    assert "unknown bug(s) nope" in (tmp_path / "bad.log").read_text()
