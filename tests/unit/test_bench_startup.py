"""``cdnlab bench startup``'s pure parts: which pairs it pings, how it shapes a spec, what it reports."""

from __future__ import annotations

import itertools

import pytest

from benchmarks import startup as st
from testbed.net.spec import parse_topology


def test_pair_targets_cover_every_pair_and_spread_the_work() -> None:
    for n in (2, 3, 7, 10, 11):
        ips = [f"10.0.0.{i}" for i in range(n)]
        covered = {frozenset((ips[i], t)) for i in range(n) for t in st.pair_targets(ips, i)}
        assert covered == {frozenset(p) for p in itertools.combinations(ips, 2)}, n
        sizes = {len(st.pair_targets(ips, i)) for i in range(n)}
        assert max(sizes) - min(sizes) <= 1 and all(ips[i] not in st.pair_targets(ips, i) for i in range(n))


def test_every_link_is_shaped_and_shaped_links_keep_their_delay() -> None:
    spec = st.chain(3, 2)
    spec["links"][0]["delay_ms"] = 7.0
    topo = st.shape_every_link(parse_topology(spec, "bench"), 1.5)
    assert [ln.delay_ms for ln in topo.links] == [7.0, 1.5]
    assert {h.link.delay_ms for h in topo.hosts} == {1.5}
    assert len(topo.hosts) == 6


def test_clients_reach_edges_or_every_pair() -> None:
    spec = {"name": "t", "subnet": "10.9.0.0/16", "switches": [{"name": "s1"}, {"name": "s2"}],
            "links": [{"a": "s1", "b": "s2", "delay_ms": 10}],
            "hosts": [{"name": "c1", "role": "client", "switch": "s1"},
                      {"name": "c2", "role": "client", "switch": "s2"},
                      {"name": "e1", "role": "edge", "switch": "s2"}]}
    topo = parse_topology(spec, "t")
    addrs = topo.addresses()
    ce = st.targets_for(topo, addrs, "clients-edges")
    assert ce == {"c1": {addrs["e1"]}, "c2": {addrs["e1"]}}
    everyone = st.targets_for(topo, addrs, "all")
    assert sum(len(v) for v in everyone.values()) == 3
    # the ping timeout grows with the longest path: twice its 20 ms RTT, plus a second
    assert st.ping_timeout_ms(topo, ce, addrs) == 1040
    with pytest.raises(ValueError, match="pairs must be"):
        st.targets_for(topo, addrs, "some")
    no_edges = parse_topology({**spec, "hosts": spec["hosts"][:2]}, "t")
    with pytest.raises(ValueError, match="no edge caches"):
        st.targets_for(no_edges, no_edges.addresses(), "clients-edges")


def _run(seconds: float, rss: float = 400.0) -> dict:
    return {"seconds": seconds, "build_seconds": seconds / 2, "rss_mb": rss, "relay_procs": 2, "links": 109,
            "controller": "ryu", "link_mode": "relay"}


def test_summary_reports_medians_per_run_ratios_and_every_run_against_the_targets() -> None:
    topo = parse_topology(st.chain(10, 10), "bench")
    ours = [_run(s) for s in (9.0, 10.0, 9.5, 9.2, 9.8)]
    bare = [_run(s, 300.0) for s in (8.0, 8.0, 8.0, 8.0, 7.0)]
    r = st.summarize(topo, ours, bare)
    assert r["hosts"] == 100 and r["links"] == 109 and r["relay_procs"] == 2 and r["runs"] == 5
    assert r["seconds"] == 9.5 and r["bare_seconds"] == 8.0 and r["ratio"] == round(9.5 / 8.0, 3)
    assert r["ratios"] == [1.125, 1.25, 1.188, 1.15, 1.4]
    # one run of five over 1.3x is a miss: the target is every run
    assert r["targets_met"] == {"seconds_le_30_every_run": True, "ratio_le_1.3_every_run": False}
    big = parse_topology({"name": "big", "subnet": "10.7.0.0/16", "switches": [{"name": "s"}],
                          "hosts": [{"name": f"h{i}", "role": "client", "switch": "s"} for i in range(150)]},
                         "big")
    r = st.summarize(big, [_run(170.0, 5000.0)], [])
    assert r["targets_met"] == {"seconds_le_180_every_run": True, "rss_le_4GiB_every_run": False}
    assert "ratio" not in r
