"""A CDN across two servers (``--servers``; issue "Beyond one machine"): this machine and a second server of
its own (tests/support/second_server.py). The builder places the spec's switches (``server:`` on each
region here), builds them with Mininet Cluster Edition, runs the controller on this machine at its LAN
address, starts the services on both servers through the same launcher, and leaves nothing on either
server after it stops, or after its front end is killed with SIGKILL.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from second_server import HOSTNAME

from testbed.net.spec import load_topology

pytestmark = [pytest.mark.mininet, pytest.mark.cluster]

REPO = Path(__file__).resolve().parents[2]

#: two PoPs, one per server; the links carry no delay (this kernel has no netem, and the relay runs on the
#: first server only for now), so every link is a plain veth pair or, between the servers, the SSH tunnel
TOPOLOGY = """\
name: twoserv
subnet: 10.0.0.0/24
regions:
  - {name: east, server: 0}
  - {name: west, server: 1}
switches:
  - {name: k1, region: east}
  - {name: k2, region: west}
links:
  - {a: k1, b: k2}
hosts:
  - {name: origin, role: origin, region: east, switch: k1}
  - {name: e1, role: edge, region: east, switch: k1}
  - {name: e2, role: edge, region: west, switch: k2}
  - {name: c1, role: client, region: east, switch: k1}
  - {name: c2, role: client, region: west, switch: k2}
  - {name: dns1, role: dns, region: east, switch: k1, params: {level: both}}
  - {name: res1, role: resolver, region: east, switch: k1}
  - {name: redir, role: redirector, region: west, switch: k2}
anycast:
  - {name: http, vip: 10.0.0.200, port: 80, members: [e1, e2]}
"""


def _server_now(srv) -> dict[str, object]:
    """What is on the second server: bridges, interfaces, run records, guard routes, processes."""
    return {
        "bridges": srv.in_server("ovs-vsctl", "--timeout=5", "list-br").stdout.split(),
        "links": sorted(ln.split(":")[1].strip().split("@")[0]
                        for ln in srv.in_server("ip", "-o", "link", "show").stdout.splitlines()),
        "records": srv.in_server("ls", "/run/cdnlab").stdout.split(),
        "routes": srv.in_server("ip", "route", "show", "proto", "205").stdout.split("\n")[:-1],
        # the server's own /proc (its PID namespace's): the shell reading it shows up as `cat`
        "processes": sorted(p for p in srv.in_server("sh", "-c", "cat /proc/[0-9]*/comm 2>/dev/null").stdout.split()
                            if p != "cat"),
    }


def _as_before(before: dict, now: dict) -> bool:
    return now == before


def _diff(before: dict, now: dict) -> dict:
    """What differs from ``before`` (processes: those added)."""
    out = {k: now[k] for k in now if k != "processes" and now[k] != before[k]}
    extra = list(now["processes"])
    for p in before["processes"]:
        if p in extra:
            extra.remove(p)
    return out | ({"processes added": extra} if extra else {})


def _wait_as_before(srv, before: dict, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        now = _server_now(srv)
        if _as_before(before, now) or time.monotonic() > deadline:
            return now
        time.sleep(0.5)


@pytest.fixture
def topo_file(tmp_path: Path) -> Path:
    p = tmp_path / "twoserv.yaml"
    p.write_text(TOPOLOGY)
    return p


def test_a_cdn_across_two_servers_serves_every_client_from_every_edge_and_leaves_nothing(
        second_server, cdn_net, topo_file) -> None:
    from testbed.net.launch import start_services

    srv = second_server
    before = _server_now(srv)
    assert not before["bridges"] and not before["records"], before
    cn = cdn_net(load_topology(str(topo_file)), servers=("localhost", srv.address), controller="ryu")
    assert cn.placement is not None and cn.placement.host_server["c2"] == srv.address
    assert cn.host("c2").cmd("hostname").strip() == HOSTNAME  # the west PoP runs on the second server
    assert cn.host("c1").cmd("hostname").strip() != HOSTNAME
    during = _server_now(srv)
    assert during["bridges"] == ["k2"] and len(during["records"]) == 1, during
    assert any("10.0.0.0/24" in r for r in during["routes"]), during  # its root namespace guarded too
    cn.wait_all_reachable(30)

    # the controller listens on this machine's LAN address only, and no emulated host reaches it
    assert cn.of_host == srv.lan[0]
    listening = subprocess.run(["ss", "-ltnH", f"sport = :{cn.of_port}"], capture_output=True, text=True).stdout
    assert [ln.split()[3] for ln in listening.splitlines()] == [f"{srv.lan[0]}:{cn.of_port}"], listening
    for host in ("c1", "c2"):
        out = cn.host(host).cmd(f"timeout 3 bash -c 'echo > /dev/tcp/{srv.lan[0]}/{cn.of_port}' "
                                "2>/dev/null && echo OPEN || echo CLOSED")
        assert out.strip().endswith("CLOSED"), (host, out)

    svc = start_services(cn)
    assert svc.origin == "origin"
    catalog = json.loads(cn.host("c2").cmd(f"curl -s -m 5 http://{cn.ip('origin')}/_origin/catalog"))
    objects = catalog["objects"] if isinstance(catalog, dict) else catalog
    path = next(o["path"] for o in objects if o.get("size", 0) <= 256 * 1024)
    for client in ("c1", "c2"):
        for edge in ("e1", "e2"):
            code = cn.host(client).cmd(
                f"curl -s -m 10 -o /dev/null -w '%{{http_code}}' http://{cn.ip(edge)}{path}").strip()
            assert code == "200", (client, edge, code)
    # the west client's anycast request goes to the nearest member: the edge on its own server
    served = cn.host("c2").cmd(f"curl -s -m 10 -o /dev/null -D - http://10.0.0.200{path}")
    assert "200" in served.splitlines()[0], served

    cn.stop()
    after = _wait_as_before(srv, before, timeout=10)
    assert _as_before(before, after), _diff(before, after)
    local = subprocess.run(["ovs-vsctl", "list-br"], capture_output=True, text=True).stdout.split()
    assert "k1" not in local and "k2" not in local


FRONT_END = """
import sys, time
from testbed.net.build import BuildOptions, CdnNet
from testbed.net.launch import start_services
from testbed.net.spec import load_topology
cn = CdnNet(load_topology(sys.argv[1]), BuildOptions(servers=("localhost", sys.argv[2]), controller="ryu"))
cn.start()
start_services(cn)
print("UP", flush=True)
time.sleep(600)
"""


def test_sigkill_of_the_front_end_leaves_nothing_on_the_other_server_and_clean_removes_the_rest(
        second_server, topo_file) -> None:
    srv = second_server
    before = _server_now(srv)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-c", FRONT_END, str(topo_file), srv.address], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = ""
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            line = proc.stdout.readline()
            if line.startswith("UP"):
                break
        assert line.startswith("UP"), f"the front end did not come up: {line}{proc.stdout.read() if proc.poll() else ''}"
        during = _server_now(srv)
        assert during["bridges"] == ["k2"] and during["records"], during
        assert len(during["processes"]) > len(before["processes"]), during  # host shells, services, keeper
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        # the keeper on the second server read the end of its input and removed the run there
        after = _wait_as_before(srv, before, timeout=60)
        assert _as_before(before, after), _diff(before, after)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        # this machine's half: `cdnlab clean`, and `--servers` finds nothing left on the second server
        cleaned = subprocess.run([sys.executable, "-m", "testbed.net.cleanup", "--servers",
                                  f"localhost,{srv.address}"], env=env, cwd=REPO, capture_output=True, text=True,
                                 timeout=180)
    assert cleaned.returncode == 0, cleaned.stdout + cleaned.stderr
    assert "bridge k1" in cleaned.stdout, cleaned.stdout
    assert f"{srv.address}: cdnlab clean: nothing to remove" in cleaned.stdout, cleaned.stdout
    local = subprocess.run(["ovs-vsctl", "list-br"], capture_output=True, text=True).stdout.split()
    assert "k1" not in local
