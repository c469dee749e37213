"""Internet Topology Zoo import: coordinates become great-circle delays; the result is a valid spec."""

from __future__ import annotations

from pathlib import Path

import networkx as nx
import pytest

from contract.config import ConfigError
from testbed.cli import main as cdnlab
from testbed.net.graphml import great_circle_km, import_graphml
from testbed.net.spec import load_topology, parse_topology

CITIES = {  # label: (lat, lon)
    "New York": (40.71, -74.01),
    "London": (51.51, -0.13),
    "Frankfurt": (50.11, 8.68),
    "Singapore": (1.35, 103.82),
    "Nowhere": None,  # a PoP without coordinates, as in some zoo files
}


def _zoo_file(tmp_path: Path) -> Path:
    g = nx.Graph()
    for i, (label, ll) in enumerate(CITIES.items()):
        attrs = {"label": label}
        if ll:
            attrs.update(Latitude=ll[0], Longitude=ll[1])
        g.add_node(str(i), **attrs)
    g.add_edges_from([("0", "1"), ("1", "2"), ("2", "3"), ("0", "3"), ("2", "4")])
    p = tmp_path / "Example.graphml"
    nx.write_graphml(g, p)
    return p


def test_great_circle_known_distance() -> None:
    # New York - London is about 5,570 km
    assert great_circle_km(40.71, -74.01, 51.51, -0.13) == pytest.approx(5570, rel=0.01)


def test_import_delays_from_distance(tmp_path: Path) -> None:
    spec = import_graphml(_zoo_file(tmp_path), edges=2)
    t = parse_topology(spec, "imported")
    delays = {frozenset((ln.a, ln.b)): ln.delay_ms for ln in t.links}
    assert delays[frozenset(("z0", "z1"))] == pytest.approx(5570 / 200, rel=0.02)  # NY-London ~27.9 ms
    assert delays[frozenset(("z2", "z4"))] == 1.0  # no coordinates: the default
    assert len(t.hosts_with("edge")) == 2
    assert len(t.hosts_with("client")) == len(CITIES)
    # k-center spreads the edges: not both in Europe
    edge_switches = {h.switch for h in t.hosts_with("edge")}
    assert edge_switches != {"z1", "z2"}


def test_import_keeps_coordinates_for_the_map(tmp_path: Path) -> None:
    t = parse_topology(import_graphml(_zoo_file(tmp_path), edges=2), "imported")
    where = {s.name: (s.lat, s.lon) for s in t.switches}
    assert where["z0"] == (40.71, -74.01) and where["z3"] == (1.35, 103.82)
    assert where["z4"] == (None, None)  # "Nowhere" has none: drawn by the force layout's rules


def test_a_switch_with_half_a_position_is_refused() -> None:
    spec = {"name": "t", "switches": [{"name": "s1", "lat": 10.0}], "links": [],
            "hosts": [{"name": "h1", "role": "client", "switch": "s1"}]}
    with pytest.raises(ConfigError, match="both lat and lon"):
        parse_topology(spec, "half.yaml")
    spec["switches"][0].update(lat=91.0, lon=0.0)
    with pytest.raises(ConfigError, match="lat"):
        parse_topology(spec, "north-of-the-pole.yaml")


def test_cli_import_writes_a_loadable_spec(tmp_path: Path, capsys) -> None:
    out = tmp_path / "ex.yaml"
    assert cdnlab(["topo", "import", str(_zoo_file(tmp_path)), "--edges", "3", "-o", str(out)]) == 0
    t = load_topology(out)
    assert t.name == "example"
    assert len(t.anycast[0].members) == 3


def test_malformed_graphml_is_rejected_with_the_file_name(tmp_path: Path) -> None:
    bad = tmp_path / "bad.graphml"
    bad.write_text("<graphml><graph><node id='a'></graph>")
    with pytest.raises(ConfigError, match="bad.graphml: not a readable GraphML"):
        import_graphml(bad)
    assert cdnlab(["topo", "import", str(bad)]) == 2


FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "zoo"


def test_regions_from_country_with_a_resolver_each_and_a_24_per_pop() -> None:
    t = parse_topology(import_graphml(FIXTURES / "Minizoo.graphml", edges=2), "minizoo")
    labels = {r.name: r.label for r in t.regions}
    assert sorted(labels.values()) == ["Austria", "France", "Germany", "Netherlands"]  # Iceland: disconnected
    sw_region = {s.name: s.region for s in t.switches}
    assert sw_region["z4"] == sw_region["z3"]  # Backhaul has no Country: it joins its nearest PoP's (Vienna)
    for h in t.hosts:
        assert h.region == sw_region[h.switch], h
    resolvers = t.hosts_with("resolver")
    assert sorted(r.region for r in resolvers) == sorted(labels)  # one resolver per region, in the region
    # every PoP's hosts share one /24 of their own: a client's ECS /24 says where it is
    addrs = t.addresses()
    pop_of_24: dict[str, str] = {}
    for h in t.hosts:
        net = addrs[h.name].rsplit(".", 1)[0]
        assert pop_of_24.setdefault(net, h.switch) == h.switch, (h.name, addrs[h.name])
    assert t.anycast[0].vip == "10.100.255.1"


def test_too_many_countries_merge_by_delay_without_splitting_one() -> None:
    t = parse_topology(import_graphml(FIXTURES / "Minizoo.graphml", edges=2, regions=2), "minizoo")
    assert len(t.regions) == 2
    merged = {r.label for r in t.regions}
    # Amsterdam-Frankfurt and Amsterdam-Paris are the shortest links: the three western countries merge
    assert any(set(lb.split(", ")) >= {"Netherlands", "Germany"} for lb in merged), merged
    assert any(lb == "Austria" for lb in merged), merged
    assert len(t.hosts_with("resolver")) == 2


def test_without_country_regions_are_delay_clusters() -> None:
    t = parse_topology(import_graphml(FIXTURES / "Plainzoo.graphml", edges=3, regions=3), "plainzoo")
    assert len(t.switches) == 8  # the island pair is dropped
    assert len(t.regions) == 3 and all(r.label.startswith("near ") for r in t.regions)
    assert "k-center clustering on path delay" in " ".join(t.sources)
    # each PoP belongs to the region of its nearest cluster center (the medoid named in the label)
    center = {r.name: next(s.name for s in t.switches
                           if t.description.find(f"{s.name}={r.label.removeprefix('near ')}") >= 0)
              for r in t.regions}
    for s in t.switches:
        d = {r: t.path_delay_ms(s.name, c) for r, c in center.items()}
        assert d[s.region] == min(d.values()), (s.name, s.region, d)


def test_one_region_when_asked_and_bad_counts_are_refused(tmp_path: Path) -> None:
    t = parse_topology(import_graphml(FIXTURES / "Minizoo.graphml", regions=1), "minizoo")
    assert len(t.regions) == 1 and [h.name for h in t.hosts_with("resolver")] == ["res"]
    with pytest.raises(ConfigError, match="Minizoo.graphml: regions: 0"):
        import_graphml(FIXTURES / "Minizoo.graphml", regions=0)
    with pytest.raises(ConfigError, match="edges: 0"):
        import_graphml(FIXTURES / "Minizoo.graphml", edges=0)
    out = tmp_path / "m.yaml"
    assert cdnlab(["topo", "import", str(FIXTURES / "Minizoo.graphml"), "--regions", "3", "-o", str(out)]) == 0
    assert len(load_topology(out).regions) == 3


def test_a_small_subnet_numbers_hosts_in_sequence() -> None:
    # a /26 has no /24 per PoP: hosts are numbered in order and the spec is still valid
    t = parse_topology(import_graphml(FIXTURES / "Minizoo.graphml", subnet="10.100.7.0/26"), "minizoo")
    assert all(h.ip is None for h in t.hosts)
    assert all(a.startswith("10.100.7.") for a in t.addresses().values())


def test_the_readme_import_example_runs_as_written(tmp_path: Path, monkeypatch) -> None:
    """README: `cdnlab topo import topologies/zoo/Eurozoo.graphml -o eurozoo.yaml` (a file that ships)."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    line = next(ln for ln in readme.splitlines() if ln.startswith("cdnlab topo import "))
    args = line.split("#")[0].split()[1:]
    monkeypatch.chdir(Path(__file__).resolve().parents[2])
    out = tmp_path / "eurozoo.yaml"
    args[args.index("-o") + 1] = str(out)
    assert cdnlab(args) == 0
    t = load_topology(out)
    assert len(t.switches) == 12 and len(t.regions) == 4 and len(t.hosts_with("edge")) == 3
