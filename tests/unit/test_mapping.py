"""Mapping policies: region by prefix, RTT, load, ECS scope, hash affinity, never a dead edge."""

from __future__ import annotations

import ipaddress

import pytest

from contract.config import ConfigError, validate
from testbed.services.mapping import (
    AllUp,
    EcsAware,
    GeoByResolver,
    LatencyMap,
    LoadAware,
    MappingSpec,
    MapRequest,
    hrw_rank,
    load_policy,
)


class Down:
    """EdgeState with some edges down and given loads."""

    generation = 0

    def __init__(self, down: set[str] = frozenset(), loads: dict[str, float] | None = None) -> None:
        self.down, self.loads = set(down), loads or {}

    def is_up(self, name: str) -> bool:
        return name not in self.down

    def load(self, name: str) -> float | None:
        return self.loads.get(name)


def spec(**kw) -> MappingSpec:
    base = {
        "regions": {"eu": ["10.1.0.0/16"], "us": ["10.2.0.0/16"], "eu-special": ["10.1.5.0/24"]},
        "default_region": "eu",
        "edges": [
            {"name": "eu1", "address": "10.1.0.11", "region": "eu"},
            {"name": "eu2", "address": "10.1.0.12", "region": "eu"},
            {"name": "eu3", "address": "10.1.0.13", "region": "eu"},
            {"name": "us1", "address": "10.2.0.11", "region": "us"},
            {"name": "sp1", "address": "10.1.5.11", "region": "eu-special"},
        ],
        "rtt_ms": {
            "eu": {"eu1": 10, "eu2": 12, "eu3": 30, "us1": 90, "sp1": 40},
            "us": {"eu1": 90, "eu2": 90, "eu3": 95, "us1": 5, "sp1": 100},
        },
        "near_slack_ms": 5,
    }
    base.update(kw)
    return MappingSpec.model_validate(base)


def req(name: str, src: str, ecs: str | None = None) -> MapRequest:
    return MapRequest(name, ipaddress.ip_address(src), ipaddress.ip_network(ecs) if ecs else None)


def test_geo_maps_by_longest_prefix_and_hash_is_sticky():
    p = GeoByResolver(spec())
    d = p.choose(req("a73.g.cdnlab.net.", "10.2.3.4"), AllUp())
    assert [e.name for e in d.edges] == ["us1"] and d.region == "us"
    assert p.choose(req("a1.g.cdnlab.net.", "10.1.5.9"), AllUp()).edges[0].name == "sp1"  # /24 beats /16
    assert p.choose(req("a1.g.cdnlab.net.", "192.0.2.1"), AllUp()).region == "eu"  # default
    # same name -> same edge, and different names spread over the eu cluster
    chosen = {p.choose(req(f"a{i}.g.cdnlab.net.", "10.1.9.9"), AllUp()).edges[0].name for i in range(60)}
    assert chosen == {"eu1", "eu2", "eu3"}
    first = p.choose(req("a73.g.cdnlab.net.", "10.1.9.9"), AllUp()).edges[0].name
    assert all(
        p.choose(req("A73.g.cdnlab.net", "10.1.0.1"), AllUp()).edges[0].name == first for _ in range(5)
    )


def test_dead_edge_never_returned_and_only_its_names_move():
    p = GeoByResolver(spec())
    names = [f"a{i}.g.cdnlab.net." for i in range(100)]
    before = {n: p.choose(req(n, "10.1.9.9"), AllUp()).edges[0].name for n in names}
    after = {n: p.choose(req(n, "10.1.9.9"), Down({"eu2"})).edges[0].name for n in names}
    assert "eu2" not in after.values()
    assert all(after[n] == before[n] for n in names if before[n] != "eu2")
    # whole cluster down -> nearest live elsewhere, never a dead one; all down -> nothing
    d = p.choose(req("a1.g.cdnlab.net.", "10.2.0.1"), Down({"us1"}))
    assert d.edges and d.edges[0].name in {"eu1", "eu2"}  # lowest RTT from us after us1
    assert (
        p.choose(req("a1.g.cdnlab.net.", "10.2.0.1"), Down({"eu1", "eu2", "eu3", "us1", "sp1"})).edges == []
    )


def test_latency_map_picks_lowest_rtt_within_slack():
    p = LatencyMap(spec())
    got = {p.choose(req(f"a{i}.x.", "10.1.0.1"), AllUp()).edges[0].name for i in range(40)}
    assert got == {"eu1", "eu2"}  # eu3 (30 ms) is outside best (10) + slack (5)
    assert p.choose(req("a1.x.", "10.1.0.1"), Down({"eu1", "eu2"})).edges[0].name == "eu3"
    assert p.choose(req("a1.x.", "10.2.0.1"), AllUp()).edges[0].name == "us1"


def test_load_aware_prefers_least_loaded_near_edge():
    p = LoadAware(spec())
    st = Down(loads={"eu1": 100.0, "eu2": 3.0, "eu3": 0.0, "us1": 0.0})
    assert all(p.choose(req(f"a{i}.x.", "10.1.0.1"), st).edges[0].name == "eu2" for i in range(10))
    st.loads["eu2"] = 500.0
    assert p.choose(req("a1.x.", "10.1.0.1"), st).edges[0].name == "eu1"
    assert p.choose(req("a1.x.", "10.1.0.1"), Down({"eu1"}, st.loads)).edges[0].name == "eu2"


def test_ecs_aware_uses_client_subnet_and_sets_scope():
    p = EcsAware(spec())
    # resolver in eu, client subnet in us -> us, scope = matched /16 (nothing more specific inside it)
    d = p.choose(req("a1.x.", "10.1.0.1", "10.2.7.0/24"), AllUp())
    assert d.edges[0].name == "us1" and d.scope_prefix == 16
    # client in eu /16 which has a more specific /24 inside -> scope = source length used
    d = p.choose(req("a1.x.", "10.2.0.1", "10.1.7.0/24"), AllUp())
    assert d.region == "eu" and d.scope_prefix == 24
    # the /24 itself
    assert p.choose(req("a1.x.", "10.2.0.1", "10.1.5.0/24"), AllUp()).edges[0].name == "sp1"
    # no ECS -> resolver address, scope 0
    d = p.choose(req("a1.x.", "10.2.0.1"), AllUp())
    assert d.region == "us" and d.scope_prefix == 0
    # /32 from a client is cut to ecs_max_prefix_v4 (24)
    assert p.choose(req("a1.x.", "10.2.0.1", "192.0.2.77/32"), AllUp()).scope_prefix == 24
    # the key separates different client subnets
    assert p.source_key(req("a", "10.1.0.1", "10.2.7.0/24")) != p.source_key(req("a", "10.1.0.1"))


def test_hrw_is_deterministic():
    s = spec()
    assert [e.name for e in hrw_rank("a9", s.edges)] == [
        e.name for e in hrw_rank("A9.", list(reversed(s.edges)))
    ]


def test_policy_by_dotted_path_and_bad_config_names_field():
    assert isinstance(load_policy(spec(policy="testbed.services.mapping:LoadAware")), LoadAware)
    with pytest.raises(ConfigError, match=r"f.yaml: policy: .*cannot import"):
        validate(MappingSpec, {"policy": "nope.mod:X"}, "f.yaml")
    with pytest.raises(ConfigError, match=r"f.yaml: policy: .*has no class"):
        validate(MappingSpec, {"policy": "testbed.services.mapping:Nope"}, "f.yaml")
    with pytest.raises(ConfigError, match=r"f.yaml: regions.eu.0"):
        validate(MappingSpec, {"regions": {"eu": ["10.1.0.0/33"]}}, "f.yaml")
    with pytest.raises(ConfigError, match="duplicate edge names"):
        e = {"name": "x", "address": "10.0.0.1", "region": "eu"}
        validate(MappingSpec, {"edges": [e, e]}, "f.yaml")
