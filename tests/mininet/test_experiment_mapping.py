"""The mapping experiment's --quick run shows the end-user mapping effect (Chen et al., SIGCOMM'15)."""

from __future__ import annotations

import pytest

from experiments.framework import run_experiment
from testbed.net.spec import load_topology

pytestmark = pytest.mark.mininet


def test_mapping_quick(tmp_path):
    res = run_experiment("mapping", tmp_path, quick=True)
    c = res["cases"]
    for case in ("resolver", "ecs"):
        for g in ("near_resolver", "far_resolver"):
            s = c[case][g]
            assert s["ok"] == s["fetches"] > 0, (case, g, s)
    t = load_topology("mapping")
    # without ECS the far-resolver clients are mapped to their resolver's region: far
    far_min = min(2 * t.path_delay_ms(a, b) for a, b in (("n_e", "n_c"), ("n_c", "n_w")))
    assert c["resolver"]["far_resolver"]["mapping_distance_ms_p50"] >= far_min - 1
    assert c["resolver"]["far_resolver"]["optimal_edge_fraction"] == 0
    # ECS lowers their mapping distance (to the nearest edge) and their RTT
    assert (
        c["ecs"]["far_resolver"]["mapping_distance_ms_p50"]
        < c["resolver"]["far_resolver"]["mapping_distance_ms_p50"]
    )
    assert c["ecs"]["far_resolver"]["optimal_edge_fraction"] == 1
    assert c["ecs"]["far_resolver"]["rtt_ms_p50"] < c["resolver"]["far_resolver"]["rtt_ms_p50"] / 2
    # near-resolver clients see little change
    for case in ("resolver", "ecs"):
        assert c[case]["near_resolver"]["mapping_distance_ms_p50"] == 0
    # (RTTs are measured TCP connects: bounded against the far mapping, not compared to the millisecond)
    far_rtt = c["resolver"]["far_resolver"]["rtt_ms_p50"]
    for case in ("resolver", "ecs"):
        assert c[case]["near_resolver"]["optimal_edge_fraction"] == 1
        assert c[case]["near_resolver"]["rtt_ms_p50"] < far_rtt / 2
    assert (tmp_path / "mapping.png").exists()
