"""Run settings, each declared once: name, type, default, help and allowed values.

Every field of `RunConfig` is declared with `setting(...)`. From those declarations
come `faultline run`'s options (`click_options`), the axes `faultline campaign --vary`
and a matrix file accept (`Setting.parse`), the per-setting validation of any config
(`Setting.check`), and the command line that reproduces a run (`command_line`).

A setting's name is its option name without dashes, Kafka's where Kafka has one
(`acks`, `min-insync-replicas`, `enable-idempotence`, `unclean-leader-election`).
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Iterable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

import click


class ConfigError(ValueError):
    """A run configuration that cannot run; the message says what to change."""


# The value types a setting can have, by the annotation that declares its field.
KINDS = {
    "str": "str",
    "int": "int",
    "float": "float",
    "bool": "bool",
    "str | None": "optional-str",
    "tuple[str, ...]": "strs",
    "dict[str, str]": "commands",
}

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


@dataclass(frozen=True)
class Spec:
    """What `setting()` records about a field besides its name, type and default."""

    help: str
    name: str | None = None  # option name when it is not the field's name with dashes
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    # The default as a function of the settings declared before it (e.g. the replication
    # factor is at most the node count); `default_text` says so in --help.
    derive: Callable[[Mapping[str, Any]], Any] | None = None
    default_text: str | None = None
    # Extra validation of one value (raises ConfigError), and a rewrite of text values
    # (e.g. nemesis packages joined with "+" on a --vary axis).
    check: Callable[[Any], None] | None = None
    normalize: Callable[[str], str] | None = None
    axis: bool = True  # may be a campaign axis
    metavar: str | None = None
    # A file's path: in a matrix file, relative to that file's folder.
    path: bool = False


def setting(default: Any, help: str, **spec: Any) -> Any:
    """Declare a `RunConfig` field as a setting (see `Spec` for the keywords)."""
    metadata = {"setting": Spec(help=help, **spec)}
    if isinstance(default, dict):
        return field(default_factory=lambda: dict(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class Setting:
    """One run setting: how it is named, typed, defaulted, validated and written."""

    name: str
    attr: str
    kind: str
    default: Any
    spec: Spec

    @property
    def option(self) -> str:
        """The command-line option, e.g. `--min-insync-replicas`."""
        return f"--{self.name}"

    @property
    def help(self) -> str:
        """The one-paragraph help of the setting."""
        return self.spec.help

    def parse(self, raw: Any) -> Any:
        """The typed value of `raw`, from text (`--vary`) or a TOML value; ConfigError
        naming the option when it is not a valid value of this setting."""
        value = self._coerce(raw)
        self.check(value)
        return value

    def _coerce(self, raw: Any) -> Any:
        kind = self.kind
        if kind == "bool":
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in _TRUE:
                return True
            if text in _FALSE:
                return False
            raise ConfigError(f"{self.option} must be true or false, not {raw!r}")
        if kind == "int":
            if isinstance(raw, int) and not isinstance(raw, bool):
                return raw
            try:
                return int(str(raw).strip())
            except ValueError:
                raise ConfigError(f"{self.option} must be a whole number, not {raw!r}") from None
        if kind == "float":
            if isinstance(raw, int | float) and not isinstance(raw, bool):
                return float(raw)
            try:
                return float(str(raw).strip())
            except ValueError:
                raise ConfigError(f"{self.option} must be a number, not {raw!r}") from None
        if kind == "strs":
            items = raw.split("+") if isinstance(raw, str) else list(raw)
            return tuple(str(item).strip() for item in items if str(item).strip())
        if kind == "commands":
            if isinstance(raw, Mapping):
                return {str(k): str(v) for k, v in raw.items()}
            return parse_commands([raw] if isinstance(raw, str) else list(raw))
        if kind == "optional-str" and raw is None:
            return None
        if isinstance(raw, bool) or not isinstance(raw, str | int | float):
            raise ConfigError(f"{self.option} takes a text value, not {raw!r}")
        text = str(raw).strip()
        return self.spec.normalize(text) if self.spec.normalize else text

    def check(self, value: Any) -> None:
        """Raise ConfigError if `value` is outside this setting's allowed values."""
        spec = self.spec
        if spec.choices and value not in spec.choices:
            raise ConfigError(f"{self.option} must be one of {', '.join(spec.choices)}, "
                              f"not {value!r}")
        if spec.minimum is not None and value < spec.minimum:
            raise ConfigError(f"{self.option} must be at least {spec.minimum:g}, got {value}")
        if spec.maximum is not None and value > spec.maximum:
            raise ConfigError(f"{self.option} must be at most {spec.maximum:g}, got {value}")
        if spec.check is not None:
            spec.check(value)

    def format(self, value: Any) -> str:
        """The value as a person (and `--vary`) writes it."""
        if self.kind == "bool":
            return "true" if value else "false"
        if self.kind == "strs":
            return "+".join(value)
        if self.kind == "commands":
            return " ".join(f"{k}={v}" for k, v in value.items())
        if self.kind == "float":
            return f"{value:g}"
        return "-" if value is None else str(value)

    def args(self, value: Any) -> list[str]:
        """Command-line arguments that set this setting to `value`."""
        if self.kind == "bool":
            return [self.option if value else f"--no-{self.name}"]
        if self.kind == "strs":
            return [arg for item in value for arg in (self.option, item)]
        if self.kind == "commands":
            return [arg for k, v in value.items() for arg in (self.option, f"{k}={v}")]
        return [self.option, self.format(value)]

    def implied(self, earlier: Mapping[str, Any]) -> Any:
        """What the setting is when nobody sets it, given the settings before it."""
        return self.spec.derive(earlier) if self.spec.derive else self.default


def settings_of(cls: type) -> dict[str, Setting]:
    """The settings declared on dataclass `cls`, by name, in declaration order."""
    table: dict[str, Setting] = {}
    for f in fields(cls):
        spec = f.metadata.get("setting")
        if spec is None:
            continue
        annotation = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")
        # A Literal alias (such as Acks) is text with a fixed set of choices.
        kind = KINDS.get(annotation) or ("str" if spec.choices else None)
        if kind is None:
            raise TypeError(f"setting {f.name}: unsupported type {annotation!r}")
        if f.default is not MISSING:
            default: Any = f.default
        elif f.default_factory is not MISSING:
            default = f.default_factory()
        else:
            raise TypeError(f"setting {f.name} has no default")
        name = spec.name or f.name.replace("_", "-")
        table[name] = Setting(name=name, attr=f.name, kind=kind, default=default, spec=spec)
    return table


def parse_commands(values: Iterable[str]) -> dict[str, str]:
    """`ACTION=shell command` pairs into a dict; ConfigError on a malformed one."""
    commands: dict[str, str] = {}
    for value in values:
        name, sep, cmd = value.partition("=")
        if not sep or not cmd.strip():
            raise ConfigError(f"expected ACTION='shell command', got {value!r}")
        commands[name.strip()] = cmd
    return commands


def resolve(table: Mapping[str, Setting], given: Mapping[str, Any]) -> dict[str, Any]:
    """Every setting's value by attribute: `given` (by setting name, parsed here), else
    derived from the settings before it, else the default. ConfigError on unknown names
    or invalid values."""
    unknown = sorted(set(given) - set(table))
    if unknown:
        raise ConfigError(f"unknown setting(s) {', '.join(unknown)}; known: "
                          f"{', '.join(table)}")
    values: dict[str, Any] = {}
    for name, s in table.items():
        values[name] = s.parse(given[name]) if name in given else s.implied(values)
    return {table[name].attr: value for name, value in values.items()}


def command_line(table: Mapping[str, Setting], config: object, *,
                 always: Iterable[str] = ()) -> str:
    """The shortest `faultline run` command that builds `config`: every setting that
    differs from what it would be if not given, plus the `always` ones."""
    shown = set(always)
    parts = ["faultline", "run"]
    earlier: dict[str, Any] = {}
    for name, s in table.items():
        value = getattr(config, s.attr)
        implied = None if name in shown else s.implied(earlier)
        earlier[name] = value
        if name in shown or value != implied:
            parts.extend(s.args(value))
    return shlex.join(parts)


def click_options(table: Mapping[str, Setting],
                  exclude: Iterable[str] = ()) -> Callable[[Callable[..., Any]], Any]:
    """A decorator adding one click option per setting (but the `exclude`d ones); every
    option defaults to None (or empty), so the command knows which settings a person
    actually gave."""
    left_out = set(exclude)

    def decorate(fn: Callable[..., Any]) -> Any:
        for s in reversed(list(table.values())):
            if s.name not in left_out:
                fn = _click_option(s)(fn)
        return fn

    return decorate


def _click_option(s: Setting) -> Callable[[Callable[..., Any]], Any]:
    spec = s.spec
    shown = spec.default_text or s.format(s.default)
    kwargs: dict[str, Any] = {"default": None, "help": spec.help, "show_default": shown}
    if s.kind == "bool":
        return click.option(f"{s.option}/--no-{s.name}", s.attr, **kwargs)
    if s.kind in ("strs", "commands"):
        kwargs.update(multiple=True, default=(), show_default=False, metavar=spec.metavar)
        if s.kind == "commands":
            kwargs["callback"] = _commands_callback
        return click.option(s.option, s.attr, **kwargs)
    if spec.choices:
        kwargs["type"] = click.Choice(list(spec.choices))
    elif s.kind == "int":
        kwargs["type"] = click.IntRange(min=_bound(spec.minimum), max=_bound(spec.maximum))
    elif s.kind == "float":
        kwargs["type"] = click.FloatRange(min=spec.minimum, max=spec.maximum)
    if spec.metavar:
        kwargs["metavar"] = spec.metavar
    return click.option(s.option, s.attr, **kwargs)


def _bound(value: float | None) -> int | None:
    return None if value is None else int(value)


def _commands_callback(ctx: click.Context, param: click.Parameter,
                       values: tuple[str, ...]) -> dict[str, str]:
    try:
        return parse_commands(values)
    except ConfigError as exc:
        raise click.BadParameter(str(exc)) from None


def given_options(table: Mapping[str, Setting], params: Mapping[str, Any]) -> dict[str, Any]:
    """The settings a person gave on the command line, by name (click's params by attr)."""
    given: dict[str, Any] = {}
    for name, s in table.items():
        value = params.get(s.attr)
        if value is None or (s.kind in ("strs", "commands") and not value):
            continue
        given[name] = value
    return given
