"""Lab http-caching, reference solution: the freshness and storage decisions of a shared HTTP cache.

Implements RFC 9111 (HTTP Caching) for a *shared* cache (a CDN edge):

* :func:`freshness_lifetime` - §4.2.1: ``s-maxage`` (shared caches only), then ``max-age``, then
  ``Expires`` minus ``Date``; an invalid ``max-age``/``s-maxage`` makes the response stale, an invalid
  ``Expires`` means "already expired"; no heuristic freshness.
* :func:`current_age` - §4.2.3: corrected initial age plus resident time.
* :func:`is_storable` - §3 (and §3.5 for requests carrying ``Authorization``): any final status with
  explicit freshness or ``public``, else only the statuses in ``STORABLE_STATUS``.
* :func:`needs_revalidation` - §4.2 and §5.2: stale, ``no-cache`` in the response or the request,
  ``Pragma: no-cache`` (HTTP/1.0, §5.4), or older than the request's ``max-age``.

Instructors: this file is the answer key; strip ``solution/`` directories before handing labs out.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from testbed.services.freshness import parse_cache_control, parse_http_date

Headers = Mapping[str, str]

#: status codes this (shared) cache may store (RFC 9110 §15.1 heuristically cacheable, minus 206/405/414/501)
STORABLE_STATUS = frozenset({200, 203, 204, 300, 301, 308, 404, 410})


def header(headers: Headers, name: str) -> str | None:
    """Case-insensitive header lookup (field names are case-insensitive, RFC 9110 §5.1)."""
    for k, v in headers.items():
        if k.lower() == name.lower():
            return v
    return None


INVALID = -1


def delta_seconds(cc: Mapping[str, str | None], name: str) -> int | None:
    """A directive's delta-seconds value (RFC 9111 §1.2.2): None when absent, INVALID unless it is plain
    digits, clamped to 2^31."""
    if name not in cc:
        return None
    v = cc[name]
    if v is None or not v.isascii() or not v.isdigit():
        return INVALID
    return min(int(v), 2**31)


def freshness_lifetime(headers: Headers, shared: bool = True) -> float:
    """Seconds the response stays fresh (RFC 9111 §4.2.1); 0.0 without explicit freshness."""
    cc = parse_cache_control(header(headers, "Cache-Control"))
    for name in ("s-maxage", "max-age") if shared else ("max-age",):
        if (v := delta_seconds(cc, name)) is not None:
            return 0.0 if v == INVALID else float(v)  # §4.2.1: invalid freshness information -> stale
    raw = header(headers, "Expires")
    if raw is not None:
        expires = parse_http_date(raw)
        if expires is None:  # §5.3: an invalid date, e.g. "0", means already expired
            return 0.0
        date = parse_http_date(header(headers, "Date"))
        return max(0.0, expires - (date if date is not None else time.time()))
    return 0.0


def current_age(headers: Headers, request_time: float, response_time: float, now: float) -> float:
    """RFC 9111 §4.2.3 (all times are POSIX seconds)."""
    date = parse_http_date(header(headers, "Date"))
    apparent_age = max(0.0, response_time - date) if date is not None else 0.0
    raw_age = (header(headers, "Age") or "").strip()
    age_value = int(raw_age) if raw_age.isascii() and raw_age.isdigit() else 0  # §5.1
    response_delay = max(0.0, response_time - request_time)
    corrected_initial_age = max(apparent_age, age_value + response_delay)
    return corrected_initial_age + max(0.0, now - response_time)


def is_storable(
    method: str, status: int, request_headers: Headers, response_headers: Headers, shared: bool = True
) -> bool:
    """May this cache store the response at all (RFC 9111 §3)?"""
    if method not in ("GET", "HEAD") or status < 200 or status in (206, 304):
        return False
    req_cc = parse_cache_control(header(request_headers, "Cache-Control"))
    cc = parse_cache_control(header(response_headers, "Cache-Control"))
    if "no-store" in req_cc or "no-store" in cc:
        return False
    if shared and "private" in cc:
        return False
    vary = header(response_headers, "Vary")
    if vary is not None and "*" in [v.strip() for v in vary.split(",")]:
        return False  # §4.1: "Vary: *" never matches a later request
    if shared and header(request_headers, "Authorization") is not None:
        if not {"must-revalidate", "public", "s-maxage"} & cc.keys():  # §3.5
            return False
    # §3: explicit freshness (or public) makes any final status storable; else a heuristically cacheable one
    explicit = {"max-age", "s-maxage"} & cc.keys() or header(response_headers, "Expires") is not None
    return bool("public" in cc or explicit or status in STORABLE_STATUS)


def needs_revalidation(
    response_headers: Headers, age: float, request_headers: Headers | None = None, shared: bool = True
) -> bool:
    """Must the stored response be validated with the origin before it is used?"""
    cc = parse_cache_control(header(response_headers, "Cache-Control"))
    if "no-cache" in cc:  # §5.2.2.4: stored, but never used without validation
        return True
    if age >= freshness_lifetime(response_headers, shared):
        return True
    if request_headers is not None:
        req_cc = parse_cache_control(header(request_headers, "Cache-Control"))
        if "no-cache" in req_cc:  # §5.2.1.4
            return True
        if (
            header(request_headers, "Cache-Control") is None
            and header(request_headers, "Pragma") == "no-cache"
        ):
            return True  # §5.4
        max_age = delta_seconds(req_cc, "max-age")  # §5.2.1.1
        if max_age is not None and max_age != INVALID and age > max_age:
            return True
    return False
