"""``cdnlab bench soak --quick`` end to end on globe, as a researcher runs it: two 30-second minutes of the
Zipf workload through anycast, DNS and redirect, an edge killed and recovered in each, the origin down once;
every key of the JSON line, and no error outside the failure windows."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.mininet, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


def test_bench_soak_quick_runs_the_workload_through_its_failures(pytestconfig: pytest.Config) -> None:
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "testbed.cli",
            "bench",
            "soak",
            "--quick",
            "--json",
            "--links",
            pytestconfig.getoption("links"),
            "--datapath",
            pytestconfig.getoption("datapath"),
        ],
        capture_output=True,
        text=True,
        timeout=400,
        cwd=ROOT,
    )
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["topo"] == "globe" and out["minutes"] == 2
    # 8 clients x 3 methods x 1/s x 2 x 30 s: about 1440 requests, all through the three methods
    assert 1000 < out["requests"] < 2000, out["requests"]
    assert set(out["errors_by_method"]) == {"anycast", "dns", "redirect"}
    assert out["errors_outside_failover"] == 0, out["unexplained_examples"]
    assert out["errors"] == out["errors_explained"]
    kinds = [(w["kind"], w["host"]) for w in out["failure_windows"]]
    assert kinds.count(("origin", "origin")) == 1 and len([k for k in kinds if k[0] == "edge"]) == 2
    assert all(w["end"] > w["start"] for w in out["failure_windows"])
    # one entry per service host; the edges killed in a two-minute run are not measured, the others are
    services = set(out["rss_growth_pct"])
    assert services == set(out["fds_growth"]) and {"origin", "redir", "dns_hi", "r_eu", "e_as"} <= services
    assert out["rss_growth_pct"]["e_as"] is not None and out["fds_growth"]["redir"] is not None
    # the emulation's own processes are sampled too: the controller, and each relay when links are relayed
    assert out["rss_growth_pct"]["controller"] is not None
    relays = [s for s in services if s.startswith("relay-")]
    assert bool(relays) == (out["link_mode"] == "relay"), (out["link_mode"], sorted(services))
    assert out["rss_growth_pct"]["e_na"] is None and out["rss_growth_pct"]["origin"] is None  # both restarted
    resolvers = [life for life in out["lifetimes"] if life["host"] == "r_eu"]
    assert resolvers and resolvers[0]["processes"] >= 2  # the wrapper and its unbound
    assert 0 < out["cache_bytes_max"] <= out["cache_capacity_bytes"] == 2 * 2**20
    assert set(out["targets"]) == {
        "errors_outside_failover",
        "rss_growth_pct",
        "fds_growth",
        "cache_bytes_max",
    }
    assert out["targets"]["errors_outside_failover"]["met"] and out["targets"]["cache_bytes_max"]["met"]
    assert out["build_seconds"] > 0 and out["teardown_seconds"] >= 0 and out["load_seconds"] >= 60
