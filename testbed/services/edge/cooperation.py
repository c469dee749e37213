"""Cooperation on a miss (lecture slides 7 and 20): the cluster home by rendezvous hashing, ICP
siblings (RFC 2186), a parent cache, then the origin; and answering siblings' ICP queries.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from urllib.parse import urlsplit

import aiohttp
from multidict import CIMultiDict

from testbed.services import hashing
from testbed.services.edge.entry import Fetched, UpstreamError
from testbed.services.edge.fields import (
    ANSWERED_HERE,
    NOT_FORWARDED,
    PEER_HEADER,
    SERVER_ERRORS,
    connection_named,
    strip_fields,
)
from testbed.services.freshness import (
    vary_key,
)

log = logging.getLogger("testbed.services.edge")


class Cooperation:
    """The miss path of :class:`testbed.services.edge.server.Edge` (a mixin: the state is the Edge's)."""

    def origin_unreachable(self) -> bool:
        """True for 5 s after the origin could not be reached: ICP answers MISS_NOFETCH (RFC 2186 §2.1)."""
        return time.time() - self._origin_failed_at < 5.0

    def icp_lookup(self, url: str) -> bool:
        """ICP HIT when a fresh copy of the URL's path is stored."""
        parts = urlsplit(url)
        key = self.map_path(parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        names = self.vary.get(key)
        if names is None:
            return False
        now = time.time()
        for sk in (
            [(key, vary_key(names, {}))] if not names else [k for k in self.store.keys() if k[0] == key]
        ):
            e = self.store.peek(sk)
            if e is not None and not e.no_cache and e.age(now) < e.lifetime:
                return True
        return False

    def _fwd(
        self, rh: Mapping[str, str], extra: Mapping[str, str] | None = None, cached: bool = True
    ) -> CIMultiDict[str]:
        """The request fields sent upstream (RFC 9110 §7.6): every end-to-end field the client sent, minus
        hop-by-hop ones and those named in ``Connection``; on the ``cached`` path also minus the client's
        ``Range``/``If-*`` fields, which the edge answers itself from the whole object."""
        named = connection_named(rh)
        h: CIMultiDict[str] = CIMultiDict()
        for k, v in rh.items():
            lk = k.lower()
            if lk in NOT_FORWARDED or lk in named or (cached and lk in ANSWERED_HERE):
                continue
            h.add(k, v)
        via = ", ".join(v for k, v in rh.items() if k.lower() == "via")
        h["Via"] = f"{via}, {self.via}" if via else self.via
        if extra:
            h.update(extra)
        return h

    async def _get(self, url: str, headers: Mapping[str, str], source: str) -> Fetched:
        assert self.session is not None
        t0 = time.time()
        try:
            async with self.session.get(url, headers=headers, allow_redirects=False) as r:
                body = await r.read()
                keep, private = strip_fields(r.headers)
                status = r.status
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            if source == "origin":
                self._origin_failed_at = time.time()
            raise UpstreamError(f"{source} {url}: {e.__class__.__name__}: {e}") from None
        t1 = time.time()
        self.counters[f"fetches_from_{source}"] += 1
        self.counters["bytes_from_origin" if source in ("origin", "parent") else "bytes_from_peers"] += len(
            body
        )
        return Fetched(status, keep, body, t0, t1, source, private or None)

    async def _fetch(self, key: str, rh: Mapping[str, str], cooperative: bool) -> Fetched:
        """The miss path: cluster home, ICP siblings, parent, origin (lecture slides 7 and 20)."""
        fwd = self._fwd(rh)
        if cooperative and self.members:
            home = hashing.home(key, self.members)
            if home is not None and home != self.name and home in self.member_urls:
                self.counters["peer_fetches"] += 1
                try:
                    peer_h = fwd.copy()
                    peer_h[PEER_HEADER] = self.name
                    f = await self._get(self.member_urls[home] + key, peer_h, "peer")
                    if f.status not in SERVER_ERRORS:
                        return f
                except UpstreamError as e:
                    log.info("home %s unavailable: %s", home, e)
        if cooperative and self.icp_client is not None:
            addrs = {(s.icp_host, s.icp_port): s for s in self.cfg.siblings}
            hit = await self.icp_client.query(
                self.cfg.origin_url + key, list(addrs), self.cfg.icp_timeout_ms / 1000
            )
            if hit is not None:
                sib = addrs.get(hit) or next((s for s in self.cfg.siblings if s.icp_port == hit[1]), None)
                if sib is not None:
                    self.counters["sibling_fetches"] += 1
                    headers = fwd.copy()
                    headers[PEER_HEADER] = self.name
                    headers["Cache-Control"] = "only-if-cached"
                    try:
                        f = await self._get(sib.http_url.rstrip("/") + key, headers, "sibling")
                        if f.status == 200:
                            return f
                    except UpstreamError as e:
                        log.info("sibling %s unavailable: %s", sib.name, e)
        if self.cfg.parent_url and cooperative:
            try:
                f = await self._get(self.cfg.parent_url + key, fwd, "parent")
                if f.status not in SERVER_ERRORS:
                    return f
            except UpstreamError as e:
                log.info("parent unavailable: %s", e)
        return await self._get(self.cfg.origin_url + key, fwd, "origin")
