"""The edge's cache core: keys, storing, freshness and revalidation (RFC 9111), partial content, hits
(the full path and the fast path's prebuilt answers), misses with collapsing, unsafe methods.

The lab ``http-caching`` replaces this module's ``freshness_lifetime``, ``current_age``,
``is_storable`` and ``needs_revalidation`` with the student's.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from urllib.parse import urljoin, urlsplit

import aiohttp
from aiohttp import web
from aiohttp.http import SERVER_SOFTWARE
from multidict import CIMultiDict

from testbed.services.edge.entry import Entry, Fetched, UpstreamError
from testbed.services.edge.fields import (
    CONDITIONAL_OR_RANGE,
    ENTITY_TAG,
    NOT_FAST,
    PARTS,
    PEER_HEADER,
    SAFE_METHODS,
    SERVER_ERRORS,
    asks_more,
    strip_fields,
)
from testbed.services.freshness import (
    RangeNotSatisfiable,
    current_age,
    format_http_date,
    freshness_lifetime,
    has_explicit_freshness,
    heuristic_lifetime,
    is_storable,
    needs_revalidation,
    not_modified,
    omitted_fields,
    parse_cache_control,
    parse_http_date,
    parse_range,
    policy_headers,
    precondition_failed,
    stale_if_error_window,
    stale_while_revalidate_window,
    vary_key,
    vary_names,
)
from testbed.services.partial import PartialObject, parse_content_range, parse_range_spec, resolve, validator

log = logging.getLogger("testbed.services.edge")


class CacheCore:
    """The cache half of :class:`testbed.services.edge.server.Edge` (a mixin: the state is the Edge's)."""

    # ---- the cache -----------------------------------------------------------------------------------
    def map_path(self, path: str) -> str:
        """Akamai-style ``/<anything>/<origin host>/<path>`` -> ``/<path>``; other paths unchanged."""
        for m in self._markers:
            i = path.find(m)
            if i >= 0:
                return path[i + len(m) - 1 :]
        return path

    def cache_key(self, target: str) -> str | None:
        """The primary cache key of a request target: the mapped origin path (still percent-encoded) plus
        the query. Absolute-form targets (``http://host/path``, sent to forward proxies) use their path."""
        if not target.startswith("/"):
            if not target.lower().startswith("http://"):
                return None
            slash = target.find("/", 7)
            target = target[slash:] if slash >= 0 else "/"
        path, sep, qs = target.partition("?")
        path = self.map_path(path)
        return f"{path}?{qs}" if sep and qs else path

    def _policy(self, headers: Mapping[str, str]) -> Mapping[str, str]:
        """The headers this edge decides with: its targeted field in place of Cache-Control (RFC 9213)."""
        return policy_headers(headers, self.targets) if self.targets else headers

    def _make_entry(
        self, status: int, headers: Mapping[str, str], body: bytes, req_t: float, resp_t: float
    ) -> Entry:
        initial_age = current_age(headers, req_t, resp_t, resp_t)
        omit = omitted_fields(self._policy(headers)) | {"age"}  # Age is recomputed per hit
        headers = CIMultiDict((k, v) for k, v in headers.items() if k.lower() not in omit)
        policy = self._policy(headers)
        cc = parse_cache_control(policy.get("Cache-Control"))
        size = len(body) + sum(len(k) + len(v) + 4 for k, v in headers.items())
        lifetime = freshness_lifetime(policy)
        heuristic = False
        if not has_explicit_freshness(policy):
            h = heuristic_lifetime(status, policy, self.cfg.heuristic_fraction, resp_t)
            heuristic, lifetime = h > 0, max(lifetime, h)
        return Entry(
            status,
            headers,
            body,
            resp_t,
            initial_age,
            lifetime,
            "no-cache" in cc and not cc["no-cache"],
            stale_if_error_window(policy, self.cfg.stale_if_error_s),
            size,
            policy,
            heuristic,
            stale_while_revalidate_window(policy),
        )

    def _store(
        self, key: str, skey: tuple[str, tuple[str, ...]], entry: Entry, names: tuple[str, ...]
    ) -> None:
        old = self.vary.get(key)
        if old is not None and old != names:  # the variant set changed: drop the old variants
            self._remove_key(key)
        self.vary[key] = names
        self.store.remove((key, PARTS))  # a complete response makes stored parts useless
        self.store.put(skey, entry, entry.size)

    def _remove_key(self, key: str) -> bool:
        removed = False
        for sk in [k for k in self.store.keys() if k[0] == key]:
            removed |= self.store.remove(sk)
        self.vary.pop(key, None)
        return removed

    def purge(self, path: str) -> bool:
        """Remove every stored variant of ``path`` (an origin path, optionally with query)."""
        removed = self._remove_key(self.map_path(path))
        if removed:
            self.counters["purged"] += 1
        return removed

    def admit(self, path: str, status: int, headers: Mapping[str, str], body: bytes) -> None:
        """Store a response pushed to this edge (e.g. by multicast ingestion) as a fresh entry."""
        key = self.map_path(path)
        hdrs, _ = strip_fields(headers)
        if not has_explicit_freshness(hdrs):
            hdrs["Cache-Control"] = ", ".join(
                filter(None, [hdrs.get("Cache-Control"), f"max-age={self.cfg.admit_ttl_s}"])
            )
        now = time.time()
        hdrs.setdefault("Date", format_http_date(now))
        names = vary_names(hdrs)
        if names is None:
            return
        self._store(
            key, (key, vary_key(names, {})), self._make_entry(status, hdrs, bytes(body), now, now), names
        )
        self.counters["admitted"] += 1

    # ---- responses ---------------------------------------------------------------------------------
    def _respond(
        self,
        request: web.BaseRequest,
        entry: Entry | Fetched,
        xcache: str,
        age: float | None,
        extra: Mapping[str, str] | None = None,
    ) -> web.StreamResponse:
        headers = entry.headers.copy()
        for t in self.targets:  # RFC 9213: the targeted field is for this edge only
            headers.popall(t, None)
        if extra:
            headers.update(extra)
        headers["Via"] = f"{headers['Via']}, {self.via}" if "Via" in headers else self.via
        headers["X-Cache"] = xcache
        headers["X-Served-By"] = self.name
        if age is not None:
            headers["Age"] = str(int(age))
        status, body = entry.status, entry.body
        rh = request.headers
        if status == 200 and ("If-Match" in rh or "If-Unmodified-Since" in rh):
            lm = parse_http_date(headers.get("Last-Modified"))
            if precondition_failed(rh, headers.get("ETag"), lm):
                return web.Response(status=412, headers=headers)
        if status == 200 and ("If-None-Match" in rh or "If-Modified-Since" in rh):
            # RFC 9111 §4.3.2: Last-Modified, else Date, else when the response was received
            lm = parse_http_date(headers.get("Last-Modified")) or parse_http_date(headers.get("Date"))
            if lm is None and isinstance(entry, Entry):
                lm = entry.response_time
            if not_modified(rh, headers.get("ETag"), lm):
                return web.Response(status=304, headers=headers)
        if status == 200 and "Range" in rh:
            try:
                r = parse_range(rh["Range"], len(body))
            except RangeNotSatisfiable:
                headers["Content-Range"] = f"bytes */{len(body)}"
                return web.Response(status=416, headers=headers)
            if r is not None:
                headers["Content-Range"] = f"bytes {r[0]}-{r[1]}/{len(body)}"
                return web.Response(status=206, body=body[r[0] : r[1] + 1], headers=headers)
        return web.Response(status=status, body=body, headers=headers)

    def _hit_headers(self, entry: Entry) -> CIMultiDict[str]:
        """The response fields of a plain hit on ``entry`` but Age (built once per entry)."""
        h = entry.hit_headers
        if h is None:
            h = entry.hit_headers = entry.headers.copy()
            for t in self.targets:
                h.popall(t, None)
            h["Via"] = f"{h['Via']}, {self.via}" if "Via" in h else self.via
            h["X-Cache"] = "HIT"
            h["X-Served-By"] = self.name
        return h

    def _plain_hit(self, entry: Entry, age: float) -> web.Response:
        """The hot path: a whole stored 200 with no conditional or Range in the request."""
        resp = web.Response(body=entry.body, headers=self._hit_headers(entry))  # aiohttp copies the headers
        resp.headers["Age"] = str(int(age))
        return resp

    def fast_hit(self, target: str, names: frozenset[bytes]) -> bytes | None:
        """The fast path's answer (:mod:`testbed.services.hit_path`) to a plain ``GET target`` with fields
        ``names``: the whole response, byte for byte what :meth:`_plain_hit` answers through aiohttp, when
        the full path would answer that too (a fresh stored 200 without Vary, nothing conditional, no
        ``Cache-Control``/``Pragma``, no peer or ``Via``); else None, and the full path takes it."""
        if not names.isdisjoint(NOT_FAST):
            return None
        key = self._fast_keys.get(target, "")
        if key == "":  # each distinct target's key is made once (a bounded memo)
            if len(self._fast_keys) >= 4096:
                self._fast_keys.clear()
            key = self._fast_keys[target] = None if target.startswith("/_cdn/") else self.cache_key(target)
        if key is None or self.vary.get(key):
            return None
        skey = (key, ())
        entry: Entry | None = self.store.peek(skey)
        if entry is None or entry.status != 200 or entry.no_cache:
            return None
        now = time.time()
        age = entry.age(now)
        if age >= entry.lifetime:
            return None
        self.store.get(skey)  # the eviction policy counts the use, as on the full path
        self._count(key, "hits", len(entry.body))
        self.counters["fast_hits"] += 1
        head = entry.hit_head
        if head is None:
            head = entry.hit_head = self._hit_head(entry)
        second = int(now)
        if self._date[0] != second:
            self._date = (second, f"Date: {format_http_date(second)}\r\n".encode())
        return b"".join(
            (
                head,
                b"Age: %d\r\n" % int(age),
                b"" if entry.hit_has_date else self._date[1],
                b"\r\n",
                entry.body,
            )
        )

    def _hit_head(self, entry: Entry) -> bytes:
        """Status line and fields of a plain hit as aiohttp writes them (it adds Content-Type when there is a
        body, Content-Length, Date unless stored, Server), but Age and Date, which change per request."""
        h = self._hit_headers(entry).copy()
        h.popall("Age", None)
        if entry.body:
            h.setdefault("Content-Type", "application/octet-stream")
        h["Content-Length"] = str(len(entry.body))
        h.setdefault("Server", SERVER_SOFTWARE)
        entry.hit_has_date = "Date" in h
        lines = ["HTTP/1.1 200 OK", *(f"{k}: {v}" for k, v in h.items())]
        return ("\r\n".join(lines) + "\r\n").encode("utf-8")

    def _count(self, key: str, what: str, bytes_from_cache: int = 0) -> None:
        self.counters[what] += 1
        self.per_object[key][what] += 1
        if bytes_from_cache:
            self.counters["bytes_from_cache"] += bytes_from_cache

    async def _h_proxy(self, request: web.BaseRequest) -> web.StreamResponse:
        method = request.method
        key = self.cache_key(request.raw_path)
        if key is None:
            return web.Response(status=400, text="bad request target\n")
        if method == "PURGE":
            if (refused := self._refused(request, "PURGE")) is not None:
                return refused
            ok = self.purge(key)
            return web.json_response({"path": key, "purged": ok}, status=200 if ok else 404)
        if method not in ("GET", "HEAD"):
            return await self._pass_through(request, key)
        rh = request.headers
        peer = PEER_HEADER in rh
        if peer:
            self.counters["peer_requests_received"] += 1
        loop_seen = self.via in rh.get("Via", "")
        names = self.vary.get(key, ())
        skey = (key, vary_key(names, rh) if names else ())
        entry: Entry | None = self.store.get(skey)
        now = time.time()
        cooperative = not peer and not loop_seen
        if entry is not None:
            age = entry.age(now)
            if "Cache-Control" in rh or "Pragma" in rh:
                stale = needs_revalidation(entry.policy, age, rh)
                if entry.heuristic and stale and age < entry.lifetime and not asks_more(rh):
                    stale = False  # fresh by heuristics, and the request asks nothing stricter
                only_if_cached = "only-if-cached" in parse_cache_control(rh.get("Cache-Control"))
            else:
                stale = entry.no_cache or age >= entry.lifetime
                only_if_cached = False
            if not stale:
                self._count(key, "hits", len(entry.body))
                if entry.status == 200 and not any(h in rh for h in CONDITIONAL_OR_RANGE):
                    return self._plain_hit(entry, age)
                return self._respond(request, entry, "HIT", age)
            if entry.swr > 0 and age - entry.lifetime <= entry.swr and not asks_more(rh):
                # RFC 5861 §3: serve it stale now, revalidate once in the background
                self._refresh_in_background(key, skey, entry, rh)
                self._count(key, "stale", len(entry.body))
                return self._respond(request, entry, "STALE", age)
            if only_if_cached:
                return web.Response(status=504, text="not cached (only-if-cached)\n")
            return await self._revalidate_collapsed(request, key, skey, entry, names)
        if "only-if-cached" in parse_cache_control(rh.get("Cache-Control")):
            return web.Response(status=504, text="not cached (only-if-cached)\n")
        if method == "GET" and self.cfg.range_requests == "parts" and "Range" in rh and not names:
            spec = parse_range_spec(rh["Range"])
            if spec is not None and "If-Range" not in rh:
                return await self._partial(request, key, skey, spec)
        return await self._miss(request, key, skey, cooperative)

    async def _partial(
        self,
        request: web.BaseRequest,
        key: str,
        skey: tuple[str, tuple[str, ...]],
        spec: tuple[int | None, int | None],
    ) -> web.StreamResponse:
        """A Range request with no complete stored response (RFC 9111 §3.3-3.4): answered from stored parts
        when they hold the range and are fresh, else the range goes upstream and a 206 is stored as a part
        (combined with the stored ones when the strong validators match; whole parts become a complete
        response)."""
        rh = request.headers
        pkey = (key, PARTS)
        now = time.time()
        p: PartialObject | None = self.store.get(pkey)
        if p is not None:
            policy = self._policy(p.headers)
            age = current_age(p.headers, p.response_time, p.response_time, now)
            r = resolve(spec, p.total)
            if r is not None and p.covers(*r) and not needs_revalidation(policy, age, rh):
                self._count(key, "hits", r[1] - r[0] + 1)
                headers = CIMultiDict(p.headers)
                for t in self.targets:
                    headers.popall(t, None)
                headers["Content-Range"] = f"bytes {r[0]}-{r[1]}/{p.total}"
                headers["Via"] = f"{headers['Via']}, {self.via}" if "Via" in headers else self.via
                headers["X-Cache"] = "HIT"
                headers["X-Served-By"] = self.name
                headers["Age"] = str(int(age))
                return web.Response(status=206, body=p.slice(*r), headers=headers)
        base = self.cfg.parent_url or self.cfg.origin_url
        source = "parent" if self.cfg.parent_url else "origin"
        try:
            f = await self._get(base + key, self._fwd(rh, {"Range": rh["Range"]}), source)
        except UpstreamError as e:
            self.counters["upstream_errors"] += 1
            return web.Response(status=502, text=f"upstream failed: {e}\n")
        self._count(key, "misses")
        names = vary_names(f.headers)
        if f.status == 206 and names == ():
            self._store_part(key, p, f, rh)
        elif f.status == 200 and names is not None and is_storable("GET", 200, rh, self._policy(f.headers)):
            # the upstream ignored the Range: store the whole response, answer the range from it
            entry = self._make_entry(200, f.headers, f.body, f.request_time, f.response_time)
            self._store(key, (key, vary_key(names, rh) if names else ()), entry, names)
        age = current_age(f.headers, f.request_time, f.response_time, time.time())
        return self._respond(request, f, "MISS", age, f.extra)

    def _store_part(self, key: str, p: PartialObject | None, f: Fetched, rh: Mapping[str, str]) -> None:
        cr = parse_content_range(f.headers.get("Content-Range"))
        if cr is None or cr[2] is None or len(f.body) != cr[1] - cr[0] + 1:
            return  # no complete length, or a body that does not match its range: not stored
        if not is_storable("GET", 200, rh, self._policy(f.headers)):
            return
        headers = {k: v for k, v in f.headers.items() if k.lower() not in ("content-range", "age")}
        v = validator(f.headers.get("ETag"), f.headers.get("Last-Modified"))
        if p is None or v is None or p.validator != v or p.total != cr[2]:
            p = PartialObject(cr[2], v, headers, f.response_time)  # another representation: start over
        else:
            p.headers, p.response_time = headers, f.response_time
        p.add(cr[0], f.body)
        whole = p.complete()
        if whole is not None:  # RFC 9111 §3.4: the parts make the whole response
            entry = self._make_entry(200, headers, whole, f.request_time, f.response_time)
            self._store(key, (key, ()), entry, ())
            self.counters["parts_combined"] += 1
            return
        size = p.size + sum(len(k) + len(v) + 4 for k, v in headers.items())
        self.store.put((key, PARTS), p, size)

    async def _miss(
        self, request: web.BaseRequest, key: str, skey: tuple[str, tuple[str, ...]], cooperative: bool
    ) -> web.StreamResponse:
        rh = request.headers
        fut = self.inflight.get(skey)
        if fut is not None:  # request collapsing: wait for the fetch already under way
            self.counters["collapsed"] += 1
            try:
                f, leader_rh = await asyncio.shield(fut)
            except UpstreamError as e:
                return web.Response(status=502, text=f"upstream failed: {e}\n")
            names = vary_names(f.headers)
            if (
                names is not None
                and is_storable("GET", f.status, rh, self._policy(f.headers))
                and vary_key(names, rh) == vary_key(names, leader_rh)
            ):
                self._count(key, "misses")
                age = current_age(f.headers, f.request_time, f.response_time, time.time())
                return self._respond(request, f, "MISS", age)
            # not shareable (private, no-store, another variant): fetch for this client alone
        fut = asyncio.get_running_loop().create_future()
        fut.add_done_callback(lambda f: f.exception())  # followers may be gone; never "unretrieved"
        self.inflight[skey] = fut
        try:
            try:
                f = await self._fetch(key, rh, cooperative)
            except UpstreamError as e:
                fut.set_exception(e)
                self.counters["upstream_errors"] += 1
                return web.Response(status=502, text=f"upstream failed: {e}\n")
            fut.set_result((f, rh))
        finally:
            if self.inflight.get(skey) is fut:
                del self.inflight[skey]
        self._count(key, "misses")
        names = vary_names(f.headers)
        if names is not None and is_storable("GET", f.status, rh, self._policy(f.headers)):
            entry = self._make_entry(f.status, f.headers, f.body, f.request_time, f.response_time)
            vkey = (key, vary_key(names, rh) if names else ())
            self._store(key, vkey, entry, names)
        else:
            self.counters["uncachable"] += 1
        age = current_age(f.headers, f.request_time, f.response_time, time.time())
        return self._respond(request, f, "MISS", age, f.extra)

    async def _revalidate_collapsed(
        self,
        request: web.BaseRequest,
        key: str,
        skey: tuple[str, tuple[str, ...]],
        entry: Entry,
        names: tuple[str, ...],
    ) -> web.StreamResponse:
        """Concurrent requests for one stale entry wait for a single revalidation, then use its result."""
        running = self.revalidating.get(skey)
        if running is not None:
            self.counters["collapsed"] += 1
            await running.wait()
            fresh = self.store.get(skey)
            now = time.time()
            if fresh is not None and not fresh.no_cache and fresh.age(now) < fresh.lifetime:
                self._count(key, "hits", len(fresh.body))
                return self._respond(request, fresh, "HIT", fresh.age(now))
            return await self._revalidate(request, key, skey, fresh or entry, names)
        done = self.revalidating[skey] = asyncio.Event()
        try:
            return await self._revalidate(request, key, skey, entry, names)
        finally:
            done.set()
            del self.revalidating[skey]

    async def _revalidate(
        self,
        request: web.BaseRequest,
        key: str,
        skey: tuple[str, tuple[str, ...]],
        entry: Entry,
        names: tuple[str, ...],
    ) -> web.StreamResponse:
        rh = request.headers
        try:
            f = await self._conditional_get(key, entry, rh)
        except UpstreamError as e:
            f = None
            err = str(e)
        if f is None or f.status in SERVER_ERRORS:
            now = time.time()
            age = entry.age(now)
            if entry.sie > 0 and age - entry.lifetime <= entry.sie:
                self._count(key, "stale", len(entry.body))
                return self._respond(request, entry, "STALE", age)
            if f is None:
                self.counters["upstream_errors"] += 1
                return web.Response(status=502, text=f"upstream failed: {err}\n")
            self._count(key, "misses")
            return self._respond(request, f, "MISS", None)
        new = self._update_from(key, skey, entry, f, rh)
        if f.status == 304 and new is not None:
            self._count(key, "revalidated", len(entry.body))
            return self._respond(request, new, "REVALIDATED", new.age(time.time()), f.extra)
        self._count(key, "misses")
        return self._respond(
            request, f, "MISS", current_age(f.headers, f.request_time, f.response_time, time.time()), f.extra
        )

    async def _conditional_get(self, key: str, entry: Entry, rh: Mapping[str, str]) -> Fetched:
        """Ask the parent or origin whether ``entry`` is still current (RFC 9111 §4.3.1)."""
        cond: dict[str, str] = {}
        etag = entry.headers.get("ETag", "").strip()
        if ENTITY_TAG.fullmatch(etag):  # RFC 9110 §8.8.3: only a well-formed entity-tag is a validator
            cond["If-None-Match"] = etag
        lm = entry.headers.get("Last-Modified")
        if lm is not None and parse_http_date(lm) is not None:
            cond["If-Modified-Since"] = lm
        base = self.cfg.parent_url or self.cfg.origin_url
        source = "parent" if self.cfg.parent_url else "origin"
        return await self._get(base + key, self._fwd(rh, cond), source)

    def _update_from(
        self, key: str, skey: tuple[str, tuple[str, ...]], entry: Entry, f: Fetched, rh: Mapping[str, str]
    ) -> Entry | None:
        """The store after a validation answer: a 304 updates the stored headers (RFC 9111 §3.2, §4.3.4;
        its Set-Cookie is in ``f.extra``, relayed but never stored), a storable answer replaces the entry,
        anything else removes it. Returns the entry now stored for the answer, if any."""
        if f.status == 304:
            headers = entry.headers.copy()
            headers.update(f.headers)
            new = self._make_entry(entry.status, headers, entry.body, f.request_time, f.response_time)
            self.store.replace_value(skey, new)
            return new
        new_names = vary_names(f.headers)
        if new_names is not None and is_storable("GET", f.status, rh, self._policy(f.headers)):
            e = self._make_entry(f.status, f.headers, f.body, f.request_time, f.response_time)
            self._store(key, (key, vary_key(new_names, rh) if new_names else ()), e, new_names)
            return e
        self.store.remove(skey)
        return None

    def _refresh_in_background(
        self, key: str, skey: tuple[str, tuple[str, ...]], entry: Entry, rh: Mapping[str, str]
    ) -> None:
        """One background revalidation per stored response (RFC 5861 §3); later requests in the window
        keep getting the stale copy until it lands."""
        if skey in self.revalidating:
            return
        done = self.revalidating[skey] = asyncio.Event()
        headers = CIMultiDict(rh)

        async def run() -> None:
            try:
                f = await self._conditional_get(key, entry, headers)
                if f.status not in SERVER_ERRORS:
                    self._update_from(key, skey, entry, f, headers)
            except UpstreamError as e:
                self.counters["upstream_errors"] += 1
                log.info("background revalidation of %s failed: %s", key, e)
            finally:
                done.set()
                if self.revalidating.get(skey) is done:
                    del self.revalidating[skey]

        self.counters["background_revalidations"] += 1
        task = asyncio.create_task(run())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _pass_through(self, request: web.BaseRequest, key: str) -> web.StreamResponse:
        """Other methods go to the origin uncached; a non-error answer to an unsafe one invalidates the
        target URI and same-origin ``Location``/``Content-Location`` URIs (RFC 9111 §4.4)."""
        assert self.session is not None
        body = await request.read()
        headers = self._fwd(request.headers, cached=False)
        try:
            async with self.session.request(
                request.method, self.cfg.origin_url + key, headers=headers, data=body, allow_redirects=False
            ) as r:
                rbody = await r.read()
                keep, private = strip_fields(r.headers)
                status = r.status
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            return web.Response(status=502, text=f"upstream failed: {e}\n")
        if 200 <= status < 400 and request.method not in SAFE_METHODS:
            self._remove_key(key)
            for field in ("Location", "Content-Location"):
                other = self._same_origin_key(request, keep.get(field))
                if other is not None:
                    self._remove_key(other)
        self.counters["passed_through"] += 1
        keep.update(private)
        for t in self.targets:
            keep.popall(t, None)
        keep["Via"] = self.via
        keep["X-Served-By"] = self.name
        keep["X-Cache"] = "MISS"
        return web.Response(status=status, body=rbody, headers=keep)

    def _same_origin_key(self, request: web.BaseRequest, ref: str | None) -> str | None:
        """The cache key of a URI reference in a response when it is same-origin (this edge's or the
        origin's authority, RFC 9111 §4.4); None otherwise."""
        if not ref:
            return None
        u = urlsplit(urljoin(f"http://{request.host}{request.path}", ref.strip()))
        if u.scheme != "http" or u.netloc.lower() not in (request.host.lower(), self._origin_netloc):
            return None
        return self.cache_key((u.path or "/") + (f"?{u.query}" if u.query else ""))
