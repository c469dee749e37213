"""Interim responses through the edge (RFC 9110 §15.2, RFC 8297 103 Early Hints): relayed to the client
before the final response, as they come, and never cached; not to HTTP/1.0 clients; 100 and 101 are not
relayed; hop-by-hop fields are removed. The upstream is a raw socket server (aiohttp cannot send 1xx)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from cdn_helpers import raw_http, start_edge

EARLY = b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\nConnection: X-Hop\r\nX-Hop: 1\r\n\r\n"
FINAL = b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 5\r\n\r\nhello"


class RawUpstream:
    """Answers every request with ``interim`` (sent first, then ``gap`` seconds) and ``FINAL``."""

    def __init__(self, interim: bytes, gap: float = 0.0) -> None:
        self.interim, self.gap, self.requests = interim, gap, 0
        self.server: asyncio.AbstractServer | None = None

    async def handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while await r.readuntil(b"\r\n\r\n"):
                self.requests += 1
                w.write(self.interim)
                await w.drain()
                await asyncio.sleep(self.gap)
                w.write(FINAL)
                await w.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            w.close()

    async def start(self) -> str:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"


@pytest.fixture
async def upstream(request) -> AsyncIterator[tuple[RawUpstream, str]]:
    u = RawUpstream(*request.param) if hasattr(request, "param") else RawUpstream(EARLY)
    url = await u.start()
    yield u, url
    assert u.server is not None
    u.server.close()


async def test_early_hints_reach_the_client_before_the_final_response_and_are_not_cached(upstream) -> None:
    up, url = upstream
    e = await start_edge(url, name="edge-i")
    try:
        first = await raw_http(e.port, b"GET /p HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 5)
        assert first.startswith(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK")
        assert b"X-Hop" not in first and first.endswith(b"hello")
        again = await raw_http(e.port, b"GET /p HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 5)
        assert again.startswith(b"HTTP/1.1 200 OK") and b"X-Cache: HIT" in again  # the 1xx was not stored
        assert up.requests == 1 and e.stats()["interim_relayed"] == 1
    finally:
        await e.close()


async def test_hints_are_written_as_they_arrive_not_with_the_final_response(upstream) -> None:
    up, url = upstream
    up.gap = 0.5
    e = await start_edge(url, name="edge-i")
    try:
        r, w = await asyncio.open_connection("127.0.0.1", e.port)
        w.write(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        hint = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 0.4)  # before the upstream's final answer
        assert hint.startswith(b"HTTP/1.1 103 ")
        final = await asyncio.wait_for(r.readuntil(b"hello"), 5)
        assert final.startswith(b"HTTP/1.1 200 OK")
        w.close()
    finally:
        await e.close()


async def test_an_http_1_0_client_gets_no_interim_response(upstream) -> None:
    _, url = upstream
    e = await start_edge(url, name="edge-i")
    try:
        out = await raw_http(e.port, b"GET /q HTTP/1.0\r\nHost: x\r\n\r\n", 5)
        assert out.startswith(b"HTTP/1.0 200 OK") and b" 103 " not in out
        assert e.stats()["interim_relayed"] == 0
    finally:
        await e.close()


@pytest.mark.parametrize("upstream", [(b"HTTP/1.1 100 Continue\r\n\r\n",)], indirect=True)
async def test_100_continue_is_not_relayed(upstream) -> None:
    _, url = upstream
    e = await start_edge(url, name="edge-i")
    try:
        out = await raw_http(e.port, b"GET /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 5)
        assert out.startswith(b"HTTP/1.1 200 OK") and out.endswith(b"hello")
    finally:
        await e.close()


@pytest.mark.parametrize("upstream", [(b"HTTP/1.1 102 Processing\r\n\r\n" + EARLY,)], indirect=True)
async def test_several_interim_responses_are_relayed_in_order(upstream) -> None:
    _, url = upstream
    e = await start_edge(url, name="edge-i")
    try:
        out = await raw_http(e.port, b"GET /m HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 5)
        assert out.startswith(b"HTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 103 Early Hints\r\n")
        assert out.index(b"HTTP/1.1 200 OK") > out.index(b" 103 ") and e.stats()["interim_relayed"] == 2
    finally:
        await e.close()
