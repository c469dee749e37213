"""A stored response (:class:`Entry`, its age bookkeeping precomputed) and an upstream answer."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from multidict import CIMultiDict


@dataclass
class Entry:
    """A stored response with its age bookkeeping precomputed (RFC 9111 §4.2.3), so a hit is cheap."""

    status: int
    headers: CIMultiDict[str]
    body: bytes
    response_time: float
    initial_age: float  # corrected_initial_age
    lifetime: float
    no_cache: bool
    sie: float  # stale-if-error window
    size: int
    policy: Mapping[str, str]  # the headers this edge decides with (RFC 9213: its targeted field)
    heuristic: bool = False  # lifetime from RFC 9111 §4.2.2, not from the response
    swr: float = 0.0  # stale-while-revalidate window (RFC 5861 §3)
    hit_headers: CIMultiDict[str] | None = None  # response headers of a plain hit, built on first use
    hit_head: bytes | None = None  # the fast path's status line and fields of a plain hit, but Age and Date
    hit_has_date: bool = False  # the stored fields have a Date (else the fast path adds the current one)

    def age(self, now: float) -> float:
        return self.initial_age + (now - self.response_time)


@dataclass
class Fetched:
    status: int
    headers: CIMultiDict[str]  # stripped of hop-by-hop fields
    body: bytes
    request_time: float
    response_time: float
    source: str  # origin | parent | peer | sibling
    extra: CIMultiDict[str] | None = None  # per-user fields relayed but not stored (Set-Cookie)


class UpstreamError(Exception):
    pass
