"""Health checker: warm-up before first use, fall after failures, rise after successes, load polling."""

from __future__ import annotations

import asyncio

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


async def test_a_far_edge_gets_two_path_rtts_more_before_its_probe_times_out():
    """An edge 150 ms away answers 0.35 s after the probe is sent; the base timeout is 0.2 s. With the
    plan's path RTT the probe may take 0.2 + 2 x 0.15 = 0.5 s: up. Without it: timed out, down."""
    from aiohttp import web

    async def slow_health(_req: web.Request) -> web.Response:
        await asyncio.sleep(0.35)
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/_cdn/health", slow_health)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # noqa: SLF001
    far = EdgeSpec(name="far", address="127.0.0.1", port=port, region="sa", probe_rtt_ms=150)
    unknown = EdgeSpec(name="unknown", address="127.0.0.1", port=port, region="sa")
    hc = HealthChecker([far, unknown], HealthConfig(interval=1.0, timeout=0.2, fall=2))
    try:
        assert hc.timeout_for(far) == 0.5 and hc.timeout_for(unknown) == 0.2
        await hc.start()
        assert hc.is_up("far") and not hc.is_up("unknown")
        assert "Timeout" in hc.snapshot()["unknown"]["error"]
    finally:
        await hc.stop()
        await runner.cleanup()
