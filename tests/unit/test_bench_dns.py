"""`cdnlab bench dns`: reading dnsperf's figures (the benchmark itself needs dnsperf and nsd)."""

from __future__ import annotations

from benchmarks.dns import parse_rcodes


def test_rcodes_are_read_from_dnsperf_output():
    out = "  Queries lost:         3 (0.01%)\n\n  Response codes:       NOERROR 9990 (99.90%), SERVFAIL 7 (0.07%)\n"
    assert parse_rcodes(out) == {"NOERROR": 9990, "SERVFAIL": 7}
    assert parse_rcodes("no statistics") == {}
