"""The CDN's authoritative name servers: static zones, the high-level and the low-level mapping server.

This is the naming-based server selection of the lecture's "How Akamai Works" slides (19-22):

* the customer zone delegates its content name with CNAMEs, ``www.customer.example`` ->
  ``cache.customer.example.cdnlab-dns.net`` -> ``a73.g.cdnlab.net`` (slide 21), held as static ``zones``;
* the **high-level** server (authoritative for ``cdnlab.net``, config section ``delegation``) answers any
  name under the low-level zone ``g.cdnlab.net`` with a referral: NS + glue A of the low-level server of the
  *resolver's* region, with a long TTL (3600 s);
* the **low-level** server (authoritative for ``g.cdnlab.net``, config section ``mapped``) answers
  ``aXYZ.g.cdnlab.net`` A with edges chosen by the mapping policy (region, then hash of the name) with a
  short TTL (20 s), never an edge the health checker marks down.

One process may hold any combination of the three. Protocol details: RFC 1034/1035 (answers, referrals,
CNAME chains followed inside our own zones, NXDOMAIN/NODATA with the SOA in the authority section,
RFC 2308 negative TTL), REFUSED outside our zones, RFC 6891 EDNS0 (UDP payload size, truncation with the
TC bit, full answers over TCP with the 2-byte length prefix of RFC 1035 §4.2.2 / RFC 7766), RFC 7871
EDNS Client Subnet (validated, echoed with the SCOPE PREFIX-LENGTH the policy decided, §7.2.1).
Malformed queries get FORMERR when the header is readable and are dropped otherwise; both are counted.

Limits over TCP: at most ``tcp_max_connections`` connections at once, one more is closed at once unanswered
(RFC 7766 §6.2.2 lets a server limit concurrent connections), and at most
``tcp_max_queries_per_connection`` queries answered on one connection: after the last answer the server
half-closes it (§6.2.4: either end may close, e.g. to defend itself) and throws away what still arrives
until the client closes, so no RST destroys that answer. Counted as ``tcp_refused_connections`` and
``tcp_query_limit_closes``. Unanswered queries are the client's to retry on a new connection.

Hot path: the full wire response (without the 2-byte ID) is cached per (query bytes after the ID,
transport, source address) and dropped whenever the health checker's generation changes. The mapping path
itself has a fast path (:meth:`MappingDns._fast_mapped`): a plain ``aN.<zone> IN A`` query, with at most
one OPT record (EDNS version 0, optionally ECS), is parsed and answered with ``struct`` instead of dnslib,
byte for byte what the general path would send (a test compares the two); anything else takes the
general path.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import re
import socket
import struct
from collections import Counter, deque
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import Any

from dnslib import (
    CLASS,
    EDNS0,
    NS,
    OPCODE,
    QTYPE,
    RCODE,
    RR,
    SOA,
    A,
    DNSError,
    DNSRecord,
    EDNSOption,
)
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from testbed.services.base import ServiceConfig, service_main
from testbed.services.daemon import Daemon, DnsReady
from testbed.services.health import HealthChecker, HealthConfig
from testbed.services.mapping import MappingPolicy, MappingSpec, MapRequest, _Base, load_policy
from testbed.services.mcast.consumer import ControlConsumerConfig, ControlFeed

log = logging.getLogger(__name__)

ECS_CODE = 8  # RFC 7871 option code
MAX_CNAME_CHAIN = 8


def fqdn(name: str, origin: str = ".") -> str:
    """Lower-case absolute name with trailing dot; ``@`` and relative names are taken relative to origin."""
    name = name.strip().lower()
    origin = origin.lower().rstrip(".") + "."
    if name in ("@", ""):
        return origin
    if name.endswith("."):
        return name
    return f"{name}.{origin}" if origin != "." else name + "."


class SoaSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mname: str | None = None  # default ns1.<zone>
    rname: str | None = None  # default hostmaster.<zone>
    serial: int = 1
    refresh: int = 3600
    retry: int = 600
    expire: int = 86400
    minimum: int = Field(60, ge=0)  # negative-caching TTL (RFC 2308)
    ttl: int = Field(3600, ge=0)


class RecordSpec(BaseModel):
    """One resource record in zone-file syntax pieces, e.g. ``{name: www, type: CNAME, data: x.example.}``."""

    model_config = ConfigDict(extra="forbid")

    name: str
    type: str
    data: str
    ttl: int | None = Field(None, ge=0)


class ZoneSpec(BaseModel):
    """A static zone; a record of type NS below the apex is a (static) delegation."""

    model_config = ConfigDict(extra="forbid")

    origin: str
    ttl: int = Field(300, ge=0)
    soa: SoaSpec = Field(default_factory=SoaSpec)
    records: list[RecordSpec] = Field(default_factory=list)

    @model_validator(mode="after")
    def _parse_records(self) -> ZoneSpec:
        for i, r in enumerate(self.records):
            line = f"{fqdn(r.name, self.origin)} {r.ttl if r.ttl is not None else self.ttl} IN {r.type.upper()} {r.data}"
            try:
                RR.fromZone(line)
            except Exception as e:  # noqa: BLE001 - dnslib raises various types for bad rdata
                raise ValueError(f"records[{i}]: cannot parse {line!r}: {e}") from None
        return self


class NameServerSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    address: IPv4Address


class DelegationSpec(BaseModel):
    """High-level role: refer ``zone`` to the low-level servers of the resolver's region (slide 21)."""

    model_config = ConfigDict(extra="forbid")

    zone: str = "g.cdnlab.net"
    ttl: int = Field(3600, ge=0)
    servers: dict[str, list[NameServerSpec]]  # region -> low-level servers
    default_region: str | None = None  # region without servers -> this one (None: first listed)

    @field_validator("servers")
    @classmethod
    def _nonempty(cls, v: dict[str, list[NameServerSpec]]) -> dict[str, list[NameServerSpec]]:
        if not v or not any(v.values()):
            raise ValueError("at least one region needs at least one server")
        return v


class MappedZoneSpec(BaseModel):
    """Low-level role: ``<name_pattern>.<zone>`` A -> edges chosen by the mapping policy."""

    model_config = ConfigDict(extra="forbid")

    zone: str = "g.cdnlab.net"
    ttl: int = Field(20, ge=0)
    nameservers: list[NameServerSpec] = Field(default_factory=list)
    name_pattern: str = r"a[0-9]+"
    answers: int = Field(1, ge=1, le=16)  # A records per answer (hash order)
    soa: SoaSpec = Field(default_factory=lambda: SoaSpec(ttl=20, minimum=20))

    @field_validator("name_pattern")
    @classmethod
    def _regex(cls, v: str) -> str:
        try:
            re.compile(v)
        except re.error as e:
            raise ValueError(f"not a regular expression: {e}") from None
        return v


class DnsConfig(ServiceConfig):
    """Config of ``python -m testbed.services.dns``."""

    host: str = "127.0.0.1"
    port: int = Field(53, ge=0, le=65535)
    tcp: bool = True
    zones: list[ZoneSpec] = Field(default_factory=list)
    delegation: DelegationSpec | None = None
    mapped: MappedZoneSpec | None = None
    mapping: MappingSpec = Field(default_factory=MappingSpec)
    health: HealthConfig = Field(default_factory=HealthConfig)
    max_udp_payload: int = Field(1232, ge=512, le=65535)  # our EDNS0 payload size
    tcp_idle_timeout: float = Field(10.0, gt=0)
    #: TCP connections at once; one more is closed at once, unanswered (RFC 7766 §6.2.2)
    tcp_max_connections: int = Field(256, ge=1, le=100_000)
    #: queries answered on one TCP connection; after the last answer the server closes it (RFC 7766 §6.2.4)
    tcp_max_queries_per_connection: int = Field(1000, ge=1)
    answer_cache_size: int = Field(50000, ge=0)
    #: multicast control channel: edges' heartbeats feed load and liveness (:mod:`testbed.services.mcast.consumer`)
    control: ControlConsumerConfig | None = None

    @model_validator(mode="after")
    def _roles(self) -> DnsConfig:
        if not (self.zones or self.delegation or self.mapped):
            raise ValueError("nothing to serve: give zones, delegation or mapped")
        if self.mapped and not self.mapping.edges:
            raise ValueError("mapped: needs mapping.edges to choose from")
        if self.delegation:
            d = fqdn(self.delegation.zone)
            if not any(d != fqdn(z.origin) and d.endswith("." + fqdn(z.origin)) for z in self.zones):
                raise ValueError(f"delegation.zone {d} is not below any of zones[].origin")
        return self


# ----------------------------------------------------------------------------------------------------------
# compiled zone data


def _soa_rr(origin: str, s: SoaSpec) -> RR:
    mname = fqdn(s.mname or "ns1", origin)
    rname = fqdn(s.rname or "hostmaster", origin)
    times = (s.serial, s.refresh, s.retry, s.expire, s.minimum)
    return RR(origin, QTYPE.SOA, CLASS.IN, s.ttl, SOA(mname, rname, times))


@dataclass
class Zone:
    origin: str
    soa: RR
    neg_ttl: int
    nodes: dict[str, dict[int, list[RR]]] = field(default_factory=dict)
    ents: set[str] = field(default_factory=set)  # empty non-terminals
    cuts: set[str] = field(default_factory=set)  # names below the apex holding NS

    @classmethod
    def from_spec(cls, z: ZoneSpec) -> Zone:
        origin = fqdn(z.origin)
        soa = _soa_rr(origin, z.soa)
        zone = cls(origin, soa, min(z.soa.ttl, z.soa.minimum))
        zone.add(soa)
        for r in z.records:
            ttl = r.ttl if r.ttl is not None else z.ttl
            for rr in RR.fromZone(f"{fqdn(r.name, origin)} {ttl} IN {r.type.upper()} {r.data}"):
                zone.add(rr)
        return zone

    def add(self, rr: RR) -> None:
        name = str(rr.rname).lower()
        self.nodes.setdefault(name, {}).setdefault(rr.rtype, []).append(rr)
        if rr.rtype == QTYPE.NS and name != self.origin:
            self.cuts.add(name)
        parent = name
        while parent != self.origin and "." in parent.rstrip("."):
            parent = parent.split(".", 1)[1]
            if parent not in self.nodes:
                self.ents.add(parent)

    def cut_for(self, qname: str) -> str | None:
        """The delegation point at or above qname (below the apex), if any."""
        n = qname
        while n != self.origin and n.endswith("." + self.origin):
            if n in self.cuts:
                return n
            n = n.split(".", 1)[1]
        return None


def _in_zone(name: str, zone: str) -> bool:
    return name == zone or name.endswith("." + zone)


# ----------------------------------------------------------------------------------------------------------
# the server


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
            _soa_rr(self.mapped_zone, cfg.mapped.soa) if cfg.mapped and self.mapped_zone else None
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
            if _in_zone(name, z.origin) and len(z.origin) > best_len:
                best, best_len = z, len(z.origin)
                break  # sorted longest first
        if self.mapped_zone and _in_zone(name, self.mapped_zone) and len(self.mapped_zone) > best_len:
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
            if self.deleg_zone and _in_zone(name, self.deleg_zone) and _in_zone(self.deleg_zone, zone.origin):
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
            if _in_zone(fqdn(s.name), self.deleg_zone):
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


# ----------------------------------------------------------------------------------------------------------
# transports


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, dns: MappingDns) -> None:
        self.dns = dns
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                try:
                    sock.setsockopt(socket.SOL_SOCKET, opt, 4 << 20)
                except OSError:
                    pass

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.dns.stats["udp"] += 1
        out = self.dns.handle(data, addr[0], False)
        if out is not None and self.transport is not None:
            self.transport.sendto(out, addr)


#: seconds a TCP connection closed by the server after its last answer waits for the client to close
TCP_LINGER_S = 2.0


async def _linger_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Half-close after the last answer (FIN), then read and throw away what the client still sends until it
    closes or :data:`TCP_LINGER_S` pass: closing with unread queries would send a RST, which can destroy the
    last answer before the client has read it."""
    if writer.can_write_eof():
        writer.write_eof()
    try:
        async with asyncio.timeout(TCP_LINGER_S):
            while await reader.read(4096):
                pass
    except (TimeoutError, ConnectionError):
        pass


class DnsServer:
    """UDP + TCP listeners around :class:`MappingDns`, with the health checker (tests use this directly)."""

    def __init__(self, cfg: DnsConfig) -> None:
        self.cfg = cfg
        self.health = HealthChecker(cfg.mapping.edges if cfg.mapped else [], cfg.health, admin_token=cfg.admin_token)
        self.dns = MappingDns(cfg, self.health)
        edges = cfg.mapping.edges if cfg.mapped else []
        self.control = ControlFeed(cfg.control, edges, self.health) if cfg.control and edges else None
        self.port = cfg.port
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.base_events.Server | None = None
        self._tcp_open = 0  # TCP connections being served (at most cfg.tcp_max_connections)

    @property
    def stats(self) -> Counter[str]:
        return self.dns.stats

    async def start(self) -> None:
        """Health warm-up first (no answer before it), then bind UDP and TCP on the same port."""
        await self.health.start()
        if self.control is not None:
            await self.control.start()
        loop = asyncio.get_running_loop()
        self._udp, _ = await loop.create_datagram_endpoint(
            lambda: _Udp(self.dns), local_addr=(self.cfg.host, self.cfg.port)
        )
        self.port = self._udp.get_extra_info("sockname")[1]
        if self.cfg.tcp:
            self._tcp = await asyncio.start_server(self._tcp_client, self.cfg.host, self.port)
        log.info("DNS listening on %s:%d (udp%s)", self.cfg.host, self.port, "+tcp" if self.cfg.tcp else "")

    async def _tcp_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._tcp_open >= self.cfg.tcp_max_connections:
            self.dns.stats["tcp_refused_connections"] += 1  # RFC 7766 §6.2.2: close it at once
            writer.close()
            return
        src = writer.get_extra_info("peername")[0]
        self._tcp_open += 1
        answered = 0
        try:
            while True:
                try:
                    head = await asyncio.wait_for(reader.readexactly(2), self.cfg.tcp_idle_timeout)
                    (n,) = struct.unpack("!H", head)
                    data = await asyncio.wait_for(reader.readexactly(n), self.cfg.tcp_idle_timeout)
                except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
                    return
                self.dns.stats["tcp"] += 1
                out = self.dns.handle(data, src, True)
                if out is None:
                    return  # unreadable: close the connection (RFC 7766 §6.2.4 allows it)
                writer.write(struct.pack("!H", len(out)) + out)
                await writer.drain()
                answered += 1
                if answered >= self.cfg.tcp_max_queries_per_connection:
                    self.dns.stats["tcp_query_limit_closes"] += 1
                    await _linger_close(reader, writer)
                    return
        finally:
            self._tcp_open -= 1
            writer.close()
            try:
                await writer.wait_closed()
            except (ConnectionError, OSError):
                pass

    async def stop(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
            await self._tcp.wait_closed()
        if self.control is not None:
            await self.control.stop()
        await self.health.stop()


async def serve(cfg: DnsConfig, stop: asyncio.Event) -> None:
    """Mapping DNS server (static zones, high-level referrals, low-level edge answers)."""
    server = DnsServer(cfg)
    await server.start()
    try:
        await stop.wait()
    finally:
        await server.stop()
        log.info("stats: %s", dict(server.stats))


def free_loopback_address(port: int = 53, prefix: str = "127.53") -> str:
    """A 127.x.y.z address where both UDP and TCP ``port`` are free (DNS delegations can't carry a port).

    Binding port 53 needs root (or CAP_NET_BIND_SERVICE); raises PermissionError otherwise.
    """
    for _ in range(200):
        addr = f"{prefix}.{random.randint(1, 254)}.{random.randint(1, 254)}"
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u, socket.socket() as t:
                u.bind((addr, port))
                t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                t.bind((addr, port))
            return addr
        except PermissionError:
            raise
        except OSError:
            continue
    raise OSError(f"no free loopback address for port {port}")


def free_dns_port(host: str = "127.0.0.1") -> int:
    """A port free for both UDP and TCP on ``host`` (a DNS server binds both)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind((host, 0))
            port = u.getsockname()[1]
            try:
                with socket.socket() as t:
                    t.bind((host, port))
                return port
            except OSError:
                continue
    raise OSError("no port free for both UDP and TCP")


#: this service to the launcher (:mod:`testbed.services.daemon`):
#: the mapping DNS health-checks the edges it maps to
DAEMON = Daemon(
    role="dns", module="testbed.services.dns", config=DnsConfig, ready=DnsReady("cdn"), after=("origin", "edge")
)


def main(argv: list[str] | None = None) -> int:
    return service_main(DnsConfig, serve, argv, prog="testbed.services.dns")


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["DnsConfig", "DnsServer", "MappingDns", "free_dns_port", "free_loopback_address", "serve"]
