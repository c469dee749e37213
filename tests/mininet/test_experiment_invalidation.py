"""The invalidation experiment's --quick run: multicast invalidation closes the stale window TTL leaves open.

Set ``CDNLAB_INVALIDATION_TEST_SWITCH_PREFIX=mk`` to run on a copy of ``mini`` with renamed switches
(s1 -> mk1, ...) so the test does not collide with another ``mini`` being built on the machine.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from experiments.framework import read_csv, run_experiment
from testbed.net.spec import rename_switches, resolve_topology_path

pytestmark = pytest.mark.mininet


def _topology(tmp_path: Path) -> str | None:
    prefix = os.environ.get("CDNLAB_INVALIDATION_TEST_SWITCH_PREFIX")
    if not prefix:
        return None  # the spec's topology: mini
    data = rename_switches(yaml.safe_load(resolve_topology_path("mini").read_text()), prefix)
    p = tmp_path / f"{prefix}mini.yaml"
    p.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(p)


def test_invalidation_quick(tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = run_experiment("invalidation", out, quick=True, topology=_topology(tmp_path))
    print(res["summary"])
    ttl_ms = res["ttl_s"] * 1000
    assert res["ttl_s"] == 10 and set(res["per_edge"]) == {"e1", "e2"}
    assert res["all_saw_new_version"]  # the update reached every edge in both runs
    for e, v in res["per_edge"].items():
        # TTL only: the old version stays until the copy expires, ~ the remaining max-age
        assert v["ttl_only"] > 0.5 * ttl_ms, (e, v)
        assert v["expected_ttl_window_ms"] is not None
        assert abs(v["ttl_only"] - v["expected_ttl_window_ms"]) < 1000 + 200, (e, v)  # Date: 1 s resolution
        # multicast: one trip to the edge plus up to a probe interval, far below the TTL window
        assert v["multicast"] < 1000 and v["multicast"] < v["ttl_only"] / 10, (e, v)
        assert v["invalidation_latency_ms"] is not None and 0 <= v["invalidation_latency_ms"] < 1000
        assert v["old_after_applied"] == 0  # nobody got the old version once the purge was applied
    s = res["stale_window_ms"]
    assert s["multicast"] < 1000 < 0.5 * ttl_ms < s["ttl_only"]
    assert res["old_after_applied"] == 0
    # the raw data supports it: after the purge at each edge every probe there got the new version
    rows = [x for x in read_csv(out / "probes.csv") if x["phase"] == "multicast" and not x["error"]]
    new_v = res["phases"]["multicast"]["new_version"]
    for e, a in res["phases"]["multicast"]["applied"].items():
        after = [x for x in rows if x["served_by"] == e and float(x["t"]) > a["applied_at"]]
        assert after and all(int(x["version"]) == new_v for x in after), e
    assert (out / "invalidation.png").exists() and "stale window" in (out / "report.md").read_text()
