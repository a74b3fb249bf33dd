"""Which campaign finds each planted bug of the reference broker's catalogue.

Every bug of `reference_broker.bugs.BUGS` has a shipped campaign preset named
`bug-<name>`: the configuration the bug breaks (acks=all, RF 3, min.insync.replicas 2,
`--flush every`, the workload that reaches its code) and the faults aimed at it, often a
schedule file beside the preset. `faultline campaign --preset bug-<name> --bug <name>`
must find the bug (exit 1); the same campaign without `--bug` must be clean (exit 0).

A preset whose faults cannot reach the bug's code yet says so in its description,
starting with `NOT FOUND YET` and naming the fault it needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.campaign.matrix import MatrixFile, preset_names, read_preset
from harness.run_config import SETTINGS
from reference_broker.bugs import BUGS, Bug

PREFIX = "bug-"
# A preset description starting with this marks a bug today's faults do not find.
NOT_FOUND_MARK = "NOT FOUND YET"


@dataclass(frozen=True)
class BugCampaign:
    """A catalogued bug with the campaign preset aimed at it."""

    bug: Bug
    preset: str
    matrix: MatrixFile

    @property
    def found(self) -> bool:
        """Whether the preset is expected to find the bug with today's faults."""
        return not self.matrix.description.startswith(NOT_FOUND_MARK)

    @property
    def command(self) -> str:
        """The campaign that finds the bug."""
        return f"faultline campaign --preset {self.preset} --bug {self.bug.name}"

    @property
    def settings_text(self) -> str:
        """The preset's settings as `faultline run` options."""
        parts: list[str] = []
        for name, value in self.matrix.settings.items():
            s = SETTINGS[name]
            # A schedule is shown by its file name: it ships beside the preset.
            shown = Path(value).name if s.spec.path and isinstance(value, str) else value
            parts.extend(s.args(shown))
        return " ".join(parts)


def preset_of(name: str) -> str:
    """The preset name aimed at bug `name`."""
    return f"{PREFIX}{name}"


def bug_campaigns() -> list[BugCampaign]:
    """Every catalogued bug with its preset, in catalogue order; a bug without a preset
    is a packaging mistake and raises LookupError."""
    shipped = set(preset_names())
    found: list[BugCampaign] = []
    for bug in BUGS.values():
        preset = preset_of(bug.name)
        if preset not in shipped:
            raise LookupError(f"bug {bug.name} has no campaign preset {preset}")
        found.append(BugCampaign(bug, preset, read_preset(preset)))
    return found
