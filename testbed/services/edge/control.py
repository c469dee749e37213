"""The edge's request dispatch and control endpoints: ``/_cdn/health``, ``/_cdn/stats``,
``/_cdn/purge`` and ``PURGE`` (behind the run's management token, :mod:`testbed.services.admin`).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web

from testbed.services import admin
from testbed.services.interim import SINK as INTERIM_SINK
from testbed.services.interim import InterimRelay
from testbed.services.mcast.cdn import (
    publisher_stats,
)

log = logging.getLogger("testbed.services.edge")


class ControlEndpoints:
    """Dispatch and control endpoints of :class:`testbed.services.edge.server.Edge` (a mixin)."""

    # ---- request handling ----------------------------------------------------------------------------
    async def _dispatch(self, request: web.BaseRequest) -> web.StreamResponse:
        path = request.path
        if path.startswith("/_cdn/"):
            handler = self._control.get((request.method, path))
            if handler is not None:
                if path != "/_cdn/health" and (refused := self._refused(request, path)) is not None:
                    return refused
                return await handler(request)
            if path in ("/_cdn/health", "/_cdn/stats", "/_cdn/purge"):
                return web.Response(status=405, text="method not allowed\n")
        relay = InterimRelay(request, self.counters)  # upstream 1xx go to this client as they come
        token = INTERIM_SINK.set(relay)
        try:
            return await self._h_proxy(request)
        finally:
            relay.close()
            INTERIM_SINK.reset(token)

    def _refused(self, request: web.BaseRequest, what: str) -> web.Response | None:
        """The 403 for a control request without the run's management token (None: allowed)."""
        refused = admin.check(request, self.cfg.admin_token, what)
        if refused is not None:
            self.counters["control_refused"] += 1
        return refused

    # ---- control endpoints ---------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        c = self.counters
        return {
            "name": self.name,
            "hits": c["hits"],
            "fast_hits": c["fast_hits"],  # of the hits, those answered on the fast path (hit_path.py)
            "interim_relayed": c["interim_relayed"],  # upstream 1xx (103 Early Hints...) sent on (interim.py)
            "misses": c["misses"],
            "revalidated": c["revalidated"],
            "stale": c["stale"],
            "parts_combined": c["parts_combined"],
            "background_revalidations": c["background_revalidations"],
            "collapsed": c["collapsed"],
            "uncachable": c["uncachable"],
            "upstream_errors": c["upstream_errors"],
            "bytes_from_cache": c["bytes_from_cache"],
            "bytes_from_origin": c["bytes_from_origin"],
            "bytes_from_peers": c["bytes_from_peers"],
            "fetches": {k[len("fetches_from_") :]: v for k, v in c.items() if k.startswith("fetches_from_")},
            "inter_cache": {
                "peer_fetches": c["peer_fetches"],
                "peer_requests_received": c["peer_requests_received"],
                "sibling_fetches": c["sibling_fetches"],
                "icp_client": self.icp_client.stats() if self.icp_client else {},
                "icp_server": self.icp_server.stats() if self.icp_server else {},
            },
            "purged": c["purged"],
            "admitted": c["admitted"],
            "refused_connections": c["refused_connections"],  # over max_connections: 503 (limits.py)
            "refused_headers": c["refused_headers"],  # over max_header_count/max_header_bytes: 431
            "timed_out_headers": c["timed_out_headers"],  # no whole header section in header_timeout_s: 408
            "control_refused": c["control_refused"],  # control requests without the management token: 403
            "ingest": self.ingest.stats() if self.ingest else None,
            "control": publisher_stats(self.publisher, self._mcast_failures) if self.publisher else None,
            "objects": {k: dict(v) for k, v in self.per_object.items()},
            "store": {
                "bytes_used": self.store.used_bytes,
                "capacity_bytes": self.store.capacity_bytes,
                "objects": len(self.store),
                "evictions": self.store.evictions,
                "policy": self.cfg.eviction,
            },
        }

    async def _h_health(self, request: web.BaseRequest) -> web.Response:
        return web.json_response({"name": self.name, "ok": True})

    async def _h_stats(self, request: web.BaseRequest) -> web.Response:
        return web.json_response(self.stats())

    async def _h_purge(self, request: web.BaseRequest) -> web.Response:
        try:
            data = await request.json()
            paths = data["paths"]
            if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
                raise ValueError("'paths' must be a list of strings")
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            return web.json_response({"error": f'expected {{"paths": [...]}}: {e}'}, status=400)
        purged = [p for p in paths if self.purge(p)]
        return web.json_response({"purged": purged, "not_found": [p for p in paths if p not in purged]})
