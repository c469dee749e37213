"""The edge cache on loopback: RFC 9111 behaviour, collapsing, stale-if-error, eviction, purge, robustness."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import pytest
from aiohttp import web
from cdn_helpers import Upstream, raw_http, start_edge, start_origin, status_of

from testbed.services.freshness import format_http_date
from testbed.util import async_wait_until, free_port, tcp_open


@pytest.fixture
async def origin():
    o = await start_origin()
    yield o
    await o.close()


@pytest.fixture
async def edge(origin):
    e = await start_edge(origin.url, name="edge-a")
    yield e
    await e.close()


@pytest.fixture
async def uedge(up):
    e = await start_edge(up.url, name="edge-u")
    yield e
    await e.close()


def first(o, cls):
    return next(x for x in o.catalog.objects if x.cls == cls)


async def get(http, url, **kw):
    async with http.get(url, **kw) as r:
        return r.status, r.headers, await r.read()


async def test_miss_then_hit_headers_and_one_origin_fetch(origin, edge, http):
    img = first(origin, "image")
    s1, h1, b1 = await get(http, edge.url + img.path)
    s2, h2, b2 = await get(http, edge.url + img.path)
    assert (s1, s2) == (200, 200) and b1 == b2 == origin.catalog.body(img)
    assert h1["X-Cache"] == "MISS" and h2["X-Cache"] == "HIT"
    assert h2["X-Served-By"] == "edge-a" and "edge-a (cdnlab)" in h2["Via"]
    assert int(h2["Age"]) >= 0 and h2["ETag"] == h1["ETag"]
    assert origin.by_path[img.path] == 1
    st = edge.stats()
    assert st["hits"] == 1 and st["misses"] == 1 and st["bytes_from_cache"] == img.size
    assert st["objects"][img.path] == {"misses": 1, "hits": 1}
    assert st["store"]["bytes_used"] > img.size and st["store"]["capacity_bytes"] == edge.cfg.capacity_bytes


async def test_age_header_counts_upstream_age_and_date(up, uedge, http):
    now = time.time()
    up.routes["/a"] = lambda r: web.Response(
        text="x", headers={"Cache-Control": "max-age=1000", "Age": "100", "Date": format_http_date(now)}
    )
    up.routes["/old"] = lambda r: web.Response(
        text="x", headers={"Cache-Control": "max-age=1000", "Date": format_http_date(now - 300)}
    )
    await get(http, uedge.url + "/a")
    _, h, _ = await get(http, uedge.url + "/a")
    assert h["X-Cache"] == "HIT" and 100 <= int(h["Age"]) < 1000
    _, h, _ = await get(http, uedge.url + "/old")
    assert 300 <= int(h["Age"]) < 1000


async def test_expires_and_s_maxage_freshness(up, uedge, http):
    now = time.time()
    up.routes["/exp"] = lambda r: web.Response(
        text="e", headers={"Date": format_http_date(now), "Expires": format_http_date(now + 600)}
    )
    up.routes["/expired"] = lambda r: web.Response(
        text="e", headers={"Date": format_http_date(now), "Expires": format_http_date(now - 600)}
    )
    up.routes["/smax"] = lambda r: web.Response(
        text="s", headers={"Cache-Control": "max-age=0, s-maxage=600"}
    )
    up.routes["/none"] = lambda r: web.Response(text="n")  # no freshness: stored, revalidated every time
    for p in ("/exp", "/expired", "/smax", "/none"):
        await get(http, uedge.url + p)
    assert (await get(http, uedge.url + "/exp"))[1]["X-Cache"] == "HIT"
    assert (await get(http, uedge.url + "/smax"))[1]["X-Cache"] == "HIT"
    assert (await get(http, uedge.url + "/expired"))[1]["X-Cache"] != "HIT"
    assert (await get(http, uedge.url + "/none"))[1]["X-Cache"] != "HIT"
    assert up.hits["/exp"] == 1 and up.hits["/expired"] == 2 and up.hits["/none"] == 2


async def test_no_store_never_stored(origin, edge, http):
    for _ in range(2):
        _, h, _ = await get(http, edge.url + "/cgi/search?q=x")
        assert h["X-Cache"] == "MISS"
    assert origin.by_path["/cgi/search"] == 2
    a = (await get(http, edge.url + "/dyn/ad"))[2]
    b = (await get(http, edge.url + "/dyn/ad"))[2]
    assert a != b and origin.ad_counter == 2


async def test_private_never_stored_or_shared(origin, edge, http):
    _, _, a = await get(http, edge.url + "/dyn/personal", headers={"Cookie": "user=alice"})
    _, h, b = await get(http, edge.url + "/dyn/personal", headers={"Cookie": "user=bob"})
    assert b"alice" in a and b"bob" in b and h["X-Cache"] == "MISS"
    assert origin.by_path["/dyn/personal"] == 2 and len(edge.store) == 0


async def test_no_cache_stored_and_always_revalidated(origin, edge, http):
    _, h1, b1 = await get(http, edge.url + "/dyn/stock")
    _, h2, b2 = await get(http, edge.url + "/dyn/stock")
    assert h1["X-Cache"] == "MISS" and h2["X-Cache"] == "REVALIDATED" and b1 == b2
    assert origin.by_status[304] == 1
    origin.update("/dyn/stock")
    _, h3, b3 = await get(http, edge.url + "/dyn/stock")
    assert h3["X-Cache"] == "MISS" and b3 != b1 and b"version 1" in b3


async def test_304_refreshes_stored_headers(up, uedge, http):
    state = {"n": 0}

    def h(request):
        state["n"] += 1
        if request.headers.get("If-None-Match") == '"v1"':
            return web.Response(
                status=304, headers={"ETag": '"v1"', "Cache-Control": "max-age=600", "X-Gen": "2"}
            )
        return web.Response(
            text="body-v1", headers={"ETag": '"v1"', "Cache-Control": "max-age=0", "X-Gen": "1"}
        )

    up.routes["/r"] = h
    assert (await get(http, uedge.url + "/r"))[1]["X-Gen"] == "1"
    _, h2, b2 = await get(http, uedge.url + "/r")
    assert h2["X-Cache"] == "REVALIDATED" and h2["X-Gen"] == "2" and b2 == b"body-v1"
    _, h3, b3 = await get(http, uedge.url + "/r")  # now fresh for 600 s thanks to the refreshed headers
    assert h3["X-Cache"] == "HIT" and h3["X-Gen"] == "2" and b3 == b"body-v1"
    assert state["n"] == 2
    assert any(s.get("If-None-Match") == '"v1"' for s in up.seen)


async def test_vary_secondary_key(origin, edge, http):
    _, h, fr = await get(http, edge.url + "/dyn/lang", headers={"Accept-Language": "fr"})
    _, h2, de = await get(http, edge.url + "/dyn/lang", headers={"Accept-Language": "de"})
    _, h3, fr2 = await get(http, edge.url + "/dyn/lang", headers={"Accept-Language": "fr"})
    assert b"Bonjour" in fr and b"Hallo" in de and fr2 == fr
    assert (h["X-Cache"], h2["X-Cache"], h3["X-Cache"]) == ("MISS", "MISS", "HIT")
    assert origin.by_path["/dyn/lang"] == 2


async def test_field_a_response_varies_on_is_keyed_so_it_cannot_poison(up, uedge, http):
    """RFC 9110 §7.6 forwards X-Forwarded-Host; the origin that uses it says so with Vary (RFC 9111 §4.1),
    so the evil variant is stored under its own key and never served to other clients."""

    def reflect(request):
        host = request.headers.get("X-Forwarded-Host", "good.example")
        return web.Response(
            text=f'<script src="http://{host}/app.js">',
            headers={"Cache-Control": "max-age=600", "Vary": "X-Forwarded-Host"},
        )

    up.routes["/page"] = reflect
    _, _, b1 = await get(http, uedge.url + "/page", headers={"X-Forwarded-Host": "evil.example"})
    _, h2, b2 = await get(http, uedge.url + "/page")
    _, h3, b3 = await get(http, uedge.url + "/page")
    assert b"evil" in b1 and b"evil" not in b2 and b2 == b3
    assert (h2["X-Cache"], h3["X-Cache"]) == ("MISS", "HIT")
    assert up.seen[0]["X-Forwarded-Host"] == "evil.example" and "X-Forwarded-Host" not in up.seen[1]


async def test_request_collapsing_one_upstream_fetch(up, uedge, http):
    release = asyncio.Event()

    async def slow(request):
        await release.wait()
        return web.Response(text="popular", headers={"Cache-Control": "max-age=600"})

    up.routes["/hot"] = slow
    tasks = [asyncio.create_task(get(http, uedge.url + "/hot")) for _ in range(10)]
    await async_wait_until(lambda: _true(uedge.counters["collapsed"] == 9), 5, what="9 followers waiting")
    release.set()
    results = await asyncio.gather(*tasks)
    assert all(s == 200 and b == b"popular" for s, _, b in results)
    assert up.hits["/hot"] == 1


async def _true(v):
    return v


async def test_collapsing_does_not_share_private_responses(up, uedge, http):
    release = asyncio.Event()

    async def personal(request):
        await release.wait()
        return web.Response(text=request.headers.get("Cookie", ""), headers={"Cache-Control": "private"})

    up.routes["/me"] = personal
    t1 = asyncio.create_task(get(http, uedge.url + "/me", headers={"Cookie": "u=1"}))
    await async_wait_until(lambda: _true(up.hits["/me"] == 1), 5)
    t2 = asyncio.create_task(get(http, uedge.url + "/me", headers={"Cookie": "u=2"}))
    await async_wait_until(lambda: _true(uedge.counters["collapsed"] == 1), 5)
    release.set()
    (_, _, b1), (_, _, b2) = await asyncio.gather(t1, t2)
    assert (b1, b2) == (b"u=1", b"u=2") and up.hits["/me"] == 2


async def test_stale_if_error_on_5xx_and_unreachable(http):
    up = await Upstream().start()
    mode = {"fail": False}

    def h(request):
        if mode["fail"]:
            return web.Response(status=503, text="down")
        return web.Response(
            text="v1", headers={"Cache-Control": "max-age=0, stale-if-error=600", "ETag": '"1"'}
        )

    up.routes["/s"] = h
    up.routes["/nostale"] = lambda r: (
        web.Response(status=503)
        if mode["fail"]
        else web.Response(text="x", headers={"Cache-Control": "max-age=0"})
    )
    e = await start_edge(up.url, name="e")
    try:
        await get(http, e.url + "/s")
        await get(http, e.url + "/nostale")
        mode["fail"] = True
        s, h1, b = await get(http, e.url + "/s")
        assert (s, h1["X-Cache"], b) == (200, "STALE", b"v1")
        assert (await get(http, e.url + "/nostale"))[0] == 503
        await up.close()  # origin unreachable
        s, h2, b = await get(http, e.url + "/s")
        assert (s, h2["X-Cache"], b) == (200, "STALE", b"v1")
        assert (await get(http, e.url + "/nostale"))[0] == 502
        assert e.stats()["stale"] == 2
    finally:
        await e.close()
        await up.close()


async def test_stale_if_error_default_from_config(origin, http):
    e = await start_edge(origin.url, name="e", stale_if_error_s=600)
    try:
        await get(http, e.url + "/dyn/stock")
        origin.fault_status = 500
        s, h, b = await get(http, e.url + "/dyn/stock")
        assert (s, h["X-Cache"]) == (200, "STALE") and b"ACME" in b
    finally:
        await e.close()


@pytest.mark.parametrize(("policy", "evicted"), [("FIFO", "/a"), ("LRU", "/b"), ("LFU", "/b")])
async def test_eviction_policy_selected_by_config(up, http, policy, evicted):
    for p in ("/a", "/b", "/c"):
        up.routes[p] = lambda r: web.Response(body=b"x" * 1000, headers={"Cache-Control": "max-age=600"})
    e = await start_edge(up.url, capacity_bytes=2500, eviction=f"testbed.services.eviction:{policy}")
    try:
        await get(http, e.url + "/a")
        await get(http, e.url + "/b")
        await get(http, e.url + "/a")  # a used again
        await get(http, e.url + "/c")  # needs room: one of a, b goes
        st = e.stats()["store"]
        assert st["evictions"] == 1 and st["bytes_used"] <= 2500
        kept = "/b" if evicted == "/a" else "/a"
        assert (await get(http, e.url + kept))[1]["X-Cache"] == "HIT"  # checked first: a refetch evicts again
        assert (await get(http, e.url + evicted))[1]["X-Cache"] == "MISS"
    finally:
        await e.close()


async def test_purge_http_and_method_and_api(origin, edge, http):
    img = first(origin, "image")
    await get(http, edge.url + img.path)
    async with http.post(edge.url + "/_cdn/purge", json={"paths": [img.path, "/nope"]}) as r:
        assert await r.json() == {"purged": [img.path], "not_found": ["/nope"]}
    assert (await get(http, edge.url + img.path))[1]["X-Cache"] == "MISS"
    async with http.request("PURGE", edge.url + img.path) as r:
        assert r.status == 200
    async with http.request("PURGE", edge.url + img.path) as r:
        assert r.status == 404
    async with http.post(edge.url + "/_cdn/purge", data=b"{not json") as r:
        assert r.status == 400
    await get(http, edge.url + img.path)
    assert edge.purge(img.path) is True and edge.purge(img.path) is False


async def test_admit_stores_fresh_without_origin(up, uedge, http):
    uedge.admit("/pushed/clip.mp4", 200, {"Content-Type": "video/mp4"}, b"pushed bytes")
    s, h, b = await get(http, uedge.url + "/pushed/clip.mp4")
    assert (s, h["X-Cache"], b) == (200, "HIT", b"pushed bytes") and up.hits["/pushed/clip.mp4"] == 0
    assert uedge.stats()["admitted"] == 1


async def test_health_and_stats_endpoints(edge, http):
    s, _, b = await get(http, edge.url + "/_cdn/health")
    assert s == 200 and b'"ok": true' in b and b"edge-a" in b
    async with http.get(edge.url + "/_cdn/stats") as r:
        st = await r.json()
    for k in (
        "hits",
        "misses",
        "revalidated",
        "stale",
        "bytes_from_cache",
        "bytes_from_origin",
        "objects",
        "store",
    ):
        assert k in st
    assert {"bytes_used", "capacity_bytes"} <= set(st["store"])


async def test_akamai_style_path_maps_to_origin_path(origin, edge, http):
    img = first(origin, "image")
    s, h, b = await get(http, edge.url + f"/7/23/origin.cdnlab.test{img.path}")
    assert s == 200 and b == origin.catalog.body(img)
    assert (await get(http, edge.url + img.path))[1]["X-Cache"] == "HIT"
    host = f"127.0.0.1:{origin.port}"
    assert (await get(http, edge.url + f"/x/127.0.0.1{img.path}"))[1]["X-Cache"] == "HIT"
    assert edge.map_path(f"/a/b/{host}/c") == f"/a/b/{host}/c"  # a port-qualified segment is not a host name


async def test_range_head_and_client_conditionals_from_cache(origin, http):
    """``range_requests: whole`` (nginx's way): a Range miss fetches the whole object, later ranges hit."""
    edge = await start_edge(origin.url, name="edge-w", range_requests="whole")
    try:
        await _range_head_and_conditionals(origin, edge, http)
    finally:
        await edge.close()


async def _range_head_and_conditionals(origin, edge, http):
    v = first(origin, "video")
    full = origin.catalog.body(v)
    s, h, b = await get(http, edge.url + v.path, headers={"Range": "bytes=100-199"})
    assert s == 206 and b == full[100:200] and h["Content-Range"] == f"bytes 100-199/{v.size}"
    s, h, b = await get(http, edge.url + v.path, headers={"Range": "bytes=-10"})
    assert s == 206 and b == full[-10:] and h["X-Cache"] == "HIT"
    assert (await get(http, edge.url + v.path, headers={"Range": f"bytes={v.size}-"}))[0] == 416
    async with http.head(edge.url + v.path) as r:
        assert r.status == 200 and r.headers["X-Cache"] == "HIT" and await r.read() == b""
    s, h, _ = await get(http, edge.url + v.path, headers={"If-None-Match": h["ETag"]})
    assert s == 304
    assert origin.by_path[v.path] == 1


async def test_unsafe_method_passes_through_and_invalidates(up, uedge, http):
    up.routes["/form"] = lambda r: web.Response(text=r.method, headers={"Cache-Control": "max-age=600"})
    await get(http, uedge.url + "/form")
    async with http.post(uedge.url + "/form", data=b"a=1") as r:
        assert r.status == 200 and await r.text() == "POST"
    assert (await get(http, uedge.url + "/form"))[1]["X-Cache"] == "MISS"


# ---- robustness: bad input is rejected and the edge keeps serving --------------------------------------

BAD_REQUESTS = {
    "malformed request line": b"GARBAGE\r\n\r\n",
    "bad version": b"GET / HTTP/9.9.9\r\nHost: x\r\n\r\n",
    "binary junk": b"\x00\xff\x13\x37" * 64 + b"\r\n\r\n",
    "oversized header": b"GET /x HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n",
    "oversized request line": b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "CL and TE": (
        b"POST /form HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
    ),
    "duplicate CL": b"POST /form HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 40\r\n\r\nabc",
    "bad chunk": b"POST /form HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\nabc\r\n0\r\n\r\n",
}


@pytest.mark.parametrize("name", list(BAD_REQUESTS))
async def test_bad_requests_rejected_edge_keeps_serving(up, uedge, http, name):
    up.routes["/ok"] = lambda r: web.Response(text="ok", headers={"Cache-Control": "max-age=600"})
    up.routes["/form"] = lambda r: web.Response(text="form")
    up.routes["/smuggled"] = lambda r: web.Response(text="smuggled")
    raw = await raw_http(uedge.port, BAD_REQUESTS[name])
    assert status_of(raw) in (400, 413, 431), raw[:300]
    assert b"smuggled" not in raw
    assert up.hits["/smuggled"] == 0 and up.hits["/form"] == 0
    s, _, b = await get(http, uedge.url + "/ok")
    assert (s, b) == (200, b"ok")


# ---- the service process ----------------------------------------------------------------------------


async def test_edge_subprocess_serves_and_exits_0_on_sigterm(origin, tmp_path, http):
    port = free_port()
    cfg = tmp_path / "edge.yaml"
    cfg.write_text(f"name: edge-proc\nport: {port}\norigin_url: {origin.url}\nicp_port: 0\n")
    p = subprocess.Popen(
        [sys.executable, "-m", "testbed.services.edge", "--config", str(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=os.getcwd(),
    )
    try:
        await async_wait_until(lambda: _true(tcp_open("127.0.0.1", port)), 20, what="edge process up")
        img = first(origin, "image")
        s, h, b = await get(http, f"http://127.0.0.1:{port}{img.path}")
        assert s == 200 and h["X-Served-By"] == "edge-proc" and b == origin.catalog.body(img)
        p.send_signal(signal.SIGTERM)
        rc = await asyncio.to_thread(p.wait, 20)
        assert rc == 0, p.stderr.read().decode()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("origin_url: http://127.0.0.1:1\neviction: nosuch.module:X\n", "eviction"),
        ("origin_url: http://127.0.0.1:1\ncapacity_bytes: 0\n", "capacity_bytes"),
        ("origin_url: http://127.0.0.1:1\ncapcity_bytes: 5\n", "capcity_bytes"),
        ("port: 1\n", "origin_url"),
        (
            "origin_url: http://127.0.0.1:1\nsiblings:\n  - {name: s, http_url: http://x}\n",
            "siblings[0].icp_port",
        ),
    ],
)
def test_edge_bad_config_exits_2_naming_field(tmp_path, text, field):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text)
    p = subprocess.run(
        [sys.executable, "-m", "testbed.services.edge", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert p.returncode == 2, p.stderr
    assert field in p.stderr and str(cfg) in p.stderr


async def test_absolute_form_and_encoded_targets(up, uedge, http):
    up.routes["/q"] = lambda r: web.Response(text=r.path_qs, headers={"Cache-Control": "max-age=600"})
    raw = await raw_http(
        uedge.port, b"GET http://www.example.test/q?a=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert status_of(raw) == 200 and raw.endswith(b"/q?a=1")
    # an encoded '?' stays part of the path: it must not turn into a query string upstream
    s, _, b = await get(http, uedge.url + "/q%3Fa=2", headers={})
    assert s == 404 and up.hits["/q?a=2"] == 0
    raw = await raw_http(uedge.port, b"GET * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status_of(raw) == 400
    assert (await get(http, uedge.url + "/q?a=1"))[1]["X-Cache"] == "HIT"


async def test_concurrent_revalidations_collapse(up, uedge, http):
    release = asyncio.Event()
    state = {"n": 0}

    async def h(request):
        state["n"] += 1
        if state["n"] == 1:
            return web.Response(text="v", headers={"Cache-Control": "max-age=0", "ETag": '"e"'})
        await release.wait()
        return web.Response(status=304, headers={"Cache-Control": "max-age=600", "ETag": '"e"'})

    up.routes["/rv"] = h
    await get(http, uedge.url + "/rv")  # stored, immediately stale
    tasks = [asyncio.create_task(get(http, uedge.url + "/rv")) for _ in range(5)]
    await async_wait_until(lambda: _true(uedge.counters["collapsed"] == 4), 5, what="4 waiting")
    release.set()
    results = await asyncio.gather(*tasks)
    assert sorted(h["X-Cache"] for _, h, _ in results) == ["HIT"] * 4 + ["REVALIDATED"]
    assert all(b == b"v" for _, _, b in results) and up.hits["/rv"] == 2


async def test_lowercase_range_and_conditional_headers_on_hits(origin, edge, http):
    v = first(origin, "video")
    _, h, _ = await get(http, edge.url + v.path)
    raw = await raw_http(
        edge.port,
        f"GET {v.path} HTTP/1.1\r\nhost: x\r\nrange: bytes=0-3\r\nconnection: close\r\n\r\n".encode(),
    )
    assert status_of(raw) == 206 and raw.endswith(origin.catalog.body(v)[:4])
    etag = h["ETag"]
    raw = await raw_http(
        edge.port,
        f"GET {v.path} HTTP/1.1\r\nhost: x\r\nif-none-match: {etag}\r\nconnection: close\r\n\r\n".encode(),
    )
    assert status_of(raw) == 304
