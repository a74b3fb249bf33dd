"""A campaign's matrix: configurations × seeds, each configuration with an expectation.

A configuration (a `Cell`) is a set of run settings, by the names `faultline run`
takes. They come from, in rising precedence:

1. a matrix file's (or preset's) `[settings]`, fixed for every configuration;
2. plain `faultline run` options given to `faultline campaign`;
3. axes: a file's `[vary]` table and `--vary NAME=V1,V2,...` (a command-line axis
   replaces the file's axis of the same name); every combination of axis values is a
   configuration;
4. a file's `[[configuration]]` entries, each crossed with every combination of axes.

A setting given in two of 2-4 is refused, so nothing a person typed is silently
overridden. Each configuration is built and validated for every seed before anything
runs; one that cannot run is kept with its reason (`Cell.error`) and skipped.

An expectation says which anomalies a configuration may show: `safe` (none outside the
run's allowed set), `lossy-ok` (the loss family), or a list of anomaly types and family
names. `demonstrates` names the anomalies that show a weak configuration's weakness (by
default everything it tolerates); a weak configuration none of whose seeds showed them
is reported as "not demonstrated", never as safe.
"""

from __future__ import annotations

import itertools
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from checkers.anomalies import ANOMALIES, FAMILIES
from harness.run_config import SCHEDULE_SETS, SETTINGS, RunConfig
from harness.settings import ConfigError, Setting

SAFE = "safe"
LOSSY_OK = "lossy-ok"

# Keys of a matrix file, besides the settings themselves.
FILE_KEYS = ("name", "description", "seeds", "seed-range", "settings", "vary", "configuration")
CONFIGURATION_KEYS = ("name", "claim", "expect", "demonstrates")


def anomaly_types(items: Iterable[str], where: str) -> frozenset[str]:
    """Anomaly types from names of types and families; ConfigError on an unknown one."""
    types: set[str] = set()
    for item in items:
        if item in FAMILIES:
            types.update(FAMILIES[item])
        elif item in ANOMALIES:
            types.add(item)
        else:
            raise ConfigError(f"{where}: {item!r} is neither an anomaly type nor a family; "
                              f"families: {', '.join(FAMILIES)}; types: {', '.join(ANOMALIES)}")
    return frozenset(types)


@dataclass(frozen=True)
class Expectation:
    """Which anomalies a configuration may show, and which would show its weakness."""

    name: str  # "safe", "lossy-ok", or the tolerated names as given
    tolerated: frozenset[str] = frozenset()
    demonstrates: frozenset[str] = frozenset()

    @property
    def weak(self) -> bool:
        """Whether the configuration is expected to fail in some way (not `safe`)."""
        return bool(self.tolerated)

    @classmethod
    def parse(cls, raw: Any, demonstrates: Any = None, *, where: str = "expect") -> Expectation:
        """From `safe`, `lossy-ok`, or a list (or comma-separated text) of anomaly types
        and families; `demonstrates` likewise (default: everything tolerated)."""
        if raw is None or raw == SAFE:
            name, tolerated = SAFE, frozenset[str]()
        elif raw == LOSSY_OK:
            name, tolerated = LOSSY_OK, frozenset(FAMILIES["loss"])
        else:
            items = [s.strip() for s in raw.split(",")] if isinstance(raw, str) else list(raw)
            if not items or not all(isinstance(i, str) and i for i in items):
                raise ConfigError(f"{where}: expected 'safe', 'lossy-ok' or a list of anomaly "
                                  f"types, not {raw!r}")
            name, tolerated = ",".join(items), anomaly_types(items, where)
        if demonstrates is None:
            shown = tolerated
        else:
            items = ([s.strip() for s in demonstrates.split(",")]
                     if isinstance(demonstrates, str) else list(demonstrates))
            shown = anomaly_types(items, f"{where} demonstrates")
            if not shown <= tolerated:
                raise ConfigError(f"{where}: demonstrates {sorted(shown - tolerated)}, which "
                                  "the expectation does not tolerate")
        return cls(name, tolerated, shown)

    def to_json(self) -> dict[str, Any]:
        """As written into campaign.json."""
        return {"name": self.name, "tolerated": sorted(self.tolerated),
                "demonstrates": sorted(self.demonstrates)}


@dataclass(frozen=True)
class Cell:
    """One configuration of the matrix."""

    index: int
    label: str
    given: Mapping[str, Any]  # setting name -> value, everything but the seed
    expectation: Expectation
    claim: str | None = None
    error: str | None = None  # why it cannot run; None when it can

    def config(self, seed: int) -> RunConfig:
        """The validated run configuration of this cell for `seed`."""
        return RunConfig.build({**self.given, "seed": seed})

    def to_json(self) -> dict[str, Any]:
        """As written into campaign.json (values as `--vary` writes them)."""
        return {
            "index": self.index,
            "label": self.label,
            "settings": {name: SETTINGS[name].format(value) for name, value in self.given.items()},
            "expectation": self.expectation.to_json(),
            "claim": self.claim,
            "error": self.error,
        }


@dataclass(frozen=True)
class Matrix:
    """Every configuration and the seeds each runs."""

    name: str
    cells: tuple[Cell, ...]
    seeds: tuple[int, ...]
    description: str = ""

    @property
    def runnable(self) -> list[Cell]:
        """The cells that can run."""
        return [cell for cell in self.cells if cell.error is None]


@dataclass(frozen=True)
class Axis:
    """One axis: a setting and the values it takes."""

    setting: Setting
    values: tuple[Any, ...]


def parse_axis(text: str) -> Axis:
    """`NAME=V1,V2,...` into an Axis; ConfigError naming what is wrong."""
    name, sep, values = text.partition("=")
    name = name.strip()
    if not sep or not values.strip():
        raise ConfigError(f"--vary expects NAME=V1,V2,..., not {text!r}")
    return axis(name, [v for v in values.split(",") if v.strip()], where="--vary")


def axis(name: str, values: Sequence[Any], *, where: str, base: Path | None = None) -> Axis:
    """An Axis over setting `name`; ConfigError for an unknown setting or a bad value.
    File paths (schedules) are relative to `base` when given (a matrix file's folder)."""
    s = SETTINGS.get(name)
    if s is None:
        raise ConfigError(f"{where}: unknown setting {name!r}; settings: {', '.join(axis_names())}")
    if not s.spec.axis:
        raise ConfigError(f"{where}: {name} cannot be an axis (use --seeds or --seed-range)")
    if not values:
        raise ConfigError(f"{where} {name}: give at least one value")
    if s.spec.path and base is not None:
        values = [str(base / v) if isinstance(v, str) else v for v in values]
    try:
        parsed = tuple(s.parse(v) for v in values)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    if len(set(map(repr, parsed))) != len(parsed):
        raise ConfigError(f"{where} {name}: a value is repeated in {list(values)}")
    return Axis(s, parsed)


def axis_names() -> list[str]:
    """The settings a campaign may vary."""
    return [name for name, s in SETTINGS.items() if s.spec.axis]


def parse_seeds(seeds: int | None, seed_range: str | None, *,
                default: tuple[int, ...] = (1,)) -> tuple[int, ...]:
    """Seeds from `--seeds N` (1..N) or `--seed-range A..B` (inclusive)."""
    if seeds is not None and seed_range is not None:
        raise ConfigError("give --seeds or --seed-range, not both")
    if seeds is not None:
        if seeds < 1:
            raise ConfigError(f"--seeds must be at least 1, got {seeds}")
        return tuple(range(1, seeds + 1))
    if seed_range is not None:
        low, sep, high = seed_range.partition("..")
        try:
            a, b = int(low), int(high)
        except ValueError:
            a = b = -1
        if not sep or a < 0 or b < a:
            raise ConfigError(f"--seed-range expects A..B with 0 <= A <= B, not {seed_range!r}")
        return tuple(range(a, b + 1))
    return default


@dataclass
class MatrixFile:
    """A matrix file (or preset) as read, before it meets the command line."""

    name: str
    description: str = ""
    seeds: tuple[int, ...] | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    axes: list[Axis] = field(default_factory=list)
    configurations: list[dict[str, Any]] = field(default_factory=list)


def read_matrix_file(path: Path) -> MatrixFile:
    """Read a TOML matrix file; ConfigError naming the file and what is wrong."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read matrix file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return matrix_from_toml(data, str(path), default_name=path.stem, base=path.parent)


def preset_names() -> list[str]:
    """The presets shipped with faultline."""
    folder = resources.files("harness.campaign") / "presets"
    return sorted(p.name.removesuffix(".toml") for p in folder.iterdir()
                  if p.name.endswith(".toml"))


def read_preset(name: str) -> MatrixFile:
    """A shipped preset by name; ConfigError listing the presets for an unknown one."""
    if name not in preset_names():
        raise ConfigError(f"unknown preset {name!r}; presets: {', '.join(preset_names())}")
    folder = resources.files("harness.campaign") / "presets"
    text = (folder / f"{name}.toml").read_text(encoding="utf-8")
    return matrix_from_toml(tomllib.loads(text), f"preset {name}", default_name=name,
                            base=Path(str(folder)))


def matrix_from_toml(data: Mapping[str, Any], where: str, *, default_name: str,
                     base: Path | None = None) -> MatrixFile:
    """A MatrixFile from parsed TOML; ConfigError naming `where` and the bad key. A file
    path a setting takes (a schedule) is relative to `base`, the file's folder."""
    unknown = sorted(set(data) - set(FILE_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; expected {', '.join(FILE_KEYS)}")
    seeds_value = data.get("seeds")
    if seeds_value is not None and (not isinstance(seeds_value, int)
                                    or isinstance(seeds_value, bool)):
        raise ConfigError(f"{where}: seeds must be a whole number, not {seeds_value!r}")
    seeds = (parse_seeds(seeds_value, data.get("seed-range"))
             if seeds_value is not None or data.get("seed-range") is not None else None)
    settings = _settings_table(data.get("settings", {}), f"{where} [settings]", base)
    vary = data.get("vary", {})
    if not isinstance(vary, dict):
        raise ConfigError(f"{where}: [vary] must be a table of NAME = [values]")
    axes = []
    for name, values in vary.items():
        if not isinstance(values, list):
            raise ConfigError(f"{where} [vary] {name}: expected a list of values")
        axes.append(axis(name, values, where=f"{where} [vary]", base=base))
    configurations = []
    for number, entry in enumerate(data.get("configuration", []), start=1):
        label = f"{where} configuration {number}"
        if not isinstance(entry, dict):
            raise ConfigError(f"{label}: expected a table")
        label = f"{label} ({entry.get('name', 'unnamed')})"
        meta = {k: entry[k] for k in CONFIGURATION_KEYS if k in entry}
        values = _settings_table({k: v for k, v in entry.items() if k not in meta}, label,
                                 base)
        configurations.append({"meta": meta, "settings": values, "where": label})
    name = data.get("name", default_name)
    return MatrixFile(name=str(name), description=str(data.get("description", "")),
                      seeds=seeds, settings=settings, axes=axes,
                      configurations=configurations)


def _settings_table(table: Any, where: str, base: Path | None = None) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table of setting = value")
    values: dict[str, Any] = {}
    for name, raw in table.items():
        s = SETTINGS.get(name)
        if s is None:
            raise ConfigError(f"{where}: unknown setting {name!r}; settings: "
                              f"{', '.join(SETTINGS)}")
        if s.spec.path and base is not None and isinstance(raw, str):
            raw = str(base / raw)  # an absolute `raw` stays as it is
        try:
            values[name] = s.parse(raw)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    return values


def build_matrix(
    source: MatrixFile | None,
    *,
    fixed: Mapping[str, Any],
    axes: Sequence[Axis],
    seeds: tuple[int, ...] | None,
    expect: str | None = None,
) -> Matrix:
    """The matrix of `source` (or of the command line alone), with `fixed` settings
    from plain run options, `axes` from --vary and `seeds`; every cell validated."""
    source = source or MatrixFile(name="matrix")
    merged_axes = {a.setting.name: a for a in source.axes}
    merged_axes.update((a.setting.name, a) for a in axes)
    for name in fixed:
        if name in merged_axes:
            raise ConfigError(f"--{name} is also an axis (--vary {name}=...): give it once")
        for entry in source.configurations:
            if name in entry["settings"]:
                raise ConfigError(f"--{name} is also set by {entry['where']}: give it once, "
                                  "or vary it with --vary")
    for entry in source.configurations:
        for name in entry["settings"]:
            if name in merged_axes:
                raise ConfigError(f"{entry['where']} sets {name}, which is also an axis")
    base = {**source.settings, **fixed}
    configurations = source.configurations or [{"meta": {}, "settings": {}, "where": "--vary"}]
    combos = list(itertools.product(*[[(a.setting, v) for v in a.values]
                                      for a in merged_axes.values()]))
    cells: list[Cell] = []
    default_expect = Expectation.parse(expect, where="--expect")
    for entry in configurations:
        meta = entry["meta"]
        expectation = (Expectation.parse(meta.get("expect"), meta.get("demonstrates"),
                                         where=entry["where"])
                       if "expect" in meta or "demonstrates" in meta else default_expect)
        for combo in combos:
            own = {**{s.name: v for s, v in combo}, **entry["settings"]}
            inherited = dict(base)
            if own.get("schedule") is not None:
                # A schedule of the configuration's (or its axis's) own sets the faults
                # and their timing: campaign-wide ones give way to it.
                for name in SCHEDULE_SETS:
                    if name not in own:
                        inherited.pop(name, None)
            given = {**inherited, **own}
            parts = [str(meta["name"])] if "name" in meta else []
            parts += [f"{s.name}={s.format(v)}" for s, v in combo]
            if not parts:
                parts = [f"{name}={SETTINGS[name].format(v)}" for name, v in fixed.items()]
            label = " ".join(parts) or "defaults"
            cells.append(Cell(len(cells), label, given, expectation, meta.get("claim")))
    chosen = seeds or source.seeds or (1,)
    return Matrix(source.name, tuple(_validated(cell, chosen) for cell in cells), chosen,
                  source.description)


def _validated(cell: Cell, seeds: tuple[int, ...]) -> Cell:
    try:
        for seed in seeds:
            cell.config(seed)
    except ConfigError as exc:
        return Cell(cell.index, cell.label, cell.given, cell.expectation, cell.claim,
                    error=str(exc))
    return cell
