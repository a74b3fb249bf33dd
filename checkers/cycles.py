"""Cycles in a transaction dependency graph, found and classified as Elle does.

The graph is an adjacency list: `succ[u]` maps each successor v of node u to a bit mask
of the edge types from u to v (`WW`, `WR`, `RW`, `PROCESS`, `REALTIME`). Nodes are dense
integers. Everything here is pure graph work; what the nodes and edges mean lives in
`checkers.txn_graph`.

Classification (Adya's phenomena, as Elle reports them; `PROCESS` and `REALTIME`
edges, when present, may join any cycle and are listed in the cycle's `orders`):

- G0: a cycle of ww edges only (write cycle).
- G1c: a cycle of ww and wr edges with at least one wr (circular information flow).
- G-single: a cycle with exactly one rw edge (read skew).
- G2-item: a cycle with two or more rw edges (anti-dependency cycle).

Each strongly connected component of the whole graph is searched for one cycle of each
kind: G0 and G1c inside the components of the ww (ww+wr) subgraph, G-single by looking
for an rw-free path closing each rw edge, G2-item where no such path exists. The search
tries a bounded number of edges per component (breadth-first, so each cycle found is
the shortest through its edge) to keep giant components tractable.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import NamedTuple

WW = 1
WR = 2
RW = 4
PROCESS = 8
REALTIME = 16
ORDERS = PROCESS | REALTIME
ALL = WW | WR | RW | PROCESS | REALTIME

EDGE_NAMES: dict[int, str] = {WW: "ww", WR: "wr", RW: "rw", PROCESS: "process",
                              REALTIME: "realtime"}

# Which edge type labels an edge allowed several, most telling first.
_PREFERENCE = (WW, WR, PROCESS, REALTIME, RW)

# BFS attempts per component and kind; fewer for big components so the search stays
# linear-ish in the graph size.
_TRIES_SMALL = 64
_TRIES_LARGE = 4
_LARGE = 2_000

Succ = list[dict[int, int]]


class Cycle(NamedTuple):
    """One cycle: `nodes[i] -> nodes[i+1]` (wrapping) by an edge of type `types[i]`."""

    kind: str
    nodes: list[int]
    types: list[int]


def strongly_connected(succ: Succ, nodes: Iterable[int], mask: int = ALL,
                       within: set[int] | None = None) -> list[list[int]]:
    """Return the strongly connected components with more than one node among `nodes`,
    following only edges whose type is in `mask` and (if given) staying `within`.

    Iterative Tarjan: Python's recursion limit would stop a deep graph.
    """
    index_of: dict[int, int] = {}
    low: dict[int, int] = {}
    on_stack: set[int] = set()
    stack: list[int] = []
    components: list[list[int]] = []
    counter = 0
    for root in nodes:
        if root in index_of:
            continue
        index_of[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        work = [(root, iter(succ[root].items()))]
        while work:
            node, edges = work[-1]
            advanced = False
            for target, types in edges:
                if not types & mask or (within is not None and target not in within):
                    continue
                if target not in index_of:
                    index_of[target] = low[target] = counter
                    counter += 1
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(succ[target].items())))
                    advanced = True
                    break
                if target in on_stack and index_of[target] < low[node]:
                    low[node] = index_of[target]
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                if low[node] < low[parent]:
                    low[parent] = low[node]
            if low[node] == index_of[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(component)
    return components


def shortest_path(succ: Succ, start: int, goal: int, mask: int, within: set[int]
                  ) -> list[int] | None:
    """The nodes of a shortest path start -> ... -> goal over edges in `mask` inside
    `within`, or None if there is none."""
    if start == goal:
        return [start]
    parent: dict[int, int] = {start: start}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for target, types in succ[node].items():
            if not types & mask or target in parent or target not in within:
                continue
            parent[target] = node
            if target == goal:
                path = [goal]
                while path[-1] != start:
                    path.append(parent[path[-1]])
                path.reverse()
                return path
            queue.append(target)
    return None


def _edges_of_type(succ: Succ, component: set[int], kind: int) -> list[tuple[int, int]]:
    return [(u, v) for u in sorted(component) for v, types in succ[u].items()
            if types & kind and v in component]


def _label(succ: Succ, nodes: list[int], first: int, mask: int) -> list[int]:
    """Edge types along the cycle `nodes`: the first edge is `first`, the others the most
    telling type `mask` allows on them."""
    types = [first]
    for i in range(1, len(nodes)):
        u, v = nodes[i], nodes[(i + 1) % len(nodes)]
        present = succ[u][v] & mask
        types.append(next(t for t in _PREFERENCE if present & t))
    return types


def _closing(succ: Succ, component: set[int], required: int, mask: int
             ) -> tuple[list[int], list[int]] | None:
    """The shortest cycle found that starts with an edge of type `required` and returns
    over edges in `mask`; None if no tried edge closes."""
    edges = _edges_of_type(succ, component, required)
    tries = _TRIES_SMALL if len(component) <= _LARGE else _TRIES_LARGE
    best: tuple[list[int], list[int]] | None = None
    for u, v in edges[:tries]:
        path = shortest_path(succ, v, u, mask, component)
        if path is None:
            continue
        nodes = [u, *path[:-1]]
        if best is None or len(nodes) < len(best[0]):
            best = (nodes, _label(succ, nodes, required, mask))
            if len(nodes) == 2:
                break
    return best


def find_cycles(succ: Succ) -> list[Cycle]:
    """Every cycle found (at most one per kind per component), the shortest first."""
    found: list[Cycle] = []
    for scc in strongly_connected(succ, range(len(succ))):
        component = set(scc)
        for sub in strongly_connected(succ, sorted(component), WW | ORDERS, component):
            hit = _closing(succ, set(sub), WW, WW | ORDERS)
            if hit is not None:
                found.append(Cycle("G0", *hit))
        for sub in strongly_connected(succ, sorted(component), WW | WR | ORDERS, component):
            hit = _closing(succ, set(sub), WR, WW | WR | ORDERS)
            if hit is not None:
                found.append(Cycle("G1c", *hit))
        single = _closing(succ, component, RW, WW | WR | ORDERS)
        if single is not None:
            found.append(Cycle("G-single", *single))
            continue
        hit = _closing(succ, component, RW, ALL)
        if hit is not None:
            nodes, types = hit
            # Re-label preferring rw last: a cycle with one rw is G-single whatever path
            # the search took.
            kind = "G-single" if types.count(RW) == 1 else "G2-item"
            found.append(Cycle(kind, nodes, types))
    found.sort(key=lambda cycle: (len(cycle.nodes), cycle.kind, cycle.nodes))
    return found
