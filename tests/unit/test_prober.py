"""Failover gap analysis of prober samples (pure functions) and of a pcap written with Scapy."""

from __future__ import annotations

import json

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.packet import Raw
from scapy.utils import wrpcap

from testbed.measure.prober import (
    analyze,
    failed_count,
    first_success_after,
    load_samples,
    outages,
    recovery,
    response_times_from_pcap,
    segments,
    switchovers,
    wire_gaps,
)


def trace() -> list[dict]:
    """20 ms probes: edge1 answers, then edge1 dies at t=1.1 (probes 5..9 fail), edge2 takes over."""
    rows = []
    for seq in range(15):
        t = 1.0 + seq * 0.02
        if seq < 5:
            rows.append({"t": t, "seq": seq, "served_by": "edge1", "error": ""})
        elif seq < 10:
            rows.append({"t": t, "seq": seq, "served_by": "", "error": "TimeoutError: "})
        else:
            rows.append({"t": t, "seq": seq, "served_by": "edge2", "error": "", "status": 200})
    return rows[::-1]  # order must not matter


def test_outage_interval_and_gap():
    (o,) = outages(trace())
    assert (o.failed, o.first_seq, o.last_seq) == (5, 5, 9)
    assert o.start == pytest.approx(1.10) and o.end == pytest.approx(1.20)
    assert o.duration_s == pytest.approx(0.10) and o.gap_s == pytest.approx(0.12)
    assert (o.edge_before, o.edge_after) == ("edge1", "edge2")
    assert outages(trace(), min_failed=6) == []


def test_first_success_after_failure_and_counts():
    p = first_success_after(trace(), 1.105)
    assert p is not None and p.seq == 10 and p.served_by == "edge2"
    assert failed_count(trace()) == 5
    assert failed_count(trace(), since=1.15) == 2
    r = recovery(trace(), 1.105)
    assert r["failed_after"] == 4 and r["recovery_s"] == pytest.approx(0.095)
    assert (r["edge_before"], r["edge_after"]) == ("edge1", "edge2")
    assert first_success_after(trace(), 5.0) is None


def test_segments_and_switchovers():
    segs = segments(trace())
    assert [(s.edge, s.probes, s.first_seq, s.last_seq) for s in segs] == [
        ("edge1", 5, 0, 4),
        ("edge2", 5, 10, 14),
    ]
    assert switchovers(segs) == [(pytest.approx(1.2), "edge1", "edge2")]
    # a flap back to edge1 is a second switchover; failures alone do not split a segment
    rows = trace() + [{"t": 2.0, "seq": 20, "served_by": "edge1", "error": ""}]
    assert [s.edge for s in segments(rows)] == ["edge1", "edge2", "edge1"]


def test_never_recovered_and_http_errors_count_as_failures():
    rows = [
        {"t": 0.0, "seq": 0, "served_by": "e", "error": ""},
        {"t": 0.1, "seq": 1, "served_by": "e", "error": "", "status": 503},
        {"t": 0.2, "seq": 2, "served_by": "", "error": "ConnectionRefusedError"},
    ]
    (o,) = outages(rows)
    assert o.failed == 2 and o.end is None and o.duration_s is None and o.gap_s is None
    a = analyze(rows, t_fail=0.05)
    assert a["failed"] == 2 and a["recovery"]["first_success_t"] is None and a["longest_outage_s"] == 0.0


def test_analyze_is_json_and_load_skips_bad_lines(tmp_path):
    f = tmp_path / "probes.jsonl"
    lines = [json.dumps(r) for r in trace()]
    lines += ["{not json", json.dumps({"t": 9, "path": "/x", "error": ""}), ""]  # garbage, a non-probe fetch
    f.write_text("\n".join(lines))
    probes, bad = load_samples(f)
    assert len(probes) == 15 and bad == 1 and [p.seq for p in probes] == list(range(15))
    a = analyze(probes, t_fail=1.1)
    json.dumps(a)
    assert a["probes"] == 15 and a["failed"] == 5 and len(a["outages"]) == 1
    assert a["switchovers"] == [{"t": pytest.approx(1.2), "from": "edge1", "to": "edge2"}]
    assert a["longest_gap_s"] == pytest.approx(0.12)


def test_gap_on_the_wire_from_a_pcap(tmp_path):
    pkts = []
    for i, t in enumerate([0.0, 0.02, 0.04, 0.5, 0.52]):
        resp = (
            Ether()
            / IP(src="10.0.0.1", dst="10.0.1.1")
            / TCP(sport=80, dport=40000 + i)
            / Raw(b"HTTP/1.1 200 OK")
        )
        resp.time = 100 + t
        ack = Ether() / IP(src="10.0.1.1", dst="10.0.0.1") / TCP(sport=40000 + i, dport=80, flags="A")
        ack.time = 100.3 + t / 10  # client segments without payload: not responses
        pkts += [resp, ack]
    p = tmp_path / "wire.pcap"
    wrpcap(str(p), pkts)
    times = response_times_from_pcap(p, 80)
    assert len(times) == 5
    (gap,) = wire_gaps(times, 0.1)
    assert gap[0] == pytest.approx(100.04) and gap[1] == pytest.approx(100.5)
