"""The edge's cache-hit fast path (testbed/services/hit_path.py, #12): a plain fresh hit is answered below
aiohttp byte for byte as the full path answers it; everything else is handed to the full path with the
bytes received and gets exactly what it got before; the connection limits hold on both."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from cdn_helpers import raw_http, start_edge, status_of

from testbed.services.edge import Edge
from testbed.services.freshness import format_http_date
from testbed.services.hit_path import plain_get

GET = b"GET /o HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.fixture
async def pair(up) -> AsyncIterator[tuple[Edge, Edge]]:
    """The same edge twice on one origin: fast path on, and off."""
    fast = await start_edge(up.url, name="edge-f")
    full = await start_edge(up.url, name="edge-f", hit_fast_path=False)
    yield fast, full
    await fast.close()
    await full.close()


def fields(raw: bytes) -> tuple[bytes, list[tuple[bytes, bytes]], bytes]:
    """Status line, fields (lower-case names, without Date and Age), body of one response."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    out = []
    for ln in lines[1:]:
        k, _, v = ln.partition(b":")
        if k.lower() not in (b"date", b"age"):
            out.append((k.lower(), v.strip()))
    return lines[0], sorted(out), body


async def one(port: int, data: bytes = GET) -> bytes:
    """One request on a new connection; the response (its Content-Length read)."""
    r, w = await asyncio.open_connection("127.0.0.1", port)
    try:
        w.write(data)
        head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 5)
        n = next((int(ln.split(b":")[1]) for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length:")), 0)
        return head + await asyncio.wait_for(r.readexactly(n), 5)
    finally:
        w.close()


@pytest.mark.parametrize("stored", [
    {"Cache-Control": "max-age=60", "ETag": '"v1"', "X-Custom": "a"},
    {"Cache-Control": "max-age=60", "Content-Type": "text/html", "Date": "2 s ago", "Age": "7",
     "Via": "1.1 upstream"},  # the Date is made when the test runs, not when it is collected
    {"CDN-Cache-Control": "max-age=60", "Cache-Control": "no-store", "Last-Modified": "Mon, 30 Nov 2026 00:00:00 GMT"},
])
async def test_a_fast_hit_is_the_full_paths_hit_byte_for_byte(up, pair, stored) -> None:
    if stored.get("Date") == "2 s ago":
        stored = {**stored, "Date": format_http_date(time.time() - 2)}
    up.routes["/o"] = lambda r: web.Response(body=b"hello", headers=stored)
    fast, full = pair
    for e in pair:
        assert b"X-Cache: MISS" in await one(e.port)
    a, b = await one(fast.port), await one(full.port)
    assert fields(a) == fields(b)
    assert b"X-Cache: HIT" in a and a.endswith(b"\r\n\r\nhello")
    assert fast.stats()["fast_hits"] == 1 and full.stats()["fast_hits"] == 0
    assert fast.stats()["hits"] == full.stats()["hits"] == 1
    age = int(next(ln for ln in a.split(b"\r\n") if ln.startswith(b"Age:")).split(b":")[1])
    assert age >= (7 if "Age" in stored else 0)
    assert a.count(b"\r\nDate: ") == 1  # the stored one (the upstream sends one) or the current one
    if "Date" in stored:
        assert f"Date: {stored['Date']}".encode() in a


async def test_many_hits_on_one_kept_alive_connection_are_all_fast(up, pair) -> None:
    up.routes["/o"] = lambda r: web.Response(body=b"x" * 1000, headers={"Cache-Control": "max-age=60"})
    fast, _ = pair
    await one(fast.port)
    r, w = await asyncio.open_connection("127.0.0.1", fast.port)
    for _ in range(50):
        w.write(GET)
        head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200 OK") and await r.readexactly(1000) == b"x" * 1000
    w.close()
    assert fast.stats()["fast_hits"] == 50 and fast.stats()["objects"]["/o"]["hits"] == 50


@pytest.mark.parametrize("request_, status", [
    (b"GET /o HTTP/1.1\r\nHost: x\r\nIf-None-Match: \"v1\"\r\n\r\n", 304),
    (b"GET /o HTTP/1.1\r\nHost: x\r\nRange: bytes=0-1\r\n\r\n", 206),
    (b"GET /o HTTP/1.1\r\nHost: x\r\nCache-Control: max-age=0\r\n\r\n", 200),  # revalidated upstream
    (b"HEAD /o HTTP/1.1\r\nHost: x\r\n\r\n", 200),
    (b"GET /o HTTP/1.0\r\nHost: x\r\n\r\n", 200),  # closed after it (no keep-alive asked)
    (b"GET /o HTTP/1.1\r\nHost: x\r\nBad Name: y\r\n\r\n", 400),  # not a field name: aiohttp's 400, closed
    (b"GET /_cdn/health HTTP/1.1\r\nHost: x\r\n\r\n", 200),
    (b"GET /o HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nab", 200),
])
async def test_anything_but_a_plain_fresh_hit_gets_what_the_full_path_answers(up, pair, request_, status) -> None:
    up.routes["/o"] = lambda r: web.Response(body=b"hello", headers={"Cache-Control": "max-age=60", "ETag": '"v1"'})
    fast, full = pair
    for e in pair:
        await one(e.port)
    # a second request pipelined behind it, where the connection stays open after the first
    then = b"" if b"HTTP/1.0" in request_ or status == 400 else b"GET /o HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    a = await raw_http(fast.port, request_ + then, 3)
    b = await raw_http(full.port, request_ + then, 3)
    assert status_of(a) == status_of(b) == status, a[:200]
    assert fast.stats()["fast_hits"] == 0  # handed off, with the bytes it had (the pipelined one too)
    assert a.count(b"HTTP/1.") == b.count(b"HTTP/1.")
    assert (await one(fast.port)).startswith(b"HTTP/1.1 200")  # and it keeps serving, fast again
    assert fast.stats()["fast_hits"] == 1


async def test_a_connection_handed_to_the_full_path_stays_there(up, pair) -> None:
    up.routes["/o"] = lambda r: web.Response(body=b"hello", headers={"Cache-Control": "max-age=60"})
    fast, _ = pair
    await one(fast.port)
    r, w = await asyncio.open_connection("127.0.0.1", fast.port)
    w.write(b"GET /miss HTTP/1.1\r\nHost: x\r\n\r\n")  # a miss: the full path
    up.routes["/miss"] = lambda r: web.Response(body=b"m", headers={"Cache-Control": "max-age=60"})
    await asyncio.wait_for(r.readuntil(b"\r\n\r\nm"), 5)
    w.write(GET)
    head = await asyncio.wait_for(r.readuntil(b"\r\n\r\nhello"), 5)
    w.close()
    assert b"X-Cache: HIT" in head and fast.stats()["fast_hits"] == 0


async def test_a_request_split_across_packets_is_still_a_fast_hit(up, pair) -> None:
    up.routes["/o"] = lambda r: web.Response(body=b"hello", headers={"Cache-Control": "max-age=60"})
    fast, _ = pair
    await one(fast.port)
    r, w = await asyncio.open_connection("127.0.0.1", fast.port)
    for part in (GET[:5], GET[5:20], GET[20:]):
        w.write(part)
        await w.drain()
        await asyncio.sleep(0.02)
    assert (await asyncio.wait_for(r.readuntil(b"hello"), 5)).startswith(b"HTTP/1.1 200 OK")
    w.close()
    assert fast.stats()["fast_hits"] == 1


async def test_a_stale_or_missing_object_is_not_answered_fast(up, pair) -> None:
    up.routes["/o"] = lambda r: web.Response(body=b"hello", headers={"Cache-Control": "max-age=1"})
    fast, _ = pair
    await one(fast.port)
    await asyncio.sleep(1.1)
    assert b"X-Cache: HIT" not in await one(fast.port)  # stale: revalidated by the full path
    assert up.hits["/o"] == 2 and fast.stats()["fast_hits"] == 0


async def test_an_idle_kept_alive_fast_connection_is_closed_after_the_keepalive_timeout(up) -> None:
    up.routes["/o"] = lambda r: web.Response(body=b"hello", headers={"Cache-Control": "max-age=60"})
    e = await start_edge(up.url, name="edge-k", keepalive_timeout_s=0.3)
    try:
        await one(e.port)
        r, w = await asyncio.open_connection("127.0.0.1", e.port)
        w.write(GET)
        await asyncio.wait_for(r.readuntil(b"hello"), 5)
        assert await asyncio.wait_for(r.read(), 3) == b""  # closed by the edge, not by wait_for's timeout
        w.close()
        assert e.stats()["fast_hits"] == 1
    finally:
        await e.close()


@pytest.mark.parametrize("head, parsed", [
    (b"GET /a?b=1 HTTP/1.1\r\nHost: x\r\nAccept: */*", ("/a?b=1", frozenset({b"host", b"accept"}))),
    (b"GET /a HTTP/1.1\r\nHOST: x", ("/a", frozenset({b"host"}))),
    (b"GET /a HTTP/1.1\r\nAccept: x", None),  # no Host
    (b"GET /a HTTP/1.1\r\nHost: x\r\nHost: y", None),  # two
    (b"GET /a HTTP/1.1\r\nHost: x\r\n folded", None),
    (b"GET /a HTTP/1.1\r\nHost : x", None),
    (b"GET /a HTTP/1.1\r\nHost: x\ny", None),  # a bare LF
    (b"GET http://x/a HTTP/1.1\r\nHost: x", None),  # absolute form
    (b"GET /\xc3\xa9 HTTP/1.1\r\nHost: x", None),
    (b"POST /a HTTP/1.1\r\nHost: x", None),
    (b"GET /a HTTP/1.0\r\nHost: x", None),
    (b"GET /a b HTTP/1.1\r\nHost: x", None),
])
def test_only_a_well_formed_plain_get_is_read_by_the_fast_path(head, parsed) -> None:
    assert plain_get(head) == (parsed and (*parsed, len(parsed[1])))


async def test_a_small_request_over_the_field_limit_still_gets_431_not_a_fast_hit(up) -> None:
    up.routes["/o"] = lambda r: web.Response(body=b"hello", headers={"Cache-Control": "max-age=60"})
    e = await start_edge(up.url, name="edge-l", max_header_count=2)
    try:
        await one(e.port)
        many = b"GET /o HTTP/1.1\r\nHost: x\r\nA: 1\r\nB: 2\r\n\r\n"  # 3 fields, 40 bytes
        for _ in range(2):  # the second time from the parse memo
            assert status_of(await raw_http(e.port, many, 3)) == 431
        assert (await one(e.port)).startswith(b"HTTP/1.1 200") and e.stats()["fast_hits"] == 1
    finally:
        await e.close()


async def test_closing_the_edge_closes_its_fast_path_connections(up) -> None:
    up.routes["/o"] = lambda r: web.Response(body=b"hello", headers={"Cache-Control": "max-age=60"})
    e = await start_edge(up.url, name="edge-c")
    await one(e.port)
    r, w = await asyncio.open_connection("127.0.0.1", e.port)
    w.write(GET)
    await asyncio.wait_for(r.readuntil(b"hello"), 5)
    await e.close()  # aiohttp closes the connections it serves; the fast path's go with the gate
    assert await asyncio.wait_for(r.read(), 3) == b""
    w.close()
