"""Lab http-caching (starter): the freshness and storage decisions of a shared HTTP cache (RFC 9111).

Fill in the four functions marked TODO. They have the same names and signatures as
``testbed/services/freshness.py``, so the grader can plug your module into a real edge cache:

    cdnlab grade http-caching --solution path/to/freshness.py

Given helpers (you may use them): ``parse_cache_control`` ("public, max-age=60" ->
``{"public": None, "max-age": "60"}``, names lower-cased), ``parse_http_date`` (an HTTP-date -> POSIX
seconds, or None when missing/invalid) and ``header`` (case-insensitive lookup) below.
"""

from __future__ import annotations

import time  # noqa: F401 - you may need time.time() for an Expires without Date
from collections.abc import Mapping

from testbed.services.freshness import parse_cache_control, parse_http_date  # noqa: F401

Headers = Mapping[str, str]

#: status codes this (shared) cache may store (RFC 9110 §15.1 "heuristically cacheable", minus 206 etc.)
STORABLE_STATUS = frozenset({200, 203, 204, 300, 301, 308, 404, 410})


def header(headers: Headers, name: str) -> str | None:
    """Case-insensitive header lookup (field names are case-insensitive, RFC 9110 §5.1)."""
    for k, v in headers.items():
        if k.lower() == name.lower():
            return v
    return None


def freshness_lifetime(headers: Headers, shared: bool = True) -> float:
    """Seconds the response stays fresh (RFC 9111 §4.2.1); 0.0 when it gives no explicit freshness.

    TODO:
    * in a shared cache ``s-maxage`` wins, then ``max-age``, then ``Expires`` minus ``Date``
      (use time.time() when there is no Date); a private cache (shared=False) ignores s-maxage;
    * an invalid delta-seconds value (``max-age=abc``, ``1.5``, ``-1``: anything but digits) makes the
      response stale -> 0.0 (§4.2.1), without looking further (not at Expires);
    * an invalid ``Expires`` (e.g. ``Expires: 0``) means "already expired" (§5.3) -> 0.0;
    * never negative; no heuristic freshness (§4.2.2): no explicit lifetime -> 0.0.
    """
    raise NotImplementedError(
        "TODO freshness_lifetime: RFC 9111 §4.2.1 (s-maxage > max-age > Expires - Date)"
    )


def current_age(headers: Headers, request_time: float, response_time: float, now: float) -> float:
    """The response's current age in seconds (RFC 9111 §4.2.3); all times are POSIX seconds.

    TODO: apparent_age = max(0, response_time - Date); corrected_age_value = Age + response_delay
    (response_delay = response_time - request_time); corrected_initial_age = max of the two;
    result = corrected_initial_age + (now - response_time). Missing/invalid Date or Age count as 0
    (Age is a non-negative integer, §5.1).
    """
    raise NotImplementedError("TODO current_age: RFC 9111 §4.2.3 age calculation")


def is_storable(
    method: str, status: int, request_headers: Headers, response_headers: Headers, shared: bool = True
) -> bool:
    """May this cache store the response at all (RFC 9111 §3)?

    TODO: only GET/HEAD and a final status (not 1xx, 206 or 304); a status in STORABLE_STATUS, or any
    final status when the response has explicit freshness (``max-age``, ``s-maxage``, ``Expires``) or
    ``public``; never with ``no-store`` (request or response);
    a shared cache never stores ``private``; ``Vary: *`` is never stored (§4.1); a request with
    ``Authorization`` only if the response says ``public``, ``s-maxage`` or ``must-revalidate`` (§3.5).
    ``no-cache`` responses ARE storable (they are revalidated on every use).
    """
    raise NotImplementedError("TODO is_storable: RFC 9111 §3 (no-store, private, Vary: *, Authorization)")


def needs_revalidation(
    response_headers: Headers, age: float, request_headers: Headers | None = None, shared: bool = True
) -> bool:
    """Must the stored response be validated (conditional GET -> 304/200) before it is used?

    TODO: True when the response says ``no-cache`` (§5.2.2.4), when it is stale (age >= lifetime,
    §4.2), and, if request_headers are given, when the request says ``no-cache`` (§5.2.1.4), or
    ``Pragma: no-cache`` without any Cache-Control (§5.4), or ``max-age=N`` with age > N (§5.2.1.1).
    """
    raise NotImplementedError("TODO needs_revalidation: RFC 9111 §4.2 + §5.2 (stale? no-cache?)")
