"""The DNS service's one typed config: static zones, the high-level delegation and the low-level mapped
zone (``python -m testbed.services.dns --config F``).
"""

from __future__ import annotations

import re
from ipaddress import IPv4Address

from dnslib import (
    RR,
)
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from testbed.services.base import ServiceConfig
from testbed.services.health import HealthConfig
from testbed.services.mapping import MappingSpec
from testbed.services.mcast.consumer import ControlConsumerConfig

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
