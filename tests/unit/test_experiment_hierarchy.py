"""Experiment ``hierarchy`` on loopback: real origin and edge processes, four cooperation arrangements."""

from __future__ import annotations

import json
from collections import defaultdict

import pytest

from experiments.framework import read_csv, run_experiment
from experiments.hierarchy import messages, plan
from testbed.util import tcp_open


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("hierarchy")
    return out, run_experiment("hierarchy", out, quick=True)


def test_cooperation_lowers_origin_load(quick):
    _, res = quick
    c = res["configs"]
    assert set(c) == {"independent", "cluster", "icp", "parent"}
    for name in ("cluster", "icp", "parent"):
        assert c[name]["origin_requests"] < c["independent"]["origin_requests"], (name, res["summary"])
        assert c[name]["hit_ratio"] > c["independent"]["hit_ratio"]
        # misses served by another cache, beyond what request collapsing alone saves
        assert c[name]["misses_absorbed"] > c["independent"]["misses_absorbed"]
    # independent edges: a local miss reaches the origin unless it joined a fetch already under way
    assert c["independent"]["misses_absorbed"] == c["independent"]["collapsed"]


def test_messages_only_when_caches_cooperate(quick):
    out, res = quick
    c = res["configs"]
    assert c["independent"]["intercache_messages"] == 0
    assert all(v == 0 for v in c["independent"]["messages"].values())
    assert c["cluster"]["messages"]["peer_fetches"] > 0 and c["cluster"]["intercache_messages"] > 0
    assert c["cluster"]["messages"]["icp_queries"] == 0
    icp = c["icp"]["messages"]
    assert icp["icp_queries"] > 0 and icp["icp_replies"] == icp["icp_queries"]  # every query answered
    assert icp["icp_queries"] % (res["edges"] - 1) == 0  # each miss asks every sibling
    assert 0 < icp["sibling_fetches"] <= icp["icp_queries"]
    assert c["parent"]["messages"]["parent_fetches"] > 0
    caches = read_csv(out / "caches.csv")
    cl = [x for x in caches if x["config"] == "cluster" and x["cache"] != "origin"]
    # every home fetch sent by one member was received by another
    assert sum(int(x["peer_requests_received"]) for x in cl) == c["cluster"]["messages"]["peer_fetches"]
    ic = [x for x in caches if x["config"] == "icp" and x["cache"] != "origin"]
    assert sum(int(x["icp_queries_received"]) for x in ic) == icp["icp_queries"]


def test_totals_add_up(quick):
    out, res = quick
    p = res["meta"]["params"]
    for name, c in res["configs"].items():
        assert c["requests"] == p["edges"] * p["requests_per_edge"]
        assert c["errors"] == 0
        assert c["local_hits"] + c["local_misses"] == c["requests"]
        assert c["local_hits"] + c["misses_absorbed"] + c["origin_requests"] == c["requests"]
        assert c["origin_requests"] == c["origin_fetches_by_caches"], name  # caches' own count agrees
        assert c["hit_ratio"] == pytest.approx((c["requests"] - c["origin_requests"]) / c["requests"])
        assert c["hit_ratio"] >= c["local_hit_ratio"]
    rows = read_csv(out / "requests.csv")
    by_config: dict[str, int] = defaultdict(int)
    for x in rows:
        by_config[x["config"]] += 1
    assert by_config == {n: c["requests"] for n, c in res["configs"].items()}
    # the parent alone talks to the origin in the parent arrangement
    caches = [x for x in read_csv(out / "caches.csv") if x["config"] == "parent"]
    assert all(int(x["fetches_origin"]) == 0 for x in caches if x["cache"].startswith("edge"))
    parent = next(x for x in caches if x["cache"] == "parent")
    assert int(parent["fetches_origin"]) == res["configs"]["parent"]["origin_requests"]


def test_processes_are_gone_and_report_rebuilds(quick):
    out, _ = quick
    ports = [json.loads(f.read_text())["port"] for f in (out / "run").glob("*/*.json")]
    assert len(ports) >= 4 * 4
    assert not any(tcp_open("127.0.0.1", port) for port in ports)
    for f in ("report.md", "hierarchy.png", "local_hits_by_edge.png"):
        (out / f).unlink()
    from testbed.cli import main as cdnlab

    assert cdnlab(["report", str(out)]) == 0
    assert (out / "hierarchy.png").stat().st_size > 0 and "no emulated network" in (
        out / "report.md"
    ).read_text()


def test_plan_and_message_counting():
    p = {
        "edges": 3,
        "objects": 10,
        "object_bytes": 100,
        "entry_overhead_bytes": 0,
        "edge_capacity_objects": 2,
        "parent_capacity_objects": 6,
        "icp_timeout_ms": 50,
    }
    _, edges, parent = plan("icp", p, 1)
    assert parent is None and all(len(e.config.siblings) == 2 for e in edges)
    assert len({e.config.icp_port for e in edges}) == 3
    _, edges, parent = plan("parent", p, 1)
    assert parent is not None and all(e.config.parent_url == parent.url for e in edges)
    with pytest.raises(ValueError, match="unknown arrangement"):
        plan("mesh", p, 1)
    st = {
        "inter_cache": {
            "icp_client": {"queries_sent": 4, "replies_received": 1},
            "icp_server": {"hits_sent": 1, "misses_sent": 2},
            "peer_fetches": 1,
            "sibling_fetches": 1,
        },
        "fetches": {"parent": 2},
    }
    assert messages([st])["total"] == 4 + 3 + 2 * (1 + 1 + 2)


@pytest.mark.parametrize("arrangement,cooperation", [("independent", "none"), ("cluster", "cluster"),
                                                     ("icp", "icp"), ("parent", "parent")])
def test_the_loopback_configs_are_the_emulated_cdns_shape(tmp_path, arrangement, cooperation):
    """The experiment builds its origin and edges on the plan's fields (testbed.net.service_plan): every field
    it sets, the emulated CDN's planned services set too (its own ICP timeout aside), so a field added to
    the CDN's edges or origin cannot be missed here by a hand-written copy."""
    from testbed.net.service_plan import CdnOptions
    from testbed.net.spec import load_topology
    from testbed.plan import make_plan

    p = {"edges": 3, "objects": 10, "object_bytes": 100, "entry_overhead_bytes": 0, "edge_capacity_objects": 2,
         "parent_capacity_objects": 6, "icp_timeout_ms": 50}
    origin, edges, parent = plan(arrangement, p, 1)
    opts = CdnOptions(cooperation=cooperation, parent="e_na" if cooperation == "parent" else None)
    planned = make_plan(load_topology("globe"), cdn=opts, run_dir=tmp_path).services
    cdn_edge = next(s.config for s in planned if s.role == "edge" and s.host == "e_eu")
    cdn_origin = next(s.config for s in planned if s.role == "origin")
    for e in edges:
        assert e.config.model_fields_set - {"icp_timeout_ms"} <= cdn_edge.model_fields_set, e.name
        assert e.config.origin_url == origin.url and e.config.host == "127.0.0.1"
    if parent is not None:
        assert parent.config.model_fields_set <= cdn_edge.model_fields_set
    assert origin.config.model_fields_set <= cdn_origin.model_fields_set
    assert origin.config.catalog.objects == 10
