"""Timed fetches on loopback: anycast-style direct fetch, redirect, DNS, errors, and the driver."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from aiohttp import web

from testbed.measure.fetch import Target, fetch
from testbed.util import free_port


@pytest.fixture
async def servers():
    edge_port, redir_port = free_port(), free_port()

    async def content(request: web.Request) -> web.Response:
        return web.Response(body=b"x" * 1000, headers={"X-Served-By": "e9", "X-Cache": "HIT"})

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound(f"http://127.0.0.1:{edge_port}{request.path_qs}")

    runners = []
    for port, handler in ((edge_port, content), (redir_port, redirect)):
        app = web.Application()
        app.router.add_get("/{tail:.*}", handler)
        r = web.AppRunner(app)
        await r.setup()
        await web.TCPSite(r, "127.0.0.1", port).start()
        runners.append(r)
    yield edge_port, redir_port
    for r in runners:
        await r.cleanup()


async def test_direct_and_redirect(servers) -> None:
    edge_port, redir_port = servers
    s = await fetch("anycast", Target(vip="127.0.0.1", port=edge_port), "/img/a.jpg")
    assert s.error == "" and s.status == 200 and s.bytes == 1000
    assert s.served_by == "e9" and s.x_cache == "HIT"
    assert s.redirect_ms == 0 and s.total_ms >= s.ttfb_ms > 0
    r = await fetch("redirect", Target(redirector="127.0.0.1", port=redir_port), "/img/a.jpg?q=1")
    assert r.error == "" and r.served_by == "e9" and r.redirect_ms > 0
    assert r.total_ms >= r.redirect_ms + r.ttfb_ms


async def test_errors_are_recorded_not_raised() -> None:
    closed = free_port()
    s = await fetch("anycast", Target(vip="127.0.0.1", port=closed), "/")
    assert "ConnectionRefused" in s.error and s.status == 0
    s = await fetch("dns", Target(resolver=None), "/")
    assert "no resolver" in s.error
    s = await fetch("carrier-pigeon", Target(), "/")
    assert "unknown method" in s.error


def test_driver_bad_config_exits_2(tmp_path) -> None:
    cfg = tmp_path / "d.json"
    cfg.write_text(json.dumps({"client": "c", "out": str(tmp_path / "o"), "schedule": [{"at": -1, "via": "x"}]}))
    r = subprocess.run([sys.executable, "-m", "testbed.measure.driver", "--config", str(cfg)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "schedule[0].at" in r.stderr and "schedule[0].via" in r.stderr


async def test_driver_runs_a_schedule(servers, tmp_path) -> None:
    edge_port, _ = servers
    out = tmp_path / "o.jsonl"
    cfg = tmp_path / "d.json"
    cfg.write_text(json.dumps({"client": "c1", "out": str(out), "target": {"vip": "127.0.0.1", "port": edge_port},
                               "schedule": [{"at": 0.01 * i, "via": "anycast", "path": f"/o{i}"} for i in range(5)]}))
    import asyncio

    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "testbed.measure.driver", "--config", str(cfg))
    assert await asyncio.wait_for(proc.wait(), 60) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["path"] for r in rows) == [f"/o{i}" for i in range(5)]
    assert all(r["served_by"] == "e9" and not r["error"] for r in rows)


async def test_failures_say_where_and_why(servers) -> None:
    """What `status 000` hides: refused vs timeout vs a silent server vs HTTP errors, and in which phase."""
    import socket

    from testbed.measure.fetch import Sample, explain

    edge_port, redir_port = servers
    closed = free_port()
    s = await fetch("anycast", Target(vip="127.0.0.1", port=closed), "/x")
    assert (s.extra["error_phase"], s.extra["error_addr"]) == ("connect", f"127.0.0.1:{closed}")
    assert explain(s) == (f"connect: the server 127.0.0.1:{closed} refused the connection: nothing listens there "
                          "(its service is down)")
    r = await fetch("redirect", Target(redirector="127.0.0.1", port=closed), "/x")
    assert r.extra["error_phase"] == "redirect connect" and "the redirector 127.0.0.1" in (explain(r) or "")
    # a server that accepts and never answers
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    try:
        port = silent.getsockname()[1]
        s = await fetch("anycast", Target(vip="127.0.0.1", port=port), "/x", timeout=0.3)
        assert s.extra["error_phase"] == "response"
        assert "accepted the connection but sent no response within 0.3 s" in (explain(s, 0.3) or "")
    finally:
        silent.close()
    # a resolver that does not answer (UDP port with nothing behind it: ICMP refusal, or a timeout)
    s = await fetch("dns", Target(resolver="127.0.0.1"), "/x", timeout=0.3)
    assert s.extra["error_phase"] == "dns" and (explain(s, 0.3) or "").startswith("DNS: ")
    ok = await fetch("anycast", Target(vip="127.0.0.1", port=edge_port), "/x")
    assert explain(ok) is None and "error_phase" not in ok.extra
    # shapes the loopback cannot produce, from the recorded fields
    nx = Sample(error="FetchError: dns: no A record for nope.example (rcode NXDOMAIN)",
                extra={"error_phase": "dns", "error_addr": "10.0.0.7:53"})
    assert explain(nx) == "DNS: the name does not exist (NXDOMAIN), answered by the resolver 10.0.0.7:53"
    to = Sample(error="TimeoutError: ", extra={"error_phase": "connect", "error_addr": "10.0.0.2:80"})
    assert "no answer from the server 10.0.0.2:80 within 5 s (timeout)" in (explain(to) or "")
    assert "origin" in (explain(Sample(error="http 502", status=502, served_by="e1")) or "")
    assert "no such object" in (explain(Sample(status=404, served_by="e1")) or "")  # not an error, but a failure


async def test_module_main_prints_sample_headers_and_explanation(servers) -> None:
    import asyncio

    edge_port, _ = servers
    closed = free_port()
    for port, want in ((edge_port, None), (closed, "refused the connection")):
        p = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "testbed.measure.fetch", "/img/a.jpg", "--vip", "127.0.0.1", "--port", str(port),
            stdout=asyncio.subprocess.PIPE)
        out, _ = await p.communicate()
        d = json.loads(out)
        if want is None:
            assert d["sample"]["status"] == 200 and d["headers"]["x-served-by"] == "e9" and d["explain"] is None
        else:
            assert d["sample"]["status"] == 0 and want in d["explain"]
