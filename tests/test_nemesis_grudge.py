"""Grudge shapes have the component structure their names promise (checked with networkx)."""

from __future__ import annotations

import random
from collections.abc import Mapping

import networkx as nx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from nemesis import grudge as g

cluster_sizes = st.integers(min_value=3, max_value=9)
seeds = st.integers(min_value=0, max_value=2**32)


def names(n: int) -> list[str]:
    return [f"n{i}" for i in range(1, n + 1)]


def survivors(grudge: Mapping[str, frozenset[str]], endpoints: list[str]) -> nx.DiGraph:
    return g.surviving_links(grudge, endpoints)


def clean_components(graph: nx.DiGraph) -> list[set[str]]:
    """Components of a symmetric cut, asserting each is a clique and no link crosses."""
    assert all(graph.has_edge(b, a) for a, b in graph.edges), "links must be symmetric"
    components = [set(c) for c in nx.connected_components(graph.to_undirected())]
    for component in components:
        sub = graph.subgraph(component)
        assert sub.number_of_edges() == len(component) * (len(component) - 1)
    return components


def sizes(components: list[set[str]]) -> list[int]:
    return sorted(len(c) for c in components)


def heard_by(graph: nx.DiGraph, node: str) -> frozenset[str]:
    """Who `node` hears from, itself included."""
    return frozenset(graph.predecessors(node)) | {node}


@given(cluster_sizes, seeds)
def test_one_isolates_a_single_node(n: int, seed: int) -> None:
    nodes = names(n)
    graph = survivors(g.build("one", nodes, random.Random(seed)), nodes)
    assert sizes(clean_components(graph)) == [1, n - 1]


@given(cluster_sizes, seeds)
def test_halves_cuts_the_first_half_from_the_rest_in_node_order(n: int, seed: int) -> None:
    nodes = names(n)
    components = clean_components(survivors(g.build("halves", nodes, random.Random(seed)), nodes))
    assert len(components) == 2
    assert set(nodes[: n // 2]) in components
    assert set(nodes[n // 2 :]) in components


@given(cluster_sizes, seeds)
def test_majority_splits_into_a_majority_and_a_minority(n: int, seed: int) -> None:
    nodes = names(n)
    components = clean_components(
        survivors(g.build("majority", nodes, random.Random(seed)), nodes)
    )
    assert sizes(components) == [n // 2, n - n // 2]
    assert max(len(c) for c in components) >= n / 2


@given(cluster_sizes, seeds)
def test_minority_third_cuts_off_strictly_less_than_a_third(n: int, seed: int) -> None:
    nodes = names(n)
    grudge = g.build("minority-third", nodes, random.Random(seed))
    k = (n - 1) // 3
    assert k < n / 3 <= k + 1
    if k == 0:
        assert grudge == {}
        return
    assert sizes(clean_components(survivors(grudge, nodes))) == [k, n - k]


@given(cluster_sizes, seeds)
def test_majorities_ring_each_node_hears_a_distinct_majority(n: int, seed: int) -> None:
    nodes = names(n)
    graph = survivors(g.build("majorities-ring", nodes, random.Random(seed)), nodes)
    views = [heard_by(graph, node) for node in nodes]
    assert all(len(view) == n // 2 + 1 for view in views)
    assert len(set(views)) == n, "no two nodes may hear the same majority"
    assert nx.is_weakly_connected(graph)


@given(cluster_sizes, seeds)
def test_bridge_joins_two_cut_halves_through_one_node(n: int, seed: int) -> None:
    nodes = names(n)
    grudge = g.build("bridge", nodes, random.Random(seed))
    graph = survivors(grudge, nodes)
    bridges = [x for x in nodes if x not in grudge and all(x not in h for h in grudge.values())]
    assert len(bridges) == 1
    bridge = bridges[0]
    assert nx.is_strongly_connected(graph)
    rest = graph.subgraph(set(nodes) - {bridge})
    assert sizes(clean_components(nx.DiGraph(rest))) == sorted([n // 2, n - n // 2 - 1])


@given(cluster_sizes, seeds, st.sampled_from(["one", "halves", "majority", "minority-third"]))
def test_one_way_cut_mutes_one_side_but_lets_it_hear(n: int, seed: int, shape: str) -> None:
    nodes = names(n)
    two_way = g.build(shape, nodes, random.Random(seed))
    one_way = g.build(shape, nodes, random.Random(seed), one_way=True)
    cut = set(g.links(two_way))
    blocked = set(g.links(one_way))
    assert blocked <= cut
    if not cut:
        return
    muted = {src for src, _ in blocked}
    # Exactly the links leaving the muted side are blocked; the reverse ones stay open.
    assert blocked == {(s, d) for s, d in cut if s in muted}
    assert all((d, s) not in blocked for s, d in blocked)


@given(cluster_sizes, seeds, st.sampled_from(["one", "halves", "majority", "minority-third"]))
def test_clients_join_one_side_of_a_clean_cut(n: int, seed: int, shape: str) -> None:
    nodes = names(n)
    clients = ["c1", "c2", "c3"]
    grudge = g.build(shape, nodes, random.Random(seed), clients=clients)
    brokers_only = g.build(shape, nodes, random.Random(seed))
    graph = survivors(grudge, nodes + clients)
    # Broker-to-broker links are cut exactly as without clients.
    assert {(s, d) for s, d in g.links(grudge) if s in nodes and d in nodes} == set(
        g.links(brokers_only)
    )
    # Client-to-client links are never touched.
    assert not any(s in clients and d in clients for s, d in g.links(grudge))
    components = clean_components(survivors(brokers_only, nodes))
    for client in clients:
        hears = set(graph.predecessors(client)) - set(clients)
        heard = set(graph.successors(client)) - set(clients)
        assert hears == heard, "a client's links to brokers are cut both ways"
        assert hears in components, "a client sits on exactly one side"


def test_leader_grudge_isolates_the_named_node_with_its_clients() -> None:
    nodes = names(5)
    grudge = g.leader_grudge(
        "n3", nodes, clients=["c1", "c2"], clients_isolated=["c2"], one_way=False
    )
    graph = survivors(grudge, [*nodes, "c1", "c2"])
    brokers_heard = {c: set(graph.predecessors(c)) & set(nodes) for c in ("c1", "c2")}
    assert set(graph.predecessors("n3")) == {"c2"}
    assert brokers_heard == {"c2": {"n3"}, "c1": set(nodes) - {"n3"}}


def test_links_are_exactly_the_pairs_the_grudge_hates() -> None:
    grudge = {"n1": frozenset({"n2", "n3"}), "n3": frozenset({"n1"})}
    assert g.links(grudge) == [("n1", "n3"), ("n2", "n1"), ("n3", "n1")]


@given(cluster_sizes, seeds, st.sampled_from([s for s in g.SHAPES if s != "leader"]))
def test_shapes_are_pure_functions_of_nodes_and_seed(n: int, seed: int, shape: str) -> None:
    nodes = names(n)
    first = g.build(shape, nodes, random.Random(seed), clients=["c1"])
    again = g.build(shape, nodes, random.Random(seed), clients=["c1"])
    assert first == again
    assert g.from_json(g.to_json(first)) == first


def test_unknown_shape_and_one_way_ring_are_refused_with_a_reason() -> None:
    with pytest.raises(ValueError, match="unknown partition shape 'star'"):
        g.build("star", names(3), random.Random(0))
    with pytest.raises(ValueError, match="no one-way form"):
        g.build("majorities-ring", names(5), random.Random(0), one_way=True)
    with pytest.raises(ValueError, match="not one of the nodes"):
        g.leader_grudge("n9", names(3))
