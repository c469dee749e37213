"""Spec -> running Mininet network (the emulation core's builder).

:class:`CdnNet` turns a validated :class:`~testbed.net.spec.Topology` into a Mininet network:

* switches are Open vSwitch bridges, on the kernel datapath where the module exists, otherwise the
  userspace datapath with TX offloads off on every veth and socket buffers raised (the sysctls changed are
  recorded and restored on stop, or by ``cdnlab clean`` after a crash);
* links with delay/loss use netem where the kernel has it, else the userspace relay
  (:mod:`testbed.net.links`); a link is never quietly unlike its spec;
* the controller is the Ryu app in :mod:`controller` (proactive shortest paths, ARP, anycast, multicast),
  given a JSON view of the built network; ``standalone`` runs OVS as learning switches (with RSTP when the
  backbone has cycles) for debugging without Ryu;
* anycast members carry their VIP on loopback;
* emulated traffic stays inside (:mod:`testbed.net.containment`): a topology overlapping the machine's own
  networks is refused, the root namespace gets ``unreachable`` routes for the topology's blocks while the
  network is up, and :meth:`CdnNet.host` hands out only hosts in their own namespaces;
* everything started is recorded in a :class:`~testbed.net.state.RunState` for ``cdnlab clean``.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

from testbed.net import host_env
from testbed.net.containment import (
    GuardRoute,
    add_guard_routes,
    check_no_overlap,
    check_switch_names_free,
    require_namespaced,
)
from testbed.net.net_plan import (
    ANYCAST_PROBE_INTERVAL_MS,
    ANYCAST_PROBE_TIMEOUT_MS,
    BuildOptions,
    NetPlan,
    mac_for,
    port_numbers,
    vmac_for,
)
from testbed.net.spec import BUILDER_NODE_NAMES, Role, Topology
from testbed.net.state import RunState
from testbed.util import free_port, stop_process, tcp_open, wait_until

log = logging.getLogger(__name__)


#: the plan's names (testbed.net.net_plan) stay importable from here, where networks are built
__all__ = ["ANYCAST_PROBE_INTERVAL_MS", "ANYCAST_PROBE_TIMEOUT_MS", "NETWORK_LISTENERS", "BuildOptions", "CdnNet",
           "NetPlan", "mac_for", "port_numbers", "vmac_for", "waited_remote_controller"]

CONTROLLER_NODE = "c0"  # Mininet's name for the controller node (a host may not take it: the spec refuses it)
assert CONTROLLER_NODE in BUILDER_NODE_NAMES


def reachable_ips(node, ips: list[str], wait_s: float = 2.0) -> set[str]:
    """Addresses among ``ips`` that answer one ping from Mininet ``node`` (pinged in parallel).

    Mininet talks to a host's shell through a pty, whose canonical mode cuts lines at 4095 bytes, so the
    pings go in batches that keep each command line well below that.
    """
    want, ok = list(ips), set()
    for i in range(0, len(want), 40):
        script = " ".join(
            f"(ping -n -c1 -W{max(1, int(wait_s))} {ip} >/dev/null 2>&1 && echo OK {ip}) &" for ip in want[i:i + 40]
        )
        out = node.cmd(script + " wait")
        ok |= {w.split()[1] for w in out.splitlines() if w.startswith("OK ") and w.split()[1] in want}
    return ok


def _remote(node) -> bool:
    """Is this Mininet node on another server (a run across several: testbed.net.cluster)?"""
    return bool(getattr(node, "isRemote", False))


def ryu_available() -> bool:
    """Is the OpenFlow framework the controller runs on installed (``CDNLAB_OF_FRAMEWORK``: ryu or os_ken)?
    Asked without importing it (the testbed never imports the controller); a framework that is installed
    but broken makes the controller process exit, and the build says so with its log."""
    framework = os.environ.get("CDNLAB_OF_FRAMEWORK", "ryu")
    return framework in ("ryu", "os_ken") and importlib.util.find_spec(framework) is not None


def link_kwargs(p) -> dict[str, Any]:
    """Mininet link params for a :class:`~testbed.net.spec.LinkParams`."""
    kw: dict[str, Any] = {}
    if p.delay_ms:
        kw["delay_ms"] = p.delay_ms
    if p.delay_ms_ba is not None:
        kw["delay_ms_ba"] = p.delay_ms_ba
    if p.bw_mbit:
        kw["bw"] = p.bw_mbit
    if p.loss_pct:
        kw["loss"] = p.loss_pct
    if p.queue_pkts:
        kw["max_queue_size"] = p.queue_pkts
    return kw



@functools.cache
def waited_remote_controller() -> type:
    """Mininet's ``RemoteController`` without its own listening check, for a controller the caller has
    already waited for. That check runs ``telnet`` to the OpenFlow port and reads what comes back through
    Mininet's strict UTF-8 decoder; when the controller's OFPT_HELLO (a random 32-bit xid) arrives before
    telnet exits, the decoder raises UnicodeDecodeError and the build fails."""
    from mininet.node import RemoteController

    class WaitedRemoteController(RemoteController):
        def checkListening(self) -> None:
            return None

    return WaitedRemoteController

#: called with ("up", net) when a network has started and ("down", net) before it stops: how a watcher
#: that did not build the network (the dashboard of ``cdnlab run --web``) follows the experiment's networks
NETWORK_LISTENERS: list[Callable[[str, CdnNet], None]] = []


class CdnNet(NetPlan):
    """A built, running emulated CDN: its :class:`~testbed.net.net_plan.NetPlan` carried out. Use as a
    context manager so it always stops."""

    def __init__(self, topo: Topology, options: BuildOptions | None = None) -> None:
        super().__init__(topo, options)
        self.state: RunState | None = None
        self.net = None
        self.datapath = "user"
        self.link_mode = "none"
        self.controller_mode = "standalone"
        self.controller_proc: subprocess.Popen | None = None
        self.of_port = 0
        self.run_dir = Path(self.opts.run_dir) if self.opts.run_dir else None
        self.procs: dict[str, subprocess.Popen] = {}
        self.guard_routes: list[GuardRoute] = []
        self.relay_pool = None  # testbed.net.relay_pool.RelayPool, made with the first relayed link
        self.remote_relay_pools: dict[str, Any] = {}  # a run across servers: the relays on each other server
        self.link_checks: list | None = None  # testbed.net.linkverify.ClassCheck per link class (--verify-links)
        #: a TracePlayer (testbed.net.traces) per link whose spec names a bandwidth trace, by "a-b"
        self.trace_players: dict[str, Any] = {}
        #: the CDN services started in this network (testbed.net.launch.start_services), or None
        self.services: Any = None
        #: a run across servers (``options.servers``): the keeper of the run's record on each other server
        #: (testbed.net.remote_record), and this machine's address towards them (the controller's)
        self.records: dict[str, Any] = {}
        self.of_host = "127.0.0.1"
        #: held while a command runs in the hosts' Mininet shells from another thread than the main one (the
        #: dashboard's actions; the CLI takes it for each command): a shell takes one command at a time
        self.lock = threading.RLock()

    # -- life cycle ------------------------------------------------------------------------------
    def __enter__(self) -> CdnNet:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> CdnNet:
        if os.geteuid() != 0:
            raise PermissionError("building a network needs root: run with sudo")
        missing = host_env.emulation_missing()  # before anything is made: Mininet's own error is raw ovs-vsctl
        if missing:
            raise RuntimeError(f"cannot build the network: {missing}")
        from mininet.log import setLogLevel
        from mininet.net import Mininet

        setLogLevel(os.environ.get("CDNLAB_MININET_LOG", "warning"))
        check_no_overlap(self.topo)  # before anything is made: nothing to undo
        check_switch_names_free(self.topo)
        self.state = RunState.new(self.topo.name)
        if self.run_dir is None:
            self.run_dir = Path(tempfile.gettempdir()) / "cdnlab" / self.state.run_id
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.controller_mode = self._choose_controller()
        try:
            self.net = self._mininet(Mininet)
            self.datapath = self._choose_datapath()
            self.link_mode = self._choose_link_mode()
            if self.datapath == "user":
                self._raise_sysctls()
            self._guard_root_namespace()
            if self.controller_mode == "ryu":
                self._launch_controller()  # its imports overlap building the network
            self._add_nodes()
            self.net.build()
            host_env.offloads_off_network(self.net)
            self.state.add_pids([(h.pid, f"host {h.name}") for h in self.net.hosts if not _remote(h)])
            self.state.add_bridges([s.name for s in self.net.switches if not _remote(s)])
            for server, record in self.records.items():
                record.request(bridges=[s.name for s in self.net.switches if s.server == server],
                               hosts=[h.pid for h in self.net.hosts if h.server == server],
                               shells=[s.pid for s in self.net.switches if s.server == server])
            # the ssh sessions of the nodes on other servers, for `cdnlab clean` here after a SIGKILL
            self.state.add_pids([(n.shell.pid, f"ssh to {n.name} on {n.server}")
                                 for n in (*self.net.hosts, *self.net.switches) if _remote(n) and n.shell])
            if self.controller_mode == "ryu":
                self._publish_view()
            self.net.start()
            from testbed.net.links import finish_links

            finish_links(self.net)  # re-apply qdiscs OVS removed from its ports; verify every link
            if self.opts.verify_links:  # and measure them: configured is not yet behaving
                from testbed.net import linkverify
                from testbed.net.links import LinkEmulationError

                self.link_checks = linkverify.verify(self)
                problem = linkverify.failure(self.link_checks)
                if problem:
                    raise LinkEmulationError(problem)
            self._after_start()
            self._start_traces()
        except BaseException:
            self.stop()
            raise
        for listener in list(NETWORK_LISTENERS):
            try:
                listener("up", self)
            except Exception as e:  # noqa: BLE001 - a watcher's bug must not fail the build
                log.warning("network listener: %s", e)
        return self

    def stop(self) -> None:
        """Stop services, controller and network; restore sysctls; remove the state record."""
        if self.net is not None:
            for listener in list(NETWORK_LISTENERS):
                try:
                    listener("down", self)
                except Exception as e:  # noqa: BLE001 - a watcher's bug must not keep the network up
                    log.warning("network listener: %s", e)
        for name, p in list(self.procs.items()):
            self._terminate(p, name)
        self.procs.clear()
        for tp in self.trace_players.values():
            tp.stop()
        if self.net is not None:
            try:
                self.net.stop()
            except Exception as e:  # noqa: BLE001 - keep tearing down
                log.warning("mininet stop: %s", e)
            self.net = None
        if self.controller_proc is not None:
            self._terminate(self.controller_proc, "controller")
            self.controller_proc = None
        for server, record in list(self.records.items()):  # the other servers remove what they recorded
            try:
                record.close()
            except Exception as e:  # noqa: BLE001 - keep tearing down
                log.warning("the run's record on %s: %s", server, e)
        self.records.clear()
        if self.state is not None:
            from testbed.net.cleanup import clean_state

            clean_state(self.state, quiet=True)
            self.state = None

    # -- pieces ------------------------------------------------------------------------------------
    def _mininet(self, mininet_cls: type):
        """Mininet, or for a run across servers Mininet Cluster Edition (testbed.net.cluster) with the run's
        record on each other server; the first server must be this machine: the controller runs here."""
        if not self.opts.servers:
            return mininet_cls(topo=None, build=False, controller=None, autoSetMacs=False, waitConnected=False)
        from testbed.net.cluster import CdnCluster, is_local, management_address
        from testbed.net.remote_record import RemoteRecord

        servers = list(self.opts.servers)
        if not is_local(servers[0]):
            raise RuntimeError(f"run cdnlab on the first server of --servers ({servers[0]}): the controller "
                               "and the front end run there")
        net = CdnCluster(topo=None, build=False, controller=None, autoSetMacs=False, waitConnected=False,
                         servers=["localhost", *servers[1:]])
        self.of_host = management_address(servers)
        assert self.state is not None
        for server in servers[1:]:
            self.records[server] = record = RemoteRecord(server, self.state.run_id)
            record.request(guard=[str(n) for n in self.topo.networks()], topology=self.topo.name)
        return net

    def server_of(self, name: str) -> str:
        """The Mininet server of switch or host ``name``: ``localhost`` for this machine (the first server)."""
        if self.placement is None:
            return "localhost"
        server = self.placement.switch_server.get(name) or self.placement.host_server[name]
        return "localhost" if server == self.placement.servers[0] else server

    def _choose_controller(self) -> str:
        mode = self.opts.controller
        if mode == "auto":
            return "ryu" if ryu_available() else "standalone"
        if mode == "ryu" and not ryu_available():
            raise RuntimeError("the Ryu controller is not importable here (run `sudo make setup`)")
        if mode not in ("ryu", "standalone"):
            raise ValueError(f"controller must be auto, ryu or standalone, not {mode!r}")
        return mode

    def link_class(self, a: str | None = None, b: str | None = None, **kw: Any):
        """The Mininet link class for one link's params: plain veth, HTB rate, netem or relay; for a run
        across servers, one that may join two servers (the link's shaping at the tunnel's endpoints)."""
        from testbed.net import links

        cls = links.link_class_for(self.link_mode if self.link_mode != "none" else "auto", **kw)
        if self.placement is not None:
            from testbed.net.cluster import ClusterRelayLink, cluster_link_class

            if cls is not links.RelayLink:
                return cluster_link_class(cls)
            # the relay runs on the server of the link's second end (for a link between two servers, the
            # tunnel from the first end ends in it: testbed.net.cluster.ClusterRelayLink)
            server = self.server_of(b) if b is not None else "localhost"
            return partial(ClusterRelayLink, pool=self._relay_pool(server), outer_offloads=False)
        if cls is links.RelayLink:
            # the nodes' ends get their offloads off with every other interface, in host_env.offloads_off_network
            return partial(links.RelayLink, pool=self._relay_pool("localhost"), outer_offloads=False)
        return cls

    def _relay_pool(self, server: str):
        """The relay processes of the links on ``server`` (``localhost``: this machine's, ``relay_pool``)."""
        if server != "localhost":
            pool = self.remote_relay_pools.get(server)
            if pool is None:
                from testbed.net.relay_pool import RelayPool

                assert self.run_dir is not None
                pool = self.remote_relay_pools[server] = RelayPool(self.run_dir, self.state, self.opts.relay_procs,
                                                                   server=server)
            return pool
        if self.relay_pool is None:
            from testbed.net.relay_pool import RelayPool

            if self.opts.relay_procs is not None and self.opts.relay_procs < 1:
                raise ValueError(f"relay_procs must be >= 1, not {self.opts.relay_procs}")
            assert self.run_dir is not None
            self.relay_pool = RelayPool(self.run_dir, self.state, self.opts.relay_procs)
        return self.relay_pool

    def _servers_without(self, fact: str, what: str, flag: str, asked: str) -> bool:
        """Across servers: whether some other server lacks ``fact`` (testbed.net.servers.ServerFacts), so
        every server falls back to what all of them have; RuntimeError naming them if ``asked`` (the
        option's value) insisted on it with ``flag``."""
        facts = getattr(self.net, "facts", {})
        lacking = [s for s, f in facts.items() if not getattr(f, fact)]
        if lacking and asked != "auto":
            raise RuntimeError(f"{flag} {asked}: server {', '.join(lacking)} has no {what}")
        return bool(lacking)

    def _choose_datapath(self) -> str:
        """This machine's Open vSwitch datapath; across servers, the kernel's only if every server has it."""
        datapath = host_env.ovs_datapath(self.opts.datapath)
        if datapath == "kernel" and self._servers_without("kernel_ovs", "openvswitch module", "--datapath",
                                                           self.opts.datapath):
            datapath = "user"
        return datapath

    def _choose_link_mode(self) -> str:
        """netem or relay for links with delay/loss ('none' when no link needs either)."""
        emulated = [p for p in [*self.topo.links, *(h.link for h in self.topo.hosts)]
                    if p.delay_ms or p.delay_ms_ba or p.loss_pct or (p.queue_pkts is not None and not p.bw_mbit)]
        if not emulated:
            return "none"
        from testbed.net import links

        mode = links.choose_link_class(self.opts.links)
        # across servers: netem only if every server has it, else the relay on every server
        if mode == "netem" and self._servers_without("netem", "netem", "--links", self.opts.links):
            mode = "relay"
        return mode

    def _guard_root_namespace(self) -> None:
        """``unreachable`` routes in the root namespace for the topology's blocks, recorded before use."""
        assert self.state is not None
        self.guard_routes = add_guard_routes(self.topo.networks())
        self.state.add_routes([asdict(r) for r in self.guard_routes])

    def _raise_sysctls(self) -> None:
        """The userspace datapath's socket buffers, here and on every other server (restored on stop)."""
        assert self.state is not None
        for name, value in host_env.USERSPACE_SYSCTLS.items():
            old = host_env.read_sysctl(name)
            if int(old) < value:
                self.state.add_sysctl(name, old)
                host_env.write_sysctl(name, value)
        for record in self.records.values():
            record.request(sysctls=host_env.USERSPACE_SYSCTLS)

    def _add_nodes(self) -> None:
        from mininet.node import OVSSwitch

        assert self.net is not None
        plen = int(self.topo.subnet.split("/")[1])
        dpids = self.topo.dpids()
        if self.placement is not None:
            from testbed.net.cluster import ClusterSwitch as OVSSwitch  # noqa: N814 - the same role
        switch_cls = partial(
            OVSSwitch,
            datapath=self.datapath,
            protocols="OpenFlow13",
            failMode="secure" if self.controller_mode == "ryu" else "standalone",
        )
        def where(name: str) -> dict[str, str]:  # a run across servers: the node's server
            return {"server": self.server_of(name)} if self.placement is not None else {}

        for s in self.topo.switches:
            self.net.addSwitch(s.name, cls=switch_cls, dpid=f"{dpids[s.name]:016x}", **where(s.name))
        for h in self.topo.hosts:
            self.net.addHost(h.name, ip=f"{self.addresses[h.name]}/{plen}", mac=self.macs[h.name], **where(h.name))
        for h in self.topo.hosts:
            kw = link_kwargs(h.link)
            self.net.addLink(h.name, h.switch, cls=self.link_class(h.name, h.switch, **kw), **kw)
        for ln in self.topo.links:
            kw = link_kwargs(ln)
            self.net.addLink(ln.a, ln.b, cls=self.link_class(ln.a, ln.b, **kw), **kw)

    def _after_start(self) -> None:
        assert self.net is not None and self.state is not None
        switch_intfs = [i.name for s in self.net.switches if not _remote(s) for i in s.intfList() if i.name != "lo"]
        self.state.add_interfaces(switch_intfs)
        for server, record in self.records.items():
            record.request(interfaces=[i.name for s in self.net.switches if s.server == server
                                       for i in s.intfList() if i.name != "lo"])
        for h in self.net.hosts:  # hosts can send multicast (ingestion, invalidation, control groups)
            h.cmd("ip route replace 224.0.0.0/4 dev", h.defaultIntf().name)
        for a in self.topo.anycast:
            for m in a.members:
                node = self.host(m)
                node.cmd("ip addr add", f"{a.vip}/32", "dev lo")
                # only the controller answers ARP for the VIP
                node.cmd("sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2")
        if self.controller_mode == "standalone" and self.topo.has_cycle():
            self._enable_rstp()
        if self.controller_mode == "ryu":
            # the controller's word that every switch connected and synced is the proof; Mininet's
            # waitConnected reads OVSDB's is_connected, which ovs-vswitchd refreshes only every few seconds
            self._wait_controller_ready()
        else:
            self.net.waitConnected(timeout=self.opts.connect_timeout)

    def _start_traces(self) -> None:
        """Play each link's bandwidth trace (``trace:`` in the spec) on the built link, both directions."""
        from testbed.net.traces import TracePlayer, load_trace

        assert self.net is not None
        ends = [(h.name, h.switch, h.link) for h in self.topo.hosts] + [(x.a, x.b, x) for x in self.topo.links]
        for a, b, params in ends:
            if params.trace is None:
                continue
            link = self.net.linksBetween(self.net[a], self.net[b])[0]
            self.trace_players[f"{a}-{b}"] = TracePlayer(load_trace(params.trace), link.set_rate, f"{a}-{b}").start()

    def _enable_rstp(self) -> None:
        assert self.net is not None
        host_ports = {h.switch for h in self.topo.hosts}
        for s in self.net.switches:
            s.vsctl("set Bridge", s.name, "rstp_enable=true")
            if s.name in host_ports:
                for intf in s.intfList():
                    peer = intf.link.intf1 if intf.link and intf.link.intf2 is intf else (
                        intf.link.intf2 if intf.link else None)
                    if peer is not None and peer.node in self.net.hosts:
                        s.vsctl("set Port", intf.name, "other_config:rstp-port-admin-edge=true")

    # -- controller --------------------------------------------------------------------------------
    def ports(self) -> dict[tuple[str, str], int]:
        """(node, neighbour) -> port: :func:`port_numbers`; once built, checked against Mininet's own."""
        ports = super().ports()
        if self.net is None:
            return ports
        pairs = [(h.name, h.switch) for h in self.topo.hosts] + [(ln.a, ln.b) for ln in self.topo.links]
        for a, b in pairs:
            na, nb = self.net.get(a), self.net.get(b)
            ia, ib = na.connectionsTo(nb)[0]
            built = {(a, b): na.ports[ia], (b, a): nb.ports[ib]}
            for k, v in built.items():
                if ports[k] != v:
                    raise RuntimeError(f"the plan gave {k[0]}'s port towards {k[1]} number {ports[k]}, "
                                       f"Mininet gave it {v}")
        return ports

    #: how long the controller waits for the view: building a large topology takes minutes
    VIEW_WAIT_S = 900.0

    def _launch_controller(self) -> None:
        """Start the Ryu controller before the network is built: it imports its framework meanwhile and
        waits for the view, which :meth:`_publish_view` writes once Mininet knows the port numbers."""
        assert self.state is not None and self.run_dir is not None
        self.of_port = free_port()
        self.rest_port = free_port()
        view_path = self.run_dir / "netview.json"
        view_path.unlink(missing_ok=True)  # a view left by an earlier run in this directory is not ours
        logf = open(self.run_dir / "controller.out", "wb")  # noqa: SIM115 - owned by the process
        self.controller_proc = subprocess.Popen(
            [sys.executable, "-m", "controller", "--view", str(view_path), "--log",
             str(self.run_dir / "controller.log"), "--of-host", self.of_host, "--of-port", str(self.of_port),
             "--rest-port", str(self.rest_port), "--view-wait", f"{self.VIEW_WAIT_S:g}",
             *(["--submission", str(self.opts.controller_submission)] if self.opts.controller_submission else [])],
            stdout=logf, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.state.add_pid(self.controller_proc.pid, "controller")

    def _publish_view(self) -> None:
        """Write the network view (whole, by rename) for the waiting controller and wait until it listens."""
        assert self.run_dir is not None and self.net is not None
        view_path = self.run_dir / "netview.json"
        tmp = view_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.netview(), indent=1))
        tmp.replace(view_path)

        def listening() -> bool:
            if self.controller_proc is not None and self.controller_proc.poll() is not None:
                raise RuntimeError(f"controller exited; see {self.run_dir}/controller.out")
            return tcp_open(self.of_host, self.of_port)

        wait_until(listening, self.opts.connect_timeout, 0.02, what="controller listening for OpenFlow")
        # registered by name too: Mininet's CLI walks every node, controllers included
        self.net.addController(CONTROLLER_NODE, controller=waited_remote_controller(), ip=self.of_host,
                               port=self.of_port)

    def rest(self, path: str, method: str = "GET", body: dict | None = None) -> Any:
        """Call the controller's REST API (loopback only)."""
        import urllib.request

        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"http://127.0.0.1:{self.rest_port}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as r:  # noqa: S310 - loopback only
            return json.loads(r.read() or b"null")

    def _wait_controller_ready(self) -> None:
        want = {s.name for s in self.topo.switches}

        def ready() -> bool:
            if self.controller_proc is not None and self.controller_proc.poll() is not None:
                raise RuntimeError(f"controller exited; see {self.run_dir}/controller.out")
            topo = self.rest("/topology")
            have = {s.get("name") for s in topo.get("switches", [])
                    if s.get("connected", True) and s.get("synced", True)}
            links_up = all(ln.get("up", True) for ln in topo.get("links", []))
            return want <= have and links_up

        wait_until(ready, self.opts.connect_timeout, 0.1,
                   what="every switch connected to and synced with the controller, every link up")

    # -- helpers for users of the net ----------------------------------------------------------------
    def host(self, name: str):
        """The Mininet host ``name``, to run commands in: NamespaceError unless it is an emulated host in
        its own network namespace (never the controller node or a switch, which live in the root one)."""
        assert self.net is not None
        return require_namespaced(self.net.nameToNode.get(name), name)

    def node(self, name: str):
        """Any node (host or switch) by name, for its interfaces and links; run commands with :meth:`host`."""
        assert self.net is not None
        return self.net.get(name)

    def hosts_with(self, role: Role | str):
        return [self.host(h.name) for h in self.topo.hosts_with(role)]

    def popen(self, host: str, cmd: list[str], role: str, log_name: str | None = None) -> subprocess.Popen:
        """Start a tracked process inside ``host``, its output to a log file in the run directory."""
        assert self.state is not None and self.run_dir is not None
        logf = open(self.run_dir / (log_name or f"{host}-{role}.out"), "ab")  # noqa: SIM115
        # mnexec -d (Mininet's popen) already starts a new session; start_new_session=True would make it
        # fork, so the PID we track would not be the process we started
        p = self.host(host).popen(cmd, stdout=logf, stderr=subprocess.STDOUT)
        self.state.add_pid(p.pid, f"{role} on {host}")
        self.procs[f"{host}:{role}"] = p
        return p

    def _terminate(self, p: subprocess.Popen, name: str, timeout: float = 5.0) -> None:
        if stop_process(p, timeout) is None:
            log.warning("%s could not be reaped", name)
        if self.state is not None:
            self.state.forget_pid(p.pid)

    def ping_rtt_ms(self, src: str, dst_ip: str, count: int = 5, interval: float = 0.05) -> float | None:
        """Median RTT in ms of ``count`` pings from ``src`` to ``dst_ip`` (None if none answered)."""
        from testbed.measure import ping

        return ping.median(ping.rtts(self.host(src), dst_ip, count, interval))

    def reachable_from(self, src: str, dsts: list[str], wait_s: float = 2.0) -> set[str]:
        """Names among ``dsts`` that answer one ping from ``src`` (all pinged in parallel)."""
        ips = {self.ip(d): d for d in dsts if d != src}
        return {ips[ip] for ip in reachable_ips(self.host(src), list(ips), wait_s)}

    def wait_all_reachable(self, timeout: float = 30.0, names: list[str] | None = None) -> None:
        """Poll until every host in ``names`` (default: all) answers a ping from every other one."""
        names = names or [h.name for h in self.topo.hosts]
        todo = {a: set(names) - {a} for a in names}
        deadline = time.monotonic() + timeout
        while any(todo.values()):
            for a in names:
                if todo[a]:
                    todo[a] -= self.reachable_from(a, sorted(todo[a]))
            if any(todo.values()) and time.monotonic() > deadline:
                missing = [(a, b) for a, bs in todo.items() for b in sorted(bs)]
                raise TimeoutError(f"not reachable within {timeout}s: {missing[:6]} ({len(missing)} pairs)")
