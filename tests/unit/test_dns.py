"""The mapping DNS server on loopback, queried with dnspython (UDP/TCP, with/without ECS) and dig."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys

import dns.edns
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest
import yaml
from cdn_dns_fixtures import StandInEdge, dns_config

from contract.config import ConfigError, validate
from testbed.services.dns import DnsConfig, DnsServer, free_dns_port
from testbed.util import async_wait_until, free_port, wait_until


@pytest.fixture
async def edges():
    es = [await StandInEdge(n).start() for n in ("eu1", "eu2", "us1")]
    yield {e.name: e for e in es}
    for e in es:
        await e.stop()


def edge_specs(edges) -> list[dict]:
    return [edges["eu1"].spec("eu"), edges["eu2"].spec("eu"), edges["us1"].spec("us")]


async def start(cfg: dict, all_up: bool = True) -> DnsServer:
    """A started server; with ``all_up``, once every edge is up: a warm-up probe slowed past its timeout
    by a busy machine marks a live edge down until ``rise`` probes succeed, and the answers would differ."""
    server = DnsServer(validate(DnsConfig, cfg, "test"))
    await server.start()
    if all_up and server.health.state:
        async def up() -> bool:
            return all(server.health.is_up(name) for name in server.health.state)

        await async_wait_until(up, timeout=10, what="every edge up")
    return server


async def ask(server, name, rdtype="A", source="127.0.0.1", tcp=False, ecs=None, edns=True, payload=1232):
    q = dns.message.make_query(name, rdtype, use_edns=0 if edns else False, payload=payload)
    if ecs:
        q.use_edns(0, payload=payload, options=[dns.edns.ECSOption.from_text(ecs)])
    fn = dns.query.tcp if tcp else dns.query.udp
    return await asyncio.to_thread(fn, q, "127.0.0.1", timeout=2, port=server.port, source=source)


def a_addrs(r) -> list[str]:
    return [rd.address for rr in r.answer if rr.rdtype == dns.rdatatype.A for rd in rr]


def ttl_of(r, rdtype) -> int:
    return next(rr.ttl for rr in r.answer if rr.rdtype == rdtype)


def edge_of(edges, r) -> set[str]:
    # all stand-in edges are on 127.0.0.1; tell them apart by configured address instead
    return set(a_addrs(r))


@pytest.fixture
async def mapped(edges):
    # give the edges distinct addresses in DNS answers while probing them on 127.0.0.1:port
    specs = edge_specs(edges)
    for i, s in enumerate(specs):
        s["probe_url"] = f"http://127.0.0.1:{s['port']}"
        s["address"] = f"10.0.0.{i + 1}"
    server = await start(dns_config(edges=specs))
    yield server
    await server.stop()


EU = {"10.0.0.1", "10.0.0.2"}
US = {"10.0.0.3"}


async def test_low_level_answers_edge_of_resolver_region_with_short_ttl(mapped):
    r = await ask(mapped, "a73.g.cdnlab.net")
    assert r.rcode() == dns.rcode.NOERROR and r.flags & dns.flags.AA
    assert set(a_addrs(r)) <= EU and len(a_addrs(r)) == 1 and ttl_of(r, dns.rdatatype.A) == 20
    again = [a_addrs(await ask(mapped, "A73.g.cdnlab.net"))[0] for _ in range(5)]
    assert set(again) == set(a_addrs(r))  # the hash keeps the name on one edge
    spread = {a_addrs(await ask(mapped, f"a{i}.g.cdnlab.net"))[0] for i in range(30)}
    assert spread == EU
    r_us = await ask(mapped, "a73.g.cdnlab.net", source="127.2.0.1")
    assert set(a_addrs(r_us)) == US
    r_tcp = await ask(mapped, "a73.g.cdnlab.net", tcp=True)
    assert a_addrs(r_tcp) == a_addrs(r)


async def test_customer_cname_chain_is_followed_inside_our_zones(mapped):
    r = await ask(mapped, "www.customer.example")
    chain = [(rr.name.to_text(), rr.rdtype) for rr in r.answer]
    assert chain == [
        ("www.customer.example.", dns.rdatatype.CNAME),
        ("cache.customer.example.cdnlab-dns.net.", dns.rdatatype.CNAME),
        ("a73.g.cdnlab.net.", dns.rdatatype.A),
    ]
    assert set(a_addrs(r)) <= EU


async def test_negative_answers_carry_soa_and_refused_outside_zones(mapped):
    r = await ask(mapped, "nosuch.customer.example")
    assert r.rcode() == dns.rcode.NXDOMAIN and r.authority[0].rdtype == dns.rdatatype.SOA
    assert r.authority[0].ttl == 60  # min(SOA TTL, MINIMUM), RFC 2308
    r = await ask(mapped, "origin.customer.example", "AAAA")
    assert r.rcode() == dns.rcode.NOERROR and not r.answer and r.authority[0].rdtype == dns.rdatatype.SOA
    r = await ask(mapped, "sub.customer.example")  # empty non-terminal: NODATA, not NXDOMAIN
    assert r.rcode() == dns.rcode.NOERROR and not r.answer
    r = await ask(mapped, "bogus.g.cdnlab.net")
    assert r.rcode() == dns.rcode.NXDOMAIN and r.authority[0].name.to_text() == "g.cdnlab.net."
    r = await ask(mapped, "a73.g.cdnlab.net", "AAAA")
    assert r.rcode() == dns.rcode.NOERROR and not r.answer and r.authority
    r = await ask(mapped, "www.example.org")
    assert r.rcode() == dns.rcode.REFUSED and not r.flags & dns.flags.AA
    assert mapped.stats["rcode_nxdomain"] >= 2 and mapped.stats["rcode_refused"] == 1


async def test_high_level_refers_to_low_level_server_of_resolver_region(edges):
    server = await start(
        dns_config(
            edges=edge_specs(edges), low_level=False, high_level={"eu": "127.53.1.1", "us": "127.53.2.2"}
        )
    )
    try:
        r = await ask(server, "a73.g.cdnlab.net")
        assert not r.answer and not r.flags & dns.flags.AA
        ns = r.authority[0]
        assert ns.rdtype == dns.rdatatype.NS and ns.ttl == 3600 and ns.name.to_text() == "g.cdnlab.net."
        assert [rd.target.to_text() for rd in ns] == ["ns-eu.g.cdnlab.net."]
        assert [rd.address for rr in r.additional if rr.rdtype == dns.rdatatype.A for rd in rr] == [
            "127.53.1.1"
        ]
        r = await ask(server, "a73.g.cdnlab.net", source="127.2.0.9")
        assert [rd.target.to_text() for rd in r.authority[0]] == ["ns-us.g.cdnlab.net."]
        # the customer chain stops at the delegated name: the resolver chases it
        r = await ask(server, "www.customer.example")
        assert [rr.rdtype for rr in r.answer] == [dns.rdatatype.CNAME, dns.rdatatype.CNAME]
        assert server.stats["referral_us"] == 1
    finally:
        await server.stop()


async def test_ecs_option_drives_answer_and_scope_is_echoed(edges):
    specs = edge_specs(edges)
    for i, s in enumerate(specs):
        s["probe_url"], s["address"] = f"http://127.0.0.1:{s['port']}", f"10.0.0.{i + 1}"
    server = await start(dns_config(edges=specs, policy="testbed.services.mapping:EcsAware"))
    try:
        r = await ask(server, "a73.g.cdnlab.net", ecs="127.2.9.0/24")  # resolver in eu, client in us
        assert set(a_addrs(r)) == US
        opt = [o for o in r.options if isinstance(o, dns.edns.ECSOption)]
        assert (
            len(opt) == 1 and opt[0].address == "127.2.9.0" and opt[0].srclen == 24 and opt[0].scopelen == 16
        )
        assert server.dns.ecs_seen[-1] == ("a73.g.cdnlab.net.", "127.2.9.0/24")
        r = await ask(server, "a73.g.cdnlab.net")  # no ECS -> resolver address, no ECS in reply
        assert set(a_addrs(r)) <= EU and not [o for o in r.options if isinstance(o, dns.edns.ECSOption)]
        r = await ask(server, "www.customer.example", ecs="127.2.9.0/24")  # static part: scope 0
        assert [o.scopelen for o in r.options if isinstance(o, dns.edns.ECSOption)][-1] in (0, 16)
        # malformed ECS (bits beyond the source prefix) -> FORMERR
        q = dns.message.make_query("a1.g.cdnlab.net", "A")
        q.use_edns(0, options=[dns.edns.GenericOption(8, b"\x00\x01\x08\x00\x7f\x01")])
        bad = await asyncio.to_thread(dns.query.udp, q, "127.0.0.1", timeout=2, port=server.port)
        assert bad.rcode() == dns.rcode.FORMERR
    finally:
        await server.stop()


async def test_geo_policy_echoes_ecs_with_scope_zero(mapped):
    r = await ask(mapped, "a73.g.cdnlab.net", ecs="127.2.9.0/24")
    assert set(a_addrs(r)) <= EU  # GeoByResolver ignores the client subnet
    assert [(o.srclen, o.scopelen) for o in r.options if isinstance(o, dns.edns.ECSOption)] == [(24, 0)]


async def test_udp_truncation_and_full_answer_over_tcp(mapped):
    r = await ask(mapped, "big.customer.example", "TXT", edns=False)
    assert r.flags & dns.flags.TC and not r.answer
    r = await ask(mapped, "big.customer.example", "TXT", tcp=True, edns=False)
    assert not r.flags & dns.flags.TC and len(r.answer[0][0].strings) == 4
    r = await ask(mapped, "big.customer.example", "TXT", payload=1232)  # fits in EDNS payload
    assert not r.flags & dns.flags.TC and r.answer
    assert mapped.stats["truncated"] == 1


async def test_dead_edge_leaves_answers_and_comes_back(edges, mapped):
    names = [f"a{i}.g.cdnlab.net" for i in range(20)]

    async def answered_addrs() -> set[str]:
        return {a for n in names for a in a_addrs(await ask(mapped, n))}

    assert await answered_addrs() == EU
    await edges["eu2"].stop()

    async def eu2_gone() -> bool:
        return await answered_addrs() == {"10.0.0.1"}

    await async_wait_until(eu2_gone, timeout=5, what="eu2 out of answers")
    await edges["eu1"].stop()  # whole eu cluster down -> nearest live edge elsewhere
    await async_wait_until(lambda: _eq(answered_addrs(), US), timeout=5, what="fallback to us")
    await edges["us1"].stop()
    await async_wait_until(
        lambda: _rcode(ask(mapped, "a1.g.cdnlab.net"), dns.rcode.SERVFAIL),
        timeout=5,
        what="SERVFAIL when all down",
    )


async def test_warmup_before_first_answer_excludes_dead_edge(edges):
    specs = edge_specs(edges)
    dead = dict(specs[1], name="dead", port=free_port())
    server = await start(
        dns_config(edges=[specs[0], dead], health={"interval": 5, "timeout": 0.3, "fall": 3}), all_up=False
    )
    try:
        first = {a for i in range(20) for a in a_addrs(await ask(server, f"a{i}.g.cdnlab.net"))}
        assert first == {"127.0.0.1"} and server.health.is_up("eu1") and not server.health.is_up("dead")
    finally:
        await server.stop()


async def test_recovery_after_rise_successes(edges, mapped):
    edges["us1"].healthy = False
    await async_wait_until(
        lambda: _eq(_addrs(ask(mapped, "a1.g.cdnlab.net", source="127.2.0.1")), EU),
        timeout=5,
        what="us1 down",
    )
    edges["us1"].healthy = True
    await async_wait_until(
        lambda: _eq(_addrs(ask(mapped, "a1.g.cdnlab.net", source="127.2.0.1")), US),
        timeout=5,
        what="us1 back",
    )


async def _addrs(coro) -> set[str]:
    return set(a_addrs(await coro))


async def _eq(coro, want) -> bool:
    got = await coro
    return got == want or (want == EU and got and got <= EU)


async def _rcode(coro, want) -> bool:
    return (await coro).rcode() == want


@pytest.mark.skipif(not shutil.which("dig"), reason="dig (dnsutils) not installed")
async def test_dig_sees_the_chain(mapped):
    out = await asyncio.to_thread(
        subprocess.run,
        [
            "dig",
            "@127.0.0.1",
            "-p",
            str(mapped.port),
            "+norec",
            "+time=2",
            "+tries=1",
            "www.customer.example",
            "A",
        ],
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert "status: NOERROR" in out.stdout and "flags: qr aa" in out.stdout
    assert (
        "a73.g.cdnlab.net.\t20\tIN\tA" in out.stdout.replace(" ", "\t") or "a73.g.cdnlab.net." in out.stdout
    )


def test_service_main_runs_answers_and_exits_cleanly(tmp_path):
    port = free_dns_port()  # SOCK_DGRAM
    cfg = dns_config(edges=[{"name": "e", "address": "10.9.9.9", "region": "eu"}], port=port)
    cfg["health"] = {"enabled": False}
    cfg["log_file"] = str(tmp_path / "dns.log")
    (tmp_path / "dns.yaml").write_text(yaml.safe_dump(cfg))
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    p = subprocess.Popen(
        [sys.executable, "-m", "testbed.services.dns", "--config", str(tmp_path / "dns.yaml")], env=env
    )
    try:
        q = dns.message.make_query("a5.g.cdnlab.net", "A")
        r = wait_until(lambda: dns.query.udp(q, "127.0.0.1", port=port, timeout=0.3), 10, what="dns up")
        assert a_addrs(r) == ["10.9.9.9"]
        p.send_signal(signal.SIGTERM)
        assert p.wait(10) == 0
        assert "stopped cleanly" in (tmp_path / "dns.log").read_text()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_bad_config_names_file_and_field(tmp_path):
    bad = dns_config(edges=[{"name": "e", "address": "10.9.9.9", "region": "eu"}])
    bad["mapped"]["ttl"] = -5
    bad["zones"][0]["records"][0]["data"] = "not an address at all"
    bad["zones"][0]["records"][0]["type"] = "A"
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(bad))
    p = subprocess.run(
        [sys.executable, "-m", "testbed.services.dns", "--config", str(f)], capture_output=True, text=True
    )
    assert p.returncode == 2
    assert f"{f}: mapped.ttl" in p.stderr and "zones[0]: Value error, records[0]: cannot parse" in p.stderr
    with pytest.raises(ConfigError, match="nothing to serve"):
        validate(DnsConfig, {"name": "x"}, "x.yaml")


# ---- bad input ------------------------------------------------------------------------------------------


def _malformed() -> dict[str, bytes]:
    import random
    import struct

    from scapy.layers.dns import DNS, DNSQR

    good = bytes(DNS(id=0x1234, rd=0, qd=DNSQR(qname="a73.g.cdnlab.net", qtype="A")))
    hdr = good[:12]
    rnd = random.Random(7)
    return {
        "truncated_header": good[:7],
        "bad_label_length": hdr + b"\x3fabc" + b"\x00\x00\x01\x00\x01",
        "label_past_end": hdr + b"\x03a73\x01g\x06cdnlab\x03ne",
        "pointer_loop": hdr + b"\xc0\x0c" + b"\x00\x01\x00\x01",
        "pointer_forward": hdr + b"\xc0\x20" + b"\x00\x01\x00\x01" + b"\x00" * 20,
        "zero_questions": bytes(DNS(id=0x1234, qd=[], qdcount=0)),
        "huge_qdcount": struct.pack("!6H", 0x1234, 0, 65535, 0, 0, 0) + good[12:],
        "two_questions": bytes(
            DNS(id=7, qd=[DNSQR(qname="a1.g.cdnlab.net"), DNSQR(qname="a2.g.cdnlab.net")])
        ),
        "is_a_response": bytes(DNS(id=8, qr=1, qd=DNSQR(qname="a1.g.cdnlab.net"))),
        "random_1": bytes(rnd.getrandbits(8) for _ in range(40)),
        "random_2": bytes(rnd.getrandbits(8) for _ in range(300)),
        "empty": b"",
    }


FORMERR_CASES = (
    "bad_label_length",
    "label_past_end",
    "pointer_loop",
    "pointer_forward",
    "zero_questions",
    "huge_qdcount",
    "two_questions",
)


def _bad_count(server) -> int:
    return server.stats["formerr"] + server.stats["dropped"] + server.stats["notimp"]


async def test_malformed_udp_packets_get_formerr_or_are_dropped_and_counted(mapped):
    import socket

    cases = _malformed()
    before = _bad_count(mapped)
    for name, pkt in cases.items():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(5)
            sock.sendto(pkt, ("127.0.0.1", mapped.port))
            if name in FORMERR_CASES:
                reply = await asyncio.to_thread(sock.recv, 4096)
                assert reply[:2] == pkt[:2] and reply[2] & 0x80 and (reply[3] & 0x0F) == 1, name
    await async_wait_until(
        lambda: _true(_bad_count(mapped) >= before + len(cases)), timeout=5, what="every bad packet counted"
    )
    assert mapped.stats["dropped"] >= 3  # truncated header, empty, a response
    r = await ask(mapped, "a73.g.cdnlab.net")
    assert r.rcode() == dns.rcode.NOERROR and a_addrs(r)


async def test_malformed_tcp_messages_then_good_query(mapped):
    import struct

    for name, pkt in _malformed().items():
        reader, writer = await asyncio.open_connection("127.0.0.1", mapped.port)
        writer.write(struct.pack("!H", len(pkt)) + pkt)
        await writer.drain()
        head = await asyncio.wait_for(reader.read(2), 5)
        if head:  # answered (FORMERR) or the connection was closed: both fine, never a hang
            (n,) = struct.unpack("!H", head)
            body = await asyncio.wait_for(reader.readexactly(n), 5)
            assert body[3] & 0x0F == 1 and body[:2] == pkt[:2], name
        writer.close()
    # a length prefix promising more than is sent, then EOF
    reader, writer = await asyncio.open_connection("127.0.0.1", mapped.port)
    writer.write(b"\x10\x00abc")
    writer.write_eof()
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
    r = await ask(mapped, "a73.g.cdnlab.net", tcp=True)
    assert r.rcode() == dns.rcode.NOERROR and a_addrs(r)
    assert mapped.stats["formerr"] >= 5


async def _true(v: bool) -> bool:
    return v


@pytest.mark.skipif(
    not (shutil.which("nsd") and shutil.which("dnsperf")),
    reason="nsd or dnsperf not installed (Debian packages)",
)
def test_bench_dns_tiny_mode_prints_json_last(capsys):
    import json

    from benchmarks import dns as bench

    assert bench.main(["--duration", "1", "--clients", "1", "--names", "10", "--json"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    result = json.loads(last)
    assert {"qps", "peer_qps", "ratio"} <= result.keys()
    assert result["qps"] > 0 and result["peer_qps"] > 0 and result["ratio"] > 0


async def test_load_aware_policy_follows_polled_edge_load(edges):
    specs = edge_specs(edges)
    for i, s in enumerate(specs):  # answer 10.0.0.x, but probe the stand-ins on loopback
        s["probe_url"], s["address"] = f"http://127.0.0.1:{s['port']}", f"10.0.0.{i + 1}"
    edges["eu1"].requests, edges["eu2"].requests = 1000, 5
    health = {"interval": 0.1, "timeout": 0.08, "stats": True, "load_field": "requests", "load_kind": "gauge"}
    server = await start(dns_config(edges=specs, policy="testbed.services.mapping:LoadAware", health=health))
    try:

        async def all_to(addr: str) -> bool:
            got = {a for i in range(10) for a in a_addrs(await ask(server, f"a{i}.g.cdnlab.net"))}
            return got == {addr}

        await async_wait_until(lambda: all_to("10.0.0.2"), timeout=5, what="least loaded eu2 chosen")
        edges["eu1"].requests, edges["eu2"].requests = 5, 1000
        await async_wait_until(lambda: all_to("10.0.0.1"), timeout=5, what="answers follow the load")
    finally:
        await server.stop()
