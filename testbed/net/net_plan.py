"""The network's half of a run's plan: every address, MAC, DPID and switch port, the multicast sessions,
and the view the controller is handed (spec -> **plan** -> network + services).

:class:`NetPlan` computes them from a validated topology and the build options alone: no root, no
Mininet, nothing built. :func:`testbed.plan.make_plan` shows it (``cdnlab plan``); the builder,
:class:`testbed.net.build.CdnNet`, is a :class:`NetPlan` carried out, and checks the network it built
against it (Mininet's port numbers against :func:`port_numbers`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from testbed.net.mcast_plan import McastPlan, plan_mcast
from testbed.net.spec import Topology
from testbed.util import timeout_scale

if TYPE_CHECKING:
    from testbed.net.placement import Placement

#: the controller's liveness probes of anycast members (controller/liveness.py): every 20 ms, 60 ms to
#: answer. Both stretch with the platform's slowness (``CDNLAB_TIMEOUT_SCALE``; 4 under TCG), where a SYN
#: round trip through switch and controller can take longer and a live member would be withdrawn.
ANYCAST_PROBE_INTERVAL_MS = 20.0
ANYCAST_PROBE_TIMEOUT_MS = 60.0


@dataclass
class BuildOptions:
    """How to emulate; every field has a command-line flag in ``cdnlab up``."""

    links: str = "auto"  # auto | netem | relay
    controller: str = "auto"  # auto (ryu if importable) | ryu | standalone
    datapath: str = "auto"  # auto | kernel | user
    anycast_mode: str = "destination"  # destination | affinity
    run_dir: Path | None = None
    connect_timeout: float = 30.0
    relay_procs: int | None = None  # relay processes for the delayed links (None: one per CPU)
    verify_links: bool = False  # measure a twin of each link class after the build (testbed.net.linkverify)
    #: ``extra["control"]`` (True or a dict of ``contract.netview.ControlView`` fields, ``key`` as the
    #: services' text key): the controller consumes the CDN's heartbeats (see ``CdnNet.control_view``)
    extra: dict[str, Any] = field(default_factory=dict)
    #: a lab submission (``contract.sandbox.Submission`` as a JSON file) the Ryu controller runs in a sandbox
    #: and plugs in: the network stage of ``cdnlab grade`` (:mod:`testbed.grade_network`)
    controller_submission: Path | None = None
    #: the servers a run spans (``--servers A,B``; the first is this machine, where the controller runs):
    #: empty for one machine. Which switch and host runs where: :mod:`testbed.net.placement`
    servers: tuple[str, ...] = ()


def mac_for(index: int) -> str:
    """Deterministic, locally administered MAC for host number ``index`` (0-based)."""
    return f"02:cd:00:{(index >> 16) & 0xFF:02x}:{(index >> 8) & 0xFF:02x}:{index & 0xFF:02x}"


def vmac_for(index: int) -> str:
    """Virtual MAC the controller answers ARP with for anycast VIP number ``index``."""
    return "02:cd:ff:00:00:%02x" % (index & 0xFF)


def port_numbers(topo: Topology) -> dict[tuple[str, str], int]:
    """(node, neighbour) -> the port number Mininet gives ``node``'s interface towards ``neighbour``, known
    before anything is built: Mininet numbers a node's interfaces in the order its links are added (from
    0 on hosts, 1 on switches), and the builder adds every host's access link, then the switch links, in
    file order. The builder checks the built network against this (:meth:`CdnNet.netview`). Between two
    nodes joined twice, the first link's ports."""
    nxt = {s.name: 1 for s in topo.switches} | {h.name: 0 for h in topo.hosts}
    out: dict[tuple[str, str], int] = {}
    pairs = [(h.name, h.switch) for h in topo.hosts] + [(ln.a, ln.b) for ln in topo.links]
    for a, b in pairs:
        out.setdefault((a, b), nxt[a])
        out.setdefault((b, a), nxt[b])
        nxt[a] += 1
        nxt[b] += 1
    return out


class NetPlan:
    """Addresses, MACs, switch ports, the multicast plan and the controller's view of ``topo`` under
    ``options``. Pure."""

    def __init__(self, topo: Topology, options: BuildOptions | None = None) -> None:
        self.topo = topo
        self.opts = options or BuildOptions()
        self.addresses = topo.addresses()
        self.macs = {h.name: mac_for(i) for i, h in enumerate(topo.hosts)}
        self.rest_port = 0  # the controller's REST port: chosen when it starts (the view's default here)
        want = self.opts.extra.get("control")
        want = dict(want) if isinstance(want, dict) else {} if want else None
        w = want or {}
        #: the run's multicast sessions and key, planned once: the controller's view (``control``) and the
        #: services' configs (testbed.net.service_plan) both read this copy
        self.mcast: McastPlan = plan_mcast(topo, key=w.get("key"), control_group=w.get("group"),
                                           control_port=w.get("port"), control_session=w.get("session_id"))
        self.control = self._control_view(want)
        #: which server runs each switch and host, when the run spans several (``options.servers``)
        self.placement: Placement | None = None
        if self.opts.servers:  # networkx, imported only for a run across servers
            from testbed.net.placement import place

            self.placement = place(topo, self.opts.servers)

    def ip(self, name: str) -> str:
        return self.addresses[name]

    def ports(self) -> dict[tuple[str, str], int]:
        """(node, neighbour) -> port (:func:`port_numbers`)."""
        return port_numbers(self.topo)

    def _control_view(self, want: dict[str, Any] | None) -> dict[str, Any] | None:
        """``BuildOptions.extra["control"]`` as the view's ``control`` block: the plan's control session and
        key, and the controller's own settings (``miss_limit``, ``interval_ms``); None when not asked for."""
        if want is None:
            return None
        c = self.mcast.control
        own = {k: v for k, v in want.items() if k not in ("key", "group", "port", "session_id")}
        # the view holds the key's bytes in hex
        return {**own, "group": c.group, "port": c.port, "session_id": c.session_id, "key": self.mcast.key_hex}

    def netview(self) -> dict[str, Any]:
        """The JSON view of the network handed to the controller (schema: contract.netview), from the
        topology alone (the builder's :meth:`ports` checks it against the built network)."""
        ports = self.ports()
        dpids = self.topo.dpids()
        view: dict[str, Any] = {
            "switches": [{"name": s.name, "dpid": dpids[s.name]} for s in self.topo.switches],
            "links": [],
            "hosts": [],
            "anycast": [],
            "anycast_mode": self.opts.anycast_mode,
            "multicast_static": [
                {"group": g.group, "source": g.source, "members": list(g.members)} for g in self.topo.multicast
            ],
            "rest_port": self.rest_port,
        }
        if self.control is not None:
            view["control"] = dict(self.control)
        for ln in self.topo.links:
            view["links"].append({
                "a": ln.a, "a_port": ports[(ln.a, ln.b)], "b": ln.b, "b_port": ports[(ln.b, ln.a)],
                "delay_ms": ln.delay_ms, "bw_mbit": ln.bw_mbit,
            })
        for h in self.topo.hosts:
            view["hosts"].append({
                "name": h.name, "mac": self.macs[h.name], "ip": self.addresses[h.name],
                "switch": h.switch, "port": ports[(h.switch, h.name)], "delay_ms": h.link.delay_ms,
            })
        scale = timeout_scale()
        probe = {"interval_ms": ANYCAST_PROBE_INTERVAL_MS * scale, "timeout_ms": ANYCAST_PROBE_TIMEOUT_MS * scale}
        for i, a in enumerate(self.topo.anycast):
            view["anycast"].append({
                "name": a.name, "vip": a.vip, "vmac": vmac_for(i), "port": a.port, "members": list(a.members),
                "probe": dict(probe),
            })
        return view
