"""HTTP fields as the edge treats them: hop-by-hop and forwarded fields (RFC 9110 §7.6), what the cached
path answers itself, what is never stored, and the helpers that strip a message's fields.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from multidict import CIMultiDict

from testbed.services.freshness import (
    parse_cache_control,
)
from testbed.services.http_fields import HOP_BY_HOP

PEER_HEADER = "X-CDN-Peer"
#: request fields the edge sets itself (Host and Content-Length by the client library, Via appended; the
#: body is already read, so an Expect: 100-continue has been answered)
NOT_FORWARDED = HOP_BY_HOP | {"host", "content-length", "expect", "via", PEER_HEADER.lower()}
#: request fields the cached path answers itself from the whole stored object instead of forwarding
ANSWERED_HERE = frozenset(
    {"range", "if-range", "if-none-match", "if-modified-since", "if-match", "if-unmodified-since"}
)
#: RFC 9110 §9.2.1: methods that do not invalidate stored responses
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
#: the secondary key under which an object's stored parts live (no Vary value can equal it: it holds a NUL)
PARTS = ("\x00parts",)
ENTITY_TAG = re.compile(r'(W/)?"[\x21\x23-\x7e\x80-\xff]*"')
TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
#: response headers never stored or relayed (hop-by-hop, recomputed, or per-user)
DROP_RESPONSE = HOP_BY_HOP | {"content-length", "x-cache", "x-served-by"}
NOT_STORED = frozenset({"set-cookie"})
SERVER_ERRORS = frozenset({500, 502, 503, 504})
CONDITIONAL_OR_RANGE = (
    "Range",
    "If-None-Match",
    "If-Modified-Since",
    "If-Match",
    "If-Unmodified-Since",
)  # looked up case-insensitively
#: request fields that keep a request off the hit fast path (:meth:`Edge.fast_hit`): what the full path
#: decides on besides the target, and message framing the fast path does not read
NOT_FAST = frozenset(
    n.lower().encode()
    for n in (
        *CONDITIONAL_OR_RANGE,
        "If-Range",
        "Cache-Control",
        "Pragma",
        "Via",
        PEER_HEADER,
        "Content-Length",
        "Transfer-Encoding",
        "Expect",
        "Upgrade",
        "Connection",
    )
)


def asks_more(rh: Mapping[str, str]) -> bool:
    """Does the request ask for more than a fresh response (no-cache, max-age, min-fresh, Pragma)?"""
    cc = parse_cache_control(rh.get("Cache-Control"))
    return bool({"no-cache", "max-age", "min-fresh"} & cc.keys()) or (
        "Cache-Control" not in rh and rh.get("Pragma") == "no-cache"
    )


def connection_named(headers: Mapping[str, str]) -> frozenset[str]:
    """Lower-cased field names listed in ``Connection`` (RFC 9110 §7.6.1): hop-by-hop for this message."""
    names: set[str] = set()
    for k, v in headers.items():
        if k.lower() == "connection":
            names.update(t.strip().lower() for t in v.split(",") if t.strip())
    return frozenset(names)


def strip_fields(headers: Mapping[str, str]) -> tuple[CIMultiDict[str], CIMultiDict[str]]:
    """Split upstream headers into (storable, per-user) case-insensitive dicts, joining repeated fields;
    hop-by-hop fields and those named in ``Connection`` are dropped."""
    keep: CIMultiDict[str] = CIMultiDict()
    private: CIMultiDict[str] = CIMultiDict()
    named = connection_named(headers)
    for k, v in headers.items():
        lk = k.lower()
        if lk in DROP_RESPONSE or lk in named:
            continue
        target = private if lk in NOT_STORED else keep
        if lk in NOT_STORED:
            target.add(k, v)
        else:
            target[k] = f"{target[k]}, {v}" if k in target else v
    return keep, private
