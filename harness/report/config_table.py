"""A run's configuration as a person writes it on the command line.

results.json records the configuration as JSON values by field (`"enable_idempotence":
false`, `"allow": []`); the report shows each setting the way `faultline run` takes it
(`--no-enable-idempotence`, `--acks all`), through the setting's own `Setting.args`, so
what is read can be pasted back.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping
from html import escape
from typing import Any, NamedTuple

from harness.run_config import SETTINGS
from harness.settings import ConfigError, Setting


class ConfigRow(NamedTuple):
    """One setting of a run: its option, the value as written, and whether it was the
    value the setting takes when not given."""

    option: str
    written: str
    default: bool


def _typed(s: Setting, value: Any) -> Any:
    """A JSON value of setting `s` back in the setting's own type (lists as tuples)."""
    if s.kind == "strs":
        return tuple(value or ())
    if s.kind == "commands":
        return dict(value or {})
    return value


def written(s: Setting, value: Any) -> str:
    """`value` of setting `s` as command-line arguments: `--acks all`,
    `--no-enable-idempotence`; "not set" for an unset optional value."""
    value = _typed(s, value)
    if value is None or (s.kind in ("strs", "commands") and not value):
        return "not set"
    return shlex.join(s.args(value))


def config_rows(config: Mapping[str, Any]) -> list[ConfigRow]:
    """Every recorded setting in declaration order, then any the code no longer knows."""
    rows: list[ConfigRow] = []
    earlier: dict[str, Any] = {}
    for name, s in SETTINGS.items():
        if s.attr not in config:
            continue
        value = _typed(s, config[s.attr])
        try:
            implied = _typed(s, s.implied(earlier))
        except ConfigError:
            # Derived from a file no longer there (a campaign's schedule in a temporary
            # folder): the report shows the value without claiming it was implied.
            implied = object()
        earlier[name] = value
        rows.append(ConfigRow(s.option, written(s, value), value == implied))
    known = {s.attr for s in SETTINGS.values()}
    rows.extend(ConfigRow(key, json.dumps(value), False)
                for key, value in config.items() if key not in known)
    return rows


def setting_text(config: Mapping[str, Any], name: str) -> str:
    """One setting (by its name, e.g. "acks") of a recorded config as written; "-" when
    the config does not record it."""
    s = SETTINGS[name]
    return written(s, config[s.attr]) if s.attr in config else "-"


def as_option(name: str, text: Any) -> str:
    """A setting given as `--vary` text (`acks`, "1") written as its command-line
    option (`--acks 1`); unknown names or unparsable text as `name=text`."""
    s = SETTINGS.get(name)
    if s is None or text is None:
        return f"{name}={text}"
    try:
        return written(s, s.parse(text))
    except ConfigError:
        return f"{name}={text}"


def topics_text(topics: Mapping[str, Any]) -> str:
    """The topics of a run and where each lives: "t1, t2: cluster"."""
    by_place: dict[str, list[str]] = {}
    for topic, place in topics.items():
        by_place.setdefault(str(place), []).append(topic)
    return "; ".join(f"{', '.join(names)}: {place}" for place, names in by_place.items())


def nemesis_text(config: Mapping[str, Any], ops: int) -> str:
    """The faults of a run in a few words: "none" when it injected none."""
    nemesis = config.get("nemesis")
    if config.get("schedule"):
        return f"schedule {config['schedule']} ({nemesis}), {ops} ops"
    if not nemesis or nemesis == "none":
        return "none"
    return f"{nemesis}, one action every ~{config.get('nemesis_interval_s')} s, {ops} ops"


def config_html(config: Mapping[str, Any]) -> str:
    """The configuration table, one setting a row as written on the command line; the
    settings at the value they take when not given (their default, or derived from other
    settings or the schedule) are marked "not given"."""
    cells = "".join(
        f"<tr><td><code>{escape(row.option if row.written == 'not set' else row.written)}"
        f"</code>{' not set' if row.written == 'not set' else ''}</td>"
        f"<td class='muted'>{'not given' if row.default else ''}</td></tr>"
        for row in config_rows(config))
    return f'<table class="kv">{cells}</table>'
