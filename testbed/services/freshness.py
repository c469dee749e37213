"""Pure HTTP caching rules for a shared cache (RFC 9111), plus the small RFC 9110 helpers both sides need.

Nothing here does I/O; the edge cache (:mod:`testbed.services.edge`) and the origin
(:mod:`testbed.services.origin`) call these functions.

* :func:`parse_cache_control` - RFC 9111 §5.2 directives (names lower-cased, quoted values unquoted, commas
  inside quoted strings kept; the first of duplicate directives wins, §4.2.1).
* :func:`delta_seconds` - RFC 9111 §1.2.2: digits only, clamped to 2^31; anything else (``100a``, ``1.5``,
  ``max-age = 10``) is *invalid*, and an invalid ``max-age``/``s-maxage`` makes the response stale
  (§4.2.1: "caches are encouraged to consider responses that have invalid freshness information ... to be
  stale").
* :func:`parse_http_date` - RFC 9110 §5.6.7: IMF-fixdate, and the obsolete RFC 850 and asctime formats,
  nothing else; an ``Expires`` that is not an HTTP-date means already expired (RFC 9111 §5.3).
* :func:`freshness_lifetime` - RFC 9111 §4.2.1: ``s-maxage`` (shared caches), then ``max-age``, then
  ``Expires - Date``: the *explicit* lifetime, 0 when the response gives none.
* :func:`heuristic_lifetime` - RFC 9111 §4.2.2: a fraction of the time since ``Last-Modified`` for
  heuristically cacheable statuses without explicit freshness (the edge's ``heuristic_fraction``).
* :func:`current_age` - RFC 9111 §4.2.3 age calculation (apparent age, corrected Age, resident time);
  ``Age`` (§5.1) is a non-negative integer or ignored, clamped to 2^31.
* :func:`is_storable` - RFC 9111 §3 (and §3.5 for ``Authorization``), for a *shared* cache: any final
  status with explicit freshness (or ``public``), or a heuristically cacheable one; ``no-store`` and
  unqualified ``private`` are never stored (``must-understand`` overrides ``no-store`` for statuses this
  cache understands, §5.2.2.3), ``Vary: *`` is never stored.
* :func:`needs_revalidation` - RFC 9111 §4.2 / §5.2: stale, or unqualified ``no-cache`` (response or
  request), or the request's ``max-age``/``min-fresh`` not met; a stale response is still usable within the
  request's ``max-stale`` unless ``must-revalidate``, ``proxy-revalidate`` or ``s-maxage`` forbid it
  (§4.2.4).
* :func:`policy_headers` - RFC 9213 targeted cache control: ``CDN-Cache-Control`` (or another field on
  the cache's target list) replaces ``Cache-Control`` and ``Expires`` for that cache.
* :func:`omitted_fields` - the field names of qualified ``no-cache="..."`` and ``private="..."``
  (§5.2.2.4, §5.2.2.7): a shared cache stores the response without them.
* :func:`stale_if_error_window` - RFC 5861 §4 ``stale-if-error``.
* :func:`stale_while_revalidate_window` - RFC 5861 §3 ``stale-while-revalidate``.
* :func:`vary_names` / :func:`vary_key` - RFC 9111 §4.1 secondary cache key.
* :func:`etag_matches` - RFC 9110 §13.1.2 weak comparison for ``If-None-Match``.
* :func:`precondition_failed` - RFC 9110 §13.1.1, §13.1.4: ``If-Match`` (strong comparison) and
  ``If-Unmodified-Since`` on a stored response (412).
* :func:`parse_range` - RFC 9110 §14.1.2 a single byte range (multi-range requests are answered with 200).
"""

from __future__ import annotations

import datetime
import email.utils
import re
import time
from collections.abc import Mapping

Headers = Mapping[str, str]

#: Status codes a cache may store without explicit freshness ("heuristically cacheable", RFC 9110 §15.1).
HEURISTICALLY_CACHEABLE = frozenset({200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501})
#: Status codes this cache stores without explicit freshness: the heuristically cacheable ones but 206
#: (partial content is not stored: the edge fetches whole objects).
STORABLE_STATUS = HEURISTICALLY_CACHEABLE - {206}
#: Final statuses this cache understands (``must-understand``, RFC 9111 §5.2.2.3): RFC 9110 §15's.
UNDERSTOOD_STATUS = frozenset(
    {200, 203, 204, 300, 301, 302, 303, 307, 308}
    | {400, 403, 404, 405, 406, 408, 409, 410, 411, 412, 413, 414, 415, 416, 417, 421, 422, 426}
    | {500, 501, 502, 503, 504, 505}
)
#: RFC 9111 §1.2.2: delta-seconds beyond 2^31 are clamped
MAX_DELTA = 2**31
#: what :func:`delta_seconds` returns for a present but invalid value
INVALID = -1


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


def _split_list(value: str) -> list[str]:
    """Split a comma-separated field value, keeping commas inside quoted strings (RFC 9110 §5.6.1)."""
    if '"' not in value:  # the common case, and the hit path of Vary'd objects: no quoted strings
        return value.split(",")
    parts: list[str] = []
    cur: list[str] = []
    quoted = escaped = False
    for ch in value:
        if escaped:
            escaped = False
        elif ch == "\\" and quoted:
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == "," and not quoted:
            parts.append("".join(cur))
            cur = []
            continue
        cur.append(ch)
    parts.append("".join(cur))
    return parts


def parse_cache_control(value: str | None) -> dict[str, str | None]:
    """``"public, max-age=60, no-cache=\\"Set-Cookie\\""`` -> ``{"public": None, "max-age": "60", ...}``.

    Directive names are case-insensitive (RFC 9111 §5.2); the first occurrence of a directive wins. The
    grammar allows no whitespace around ``=``: ``max-age = 10`` keeps the value with a leading space, which
    no directive accepts (so :func:`delta_seconds` calls it invalid).
    """
    out: dict[str, str | None] = {}
    if not value:
        return out
    for part in _split_list(value):
        part = part.strip()
        if not part:
            continue
        raw_name, sep, arg = part.partition("=")
        name = raw_name.strip().lower()
        if not name or name in out:
            continue
        if sep:
            if raw_name != raw_name.rstrip() or arg != arg.lstrip():
                out[name] = " " + arg.strip()  # whitespace around "=": invalid
                continue
            if len(arg) >= 2 and arg[0] == arg[-1] == '"':
                arg = arg[1:-1].replace('\\"', '"')
            out[name] = arg
        else:
            out[name] = None
    return out


def delta_seconds(cc: Mapping[str, str | None], name: str) -> int | None:
    """A delta-seconds directive (RFC 9111 §1.2.2): None when absent, :data:`INVALID` when present but not
    a plain non-negative integer, else the value clamped to 2^31."""
    if name not in cc:
        return None
    v = cc[name]
    if v is None or not v.isascii() or not v.isdigit():
        return INVALID
    return min(int(v), MAX_DELTA)


def _delta_seconds(cc: Mapping[str, str | None], name: str) -> int | None:
    """A valid delta-seconds value, or None when absent or invalid (request directives: ignored)."""
    v = delta_seconds(cc, name)
    return None if v is None or v == INVALID else v


_WKDAY = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_WEEKDAY = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_IMF = re.compile(r"(\w{3}), (\d{2}) (\w{3}) (\d{4}) (\d{2}):(\d{2}):(\d{2}) GMT", re.IGNORECASE)
_RFC850 = re.compile(r"(\w{6,9}), (\d{2})-(\w{3})-(\d{2}) (\d{2}):(\d{2}):(\d{2}) GMT", re.IGNORECASE)
_ASCTIME = re.compile(r"(\w{3}) (\w{3}) ([ \d]\d) (\d{2}):(\d{2}):(\d{2}) (\d{4})")


def parse_http_date(value: str | None) -> float | None:
    """An HTTP-date (RFC 9110 §5.6.7) as a POSIX timestamp; None when absent or not an HTTP-date.

    Exactly the three formats a recipient must accept: IMF-fixdate (``Sun, 06 Nov 1994 08:49:37 GMT``),
    RFC 850 (``Sunday, 06-Nov-94 08:49:37 GMT``, two-digit years read as within 50 years, §5.6.7) and
    asctime (``Sun Nov  6 08:49:37 1994``). Day, month and zone names are matched regardless of case
    ("recipients ... are encouraged to be robust"); other time zones, single-digit days or hours, missing
    commas and extra spaces are not HTTP-dates.
    """
    if not value:
        return None
    value = value.strip(" \t")
    try:
        if m := _IMF.fullmatch(value):
            wd, day, mon, year, hh, mm, ss = m.groups()
            if wd.title() not in _WKDAY:
                return None
            y = int(year)
        elif m := _RFC850.fullmatch(value):
            wd, day, mon, yy, hh, mm, ss = m.groups()
            if wd.title() not in _WEEKDAY:
                return None
            this_year = time.gmtime().tm_year
            y = this_year - this_year % 100 + int(yy)
            if y > this_year + 50:
                y -= 100
        elif m := _ASCTIME.fullmatch(value):
            wd, mon, day, hh, mm, ss, year = m.groups()
            if wd.title() not in _WKDAY or (day[0] == "0"):
                return None
            y = int(year)
        else:
            return None
        mon = mon.title()
        if mon not in _MONTHS:
            return None
        dt = datetime.datetime(
            y, _MONTHS.index(mon) + 1, int(day), int(hh), int(mm), min(int(ss), 59), tzinfo=datetime.UTC
        )
    except ValueError:  # 31 Feb, hour 25, ...
        return None
    return dt.timestamp()


def format_http_date(ts: float | None = None) -> str:
    """A POSIX timestamp (default now) as an IMF-fixdate."""
    return email.utils.formatdate(time.time() if ts is None else ts, usegmt=True)


def freshness_lifetime(headers: Headers, shared: bool = True) -> float:
    """Explicit freshness lifetime in seconds (RFC 9111 §4.2.1); 0 when the response gives none.

    An invalid ``s-maxage`` (shared caches) or ``max-age`` makes the response stale (lifetime 0) rather than
    falling through to the next source: §4.2.1 encourages treating invalid freshness information as stale.
    """
    cc = parse_cache_control(_get(headers, "Cache-Control"))
    for name in ("s-maxage", "max-age") if shared else ("max-age",):
        v = delta_seconds(cc, name)
        if v is not None:
            return 0.0 if v == INVALID else float(v)
    expires_raw = _get(headers, "Expires")
    if expires_raw is not None:
        expires = parse_http_date(expires_raw)
        if expires is None:  # §5.3: an invalid Expires (e.g. "0") means already expired
            return 0.0
        date = parse_http_date(_get(headers, "Date"))
        base = date if date is not None else time.time()
        return max(0.0, expires - base)
    return 0.0


def heuristic_lifetime(status: int, headers: Headers, fraction: float, now: float) -> float:
    """RFC 9111 §4.2.2: ``fraction`` of the time since ``Last-Modified`` (at ``Date``, else ``now``) for a
    heuristically cacheable status without explicit freshness; 0 otherwise or when ``fraction`` is 0."""
    if fraction <= 0 or status not in HEURISTICALLY_CACHEABLE or has_explicit_freshness(headers):
        return 0.0
    lm = parse_http_date(_get(headers, "Last-Modified"))
    if lm is None:
        return 0.0
    date = parse_http_date(_get(headers, "Date"))
    return max(0.0, ((date if date is not None else now) - lm) * fraction)


def has_explicit_freshness(headers: Headers) -> bool:
    cc = parse_cache_control(_get(headers, "Cache-Control"))
    return "s-maxage" in cc or "max-age" in cc or _get(headers, "Expires") is not None


def current_age(headers: Headers, request_time: float, response_time: float, now: float) -> float:
    """RFC 9111 §4.2.3: corrected initial age plus resident time, in seconds."""
    date = parse_http_date(_get(headers, "Date"))
    apparent_age = max(0.0, response_time - date) if date is not None else 0.0
    raw_age = (_get(headers, "Age") or "").strip()
    # §5.1: a non-negative integer (the first of a list), else ignored
    raw_age = raw_age.split(",")[0].strip()
    age_value = min(int(raw_age), MAX_DELTA) if raw_age.isascii() and raw_age.isdigit() else 0
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


#: request fields whose list members are case-insensitive and whose order carries no meaning beyond their
#: q-values (RFC 9110 §12.5): normalised to lower case, sorted
_UNORDERED = frozenset({"accept", "accept-charset", "accept-encoding", "accept-language"})


def normalise_field(name: str, value: str | None) -> str:
    """A request field's value as ``Vary`` compares it (RFC 9111 §4.1 allows normalising): list members
    with the whitespace around them removed; for the ``Accept*`` fields also lower case and sorted."""
    if value is None:
        return ""
    members = [" ".join(m.split()) for m in _split_list(value)]
    if name in _UNORDERED:
        members = sorted(m.lower().replace(" ;", ";").replace("; ", ";") for m in members if m)
    return ",".join(members)


def vary_key(names: tuple[str, ...], request_headers: Headers) -> tuple[str, ...]:
    """The secondary cache key: the request's values of the (lower-cased) ``Vary`` fields, normalised."""
    return tuple(normalise_field(n, _get(request_headers, n)) for n in names)


def is_storable(
    method: str, status: int, request_headers: Headers, response_headers: Headers, shared: bool = True
) -> bool:
    """May a shared cache store this response (RFC 9111 §3)?

    A final status (not 206, not 304) with explicit freshness or ``public`` is storable whatever its class,
    including 3xx, 4xx and 5xx; without them only the statuses in :data:`STORABLE_STATUS`.
    """
    if method not in ("GET", "HEAD") or status < 200 or status in (206, 304):
        return False
    req_cc = parse_cache_control(_get(request_headers, "Cache-Control"))
    cc = parse_cache_control(_get(response_headers, "Cache-Control"))
    if "must-understand" in cc:  # §5.2.2.3: only statuses it understands, and then no-store is ignored
        if status not in UNDERSTOOD_STATUS:
            return False
    elif "no-store" in cc:
        return False
    if "no-store" in req_cc:
        return False
    if shared and "private" in cc and not cc["private"]:  # qualified private: stored without those fields
        return False
    if vary_names(response_headers) is None:
        return False
    if shared and _get(request_headers, "Authorization") is not None:
        # RFC 9111 §3.5: only with must-revalidate, public or s-maxage
        if not ({"must-revalidate", "public", "s-maxage"} & cc.keys()):
            return False
    return "public" in cc or has_explicit_freshness(response_headers) or status in STORABLE_STATUS


def omitted_fields(response_headers: Headers, shared: bool = True) -> frozenset[str]:
    """Lower-cased field names a cache must not store: qualified ``no-cache="..."`` (§5.2.2.4) and, in a
    shared cache, qualified ``private="..."`` (§5.2.2.7)."""
    cc = parse_cache_control(_get(response_headers, "Cache-Control"))
    names: set[str] = set()
    for d in ("no-cache", "private") if shared else ("no-cache",):
        if cc.get(d):
            names.update(n.strip().lower() for n in (cc[d] or "").split(",") if n.strip())
    return frozenset(names)


def needs_revalidation(
    response_headers: Headers, age: float, request_headers: Headers | None = None, shared: bool = True
) -> bool:
    """True when a stored response must be validated before use (RFC 9111 §4.2, §5.2).

    Unqualified ``no-cache`` always revalidates (a qualified one only keeps its fields out of the store). A
    fresh response still revalidates when the request's ``no-cache``, ``Pragma: no-cache`` (without
    ``Cache-Control``, §5.4), ``max-age`` or ``min-fresh`` asks for it; a stale one is used within the
    request's ``max-stale`` unless ``must-revalidate`` (or, shared, ``proxy-revalidate``/``s-maxage``)
    forbids serving it stale (§4.2.4, §5.2.2.2, §5.2.2.8, §5.2.2.10).
    """
    cc = parse_cache_control(_get(response_headers, "Cache-Control"))
    if "no-cache" in cc and not cc["no-cache"]:
        return True
    lifetime = freshness_lifetime(response_headers, shared)
    req_cc = parse_cache_control(_get(request_headers, "Cache-Control")) if request_headers else {}
    if request_headers is not None:
        if "no-cache" in req_cc:
            return True
        if _get(request_headers, "Pragma") == "no-cache" and _get(request_headers, "Cache-Control") is None:
            return True
        max_age = _delta_seconds(req_cc, "max-age")
        if max_age is not None and age > max_age:
            return True
        min_fresh = _delta_seconds(req_cc, "min-fresh")
        if min_fresh is not None and lifetime - age < min_fresh:
            return True
    if age < lifetime:
        return False
    # stale: only the request's max-stale can make it usable
    if "max-stale" not in req_cc:
        return True
    if "must-revalidate" in cc or (shared and ("proxy-revalidate" in cc or "s-maxage" in cc)):
        return True
    if req_cc["max-stale"] is None:
        return False
    max_stale = _delta_seconds(req_cc, "max-stale")
    return max_stale is None or age - lifetime > max_stale


def stale_if_error_window(response_headers: Headers, default: float = 0.0) -> float:
    """How long past expiry a stored response may be served when the origin fails (RFC 5861 §4)."""
    cc = parse_cache_control(_get(response_headers, "Cache-Control"))
    if "must-revalidate" in cc or "proxy-revalidate" in cc:
        return 0.0
    v = _delta_seconds(cc, "stale-if-error")
    return float(v) if v is not None else float(default)


def stale_while_revalidate_window(response_headers: Headers) -> float:
    """How long past expiry a stored response may be served while one background revalidation runs
    (RFC 5861 §3); 0 when ``no-cache``, ``must-revalidate``, ``proxy-revalidate`` or ``s-maxage`` forbid
    serving it stale (RFC 9111 §4.2.4)."""
    cc = parse_cache_control(_get(response_headers, "Cache-Control"))
    if {"must-revalidate", "proxy-revalidate", "s-maxage"} & cc.keys() or (
        "no-cache" in cc and not cc["no-cache"]
    ):
        return 0.0
    v = _delta_seconds(cc, "stale-while-revalidate")
    return float(v) if v is not None else 0.0


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


def precondition_failed(request_headers: Headers, etag: str | None, last_modified: float | None) -> bool:
    """Should a GET/HEAD be answered 412 (RFC 9110 §13.1.1 ``If-Match`` with the *strong* comparison, so a
    weak entity-tag never matches; else §13.1.4 ``If-Unmodified-Since``)?"""
    im = _get(request_headers, "If-Match")
    if im is not None:
        if im.strip() == "*":
            return False
        if etag is None or etag.strip().startswith("W/"):
            return True
        tags = [t.strip() for t in im.split(",") if t.strip()]
        return etag.strip() not in [t for t in tags if not t.startswith("W/")]
    ius = parse_http_date(_get(request_headers, "If-Unmodified-Since"))
    if ius is not None and last_modified is not None:
        return int(last_modified) > int(ius)
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


_SF_KEY = r"[a-z*][a-z0-9_\-.*]*"
_SF_ITEM = r'(?:-?\d{1,15}(?:\.\d{1,3})?|"(?:[^"\\\x00-\x1f\x7f]|\\["\\])*"|[A-Za-z*][!#$%&\'*+\-.^_`|~:/A-Za-z0-9]*|:[A-Za-z0-9+/=]*:|\?[01])'
_SF_PARAMS = rf"(?:;\s*{_SF_KEY}(?:={_SF_ITEM})?)*"
_SF_MEMBER = re.compile(rf"({_SF_KEY})(?:=({_SF_ITEM}))?{_SF_PARAMS}")
#: directives whose value must be an sf-integer in a targeted field (RFC 9213 §2.1)
_INTEGER_DIRECTIVES = frozenset({"max-age", "s-maxage", "stale-while-revalidate", "stale-if-error"})


def targeted_value_valid(value: str) -> bool:
    """Is a targeted field's value a valid Structured Field Dictionary (RFC 8941 §3.2, as RFC 9213 §2.1
    requires), with integer values for the delta-seconds directives? An invalid one is ignored."""
    members = [m.strip(" \t") for m in value.split(",")]
    if not members or any(not m for m in members):
        return False
    for m in members:
        match = _SF_MEMBER.fullmatch(m)
        if match is None:
            return False
        key, item = match.group(1), match.group(2)
        if key in _INTEGER_DIRECTIVES and (item is None or not item.isdigit()):
            return False
    return True


def policy_headers(headers: Headers, targets: tuple[str, ...]) -> Headers:
    """The headers a cache on ``targets``'s list decides with (RFC 9213 §2.1, targeted cache control).

    The first field of ``targets`` (in list order) present with a valid (a Structured Field Dictionary),
    non-empty value replaces
    ``Cache-Control``, and ``Expires`` is then ignored. Without one, ``headers`` itself is returned.
    """
    for name in targets:
        value = _get(headers, name)
        if value is not None and value.strip() and targeted_value_valid(value):
            lowered = {t.lower() for t in targets} | {"cache-control", "expires"}
            out = {k: v for k, v in headers.items() if k.lower() not in lowered}
            out["Cache-Control"] = value
            return out
    return headers
