"""Experiment ``zipf`` (trace-driven, no emulation): its quick run makes physical sense and rebuilds."""

from __future__ import annotations

import json

import pytest

from experiments.framework import run_experiment
from experiments.zipf import fit_zipf_slope, linear_fit, rank_frequency, simulate, zipf_trace
from testbed.cli import main as cdnlab
from testbed.services.eviction import LRU


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("zipf")
    return out, run_experiment("zipf", out, quick=True)


def test_rank_frequency_is_a_line_of_slope_minus_alpha(quick):
    _, res = quick
    assert res["alphas"] == [0.6, 0.8, 1.0]
    for a in res["alphas"]:
        assert abs(res["fitted_slopes"][str(a)] - (-a)) <= 0.1, (a, res["fitted_slopes"])


def test_hit_ratio_grows_with_size_and_alpha_and_lfu_beats_fifo(quick):
    _, res = quick
    hr = res["hit_ratio"]
    assert set(hr) == {"LRU", "LFU", "FIFO"}
    for pol, by_alpha in hr.items():
        for a, pts in by_alpha.items():
            sizes = [c for c, _ in pts]
            ratios = [h for _, h in pts]
            assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes)
            assert all(lo < hi for lo, hi in zip(ratios, ratios[1:], strict=False)), (pol, a, ratios)
            assert 0 < ratios[0] and ratios[-1] < 1
        alphas = sorted(by_alpha, key=float)
        for i in range(len(by_alpha[alphas[0]])):
            at_size = [by_alpha[a][i][1] for a in alphas]
            assert at_size == sorted(at_size) and at_size[0] < at_size[-1], (pol, i, at_size)
    for a in res["alphas"]:
        for (_, lfu), (_, fifo) in zip(hr["LFU"][str(a)], hr["FIFO"][str(a)], strict=True):
            assert lfu >= fifo
    for a in res["alphas"]:
        assert res["log_linear_r2"][str(a)] > 0.9, res["log_linear_r2"]
    for pol in res["policies"]:  # byte hit ratio is a ratio too, and grows with size
        for pts in res["byte_hit_ratio"][pol].values():
            assert all(0 <= b <= 1 for _, b in pts) and pts[-1][1] > pts[0][1]


def test_report_is_rebuilt_from_raw_data(quick, capsys):
    out, res = quick
    products = [out / n for n in ("report.md", "rank_frequency.png", "hit_ratio.png", "hit_ratio_log.png")]
    for p in products:
        assert p.exists()
        p.unlink()
    assert cdnlab(["report", str(out)]) == 0
    for p in products:
        assert p.exists() and p.stat().st_size > 0
    text = (out / "report.md").read_text()
    assert "Zipf" in text and "Breslau" in text and f"{res['fitted_slopes']['0.8']:.3g}" in text
    assert json.loads((out / "results.json").read_text())["meta"]["experiment"] == "zipf"


def test_pieces():
    slope, _, r2 = linear_fit([0, 1, 2], [1, 3, 5])
    assert slope == pytest.approx(2) and r2 == pytest.approx(1)
    trace = zipf_trace(200, 1.0, 5000, seed=3)
    assert trace == zipf_trace(200, 1.0, 5000, seed=3)  # seeded
    counts = rank_frequency(trace)
    assert counts == sorted(counts, reverse=True) and sum(counts) == 5000
    assert fit_zipf_slope(counts, 5)[0] == pytest.approx(-1.0, abs=0.15)
    # a cache holding everything misses only the first request of each object
    s = simulate(trace, [10] * 200, 10 * 200, LRU, warmup=0)
    assert s["requests"] - s["hits"] == len(set(trace))
    with pytest.raises(ValueError):
        linear_fit([1], [1])
