"""Which server each switch and host runs on when one run spans several servers (Mininet Cluster Edition).

Placement is part of the plan (spec -> **plan** -> network + services): pure, computed from the topology and
the list of servers (``--servers A,B``) alone, and shown by ``cdnlab plan TOPO --servers A,B``.

* A host runs on its switch's server: an access link is never cut.
* A switch may be pinned in the spec: ``server:`` on the switch, or on its region (the switch's own wins),
  naming a server of the list or giving its position in it (``0`` is the first).
* Otherwise the switch graph is cut so that the links between servers weigh as little as possible, where a
  link weighs ``1 / (1 + delay_ms)``: a low-delay link stays on one server (a tunnel between servers adds
  its own latency and jitter, which an 80 ms link absorbs and a 1 ms link does not), and each side carries
  a share of the switches and hosts in proportion to its servers. With nothing pinned this is Kernighan and
  Lin's bisection (B. W. Kernighan, S. Lin, "An efficient heuristic procedure for partitioning graphs",
  Bell System Technical Journal 49(2), 1970; networkx's ``kernighan_lin_bisection``), applied recursively
  for more than two servers; with some switches pinned, every other switch joins, heaviest link first,
  the server it is most strongly linked to that still has room (a server nothing is pinned to starts from
  the switch farthest from every pinned one).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import networkx as nx

from testbed.net.spec import Topology

#: the weight of a host's access link in the bisection: far above any switch link's, so no host is cut off
ACCESS_WEIGHT = 1e6
#: the share of the load a side may carry beyond (or short of) its servers' share, when that cuts less
SLACK = 0.1
#: how many starting points the bisection tries at most
STARTS = 16


def link_weight(delay_ms: float) -> float:
    """What cutting a switch link of ``delay_ms`` (one way) costs: the lower its delay, the more."""
    return 1.0 / (1.0 + delay_ms)


@dataclass(frozen=True)
class Placement:
    """Every switch's and host's server, and the switch links between servers (the cut)."""

    servers: tuple[str, ...]
    switch_server: dict[str, str]
    host_server: dict[str, str]
    #: the spec's links whose ends are on different servers: (a, b, delay_ms) in spec order
    cut: tuple[tuple[str, str, float], ...]
    #: switches placed by the spec's ``server:`` (their own or their region's)
    pinned: frozenset[str] = frozenset()

    @property
    def cut_weight(self) -> float:
        return sum(link_weight(d) for _, _, d in self.cut)

    def load(self) -> dict[str, dict[str, int]]:
        """Per server, how many switches and hosts run on it."""
        out = {s: {"switches": 0, "hosts": 0} for s in self.servers}
        for s in self.switch_server.values():
            out[s]["switches"] += 1
        for s in self.host_server.values():
            out[s]["hosts"] += 1
        return out

    def summary(self) -> dict[str, Any]:
        """The ``placement`` section of ``plan.json``."""
        return {
            "servers": list(self.servers),
            "switches": dict(self.switch_server),
            "pinned": sorted(self.pinned),
            "load": self.load(),
            "cut": [{"a": a, "b": b, "delay_ms": d} for a, b, d in self.cut],
            "cut_weight": round(self.cut_weight, 6),
        }


def parse_servers(text: str) -> tuple[str, ...]:
    """``--servers A,B,...`` as a tuple; ValueError names what is wrong (an empty name, a repeated one)."""
    names = tuple(s.strip() for s in text.split(","))
    if not names or any(not n for n in names):
        raise ValueError(f"--servers {text!r}: give server names separated by commas, e.g. --servers lab1,lab2")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"--servers {text!r}: {', '.join(repeated)} given more than once")
    return names


def _server_of(value: str, servers: Sequence[str], field: str) -> str:
    if value in servers:
        return value
    if value.isdigit() and int(value) < len(servers):
        return servers[int(value)]
    raise ValueError(f"{field}: {value!r} is not one of --servers {','.join(servers)} "
                     f"(nor a position in that list, 0 to {len(servers) - 1})")


def pins(topo: Topology, servers: Sequence[str]) -> dict[str, str]:
    """switch -> server for the switches the spec places (``server:`` on the switch, else on its region)."""
    region_server = {r.name: (r.server, f"regions[{i}].server") for i, r in enumerate(topo.regions) if r.server}
    out: dict[str, str] = {}
    for i, s in enumerate(topo.switches):
        if s.server is not None:
            out[s.name] = _server_of(s.server, servers, f"switches[{i}].server ({s.name})")
        elif s.region in region_server:
            value, field = region_server[s.region]
            out[s.name] = _server_of(value, servers, f"{field} (region {s.region}, switch {s.name})")
    return out


def switch_graph(topo: Topology) -> nx.Graph:
    """Switches with ``load`` (1 + their hosts) and links with ``weight`` (:func:`link_weight`, summed over
    parallel links)."""
    g = nx.Graph()
    hosts = {s.name: 0 for s in topo.switches}
    for h in topo.hosts:
        hosts[h.switch] += 1
    for s in topo.switches:
        g.add_node(s.name, load=1 + hosts[s.name])
    for ln in topo.links:
        if ln.a == ln.b:
            continue
        w = link_weight(ln.delay_ms)
        if g.has_edge(ln.a, ln.b):
            g[ln.a][ln.b]["weight"] += w
        else:
            g.add_edge(ln.a, ln.b, weight=w)
    return g


def _order(g: nx.Graph, start: str) -> list[str]:
    """The switches breadth first from ``start``, then the other components' (spec order between them)."""
    out: list[str] = []
    seen: set[str] = set()
    for first in [start, *g]:
        if first in seen:
            continue
        for n in [first, *(v for _, v in nx.bfs_edges(g, first))]:
            seen.add(n)
            out.append(n)
    return out


def _cut(g: nx.Graph, side: set[str]) -> float:
    return sum(d["weight"] for a, b, d in g.edges(data=True) if (a in side) != (b in side))


def _bisect(g: nx.Graph, servers: list[str], pinned: dict[str, str]) -> dict[str, str]:
    """Recursive Kernighan-Lin bisection of ``g`` over ``servers`` (module docstring), ``pinned`` switches
    kept on their servers.

    Every switch is expanded into its load (itself and one node per host, tied to it by
    :data:`ACCESS_WEIGHT`), so the sides balance hosts too; :data:`SLACK` of the nodes are placeholders tied to
    nothing, so a side may carry up to that share more or less than its servers' share when that cuts less.
    The pinned switches of each side are tied to an anchor node of that side, so no swap pays for moving
    them. Each of up to :data:`STARTS` switches, spread over the graph, seeds a first side of whole
    switches taken breadth first up to its share of the load (and at least one switch per server on each
    side); that side and what the bisection makes of it (when it keeps every pin and every host with its
    switch) are candidates, those that leave each side a switch per server first. Of the candidates whose left
    side is within the slack (or half the largest switch's load) of its share, the lightest cut wins (the
    more even, then the first, on a tie)."""
    if len(servers) == 1:
        return {n: servers[0] for n in g}
    half = math.ceil(len(servers) / 2)
    left, right = servers[:half], servers[half:]
    pin_left = {n for n in g if pinned.get(n) in left}
    pin_right = {n for n in g if pinned.get(n) in right}
    loads = {n: g.nodes[n]["load"] for n in g}

    def expanded(nodes: list[str]) -> list[Any]:
        return [x for n in nodes for x in (n, *((n, i) for i in range(1, loads[n])))]

    slack = [("slack", i) for i in range(math.ceil(SLACK * sum(loads.values())))]
    anchors = [("anchor", "left"), ("anchor", "right")]
    h = nx.Graph()
    h.add_nodes_from(expanded(list(g)) + slack + anchors)
    h.add_edges_from((n, (n, i), {"weight": ACCESS_WEIGHT}) for n in g for i in range(1, loads[n]))
    h.add_edges_from(g.edges(data=True))
    h.add_edges_from((anchors[0], n, {"weight": ACCESS_WEIGHT}) for n in pin_left)
    h.add_edges_from((anchors[1], n, {"weight": ACCESS_WEIGHT}) for n in pin_right)
    share = len(left) / len(servers)
    k = round(len(slack) * share)  # placeholders sit in both sides' share, so either may give some away
    want = sum(loads.values()) * share
    # a cut is a candidate when its left side is this close to its share of the load (a start's own first
    # side always is: whole switches, stopped nearest the share), or when the pins leave nothing closer
    tolerance = max(len(slack), max(loads.values()) / 2)

    def imbalance(on_left: set[str]) -> float:
        return abs(sum(loads[n] for n in on_left) - want)

    candidates: list[set[str]] = []
    for start in list(g)[:: max(1, math.ceil(g.number_of_nodes() / STARTS))]:
        on_left = set(pin_left)
        load = sum(loads[n] for n in on_left)
        free = [n for n in _order(g, start) if n not in pin_left and n not in pin_right]
        for n in free:  # whole switches, breadth first, each taken if it brings the side nearer its share
            if abs(load + loads[n] - want) < abs(load - want):
                on_left.add(n)
                load += loads[n]
        # every server gets a switch at least: each side as many as its servers
        for n in free:
            if len(on_left) >= len(left):
                break
            on_left.add(n)
        for n in reversed(free):
            if len(g) - len(on_left) >= len(right):
                break
            on_left.discard(n)
        candidates.append(on_left)
        side_a = {anchors[0], *slack[:k], *expanded(sorted(on_left))}
        p1, p2 = nx.community.kernighan_lin_bisection(h, partition=(side_a, set(h) - side_a), weight="weight")
        # which side is the left: the left pins' (their anchor's), else not the right pins', else (a
        # bisection swaps nodes, so sizes hold) the one of the first side's size
        if pin_left:
            kept = p1 if anchors[0] in p1 else p2
        elif pin_right:
            kept = p2 if anchors[1] in p1 else p1
        else:
            kept = p1 if len(p1) == len(side_a) and (len(p2) != len(side_a) or anchors[0] in p1) else p2
        moved = {n for n in g if n in kept}
        if pin_left <= moved and not pin_right & moved and all(
                ((n, i) in kept) == (n in kept) for n in g for i in range(1, loads[n])):
            candidates.append(moved)
    candidates = [c for c in candidates if len(c) >= len(left) and len(g) - len(c) >= len(right)] or candidates
    fair = [c for c in candidates if imbalance(c) <= tolerance] or [min(candidates, key=imbalance)]
    best = min(fair, key=lambda c: (round(_cut(g, c), 9), imbalance(c)))  # the first, on a tie
    out = _bisect(g.subgraph([n for n in g if n in best]), left, pinned)
    out |= _bisect(g.subgraph([n for n in g if n not in best]), right, pinned)
    return out


def place(topo: Topology, servers: Sequence[str]) -> Placement:
    """The placement of ``topo`` on ``servers`` (module docstring); ValueError names what cannot be done."""
    servers = tuple(servers)
    if not servers:
        raise ValueError("placement: no servers given")
    if len(set(servers)) != len(servers):
        raise ValueError(f"placement: a server is named twice in {','.join(servers)}")
    if len(servers) > len(topo.switches):
        raise ValueError(f"placement: {len(servers)} servers but {topo.name} has {len(topo.switches)} switches; "
                         "a switch and its hosts run on one server, so give at most as many servers as switches")
    pinned = pins(topo, servers)
    g = switch_graph(topo)
    where = _bisect(g, list(servers), pinned)
    switch_server = {s.name: where[s.name] for s in topo.switches}
    return Placement(
        servers=servers,
        switch_server=switch_server,
        host_server={h.name: switch_server[h.switch] for h in topo.hosts},
        cut=tuple((ln.a, ln.b, ln.delay_ms) for ln in topo.links if switch_server[ln.a] != switch_server[ln.b]),
        pinned=frozenset(pinned),
    )
