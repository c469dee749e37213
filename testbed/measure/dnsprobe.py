"""A DNS probe built with Scapy: one query over a UDP socket, with or without EDNS Client Subnet.

The query is a :class:`scapy.layers.dns.DNS` message with an EDNS0 OPT pseudo-record (RFC 6891) whose
options may carry an EDNS Client Subnet (ECS, RFC 7871 §6: FAMILY, SOURCE PREFIX-LENGTH, SCOPE
PREFIX-LENGTH = 0, ADDRESS truncated to the source prefix). It is sent over an ordinary UDP socket (no raw
sockets, no root), so it works on loopback and inside any Mininet host. The reply is dissected by Scapy:
answers with their TTLs, the response code, and the ECS option the server echoed — its SCOPE
PREFIX-LENGTH says for how large a subnet the answer may be cached (RFC 7871 §7.2.1); an answer that
follows the client subnet rather than the resolver address is how a CDN maps by client (lecture slide 11:
"request by resolver not client").

CLI: ``python -m testbed.measure.dnsprobe --server IP --port N --name NAME [--ecs 10.0.3.0/24] --json``.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import random
import socket
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from scapy.layers.dns import DNS, DNSQR, DNSRROPT, EDNS0ClientSubnet, dnstypes
from scapy.packet import Packet

RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}
_TYPE_NUMBERS = {v: k for k, v in dnstypes.items()}


class ProbeError(ValueError):
    """A probe that cannot be built (bad name, type or subnet)."""


@dataclass
class DnsAnswer:
    name: str
    type: str
    ttl: int
    data: str


@dataclass
class ProbeResult:
    """What one probe saw. ``error`` is empty when a reply arrived; ``rtt_ms`` is query to reply."""

    server: str
    port: int
    name: str
    qtype: str
    ecs: str | None = None  # the subnet sent, e.g. "10.0.3.0/24"
    rcode: str = ""
    answers: list[DnsAnswer] = field(default_factory=list)
    addresses: list[str] = field(default_factory=list)
    min_ttl: int | None = None
    ecs_echo: str | None = None  # the subnet the server echoed
    ecs_scope: int | None = None  # SCOPE PREFIX-LENGTH of the echoed option (None: no ECS in the reply)
    edns: bool = False  # the reply carried an OPT record
    truncated: bool = False
    authoritative: bool = False
    rtt_ms: float = 0.0
    error: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_subnet(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """``10.0.3.7/24`` -> 10.0.3.0/24 (host bits cleared, as RFC 7871 §6 requires)."""
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError as e:
        raise ProbeError(f"bad ECS subnet {text!r}: {e}") from None


def build_query(
    name: str,
    qtype: str = "A",
    ecs: str | None = None,
    *,
    qid: int | None = None,
    payload: int = 1232,
    edns: bool = True,
    rd: bool = True,
) -> DNS:
    """A Scapy DNS query; with ``ecs`` an OPT record carrying an ECS option (implies EDNS)."""
    if not name or len(name.rstrip(".")) > 253:
        raise ProbeError(f"bad query name {name!r}")
    qt = qtype.upper()
    if qt not in _TYPE_NUMBERS:
        raise ProbeError(f"unknown query type {qtype!r}")
    q = DNS(id=random.getrandbits(16) if qid is None else qid, rd=int(rd), qd=DNSQR(qname=name, qtype=qt))
    if ecs is not None or edns:
        opts = []
        if ecs is not None:
            net = parse_subnet(ecs)
            opts.append(
                EDNS0ClientSubnet(
                    family=1 if net.version == 4 else 2,
                    source_plen=net.prefixlen,
                    scope_plen=0,
                    address=str(net.network_address),
                )
            )
        q.ar = DNSRROPT(rclass=payload, z=0, rdata=opts)  # z=0: no DNSSEC OK bit
    return q


def _rdata(rr: Packet) -> str:
    v = rr.rdata
    if isinstance(v, bytes):
        return v.decode(errors="replace")
    if isinstance(v, list):  # TXT
        return " ".join(x.decode(errors="replace") if isinstance(x, bytes) else str(x) for x in v)
    return str(v)


def parse_reply(raw: bytes, result: ProbeResult) -> ProbeResult:
    """Fill ``result`` from a reply's bytes (dissected by Scapy); a malformed reply sets ``error``."""
    if len(raw) < 12:
        result.error = f"short reply: {len(raw)} bytes, a DNS header alone is 12"
        return result
    try:
        r = DNS(raw)
    except Exception as e:  # noqa: BLE001 - Scapy raises many types on garbage
        result.error = f"undecodable reply: {e}"
        return result
    if not r.qr:
        result.error = "reply without the QR bit"
        return result
    result.rcode = RCODES.get(int(r.rcode), str(int(r.rcode)))
    result.truncated, result.authoritative = bool(r.tc), bool(r.aa)
    for rr in r.an or []:
        t = dnstypes.get(rr.type, str(rr.type))
        name = rr.rrname.decode(errors="replace") if isinstance(rr.rrname, bytes) else str(rr.rrname)
        result.answers.append(DnsAnswer(name, t, int(rr.ttl), _rdata(rr)))
    result.addresses = [a.data for a in result.answers if a.type in ("A", "AAAA")]
    result.min_ttl = min((a.ttl for a in result.answers), default=None)
    for rr in r.ar or []:
        if isinstance(rr, DNSRROPT):
            result.edns = True
            for opt in rr.rdata or []:
                if isinstance(opt, EDNS0ClientSubnet):
                    result.ecs_scope = int(opt.scope_plen)
                    result.ecs_echo = f"{opt.address}/{int(opt.source_plen)}"
    return result


def probe(
    server: str,
    port: int,
    name: str,
    qtype: str = "A",
    ecs: str | None = None,
    *,
    timeout: float = 2.0,
    source: str | None = None,
    edns: bool = True,
) -> ProbeResult:
    """Send one query to ``server:port`` over UDP and wait for the reply with the same ID.

    Never raises for network trouble: a timeout or an ICMP error lands in ``error``. A bad name, type or
    subnet raises :class:`ProbeError`.
    """
    q = build_query(name, qtype, ecs, edns=edns)
    res = ProbeResult(
        server=server, port=port, name=name, qtype=qtype.upper(), ecs=str(parse_subnet(ecs)) if ecs else None
    )
    fam = socket.AF_INET6 if ":" in server else socket.AF_INET
    with socket.socket(fam, socket.SOCK_DGRAM) as s:
        if source:
            s.bind((source, 0))
        data = bytes(q)
        t0 = time.perf_counter()
        deadline = t0 + timeout
        try:
            s.sendto(data, (server, port))
            while True:
                s.settimeout(max(0.001, deadline - time.perf_counter()))
                raw, addr = s.recvfrom(65535)
                if len(raw) >= 2 and raw[:2] == data[:2]:  # same ID; anything else is ignored
                    break
        except TimeoutError:
            res.error = f"timeout after {timeout:g}s"
            res.rtt_ms = (time.perf_counter() - t0) * 1000
            return res
        except OSError as e:
            res.error = f"{type(e).__name__}: {e}"
            return res
        res.rtt_ms = (time.perf_counter() - t0) * 1000
    return parse_reply(raw, res)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m testbed.measure.dnsprobe",
        description="one DNS query built with Scapy (optionally with ECS, RFC 7871)",
    )
    ap.add_argument("--server", required=True)
    ap.add_argument("--port", type=int, default=53)
    ap.add_argument("--name", required=True)
    ap.add_argument("--type", dest="qtype", default="A")
    ap.add_argument("--ecs", help="client subnet to send, e.g. 10.0.3.0/24")
    ap.add_argument("--source", help="local address to send from")
    ap.add_argument("--timeout", type=float, default=2.0)
    ap.add_argument("--no-edns", action="store_true", help="plain DNS without an OPT record (not with --ecs)")
    ap.add_argument("--json", action="store_true", help="print the result as one JSON object")
    args = ap.parse_args(argv)
    try:
        res = probe(
            args.server,
            args.port,
            args.name,
            args.qtype,
            args.ecs,
            timeout=args.timeout,
            source=args.source,
            edns=not args.no_edns,
        )
    except ProbeError as e:
        print(f"dnsprobe: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(res.as_dict()))
    else:
        if res.error:
            print(f"{res.name} {res.qtype} @{res.server}:{res.port}: {res.error}")
        else:
            print(f"{res.name} {res.qtype} @{res.server}:{res.port}: {res.rcode} in {res.rtt_ms:.2f} ms")
            for a in res.answers:
                print(f"  {a.name} {a.ttl} {a.type} {a.data}")
            if res.ecs_scope is not None:
                print(f"  ECS {res.ecs_echo} scope /{res.ecs_scope}")
    return 1 if res.error else 0


if __name__ == "__main__":
    sys.exit(main())
