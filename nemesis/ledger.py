"""The ledger of what the nemesis has broken and not yet repaired.

A plain state machine, no I/O: the executor asks it whether an op applies (a node cannot
be killed twice or resumed unless paused), tells it what was done, and at the end asks
it for everything still broken so the final heal undoes exactly that.

Per node the states are: up, paused (frozen, connections open), or down (killed or
power-lost; only `restart` leaves it). A clock is skewed from a bump or a strobe until
a reset. A client endpoint is paused (frozen) or runs. Links are blocked (partition) or
degraded (link fault) independently.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from nemesis.ops import Link


@dataclass
class Ledger:
    """Everything currently broken by the nemesis."""

    blocked: set[Link] = field(default_factory=set)
    degraded: set[Link] = field(default_factory=set)
    down: set[str] = field(default_factory=set)
    paused: set[str] = field(default_factory=set)
    skewed: set[str] = field(default_factory=set)
    paused_clients: set[str] = field(default_factory=set)

    def healthy(self) -> bool:
        """True when nothing is broken."""
        return not (self.blocked or self.degraded or self.down or self.paused or self.skewed
                    or self.paused_clients)

    def why_not_crash(self, node: str) -> str | None:
        """Why `node` cannot be killed or power-cut now, or None if it can."""
        if node in self.down:
            return f"{node} is already down"
        if node in self.paused:
            return f"{node} is paused; resume it first"
        return None

    def why_not_restart(self, node: str) -> str | None:
        """Why `node` cannot be restarted now, or None if it can."""
        return None if node in self.down else f"{node} is not down"

    def why_not_pause(self, node: str) -> str | None:
        """Why `node` cannot be paused now, or None if it can."""
        if node in self.down:
            return f"{node} is down"
        if node in self.paused:
            return f"{node} is already paused"
        return None

    def why_not_resume(self, node: str) -> str | None:
        """Why `node` cannot be resumed now, or None if it can."""
        return None if node in self.paused else f"{node} is not paused"

    def why_not_clock(self, node: str) -> str | None:
        """Why `node`'s clock cannot be moved now, or None if it can."""
        if node in self.down:
            return f"{node} is down"
        if node in self.paused:
            return f"{node} is paused"
        return None

    def crashed(self, nodes: Iterable[str]) -> None:
        """Nodes were killed or lost power."""
        self.down |= set(nodes)

    def restarted(self, nodes: Iterable[str]) -> None:
        """Nodes serve again."""
        self.down -= set(nodes)

    def was_paused(self, nodes: Iterable[str]) -> None:
        """Nodes were frozen."""
        self.paused |= set(nodes)

    def resumed(self, nodes: Iterable[str]) -> None:
        """Nodes run again."""
        self.paused -= set(nodes)

    def block(self, links: Iterable[Link]) -> None:
        """Links were blocked."""
        self.blocked |= set(links)

    def unblock_all(self) -> list[Link]:
        """Forget every blocked link, returning them sorted."""
        links, self.blocked = sorted(self.blocked), set()
        return links

    def degrade(self, links: Iterable[Link]) -> None:
        """Links were degraded."""
        self.degraded |= set(links)

    def restore_all(self) -> list[Link]:
        """Forget every degraded link, returning them sorted."""
        links, self.degraded = sorted(self.degraded), set()
        return links

    def why_not_pause_client(self, client: str) -> str | None:
        """Why client endpoint `client` cannot be paused now, or None if it can."""
        return f"{client} is already paused" if client in self.paused_clients else None

    def why_not_resume_client(self, client: str) -> str | None:
        """Why client endpoint `client` cannot be resumed now, or None if it can."""
        return None if client in self.paused_clients else f"{client} is not paused"

    def clients_paused(self, clients: Iterable[str]) -> None:
        """Client endpoints were frozen."""
        self.paused_clients |= set(clients)

    def clients_resumed(self, clients: Iterable[str]) -> None:
        """Client endpoints run again."""
        self.paused_clients -= set(clients)

    def skew(self, node: str) -> None:
        """A node's clock was moved."""
        self.skewed.add(node)

    def unskew(self, nodes: Iterable[str]) -> None:
        """Nodes' clocks are in step."""
        self.skewed -= set(nodes)
