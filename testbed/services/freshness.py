"""Pure HTTP caching rules for a shared cache (RFC 9111), plus the small RFC 9110 helpers both sides need.

Nothing here does I/O; the edge cache (:mod:`testbed.services.edge`) and the origin
(:mod:`testbed.services.origin`) call these functions.

* :func:`parse_cache_control` - RFC 9111 §5.2 directives (names lower-cased, quoted values unquoted).
* :func:`freshness_lifetime` - RFC 9111 §4.2.1: ``s-maxage`` (shared caches), then ``max-age``, then
  ``Expires - Date``. **No heuristic freshness** (§4.2.2): a response without explicit lifetime has
  lifetime 0, i.e. it may be stored but is revalidated on every use.
* :func:`current_age` - RFC 9111 §4.2.3 age calculation (apparent age, corrected Age, resident time).
* :func:`is_storable` - RFC 9111 §3 (and §3.5 for ``Authorization``), for a *shared* cache:
  ``no-store`` and ``private`` responses are never stored, ``Vary: *`` is never stored.
* :func:`needs_revalidation` - RFC 9111 §4.2 / §5.2.2.4: stale, or ``no-cache`` (response or request),
  or request ``max-age`` exceeded.
* :func:`stale_if_error_window` - RFC 5861 §4 ``stale-if-error``.
* :func:`vary_names` / :func:`vary_key` - RFC 9111 §4.1 secondary cache key.
* :func:`etag_matches` - RFC 9110 §13.1.2 weak comparison for ``If-None-Match``.
* :func:`parse_range` - RFC 9110 §14.1.2 a single byte range (multi-range requests are answered with 200).
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping

Headers = Mapping[str, str]

#: Status codes a cache may store without explicit freshness ("heuristically cacheable", RFC 9110 §15.1).
HEURISTICALLY_CACHEABLE = frozenset({200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501})
#: Status codes this cache stores at all (206 partial content is not stored: we fetch whole objects).
STORABLE_STATUS = frozenset({200, 203, 204, 300, 301, 308, 404, 410})


def _get(headers: Headers, name: str) -> str | None:
    """Case-insensitive header lookup that works for plain dicts as well as CIMultiDicts."""
    v = headers.get(name)
    if v is not None:
        return v
    lname = name.lower()
    for k, val in headers.items():
        if k.lower() == lname:
            return val
    return None


def parse_cache_control(value: str | None) -> dict[str, str | None]:
    """``"public, max-age=60, no-cache=\\"Set-Cookie\\""`` -> ``{"public": None, "max-age": "60", ...}``.

    Directive names are case-insensitive (RFC 9111 §5.2); the first occurrence of a directive wins.
    """
    out: dict[str, str | None] = {}
    if not value:
        return out
    for part in value.split(","):
        part = part.strip()
        if not part:
            continue
        name, sep, arg = part.partition("=")
        name = name.strip().lower()
        if not name or name in out:
            continue
        if sep:
            arg = arg.strip()
            if len(arg) >= 2 and arg[0] == arg[-1] == '"':
                arg = arg[1:-1]
            out[name] = arg
        else:
            out[name] = None
    return out


def _delta_seconds(cc: Mapping[str, str | None], name: str) -> int | None:
    """A delta-seconds directive value; an invalid value is treated as absent (RFC 9111 §1.2.2)."""
    v = cc.get(name)
    if v is None:
        return None
    try:
        n = int(v)
    except ValueError:
        return None
    return max(0, n)


def parse_http_date(value: str | None) -> float | None:
    """An HTTP-date (RFC 9110 §5.6.7) as a POSIX timestamp, or None when absent or invalid."""
    if not value:
        return None
    try:
        dt = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if dt is None:
        return None
    return dt.timestamp()


def format_http_date(ts: float | None = None) -> str:
    """A POSIX timestamp (default now) as an IMF-fixdate."""
    return email.utils.formatdate(time.time() if ts is None else ts, usegmt=True)


def freshness_lifetime(headers: Headers, shared: bool = True) -> float:
    """Freshness lifetime in seconds (RFC 9111 §4.2.1); 0 when the response gives none (no heuristics)."""
    cc = parse_cache_control(_get(headers, "Cache-Control"))
    if shared:
        s = _delta_seconds(cc, "s-maxage")
        if s is not None:
            return float(s)
    m = _delta_seconds(cc, "max-age")
    if m is not None:
        return float(m)
    expires_raw = _get(headers, "Expires")
    if expires_raw is not None:
        expires = parse_http_date(expires_raw)
        if expires is None:  # invalid Expires (e.g. "0") means already expired
            return 0.0
        date = parse_http_date(_get(headers, "Date"))
        base = date if date is not None else time.time()
        return max(0.0, expires - base)
    return 0.0


def has_explicit_freshness(headers: Headers) -> bool:
    cc = parse_cache_control(_get(headers, "Cache-Control"))
    return "s-maxage" in cc or "max-age" in cc or _get(headers, "Expires") is not None


def current_age(headers: Headers, request_time: float, response_time: float, now: float) -> float:
    """RFC 9111 §4.2.3: corrected initial age plus resident time, in seconds."""
    date = parse_http_date(_get(headers, "Date"))
    apparent_age = max(0.0, response_time - date) if date is not None else 0.0
    try:
        age_value = max(0, int(_get(headers, "Age") or 0))
    except ValueError:
        age_value = 0
    response_delay = max(0.0, response_time - request_time)
    corrected_age_value = age_value + response_delay
    corrected_initial_age = max(apparent_age, corrected_age_value)
    resident_time = max(0.0, now - response_time)
    return corrected_initial_age + resident_time


def vary_names(headers: Headers) -> tuple[str, ...] | None:
    """Lower-cased, sorted field names of ``Vary``; None for ``Vary: *`` (never matches, RFC 9111 §4.1)."""
    raw = _get(headers, "Vary")
    if not raw:
        return ()
    names = sorted({n.strip().lower() for n in raw.split(",") if n.strip()})
    if "*" in names:
        return None
    return tuple(names)


def vary_key(names: tuple[str, ...], request_headers: Headers) -> tuple[str, ...]:
    """The secondary cache key: the request's values of the ``Vary`` fields, whitespace-normalised."""
    return tuple(" ".join((_get(request_headers, n) or "").split()) for n in names)


def is_storable(
    method: str, status: int, request_headers: Headers, response_headers: Headers, shared: bool = True
) -> bool:
    """May a shared cache store this response (RFC 9111 §3)?"""
    if method not in ("GET", "HEAD") or status not in STORABLE_STATUS:
        return False
    req_cc = parse_cache_control(_get(request_headers, "Cache-Control"))
    cc = parse_cache_control(_get(response_headers, "Cache-Control"))
    if "no-store" in req_cc or "no-store" in cc:
        return False
    if shared and "private" in cc:
        return False
    if vary_names(response_headers) is None:
        return False
    if shared and _get(request_headers, "Authorization") is not None:
        # RFC 9111 §3.5: only with must-revalidate, public or s-maxage
        if not ({"must-revalidate", "public", "s-maxage"} & cc.keys()):
            return False
    return (
        "public" in cc
        or has_explicit_freshness(response_headers)
        or status in HEURISTICALLY_CACHEABLE
        or "no-cache" in cc
    )


def needs_revalidation(
    response_headers: Headers, age: float, request_headers: Headers | None = None, shared: bool = True
) -> bool:
    """True when a stored response must be validated before use (stale or ``no-cache``)."""
    cc = parse_cache_control(_get(response_headers, "Cache-Control"))
    if "no-cache" in cc:
        return True
    lifetime = freshness_lifetime(response_headers, shared)
    if age >= lifetime:
        return True
    if request_headers is not None:
        req_cc = parse_cache_control(_get(request_headers, "Cache-Control"))
        if "no-cache" in req_cc:
            return True
        if _get(request_headers, "Pragma") == "no-cache" and _get(request_headers, "Cache-Control") is None:
            return True
        max_age = _delta_seconds(req_cc, "max-age")
        if max_age is not None and age > max_age:
            return True
    return False


def stale_if_error_window(response_headers: Headers, default: float = 0.0) -> float:
    """How long past expiry a stored response may be served when the origin fails (RFC 5861 §4)."""
    cc = parse_cache_control(_get(response_headers, "Cache-Control"))
    if "must-revalidate" in cc or "proxy-revalidate" in cc:
        return 0.0
    v = _delta_seconds(cc, "stale-if-error")
    return float(v) if v is not None else float(default)


def etag_matches(if_none_match: str, etag: str | None) -> bool:
    """``If-None-Match`` evaluation with weak comparison (RFC 9110 §13.1.2)."""
    if etag is None:
        return False
    if if_none_match.strip() == "*":
        return True

    def opaque(tag: str) -> str:
        tag = tag.strip()
        return tag[2:] if tag.startswith("W/") else tag

    target = opaque(etag)
    return any(opaque(t) == target for t in if_none_match.split(",") if t.strip())


def not_modified(request_headers: Headers, etag: str | None, last_modified: float | None) -> bool:
    """Should a GET be answered 304 (RFC 9110 §13.1.2, §13.1.3; If-None-Match takes precedence)?"""
    inm = _get(request_headers, "If-None-Match")
    if inm is not None:
        return etag_matches(inm, etag)
    ims = parse_http_date(_get(request_headers, "If-Modified-Since"))
    if ims is not None and last_modified is not None:
        return int(last_modified) <= int(ims)
    return False


class RangeNotSatisfiable(ValueError):
    """The Range header is well-formed but no byte of the representation is in it (-> 416)."""


def parse_range(value: str | None, size: int) -> tuple[int, int] | None:
    """A single ``bytes=`` range as an inclusive ``(first, last)``; None means "send the whole thing".

    Malformed or multi-range headers return None (a server may ignore Range, RFC 9110 §14.2);
    an unsatisfiable range raises :class:`RangeNotSatisfiable`.
    """
    if not value:
        return None
    unit, _, spec = value.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first_s, dash, last_s = spec.strip().partition("-")
    if not dash:
        return None
    try:
        if first_s == "":  # suffix range: the last N bytes
            n = int(last_s)
            if n <= 0:
                raise RangeNotSatisfiable(value)
            if size == 0:
                raise RangeNotSatisfiable(value)
            return max(0, size - n), size - 1
        first = int(first_s)
        last = int(last_s) if last_s else size - 1
    except ValueError:
        return None
    if first >= size:
        raise RangeNotSatisfiable(value)
    if first < 0 or last < first:
        return None
    return first, min(last, size - 1)
