"""Limits that keep a service alive (issue #16): each one driven past its value on loopback.

HTTP (edge and redirector, :mod:`testbed.services.limits`): connections over ``max_connections`` get a
complete 503 and are closed while the open ones are still served; requests over ``max_header_count`` or
``max_header_bytes`` get 431 (RFC 6585 §5); the service serves normally afterwards. DNS over TCP
(:mod:`testbed.services.dns`): connections over ``tcp_max_connections`` are closed unanswered, a connection
is closed after its ``tcp_max_queries_per_connection``-th answer, and UDP and new TCP connections are
answered afterwards.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import dns.message
import dns.query
import dns.rdatatype
import pytest
from aiohttp import web
from cdn_dns_fixtures import REGIONS, StandInEdge, static_zones
from cdn_helpers import start_edge
from pydantic import ValidationError

from contract.config import validate
from testbed.services.dns import DnsConfig, DnsServer
from testbed.services.edge import EdgeConfig
from testbed.services.limits import header_section_bytes
from testbed.services.origin import Origin, OriginConfig
from testbed.services.redirector import Redirector, RedirectorConfig
from testbed.util import async_wait_until

LIMITS = {"max_connections": 3, "max_header_count": 10, "max_header_bytes": 2048, "header_timeout_s": 0.6,
          "keepalive_timeout_s": 5.0}

# ---- HTTP: the edge and the redirector ------------------------------------------------------------------


@dataclass
class Service:
    name: str
    port: int
    ok: int  # the status of a normal request
    stats: Callable[[], Mapping[str, Any]]


@pytest.fixture(params=["edge", "redirector", "origin"])
async def service(request, up) -> AsyncIterator[Service]:
    if request.param == "origin":
        origin = Origin(validate(OriginConfig, {"name": "o-limits", "port": 0, **LIMITS}, "test"))
        await origin.start()

        def origin_stats() -> Mapping[str, Any]:
            return {k: origin.limits[k] for k in ("refused_connections", "refused_headers", "timed_out_headers")}

        yield Service("origin", origin.port, 404, origin_stats)  # /ok is no object of its catalog
        await origin.close()
        return
    if request.param == "edge":
        up.routes["/ok"] = lambda r: web.Response(text="ok", headers={"Cache-Control": "max-age=600"})
        edge = await start_edge(up.url, name="e-limits", **LIMITS)
        yield Service("edge", edge.port, 200, edge.stats)
        await edge.close()
        return
    stand_in = await StandInEdge("eu1").start()
    cfg = {
        "name": "redir-limits",
        "port": 0,
        "mapping": {"regions": REGIONS, "default_region": "eu", "edges": [stand_in.spec("eu")]},
        "health": {"interval": 0.2, "timeout": 0.15, "fall": 2, "rise": 2},
        **LIMITS,
    }
    redir = Redirector(validate(RedirectorConfig, cfg, "test"))
    await redir.start()
    yield Service("redirector", redir.port, 302, lambda: redir.stats)
    await redir.stop()
    await stand_in.stop()


def request_bytes(*fields: tuple[str, str]) -> bytes:
    """``GET /ok`` with ``Host`` and then ``fields``."""
    lines = [b"GET /ok HTTP/1.1", b"Host: x"] + [f"{k}: {v}".encode() for k, v in fields]
    return b"\r\n".join(lines) + b"\r\n\r\n"


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response with a Content-Length: (status, lower-case fields, body)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    body = await asyncio.wait_for(reader.readexactly(int(fields.get("content-length", "0"))), 5)
    return status, fields, body


async def exchange(
    port: int, data: bytes
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, int, dict[str, str]]:
    """Connect, send ``data``, read one response; the connection stays open."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    status, fields, _ = await read_response(reader)
    return reader, writer, status, fields


async def closed_by_server(reader: asyncio.StreamReader) -> bool:
    try:
        return await asyncio.wait_for(reader.read(), 5) == b""
    except ConnectionResetError:
        return True


async def close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    try:
        await writer.wait_closed()
    except (ConnectionError, OSError):
        pass


async def test_connections_over_max_connections_get_503_and_the_open_ones_are_served(service):
    held = []
    for _ in range(LIMITS["max_connections"]):  # each served (so counted) before the next one opens
        reader, writer, status, _ = await exchange(service.port, request_bytes())
        assert status == service.ok
        held.append((reader, writer))
    for _ in range(2):
        reader, writer = await asyncio.open_connection("127.0.0.1", service.port)
        writer.write(request_bytes())
        status, fields, body = await read_response(reader)
        assert status == 503, (service.name, status)
        assert fields["retry-after"] == "1" and fields["connection"] == "close"
        assert body and int(fields["content-length"]) == len(body)
        assert await closed_by_server(reader)  # a complete answer, then closed: never left hanging
        await close(writer)
    assert service.stats()["refused_connections"] == 2
    for reader, writer in held:  # the connections within the limit are still served
        writer.write(request_bytes())
        assert (await read_response(reader))[0] == service.ok
    await close(held.pop()[1])

    async def served_again() -> bool:
        _, writer, status, _ = await exchange(service.port, request_bytes())
        await close(writer)
        return status == service.ok

    await async_wait_until(served_again, timeout=5, what="a new connection served once one closed")
    for _, writer in held:
        await close(writer)


async def test_requests_over_the_header_limits_get_431_and_the_service_keeps_serving(service):
    count, size = LIMITS["max_header_count"], LIMITS["max_header_bytes"]
    at_count = [(f"X-F{i}", "1") for i in range(count - 1)]  # + Host: exactly max_header_count
    pad = size - header_section_bytes(((b"Host", b"x"),)) - len("X-Pad: \r\n")
    at_size = [("X-Pad", "p" * pad)]  # exactly max_header_bytes
    assert header_section_bytes(((b"Host", b"x"), (b"X-Pad", b"p" * pad))) == size
    for fields in (at_count, at_size):
        _, writer, status, _ = await exchange(service.port, request_bytes(*fields))
        await close(writer)
        assert status == service.ok, (service.name, fields[:1])
    over = {
        "one field over max_header_count": at_count + [("X-Last", "1")],
        "far over it (aiohttp's parser refuses it)": [(f"X-F{i}", "1") for i in range(5 * count)],
        "one byte over max_header_bytes": [("X-Pad", "p" * (pad + 1))],
        "max_header_bytes in a few fields": [(f"X-Pad{i}", "p" * (size // 3)) for i in range(3)],
    }
    for what, fields in over.items():
        reader, writer, status, got = await exchange(service.port, request_bytes(*fields))
        assert status == 431, (service.name, what, status)
        assert got["connection"] == "close" and got["cache-control"] == "no-store", what
        assert await closed_by_server(reader), what
        await close(writer)
    assert service.stats()["refused_headers"] == len(over)
    _, writer, status, _ = await exchange(service.port, request_bytes(("Accept", "*/*")))
    await close(writer)
    assert status == service.ok


async def test_slow_headers_get_408_and_free_their_slot(service):
    """Slowloris: connections that send their header section a few bytes at a time, or nothing at all,
    hold every slot until header_timeout_s; then they are closed and new clients are served again."""
    n = LIMITS["max_connections"]
    slow = []
    for i in range(n):
        reader, writer = await asyncio.open_connection("127.0.0.1", service.port)
        if i % 2 == 0:
            writer.write(b"GET /ok HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # never finished
            await writer.drain()
        slow.append((reader, writer, i % 2 == 0))
    reader, writer = await asyncio.open_connection("127.0.0.1", service.port)
    writer.write(request_bytes())
    assert (await read_response(reader))[0] == 503  # every slot held by a slow client
    await close(writer)
    t0 = time.monotonic()
    for reader, writer, started in slow:
        if started:  # a started header section: 408 and closed
            status, fields, body = await read_response(reader)
            assert status == 408 and fields["connection"] == "close" and b"timeout" in body, service.name
        assert await closed_by_server(reader)
        await close(writer)
    waited = time.monotonic() - t0
    assert waited >= LIMITS["header_timeout_s"] * 0.5, waited  # not closed before its time
    assert service.stats()["timed_out_headers"] == n

    async def served_again() -> bool:
        _, w, status, _ = await exchange(service.port, request_bytes())
        await close(w)
        return status == service.ok

    await async_wait_until(served_again, timeout=5, what="a new client served once the slow ones were closed")


async def test_a_slow_but_steady_response_and_keep_alive_are_not_timed_out(service):
    """The header timeout counts only until a header section is complete: a kept-alive connection that
    sends its next request after a pause longer than header_timeout_s is served."""
    reader, writer, status, _ = await exchange(service.port, request_bytes())
    assert status == service.ok
    await asyncio.sleep(LIMITS["header_timeout_s"] * 1.5)  # idle between requests (keepalive_timeout longer)
    writer.write(request_bytes())
    assert (await read_response(reader))[0] == service.ok
    await close(writer)
    assert service.stats()["timed_out_headers"] == 0


@pytest.mark.parametrize(
    "field, value",
    [("max_connections", 0), ("max_header_count", 0), ("max_header_bytes", 100), ("header_timeout_s", 0),
     ("keepalive_timeout_s", -1)],
)
def test_http_limits_are_validated(field, value):
    with pytest.raises(ValidationError, match=field):
        EdgeConfig(origin_url="http://127.0.0.1:1", **{field: value})
    with pytest.raises(ValidationError, match=field):
        RedirectorConfig(**{field: value})


# ---- DNS over TCP ----------------------------------------------------------------------------------------

NAME, ADDRESS = "origin.customer.example", "127.0.0.9"


@pytest.fixture
async def dns_server_with():
    servers: list[DnsServer] = []

    async def start(**limits: int) -> DnsServer:
        cfg = {"name": "dns-limits", "port": 0, "zones": static_zones(), **limits}
        server = DnsServer(validate(DnsConfig, cfg, "test"))
        await server.start()
        servers.append(server)
        return server

    yield start
    for s in servers:
        await s.stop()


def tcp_query(qid: int) -> bytes:
    q = dns.message.make_query(NAME, "A", use_edns=False)
    q.id = qid
    wire = q.to_wire()
    return struct.pack("!H", len(wire)) + wire


async def read_tcp_answer(reader: asyncio.StreamReader) -> dns.message.Message:
    (n,) = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), 5))
    return dns.message.from_wire(await asyncio.wait_for(reader.readexactly(n), 5))


def addresses(r: dns.message.Message) -> list[str]:
    return [rd.address for rr in r.answer if rr.rdtype == dns.rdatatype.A for rd in rr]


async def answered_by(server: DnsServer, tcp: bool) -> bool:
    q = dns.message.make_query(NAME, "A")
    fn = dns.query.tcp if tcp else dns.query.udp
    r = await asyncio.to_thread(fn, q, "127.0.0.1", timeout=2, port=server.port)
    return addresses(r) == [ADDRESS]


async def test_dns_tcp_connections_over_the_limit_are_closed_and_the_others_answered(dns_server_with):
    server = await dns_server_with(tcp_max_connections=2)
    held = []
    for qid in (1, 2):  # each answered (so counted) before the next one opens
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(tcp_query(qid))
        assert addresses(await read_tcp_answer(reader)) == [ADDRESS]
        held.append((reader, writer))
    for qid in (3, 4):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(tcp_query(qid))
        assert await closed_by_server(reader)  # closed at once, unanswered
        await close(writer)
    assert server.stats["tcp_refused_connections"] == 2
    for qid, (reader, writer) in enumerate(held, start=5):  # the connections within the limit still answer
        writer.write(tcp_query(qid))
        r = await read_tcp_answer(reader)
        assert r.id == qid and addresses(r) == [ADDRESS]
    assert await answered_by(server, tcp=False)
    await close(held.pop()[1])
    await async_wait_until(
        lambda: answered_by(server, tcp=True), timeout=5, what="TCP answered once one closed"
    )
    for _, writer in held:
        await close(writer)


async def test_dns_tcp_connection_closed_after_its_last_query(dns_server_with):
    server = await dns_server_with(tcp_max_queries_per_connection=3)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"".join(tcp_query(qid) for qid in range(1, 6)))  # five pipelined queries
    await writer.drain()
    ids = []
    for _ in range(3):
        r = await read_tcp_answer(reader)
        assert addresses(r) == [ADDRESS]
        ids.append(r.id)
    assert ids == [1, 2, 3]
    assert await closed_by_server(reader)  # after the third answer, nothing more
    await close(writer)
    assert server.stats["tcp_query_limit_closes"] == 1 and server.stats["tcp"] == 3
    assert await answered_by(server, tcp=True) and await answered_by(server, tcp=False)


@pytest.mark.parametrize("field", ["tcp_max_connections", "tcp_max_queries_per_connection"])
def test_dns_limits_are_validated(field):
    with pytest.raises(ValidationError, match=field):
        DnsConfig(zones=static_zones(), **{field: 0})
