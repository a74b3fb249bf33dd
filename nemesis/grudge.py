"""Grudges: who won't hear from whom during a network partition.

A grudge maps an endpoint to the set of endpoints it refuses to hear from, as in Jepsen's
`jepsen.nemesis`: `{dst: {src, ...}}` means every byte from `src` to `dst` is held.
Applying a grudge is one `FaultTarget.block(src, dst)` per hated link (`links`).

Each shape is built as a networkx digraph of the links that *survive* (an edge
`src -> dst` means dst hears src), and the grudge is that graph's complement. The shapes
are pure functions of `(nodes, rng)`; randomness comes only from the `random.Random`
passed in, so a seed fixes the partition. Shapes follow Jepsen's names and sizes:

- `one`: one node alone, the rest together.
- `halves`: the first ⌊n/2⌋ nodes (in the given order) against the rest.
- `majority`: a random ⌊n/2⌋ nodes against a random majority (Jepsen's `:majority`).
- `minority-third`: a random ⌊(n-1)/3⌋ nodes (strictly under a third) against the rest;
  empty, so no partition at all, for n ≤ 3.
- `majorities-ring`: nodes on a random ring, each hearing exactly a majority window of
  the ring around itself; no two nodes hear the same majority.
- `bridge`: two halves that cannot talk, joined by one node both halves hear and which
  hears both.
- `leader`: like `one`, with the isolated node chosen by the caller (the executor asks
  the target who leads).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence

import networkx as nx

# {dst: frozenset of srcs dst will not hear from}; endpoints hating no one are omitted.
Grudge = dict[str, frozenset[str]]

SHAPES: tuple[str, ...] = (
    "one",
    "leader",
    "halves",
    "majority",
    "majorities-ring",
    "minority-third",
    "bridge",
)


def majority(n: int) -> int:
    """The smallest integer strictly greater than half of n (Jepsen's `util/majority`)."""
    return n // 2 + 1


def minority_third(n: int) -> int:
    """The largest integer strictly less than a third of n (Jepsen's `util/minority-third`)."""
    return (n - 1) // 3


def bisect(nodes: Sequence[str]) -> list[list[str]]:
    """Cut `nodes` in two, the smaller half first (Jepsen's `bisect`)."""
    half = len(nodes) // 2
    return [list(nodes[:half]), list(nodes[half:])]


def components_graph(components: Iterable[Iterable[str]]) -> nx.DiGraph:
    """The surviving links when each component talks only within itself."""
    graph = nx.DiGraph()
    for component in components:
        members = list(component)
        graph.add_nodes_from(members)
        graph.add_edges_from((a, b) for a in members for b in members if a != b)
    return graph


def grudge_of(graph: nx.DiGraph) -> Grudge:
    """The grudge whose surviving links are exactly the edges of `graph`."""
    endpoints = list(graph.nodes)
    grudge: Grudge = {}
    for dst in endpoints:
        hated = frozenset(src for src in endpoints if src != dst and not graph.has_edge(src, dst))
        if hated:
            grudge[dst] = hated
    return grudge


def surviving_links(grudge: Mapping[str, Iterable[str]], endpoints: Iterable[str]) -> nx.DiGraph:
    """The digraph of links among `endpoints` that `grudge` leaves open (src -> dst)."""
    graph = nx.DiGraph()
    members = list(endpoints)
    graph.add_nodes_from(members)
    hates = {dst: set(srcs) for dst, srcs in grudge.items()}
    graph.add_edges_from(
        (src, dst)
        for src in members
        for dst in members
        if src != dst and src not in hates.get(dst, ())
    )
    return graph


def links(grudge: Mapping[str, Iterable[str]]) -> list[tuple[str, str]]:
    """The directed links (src, dst) to block to apply `grudge`, in a stable order."""
    return sorted((src, dst) for dst, srcs in grudge.items() for src in srcs)


def complete_grudge(components: Iterable[Iterable[str]]) -> Grudge:
    """No endpoint hears anyone outside its own component (Jepsen's `complete-grudge`)."""
    return grudge_of(components_graph(components))


def split_one(nodes: Sequence[str], rng: random.Random) -> list[list[str]]:
    """One random node alone, then the rest."""
    loner = rng.choice(list(nodes))
    return isolate(loner, nodes)


def isolate(node: str, nodes: Sequence[str]) -> list[list[str]]:
    """`node` alone, then the rest."""
    if node not in nodes:
        raise ValueError(f"cannot isolate {node!r}: not one of the nodes {list(nodes)}")
    return [[node], [n for n in nodes if n != node]]


def shuffled(nodes: Sequence[str], rng: random.Random) -> list[str]:
    """A copy of `nodes` in an order drawn from `rng`."""
    order = list(nodes)
    rng.shuffle(order)
    return order


def shape_components(shape: str, nodes: Sequence[str], rng: random.Random) -> list[list[str]]:
    """The components of a clean-cut shape, the cut-off (smaller) side first.

    Valid for `one`, `halves`, `majority` and `minority-third`; `leader` needs the
    leader's name (use `isolate`), and ring and bridge are not clean cuts.
    """
    if shape == "one":
        return split_one(nodes, rng)
    if shape == "halves":
        return bisect(nodes)
    if shape == "majority":
        return bisect(shuffled(nodes, rng))
    if shape == "minority-third":
        order = shuffled(nodes, rng)
        k = minority_third(len(order))
        return [order[:k], order[k:]]
    raise ValueError(f"shape {shape!r} is not a clean cut into components")


def majorities_ring_graph(nodes: Sequence[str], rng: random.Random) -> nx.DiGraph:
    """Nodes on a random ring; each hears the majority-sized window of the ring around it.

    Windows are rotations of one another with distinct starts, so for n ≥ 3 every node
    hears exactly `majority(n)` nodes (itself included) and no two hear the same set.
    With an even majority the window cannot be centred, so some links are one-way.
    """
    ring = shuffled(nodes, rng)
    n = len(ring)
    m = majority(n)
    back = (m - 1) // 2
    graph = nx.DiGraph()
    graph.add_nodes_from(ring)
    for i, dst in enumerate(ring):
        window = [ring[(i - back + k) % n] for k in range(m)]
        graph.add_edges_from((src, dst) for src in window if src != dst)
    return graph


def bridge_graph(nodes: Sequence[str], rng: random.Random) -> nx.DiGraph:
    """Two random halves cut apart, with the first node of the larger half hearing and
    heard by everyone (Jepsen's `bridge`)."""
    halves = bisect(shuffled(nodes, rng))
    bridge = halves[1][0]
    graph = components_graph(halves)
    graph.add_edges_from((bridge, n) for n in nodes if n != bridge)
    graph.add_edges_from((n, bridge) for n in nodes if n != bridge)
    return graph


def one_way_graph(components: Sequence[Sequence[str]]) -> nx.DiGraph:
    """Every link open except those leaving the first component: it hears, nobody hears it."""
    muted = set(components[0])
    everyone = [n for component in components for n in component]
    graph = nx.DiGraph()
    graph.add_nodes_from(everyone)
    graph.add_edges_from(
        (src, dst)
        for src in everyone
        for dst in everyone
        if src != dst and not (src in muted and dst not in muted)
    )
    return graph


def join_clients(graph: nx.DiGraph, anchors: Mapping[str, str]) -> nx.DiGraph:
    """Add client endpoints to a brokers' graph, each on the side of its anchor broker.

    A client hears (and is heard by) exactly the brokers its anchor hears (is heard by),
    plus the anchor itself. Clients never talk to each other, so no client-client links
    are added or blocked.
    """
    joined = graph.copy()
    brokers = list(graph.nodes)
    for client, anchor in anchors.items():
        if anchor not in graph:
            raise ValueError(f"client {client!r} anchored to unknown node {anchor!r}")
        joined.add_node(client)
        for broker in brokers:
            if broker == anchor or graph.has_edge(broker, anchor):
                joined.add_edge(broker, client)
            if broker == anchor or graph.has_edge(anchor, broker):
                joined.add_edge(client, broker)
    return joined


def client_grudge(joined: nx.DiGraph, brokers: Iterable[str], clients: Iterable[str]) -> Grudge:
    """The grudge of a graph with clients, over broker-broker and client-broker links only."""
    broker_set = set(brokers)
    client_set = set(clients)
    grudge: Grudge = {}
    for dst in joined.nodes:
        candidates = broker_set if dst in client_set else broker_set | client_set
        hated = frozenset(
            src for src in candidates if src != dst and not joined.has_edge(src, dst)
        )
        if hated:
            grudge[dst] = hated
    return grudge


def build(
    shape: str,
    nodes: Sequence[str],
    rng: random.Random,
    *,
    clients: Sequence[str] = (),
    one_way: bool = False,
    isolated: str | None = None,
) -> Grudge:
    """The grudge of `shape` over `nodes`, drawing every choice from `rng`.

    `clients` join the partition: each is anchored to a random broker and shares its
    side. `one_way` (clean cuts only: one, leader, halves, majority, minority-third)
    blocks only the traffic leaving the cut-off side, so it still hears the rest.
    `isolated` names the node the `leader` shape cuts off.
    """
    if len(nodes) < 2:
        raise ValueError(f"a partition needs at least 2 nodes, got {list(nodes)}")
    if shape == "leader":
        if isolated is None:
            raise ValueError("the leader shape needs the node to isolate")
        components = isolate(isolated, nodes)
        graph = one_way_graph(components) if one_way else components_graph(components)
    elif shape in ("one", "halves", "majority", "minority-third"):
        components = shape_components(shape, nodes, rng)
        graph = one_way_graph(components) if one_way else components_graph(components)
    elif one_way:
        raise ValueError(f"shape {shape!r} has no one-way form; use a clean cut")
    elif shape == "majorities-ring":
        graph = majorities_ring_graph(nodes, rng)
    elif shape == "bridge":
        graph = bridge_graph(nodes, rng)
    else:
        raise ValueError(f"unknown partition shape {shape!r}; expected one of {SHAPES}")
    if not clients:
        return grudge_of(graph)
    anchors = {client: rng.choice(list(nodes)) for client in clients}
    return client_grudge(join_clients(graph, anchors), nodes, clients)


def leader_grudge(
    isolated: str,
    nodes: Sequence[str],
    *,
    clients: Sequence[str] = (),
    clients_isolated: Sequence[str] = (),
    one_way: bool = False,
) -> Grudge:
    """Cut `isolated` off from the other nodes; of `clients`, those in `clients_isolated`
    stay with it and the rest stay with the other nodes. No randomness: the executor
    calls this once it knows who leads."""
    if len(nodes) < 2:
        raise ValueError(f"a partition needs at least 2 nodes, got {list(nodes)}")
    components = isolate(isolated, nodes)
    graph = one_way_graph(components) if one_way else components_graph(components)
    if not clients:
        return grudge_of(graph)
    with_isolated = set(clients_isolated)
    anchors = {c: isolated if c in with_isolated else components[1][0] for c in clients}
    return client_grudge(join_clients(graph, anchors), nodes, clients)


def to_json(grudge: Mapping[str, Iterable[str]]) -> dict[str, list[str]]:
    """The grudge as sorted JSON-ready data: {node: [hated...]}."""
    return {dst: sorted(srcs) for dst, srcs in sorted(grudge.items()) if srcs}


def from_json(data: Mapping[str, Iterable[str]]) -> Grudge:
    """The grudge from its JSON form."""
    return {dst: frozenset(srcs) for dst, srcs in data.items() if srcs}


def deaf_graph(components: Sequence[Sequence[str]]) -> nx.DiGraph:
    """Every link open except those entering the first component: it is heard, hears nobody."""
    return one_way_graph(components).reverse(copy=True)


def cut_off_grudge(
    cut_off: Sequence[str],
    nodes: Sequence[str],
    *,
    clients: Sequence[str] = (),
    one_way: bool = False,
    deaf: bool = False,
) -> Grudge:
    """Cut the nodes `cut_off` off from the other nodes (a role's holders, found at run
    time). `one_way` blocks only what leaves them (they still hear the rest); with `deaf`
    too, only what enters them (they are still heard). The `clients` stay with the other
    nodes; clients not listed are not cut at all. No randomness."""
    if len(nodes) < 2:
        raise ValueError(f"a partition needs at least 2 nodes, got {list(nodes)}")
    unknown = [n for n in cut_off if n not in nodes]
    if unknown:
        raise ValueError(f"cannot cut off {unknown}: not among the nodes {list(nodes)}")
    inside = [n for n in nodes if n in set(cut_off)]
    rest = [n for n in nodes if n not in set(cut_off)]
    if not inside or not rest:
        return {}
    components = [inside, rest]
    if one_way:
        graph = deaf_graph(components) if deaf else one_way_graph(components)
    else:
        graph = components_graph(components)
    if not clients:
        return grudge_of(graph)
    return client_grudge(join_clients(graph, dict.fromkeys(clients, rest[0])), nodes, clients)
