"""Topology specs: the shipped files are valid; bad files are rejected naming the file and the field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from contract.config import ConfigError
from testbed.net.spec import list_topologies, load_topology, parse_topology


def test_shipped_topologies_load() -> None:
    names = list_topologies()
    assert {"globe", "institutional", "mini"} <= set(names)
    for n in names:
        t = load_topology(n)
        assert t.name == n
        assert len(set(t.addresses().values())) == len(t.hosts)


def test_globe_matches_the_lecture_figure() -> None:
    t = load_topology("globe")
    regions = {"na", "sa", "eu", "as"}
    assert t.host("origin").region == "na"
    assert {h.region for h in t.hosts_with("edge")} == regions
    for r in regions:
        assert len([h for h in t.hosts_with("client") if h.region == r]) >= 2
        assert len([h for h in t.hosts_with("resolver") if h.region == r]) >= 1
    for ln in t.links:  # realistic one-way backbone delays (tens of ms, below 150)
        assert 20 <= ln.delay_ms <= 150
    assert t.has_cycle()
    assert t.sources, "globe must cite where its delays come from"
    # the nearest edge of each client is the one in its own region
    for c in t.hosts_with("client"):
        nearest = min(t.hosts_with("edge"), key=lambda e: t.path_delay_ms(c.name, e.name))
        assert nearest.region == c.region


def test_institutional_matches_the_lecture_example() -> None:
    t = load_topology("institutional")
    access = t.links[0]
    assert access.bw_mbit == 1.5
    origin = t.host("origin")
    client = t.hosts_with("client")[0]
    rtt = 2 * t.path_delay_ms(client.name, origin.name)
    assert 1900 <= rtt <= 2100  # "2 sec" from the institutional router to origin and back
    assert all(h.link.bw_mbit == 10 for h in t.hosts_with("client"))


def _write(tmp_path: Path, data: object, name: str = "t.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return p


def _mini_dict() -> dict:
    return yaml.safe_load((Path(__file__).parents[2] / "topologies" / "mini.yaml").read_text())


@pytest.mark.parametrize(
    ("mutate", "field", "words"),
    [
        (lambda d: d["links"][0].update(delay_ms=-5), "links[0].delay_ms", "greater than or equal"),
        (lambda d: d["links"][0].update(b="nowhere"), "links[0].b", "unknown"),
        (lambda d: d["hosts"][1].update(role="cache"), "hosts[1].role", "Input should be"),
        (lambda d: d["hosts"][2].update(switch="s9"), "hosts[2].switch", "unknown switch"),
        (lambda d: d["hosts"][0].update(name="this_name_is_far_too_long"), "hosts[0].name", "1-10 characters"),
        (lambda d: d["hosts"][0].update(colour="red"), "hosts[0].colour", "Extra inputs"),
        (lambda d: d["anycast"][0]["members"].append("ghost"), "anycast[0].members[2]", "unknown host"),
        (lambda d: d["multicast"][0].update(group="10.1.1.1"), "multicast[0].group", "not an IPv4 multicast"),
        (lambda d: d["hosts"][3].update(region="mars"), "hosts[3].region", "unknown region"),
        (lambda d: d["hosts"].append(dict(d["hosts"][0])), "hosts[8].name", "duplicate name"),
        (lambda d: d.update(links=[]), "links", "not connected"),
        (lambda d: d["hosts"][0].update(ip="192.168.1.1"), "hosts[0].ip", "outside subnet"),
        # Mininet's controller node c0 lives in the root namespace: a host of that name would leak traffic
        (lambda d: d["hosts"][3].update(name="c0"), "hosts[3].name", "'c0' is reserved: it is Mininet's "
         "controller node, which runs in the machine's root namespace"),
        (lambda d: d["switches"][0].update(name="c0"), "switches[0].name", "'c0' is reserved"),
    ],
)
def test_bad_spec_names_file_and_field(tmp_path: Path, mutate, field: str, words: str) -> None:
    d = _mini_dict()
    mutate(d)
    p = _write(tmp_path, d)
    with pytest.raises(ConfigError) as ei:
        load_topology(p)
    msg = str(ei.value)
    assert f"{p}: {field}: " in msg, msg
    assert words in msg, msg


def test_unparsable_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"t\.yaml: not valid YAML"):
        load_topology(_write(tmp_path, "hosts: [unclosed"))
    with pytest.raises(ConfigError, match=r"e\.yaml: \(top level\): file is empty"):
        load_topology(_write(tmp_path, "", "e.yaml"))
    with pytest.raises(ConfigError, match="no such topology"):
        load_topology("no_such_topology_name")


def test_derived_values_are_deterministic() -> None:
    t = parse_topology(_mini_dict(), "mini")
    assert t.addresses() == parse_topology(_mini_dict(), "mini").addresses()
    assert t.dpids() == {"s1": 1, "s2": 2}
    assert t.path_delay_ms("c1", "e2") == pytest.approx(1 + 10 + 1)


def test_region_prefixes_number_hosts_and_are_checked(tmp_path: Path) -> None:
    t = load_topology("globe")
    addrs = t.addresses()
    for h in t.hosts:
        region = next(r for r in t.regions if r.name == h.region)
        assert addrs[h.name].startswith(region.prefix.rsplit(".", 2)[0] + "."), (h.name, addrs[h.name])
    d = _mini_dict()
    d["regions"][0]["prefix"] = "10.0.0.0/25"
    d["regions"][1]["prefix"] = "10.0.0.64/26"
    with pytest.raises(ConfigError, match=r"regions\[1\]\.prefix: 10\.0\.0\.64/26 overlaps regions\[0\]\.prefix"):
        load_topology(_write(tmp_path, d))
    d["regions"][1]["prefix"] = "10.9.0.0/24"
    with pytest.raises(ConfigError, match=r"regions\[1\]\.prefix: 10\.9\.0\.0/24 is outside subnet"):
        load_topology(_write(tmp_path, d))


def test_rename_switches_gives_a_second_valid_copy() -> None:
    from testbed.net.spec import rename_switches

    d = rename_switches(_mini_dict(), "zz")
    t = parse_topology(d, "copy")
    assert {s.name for s in t.switches} == {"zz1", "zz2"}
    assert {h.switch for h in t.hosts} == {"zz1", "zz2"}
    assert (t.links[0].a, t.links[0].b) == ("zz1", "zz2")
