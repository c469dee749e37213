"""The edge's one typed config (``python -m testbed.services.edge --config F``) and its parts."""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from testbed.services.edge.fields import TOKEN
from testbed.services.eviction import load_policy_class
from testbed.services.limits import HttpLimitsConfig
from testbed.services.mcast.cdn import (
    ControlPublishConfig,
    EdgeIngestConfig,
)


class ClusterMember(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    url: str  # http://host:port of that member


class Sibling(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    icp_host: str = "127.0.0.1"  # an IP address (replies are matched by address)
    icp_port: int = Field(ge=1, le=65535)
    http_url: str


class EdgeConfig(HttpLimitsConfig):
    """Config of one edge cache (``python -m testbed.services.edge --config F``); its connection and header
    limits (``max_connections``, ``max_header_count``, ``max_header_bytes``) are :class:`HttpLimitsConfig`'s."""

    name: str = "edge"
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    origin_url: str
    #: host names of the origin that may appear in Akamai-style paths (the host of origin_url always does)
    origin_hostnames: list[str] = Field(default_factory=lambda: ["origin.cdnlab.test"])
    capacity_bytes: int = Field(64 * 1024 * 1024, gt=0)
    eviction: str = "testbed.services.eviction:LRU"
    cluster: list[ClusterMember] = Field(default_factory=list)
    siblings: list[Sibling] = Field(default_factory=list)
    icp_host: str = "127.0.0.1"
    #: UDP port of this edge's ICP server; None: no ICP server; 0: any free port
    icp_port: int | None = Field(None, ge=0, le=65535)
    icp_timeout_ms: int = Field(50, ge=1, le=10_000)
    parent_url: str | None = None
    #: RFC 5861 stale-if-error window (s) for responses that do not carry their own
    stale_if_error_s: int = Field(0, ge=0)
    #: freshness given to objects pushed in with admit() that carry no explicit lifetime
    admit_ttl_s: int = Field(3600, ge=0)
    upstream_timeout_s: float = Field(10.0, gt=0)
    #: RFC 9111 §4.2.2 heuristic freshness: this fraction of the time since Last-Modified (0 turns it off)
    heuristic_fraction: float = Field(0.1, ge=0, le=1)
    #: a Range request that misses: ``parts`` forwards the range and stores the 206 as a part (RFC 9111
    #: §3.3-3.4; parts that cover the object become a complete response); ``whole`` fetches the whole object
    range_requests: Literal["parts", "whole"] = "parts"
    #: RFC 9213 targeted cache-control fields this edge obeys, first present wins; never sent downstream
    targeted_fields: list[str] = Field(default_factory=lambda: ["Cdnlab-Cache-Control", "CDN-Cache-Control"])
    #: bytes of request line / one header field beyond which a request is refused with 400
    max_field_size: int = Field(8190, ge=256)
    #: answer plain fresh hits below aiohttp (:mod:`testbed.services.hit_path`; off: every request takes
    #: the full path, the same answers more slowly)
    hit_fast_path: bool = True
    #: multicast ingest: objects and invalidations from the origin's group go straight into this cache
    ingest: EdgeIngestConfig | None = None
    #: multicast control channel: HEARTBEATs with this edge's load
    control: ControlPublishConfig | None = None

    @field_validator("eviction")
    @classmethod
    def _check_eviction(cls, v: str) -> str:
        load_policy_class(v)
        return v

    @field_validator("targeted_fields")
    @classmethod
    def _check_fields(cls, v: list[str]) -> list[str]:
        bad = [f for f in v if not TOKEN.fullmatch(f)]
        if bad:
            raise ValueError(f"not HTTP field names: {bad}")
        return v

    @field_validator("origin_url", "parent_url")
    @classmethod
    def _check_url(cls, v: str | None) -> str | None:
        if v is not None and urlsplit(v).scheme not in ("http",):
            raise ValueError("must be an http:// URL")
        return v.rstrip("/") if v else v


#: how edges cooperate on a miss (lecture slide 7; slide 20 for the cluster): ``none`` (the origin),
#: ``cluster`` (the object's home edge, rendezvous hashing), ``icp`` (ask siblings, ICPv2 RFC 2186),
#: ``parent`` (through a parent cache)
COOPERATION = ("none", "cluster", "icp", "parent")


class Peer(BaseModel):
    """Where one edge of a cooperating group is reached: its HTTP URL and its ICP address."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    http_url: str
    icp_host: str = "127.0.0.1"
    icp_port: int = Field(3130, ge=1, le=65535)


def cooperation_fields(
    mode: str, me: Peer, peers: list[Peer], parent_url: str | None = None, icp_bind: str = "0.0.0.0"
) -> dict[str, object]:
    """The :class:`EdgeConfig` fields that make edge ``me`` cooperate with ``peers`` in ``mode``: the one
    place that knows their shape, for the emulated CDN (testbed.net.launch) and the loopback experiment
    (experiments/hierarchy.py) alike. ``peers`` excludes ``me``; ``icp_bind``: the ICP server's address."""
    if mode == "cluster":
        return {"cluster": [{"name": p.name, "url": p.http_url} for p in [me, *peers]]}
    if mode == "icp":
        return {"icp_host": icp_bind, "icp_port": me.icp_port,
                "siblings": [{"name": p.name, "icp_host": p.icp_host, "icp_port": p.icp_port,
                              "http_url": p.http_url} for p in peers]}
    if mode == "parent":
        return {"parent_url": parent_url} if parent_url else {}
    if mode == "none":
        return {}
    raise ValueError(f"unknown cooperation {mode!r}; one of {', '.join(COOPERATION)}")
