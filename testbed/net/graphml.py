"""Import an Internet Topology Zoo graph (GraphML) as a cdnlab topology spec.

Every PoP of the zoo graph becomes a switch with one client; link one-way delays come from the
great-circle distance between the PoPs' coordinates at 200 km per ms (light in fibre, ~2/3 c) — a lower
bound, since real fibre paths are longer. Links between PoPs without coordinates get ``default_delay_ms``.
Edges (CDN servers) are placed on ``edges`` PoPs by greedy k-center on delay (each new edge on the PoP
farthest from the edges chosen so far); the origin, mapping DNS and redirector sit at the PoP with the
smallest total delay to all others. PoPs are grouped into regions (GraphML ``Country`` or ``Continent``,
else clusters on delay), each with its own resolver, as an ISP gives its customers a nearby one.
"""

from __future__ import annotations

import ipaddress
import math
import re
from pathlib import Path
from typing import Any

import networkx as nx

from contract.config import ConfigError
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


def _on_earth(c: tuple[float, float]) -> bool:
    return -90 <= c[0] <= 90 and -180 <= c[1] <= 180


def _latlon(c: tuple[float, float] | None) -> dict[str, float]:
    """A switch's ``lat``/``lon`` (kept to 4 decimals, ~10 m) when the graph places it, else nothing."""
    return {} if c is None else {"lat": round(c[0], 4), "lon": round(c[1], 4)}


def _k_center(nodes: list[Any], dist: dict[Any, dict[Any, float]], k: int, first: Any) -> list[Any]:
    """Greedy k-center (Gonzalez 1985): start farthest from ``first``, then add the node farthest from
    the chosen ones; a 2-approximation of the smallest maximum distance to a center."""
    chosen: list[Any] = []
    while len(chosen) < min(k, len(nodes)):
        chosen.append(max((n for n in nodes if n not in chosen),
                          key=lambda n: min((dist[n][c] for c in chosen), default=-dist[first][n])))
    return chosen


def _medoid(members: list[Any], dist: dict[Any, dict[Any, float]]) -> Any:
    """The member with the smallest total delay to the others (ties: the first)."""
    return min(members, key=lambda n: sum(dist[n][m] for m in members))


def derive_regions(g: nx.Graph, dist: dict[Any, dict[Any, float]], max_regions: int
                   ) -> tuple[list[list[Any]], str]:
    """Group the PoPs into at most ``max_regions`` regions; returns (groups, how they were made).

    From the GraphML ``Country`` attribute when it names at least two, else ``Continent``: PoPs without
    one join the group of their nearest PoP that has one, and while there are too many groups the two
    with the smallest mean delay between them merge (average linkage), so a country is never split.
    Otherwise by clustering on delay: greedy k-center, each PoP in the group of its nearest center.
    """
    nodes = list(g.nodes)
    for attr in ("Country", "Continent"):
        named = {n: str(g.nodes[n][attr]).strip() for n in nodes if str(g.nodes[n].get(attr) or "").strip()}
        if len(set(named.values())) < 2:
            continue
        by: dict[str, list[Any]] = {}
        for n in nodes:
            key = named.get(n) or named[min(named, key=lambda m, n=n: (dist[n][m], str(m)))]
            by.setdefault(key, []).append(n)
        groups = list(by.values())
        while len(groups) > max_regions:
            i, j = min(((i, j) for i in range(len(groups)) for j in range(i + 1, len(groups))),
                       key=lambda ij: sum(dist[a][b] for a in groups[ij[0]] for b in groups[ij[1]])
                       / (len(groups[ij[0]]) * len(groups[ij[1]])))
            groups[i] = groups[i] + groups.pop(j)
        return groups, attr
    center = _medoid(nodes, dist)
    centers = _k_center(nodes, dist, max_regions, center)
    groups_by: dict[Any, list[Any]] = {c: [] for c in centers}
    for n in nodes:
        groups_by[min(centers, key=lambda c: (dist[n][c], centers.index(c)))].append(n)
    return [m for m in groups_by.values() if m], "delay"


def _region_names(labels: list[str]) -> list[str]:
    """Spec names (``[a-z][a-z0-9_]{0,9}``) from region labels (the first word of the first name), unique."""
    out: list[str] = []
    for i, label in enumerate(labels):
        words = label.split(",")[0].split()
        base = re.sub(r"[^a-z0-9]+", "_", (words[0] if words else "").lower()).strip("_")[:10].rstrip("_")
        base = base if base[:1].isalpha() else f"r{base}"[:10] if base else f"r{i}"
        name, k = base, 1
        while name in out:
            name, k = f"{base[:9]}{k}", k + 1
        out.append(name)
    return out


def graph_to_spec(g: nx.Graph, name: str, edges: int = 3, default_delay_ms: float = 1.0,
                  subnet: str = DEFAULT_SUBNET, regions: int = 4) -> dict[str, Any]:
    """Build a topology spec (a dict ready for :func:`testbed.net.spec.parse_topology`).

    Switches are ``z<N>`` and each PoP's client ``cl<N>``: never a name the builder gives its own nodes
    (Mininet's controller is ``c0``). PoPs are grouped into at most ``regions`` regions
    (:func:`derive_regions`), each with its own resolver at its medoid PoP. When ``subnet`` has room,
    every PoP's hosts get their own /24 (``<subnet>.<PoP>.x``), so a client's /24 (what EDNS Client
    Subnet carries, RFC 7871) says where it is; the anycast VIP sits near the top of ``subnet``.
    """
    g = nx.Graph(g)  # collapse multi-edges, drop direction
    g.remove_edges_from(nx.selfloop_edges(g))
    if g.number_of_nodes() == 0:
        raise ValueError("the graph has no nodes")
    if edges < 1:
        raise ValueError(f"edges: {edges} (at least 1 edge is needed)")
    if regions < 1:
        raise ValueError(f"regions: {regions} (at least 1 region is needed)")
    if not nx.is_connected(g):
        largest = max(nx.connected_components(g), key=len)
        g = g.subgraph(largest).copy()
    nodes = list(g.nodes)
    sw = {n: f"z{i}" for i, n in enumerate(nodes)}
    coords = {n: c for n in nodes if (c := _coords(g.nodes[n])) is not None and _on_earth(c)}
    links = []
    for u, v in g.edges:
        cu, cv = _coords(g.nodes[u]), _coords(g.nodes[v])
        delay = default_delay_ms
        if cu and cv:
            delay = max(0.1, round(great_circle_km(*cu, *cv) / FIBRE_KM_PER_MS, 2))
        g.edges[u, v]["delay_ms"] = delay
        links.append({"a": sw[u], "b": sw[v], "delay_ms": delay})
    dist = dict(nx.all_pairs_dijkstra_path_length(g, weight="delay_ms"))
    center = _medoid(nodes, dist)
    chosen = _k_center(nodes, dist, edges, center)
    labels = {n: str(g.nodes[n].get("label", n)) for n in nodes}
    groups, how = derive_regions(g, dist, regions)
    if how == "delay":
        region_labels = [f"near {labels[_medoid(m, dist)]}" for m in groups]
    else:
        region_labels = [", ".join(dict.fromkeys(str(g.nodes[n].get(how) or "") for n in m if g.nodes[n].get(how)))
                         for m in groups]
    names = _region_names([lb.removeprefix("near ") for lb in region_labels])
    region_of = {n: names[i] for i, m in enumerate(groups) for n in m}
    hosts: list[dict[str, Any]] = [
        {"name": "origin", "role": "origin", "switch": sw[center], "link": {"delay_ms": 1}},
        {"name": "dns", "role": "dns", "switch": sw[center], "params": {"level": "both"}},
    ]
    for i, m in enumerate(groups):
        at = center if center in m else _medoid(m, dist)
        hosts.append({"name": "res" if len(groups) == 1 else f"res{i}", "role": "resolver", "switch": sw[at]})
    hosts.append({"name": "redir", "role": "redirector", "switch": sw[center], "link": {"delay_ms": 1}})
    for i, n in enumerate(chosen):
        hosts.append({"name": f"e{i}", "role": "edge", "switch": sw[n], "link": {"delay_ms": 1}})
    for n in nodes:
        hosts.append({"name": f"cl{sw[n][1:]}", "role": "client", "switch": sw[n], "link": {"delay_ms": 1}})
    pop = {sw[n]: n for n in nodes}
    for h in hosts:
        h["region"] = region_of[pop[h["switch"]]]
    assert not {h["name"] for h in hosts} & set(BUILDER_NODE_NAMES)
    try:
        net = ipaddress.IPv4Network(subnet)
    except ValueError as e:
        raise ValueError(f"subnet: {e}") from None
    if net.num_addresses - 2 < len(hosts) + 1:
        raise ValueError(f"subnet {net} has too few addresses for {len(hosts)} hosts and a VIP")
    vip = net.broadcast_address - (254 if net.prefixlen <= 23 else 1)
    if net.prefixlen <= 24 and len(nodes) < 2 ** (24 - net.prefixlen):  # one /24 per PoP, the last for the VIP
        index = {sw[n]: i for i, n in enumerate(nodes)}
        used: dict[str, int] = {}
        for h in hosts:
            used[h["switch"]] = used.get(h["switch"], 0) + 1
            h["ip"] = str(net.network_address + 256 * index[h["switch"]] + used[h["switch"]])
    how_text = {"Country": "regions: GraphML Country (neighbouring countries merged by mean delay)",
                "Continent": "regions: GraphML Continent",
                "delay": "regions: k-center clustering on path delay"}[how]
    return {
        "name": name,
        "description": f"imported from Internet Topology Zoo graph {name}; PoPs: "
        + ", ".join(f"{sw[n]}={labels[n]}" for n in nodes[:50]),
        "sources": ["The Internet Topology Zoo (Knight et al., IEEE JSAC 2011)",
                    "delays: great-circle distance at 200 km/ms (light in fibre)", how_text],
        "subnet": str(net),
        "regions": [{"name": names[i], "label": region_labels[i]} for i in range(len(groups))],
        "switches": [{"name": sw[n], "region": region_of[n], **_latlon(coords.get(n))} for n in nodes],
        "links": links,
        "hosts": hosts,
        "anycast": [{"name": "http", "vip": str(vip), "port": 80,
                     "members": [f"e{i}" for i in range(len(chosen))]}],
    }


def import_graphml(path: str | Path, edges: int = 3, name: str | None = None,
                   subnet: str = DEFAULT_SUBNET, regions: int = 4) -> dict[str, Any]:
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
        return graph_to_spec(g, spec_name, edges=edges, subnet=subnet, regions=regions)
    except ValueError as e:
        raise ConfigError(f"{p}: {e}") from None
