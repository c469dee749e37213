"""The catchment experiment's --quick run: the suboptimal share is computed correctly against the delays."""

from __future__ import annotations

import pytest

from experiments.catchment import configured_rtt_ms, model, routing_choice
from experiments.framework import run_experiment
from testbed.net.spec import load_topology

pytestmark = pytest.mark.mininet


def test_model_of_catchment_topology():
    t = load_topology("catchment")
    # the asymmetric link: 5 ms towards PoP 1 is the routing metric, the round trip is 2 + 50 + 2
    assert routing_choice(t, "c5a", ["e1", "e2", "e3"]) == "e1"
    assert configured_rtt_ms(t, "c5a", "e1") == 54.0
    assert configured_rtt_ms(t, "c5a", "e3") == 24.0
    clients = [h.name for h in t.hosts_with("client")]
    m = model(t, clients, ["e1", "e2", "e3"])
    assert sorted(c for c in clients if m[c]["suboptimal"]) == ["c5a", "c5b"]


def test_catchment_quick(tmp_path):
    res = run_experiment("catchment", tmp_path, quick=True)
    t = load_topology("catchment")
    rows = res["clients"]
    assert len(rows) == 10
    for x in rows:
        # every client answered by exactly one edge, the one the routing metric picks
        assert x["anycast_edge"] == x["model_anycast_edge"], x
        assert "/" not in x["anycast_edges_seen"], x
        # measured RTTs rank the edges as the configured delays do, and are close to them
        assert x["lowest_rtt_edge"] == x["model_lowest_rtt_edge"], x
        for e in res["members"]:
            assert x[f"rtt_{e}_ms"] == pytest.approx(configured_rtt_ms(t, x["client"], e), abs=8), (x, e)
    # the fraction is computed from what was measured, and agrees with the model
    sub = [x for x in rows if x["anycast_edge"] != x["lowest_rtt_edge"]]
    assert res["suboptimal_fraction"] == pytest.approx(len(sub) / len(rows))
    assert res["suboptimal_fraction"] == res["model"]["suboptimal_fraction"] == 0.2
    assert res["extra_rtt_ms_p50"] == pytest.approx(res["model"]["extra_rtt_ms_p50"], abs=8)
