"""Lab anycast-failover (starter): which anycast member each ingress switch sends VIP traffic to.

Fill in the two TODOs. The grader puts your ``choose`` into the controller (in place of
``controller.anycast.choose``), builds the OpenFlow rules from it on a fake network
(``controller/simulate.py``) and walks packets from every client to the VIP.

What you get (read contract/netview.py, controller/routing.py, controller/anycast.py):

* ``view.switches`` (each has ``.name``), ``view.host(name)`` -> HostView with ``.switch`` (the switch it
  hangs off) and ``.delay_ms`` (its access link's one-way delay);
* ``routes.dist[s][d]`` - the shortest-path delay (ms) from switch s to switch d; a missing entry means
  unreachable (e.g. after link failures cut the network in two); ``dist[s][s] == 0``;
* ``svc.view.members`` - the member host names; ``svc.health[m].healthy`` - alive, access link up and
  not drained.

Grade with ``cdnlab grade anycast-failover --solution path/to/anycast_choice.py``.
"""

from __future__ import annotations

from contract.netview import NetView
from controller.anycast import ServiceState
from controller.routing import Routes


def member_cost(view: NetView, routes: Routes, ingress: str, member: str) -> float | None:
    """One-way delay (ms) from switch ``ingress`` to host ``member``, or None when unreachable.

    TODO: shortest-path delay from ingress to the member's switch plus the member's access delay.
    """
    raise NotImplementedError("TODO member_cost: routes.dist[ingress][member switch] + access delay")


def choose(view: NetView, routes: Routes, svc: ServiceState) -> dict[str, str | None]:
    """Every switch name -> the chosen member's host name (None: no healthy reachable member).

    TODO: for each switch, among the *healthy* members it can reach, the one with the lowest
    member_cost; ties broken by the smaller host name (so every switch decides the same way).
    """
    raise NotImplementedError("TODO choose: per ingress switch, the nearest healthy member")
