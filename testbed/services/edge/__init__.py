"""A CDN edge cache: a caching reverse proxy with HTTP caching semantics (RFC 9111) and cache cooperation.

Caching (RFC 9111, shared cache, rules in :mod:`testbed.services.freshness`): freshness from
``s-maxage``/``max-age``/``Expires``, else heuristic freshness (§4.2.2, ``heuristic_fraction`` of the time
since ``Last-Modified``); any final status with explicit freshness is stored; ``no-store`` and unqualified
``private`` are never stored, qualified ``no-cache="f"``/``private="f"`` store the response without those
fields; ``no-cache`` is stored and revalidated on every use; stale entries are revalidated with
``If-None-Match``/``If-Modified-Since`` and a 304 refreshes the stored headers (§3.2, §4.3.4); ``Age`` is
computed per §4.2.3; ``Vary`` selects a stored variant (secondary key); request ``max-age``, ``min-fresh``,
``max-stale``, ``no-cache``, ``only-if-cached`` (504) and ``Pragma: no-cache`` are honoured (§5.2.1).
Partial content (RFC 9111 §3.3-3.4, ``range_requests: parts``, the default): a Range request that misses
goes upstream with its range, and the 206 is stored as a part (:mod:`testbed.services.partial`); later
ranges inside the stored parts are served from them, and parts of one representation (equal strong
validators) that cover the object become a complete stored response. ``range_requests: whole`` fetches
the whole object on a Range miss instead (nginx's way). Targeted cache control (RFC 9213): the first of ``targeted_fields`` present (default
``Cdnlab-Cache-Control``, then ``CDN-Cache-Control``) replaces ``Cache-Control`` and ``Expires`` for this
edge, and is removed from what the edge sends downstream.

Forwarding (RFC 9110 §7.6): every end-to-end request field goes upstream; hop-by-hop fields and the fields
named in ``Connection`` are removed in both directions. On the cached path the edge makes its own
conditional and range requests, so the client's ``Range``/``If-*`` fields are answered from the stored
object, not forwarded. A response that depends on a request field must say so with ``Vary``; the cache key
honours it (that is the defence against cache poisoning through unkeyed fields). Unsafe methods pass
through, and a non-error answer invalidates the target URI and same-origin ``Location`` and
``Content-Location`` URIs (RFC 9111 §4.4).
Concurrent misses for one object are collapsed into one upstream fetch. ``stale-if-error`` (RFC 5861)
serves a stale copy (``X-Cache: STALE``) when the upstream is unreachable or answers 5xx.

Responses carry ``X-Cache: HIT|MISS|REVALIDATED|STALE``, ``X-Served-By: <name>``, ``Via`` and ``Age``.

Cooperation on a local miss (lecture slides 7 and 20):

1. inside a cluster, the object's *home* member by rendezvous hashing (:mod:`testbed.services.hashing`)
   over ``cluster`` is asked over HTTP, with ``X-CDN-Peer: <name>`` so the home does not forward again;
2. ``siblings`` are asked with ICPv2 (:mod:`testbed.services.icp`, RFC 2186) with ``icp_timeout_ms``;
   on ``ICP_OP_HIT`` the object is fetched from that sibling (``Cache-Control: only-if-cached``);
3. a ``parent_url`` cache, when configured, is asked before
4. the origin.

A request whose ``Via`` already names this edge skips steps 1-3 (loop protection).

Akamai-style URLs (slide 19): a request path ``/<anything>/<origin host>/<path>`` whose segments include
one of the origin's host names (``origin_hostnames``, plus the host of ``origin_url``) maps to
``/<path>``: e.g. ``/7/23/origin.cdnlab.test/img/x.jpg`` -> ``/img/x.jpg``. The first such segment wins.

Control endpoints: ``GET /_cdn/health``, ``GET /_cdn/stats``, ``POST /_cdn/purge`` with
``{"paths": [...]}``, and the ``PURGE`` method on any path.

Multicast (:mod:`testbed.services.mcast.cdn`): ``ingest`` makes the edge the receiver's object sink
(pushes -> :meth:`Edge.admit`, INVALIDATEs -> :meth:`Edge.purge`); ``control`` multicasts load HEARTBEATs.

Limits (:mod:`testbed.services.limits`): a connection over ``max_connections`` gets a complete 503 with
``Retry-After`` and is closed; a request with more than ``max_header_count`` fields or ``max_header_bytes``
bytes of them gets 431 (RFC 6585 §5); both are counted in the stats, and the edge keeps serving.
"""

from testbed.services.edge.config import ClusterMember, EdgeConfig, Sibling
from testbed.services.edge.entry import Entry, Fetched, UpstreamError
from testbed.services.edge.fields import PEER_HEADER
from testbed.services.edge.server import DAEMON, Edge, main, serve

__all__ = [
    "DAEMON",
    "PEER_HEADER",
    "ClusterMember",
    "Edge",
    "EdgeConfig",
    "Entry",
    "Fetched",
    "Sibling",
    "UpstreamError",
    "main",
    "serve",
]
