"""A minimal Mininet network from a :class:`NetView`, for the controller's own tests and benchmark.

The real topology builder is ``testbed/net/``; this one only wires switches (userspace OVS, OpenFlow
1.3, ports numbered as in the view), hosts (IP/MAC from the view), a remote controller on 127.0.0.1,
and turns TX offloads off (TCP stalls on the userspace datapath otherwise). Anycast members get the VIP
on their loopback (and ARP hardening: arp_ignore=1, arp_announce=2, as for direct server return).
Needs root. Always call ``net.stop()``.
"""

from __future__ import annotations

import subprocess
from functools import partial
from typing import Any

from controller.netview import NetView


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


def build(view: NetView, of_port: int, prefix_check: str = "hc") -> Any:
    """Build and start the network; returns the started Mininet object."""
    from mininet.net import Mininet
    from mininet.node import OVSSwitch, RemoteController

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
        switch=partial(OVSSwitch, datapath="user", protocols="OpenFlow13"),
    )
    net.addController(
        f"{prefix_check}ctl{of_port}", controller=RemoteController, ip="127.0.0.1", port=of_port
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


HTTP_SERVER = r"""
import http.server, socket, sys
name = sys.argv[1]
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so tests can hold a connection across a change
    def do_GET(self):
        body = name.encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
class S(http.server.ThreadingHTTPServer):
    allow_reuse_address = True
S(("0.0.0.0", int(sys.argv[2])), H).serve_forever()
"""
