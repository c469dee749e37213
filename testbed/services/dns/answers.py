"""Answering one query: static zones, referrals from the high-level server, the low-level mapping with
EDNS Client Subnet (RFC 7871), negative answers (RFC 2308), the answer cache and the ``struct`` fast path.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import struct
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any

from dnslib import (
    CLASS,
    EDNS0,
    NS,
    OPCODE,
    QTYPE,
    RCODE,
    RR,
    A,
    DNSError,
    DNSRecord,
    EDNSOption,
)

from testbed.services.dns.config import (
    ECS_CODE,
    MAX_CNAME_CHAIN,
    DnsConfig,
    fqdn,
)
from testbed.services.dns.zones import Zone, in_zone, soa_rr
from testbed.services.mapping import MappingPolicy, MapRequest, _Base, load_policy

log = logging.getLogger("testbed.services.dns")


class QueryError(Exception):
    def __init__(self, rcode: int, why: str) -> None:
        super().__init__(why)
        self.rcode = rcode


@dataclass
class Ecs:
    family: int
    source: int
    address: bytes
    network: ipaddress.IPv4Network | ipaddress.IPv6Network

    @classmethod
    def parse(cls, data: bytes) -> Ecs:
        """RFC 7871 §6; malformed options are FORMERR."""
        if len(data) < 4:
            raise QueryError(RCODE.FORMERR, "ECS option shorter than 4 bytes")
        family, source, scope = struct.unpack("!HBB", data[:4])
        addr = data[4:]
        width = {1: 4, 2: 16}.get(family)
        if width is None:
            raise QueryError(RCODE.FORMERR, f"ECS family {family} unknown")
        if source > width * 8 or scope != 0:
            raise QueryError(RCODE.FORMERR, f"ECS source/scope prefix {source}/{scope} invalid")
        if len(addr) != (source + 7) // 8:
            raise QueryError(RCODE.FORMERR, "ECS address length does not match source prefix")
        full = addr + b"\0" * (width - len(addr))
        ip = ipaddress.ip_address(full)
        try:
            net = ipaddress.ip_network(f"{ip}/{source}", strict=True)
        except ValueError:
            raise QueryError(RCODE.FORMERR, "ECS address has bits set beyond source prefix") from None
        return cls(family, source, addr, net)

    def reply_option(self, scope: int) -> EDNSOption:
        return EDNSOption(ECS_CODE, struct.pack("!HBB", self.family, self.source, scope) + self.address)


class MappingDns:
    """Answers DNS queries (protocol-independent part). ``handle(wire, src_ip, tcp)`` -> wire or None."""

    def __init__(self, cfg: DnsConfig, state: Any) -> None:
        self.cfg = cfg
        self.state = state  # EdgeState (HealthChecker or AllUp)
        self.zones = [Zone.from_spec(z) for z in cfg.zones]
        self.zones.sort(key=lambda z: len(z.origin), reverse=True)
        self.policy: MappingPolicy | None = load_policy(cfg.mapping) if cfg.mapped else None
        self.geo = _Base(cfg.mapping)  # region of a resolver for the high-level referral
        self.deleg = cfg.delegation
        self.deleg_zone = fqdn(cfg.delegation.zone) if cfg.delegation else None
        self.mapped = cfg.mapped
        self.mapped_zone = fqdn(cfg.mapped.zone) if cfg.mapped else None
        self.mapped_re = re.compile(cfg.mapped.name_pattern, re.I) if cfg.mapped else None
        self.mapped_soa = (
            soa_rr(self.mapped_zone, cfg.mapped.soa) if cfg.mapped and self.mapped_zone else None
        )
        self.stats: Counter[str] = Counter()
        self.by_name: Counter[str] = Counter()
        self.ecs_seen: deque[tuple[str, str]] = deque(maxlen=1000)  # (qname, client subnet) as received
        self._cache: dict[tuple[bytes, bool, str], tuple[bytes, str]] = {}
        self._gen = getattr(state, "generation", 0)
        self._ns_names = {fqdn(s.name) for s in cfg.mapped.nameservers} if cfg.mapped else set()
        self._mapped_suffix = "." + self.mapped_zone if self.mapped_zone else None

    # ---- wire level -----------------------------------------------------------------------------------
    def handle(self, data: bytes, src: str, tcp: bool) -> bytes | None:
        st = self.stats
        st["packets"] += 1
        gen = self.state.generation
        if gen != self._gen:
            self._cache.clear()
            self._gen = gen
        key = (data[2:], tcp, src)
        hit = self._cache.get(key)
        if hit is not None:
            st["queries"] += 1
            st["cache_hits"] += 1
            self.by_name[hit[1]] += 1
            return data[:2] + hit[0]
        if len(data) < 12:
            st["dropped"] += 1
            return None
        if data[2] & 0x80:  # a response, not a query: never answer (no reflection loops)
            st["dropped"] += 1
            return None
        fast = self._fast_mapped(data, src, tcp) if self._mapped_suffix else None
        if fast is not None:
            resp, qname = fast
            self.by_name[qname] += 1
            if self.cfg.answer_cache_size:
                if len(self._cache) >= self.cfg.answer_cache_size:
                    self._cache.clear()
                self._cache[key] = (resp[2:], qname)
            return resp
        try:
            req = DNSRecord.parse(data)
        except (DNSError, struct.error, ValueError, IndexError, UnicodeError) as e:
            st["formerr"] += 1
            log.debug("malformed query from %s: %s", src, e)
            return self._formerr(data)
        st["queries"] += 1
        try:
            resp, cacheable, qname = self._answer(req, src, tcp)
        except QueryError as e:
            st[
                "formerr" if e.rcode == RCODE.FORMERR else "notimp" if e.rcode == RCODE.NOTIMP else "errors"
            ] += 1
            r = req.reply(ra=0, aa=0)
            r.questions = req.questions[:1]
            r.header.rcode = e.rcode
            return r.pack()
        except Exception:  # noqa: BLE001 - a bug in one answer must not stop the server
            log.exception("answering query from %s failed", src)
            st["servfail"] += 1
            r = req.reply(ra=0, aa=0)
            r.header.rcode = RCODE.SERVFAIL
            return r.pack()
        self.by_name[qname] += 1
        if cacheable and self.cfg.answer_cache_size:
            if len(self._cache) >= self.cfg.answer_cache_size:
                self._cache.clear()
            self._cache[key] = (resp[2:], qname)
        return resp

    def _fast_mapped(self, data: bytes, src: str, tcp: bool) -> tuple[bytes, str] | None:
        """The mapping answer for a plain ``<label>.<mapped zone> IN A`` query built with ``struct``, or
        None to take the general path (anything unusual: other flags, types, zones, EDNS versions, options
        other than ECS, trailing bytes, a malformed ECS, no live edge, truncation)."""
        qid, flags, qd, an, ns, ar = struct.unpack_from("!6H", data)
        if flags & 0xFEFF or qd != 1 or an or ns or ar > 1:  # only RD may be set; one question
            return None
        labels: list[str] = []
        i, n = 12, len(data)
        while True:
            if i >= n:
                return None
            ln = data[i]
            if ln == 0:
                i += 1
                break
            if ln > 63 or i + 1 + ln > n:
                return None
            labels.append(data[i + 1 : i + 1 + ln].decode("ascii", "replace"))
            i += 1 + ln
        if i + 4 > n:
            return None
        qtype, qclass = struct.unpack_from("!HH", data, i)
        qend = i + 4
        if qtype != QTYPE.A or qclass != CLASS.IN or (not ar and qend != n):
            return None
        qname = ".".join(labels) + "."
        if not qname.islower():  # mixed case (0x20): the general path names the answers in lower case
            return None
        suffix = self._mapped_suffix
        assert suffix is not None and self.mapped is not None and self.policy is not None
        if not qname.endswith(suffix) or qname in self._ns_names or "\\" in qname:
            return None
        label = qname[: -len(suffix)]
        if "." in label or not (self.mapped_re and self.mapped_re.fullmatch(label)):
            return None
        if self._find_zone(qname) != "mapped":
            return None
        ecs: Ecs | None = None
        udp_limit = 512
        if ar:  # exactly one OPT: root name, type 41, version 0, options ECS or ignored ones
            if qend + 11 > n or data[qend] != 0:
                return None
            rtype, rclass, ttl, rdlen = struct.unpack_from("!HHIH", data, qend + 1)
            if rtype != QTYPE.OPT or (ttl >> 16) & 0xFF or qend + 11 + rdlen != n:
                return None
            j = qend + 11
            while j < n:
                if j + 4 > n:
                    return None
                code, olen = struct.unpack_from("!HH", data, j)
                if j + 4 + olen > n:
                    return None
                if code == ECS_CODE:
                    if ecs is not None:
                        return None
                    try:
                        ecs = Ecs.parse(data[j + 4 : j + 4 + olen])
                    except QueryError:
                        return None
                j += 4 + olen
            udp_limit = max(512, min(rclass, self.cfg.max_udp_payload))
        decision = self.policy.choose(
            MapRequest(qname, ipaddress.ip_address(src), ecs.network if ecs is not None else None),
            self.state,
            self.mapped.answers,
        )
        if not decision.edges:
            return None  # the general path answers SERVFAIL and counts it
        out = [
            struct.pack("!6H", qid, 0x8400 | (flags & 0x0100), 1, len(decision.edges), 0, 1 if ar else 0),
            data[12:qend],
        ]
        rr_head = b"\xc0\x0c" + struct.pack("!HHIH", QTYPE.A, CLASS.IN, self.mapped.ttl, 4)
        out.extend(rr_head + e.address.packed for e in decision.edges)
        if ar:
            opt = b""
            if ecs is not None:
                scope = decision.scope_prefix
                body = struct.pack("!HBB", ecs.family, ecs.source, scope) + ecs.address
                opt = struct.pack("!HH", ECS_CODE, len(body)) + body
            out.append(b"\x00" + struct.pack("!HHIH", QTYPE.OPT, self.cfg.max_udp_payload, 0, len(opt)) + opt)
        wire = b"".join(out)
        if not tcp and len(wire) > udp_limit:
            return None  # the general path truncates
        st = self.stats
        st["queries"] += 1
        if ecs is not None:
            self.ecs_seen.append((qname, str(ecs.network)))
            st["ecs_queries"] += 1
        st[f"region_{decision.region}"] += 1
        st["rcode_noerror"] += 1
        return wire, qname

    def _formerr(self, data: bytes) -> bytes:
        """FORMERR echoing the ID and opcode, with no sections (RFC 1035 §4.1.1)."""
        (qid, flags) = struct.unpack("!HH", data[:4])
        flags = 0x8000 | (flags & 0x7900) | RCODE.FORMERR  # QR, opcode, RD; rcode 1
        return struct.pack("!6H", qid, flags, 0, 0, 0, 0)

    # ---- message level --------------------------------------------------------------------------------
    def _answer(self, req: DNSRecord, src: str, tcp: bool) -> tuple[bytes, bool, str]:
        h = req.header
        if h.opcode != OPCODE.QUERY:
            raise QueryError(RCODE.NOTIMP, f"opcode {h.opcode}")
        if len(req.questions) != 1 or req.rr or req.auth:
            raise QueryError(RCODE.FORMERR, f"{len(req.questions)} questions")
        opts = [rr for rr in req.ar if rr.rtype == QTYPE.OPT]
        if len(opts) > 1:
            raise QueryError(RCODE.FORMERR, "more than one OPT record")
        opt = opts[0] if opts else None
        ecs: Ecs | None = None
        if opt is not None:
            for o in opt.rdata or []:
                if o.code == ECS_CODE:
                    ecs = Ecs.parse(o.data)
        q = req.questions[0]
        qname = str(q.qname).lower()
        if ecs is not None:
            self.ecs_seen.append((qname, str(ecs.network)))
            self.stats["ecs_queries"] += 1
        reply = req.reply(ra=0, aa=1)
        reply.questions = [q]
        scope = 0
        if q.qclass not in (CLASS.IN, 255):  # IN or ANY
            reply.header.rcode = RCODE.REFUSED
            reply.header.aa = 0
        else:
            scope = self._resolve(reply, qname, q.qtype, ipaddress.ip_address(src), ecs)
        self.stats["rcode_" + RCODE.get(reply.header.rcode, str(reply.header.rcode)).lower()] += 1
        if opt is not None:
            opts_out = [ecs.reply_option(scope)] if ecs is not None else []
            reply.add_ar(EDNS0(udp_len=self.cfg.max_udp_payload, opts=opts_out))
        wire = reply.pack()
        if not tcp:
            limit = max(512, min(opt.rclass, self.cfg.max_udp_payload)) if opt is not None else 512
            if len(wire) > limit:
                self.stats["truncated"] += 1
                reply.rr, reply.auth = [], []
                reply.ar = [rr for rr in reply.ar if rr.rtype == QTYPE.OPT]
                reply.header.tc = 1
                wire = reply.pack()
        return wire, reply.header.rcode != RCODE.SERVFAIL, qname

    def _find_zone(self, name: str) -> Zone | str | None:
        """The most specific zone we serve that contains name: a Zone, 'mapped', or None."""
        best: Zone | str | None = None
        best_len = -1
        for z in self.zones:
            if in_zone(name, z.origin) and len(z.origin) > best_len:
                best, best_len = z, len(z.origin)
                break  # sorted longest first
        if self.mapped_zone and in_zone(name, self.mapped_zone) and len(self.mapped_zone) > best_len:
            return "mapped"
        return best

    def _resolve(self, reply: DNSRecord, qname: str, qtype: int, src: Any, ecs: Ecs | None) -> int:
        """Fill reply for qname/qtype; follow CNAMEs inside our zones. Returns the ECS scope."""
        name = qname
        for depth in range(MAX_CNAME_CHAIN):
            zone = self._find_zone(name)
            if zone is None:
                if depth == 0:
                    reply.header.rcode = RCODE.REFUSED
                    reply.header.aa = 0
                return 0
            if zone == "mapped":
                return self._mapped(reply, name, qtype, src, ecs)
            assert isinstance(zone, Zone)
            if self.deleg_zone and in_zone(name, self.deleg_zone) and in_zone(self.deleg_zone, zone.origin):
                if depth == 0:
                    self._referral(reply, src)
                return 0
            cut = zone.cut_for(name)
            if cut is not None:
                if depth == 0:
                    reply.header.aa = 0
                    reply.auth.extend(zone.nodes[cut][QTYPE.NS])
                    self._glue(reply, zone, [str(r.rdata.label).lower() for r in zone.nodes[cut][QTYPE.NS]])
                return 0
            node = zone.nodes.get(name)
            if node is None:
                if name not in zone.ents:
                    reply.header.rcode = RCODE.NXDOMAIN
                self._negative(reply, zone.soa, zone.neg_ttl)
                return 0
            if qtype == QTYPE.ANY:
                for rrs in node.values():
                    reply.rr.extend(rrs)
                return 0
            if qtype in node:
                reply.rr.extend(node[qtype])
                if qtype == QTYPE.NS:
                    self._glue(reply, zone, [str(r.rdata.label).lower() for r in node[qtype]])
                return 0
            if QTYPE.CNAME in node:
                cname = node[QTYPE.CNAME][0]
                reply.rr.append(cname)
                name = str(cname.rdata.label).lower()
                continue
            self._negative(reply, zone.soa, zone.neg_ttl)
            return 0
        return 0

    @staticmethod
    def _negative(reply: DNSRecord, soa: RR, neg_ttl: int) -> None:
        """RFC 2308 §3: SOA in authority with TTL min(SOA TTL, MINIMUM)."""
        reply.add_auth(RR(soa.rname, QTYPE.SOA, CLASS.IN, neg_ttl, soa.rdata))

    def _glue(self, reply: DNSRecord, zone: Zone, names: list[str]) -> None:
        for n in names:
            for rr in zone.nodes.get(n, {}).get(QTYPE.A, []):
                reply.add_ar(rr)

    def _referral(self, reply: DNSRecord, src: Any) -> None:
        """High-level server: NS + glue of the low-level servers for the resolver's region (slide 21)."""
        assert self.deleg is not None and self.deleg_zone is not None
        region = self.geo.region_of(src)
        servers = self.deleg.servers.get(region) or []
        if not servers:
            fallback = self.deleg.default_region or next(r for r, s in self.deleg.servers.items() if s)
            servers = self.deleg.servers.get(fallback, [])
        self.stats[f"referral_{region}"] += 1
        reply.header.aa = 0
        ttl = self.deleg.ttl
        for s in servers:
            reply.add_auth(RR(self.deleg_zone, QTYPE.NS, CLASS.IN, ttl, NS(fqdn(s.name))))
        for s in servers:
            if in_zone(fqdn(s.name), self.deleg_zone):
                reply.add_ar(RR(fqdn(s.name), QTYPE.A, CLASS.IN, ttl, A(str(s.address))))

    def _mapped(self, reply: DNSRecord, name: str, qtype: int, src: Any, ecs: Ecs | None) -> int:
        """Low-level server: aXYZ.<zone> A -> policy-chosen live edges, short TTL (slide 21)."""
        m, zone, soa = self.mapped, self.mapped_zone, self.mapped_soa
        assert m is not None and zone is not None and soa is not None and self.policy is not None
        neg_ttl = min(m.soa.ttl, m.soa.minimum)
        if name == zone:
            if qtype in (QTYPE.SOA, QTYPE.ANY):
                reply.add_answer(soa)
            if qtype in (QTYPE.NS, QTYPE.ANY):
                for s in m.nameservers:
                    reply.add_answer(RR(zone, QTYPE.NS, CLASS.IN, soa.ttl, NS(fqdn(s.name))))
                    reply.add_ar(RR(fqdn(s.name), QTYPE.A, CLASS.IN, soa.ttl, A(str(s.address))))
            if not reply.rr:
                self._negative(reply, soa, neg_ttl)
            return 0
        for s in m.nameservers:
            if fqdn(s.name) == name:
                if qtype in (QTYPE.A, QTYPE.ANY):
                    reply.add_answer(RR(name, QTYPE.A, CLASS.IN, soa.ttl, A(str(s.address))))
                else:
                    self._negative(reply, soa, neg_ttl)
                return 0
        label = name[: -len(zone) - 1]
        if "." in label or not (self.mapped_re and self.mapped_re.fullmatch(label)):
            reply.header.rcode = RCODE.NXDOMAIN
            self._negative(reply, soa, neg_ttl)
            return 0
        subnet = ecs.network if ecs is not None else None
        decision = self.policy.choose(MapRequest(name, src, subnet), self.state, m.answers)
        self.stats[f"region_{decision.region}"] += 1
        if not decision.edges:
            self.stats["no_live_edge"] += 1
            reply.header.rcode = RCODE.SERVFAIL
            return 0
        if qtype in (QTYPE.A, QTYPE.ANY):
            for e in decision.edges:
                reply.add_answer(RR(name, QTYPE.A, CLASS.IN, m.ttl, A(str(e.address))))
        else:
            self._negative(reply, soa, neg_ttl)
        return decision.scope_prefix if ecs is not None else 0
