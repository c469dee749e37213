"""The switch graph built from the network view (networkx), weighted by configured one-way delays.

Links can be marked down (port status); :func:`compare_links` cross-checks the configured links against
links discovered by LLDP (IEEE 802.1AB, as done by Ryu's topology app) and reports mismatches.
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx

from contract.netview import LinkView, NetView


@dataclass(frozen=True)
class PortRef:
    switch: str
    port: int


class SwitchGraph:
    """Switches as nodes; each edge carries ``weight`` (delay ms) and the port on each side."""

    def __init__(self, view: NetView) -> None:
        self.view = view
        self.dpid = {s.name: s.dpid for s in view.switches}
        self.name_of = {s.dpid: s.name for s in view.switches}
        self.links: list[LinkView] = list(view.links)
        self.down: set[int] = set()  # indices into self.links
        self.ports_down: set[tuple[str, int]] = set()
        # (switch, port) -> link index, for port-status events
        self.port_link: dict[tuple[str, int], int] = {}
        for i, link in enumerate(self.links):
            self.port_link[(link.a, link.a_port)] = i
            self.port_link[(link.b, link.b_port)] = i
        self.host_port = {(h.switch, h.port): h.name for h in view.hosts}

    def set_link_state(self, switch: str, port: int, up: bool) -> bool:
        """Record the state of port ``switch:port``; a link is up only while both its ports are up.
        True when the link's state changed (so both ends reporting, in any order, cause one change)."""
        i = self.port_link.get((switch, port))
        if i is None:
            return False
        (self.ports_down.discard if up else self.ports_down.add)((switch, port))
        link = self.links[i]
        now_down = (link.a, link.a_port) in self.ports_down or (link.b, link.b_port) in self.ports_down
        was_down = i in self.down
        (self.down.add if now_down else self.down.discard)(i)
        return was_down != now_down

    def graph(self) -> nx.Graph:
        """The graph of links that are up. Parallel links: the lowest-delay one that is up is used."""
        g = nx.Graph()
        for s in self.view.switches:
            g.add_node(s.name)
        for i, link in enumerate(self.links):
            if i in self.down:
                continue
            cur = g.get_edge_data(link.a, link.b)
            if cur is not None and cur["weight"] <= link.delay_ms:
                continue
            g.add_edge(
                link.a,
                link.b,
                weight=link.delay_ms,
                ports={link.a: link.a_port, link.b: link.b_port},
                index=i,
            )
        return g


def compare_links(view: NetView, discovered: set[tuple[int, int, int, int]]) -> list[str]:
    """Mismatches between configured links and LLDP-discovered ones.

    ``discovered``: set of (src_dpid, src_port, dst_dpid, dst_port), one per direction as LLDP reports.
    """
    dpid = {s.name: s.dpid for s in view.switches}
    name = {v: k for k, v in dpid.items()}
    want: set[tuple[int, int, int, int]] = set()
    for link in view.links:
        want.add((dpid[link.a], link.a_port, dpid[link.b], link.b_port))
        want.add((dpid[link.b], link.b_port, dpid[link.a], link.a_port))
    out = []
    for s, sp, d, dp in sorted(want - discovered):
        out.append(f"configured link {name.get(s, s)}:{sp} -> {name.get(d, d)}:{dp} not seen by LLDP")
    for s, sp, d, dp in sorted(discovered - want):
        out.append(f"LLDP found link {name.get(s, s)}:{sp} -> {name.get(d, d)}:{dp} not in the view")
    return out
