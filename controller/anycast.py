"""IP anycast (pure): per ingress switch, the lowest-delay healthy member, and the flows that do it.

Like BGP anycast in real CDNs (the seeds' "IP anycast" mapping), the network, not DNS, picks the
replica: the ingress switch rewrites the frame's destination MAC from the service's virtual MAC (which
clients learn by ARP for the VIP) to the chosen member's MAC; table 1 then forwards (VIP, member MAC)
along the shortest path to that member, which holds the VIP on its loopback.

Two modes:

* ``destination``: one rule per ingress switch (VIP, VMAC) -> member. A change of choice (failure,
  drain, reroute) moves all packets at once, so in-flight TCP connections break, as with real anycast
  when BGP routes change.
* ``affinity``: the ingress rule sends the first packet of each flow to the controller, which installs a
  per-flow (5-tuple) rule pinning the flow to the member chosen *at that moment*, with an idle timeout
  (so the table cleans itself) and a cookie naming (service, member). Established flows keep their member
  while it lives even when the choice changes (drain, restore, reroute); when a member is withdrawn as
  dead, the controller deletes its flows by cookie and their next packets are pinned anew.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from contract.netview import AnycastView, NetView
from controller.flows import (
    ETH_IP,
    OFPP_CONTROLLER,
    PROTO_TCP,
    PROTO_UDP,
    TABLE_CLASSIFY,
    TABLE_FORWARD,
    FlowEntry,
    Output,
    SetField,
    affinity_cookie,
    match,
)
from controller.routing import Routes

PRIO_VIP_INGRESS = 600
PRIO_AFFINITY = 700
PRIO_VIP_MEMBER = 200


@dataclass
class MemberHealth:
    alive: bool = True  # liveness probes
    link_up: bool = True  # port status of the member's access link
    drained: bool = False  # administratively drained (REST)
    reason: str = ""
    heartbeat_alive: bool = True  # control-channel heartbeats (controller/heartbeats.py); True if never heard

    @property
    def healthy(self) -> bool:
        return self.alive and self.heartbeat_alive and self.link_up and not self.drained


@dataclass
class ServiceState:
    view: AnycastView
    index: int
    health: dict[str, MemberHealth] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for m in self.view.members:
            self.health.setdefault(m, MemberHealth())


def member_cost(view: NetView, routes: Routes, ingress: str, member: str) -> float | None:
    """Configured one-way delay from ingress switch to member host (None if unreachable)."""
    h = view.host(member)
    d = routes.dist.get(ingress, {}).get(h.switch)
    return None if d is None else d + h.delay_ms


def choose(view: NetView, routes: Routes, svc: ServiceState) -> dict[str, str | None]:
    """ingress switch -> chosen member (lowest cost, ties by name), None when no healthy reachable member."""
    out: dict[str, str | None] = {}
    for s in view.switches:
        best: tuple[float, str] | None = None
        for m in svc.view.members:
            if not svc.health[m].healthy:
                continue
            c = member_cost(view, routes, s.name, m)
            if c is not None and (best is None or (c, m) < best):
                best = (c, m)
        out[s.name] = best[1] if best else None
    return out


def _vip_match(svc: AnycastView, **extra: object) -> tuple:
    return match(eth_type=ETH_IP, ipv4_dst=str(svc.vip), eth_dst=svc.vmac.lower(), **extra)


def anycast_flows(view: NetView, routes: Routes, svc: ServiceState, mode: str) -> dict[str, list[FlowEntry]]:
    """Per switch: table-0 ingress rule and table-1 (VIP, member MAC) forwarding to every member."""
    choice = choose(view, routes, svc)
    out: dict[str, list[FlowEntry]] = {s.name: [] for s in view.switches}
    for s in out:
        if mode == "affinity":
            out[s].append(
                FlowEntry(TABLE_CLASSIFY, PRIO_VIP_INGRESS, _vip_match(svc.view), (Output(OFPP_CONTROLLER),))
            )
        else:
            m = choice[s]
            acts = (SetField("eth_dst", view.host(m).mac.lower()),) if m else ()
            out[s].append(
                FlowEntry(
                    TABLE_CLASSIFY,
                    PRIO_VIP_INGRESS,
                    _vip_match(svc.view),
                    acts,
                    goto=TABLE_FORWARD if m else None,
                )
            )
        for m in svc.view.members:  # forwarding to every reachable member, healthy or not (affinity flows)
            h = view.host(m)
            port = h.port if h.switch == s else routes.port.get(s, {}).get(h.switch)
            if port is None:
                continue
            out[s].append(
                FlowEntry(
                    TABLE_FORWARD,
                    PRIO_VIP_MEMBER,
                    match(eth_type=ETH_IP, ipv4_dst=str(svc.view.vip), eth_dst=h.mac.lower()),
                    (Output(port),),
                )
            )
    return out


def affinity_flow(
    view: NetView,
    svc: ServiceState,
    member: str,
    ip_src: str,
    ip_proto: int,
    sport: int,
    dport: int,
    idle_s: int,
) -> FlowEntry:
    """The per-flow rule pinning one client flow (5-tuple) to ``member`` at its ingress switch."""
    l4: dict[str, int] = {}
    if ip_proto == PROTO_TCP:
        l4 = {"tcp_src": sport, "tcp_dst": dport}
    elif ip_proto == PROTO_UDP:
        l4 = {"udp_src": sport, "udp_dst": dport}
    idx = svc.view.members.index(member)
    return FlowEntry(
        TABLE_CLASSIFY,
        PRIO_AFFINITY,
        _vip_match(svc.view, ipv4_src=ip_src, ip_proto=ip_proto, **l4),
        (SetField("eth_dst", view.host(member).mac.lower()),),
        goto=TABLE_FORWARD,
        cookie=affinity_cookie(svc.index, idx),
        idle_timeout=idle_s,
    )
