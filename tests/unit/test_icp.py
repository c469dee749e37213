"""ICPv2 (RFC 2186) codec, server and client; rendezvous hashing; edge cooperation (cluster, siblings, parent)."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections import Counter

import pytest
from cdn_helpers import start_edge, start_origin

from testbed.services import hashing
from testbed.services.icp import (
    ICP_OP_HIT,
    ICP_OP_MISS,
    ICP_OP_MISS_NOFETCH,
    ICP_OP_QUERY,
    IcpClient,
    IcpDecodeError,
    IcpMessage,
    Op,
    start_server,
)
from testbed.util import async_wait_until, free_port


async def _true(v):
    return v


# ---- codec ---------------------------------------------------------------------------------------------


def test_query_wire_format_rfc2186():
    m = IcpMessage(ICP_OP_QUERY, reqnum=0x01020304, url="http://o/x", requester=0x7F000001)
    data = m.encode()
    assert len(data) == 20 + 4 + len("http://o/x") + 1
    opcode, version, length, reqnum = struct.unpack_from("!BBHI", data)
    assert (opcode, version, length, reqnum) == (1, 2, len(data), 0x01020304)
    assert data[20:24] == b"\x7f\x00\x00\x01" and data.endswith(b"http://o/x\x00")
    assert IcpMessage.decode(data) == m


@pytest.mark.parametrize("op", [ICP_OP_HIT, ICP_OP_MISS, ICP_OP_MISS_NOFETCH, Op.ERR, Op.DENIED])
def test_reply_round_trip(op):
    m = IcpMessage(op, 7, "http://o/y", options=0x80000000, sender=0x7F000001)
    data = m.encode()
    assert len(data) == 20 + len("http://o/y") + 1
    assert IcpMessage.decode(data) == m


GOOD = IcpMessage(ICP_OP_QUERY, 1, "http://o/x").encode()
BAD_DATAGRAMS = {
    "empty": b"",
    "truncated header": GOOD[:7],
    "header only": GOOD[:20],
    "bad version": bytes([1, 3]) + GOOD[2:],
    "length mismatch": GOOD + b"extra",
    "no NUL": GOOD[:-1] + b"x",
    "unknown opcode": bytes([99]) + GOOD[1:],
    "non-ascii url": GOOD[:-2] + b"\xff\x00",
    "garbage": b"\xde\xad\xbe\xef" * 40,
}


@pytest.mark.parametrize("name", list(BAD_DATAGRAMS))
def test_decode_rejects_bad_datagrams(name):
    with pytest.raises(IcpDecodeError):
        IcpMessage.decode(BAD_DATAGRAMS[name])


# ---- server and client -------------------------------------------------------------------------------


async def test_server_answers_hit_and_miss_and_survives_garbage():
    stored = {"http://o/have"}
    transport, server = await start_server(lambda url: url in stored)
    port = transport.get_extra_info("sockname")[1]
    client = await IcpClient.create()
    raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        assert await client.query("http://o/have", [("127.0.0.1", port)], 2.0) == ("127.0.0.1", port)
        assert await client.query("http://o/none", [("127.0.0.1", port)], 2.0) is None
        for data in BAD_DATAGRAMS.values():
            raw.sendto(data, ("127.0.0.1", port))
        reply = IcpMessage(ICP_OP_HIT, 5, "http://o/x").encode()  # a server expects only queries
        raw.sendto(reply, ("127.0.0.1", port))
        await async_wait_until(lambda: _true(server.invalid_received == len(BAD_DATAGRAMS) + 1), 5)
        assert await client.query("http://o/have", [("127.0.0.1", port)], 2.0) == ("127.0.0.1", port)
        st = server.stats()
        assert st["queries_received"] == 3 and st["hits_sent"] == 2 and st["misses_sent"] == 1
        assert st["invalid_received"] == len(BAD_DATAGRAMS) + 1
        assert client.stats()["queries_sent"] == 3 and client.stats()["replies_received"] == 3
    finally:
        raw.close()
        client.close()
        transport.close()


async def test_client_first_hit_among_several_and_timeout():
    t1, _ = await start_server(lambda url: False)
    t2, _ = await start_server(lambda url: True)
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    p1, p2 = t1.get_extra_info("sockname")[1], t2.get_extra_info("sockname")[1]
    client = await IcpClient.create()
    try:
        peers = [("127.0.0.1", p1), ("127.0.0.1", p2), silent.getsockname()]
        assert await client.query("http://o/x", peers, 2.0) == ("127.0.0.1", p2)
        # only a silent peer: the query times out (short timeout) and says "no hit"
        assert await client.query("http://o/x", [silent.getsockname()], 0.05) is None
        assert client.timeouts == 1
    finally:
        client.close()
        t1.close()
        t2.close()
        silent.close()


async def test_server_miss_nofetch():
    transport, _ = await start_server(lambda url: False, nofetch=lambda: True)
    port = transport.get_extra_info("sockname")[1]
    loop = asyncio.get_running_loop()
    got: asyncio.Future[bytes] = loop.create_future()

    class P(asyncio.DatagramProtocol):
        def datagram_received(self, data, addr):
            got.set_result(data)

    t, _ = await loop.create_datagram_endpoint(P, local_addr=("127.0.0.1", 0))
    try:
        t.sendto(IcpMessage(ICP_OP_QUERY, 9, "http://o/z").encode(), ("127.0.0.1", port))
        reply = IcpMessage.decode(await asyncio.wait_for(got, 5))
        assert reply.opcode == ICP_OP_MISS_NOFETCH and reply.reqnum == 9 and reply.url == "http://o/z"
    finally:
        t.close()
        transport.close()


# ---- rendezvous hashing ------------------------------------------------------------------------------


def test_hrw_distribution_and_stability():
    members = ["e1", "e2", "e3", "e4"]
    keys = [f"/img/img{i:05d}.jpg" for i in range(4000)]
    homes = {k: hashing.home(k, members) for k in keys}
    counts = Counter(homes.values())
    assert set(counts) == set(members)
    assert all(800 <= c <= 1200 for c in counts.values()), counts
    assert all(hashing.rank(k, members)[0] == homes[k] for k in keys[:200])
    # removing e3 moves exactly the keys that lived on e3, each to its second choice
    rest = ["e1", "e2", "e4"]
    for k in keys:
        new = hashing.home(k, rest)
        if homes[k] != "e3":
            assert new == homes[k]
        else:
            assert new == hashing.rank(k, members)[1]
    assert hashing.home("x", []) is None


# ---- edge cooperation --------------------------------------------------------------------------------


@pytest.fixture
async def origin():
    o = await start_origin()
    yield o
    await o.close()


async def get(http, url, **kw):
    async with http.get(url, **kw) as r:
        return r.status, r.headers, await r.read()


def static_paths(origin):
    return [o.path for o in origin.catalog.objects if o.cls in ("image", "js", "css")]


async def test_cluster_home_server_asked_first_no_loops(origin, http):
    pa, pb = free_port(), free_port()
    cluster = [{"name": "A", "url": f"http://127.0.0.1:{pa}"}, {"name": "B", "url": f"http://127.0.0.1:{pb}"}]
    a = await start_edge(origin.url, name="A", port=pa, cluster=cluster)
    b = await start_edge(origin.url, name="B", port=pb, cluster=cluster)
    try:
        paths = static_paths(origin)
        on_b = next(p for p in paths if hashing.home(p, ["A", "B"]) == "B")
        on_a = next(p for p in paths if hashing.home(p, ["A", "B"]) == "A")
        s, h, _ = await get(http, a.url + on_b)
        assert s == 200 and h["X-Served-By"] == "A" and "B (cdnlab)" in h["Via"]
        assert b.stats()["inter_cache"]["peer_requests_received"] == 1
        assert a.stats()["inter_cache"]["peer_fetches"] == 1 and a.stats()["fetches"] == {"peer": 1}
        # the home B now holds it: a request to B is a hit, the origin was asked once
        assert (await get(http, b.url + on_b))[1]["X-Cache"] == "HIT"
        assert origin.by_path[on_b] == 1
        # A is home for on_a: no peer fetch
        await get(http, a.url + on_a)
        assert a.stats()["inter_cache"]["peer_fetches"] == 1 and origin.by_path[on_a] == 1
        # a peer request is never forwarded again, even when the receiver thinks another member is home
        other = next(p for p in paths if hashing.home(p, ["A", "B"]) == "B" and p != on_b)
        s, _, _ = await get(http, a.url + other, headers={"X-CDN-Peer": "B"})
        assert s == 200 and b.stats()["inter_cache"]["peer_requests_received"] == 1
        assert origin.by_path[other] == 1
    finally:
        await a.close()
        await b.close()


async def test_via_loop_is_not_forwarded(origin, http):
    pa = free_port()
    pb = free_port()  # B is a member nobody runs: a forwarded request would fail over to the origin anyway
    cluster = [{"name": "A", "url": f"http://127.0.0.1:{pa}"}, {"name": "B", "url": f"http://127.0.0.1:{pb}"}]
    a = await start_edge(origin.url, name="A", port=pa, cluster=cluster)
    try:
        p = next(p for p in static_paths(origin) if hashing.home(p, ["A", "B"]) == "B")
        s, _, _ = await get(http, a.url + p, headers={"Via": "1.1 A (cdnlab)"})
        assert s == 200 and a.stats()["inter_cache"]["peer_fetches"] == 0
    finally:
        await a.close()


async def test_sibling_icp_hit_fetches_from_sibling(origin, http):
    ia, ib = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_DGRAM)
    b = await start_edge(origin.url, name="B", icp_port=ib)
    a = await start_edge(
        origin.url,
        name="A",
        icp_port=ia,
        icp_timeout_ms=1000,
        siblings=[{"name": "B", "icp_port": ib, "http_url": b.url}],
    )
    try:
        warm, cold = static_paths(origin)[:2]
        await get(http, b.url + warm)
        s, h, body = await get(http, a.url + warm)
        assert s == 200 and body and h["X-Served-By"] == "A"
        assert origin.by_path[warm] == 1  # served by sibling B, not the origin
        sa, sb = a.stats()["inter_cache"], b.stats()["inter_cache"]
        assert sa["icp_client"]["queries_sent"] == 1 and sa["sibling_fetches"] == 1
        assert sb["icp_server"]["queries_received"] == 1 and sb["icp_server"]["hits_sent"] == 1
        assert sb["peer_requests_received"] == 1
        await get(http, a.url + cold)  # ICP miss: A goes to the origin
        assert origin.by_path[cold] == 1 and b.stats()["inter_cache"]["icp_server"]["misses_sent"] == 1
        assert a.stats()["bytes_from_peers"] > 0
    finally:
        await a.close()
        await b.close()


async def test_sibling_icp_timeout_falls_back_to_origin(origin, http):
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    a = await start_edge(
        origin.url,
        name="A",
        icp_timeout_ms=50,
        siblings=[{"name": "dead", "icp_port": silent.getsockname()[1], "http_url": "http://127.0.0.1:1"}],
    )
    try:
        p = static_paths(origin)[0]
        s, h, _ = await get(http, a.url + p)
        assert s == 200 and h["X-Cache"] == "MISS" and origin.by_path[p] == 1
        assert a.stats()["inter_cache"]["icp_client"]["timeouts"] == 1
    finally:
        silent.close()
        await a.close()


async def test_parent_cache_used_before_origin(origin, http):
    parent = await start_edge(origin.url, name="P")
    c1 = await start_edge(origin.url, name="C1", parent_url=parent.url)
    c2 = await start_edge(origin.url, name="C2", parent_url=parent.url)
    try:
        p = static_paths(origin)[0]
        assert (await get(http, c1.url + p))[0] == 200
        s, h, _ = await get(http, c2.url + p)
        assert s == 200 and h["X-Served-By"] == "C2" and "P (cdnlab)" in h["Via"]
        assert origin.by_path[p] == 1 and parent.stats()["hits"] == 1
        assert c1.stats()["fetches"] == {"parent": 1} and c2.stats()["fetches"] == {"parent": 1}
    finally:
        for e in (c1, c2, parent):
            await e.close()


async def test_parent_down_falls_back_to_origin(origin, http):
    c = await start_edge(origin.url, name="C", parent_url=f"http://127.0.0.1:{free_port()}")
    try:
        p = static_paths(origin)[0]
        assert (await get(http, c.url + p))[0] == 200 and origin.by_path[p] == 1
    finally:
        await c.close()


async def test_edge_answers_miss_nofetch_while_origin_unreachable(http):
    dead_origin = f"http://127.0.0.1:{free_port()}"
    b = await start_edge(dead_origin, name="B", icp_port=0)
    loop = asyncio.get_running_loop()
    replies: asyncio.Queue[bytes] = asyncio.Queue()

    class P(asyncio.DatagramProtocol):
        def datagram_received(self, data, addr):
            replies.put_nowait(data)

    t, _ = await loop.create_datagram_endpoint(P, local_addr=("127.0.0.1", 0))
    try:
        q = IcpMessage(ICP_OP_QUERY, 1, dead_origin + "/img/x.jpg").encode()
        t.sendto(q, ("127.0.0.1", b.icp_port))
        assert IcpMessage.decode(await asyncio.wait_for(replies.get(), 5)).opcode == ICP_OP_MISS
        assert (await get(http, b.url + "/img/x.jpg"))[0] == 502
        t.sendto(q, ("127.0.0.1", b.icp_port))
        assert IcpMessage.decode(await asyncio.wait_for(replies.get(), 5)).opcode == ICP_OP_MISS_NOFETCH
    finally:
        t.close()
        await b.close()
