"""Import an Internet Topology Zoo graph (GraphML) as a cdnlab topology spec.

Every PoP of the zoo graph becomes a switch with one client; link one-way delays come from the
great-circle distance between the PoPs' coordinates at 200 km per ms (light in fibre, ~2/3 c) — a lower
bound, since real fibre paths are longer. Links between PoPs without coordinates get ``default_delay_ms``.
Edges (CDN servers) are placed on ``edges`` PoPs by greedy k-center on delay (each new edge on the PoP
farthest from the edges chosen so far); the origin, mapping DNS, resolver and redirector sit at the PoP
with the smallest total delay to all others.
"""

from __future__ import annotations

import ipaddress
import math
import re
from pathlib import Path
from typing import Any

import networkx as nx

from testbed.config import ConfigError
from testbed.net.spec import BUILDER_NODE_NAMES, DEFAULT_SUBNET

FIBRE_KM_PER_MS = 200.0
EARTH_RADIUS_KM = 6371.0


def great_circle_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Haversine distance in kilometres."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(math.sqrt(min(1.0, a)))


def _coords(attrs: dict[str, Any]) -> tuple[float, float] | None:
    lat, lon = attrs.get("Latitude"), attrs.get("Longitude")
    if lat is None or lon is None:
        return None
    try:
        return float(lat), float(lon)
    except (TypeError, ValueError):
        return None


def graph_to_spec(g: nx.Graph, name: str, edges: int = 3, default_delay_ms: float = 1.0,
                  subnet: str = DEFAULT_SUBNET) -> dict[str, Any]:
    """Build a topology spec (a dict ready for :func:`testbed.net.spec.parse_topology`).

    Switches are ``z<N>`` and each PoP's client ``cl<N>``: never a name the builder gives its own nodes
    (Mininet's controller is ``c0``). Hosts are numbered from ``subnet``; the anycast VIP sits near its top.
    """
    g = nx.Graph(g)  # collapse multi-edges, drop direction
    g.remove_edges_from(nx.selfloop_edges(g))
    if g.number_of_nodes() == 0:
        raise ValueError("the graph has no nodes")
    if not nx.is_connected(g):
        largest = max(nx.connected_components(g), key=len)
        g = g.subgraph(largest).copy()
    nodes = list(g.nodes)
    sw = {n: f"z{i}" for i, n in enumerate(nodes)}
    links = []
    for u, v in g.edges:
        cu, cv = _coords(g.nodes[u]), _coords(g.nodes[v])
        delay = default_delay_ms
        if cu and cv:
            delay = max(0.1, round(great_circle_km(*cu, *cv) / FIBRE_KM_PER_MS, 2))
        g.edges[u, v]["delay_ms"] = delay
        links.append({"a": sw[u], "b": sw[v], "delay_ms": delay})
    dist = dict(nx.all_pairs_dijkstra_path_length(g, weight="delay_ms"))
    center = min(nodes, key=lambda n: sum(dist[n].values()))
    chosen: list[Any] = []
    k = max(1, min(edges, len(nodes)))
    while len(chosen) < k:
        far = max((n for n in nodes if n not in chosen),
                  key=lambda n: min((dist[n][c] for c in chosen), default=-dist[center][n]))
        chosen.append(far)
    hosts: list[dict[str, Any]] = [
        {"name": "origin", "role": "origin", "switch": sw[center], "link": {"delay_ms": 1}},
        {"name": "dns", "role": "dns", "switch": sw[center], "params": {"level": "both"}},
        {"name": "res", "role": "resolver", "switch": sw[center]},
        {"name": "redir", "role": "redirector", "switch": sw[center], "link": {"delay_ms": 1}},
    ]
    for i, n in enumerate(chosen):
        hosts.append({"name": f"e{i}", "role": "edge", "switch": sw[n], "link": {"delay_ms": 1}})
    for n in nodes:
        hosts.append({"name": f"cl{sw[n][1:]}", "role": "client", "switch": sw[n], "link": {"delay_ms": 1}})
    assert not {h["name"] for h in hosts} & set(BUILDER_NODE_NAMES)
    labels = {sw[n]: str(g.nodes[n].get("label", n)) for n in nodes}
    try:
        net = ipaddress.IPv4Network(subnet)
    except ValueError as e:
        raise ValueError(f"subnet: {e}") from None
    if net.num_addresses - 2 < len(hosts) + 1:
        raise ValueError(f"subnet {net} has too few addresses for {len(hosts)} hosts and a VIP")
    vip = net.broadcast_address - (254 if net.prefixlen <= 23 else 1)
    return {
        "name": name,
        "description": f"imported from Internet Topology Zoo graph {name}; PoPs: "
        + ", ".join(f"{k}={v}" for k, v in list(labels.items())[:50]),
        "sources": ["The Internet Topology Zoo (Knight et al., IEEE JSAC 2011)",
                    "delays: great-circle distance at 200 km/ms (light in fibre)"],
        "subnet": str(net),
        "switches": [{"name": sw[n]} for n in nodes],
        "links": links,
        "hosts": hosts,
        "anycast": [{"name": "http", "vip": str(vip), "port": 80,
                     "members": [f"e{i}" for i in range(len(chosen))]}],
    }


def import_graphml(path: str | Path, edges: int = 3, name: str | None = None,
                   subnet: str = DEFAULT_SUBNET) -> dict[str, Any]:
    """Read a Topology Zoo ``.graphml`` file and return a spec dict; ConfigError names the file."""
    p = Path(path)
    try:
        g = nx.read_graphml(p)
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such file") from None
    except Exception as e:  # noqa: BLE001 - networkx raises many kinds for malformed XML
        raise ConfigError(f"{p}: not a readable GraphML file: {e}") from None
    spec_name = name or re.sub(r"[^a-z0-9_]", "_", p.stem.lower())[:40] or "imported"
    try:
        return graph_to_spec(g, spec_name, edges=edges, subnet=subnet)
    except ValueError as e:
        raise ConfigError(f"{p}: {e}") from None
