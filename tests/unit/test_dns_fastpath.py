"""The mapping DNS fast path answers exactly as the general (dnslib) path: same bytes, same counters.

Every query below goes to two servers with the same config, one with the fast path and one without; the
answers must be byte-identical, and the plain ``aN.<zone> A`` shapes must actually take the fast path.
"""

from __future__ import annotations

import struct

import pytest
from dnslib import EDNS0, QTYPE, DNSRecord, EDNSOption

from testbed.services.dns import DnsConfig, MappingDns
from testbed.services.mapping import AllUp

EDGES = [
    {"name": "e1", "address": "10.99.0.1", "region": "eu"},
    {"name": "e2", "address": "10.99.0.2", "region": "eu"},
    {"name": "u1", "address": "10.99.1.1", "region": "us"},
]


def config(policy: str, answers: int) -> DnsConfig:
    return DnsConfig.model_validate(
        {
            "name": "fast",
            "host": "127.0.0.1",
            "port": 0,
            "mapping": {
                "policy": f"testbed.services.mapping:{policy}",
                "regions": {
                    "eu": ["127.0.0.0/16", "192.0.2.0/24"],
                    "us": ["127.2.0.0/16", "198.51.100.0/24"],
                },
                "edges": EDGES,
            },
            "health": {"enabled": False},
            "answer_cache_size": 0,
            "mapped": {
                "zone": "g.cdnlab.net",
                "ttl": 20,
                "answers": answers,
                "nameservers": [{"name": "ns1.g.cdnlab.net", "address": "127.0.0.1"}],
            },
        }
    )


class GeneralOnly(MappingDns):
    def _fast_mapped(self, data: bytes, src: str, tcp: bool) -> None:
        return None


def ecs(addr: bytes, source: int, family: int = 1, scope: int = 0) -> EDNSOption:
    return EDNSOption(8, struct.pack("!HBB", family, source, scope) + addr)


def query(name: str, qtype: str = "A", *, rd: bool = True, edns: dict | None = None, flags: int = 0) -> bytes:
    q = DNSRecord.question(name, qtype)
    q.header.id = 4242
    q.header.rd = int(rd)
    if flags:
        q.header.bitmap |= flags
    if edns is not None:
        q.add_ar(EDNS0(**edns))
    return bytes(q.pack())


FAST = [
    query("a1.g.cdnlab.net"),
    query("a73.g.cdnlab.net", rd=False),
    query("a2.g.cdnlab.net", edns={"udp_len": 4096}),
    query("a3.g.cdnlab.net", edns={"udp_len": 1232, "opts": [ecs(bytes([198, 51, 100]), 24)]}),
    query("a4.g.cdnlab.net", edns={"udp_len": 512, "opts": [ecs(bytes([192, 0, 2]), 24)]}),
    query("a5.g.cdnlab.net", edns={"udp_len": 1232, "opts": [ecs(b"", 0)]}),
    query("a6.g.cdnlab.net", edns={"udp_len": 1232, "flags": "do"}),
    query("a7.g.cdnlab.net", edns={"udp_len": 1232, "opts": [EDNSOption(10, b"12345678")]}),  # a cookie
]
GENERAL = [
    query("A1.g.cdnlab.net"),  # mixed case
    query("a1.g.cdnlab.net", "AAAA"),
    query("a1.g.cdnlab.net", "ANY"),
    query("g.cdnlab.net", "SOA"),
    query("ns1.g.cdnlab.net"),
    query("www.g.cdnlab.net"),
    query("x.a1.g.cdnlab.net"),
    query("a1.example.org"),
    query("a1.g.cdnlab.net", flags=1 << 4),  # CD
    query("a1.g.cdnlab.net", edns={"udp_len": 1232, "version": 1}),
    query("a1.g.cdnlab.net", edns={"udp_len": 1232, "opts": [ecs(bytes([10, 1]), 8)]}),  # bits beyond /8
    query("a1.g.cdnlab.net") + b"junk",
    query("a1.g.cdnlab.net")[:-2],
]


@pytest.mark.parametrize(("policy", "answers"), [("GeoByResolver", 1), ("GeoByResolver", 2), ("EcsAware", 1)])
@pytest.mark.parametrize("tcp", [False, True])
def test_fast_path_answers_byte_for_byte_as_the_general_path(policy: str, answers: int, tcp: bool) -> None:
    fast, general = (
        MappingDns(config(policy, answers), AllUp()),
        GeneralOnly(config(policy, answers), AllUp()),
    )
    probe = MappingDns(config(policy, answers), AllUp())  # counts which queries take the fast path
    taken = 0
    for src in ("127.0.0.9", "127.2.0.9"):
        for q in FAST + GENERAL:
            taken += probe._fast_mapped(q, src, tcp) is not None
            assert fast.handle(q, src, tcp) == general.handle(q, src, tcp), (DNSRecord.parse(q), src)
    assert taken == 2 * len(FAST)  # every plain shape took the fast path, nothing else did
    assert fast.stats == general.stats and fast.by_name == general.by_name
    assert list(fast.ecs_seen) == list(general.ecs_seen)


def test_fast_answer_is_the_policys_choice() -> None:
    d = MappingDns(config("EcsAware", 1), AllUp())
    r = DNSRecord.parse(d.handle(FAST[3], "127.0.0.9", False))
    assert [str(a.rdata) for a in r.rr] == ["10.99.1.1"] and r.rr[0].rtype == QTYPE.A  # the us client subnet
    opt = next(a for a in r.ar if a.rtype == QTYPE.OPT)
    assert opt.rdata[0].data[3] == 24  # scope prefix echoed
