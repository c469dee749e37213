"""The network map (testbed.net.netmap) and the NetworkMap policy that reads it: nearest edge from where a
request comes from, keyed by client address (redirector) or by resolver and ECS /24 (DNS)."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from types import SimpleNamespace

import pytest

from contract.config import ConfigError, validate
from testbed.net.graphml import import_graphml
from testbed.net.launch import CdnOptions, CdnServices, resolver_of
from testbed.net.mcast_plan import plan_mcast
from testbed.net.netmap import network_maps, rtt_to_edges
from testbed.net.spec import load_topology, parse_topology
from testbed.services.dns import DnsConfig
from testbed.services.mapping import AllUp, EcsAware, MappingSpec, MapRequest, NetworkMap, load_policy
from testbed.services.redirector import RedirectorConfig

ZOO = Path(__file__).resolve().parents[1] / "fixtures" / "zoo"
EDGES = [{"name": "a", "address": "10.9.0.1", "region": "r"},
         {"name": "b", "address": "10.9.0.2", "region": "r"},
         {"name": "c", "address": "10.9.0.3", "region": "r"}]


class Down:
    generation = 0

    def __init__(self, *down: str) -> None:
        self.down = set(down)

    def is_up(self, name: str) -> bool:
        return name not in self.down

    def load(self, name: str) -> float | None:
        return None


def _map(**kw) -> MappingSpec:
    return MappingSpec.model_validate({
        "policy": "testbed.services.mapping:NetworkMap", "edges": EDGES,
        "network_map": {"10.1.0.0/24": {"a": 30, "b": 10, "c": 20},
                        "10.1.0.7/32": {"a": 2, "b": 10, "c": 20},
                        "10.2.0.0/16": {"a": 5, "b": 5, "c": 50}}, **kw})


def _ask(policy, src: str, state=None, count: int = 1, name: str = "a73.g.cdnlab.net", ecs: str | None = None):
    sub = ipaddress.ip_network(ecs) if ecs else None
    return policy.choose(MapRequest(name, ipaddress.ip_address(src), sub), state or AllUp(), count)


def test_nearest_by_longest_prefix_then_next_nearest_when_down() -> None:
    p = NetworkMap(_map())
    assert [e.name for e in _ask(p, "10.1.0.9", count=3).edges] == ["b", "c", "a"]  # the /24 row
    assert _ask(p, "10.1.0.7").edges[0].name == "a"  # its own /32 is more specific
    assert _ask(p, "10.1.0.9", Down("b")).edges[0].name == "c"
    assert _ask(p, "10.1.0.9", Down("a", "b", "c")).edges == []
    assert _ask(p, "10.1.0.9").reason == "map"


def test_equally_near_edges_split_by_name_hash_and_keep_a_name() -> None:
    p = NetworkMap(_map())
    chosen = {n: _ask(p, "10.2.3.4", name=f"x{n}.g.cdnlab.net").edges[0].name for n in range(60)}
    assert set(chosen.values()) == {"a", "b"}  # c is 10x farther; a and b tie and share the names
    assert all(_ask(p, "10.2.9.9", name=f"x{n}.g.cdnlab.net").edges[0].name == e for n, e in chosen.items())


def test_slack_makes_nearly_equal_edges_equal() -> None:
    p = NetworkMap(_map(map_slack_ms=10))
    got = {_ask(p, "10.1.0.9", name=f"y{n}").edges[0].name for n in range(60)}
    assert got == {"b", "c"}


def test_an_address_outside_the_map_falls_back_to_region_rtt() -> None:
    p = NetworkMap(_map(rtt_ms={"r": {"a": 1, "b": 50, "c": 50}}, regions={"r": ["10.0.0.0/8"]}))
    d = _ask(p, "10.7.7.7")
    assert (d.edges[0].name, d.reason) == ("a", "map-fallback")


def test_map_rows_naming_unknown_edges_or_negative_rtts_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"network_map\.10\.1\.0\.0/24: unknown edges \['zz'\]"):
        validate(MappingSpec, {"edges": EDGES, "network_map": {"10.1.0.0/24": {"zz": 1}}}, "cfg")
    with pytest.raises(ConfigError, match="RTTs must be >= 0"):
        validate(MappingSpec, {"edges": EDGES, "network_map": {"10.1.0.0/24": {"a": -1}}}, "cfg")
    with pytest.raises(ConfigError, match="network_map"):
        validate(MappingSpec, {"edges": EDGES, "network_map": {"10.1.0.300/24": {"a": 1}}}, "cfg")


def test_ecs_over_the_map_maps_the_client_subnet_with_its_scope() -> None:
    p = EcsAware(_map(ecs_inner="testbed.services.mapping:NetworkMap"))
    from_resolver = _ask(p, "10.2.0.53")  # no ECS: the resolver's row
    assert from_resolver.edges[0].name in {"a", "b"} and from_resolver.scope_prefix == 0
    d = _ask(p, "10.2.0.53", ecs="10.1.0.0/24")
    assert (d.edges[0].name, d.scope_prefix) == ("b", 24)
    # different client subnets are different cache keys, even in one region
    keys = {p.source_key(MapRequest("n", ipaddress.ip_address("10.2.0.53"), ipaddress.ip_network(s)))
            for s in ("10.1.0.0/24", "10.2.0.0/24")}
    assert len(keys) == 2


def test_maps_from_a_topology() -> None:
    t = load_topology("globe")
    addrs = t.addresses()
    edges = [h.name for h in t.hosts_with("edge")]
    maps = network_maps(t, addrs, edges)
    clients = [h.name for h in t.hosts_with("client")]
    resolvers = [h.name for h in t.hosts_with("resolver")]
    for c in clients:
        row = maps.redirector[f"{addrs[c]}/32"]
        assert row == {e: pytest.approx(2 * t.path_delay_ms(c, e), abs=1e-3) for e in edges}
        assert f"{addrs[c]}/32" not in maps.dns  # the DNS never sees a client's own address
    for r in resolvers:
        assert f"{addrs[r]}/32" in maps.dns and f"{addrs[r]}/32" not in maps.redirector
    # a /24 row is the mean over the clients in it
    net = str(ipaddress.ip_network(f"{addrs[clients[0]]}/24", strict=False))
    inside = [c for c in clients if ipaddress.ip_address(addrs[c]) in ipaddress.ip_network(net)]
    rows = rtt_to_edges(t, edges)
    for e in edges:
        assert maps.dns[net][e] == pytest.approx(sum(rows[c][e] for c in inside) / len(inside), abs=1e-3)
        assert maps.redirector[net] == maps.dns[net]


def _imported_services(tmp_path: Path, graph: str, regions: int = 4, **opts) -> tuple[CdnServices, dict[str, str]]:
    t = parse_topology(import_graphml(ZOO / graph, edges=3, regions=regions), graph)
    addrs = t.addresses()
    cn = SimpleNamespace(topo=t, run_dir=tmp_path, ip=lambda n: addrs[n], mcast=plan_mcast(t))
    return CdnServices(cn, CdnOptions(**opts)), addrs


def _nearest(svc: CdnServices, host: str) -> set[str]:
    d = {e: svc.cn.topo.path_delay_ms(host, e) for e in svc.edges}
    return {e for e, v in d.items() if v <= min(d.values()) + 1e-9}


@pytest.mark.parametrize("graph", ["Minizoo.graphml", "Plainzoo.graphml"])
def test_on_an_imported_graph_the_redirector_sends_every_client_to_a_nearest_edge(tmp_path, graph) -> None:
    svc, addrs = _imported_services(tmp_path, graph)
    cfg = validate(RedirectorConfig, svc.redirector_config("redir"), "redir")
    policy = load_policy(cfg.mapping)
    clients = [h.name for h in svc.cn.topo.hosts_with("client")]
    for c in clients:
        for n in range(5):
            d = _ask(policy, addrs[c], name=f"/img/{n}.jpg")
            assert d.edges[0].name in _nearest(svc, c), (c, d)


@pytest.mark.parametrize("graph", ["Minizoo.graphml", "Plainzoo.graphml"])
def test_on_an_imported_graph_dns_maps_the_resolver_and_ecs_the_client(tmp_path, graph) -> None:
    """Lecture slide 12: the DNS server sees the resolver, not the client; ECS (RFC 7871) fixes that."""
    # two regions for three edges: some clients sit nearer another edge than their region's resolver does
    svc, addrs = _imported_services(tmp_path, graph, regions=2)
    plain = load_policy(validate(DnsConfig, svc.dns_config("dns"), "dns").mapping)
    svc_ecs, _ = _imported_services(tmp_path, graph, regions=2, ecs=True,
                                    mapping_policy="testbed.services.mapping:EcsAware")
    ecs = load_policy(validate(DnsConfig, svc_ecs.dns_config("dns"), "dns").mapping)
    wrong_plain = wrong_ecs = 0
    for h in svc.cn.topo.hosts_with("client"):
        res = resolver_of(svc.cn.topo, h.name)
        subnet = str(ipaddress.ip_network(f"{addrs[h.name]}/24", strict=False))
        got = _ask(plain, addrs[res]).edges[0].name
        assert got in _nearest(svc, res)  # nearest to the resolver ...
        wrong_plain += got not in _nearest(svc, h.name)  # ... which need not be nearest to the client
        got_ecs = _ask(ecs, addrs[res], ecs=subnet).edges[0].name
        wrong_ecs += got_ecs not in _nearest(svc, h.name)
    assert wrong_ecs == 0
    assert wrong_plain > 0

