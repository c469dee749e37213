"""Lab anycast-failover, reference solution: which anycast member each ingress switch sends VIP traffic to.

Routing-based server selection (lecture slide 12: "Routing based (IP anycast) - transparent to
clients"): every member announces the same virtual IP and the network delivers a client's packets to
the *nearest* one. Our controller plays BGP's part: for every ingress switch it picks the member with
the lowest configured one-way delay (shortest path through the switches plus the member's access link)
among the healthy ones (alive per liveness probes, access link up, not drained), ties broken by name.
When a member dies or a link fails the choice is recomputed and the flows follow
(``controller/anycast.py`` turns the choice into OpenFlow rules).

Instructors: this file is the answer key; strip ``solution/`` directories before handing labs out.
"""

from __future__ import annotations

from contract.netview import NetView
from controller.anycast import ServiceState
from controller.routing import Routes


def member_cost(view: NetView, routes: Routes, ingress: str, member: str) -> float | None:
    """One-way delay (ms) from switch ``ingress`` to host ``member``, or None when unreachable."""
    h = view.host(member)
    d = routes.dist.get(ingress, {}).get(h.switch)
    return None if d is None else d + h.delay_ms


def choose(view: NetView, routes: Routes, svc: ServiceState) -> dict[str, str | None]:
    """Every switch name -> the chosen member's host name (None: no healthy reachable member)."""
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
