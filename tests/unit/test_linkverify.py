"""Link verification by measurement, its pure parts: link classes of a topology and the judgements."""

from __future__ import annotations

from testbed.net import linkverify
from testbed.net.linkverify import ClassCheck, LinkClass
from testbed.net.spec import load_topology


def test_institutional_has_three_link_classes_each_naming_its_links():
    classes = linkverify.link_classes(load_topology("institutional"))
    assert len(classes) == 3
    access = LinkClass(500.0, 500.0, 1.5, 0.0, 100)
    assert access in classes and classes[access]  # the 500 ms, 1.5 Mbit/s access link with its queue
    assert access.describe() == "500 ms, 1.5 Mbit/s, queue 100"
    assert access.link_kwargs() == {"delay_ms": 500.0, "delay_ms_ba": 500.0, "bw": 1.5, "max_queue_size": 100}


def test_an_asymmetric_link_is_its_own_class():
    lc = LinkClass(5.0, 45.0, None, 0.0, None)
    assert lc in linkverify.link_classes(load_topology("catchment"))
    assert lc.describe() == "5/45 ms"


def test_rtt_is_judged_by_the_median_and_never_shorter_than_configured():
    assert linkverify.judge_rtt([40.3, 40.4, 40.2], 40.0, exact=True) is None
    assert "off by +5.00 ms" in linkverify.judge_rtt([45.0] * 5, 40.0, exact=True)
    assert linkverify.judge_rtt([45.0] * 5, 40.0, exact=False) is None  # TCG: only the lower bound
    assert "shorter than the configured" in linkverify.judge_rtt([30.0, 41.0], 40.0, exact=False)
    assert linkverify.judge_rtt([], 40.0, exact=True) == "no ping answered"


def test_rate_queue_and_loss_tolerances():
    assert linkverify.judge_rate(1.48, 1.5, exact=True) is None
    assert "off by -20.0 %" in linkverify.judge_rate(1.2, 1.5, exact=True)
    assert linkverify.judge_rate(1.2, 1.5, exact=False) is None  # TCG may not fill it
    assert "off by +13.3 %" in linkverify.judge_rate(1.7, 1.5, exact=False)  # never above the cap, TCG too
    assert linkverify.judge_queue(101, 100) is None
    assert "off by -38" in linkverify.judge_queue(62, 100)  # Mininet's TCLink on the access link
    assert linkverify.judge_queue(170, 167) is None  # 2 % of a large queue
    assert linkverify.judge_loss(10.8, 10, 5000) is None
    assert "off by +3.00 points" in linkverify.judge_loss(13.0, 10, 5000)


def test_the_failure_names_each_bad_class_its_links_and_by_how_much():
    good = ClassCheck("10 ms", ["c1-s1"], "relay")
    bad = ClassCheck("500 ms, 1.5 Mbit/s, queue 100", ["u1-s1", "u2-s1"], "netem",
                     problems=["queue 62 packets, expected 100 (off by -38)"])
    assert linkverify.failure([good]) is None
    msg = linkverify.failure([good, bad])
    assert "500 ms, 1.5 Mbit/s, queue 100 (u1-s1, u2-s1; netem): queue 62 packets" in msg
    assert "10 ms" not in msg
    s = linkverify.summary([good, bad])
    assert s["classes"] == 2 and s["ok"] is False and s["checks"][1]["problems"]


def test_coarse_timing_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("CDNLAB_TIMING", "coarse")
    assert linkverify.exact_timing() is False
    monkeypatch.delenv("CDNLAB_TIMING")
    assert linkverify.exact_timing() is True
