"""``cdnlab bench startup`` end to end on a small chain, as a researcher runs it: both builds, every link
shaped, figures and the JSON line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.mininet
ROOT = Path(__file__).resolve().parents[2]


def test_bench_startup_builds_both_networks_and_reports_every_key() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "testbed.cli", "bench", "startup", "--switches", "2", "--hosts-per-switch", "3",
         "--runs", "2", "--json"],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.strip().splitlines()
    result = json.loads(lines[-1])
    assert result["hosts"] == 6 and result["links"] == 7 and result["bare_links"] == 7  # 6 host links + 1
    if result["link_mode"] == "relay":  # not one process per link (kernel netem needs none)
        assert 1 <= result["relay_procs"] <= len(os.sched_getaffinity(0))
    else:
        assert result["link_mode"] == "netem" and result["relay_procs"] == 0
    assert result["runs"] == 2 and len(result["ratios"]) == 2
    assert result["seconds"] > 0 and result["bare_seconds"] > 0 and result["rss_mb"] > result["bare_rss_mb"] > 0
    assert set(result["targets_met"]) == {"seconds_le_30_every_run", "ratio_le_1.3_every_run"}
    # runs alternate which build goes first
    order = [ln.split()[2].rstrip(":") for ln in lines if ln.startswith("run ")]
    assert order == ["bare", "cdnlab", "cdnlab", "bare"], lines
