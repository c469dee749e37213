"""The caching experiment's --quick run makes physical sense (lecture slides 4-6)."""

from __future__ import annotations

import json

import pytest

from experiments.framework import run_experiment

pytestmark = pytest.mark.mininet


def test_caching_quick(tmp_path):
    res = run_experiment("caching", tmp_path, quick=True)
    lec = res["lecture"]
    assert set(res) >= {
        "utilization_no_cache",
        "utilization_with_cache",
        "hit_ratio",
        "mean_delay_no_cache_s",
        "mean_delay_with_cache_s",
        "lecture",
    }
    # the analytical figures for the lecture's parameters
    assert lec["utilization_no_cache"] == pytest.approx(1.0)
    assert lec["utilization_with_cache"] == pytest.approx(0.533, abs=0.005)
    assert lec["mean_delay_with_cache_s"] == pytest.approx(0.806, abs=0.005)
    # measured utilisation within 10 points of the analytical value, in both cases
    assert abs(res["utilization_no_cache"] - lec["utilization_no_cache"]) <= 0.10
    assert abs(res["utilization_with_cache"] - lec["utilization_with_cache"]) <= 0.10
    # the workload gives ~60 % hits, and the cache makes requests faster on average
    assert res["hit_ratio"] == pytest.approx(0.6, abs=0.05)
    assert res["mean_delay_with_cache_s"] < res["mean_delay_no_cache_s"]
    # a miss costs at least one Internet round trip (~2 s); a hit is a LAN fetch
    wc = res["cases"]["with_cache"]
    assert wc["mean_delay_miss_s"] > 1.8
    assert wc["mean_delay_hit_s"] < 0.5
    # without a cache the link saturates, so requests queue beyond the bare round trip
    assert res["cases"]["no_cache"]["p90_delay_s"] > 2.5
    # raw data and report are there
    assert (tmp_path / "samples_no_cache.csv").exists() and (tmp_path / "link_series.csv").exists()
    assert "![comparison](comparison.png)" in (tmp_path / "report.md").read_text()
    assert (tmp_path / "comparison.png").stat().st_size > 0
    assert json.loads((tmp_path / "results.json").read_text())["meta"]["quick"] is True
