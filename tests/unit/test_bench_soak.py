"""``cdnlab bench soak``'s pure parts: the failure plan, the grace after a window, which errors a failure
window explains, resource growth per process lifetime and the targets block."""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks import soak

EDGE, OTHER_EDGE, VIP, RESOLVER, REDIRECTOR = "10.2.3.1", "10.2.1.4", "10.2.255.1", "10.2.3.3", "10.2.1.3"
GRACE = {"anycast": 5.14, "dns": 26.4, "redirect": 6.4}


def row(
    t: float,
    via: str = "anycast",
    *,
    error: str = "",
    status: int = 0,
    total_ms: float = 10.0,
    error_addr: str = "",
    edge_ip: str = "",
) -> dict[str, Any]:
    return {
        "t": t,
        "via": via,
        "client": "c_eu1",
        "path": "/img/1.jpg",
        "error": error,
        "status": status or (0 if error else 200),
        "total_ms": total_ms,
        "error_addr": error_addr,
        "edge_ip": edge_ip,
    }


def refused(t: float, via: str, addr: str, total_ms: float = 1.0) -> dict[str, Any]:
    return row(t, via, error="ConnectionRefusedError: refused", error_addr=f"{addr}:80", total_ms=total_ms)


EDGE_WINDOW = soak.Window("edge", "e_eu", 100.0, 115.0, frozenset({EDGE, VIP}))
ORIGIN_WINDOW = soak.Window("origin", "origin", 200.0, 211.0, frozenset({EDGE, OTHER_EDGE, VIP}))


# -- grace ------------------------------------------------------------------------------------------------
def test_grace_comes_from_the_settings_of_each_method() -> None:
    g = soak.grace_by_method(
        request_timeout_s=5,
        dns_ttl=20,
        health_interval=0.5,
        health_timeout=0.4,
        health_fall=2,
        probe_interval_ms=20,
        probe_timeout_ms=60,
        probe_threshold=2,
    )
    assert g == {"anycast": pytest.approx(5.1), "dns": pytest.approx(26.4), "redirect": pytest.approx(6.4)}
    # each setting moves the method it governs, and only that one
    longer_ttl = soak.grace_by_method(
        request_timeout_s=5,
        dns_ttl=60,
        health_interval=0.5,
        health_timeout=0.4,
        health_fall=2,
        probe_interval_ms=20,
        probe_timeout_ms=60,
        probe_threshold=2,
    )
    assert longer_ttl["dns"] == pytest.approx(66.4) and longer_ttl["redirect"] == g["redirect"]
    slow_health = soak.grace_by_method(
        request_timeout_s=5,
        dns_ttl=20,
        health_interval=2,
        health_timeout=1,
        health_fall=3,
        probe_interval_ms=20,
        probe_timeout_ms=60,
        probe_threshold=2,
    )
    assert slow_health["redirect"] == pytest.approx(12.0) and slow_health["anycast"] == g["anycast"]
    slow_probes = soak.grace_by_method(
        request_timeout_s=5,
        dns_ttl=20,
        health_interval=0.5,
        health_timeout=0.4,
        health_fall=2,
        probe_interval_ms=80,
        probe_timeout_ms=240,
        probe_threshold=3,
    )
    assert slow_probes["anycast"] == pytest.approx(5.48) and slow_probes["dns"] == g["dns"]


# -- classification ---------------------------------------------------------------------------------------
def test_a_clean_run_has_no_errors() -> None:
    t = soak.classify([row(50.0), row(105.0, "dns", edge_ip=EDGE)], [EDGE_WINDOW], GRACE)
    assert (t.requests, t.errors, t.explained, t.outside) == (2, 0, 0, 0)


def test_errors_inside_a_window_at_the_failed_edge_are_explained() -> None:
    rows = [
        refused(101.0, "dns", EDGE),
        refused(110.0, "redirect", EDGE),
        row(102.0, "anycast", error="TimeoutError: ", error_addr=f"{VIP}:80", total_ms=5000),
    ]
    t = soak.classify(rows, [EDGE_WINDOW], GRACE)
    assert (t.errors, t.explained, t.outside) == (3, 3, 0)
    assert t.by_window == {0: 3}


def test_an_error_away_from_every_window_is_outside() -> None:
    t = soak.classify([refused(50.0, "anycast", VIP), refused(300.0, "dns", EDGE)], [EDGE_WINDOW], GRACE)
    assert (t.errors, t.explained, t.outside) == (2, 0, 2)
    assert t.by_method["anycast"]["outside"] == 1 and t.by_method["dns"]["outside"] == 1
    assert [e["t"] for e in t.examples] == [50.0, 300.0] and t.examples[0]["error_addr"] == f"{VIP}:80"


def test_grace_after_the_window_depends_on_the_method() -> None:
    # 10 s after the edge is back: a DNS answer cached by a resolver may still be in use, an anycast route not
    late = 115.0 + 10.0
    t = soak.classify([refused(late, "dns", EDGE), refused(late, "anycast", VIP)], [EDGE_WINDOW], GRACE)
    assert t.by_method["dns"] == {"requests": 1, "errors": 1, "explained": 1, "outside": 0}
    assert t.by_method["anycast"] == {"requests": 1, "errors": 1, "explained": 0, "outside": 1}
    # the bounds: just inside and just beyond end + grace
    inside = soak.classify([refused(115.0 + GRACE["anycast"] - 0.01, "anycast", VIP)], [EDGE_WINDOW], GRACE)
    beyond = soak.classify([refused(115.0 + GRACE["anycast"] + 0.01, "anycast", VIP)], [EDGE_WINDOW], GRACE)
    assert (inside.outside, beyond.outside) == (0, 1)


def test_a_request_in_flight_when_the_edge_dies_is_explained_but_one_that_ended_before_is_not() -> None:
    in_flight = row(99.0, error="ConnectionResetError: reset", error_addr=f"{EDGE}:80", total_ms=1500)
    ended_before = row(99.0, error="ConnectionResetError: reset", error_addr=f"{EDGE}:80", total_ms=500)
    t = soak.classify([in_flight, ended_before], [EDGE_WINDOW], GRACE)
    assert (t.explained, t.outside) == (1, 1)
    assert t.examples[0]["total_ms"] == 500


def test_a_window_explains_only_errors_at_its_own_addresses() -> None:
    # inside the edge's window, but the resolver did not answer and another edge refused: not the failure's doing
    rows = [
        row(105.0, "dns", error="Timeout: no answer", error_addr=f"{RESOLVER}:53"),
        refused(105.0, "redirect", OTHER_EDGE),
        refused(105.0, "redirect", REDIRECTOR),
    ]
    t = soak.classify(rows, [EDGE_WINDOW], GRACE)
    assert (t.errors, t.explained, t.outside) == (3, 0, 3)
    # a window without addresses accounts for any error in its time
    anywhere = soak.Window("edge", "e_eu", 100.0, 115.0)
    assert soak.classify(rows, [anywhere], GRACE).outside == 0


def test_the_origin_outage_explains_502s_from_every_edge() -> None:
    rows = [
        row(205.0, "dns", status=502, error="http 502", edge_ip=OTHER_EDGE),
        row(206.0, "anycast", status=502, error="http 502", edge_ip=VIP),
        row(206.0, "redirect", status=502, error="http 502", edge_ip=EDGE),
        row(206.0, "dns", error="Timeout: no answer", error_addr=f"{RESOLVER}:53"),
    ]
    t = soak.classify(rows, [EDGE_WINDOW, ORIGIN_WINDOW], GRACE)
    assert (t.explained, t.outside) == (3, 1)
    assert t.by_window == {1: 3}


def test_a_non_200_answer_without_a_driver_error_is_an_error() -> None:
    not_found = row(50.0, "anycast", status=404, edge_ip=VIP)
    assert soak.failed(not_found) and not soak.failed(row(50.0))
    assert soak.classify([not_found], [EDGE_WINDOW], GRACE).outside == 1


def test_tallies_accumulate_minute_by_minute() -> None:
    t = soak.classify([row(1.0), refused(50.0, "dns", EDGE)], [EDGE_WINDOW], GRACE)
    soak.classify([refused(105.0, "dns", EDGE), row(106.0, "redirect")], [EDGE_WINDOW], GRACE, t)
    assert (t.requests, t.errors, t.explained, t.outside) == (4, 2, 1, 1)
    assert t.by_method["dns"] == {"requests": 2, "errors": 2, "explained": 1, "outside": 1}


def test_examples_are_bounded() -> None:
    t = soak.classify([refused(float(i), "anycast", VIP) for i in range(50)], [], GRACE)
    assert t.outside == 50 and len(t.examples) == soak.EXAMPLES


# -- the failure plan -------------------------------------------------------------------------------------
def test_one_edge_a_minute_in_turn_and_the_origin_once() -> None:
    edges = ["e_na", "e_sa", "e_eu", "e_as"]
    plan = soak.failure_plan(
        6, edges, "origin", minute_s=60, kill_at=5, edge_down=15, origin_at=35, origin_down=10
    )
    edge_plan = [p for p in plan if p.kind == "edge"]
    assert [(p.minute, p.host) for p in edge_plan] == [(m, edges[m % 4]) for m in range(6)]
    assert [(p.minute, p.at, p.down) for p in plan if p.kind == "origin"] == [(3, 35, 10)]
    assert [(p.minute, p.at) for p in plan] == sorted((p.minute, p.at) for p in plan)


def test_a_plan_that_does_not_fit_its_minute_is_refused() -> None:
    kw = {"minute_s": 60.0, "kill_at": 5.0, "edge_down": 15.0, "origin_at": 35.0, "origin_down": 10.0}
    with pytest.raises(ValueError, match="overlap"):
        soak.failure_plan(2, ["e1"], "origin", **{**kw, "origin_at": 20.0})
    with pytest.raises(ValueError, match="does not fit"):
        soak.failure_plan(2, ["e1"], "origin", **{**kw, "origin_at": 50.0})
    with pytest.raises(ValueError, match="does not fit"):
        soak.failure_plan(2, ["e1"], None, **{**kw, "edge_down": 55.0})
    with pytest.raises(ValueError):
        soak.failure_plan(0, ["e1"], "origin", **kw)
    # the quick run's 30 s minutes fit
    assert (
        len(
            soak.failure_plan(
                2, ["e1"], "origin", minute_s=30, kill_at=2.5, edge_down=7.5, origin_at=15, origin_down=10
            )
        )
        == 3
    )


# -- growth per process lifetime --------------------------------------------------------------------------
def s(host: str, pid: int, t: float, rss: int, fds: int, quiet: bool = True) -> soak.ProcSample:
    return soak.ProcSample(host, pid, t, rss, fds, quiet)


def test_growth_is_measured_from_the_end_of_the_first_minute() -> None:
    samples = [
        s("origin", 10, 0, 30_000, 10),
        s("origin", 10, 30, 90_000, 60, quiet=False),
        s("origin", 10, 62, 40_000, 12),
        s("origin", 10, 124, 41_000, 14),
        s("origin", 10, 186, 42_000, 15),
    ]
    g = soak.growth(samples, 60)
    assert g["rss_growth_pct"] == {"origin": 5.0} and g["fds_growth"] == {"origin": 3}
    life = g["lifetimes"][0]
    assert life["measured"] and life["rss_kb"] == [40_000, 42_000] and life["from_t"] == 62


def test_busy_samples_count_for_peaks_not_for_growth() -> None:
    samples = [
        s("dns_eu", 5, 0, 20_000, 8),
        s("dns_eu", 5, 61, 20_000, 8),
        s("dns_eu", 5, 90, 30_000, 40, False),
        s("dns_eu", 5, 122, 20_200, 8),
    ]
    g = soak.growth(samples, 60)
    assert g["rss_growth_pct"]["dns_eu"] == pytest.approx(1.0) and g["fds_growth"]["dns_eu"] == 0
    assert g["lifetimes"][0]["rss_peak_kb"] == 30_000 and g["lifetimes"][0]["fds_peak"] == 40


def test_a_restarted_edge_is_measured_per_process_lifetime() -> None:
    samples = [
        # the first process: grows 10 % and is killed at 130 s
        s("e_eu", 1, 0, 40_000, 20),
        s("e_eu", 1, 62, 40_000, 20),
        s("e_eu", 1, 124, 44_000, 21),
        # the restarted one, first seen at 140 s: its baseline is the quiet sample at >= 200 s, not at 186 s
        s("e_eu", 2, 140, 30_000, 18, quiet=False),
        s("e_eu", 2, 186, 31_000, 19),
        s("e_eu", 2, 248, 35_000, 20),
        s("e_eu", 2, 310, 35_700, 22),
    ]
    g = soak.growth(samples, 60)
    lives = {life["pid"]: life for life in g["lifetimes"]}
    assert lives[1]["rss_growth_pct"] == 10.0 and lives[2]["rss_kb"] == [35_000, 35_700]
    assert lives[2]["rss_growth_pct"] == 2.0 and lives[2]["fds_growth"] == 2
    assert g["rss_growth_pct"]["e_eu"] == 10.0 and g["fds_growth"]["e_eu"] == 2  # the worst lifetime


def test_a_lifetime_too_short_to_measure_is_not_measured() -> None:
    samples = [
        s("e_na", 7, 20, 30_000, 18, quiet=False),
        s("e_na", 7, 62, 30_500, 18),
        s("e_na", 7, 124, 31_000, 19),
        s("r_na", 3, 0, 9_000, 12),
        s("r_na", 3, 62, 9_000, 12),
    ]
    g = soak.growth(samples, 60)
    # e_na's baseline is at 124 s (its first quiet sample a minute after 20 s): nothing after it
    assert g["rss_growth_pct"] == {"e_na": None, "r_na": None} and g["fds_growth"] == {
        "e_na": None,
        "r_na": None,
    }
    assert not any(life["measured"] for life in g["lifetimes"])


# -- the targets block ------------------------------------------------------------------------------------
def result(**kw: Any) -> dict[str, Any]:
    base = {
        "errors_outside_failover": 0,
        "rss_growth_pct": {"origin": 1.0, "e_na": None},
        "fds_growth": {"origin": 2, "e_na": None},
        "cache_bytes_max": 2_000_000,
        "cache_capacity_bytes": 2**21,
    }
    return {**base, **kw}


def test_targets_name_each_value_bound_and_verdict() -> None:
    t = soak.targets(result())
    assert {k: v["met"] for k, v in t.items()} == {
        "errors_outside_failover": True,
        "rss_growth_pct": True,
        "fds_growth": True,
        "cache_bytes_max": True,
    }
    assert t["rss_growth_pct"]["value"] == 1.0 and t["fds_growth"]["value"] == 2
    missed = soak.targets(
        result(
            errors_outside_failover=1,
            rss_growth_pct={"origin": 5.01},
            fds_growth={"origin": 11},
            cache_bytes_max=2**21 + 1,
        )
    )
    assert not any(v["met"] for v in missed.values())
    edge = soak.targets(
        result(rss_growth_pct={"origin": 5.0}, fds_growth={"origin": 10}, cache_bytes_max=2**21)
    )
    assert all(v["met"] for v in edge.values())
    unmeasured = soak.targets(
        result(rss_growth_pct={"e_na": None}, fds_growth={"e_na": None}, cache_bytes_max=None)
    )
    assert [unmeasured[k]["met"] for k in ("rss_growth_pct", "fds_growth", "cache_bytes_max")] == [None] * 3
