"""Internet Topology Zoo import: coordinates become great-circle delays; the result is a valid spec."""

from __future__ import annotations

from pathlib import Path

import networkx as nx
import pytest

from testbed.cli import main as cdnlab
from testbed.config import ConfigError
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
