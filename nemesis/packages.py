"""Fault packages: the names `--nemesis` accepts, each a family of faults a schedule mixes.

As in Jepsen's `nemesis.combined`, a package emits a start, then its stop, then a start
again; starts come on the schedule's staggered interval and each stop when the fault's
drawn duration ends (`nemesis.timing`); packages interleave, so a partition can
overlap a kill. `mixed` means every package, `none` means no faults at all.
"""

from __future__ import annotations

from collections.abc import Iterable

PACKAGES: dict[str, str] = {
    "partition": "network partitions by grudge (one, leader, halves, majority, majorities-ring, "
    "minority-third, bridge), some one-way, some cutting clients off too; healed on stop",
    "link": "slow links (latency with jitter, a bandwidth cap) to and from some nodes, "
    "or an instant reset of their connections",
    "kill": "SIGKILL one node, a minority or all nodes, restarting them on stop",
    "pause": "SIGSTOP one node, a minority or all nodes, SIGCONT on stop",
    "power-loss": "crash one node or all at once losing un-fsynced writes, restart on stop",
    "clock": "bump one node's wall clock or strobe it back and forth; reset on stop",
}

ALIASES: dict[str, str] = {
    "mixed": "every package above",
    "none": "no faults (a baseline run)",
}


def describe() -> str:
    """One line per package and alias, for the CLI's `--nemesis` help."""
    width = max(len(name) for name in (*PACKAGES, *ALIASES))
    lines = [f"{name:<{width}}  {text}" for name, text in (*PACKAGES.items(), *ALIASES.items())]
    return "\n".join(lines)


def parse(spec: str | Iterable[str]) -> tuple[str, ...]:
    """Package names from a comma-separated spec such as "partition,kill" or "mixed".

    Returns them in `PACKAGES` order without repeats; raises ValueError naming the
    unknown ones and listing what is accepted.
    """
    names = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else list(spec)
    names = [n for n in names if n]
    unknown = [n for n in names if n not in PACKAGES and n not in ALIASES]
    if unknown:
        accepted = ", ".join((*PACKAGES, *ALIASES))
        raise ValueError(f"unknown nemesis package(s) {', '.join(unknown)}; accepted: "
                         f"{accepted} (--nemesis help describes each)")
    if "none" in names and len(set(names)) > 1:
        raise ValueError(f"'none' cannot be combined with other packages, got "
                         f"{','.join(names)}")
    if "mixed" in names:
        return tuple(PACKAGES)
    return tuple(name for name in PACKAGES if name in names)
