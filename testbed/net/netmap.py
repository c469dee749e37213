"""The network map of a topology: RTT from each client prefix to each edge.

An Akamai-style mapping system keeps such a map of the Internet, measured, and answers each request by
looking up where it comes from (Nygren, Sitaraman & Sun, "The Akamai Network", SIGOPS OSR 2010, §5.1).
In the emulation the map is exact: twice the one-way delay of the lowest-delay path, from the topology.

The two selection services see different addresses, so each gets its own map
(:class:`testbed.services.mapping.NetworkMap` looks them up by longest-prefix match):

* the redirector sees the client itself: one ``/32`` per client;
* the mapping DNS sees the client's resolver, or the client's subnet when the resolver sends EDNS Client
  Subnet (RFC 7871, a ``/24`` by default): one ``/32`` per resolver and one ``/24`` per client subnet.

A ``/24`` row is the mean over the clients in it (the redirector's map has them too, for clients it does
not list). Pure: no root, no network.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from statistics import fmean

from testbed.net.spec import Role, Topology

#: the client prefix length EDNS Client Subnet carries by default (RFC 7871 §11.1; unbound's default)
ECS_PREFIX_V4 = 24


@dataclass(frozen=True, slots=True)
class NetworkMaps:
    """``prefix -> edge -> RTT (ms)`` for the redirector and for the mapping DNS."""

    redirector: dict[str, dict[str, float]]
    dns: dict[str, dict[str, float]]


def rtt_to_edges(topo: Topology, edges: Sequence[str]) -> dict[str, dict[str, float]]:
    """host -> edge -> RTT (ms): twice the one-way delay of the lowest-delay path (one Dijkstra per edge)."""
    out: dict[str, dict[str, float]] = {h.name: {} for h in topo.hosts}
    for e in edges:
        for node, d in topo.delays_from(e).items():
            if node in out:
                out[node][e] = round(2 * d, 3)
    return out


def _subnet_means(rows: Mapping[str, dict[str, float]], addresses: Mapping[str, str], hosts: Sequence[str],
                  plen: int) -> dict[str, dict[str, float]]:
    members: dict[str, list[str]] = {}
    for h in hosts:
        net = ipaddress.ip_network(f"{addresses[h]}/{plen}", strict=False)
        members.setdefault(str(net), []).append(h)
    return {net: {e: round(fmean(rows[h][e] for h in hs), 3) for e in rows[hs[0]]}
            for net, hs in members.items()}


def network_maps(topo: Topology, addresses: Mapping[str, str], edges: Sequence[str],
                 rows: Mapping[str, dict[str, float]] | None = None) -> NetworkMaps:
    """The redirector's and the DNS's network maps for ``topo`` numbered as ``addresses`` (host -> IPv4);
    ``rows`` is :func:`rtt_to_edges` when the caller has it already."""
    rows = rows if rows is not None else rtt_to_edges(topo, edges)
    clients = [h.name for h in topo.hosts_with(Role.client)]
    resolvers = [h.name for h in topo.hosts_with(Role.resolver)]
    subnets = _subnet_means(rows, addresses, clients, ECS_PREFIX_V4)
    redirector = {**subnets, **{f"{addresses[c]}/32": rows[c] for c in clients}}
    dns = {**subnets, **{f"{addresses[r]}/32": rows[r] for r in resolvers}}
    return NetworkMaps(redirector=redirector, dns=dns)
