"""Placing a topology on several servers (testbed.net.placement): the cut, the balance, the pins, the errors,
and ``cdnlab plan --servers``."""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from contract.config import ConfigError
from testbed.net.graphml import import_graphml
from testbed.net.placement import SLACK, Placement, link_weight, parse_servers, place, switch_graph
from testbed.net.spec import Topology, load_topology, parse_topology

ROOT = Path(__file__).resolve().parents[2]


def _topo(links: list[tuple[str, str, float]], hosts_per_switch: int = 1, **switch_fields: dict) -> Topology:
    switches = sorted({x for a, b, _ in links for x in (a, b)}, key=lambda s: int(s[1:]))
    return Topology.model_validate({
        "name": "t", "subnet": "10.9.0.0/16",
        "switches": [{"name": s, **switch_fields.get(s, {})} for s in switches],
        "hosts": [{"name": f"h{s}{i}", "role": "client", "switch": s} for s in switches for i in range(hosts_per_switch)],
        "links": [{"a": a, "b": b, "delay_ms": d} for a, b, d in links],
    })


def _best_cut(t: Topology, tolerance: float) -> float:
    """The lightest two-way cut whose sides are within ``tolerance`` of half the load (every partition)."""
    g = switch_graph(t)
    nodes = list(g)
    loads = {n: g.nodes[n]["load"] for n in nodes}
    half = sum(loads.values()) / 2
    best = float("inf")
    for bits in itertools.product((0, 1), repeat=len(nodes) - 1):  # the first switch is always on the left
        left = {nodes[0]} | {n for n, b in zip(nodes[1:], bits, strict=True) if b}
        if abs(sum(loads[n] for n in left) - half) <= tolerance:
            best = min(best, sum(d["weight"] for a, b, d in g.edges(data=True) if (a in left) != (b in left)))
    return best


def _check_whole(t: Topology, p: Placement) -> None:
    assert set(p.switch_server) == {s.name for s in t.switches} and set(p.servers) == set(p.switch_server.values())
    assert all(p.host_server[h.name] == p.switch_server[h.switch] for h in t.hosts)
    assert list(p.cut) == [(ln.a, ln.b, ln.delay_ms) for ln in t.links
                           if p.switch_server[ln.a] != p.switch_server[ln.b]]


def test_low_delay_links_stay_on_one_server() -> None:
    # two triangles of 1 ms links, joined by two 80 ms links: the cut is the two long links
    t = _topo([("s1", "s2", 1), ("s2", "s3", 1), ("s1", "s3", 1), ("s4", "s5", 1), ("s5", "s6", 1),
               ("s4", "s6", 1), ("s1", "s4", 80), ("s3", "s6", 80)])
    p = place(t, ["lab1", "lab2"])
    _check_whole(t, p)
    assert {(a, b) for a, b, _ in p.cut} == {("s1", "s4"), ("s3", "s6")}
    assert p.load() == {"lab1": {"switches": 3, "hosts": 3}, "lab2": {"switches": 3, "hosts": 3}}
    # a chain: the one long link is cut, not a short one
    chain = _topo([("s1", "s2", 1), ("s2", "s3", 2), ("s3", "s4", 50), ("s4", "s5", 2), ("s5", "s6", 1)])
    assert [(a, b) for a, b, _ in place(chain, ["x", "y"]).cut] == [("s3", "s4")]


def test_globe_is_cut_as_lightly_as_any_fair_partition() -> None:
    t = load_topology("globe")
    p = place(t, ["a", "b"])
    _check_whole(t, p)
    loads = [d["load"] for _, d in switch_graph(t).nodes(data=True)]
    tolerance = max(math.ceil(SLACK * sum(loads)), max(loads) / 2)  # what the placement may give away
    assert p.cut_weight == pytest.approx(_best_cut(t, tolerance))
    assert p.cut_weight == pytest.approx(link_weight(36) + link_weight(75))  # s_na-s_eu and s_na-s_as
    assert place(t, ["a", "b"]) == p  # the same every time


def test_an_imported_zoo_graph_is_balanced_and_its_cut_is_the_lightest_even_one() -> None:
    t = parse_topology(import_graphml(ROOT / "topologies/zoo/Eurozoo.graphml"), "eurozoo")
    p = place(t, ["a", "b"])
    _check_whole(t, p)
    loads = [n["switches"] + n["hosts"] for n in p.load().values()]
    assert loads == [17, 17]
    assert p.cut_weight == pytest.approx(_best_cut(t, 0))  # the lightest exactly even cut
    for servers in (["a", "b", "c"], ["a", "b", "c", "d"]):
        q = place(t, servers)
        _check_whole(t, q)
        share = sum(loads) / len(servers)
        assert all(abs(n["switches"] + n["hosts"] - share) <= share / 2 for n in q.load().values()), q.load()


def test_the_spec_pins_switches_by_region_or_by_switch() -> None:
    t = load_topology("globe").model_copy(deep=True)
    regions = {s.name: s.region for s in t.switches}
    for r in t.regions:
        r.server = "lab2" if r.name == regions["s_eu"] else "0"  # a name, or a position in --servers
    s_as = next(s for s in t.switches if s.name == "s_as")
    s_as.server = "lab2"  # a switch's own server wins over its region's
    p = place(t, ["lab1", "lab2"])
    _check_whole(t, p)
    assert p.switch_server == {"s_na": "lab1", "s_sa": "lab1", "s_eu": "lab2", "s_as": "lab2"}
    assert p.pinned == {"s_na", "s_sa", "s_eu", "s_as"} and p.summary()["pinned"] == sorted(p.pinned)
    # one pin: the rest is placed around it
    chain = _topo([("s1", "s2", 1), ("s2", "s3", 50), ("s3", "s4", 1)], s4={"server": "x"})
    assert place(chain, ["x", "y"]).switch_server == {"s1": "y", "s2": "y", "s3": "x", "s4": "x"}
    assert place(chain, ["y", "x"]).switch_server == {"s1": "y", "s2": "y", "s3": "x", "s4": "x"}
    # a position written as a YAML number, as docs/cluster.md writes it (`server: 1`)
    by_number = _topo([("s1", "s2", 1), ("s2", "s3", 50), ("s3", "s4", 1)], s4={"server": 1})
    assert by_number.switches[3].server == "1"
    assert place(by_number, ["y", "x"]).switch_server == {"s1": "y", "s2": "y", "s3": "x", "s4": "x"}


def test_what_cannot_be_placed_is_refused_naming_it() -> None:
    t = load_topology("globe").model_copy(deep=True)
    t.switches[1].server = "lab3"
    with pytest.raises(ValueError, match=r"switches\[1\]\.server \(s_\w+\): 'lab3' is not one of --servers lab1,lab2"):
        place(t, ["lab1", "lab2"])
    t.switches[1].server = "2"
    with pytest.raises(ValueError, match="nor a position in that list, 0 to 1"):
        place(t, ["lab1", "lab2"])
    with pytest.raises(ValueError, match="5 servers but mini has 2 switches"):
        place(load_topology("mini"), list("abcde"))
    with pytest.raises(ValueError, match="no servers"):
        place(load_topology("mini"), [])
    assert parse_servers(" lab1, lab2 ") == ("lab1", "lab2")
    for bad, what in (("lab1,,lab2", "separated by commas"), ("a,b,a", "a given more than once"), ("", "commas")):
        with pytest.raises(ValueError, match=what):
            parse_servers(bad)


def test_one_server_holds_everything_and_cuts_nothing() -> None:
    t = load_topology("globe")
    p = place(t, ["only"])
    _check_whole(t, p)
    assert p.cut == () and set(p.host_server.values()) == {"only"}


def test_server_fields_are_part_of_the_spec(tmp_path: Path) -> None:
    spec = tmp_path / "t.yaml"
    spec.write_text("name: t\nregions: [{name: east, server: lab1}]\n"
                    "switches: [{name: s1, region: east}, {name: s2, server: '1'}]\n"
                    "hosts: [{name: h1, role: client, switch: s1}, {name: h2, role: client, switch: s2}]\n"
                    "links: [{a: s1, b: s2, delay_ms: 5}]\n")
    p = place(load_topology(str(spec)), ["lab1", "lab2"])
    assert p.switch_server == {"s1": "lab1", "s2": "lab2"} and p.cut == (("s1", "s2", 5.0),)
    spec.write_text(spec.read_text().replace("server: '1'", "server: [1]"))
    with pytest.raises(ConfigError, match="server"):
        load_topology(str(spec))


def test_cdnlab_plan_shows_the_placement(tmp_path: Path) -> None:
    def plan(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "testbed.cli", "plan", "globe", "--out", str(tmp_path / "o"),
                               *extra], cwd=ROOT, capture_output=True, text=True, timeout=60)

    run = plan("--servers", "lab1,lab2")
    assert run.returncode == 0, run.stderr
    placed = json.loads((tmp_path / "o" / "plan.json").read_text())["placement"]
    assert placed == place(load_topology("globe"), ["lab1", "lab2"]).summary()
    assert "placement on 2 servers" in run.stdout and "links between servers: s_na-s_eu (36 ms)" in run.stdout
    run = plan()
    assert run.returncode == 0 and json.loads((tmp_path / "o" / "plan.json").read_text())["placement"] is None
    run = plan("--servers", "lab1,lab1")
    assert run.returncode == 2 and "lab1 given more than once" in run.stderr


def test_every_server_is_given_a_switch_on_any_graph() -> None:
    """Random graphs (fixed seeds), 2 to 5 servers: every server used, every host with its switch."""
    import random

    import networkx as nx

    for seed in range(60):
        rng = random.Random(seed)
        n = rng.randint(2, 12)
        g = nx.gnm_random_graph(n, rng.randint(n - 1, 2 * n), seed=seed)
        t = Topology.model_validate({
            "name": "r", "subnet": "10.9.0.0/16", "switches": [{"name": f"s{i}"} for i in g],
            "links": [{"a": f"s{a}", "b": f"s{b}", "delay_ms": rng.choice([1, 2, 5, 20, 80])} for a, b in g.edges],
            "hosts": [{"name": f"h{i}", "role": "client", "switch": f"s{rng.randrange(n)}"}
                      for i in range(rng.randint(1, 3 * n))]})
        for k in range(2, min(n, 5) + 1):
            p = place(t, [f"v{i}" for i in range(k)])
            _check_whole(t, p)
            assert len(set(p.switch_server.values())) == k, (seed, k, p.load())
