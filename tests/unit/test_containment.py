"""Emulated traffic stays inside the emulation (testbed.net.containment): names, address blocks, guard
routes. Route tests run in a network namespace this test makes (root only), never in the root namespace's
routing table, except the one clean test, which adds and removes an ``unreachable`` route and sends nothing.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
import uuid
from pathlib import Path

import networkx as nx
import pytest

from contract.config import ConfigError
from testbed.net.containment import (
    USUAL_MACHINE_NETWORKS,
    GuardRoute,
    MachineNetwork,
    NamespaceError,
    add_guard_routes,
    check_no_overlap,
    guard_routes,
    machine_networks,
    overlap_errors,
    remove_guard_routes,
    require_namespaced,
    suggest_subnet,
)
from testbed.net.graphml import graph_to_spec
from testbed.net.spec import BUILDER_NODE_NAMES, list_topologies, load_topology, parse_topology

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces and routes)")
N = ipaddress.IPv4Network


# -- names -----------------------------------------------------------------------------------------------
def test_importer_never_names_a_host_like_a_builder_node() -> None:
    g = nx.path_graph(30)  # PoP 0 used to give client "c0", Mininet's controller
    spec = graph_to_spec(nx.relabel_nodes(g, str), "line", edges=3)
    names = {h["name"] for h in spec["hosts"]} | {s["name"] for s in spec["switches"]}
    assert not names & set(BUILDER_NODE_NAMES)
    t = parse_topology(spec, "line")
    assert sorted(h.name for h in t.hosts_with("client"))[:3] == ["cl0", "cl1", "cl10"]


class _Node:
    def __init__(self, in_namespace: bool) -> None:
        self.inNamespace = in_namespace


def test_only_hosts_in_their_own_namespace_are_handed_out() -> None:
    host = _Node(True)
    assert require_namespaced(host, "cl1") is host
    with pytest.raises(NamespaceError, match="'c0' is not an emulated host .*real interfaces"):
        require_namespaced(_Node(False), "c0")  # Mininet's controller / a switch: root namespace
    with pytest.raises(NamespaceError, match="no host named 'ghost'"):
        require_namespaced(None, "ghost")


# -- address blocks ---------------------------------------------------------------------------------------
def test_shipped_topologies_avoid_the_usual_vm_and_container_networks() -> None:
    usual = [N(n) for n in USUAL_MACHINE_NETWORKS]
    for name in list_topologies():
        for net in load_topology(name).networks():
            hit = [str(u) for u in usual if net.overlaps(u)]
            assert not hit, f"{name}: {net} overlaps {hit}"


def test_overlap_is_reported_naming_both_networks() -> None:
    globe = load_topology("globe")
    vbox = [MachineNetwork("eth0", N("10.0.2.0/24")), MachineNetwork("docker0", N("172.17.0.0/16"))]
    assert overlap_errors("globe", globe.networks(), vbox) == []
    old_globe = globe.moved_to("10.0.0.0/16")  # where globe was, Vagrant's NAT is its South America /24
    [err] = overlap_errors("globe", old_globe.networks(), vbox)
    assert "10.0.0.0/16 overlaps 10.0.2.0/24 on eth0" in err
    with pytest.raises(RuntimeError, match=r"(?s)10\.0\.0\.0/16 overlaps 10\.0\.2\.0/24 on eth0.*--subnet 10\.100"):
        check_no_overlap(old_globe, vbox)
    check_no_overlap(globe, vbox)  # no overlap: no error


def test_a_vip_outside_the_subnet_is_a_block_of_its_own() -> None:
    d = parse_topology(load_topology("mini").model_dump(mode="json"), "m").model_dump(mode="json")
    d["anycast"][0]["vip"] = "192.168.121.7"
    t = parse_topology(d, "m")
    assert t.networks() == [N("10.0.0.0/24"), N("192.168.121.7/32")]
    [err] = overlap_errors("m", t.networks(), [MachineNetwork("virbr", N("192.168.121.0/24"))])
    assert "192.168.121.7/32 overlaps 192.168.121.0/24 on virbr" in err


def test_suggested_subnet_is_free() -> None:
    avoid = [N("10.100.0.0/16"), N("10.101.0.0/16")]
    got = suggest_subnet(16, avoid)
    assert got == N("10.102.0.0/16")
    assert suggest_subnet(24, avoid) == N("10.102.0.0/24")
    assert suggest_subnet(16, [N("10.0.0.0/8")]) is None


def test_machine_networks_reads_this_machine() -> None:
    nets = machine_networks()
    assert all(not m.network.is_loopback for m in nets)
    out = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True).stdout
    for m in nets:
        assert m.interface in out


# -- moving a topology ------------------------------------------------------------------------------------
def test_moved_topology_keeps_every_offset() -> None:
    globe = load_topology("globe")
    moved = load_topology("globe", subnet="10.200.0.0/16")
    assert moved.subnet == "10.200.0.0/16"
    assert [r.prefix for r in moved.regions] == ["10.200.1.0/24", "10.200.2.0/24", "10.200.3.0/24",
                                                 "10.200.4.0/24"]
    assert moved.anycast[0].vip == "10.200.255.1"
    old, new = globe.addresses(), moved.addresses()
    for h in globe.hosts:
        assert new[h.name].split(".")[2:] == old[h.name].split(".")[2:], h.name
        assert ipaddress.IPv4Address(new[h.name]) in N("10.200.0.0/16")
    # a larger block is fine; mini's /24 moves into a /16
    assert load_topology("mini", subnet="172.30.0.0/16").addresses()["origin"] == "172.30.0.1"


@pytest.mark.parametrize(("subnet", "words"), [
    ("10.200.0.0/24", "globe needs a /16 or larger"),
    ("10.200.0.1/16", "has host bits set"),
    ("10.300.0.0/16", "Octet 300"),
])
def test_a_bad_subnet_is_refused_naming_file_and_value(subnet: str, words: str) -> None:
    with pytest.raises(ConfigError, match=rf"globe\.yaml: --subnet {subnet}: .*{words}"):
        load_topology("globe", subnet=subnet)


def test_cli_import_and_show_take_a_subnet(tmp_path: Path, capsys) -> None:
    from testbed.cli import main as cdnlab

    g = nx.relabel_nodes(nx.cycle_graph(4), str)
    src = tmp_path / "Ring.graphml"
    nx.write_graphml(g, src)
    out = tmp_path / "ring.yaml"
    assert cdnlab(["topo", "import", str(src), "--subnet", "10.210.0.0/16", "-o", str(out)]) == 0
    t = load_topology(out)
    assert t.subnet == "10.210.0.0/16" and t.anycast[0].vip == "10.210.255.1"
    assert cdnlab(["topo", "show", "mini", "--subnet", "10.211.0.0/24"]) == 0
    assert "10.211.0.1" in capsys.readouterr().out
    assert cdnlab(["topo", "import", str(src), "--subnet", "nonsense"]) == 2
    assert "Ring.graphml: subnet: Expected 4 octets in 'nonsense'" in capsys.readouterr().err


# -- guard routes -----------------------------------------------------------------------------------------
@pytest.fixture
def netns():
    name = f"cdnlabt-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield ["ip", "-n", name]
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def _guard_routes(ip_cmd: list[str]) -> list[tuple[str, int]]:
    return [(r.dst, r.metric) for r in guard_routes(ip_cmd)]


@root_only
def test_guard_routes_make_emulated_blocks_unreachable_and_runs_coexist(netns) -> None:
    ip = netns
    nets = [N("10.200.0.0/16"), N("10.9.9.9/32")]
    first = add_guard_routes(nets, ip)
    second = add_guard_routes(nets, ip)  # a second run of the same topology: its own metrics
    assert [r.dst for r in first] == [r.dst for r in second] == ["10.200.0.0/16", "10.9.9.9/32"]
    assert {r.metric for r in first}.isdisjoint({r.metric for r in second})
    assert len(_guard_routes(ip)) == 4
    p = subprocess.run([*ip, "route", "get", "10.200.3.4"], capture_output=True, text=True)
    assert p.returncode != 0 and "No route to host" in p.stderr  # dies locally, never sent
    assert remove_guard_routes(first, ip) == first
    assert _guard_routes(ip) == sorted((r.dst, r.metric) for r in second)  # the other run's stay
    assert remove_guard_routes(first, ip) == []  # removing twice is harmless
    remove_guard_routes(second, ip)
    assert _guard_routes(ip) == []


@root_only
def test_failed_guard_route_undoes_the_ones_it_added(netns) -> None:
    """The second route fails (a wrapper around `ip` refuses it): the first is taken back."""
    wrapper = ["sh", "-c", 'case "$*" in *10.9.9.9*) echo "Error: refused" >&2; exit 2;; esac; exec "$0" "$@"',
               *netns]
    with pytest.raises(RuntimeError, match="cannot add the guard route unreachable 10.9.9.9/32 .*refused"):
        add_guard_routes([N("10.200.0.0/16"), N("10.9.9.9/32")], wrapper)
    assert _guard_routes(netns) == []


@root_only
def test_clean_removes_recorded_guard_routes(tmp_path, monkeypatch) -> None:
    """A run killed with SIGKILL leaves its routes recorded: `cdnlab clean` removes exactly those."""
    from testbed.net.cleanup import clean_state
    from testbed.net.state import RunState, all_states

    monkeypatch.setenv("CDNLAB_STATE_DIR", str(tmp_path))
    st = RunState.new("unit")
    routes = add_guard_routes([N("10.254.253.0/24")])  # root namespace: a route only, nothing is sent
    try:
        st.add_routes([{"dst": r.dst, "metric": r.metric} for r in routes])
        [loaded] = all_states()
        assert [GuardRoute(**r) for r in loaded.routes] == routes
        removed = clean_state(loaded)
        assert f"guard route unreachable 10.254.253.0/24 metric {routes[0].metric}" in removed
        assert ("10.254.253.0/24", routes[0].metric) not in _guard_routes(["ip"])
    finally:
        remove_guard_routes(routes)


def test_an_experiment_run_loads_its_topology_moved(tmp_path: Path) -> None:
    """`cdnlab run NAME --subnet B` reaches the builder through Run.load_topology."""
    from experiments.framework import Run, load_spec

    r = Run(spec=load_spec("selection"), out=tmp_path, seed=1, quick=True, topology="globe", params={},
            subnet="10.220.0.0/16")
    t = r.load_topology()
    assert t.subnet == "10.220.0.0/16" and t.anycast[0].vip == "10.220.255.1"
    r.subnet = None
    assert r.load_topology().subnet == "10.2.0.0/16"
    r.subnet = "10.220.0.0/24"
    with pytest.raises(ConfigError, match="globe needs a /16 or larger"):
        r.load_topology()


def test_switch_names_taken_by_a_running_or_dead_run_or_by_someone_else() -> None:
    from testbed.net.containment import taken_switch_errors

    runs = [("globe-1a2b3c4d", ["s_na", "s_eu"], True), ("mini-99887766", ["s1"], False)]
    errs = taken_switch_errors("globe", ["s_na", "s_eu", "s_as"], {"s_na", "s_eu", "s1", "br0"}, runs)
    assert len(errs) == 2 and "switch 's_na' is taken: it belongs to run globe-1a2b3c4d, which is still running" in errs[0]
    assert "`exit` its CLI" in errs[0]
    dead = taken_switch_errors("mini", ["s1", "s2"], {"s1"}, runs)
    assert len(dead) == 1 and "left by run mini-99887766, which died; run `sudo cdnlab clean`" in dead[0]
    other = taken_switch_errors("t", ["br0"], {"br0"}, runs)
    assert "made by something other than cdnlab" in other[0] and "ovs-vsctl del-br br0" in other[0]
    assert taken_switch_errors("globe", ["s_as"], {"s_na"}, runs) == []


def test_check_switch_names_free_raises_before_anything_is_built(monkeypatch) -> None:
    from testbed.net import state
    from testbed.net.containment import check_switch_names_free
    from testbed.net.spec import load_topology

    monkeypatch.setattr(state, "all_states", lambda: [])
    topo = load_topology("mini")
    check_switch_names_free(topo, list_bridges=lambda: {"br-int"})
    with pytest.raises(RuntimeError, match="topology mini: switch 's1' is taken"):
        check_switch_names_free(topo, list_bridges=lambda: {"s1"})
