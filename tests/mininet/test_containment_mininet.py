"""Emulated traffic never leaves the emulation (issue: real topologies; testbed.net.containment).

Nothing here sends a packet from the root namespace to an emulated address: route lookups (`ip route get`)
show where such a packet would go, and the uplink is only listened to.
"""

from __future__ import annotations

import json
import select
import signal
import subprocess
import uuid
from pathlib import Path

import pytest

from testbed.net import host_env
from testbed.net.build import BuildOptions, CdnNet
from testbed.net.containment import NamespaceError, guard_routes
from testbed.net.spec import load_topology
from testbed.net.state import all_states

pytestmark = pytest.mark.mininet
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "zoo"


def _route_get(addr: str) -> subprocess.CompletedProcess[str]:
    """Where the root namespace would send a packet for ``addr`` (a lookup: nothing is sent)."""
    return subprocess.run(["ip", "route", "get", addr], capture_output=True, text=True)


def _guard_routes() -> set[tuple[str, int]]:
    return {(r.dst, r.metric) for r in guard_routes()}


def _uplink() -> str | None:
    out = host_env.run(["ip", "-j", "route", "show", "default"]).stdout
    routes = json.loads(out or "[]")
    return routes[0].get("dev") if routes else None


def _add_spare_interface(name: str) -> None:
    """An interface in the root namespace that carries no traffic (a veth pair left down: this kernel may
    lack the dummy module); deleting it deletes its peer."""
    subprocess.run(["ip", "link", "add", name, "type", "veth", "peer", "name", name + "p"], check=True)


def test_root_namespace_has_no_route_into_the_emulation_while_it_is_up(cdn_net) -> None:
    cn = cdn_net("mini")
    origin = cn.ip("origin")
    r = _route_get(origin)
    assert r.returncode != 0 and "No route to host" in r.stderr, r.stdout + r.stderr
    vip = cn.topo.anycast[0].vip
    assert _route_get(vip).returncode != 0
    mine = {(g.dst, g.metric) for g in cn.guard_routes}
    assert mine == {("10.0.0.0/24", g.metric) for g in cn.guard_routes} and mine <= _guard_routes()
    assert [{"dst": d, "metric": m} for d, m in mine] == cn.state.routes
    # host commands only ever run in hosts; the controller node and switches live in the root namespace
    assert "1 received" in cn.host("c1").cmd(f"ping -c1 -W2 {origin}")
    for name in ("c0", "s1"):
        with pytest.raises(NamespaceError, match=f"'{name}' is not an emulated host"):
            cn.host(name)
    cn.stop()
    assert not mine & _guard_routes()
    assert _route_get(origin).returncode == 0 or "No route to host" not in _route_get(origin).stderr


def test_a_topology_overlapping_a_machine_network_is_refused_before_anything_is_built() -> None:
    """A network on one of this machine's interfaces (a spare one here, carrying no traffic) overlaps the
    topology: the build is refused naming both, and nothing is left behind."""
    dummy = f"cdnlabd{uuid.uuid4().hex[:6]}"
    _add_spare_interface(dummy)
    try:
        subprocess.run(["ip", "addr", "add", "10.251.0.250/24", "dev", dummy], check=True)
        topo = load_topology("mini", subnet="10.251.0.0/24")
        before = ({s.run_id for s in all_states()}, set(host_env.run(["ovs-vsctl", "list-br"]).stdout.split()))
        with pytest.raises(RuntimeError) as ei:
            CdnNet(topo, BuildOptions()).start()
        msg = str(ei.value)
        assert f"topology mini: 10.251.0.0/24 overlaps 10.251.0.0/24 on {dummy}" in msg
        assert "move it with --subnet 10." in msg
        after = ({s.run_id for s in all_states()}, set(host_env.run(["ovs-vsctl", "list-br"]).stdout.split()))
        assert after == before
    finally:
        subprocess.run(["ip", "link", "del", dummy], check=False)


def test_cdnlab_up_refuses_an_overlap_and_takes_subnet() -> None:
    import sys

    root = Path(__file__).resolve().parents[2]
    dummy = f"cdnlabd{uuid.uuid4().hex[:6]}"
    _add_spare_interface(dummy)
    try:
        subprocess.run(["ip", "addr", "add", "10.0.0.250/24", "dev", dummy], check=True)  # mini's own block
        r = subprocess.run([sys.executable, "-m", "testbed.cli", "up", "mini", "--no-cli", "--no-services"],
                           cwd=root, capture_output=True, text=True, timeout=300)
        assert r.returncode == 1 and f"10.0.0.0/24 overlaps 10.0.0.0/24 on {dummy}" in r.stderr, r.stderr
        r = subprocess.run([sys.executable, "-m", "testbed.cli", "up", "mini", "--no-cli", "--no-services",
                            "--subnet", "10.252.0.0/24"], cwd=root, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        assert "mini is up" in r.stdout and "anycast http: 10.252.0.200:80" in r.stdout, r.stdout
    finally:
        subprocess.run(["ip", "link", "del", dummy], check=False)


@pytest.mark.parametrize("graph", ["Minizoo", "Plainzoo"])
def test_an_imported_zoo_topology_runs_selection_and_nothing_leaves_through_the_uplink(tmp_path, graph) -> None:
    """The reported failures, on small zoo graphs of our own: ``Minizoo`` has coordinates, countries,
    parallel edges, a self-loop and a disconnected PoP; ``Plainzoo`` has no coordinates and no country,
    so its regions are clusters on delay. Import, run ``selection --quick`` and listen on the
    default-route interface for any packet to or from the emulated blocks (an imported graph once named
    a client ``c0``, Mininet's controller in the root namespace, and its probes went out of the uplink).

    Proximity from the topology: anycast and the redirector (which sees the client, and maps it by the
    network map) send every request to a nearest edge; the mapping DNS sees the resolver, so each
    request goes to an edge nearest to the client's resolver; every region's row is filled."""
    from experiments.framework import read_csv, run_experiment
    from testbed.cli import main as cdnlab
    from testbed.net.launch import resolver_of

    uplink = _uplink()
    if uplink is None:
        pytest.skip("this machine has no default route: nothing could leave through an uplink")
    spec = tmp_path / f"{graph.lower()}.yaml"
    assert cdnlab(["topo", "import", str(FIXTURES / f"{graph}.graphml"), "--edges", "3", "-o", str(spec)]) == 0
    topo = load_topology(spec)
    assert len(topo.switches) == {"Minizoo": 5, "Plainzoo": 8}[graph]  # the disconnected PoPs are dropped
    flt = " or ".join(f"net {n}" for n in topo.networks())
    pcap = tmp_path / "uplink.pcap"
    dump = subprocess.Popen(["tcpdump", "-n", "-i", uplink, "-w", str(pcap), flt], stderr=subprocess.PIPE,
                            text=True)
    out = tmp_path / "out"
    try:
        assert select.select([dump.stderr], [], [], 10)[0], "tcpdump said nothing within 10 s"
        first = dump.stderr.readline()
        assert "listening on" in first, first
        res = run_experiment("selection", out, quick=True, topology=str(spec))
    finally:
        dump.send_signal(signal.SIGINT)
        _, err = dump.communicate(timeout=20)
    captured = [ln for ln in err.splitlines() if "packets captured" in ln]
    assert captured and captured[0].split()[0] == "0", f"packets left through {uplink}: {err}"
    for m in ("anycast", "dns", "redirect"):
        s = res["methods"][m]
        assert s["requests"] > 10 and s["errors"] == 0, (m, s)
    assert res["methods"]["anycast"]["optimal_edge_fraction"] == 1.0
    assert res["methods"]["redirect"]["optimal_edge_fraction"] == 1.0

    edges = [h.name for h in topo.hosts_with("edge")]

    def nearest(host: str) -> set[str]:
        d = {e: topo.path_delay_ms(host, e) for e in edges}
        return {e for e, v in d.items() if v <= min(d.values()) + 1e-9}

    dns_rows = [r for r in read_csv(out / "samples.csv") if r["method"] == "dns"]
    assert dns_rows
    for r in dns_rows:
        assert r["served_by"] in nearest(resolver_of(topo, r["client"])), r
    regions = {h.region for h in topo.hosts_with("client")}
    assert len(regions) >= 2
    for m in ("anycast", "dns", "redirect"):
        assert set(res["methods"][m]["regions"]) == regions
        assert all(v["requests"] > 0 for v in res["methods"][m]["regions"].values()), res["methods"][m]["regions"]
    report = (out / "report.md").read_text()
    emu = res["meta"]["emulation"]
    if res["meta"]["link_mode"] == "relay":  # the relays were asked whether they kept up
        assert emu["measured"] is True and emu["relayed_link_directions"] >= 2 * len(topo.links), emu
    assert ("could not keep up" in report.split("## ")[0]) == (emu["keeping_up"] is False)
    for g in regions:
        assert f"| {g} |" in report, g


def test_a_second_network_of_the_same_topology_is_refused_naming_the_first(cdn_net) -> None:
    first = cdn_net("mini", controller="standalone")
    states_before = {st.run_id for st in all_states()}
    second = CdnNet(load_topology("mini"), BuildOptions(controller="standalone"))
    with pytest.raises(RuntimeError, match=rf"switch 's1' is taken: it belongs to run {first.state.run_id}, "
                                           r"which is still running"):
        second.start()
    assert {st.run_id for st in all_states()} == states_before  # the refusal made nothing
    assert first.reachable_from("c1", ["e1"]) == {"e1"}  # and broke nothing
