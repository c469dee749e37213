"""``cdnlab bench failover`` end to end, as a student of the anycast lab runs it: the product's builder and Ryu
controller on ``mini``, every failure kind and anycast mode, the figures and the JSON line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.mininet
ROOT = Path(__file__).resolve().parents[2]
KEYS = ("destination_process", "destination_link", "affinity_process", "affinity_link")


def test_bench_failover_fails_the_nearest_member_and_times_every_kind_and_mode() -> None:
    pytest.importorskip("ryu", reason="the benchmark measures the Ryu controller's anycast")
    r = subprocess.run(
        [sys.executable, "-m", "testbed.cli", "bench", "failover", "--trials", "1", "--json"],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "c1 reaches http 10.0.0.200 at e1" in r.stdout  # c1's own PoP: the nearest member
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["trials"] == 4
    for k in KEYS:  # another member answered within the 10 s the benchmark waits
        assert 0 < out[f"{k}_ms_p50"] < 10_000, (k, out)
    if "link_detect_ms_p50" in out:  # the controller logged the port-status of a link trial within 5 s
        assert 0 < out["link_detect_ms_p50"] < 5_000
    else:  # and when it did not, the benchmark says so
        assert out["link_detect_missed"] == 2 and "not logged by the controller" in r.stdout, r.stdout
    assert out["anycast_failover_ms_max"] >= out["anycast_failover_ms_p50"]
