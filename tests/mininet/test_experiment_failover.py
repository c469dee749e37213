"""The failover experiment: anycast < redirect < DNS outages; DNS bounded by TTL + detection; TCP breaks."""

from __future__ import annotations

from pathlib import Path

import pytest

from experiments.framework import load_spec, read_csv, run_experiment

pytestmark = pytest.mark.mininet


@pytest.fixture(scope="module")
def failover_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("failover")
    return run_experiment("failover", out, quick=True), out


@pytest.fixture(scope="module")
def failover(failover_run) -> dict:
    return failover_run[0]


def test_recovery_is_through_another_edge_after_a_confirmed_failure(failover_run) -> None:
    _, out = failover_run
    trials = read_csv(out / "trials.csv")
    assert trials
    for t in trials:
        assert t["new_edge"] and t["new_edge"] != t["victim"], t
        assert 0 <= float(t["inject_ms"]) < 5000, t  # the failure took effect, and was stamped then


def test_every_method_recovers_and_keys_exist(failover) -> None:
    for m in ("anycast", "dns", "redirect"):
        s = failover["methods"][m]
        assert s["outage_ms"] is not None, f"{m} never recovered"
        assert s["failed_requests"] >= 0


def test_outages_are_ordered_as_the_mechanisms_predict(failover) -> None:
    o = {m: failover["methods"][m]["outage_ms"] for m in ("anycast", "dns", "redirect")}
    assert o["anycast"] < o["redirect"] < o["dns"], o


def test_outages_are_bounded_by_their_mechanisms(failover) -> None:
    spec = load_spec("failover")
    p = {**spec.params, **spec.quick}
    # a health checker probing every `interval` notices a death after `fall` failed probes; the first may
    # come up to one interval after the failure and the last takes up to its timeout (0.8 interval)
    detect_ms = (p["health_fall"] + 1.8) * p["health_interval"] * 1000
    slack = 600  # the prober's interval, resolver and scheduling
    assert failover["methods"]["anycast"]["outage_ms"] < 500  # controller liveness probes, tens of ms
    assert failover["methods"]["redirect"]["outage_ms"] <= detect_ms + slack
    # DNS: the cached answer lives up to a TTL; a query made before detection gets the dead edge again
    assert failover["methods"]["dns"]["outage_ms"] <= p["dns_ttl"] * 1000 + detect_ms + slack
    # and DNS cannot beat detection: until the mapping server has seen `fall` failed probes (at least
    # fall - 1 intervals after the failure) every fresh answer still names the dead edge
    assert failover["methods"]["dns"]["outage_ms"] >= 0.9 * (p["health_fall"] - 1) * p["health_interval"] * 1000
    assert failover["methods"]["dns"]["outage_ms"] > failover["methods"]["anycast"]["outage_ms"]


def test_the_dns_failure_lands_at_the_start_of_a_ttl_and_the_cached_answer_outlives_it(failover) -> None:
    ttl_ms = load_spec("failover").params["dns_ttl"] * 1000
    dns = failover["methods"]["dns"]
    assert dns["ttl_left_ms"] is not None, "the resolver never refilled its answer before the failure"
    assert ttl_ms - 500 < dns["ttl_left_ms"] <= ttl_ms, dns
    # until the cached answer expires every fetch goes to the dead edge: no recovery before it
    assert dns["outage_ms"] >= dns["ttl_left_ms"] - 100, dns


def test_anycast_route_change_breaks_tcp_only_in_destination_mode(failover) -> None:
    tcp = failover["anycast_tcp"]
    assert tcp["destination"]["broken"] == tcp["destination"]["connections"] > 0
    assert tcp["affinity"]["broken"] == 0
