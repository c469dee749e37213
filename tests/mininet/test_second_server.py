"""The cluster tests' second server (tests/support/second_server.py) is a server of its own: reached over SSH
on its LAN address, with its own host name and its own Open vSwitch database, and gone without a trace."""

from __future__ import annotations

import subprocess

import pytest
from second_server import HOSTNAME, SecondServer

from testbed.net import servers

pytestmark = [pytest.mark.mininet, pytest.mark.cluster]


def _ovs_daemons() -> set[int]:
    out = subprocess.run(["pgrep", "-x", "ovs-vswitchd"], capture_output=True, text=True).stdout
    return {int(p) for p in out.split()}


def test_the_second_server_is_a_server_of_its_own(tmp_path, monkeypatch) -> None:
    before = _ovs_daemons()
    srv = SecondServer(tmp_path)
    try:
        srv.start()
        monkeypatch.setenv("CDNLAB_SSH_CONFIG", str(srv.config))
        f = servers.probe(srv.address)
        assert f.reached, f.error
        local = servers.probe("localhost")
        assert f.hostname == HOSTNAME != local.hostname
        assert f.ovs_running and f.mininet == local.mininet and f.root
        assert abs(f.clock_offset_ms) <= f.clock_error_ms + 0.5
        assert len(_ovs_daemons() - before) == 1  # its own ovs-vswitchd
        # its own database: a bridge made there over SSH is not in this machine's
        made = subprocess.run([*servers.command(srv.address, ["ovs-vsctl", "add-br", "cdltest", "--", "set", "bridge",
                                                              "cdltest", "datapath_type=netdev"])],
                              capture_output=True, text=True, timeout=60)
        assert made.returncode == 0, made.stderr
        assert srv.in_server("ovs-vsctl", "br-exists", "cdltest").returncode == 0
        assert subprocess.run(["ovs-vsctl", "br-exists", "cdltest"], timeout=30).returncode == 2
        # its own processes: what runs there sees the sshd as its first process, and nothing of this machine
        first = subprocess.run(servers.command(srv.address, ["cat", "/proc/1/cmdline"]), capture_output=True,
                               text=True, timeout=60).stdout
        assert "sshd" in first, first
        # and its own network: the LAN is all it has besides loopback
        links = srv.in_server("ip", "-o", "link", "show").stdout
        assert srv.veth[1] in links and srv.veth[0] not in links
    finally:
        srv.stop()
    assert _ovs_daemons() == before
    assert srv.netns not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert subprocess.run(["ip", "link", "show", srv.veth[0]], capture_output=True).returncode != 0
