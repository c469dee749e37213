"""The Scapy DNS probe against the real mapping DNS on loopback (with and without ECS, RFC 7871)."""

from __future__ import annotations

import asyncio
import json
import socket
import sys

import dns.edns
import dns.flags
import dns.message
import pytest
from cdn_dns_fixtures import StandInEdge, dns_config

from contract.config import validate
from testbed.measure.dnsprobe import ProbeError, build_query, parse_reply, probe
from testbed.services.dns import DnsConfig, DnsServer
from testbed.util import free_port

EU = {"10.0.0.1", "10.0.0.2"}
US = {"10.0.0.3"}


@pytest.fixture
async def server():
    edges = [await StandInEdge(n).start() for n in ("eu1", "eu2", "us1")]
    specs = [edges[0].spec("eu"), edges[1].spec("eu"), edges[2].spec("us")]
    for i, s in enumerate(specs):
        s["probe_url"], s["address"] = f"http://127.0.0.1:{s['port']}", f"10.0.0.{i + 1}"
    srv = DnsServer(
        validate(DnsConfig, dns_config(edges=specs, policy="testbed.services.mapping:EcsAware"), "t")
    )
    await srv.start()
    yield srv
    await srv.stop()
    for e in edges:
        await e.stop()


async def ask(srv, name, ecs=None, **kw):
    return await asyncio.to_thread(probe, "127.0.0.1", srv.port, name, "A", ecs, timeout=2, **kw)


async def test_ecs_answer_follows_the_subnet_and_scope_is_echoed(server):
    plain = await ask(server, "a73.g.cdnlab.net")
    assert not plain.error and plain.rcode == "NOERROR"
    assert set(plain.addresses) <= EU and plain.addresses  # mapped by the resolver (our) address
    assert plain.ecs_scope is None and plain.ecs_echo is None and plain.edns
    assert plain.min_ttl == 20 and plain.rtt_ms > 0
    with_ecs = await ask(server, "a73.g.cdnlab.net", ecs="127.2.9.77/24")  # host bits cleared
    assert with_ecs.ecs == "127.2.9.0/24"
    assert set(with_ecs.addresses) == US  # the client subnet, not the resolver, decides
    assert with_ecs.ecs_echo == "127.2.9.0/24" and with_ecs.ecs_scope == 16
    assert server.dns.ecs_seen[-1] == ("a73.g.cdnlab.net.", "127.2.9.0/24")


async def test_cname_chain_and_negative_answers(server):
    r = await ask(server, "www.customer.example")
    types = [a.type for a in r.answers]
    assert types[:2] == ["CNAME", "CNAME"] and types[-1] == "A"
    assert r.answers[0].data.rstrip(".") == "cache.customer.example.cdnlab-dns.net"
    assert (await ask(server, "nope.customer.example")).rcode == "NXDOMAIN"
    assert (await ask(server, "www.elsewhere.org")).rcode == "REFUSED"


async def test_unanswered_probe_reports_an_error():
    port = free_port(socket.SOCK_DGRAM)  # nobody listens: ICMP port unreachable or a timeout
    r = await asyncio.to_thread(probe, "127.0.0.1", port, "a73.g.cdnlab.net", timeout=0.3)
    assert r.error and not r.answers


def test_query_on_the_wire_is_standard_ecs():
    q = dns.message.from_wire(bytes(build_query("a1.g.cdnlab.net", "A", "10.0.3.0/24", qid=7)))
    assert q.id == 7 and q.edns == 0 and not (q.ednsflags & dns.flags.DO)
    (opt,) = q.options
    assert isinstance(opt, dns.edns.ECSOption)
    assert (opt.address, opt.srclen, opt.scopelen) == ("10.0.3.0", 24, 0)
    assert dns.message.from_wire(bytes(build_query("x.example", edns=False))).edns == -1
    for bad in (("x.example", "A", "10.0.3.0/33"), ("x.example", "BOGUS", None), ("", "A", None)):
        with pytest.raises(ProbeError):
            build_query(*bad)


def test_garbage_reply_is_an_error_not_a_crash():
    from testbed.measure.dnsprobe import ProbeResult

    assert "short reply" in parse_reply(b"\x00", ProbeResult("127.0.0.1", 53, "x", "A")).error
    query = bytes(build_query("x.example"))  # a query, not a reply
    assert "QR" in parse_reply(query, ProbeResult("127.0.0.1", 53, "x", "A")).error


async def test_cli_json(server):
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "testbed.measure.dnsprobe",
        "--server",
        "127.0.0.1",
        "--port",
        str(server.port),
        "--name",
        "a73.g.cdnlab.net",
        "--ecs",
        "127.2.0.0/16",
        "--json",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err
    d = json.loads(out.decode().strip().splitlines()[-1])
    assert set(d["addresses"]) == US and d["ecs_scope"] == 16 and d["answers"][0]["ttl"] == 20
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "testbed.measure.dnsprobe",
        "--server",
        "127.0.0.1",
        "--name",
        "x",
        "--ecs",
        "not-a-subnet",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2 and b"bad ECS subnet" in err
