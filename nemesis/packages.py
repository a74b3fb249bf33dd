"""Fault packages: the names `--nemesis` accepts, each a family of faults a schedule mixes.

As in Jepsen's `nemesis.combined`, a package emits a start, then its stop, then a start
again; starts come on the schedule's staggered interval and each stop when the fault's
drawn duration ends (`nemesis.timing`); packages interleave, so a partition can
overlap a kill. `mixed` means every single-fault package but the opt-in ones, `none`
means no faults at all. Composite packages (`COMPOSITES`) each play a timed scenario
of several faults.
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
    "disk": "one node's disk: kill it and flip bits in or truncate its segment, index, "
    "checkpoint or metadata files (restart on stop), or fill it (ENOSPC on write or "
    "fsync) or slow its fsyncs until stop; not part of mixed",
    "membership": "add a spare broker, reassign a log to a new replica set, decommission "
    "an added broker (not part of mixed: name it, e.g. kill,partition,membership)",
}

# Scenarios from the literature built from the faults above, aimed at roles resolved when
# each fault starts and timed by the brokers' own timers (`nemesis.composites`).
COMPOSITES: dict[str, str] = {
    "isolate-leader": "cut a log's leader off from the other brokers (clients still reach "
    "it) for longer than broker.session.timeout.ms, then heal",
    "shrink-isr-then-kill-leader": "cut a minority of a log's in-sync followers off until "
    "the ISR shrinks (session timeout or replica.lag.time.max.ms), then kill the leader",
    "rolling-restart": "kill and restart every broker one at a time, each serving again "
    "before the next goes down",
    "flapping-partition": "cut a log's leader or a node off and heal it, again and again, "
    "each period shorter than the session timeout",
    "controller-only": "one-way partition of the active controller from the other brokers "
    "(it is not heard, or it hears nobody), clients untouched",
    "clock-jump-controller": "jump the active controller's clock forward or back, reset later",
    "kill-txn-coordinator": "kill a transactional id's transaction coordinator (leader of its "
    "__transaction_state partition), restart it once the role has moved (1.5-2.5 session "
    "timeouts plus a controller failover)",
    "pause-txn-coordinator": "SIGSTOP a transactional id's transaction coordinator until "
    "the role has moved (as kill-txn-coordinator)",
    "isolate-txn-coordinator": "cut a transactional id's transaction coordinator off from the "
    "other brokers (and half the time from clients) until the role has moved",
    "kill-group-coordinator": "kill a consumer group's coordinator (leader of its "
    "__consumer_offsets partition), restart it once the role has moved (as kill-txn-...)",
    "pause-group-coordinator": "SIGSTOP a consumer group's coordinator until the role has "
    "moved",
    "isolate-group-coordinator": "cut a consumer group's coordinator off from the other "
    "brokers (and half the time from clients) until the role has moved",
    "zombie-producer": "pause a client endpoint longer than transaction.timeout.ms plus the "
    "abort check interval: its transaction is aborted and it comes back a zombie",
}

# Packages `mixed` leaves out (disk faults take nodes out for good; membership needs
# spare nodes): ask for them by name.
OPT_IN = frozenset({"disk", "membership"})

ALIASES: dict[str, str] = {
    "mixed": "every single-fault package but disk and membership (partition ... clock; "
    "composites are named apart)",
    "none": "no faults (a baseline run)",
}


def describe() -> str:
    """One line per package and alias, for the CLI's `--nemesis` help."""
    width = max(len(name) for name in (*PACKAGES, *COMPOSITES, *ALIASES))
    described = (*PACKAGES.items(), *COMPOSITES.items(), *ALIASES.items())
    lines = [f"{name:<{width}}  {text}" for name, text in described]
    return "\n".join(lines)


def parse(spec: str | Iterable[str]) -> tuple[str, ...]:
    """Package names from a comma-separated spec such as "partition,kill" or "mixed".

    Returns them in `PACKAGES` order without repeats; raises ValueError naming the
    unknown ones and listing what is accepted.
    """
    names = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else list(spec)
    names = [n for n in names if n]
    unknown = [n for n in names if n not in PACKAGES and n not in COMPOSITES and n not in ALIASES]
    if unknown:
        accepted = ", ".join((*PACKAGES, *COMPOSITES, *ALIASES))
        raise ValueError(f"unknown nemesis package(s) {', '.join(unknown)}; accepted: "
                         f"{accepted} (--nemesis help describes each)")
    if "none" in names and len(set(names)) > 1:
        raise ValueError(f"'none' cannot be combined with other packages, got "
                         f"{','.join(names)}")
    if "mixed" in names:
        names = [*(name for name in PACKAGES if name not in OPT_IN), *names]
    return tuple(name for name in (*PACKAGES, *COMPOSITES) if name in names)
