"""The run's multicast sessions, planned once from the topology: the one copy the builder and the launcher read.

A CDN run has two multicast sessions (the session id of :mod:`contract.mcast_wire`'s header):

* **ingest** (session 1): the origin pushes content and invalidations to the edges on the group whose source
  is the origin and whose members include edges (data port 7400; NACKs go to the origin's unicast port 7402,
  after NORM, RFC 5740). None when the topology names no such group.
* **control** (session 2): every edge multicasts its heartbeats (load, liveness) to the control plane on the
  first group whose source is an edge (the topology's, else 239.10.0.2; port 7401). The DNS, the
  redirector, the origin and, when asked, the SDN controller listen.

Both are keyed with one HMAC key per run. The builder puts the control session in the controller's view
(:class:`contract.netview.ControlView`); the launcher writes the same groups, ports, ids and key into the
origin's, edges', DNS's and redirector's configs: nothing restates them, so they cannot disagree.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from contract import mcast_wire as wire
from testbed.net.spec import Role, Topology


@dataclass(frozen=True)
class McastSession:
    """One multicast session: its group, UDP port and session id."""

    group: str
    port: int
    session_id: int


@dataclass(frozen=True)
class McastPlan:
    """The run's multicast sessions and their HMAC key (text; the controller's view holds its bytes in hex)."""

    ingest: McastSession | None
    control: McastSession
    key: str
    feedback_port: int = wire.FEEDBACK_PORT

    @property
    def key_hex(self) -> str:
        return self.key.encode().hex()


def plan_mcast(
    topo: Topology,
    key: str | None = None,
    control_group: str | None = None,
    control_port: int | None = None,
    control_session: int | None = None,
) -> McastPlan:
    """The multicast plan of ``topo``; ``key`` (default: a fresh random one) and the control session's group,
    port and id may be given (the builder's ``extra["control"]``), and then the edges use them too."""
    origin = next((h.name for h in topo.hosts_with(Role.origin)), None)
    edges = {h.name for h in topo.hosts_with(Role.edge)}
    ingest = next((g.group for g in topo.multicast if g.source == origin and edges & set(g.members)), None)
    control = control_group or next(
        (g.group for g in topo.multicast if g.source in edges and g.group != ingest), wire.DEFAULT_CONTROL_GROUP
    )
    return McastPlan(
        ingest=McastSession(ingest, wire.DATA_PORT, wire.INGEST_SESSION) if ingest else None,
        control=McastSession(
            control,
            control_port if control_port is not None else wire.CONTROL_PORT,
            control_session if control_session is not None else wire.CONTROL_SESSION,
        ),
        key=key or secrets.token_hex(16),
    )
