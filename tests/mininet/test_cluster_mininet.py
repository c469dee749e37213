"""Mininet Cluster Edition through cdnlab's adapter (testbed.net.cluster), across this machine and a second
server of its own (tests/support/second_server.py): a network built on both, traffic through the SSH tunnel
between them, and nothing left on either after it stops."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from second_server import HOSTNAME

pytestmark = [pytest.mark.mininet, pytest.mark.cluster]


def _taps_and_tunnels() -> tuple[str, str]:
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    tunnels = subprocess.run(["pgrep", "-af", "Tunnel=Ethernet"], capture_output=True, text=True).stdout
    return " ".join(ln.split(":")[1].strip() for ln in links.splitlines() if "tap9" in ln or "cl-" in ln), tunnels


def test_a_network_across_two_servers_carries_traffic_and_leaves_nothing(second_server) -> None:
    from mininet.topo import Topo

    from testbed.net.cluster import CdnCluster

    srv = second_server
    shared = Path.home() / ".ssh" / "mn"  # where MininetCluster would keep shared connections
    had_shared = shared.exists()

    class TwoServers(Topo):
        def build(self) -> None:
            for i, server in ((1, "localhost"), (2, srv.address)):
                self.addSwitch(f"cl-s{i}", server=server, datapath="user", failMode="standalone", dpid=f"{i:016x}")
                self.addHost(f"cl-h{i}", server=server, ip=f"10.77.0.{i}/24")
                self.addLink(f"cl-h{i}", f"cl-s{i}")
            self.addLink("cl-s1", "cl-s2")  # between the servers: an SSH Ethernet tunnel

    net = CdnCluster(topo=TwoServers(), servers=["localhost", srv.address], controller=None, autoSetMacs=True)
    try:
        net.start()
        h1, h2 = net.get("cl-h1"), net.get("cl-h2")
        assert h2.cmd("hostname").strip() == HOSTNAME and h1.cmd("hostname").strip() != HOSTNAME
        assert "cl-s2" in srv.in_server("ovs-vsctl", "list-br").stdout  # the remote switch is the server's
        assert "cl-s2" not in subprocess.run(["ovs-vsctl", "list-br"], capture_output=True, text=True).stdout
        out = h1.cmd("ping -c 3 -W 2 10.77.0.2")
        assert " 0% packet loss" in out, out
        out = h2.cmd("ping -c 1 -W 2 10.77.0.1")
        assert " 0% packet loss" in out, out
    finally:
        net.stop()
    assert "cl-" not in subprocess.run(["ovs-vsctl", "list-br"], capture_output=True, text=True).stdout
    assert srv.in_server("ovs-vsctl", "list-br").stdout.strip() == ""
    assert _taps_and_tunnels() == ("", "")
    server_links = srv.in_server("ip", "-o", "link", "show").stdout
    assert "tap9" not in server_links and "cl-" not in server_links
    assert shared.exists() == had_shared  # the user's SSH set-up untouched


def test_a_server_without_an_address_or_answer_is_refused_naming_it(second_server) -> None:
    from testbed.net.cluster import CdnCluster

    with pytest.raises(RuntimeError, match="no address for server nohost.invalid"):
        CdnCluster(servers=["localhost", "nohost.invalid"], controller=None)
    second_server.stop()  # the server is gone: its address answers nothing
    with pytest.raises(RuntimeError, match=f"servers not reached: {second_server.address}"):
        CdnCluster(servers=["localhost", second_server.address], controller=None)
