"""The multicast experiment's --quick run: ingestion by multicast saves origin and link bytes as K grows."""

from __future__ import annotations

import pytest

from experiments.framework import run_experiment

pytestmark = pytest.mark.mininet


def test_multicast_quick(tmp_path):
    res = run_experiment("multicast", tmp_path, quick=True)
    ks = res["edges"]
    assert ks == [2, 4] and res["complete"]
    n = len(ks)
    for key in (
        "multicast_link_bytes",
        "unicast_link_bytes",
        "origin_bytes_multicast",
        "origin_bytes_unicast",
    ):
        assert len(res[key]) == n and all(v > 0 for v in res[key])
    payload = res["meta"]["params"]["objects"] * res["meta"]["params"]["object_kb"] * 1024
    for i, k in enumerate(ks):
        # the origin sends each object once by multicast, K times by unicast: ~1/K (+ headers, repairs)
        assert res["origin_bytes_multicast"][i] >= payload
        assert res["origin_bytes_unicast"][i] >= k * payload
        assert res["origin_bytes_multicast"][i] / res["origin_bytes_unicast"][i] == pytest.approx(
            1 / k, rel=0.25
        )
        # fewer bytes on the links in total than K unicast copies over 4-link paths
        assert res["multicast_link_bytes"][i] < res["unicast_link_bytes"][i]
    # unicast link bytes grow linearly with K, multicast sublinearly
    assert res["unicast_link_bytes"][1] / res["unicast_link_bytes"][0] == pytest.approx(2.0, rel=0.1)
    assert 1.0 < res["multicast_link_bytes"][1] / res["multicast_link_bytes"][0] < 1.9
    # tree size over unicast path length: sublinear in K, as Chuang and Sirbu's m^0.8
    assert 0.3 < res["chuang_sirbu_exponent"] < 1.0
    assert (tmp_path / "multicast.png").exists()
