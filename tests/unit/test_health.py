"""Health checker: warm-up before first use, fall after failures, rise after successes, load polling."""

from __future__ import annotations

from cdn_dns_fixtures import StandInEdge

from testbed.services.health import HealthChecker, HealthConfig
from testbed.services.mapping import EdgeSpec
from testbed.util import async_wait_until, free_port


def edge_spec(e: StandInEdge, region: str = "eu") -> EdgeSpec:
    return EdgeSpec.model_validate(e.spec(region))


async def test_warmup_marks_live_edges_up_before_start_returns():
    a = await StandInEdge("a").start()
    dead = EdgeSpec(name="dead", address="127.0.0.1", port=free_port(), region="eu")
    hc = HealthChecker([edge_spec(a), dead], HealthConfig(interval=0.2, timeout=0.1, fall=3))
    try:
        assert not hc.is_up("a")  # nothing known before warm-up
        await hc.start()
        assert hc.is_up("a") and not hc.is_up("dead")
        assert hc.rounds >= 1 and "Connect" in hc.snapshot()["dead"]["error"]
    finally:
        await hc.stop()
        await a.stop()


async def test_dead_edge_falls_and_recovers_after_rise_successes():
    a, b = await StandInEdge("a").start(), await StandInEdge("b").start()
    hc = HealthChecker([edge_spec(a), edge_spec(b)], HealthConfig(interval=0.1, timeout=0.08, fall=2, rise=3))
    await hc.start()
    try:
        assert hc.is_up("a") and hc.is_up("b")
        gen = hc.generation
        await a.stop()  # health endpoint dies
        await async_wait_until(lambda: _false(hc.is_up("a")), timeout=5, what="a marked down")
        assert hc.snapshot()["a"]["fails"] >= 2 and hc.is_up("b") and hc.generation > gen
        b.healthy = False  # answers, but 503 / ok=false
        await async_wait_until(lambda: _false(hc.is_up("b")), timeout=5, what="b marked down")
        b.healthy = True
        await async_wait_until(lambda: _true(hc.is_up("b")), timeout=5, what="b back up")
        assert hc.snapshot()["b"]["oks"] >= 3
    finally:
        await hc.stop()
        await a.stop()
        await b.stop()


async def test_stats_polling_gives_request_rate_as_load():
    a = await StandInEdge("a").start()
    hc = HealthChecker(
        [edge_spec(a)], HealthConfig(interval=0.1, timeout=0.08, stats=True, load_field="requests")
    )
    await hc.start()
    try:
        a.requests = 10_000
        await async_wait_until(lambda: _true((hc.load("a") or 0) > 0), timeout=5, what="load seen")
        hc.report_load("a", 7.0)
        assert hc.load("a") == 7.0
    finally:
        await hc.stop()
        await a.stop()


def test_disabled_checker_says_all_up():
    hc = HealthChecker([EdgeSpec(name="x", address="127.0.0.1", region="eu")], HealthConfig(enabled=False))
    assert hc.is_up("x") and not hc.is_up("unknown")


async def _true(v: bool) -> bool:
    return v


async def _false(v: bool) -> bool:
    return not v
