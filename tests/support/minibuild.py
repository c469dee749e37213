"""A minimal Mininet network from a :class:`NetView`, for the controller's own Mininet-tier tests.

Test support, as faucet keeps ``clib/`` apart: the product's builder is ``testbed/net/build.py`` (benchmarks
and graders use that one); this one only wires switches (Open vSwitch on the given
datapath, userspace by default; OpenFlow 1.3, ports numbered as in the view), hosts (IP/MAC from the view), a remote controller on 127.0.0.1,
and turns TX offloads off (TCP stalls on the userspace datapath otherwise). Anycast members get the VIP
on their loopback (and ARP hardening: arp_ignore=1, arp_announce=2, as for direct server return).
Needs root. Always call ``net.stop()``.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import urllib.request
from functools import partial
from pathlib import Path
from typing import Any

from contract.netview import NetView
from testbed.measure.host_programs import HTTP_SERVER, MCAST_RECEIVER, MCAST_SENDER

__all__ = ["HTTP_SERVER", "MCAST_RECEIVER", "MCAST_SENDER", "Lab", "build", "dump_flows", "dump_group_ids",
           "ovs_connected"]


def offloads_off(net: Any) -> None:
    for h in net.hosts:
        for intf in h.intfList():
            if intf.name != "lo":
                h.cmd(f"ethtool -K {intf.name} tx off tso off gso off >/dev/null 2>&1")
    for s in net.switches:
        for intf in s.intfList():
            if intf.name != "lo":
                subprocess.run(
                    ["ethtool", "-K", intf.name, "tx", "off", "tso", "off", "gso", "off"],
                    capture_output=True,
                    check=False,
                )


def build(view: NetView, of_port: int, prefix_check: str = "hc", datapath: str = "user") -> Any:
    """Build and start the network; returns the started Mininet object. ``datapath``: 'user' or 'kernel'."""
    from mininet.net import Mininet
    from mininet.node import OVSSwitch

    from testbed.net.build import waited_remote_controller

    for n in [s.name for s in view.switches] + [h.name for h in view.hosts]:
        if not n.startswith(prefix_check):
            raise ValueError(
                f"node name {n!r} must start with {prefix_check!r} (avoid clashes on this machine)"
            )
    net = Mininet(
        topo=None,
        build=False,
        controller=None,
        autoSetMacs=False,
        autoStaticArp=False,
        switch=partial(OVSSwitch, datapath=datapath, protocols="OpenFlow13"),
    )
    net.addController(
        f"{prefix_check}ctl{of_port}", controller=waited_remote_controller(), ip="127.0.0.1", port=of_port
    )
    for s in view.switches:
        net.addSwitch(s.name, dpid=f"{s.dpid:016x}", failMode="secure")
    for h in view.hosts:
        net.addHost(h.name, ip=f"{h.ip}/24", mac=h.mac)
    for link in view.links:
        net.addLink(link.a, link.b, port1=link.a_port, port2=link.b_port)
    for h in view.hosts:
        net.addLink(h.name, h.switch, port2=h.port)
    net.build()
    net.start()
    offloads_off(net)
    for a in view.anycast:
        for m in a.members:
            node = net.get(m)
            node.cmd(f"ip addr add {a.vip}/32 dev lo")
            node.cmd("sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2")
    for h in net.hosts:
        h.cmd(f"ip route add 224.0.0.0/4 dev {h.defaultIntf().name}")
    return net


class ControllerProc:
    """``python -m controller`` as a child process on fixed ports, so tests can kill it and start a new one
    with the same view (the switches reconnect to the same OpenFlow port)."""

    def __init__(self, view: NetView, workdir: Path, of_port: int, rest_port: int, *extra: str) -> None:
        self.view_path = workdir / "view.json"
        self.view_path.write_text(json.dumps(view.model_dump(mode="json")))
        self.log = workdir / "controller.log"
        self.of_port, self.rest_port, self.extra = of_port, rest_port, extra
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> None:
        """Start a controller (the log is appended to, one file for every run)."""
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("controller already running")
        self.starts += 1
        args = ["--view", str(self.view_path), "--of-port", str(self.of_port), "--log", str(self.log)]
        args += ["--rest-port", str(self.rest_port), *self.extra]
        self.proc = subprocess.Popen([sys.executable, "-m", "controller", *args])

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, the switches just see the TCP connection drop."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        from testbed.util import stop_process

        if self.proc is not None:
            stop_process(self.proc, 10)

    def rest(self, path: str, body: dict | None = None) -> Any:
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.rest_port}{path}",
            data=None if body is None else json.dumps(body).encode(),
            method="GET" if body is None else "POST",
        )
        with urllib.request.urlopen(req, timeout=3) as r:
            return json.loads(r.read())


class Lab:
    """A view, its controller process and its Mininet network, started and torn down together.

    Used by the controller's Mininet-tier tests: ``start()`` starts the controller, builds the network
    and waits until every switch is connected and synced; ``popen`` tracks what runs in hosts so that
    ``close()`` stops exactly that, then the network, then the controller.
    """

    def __init__(
        self, view: NetView, workdir: Path, prefix_check: str, *controller_args: str, datapath: str = "user"
    ) -> None:
        from testbed.util import free_port

        self.tmp, self.view, self.prefix_check, self.datapath = workdir, view, prefix_check, datapath
        self.ctl = ControllerProc(view, workdir, free_port(), free_port(), *controller_args)
        self.net: Any = None
        self.procs: list[subprocess.Popen] = []

    def start(self, timeout: float = 20) -> Lab:
        from testbed.util import wait_tcp, wait_until

        self.ctl.start()
        wait_tcp("127.0.0.1", self.ctl.rest_port, timeout=timeout)
        self.net = build(self.view, self.ctl.of_port, prefix_check=self.prefix_check, datapath=self.datapath)
        wait_until(self.all_synced, timeout, what="switches connected and synced")
        return self

    def all_synced(self) -> bool:
        return all(s["connected"] and s["synced"] for s in self.ctl.rest("/topology")["switches"])

    def popen(self, host: str, args: list[str], **kw: Any) -> subprocess.Popen:
        from testbed.net.containment import require_namespaced

        p = require_namespaced(self.net.get(host), host).popen(args, **kw)
        self.procs.append(p)
        return p

    def close(self) -> None:
        for p in self.procs:
            p.kill()
            p.wait()
        if self.net is not None:
            self.net.stop()
        self.ctl.stop()


def ovs_connected(bridge: str) -> bool:
    """Whether OVS reports ``bridge``'s (single) controller connection as up."""
    r = subprocess.run(
        ["ovs-vsctl", "--bare", "get", "bridge", bridge, "controller"], capture_output=True, text=True
    )
    uuid = r.stdout.strip()
    if r.returncode != 0 or not uuid:
        return False
    r = subprocess.run(
        ["ovs-vsctl", "--bare", "get", "controller", uuid, "is_connected"], capture_output=True, text=True
    )
    return r.stdout.strip() == "true"


def dump_flows(bridge: str) -> list[str]:
    """``ovs-ofctl dump-flows`` lines (OpenFlow 1.3, no statistics)."""
    r = subprocess.run(
        ["ovs-ofctl", "-O", "OpenFlow13", "--no-stats", "dump-flows", bridge],
        capture_output=True,
        text=True,
        check=True,
    )
    return [ln.strip() for ln in r.stdout.splitlines() if ln.strip() and "OFPST_FLOW" not in ln]


def dump_group_ids(bridge: str) -> list[int]:
    r = subprocess.run(
        ["ovs-ofctl", "-O", "OpenFlow13", "dump-groups", bridge], capture_output=True, text=True, check=True
    )
    return sorted(int(m) for m in re.findall(r"group_id=(\d+)", r.stdout))
