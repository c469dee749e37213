"""Zone data compiled from the config: records by name and type, SOA, delegation points (RFC 1034/1035)."""

from __future__ import annotations

from dataclasses import dataclass, field

from dnslib import (
    CLASS,
    QTYPE,
    RR,
    SOA,
)

from testbed.services.dns.config import (
    SoaSpec,
    ZoneSpec,
    fqdn,
)


def soa_rr(origin: str, s: SoaSpec) -> RR:
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
        soa = soa_rr(origin, z.soa)
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


def in_zone(name: str, zone: str) -> bool:
    return name == zone or name.endswith("." + zone)
