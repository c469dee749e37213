"""HTTP field rules the services share (RFC 9110): which fields belong to one connection only."""

from __future__ import annotations

#: hop-by-hop fields (RFC 9110 §7.6.1), never forwarded in either direction; fields named in a message's
#: ``Connection`` are hop-by-hop too
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
