"""Unicast routing (pure): all-pairs shortest paths by configured delay and per-switch next hops.

Next hops towards each destination switch D come from one Dijkstra shortest-path tree rooted at D, so
the hop-by-hop forwarding of all switches is consistent and loop-free (every hop strictly lowers the
remaining distance). Rerouting after a link failure = recomputing on the graph without that link.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx

from contract.netview import NetView
from controller.flows import ETH_IP, TABLE_FORWARD, FlowEntry, Output, match

PRIO_HOST = 100


@dataclass
class Routes:
    """``dist[s][d]``: delay (ms) of the shortest path from switch s to d (absent: unreachable);
    ``port[s][d]``: the port of s towards d (absent when s == d or unreachable); ``path[s][d]``: switches."""

    dist: dict[str, dict[str, float]] = field(default_factory=dict)
    port: dict[str, dict[str, int]] = field(default_factory=dict)
    path: dict[str, dict[str, list[str]]] = field(default_factory=dict)

    def reachable(self, s: str, d: str) -> bool:
        return d in self.dist.get(s, {})


def compute_routes(g: nx.Graph) -> Routes:
    r = Routes()
    for s in g.nodes:
        r.dist[s], r.port[s], r.path[s] = {}, {}, {}
    for d in sorted(g.nodes):
        dist, paths = nx.single_source_dijkstra(g, d, weight="weight")
        for s, p in paths.items():  # p = [d, ..., s]
            r.dist[s][d] = dist[s]
            r.path[s][d] = list(reversed(p))
            if s != d:
                nh = p[-2]
                r.port[s][d] = g[s][nh]["ports"][s]
    return r


def host_next_hops(view: NetView, routes: Routes) -> dict[str, dict[str, int]]:
    """switch -> host name -> output port, for every host reachable from that switch."""
    out: dict[str, dict[str, int]] = {s.name: {} for s in view.switches}
    for s in out:
        for h in view.hosts:
            if h.switch == s:
                out[s][h.name] = h.port
            elif routes.reachable(s, h.switch):
                out[s][h.name] = routes.port[s][h.switch]
    return out


def unicast_flows(view: NetView, routes: Routes) -> dict[str, list[FlowEntry]]:
    """Table-1 flows: ``ipv4_dst == host ip`` -> port towards the host, for every switch."""
    out: dict[str, list[FlowEntry]] = {}
    for s, hops in host_next_hops(view, routes).items():
        out[s] = [
            FlowEntry(
                TABLE_FORWARD, PRIO_HOST, match(eth_type=ETH_IP, ipv4_dst=str(view.host(h).ip)), (Output(p),)
            )
            for h, p in sorted(hops.items())
        ]
    return out


def host_path(view: NetView, routes: Routes, src: str, dst: str) -> list[str] | None:
    """The switches a packet from host src to host dst crosses (None if unreachable)."""
    a, b = view.host(src).switch, view.host(dst).switch
    return routes.path[a].get(b)
