"""The content provider's origin web server (the CDN's customer, lecture slides 9 and 18-20).

An aiohttp server publishing a deterministic synthetic :class:`~testbed.services.catalog.Catalog` with
per-class caching headers (``Cache-Control``, ``Expires``, ``ETag``, ``Last-Modified``; RFC 9111),
conditional GET (304, RFC 9110 §13), byte ranges (206/416, RFC 9110 §14), and the uncachable dynamic
content of lecture slide 8:

* ``GET /dyn/personal`` - personalised by the ``user`` cookie, ``Cache-Control: private``;
* ``GET /cgi/search?q=...`` - CGI-like result of the query string, ``no-store``;
* ``GET /dyn/ad`` - per-request random content and a hit counter (ads/analytics), ``no-store``;
* ``GET /dyn/stock`` - changing data, ``no-cache`` with an ETag (stored by caches, always revalidated);
* ``GET /dyn/lang`` - negotiated on ``Accept-Language``, ``Vary: Accept-Language``, ``max-age=60``.

HTML pages embed their assets with URLs rewritten to the CDN the way Akamai does (slide 19):
``http://cnn.com/af/x.gif`` becomes ``http://a73.g.akamai.net/7/23/cnn.com/af/x.gif``; here
``http://<cdn host>/<cdn_path_prefix>/<hostname><path>``, the CDN host picked per asset by rendezvous
hashing over ``cdn_hostnames``. With no ``cdn_hostnames`` pages link ``http://<hostname><path>``.

MPEG-DASH video is under ``/dash/<title>/`` (manifest, init and media segments; on demand and live), from
:mod:`testbed.services.video` (``OriginConfig.video``).

Control endpoints: ``GET /_origin/catalog`` (JSON list of path/size/class, and the video titles under
``video``), ``GET /_origin/stats``,
``GET /_origin/health``, ``POST /_origin/update/<path>`` (new version: new bytes, ETag, Last-Modified),
``POST /_origin/fault`` with ``{"status": 503}`` (answer every content request with that status;
``{"status": null}`` heals), ``POST /_origin/push`` with ``{"paths": [...]}`` or ``{"all": true}``
(multicast those objects to the edges, with their headers; needs the ``ingest`` section, see
:mod:`testbed.services.mcast.cdn`). With ``ingest`` configured, :meth:`Origin.update` also multicasts an
INVALIDATE of the path (``on_update: purge``) or the new version (``push``), so every edge drops its
stale copy within one RTT plus repair time. Nothing is read from disk, so path traversal cannot reach files; paths
with ``..``/``.`` segments, backslashes or NULs are refused with 400.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import sys
import time
from collections import Counter, OrderedDict
from typing import Any

from aiohttp import web
from pydantic import Field, field_validator

from testbed.services import admin, hashing
from testbed.services.base import service_main
from testbed.services.catalog import Catalog, CatalogConfig, CatalogObject
from testbed.services.daemon import Daemon, HttpReady
from testbed.services.freshness import (
    RangeNotSatisfiable,
    format_http_date,
    freshness_lifetime,
    not_modified,
    parse_cache_control,
    parse_range,
)
from testbed.services.limits import HttpLimitsConfig, LimitedSite
from testbed.services.mcast.cdn import OriginIngest, OriginIngestConfig
from testbed.services.video import PREFIX as VIDEO_PREFIX
from testbed.services.video import VideoConfig, VideoLibrary

log = logging.getLogger(__name__)

DEFAULT_CACHE_CONTROL = {
    "html": "public, max-age=30",
    "image": "public, max-age=3600",
    "js": "public, max-age=86400",
    "css": "public, max-age=86400",
    "video": "public, max-age=3600",
}


#: the control paths anyone may call: health for probes, the catalog (the list of objects) for clients
OPEN_PATHS = frozenset({"/_origin/health", "/_origin/catalog"})


#: the ``by_path`` key requests answered with these statuses are counted under (the stats' bound)
UNNAMED = {404: "(not found)", 400: "(bad path)"}

class OriginConfig(HttpLimitsConfig):
    """Config of one origin server (``python -m testbed.services.origin --config F``), with the limits
    every HTTP service keeps (:class:`testbed.services.limits.HttpLimitsConfig`)."""

    name: str = "origin"
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    #: the site's own host name, embedded in rewritten URLs (``cnn.com`` in the Akamai example)
    hostname: str = "origin.cdnlab.test"
    #: CDN host names assets are rewritten to (``a73.g.akamai.net``); empty: no rewriting
    cdn_hostnames: list[str] = Field(default_factory=list)
    #: path segments between the CDN host and the origin host name (``7/23`` in the Akamai example)
    cdn_path_prefix: str = "7/23"
    catalog: CatalogConfig = Field(default_factory=CatalogConfig)
    #: Cache-Control per object class (html, image, js, css, video); missing classes use the defaults
    cache_control: dict[str, str] = Field(default_factory=dict)
    #: ``CDN-Cache-Control`` per object class (RFC 9213): the edges' lifetime apart from the browsers'
    cdn_cache_control: dict[str, str] = Field(default_factory=dict)
    #: also send an HTTP/1.0 ``Expires`` for objects with a max-age
    send_expires: bool = True
    #: max bytes of request line / one header field (longer -> 400)
    max_field_size: int = Field(8190, ge=256)
    #: multicast ingest sender: POST /_origin/push, and updates multicast as invalidations (or pushes)
    ingest: OriginIngestConfig | None = None
    #: MPEG-DASH titles under ``/dash/`` (:mod:`testbed.services.video`)
    video: VideoConfig = Field(default_factory=VideoConfig)
    #: bytes of generated object bodies kept for reuse, least recently used out first (0: none kept);
    #: generating costs about 2.7 ms per MB
    body_memo_bytes: int = Field(4 * 2**20, ge=0)

    @field_validator("cache_control", "cdn_cache_control")
    @classmethod
    def _check_classes(cls, v: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(v) - set(DEFAULT_CACHE_CONTROL))
        if unknown:
            raise ValueError(f"unknown object classes {unknown}; known: {sorted(DEFAULT_CACHE_CONTROL)}")
        return v


def _ranged(request: web.Request, body: bytes, headers: dict[str, str], validators: tuple[str, ...]) -> web.Response:
    """200 with ``body``, or 206/416 for a single byte range (RFC 9110 §14), honouring ``If-Range`` when it
    names one of ``validators`` (the ETag, the Last-Modified date)."""
    rng_hdr = request.headers.get("Range")
    if_range = request.headers.get("If-Range")
    if rng_hdr and (if_range is None or if_range in validators):
        try:
            r = parse_range(rng_hdr, len(body))
        except RangeNotSatisfiable:
            headers["Content-Range"] = f"bytes */{len(body)}"
            return web.Response(status=416, headers=headers)
        if r is not None:
            first, last = r
            headers["Content-Range"] = f"bytes {first}-{last}/{len(body)}"
            return web.Response(status=206, body=body[first : last + 1], headers=headers)
    return web.Response(body=body, headers=headers)


def _bad_path(raw_path: str, path: str) -> bool:
    low = raw_path.lower()
    if "\\" in path or "\x00" in path or "%00" in low or "%5c" in low:
        return True
    for p in (path, raw_path.replace("%2e", ".").replace("%2E", ".").replace("%2f", "/").replace("%2F", "/")):
        if any(seg in ("..", ".") for seg in p.split("/")):
            return True
    return False


class Origin:
    """The origin's state and aiohttp application; :meth:`start`/:meth:`close` run it in the current loop."""

    def __init__(self, cfg: OriginConfig) -> None:
        self.cfg = cfg
        self.catalog = Catalog(cfg.catalog)
        self.video = VideoLibrary(cfg.video)
        self.versions: dict[str, int] = {}
        self.mtimes: dict[str, float] = {}
        self.requests = 0
        self.by_path: Counter[str] = Counter()
        self.by_status: Counter[int] = Counter()
        self.bytes_sent = 0
        self.ad_counter = 0
        self.control_refused = 0  # control requests without the management token (403)
        self.limits: Counter[str] = Counter()  # refusals by the HTTP limits (limits.py)
        self.fault_status: int | None = None
        #: generated bodies by (path, version), least recently used first; their bytes in _memo_bytes
        self._bodies: OrderedDict[tuple[str, int], bytes] = OrderedDict()
        self._memo_bytes = 0
        self._rng = random.Random()
        self.runner: web.AppRunner | None = None
        self.port = 0
        self.ingest: OriginIngest | None = OriginIngest(cfg.ingest) if cfg.ingest else None
        self._mcast_stop = asyncio.Event()
        self._mcast_task: asyncio.Task | None = None
        self.app = self._make_app()

    # ---- application -------------------------------------------------------------------------------
    def _make_app(self) -> web.Application:
        app = web.Application(
            middlewares=[admin.guard(self.cfg.admin_token, "/_origin/", OPEN_PATHS, self._count_refused)]
        )
        app.router.add_get("/_origin/catalog", self._h_catalog)
        app.router.add_get("/_origin/stats", self._h_stats)
        app.router.add_get("/_origin/health", self._h_health)
        app.router.add_post("/_origin/update/{path:.*}", self._h_update)
        app.router.add_post("/_origin/fault", self._h_fault)
        app.router.add_post("/_origin/push", self._h_push)
        app.router.add_route("*", "/{tail:.*}", self._h_content)
        return app

    async def start(self) -> int:
        self.runner = web.AppRunner(
            self.app,
            access_log=None,
            max_field_size=self.cfg.max_field_size,
            max_line_size=self.cfg.max_field_size,
            **self.cfg.parser_limits(),
        )
        await self.runner.setup()
        site = LimitedSite(
            self.runner, self.cfg.host, self.cfg.port, limits=self.cfg, counters=self.limits, reuse_address=True
        )
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        log.info("origin %s listening on %s:%d", self.cfg.name, self.cfg.host, self.port)
        if self.ingest is not None:
            self._mcast_stop.clear()
            self._mcast_task = asyncio.create_task(self.ingest.run(self._mcast_stop))
        return self.port

    @property
    def url(self) -> str:
        return f"http://{self.cfg.host}:{self.port}"

    async def close(self) -> None:
        if self._mcast_task is not None:
            self._mcast_stop.set()
            await asyncio.wait([self._mcast_task], timeout=5)
            self._mcast_task = None
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    # ---- objects -----------------------------------------------------------------------------------
    def version(self, path: str) -> int:
        return self.versions.get(path, 0)

    def mtime(self, obj: CatalogObject) -> float:
        return self.mtimes.get(obj.path, self.catalog.base_mtime(obj))

    def update(self, path: str) -> dict[str, Any]:
        """Publish a new version of ``path`` (a catalog object or ``/dyn/stock``)."""
        v = self.version(path) + 1
        self.versions[path] = v
        obj = self.catalog.get(path)
        if obj is not None:
            # Last-Modified has one-second resolution: make sure the new version's date is later
            self.mtimes[path] = float(max(int(time.time()), int(self.mtime(obj)) + 1))
            out = {"path": path, "version": v, "etag": self.catalog.etag(obj, v)}
        else:
            out = {"path": path, "version": v}
        if self.ingest is not None and self.ingest.cfg.on_update != "none":
            if self.ingest.cfg.on_update == "push" and obj is not None:
                out["multicast"] = {"pushed": self.push_object(obj)}
            else:
                out["multicast"] = {"inval_id": self.ingest.invalidate([path])}
        return out

    def push_object(self, obj: CatalogObject) -> int:
        """Multicast the current version of ``obj`` with its headers; returns the object id."""
        assert self.ingest is not None
        return self.ingest.push(obj.path, self.body(obj), 200, self._headers(obj))

    def cdn_url(self, path: str) -> str:
        """The URL a page uses for an embedded asset (Akamai-style rewriting when CDN hosts are set)."""
        hosts = self.cfg.cdn_hostnames
        if not hosts:
            return f"http://{self.cfg.hostname}{path}"
        host = hashing.home(path, hosts)
        prefix = self.cfg.cdn_path_prefix.strip("/")
        prefix = f"/{prefix}" if prefix else ""
        return f"http://{host}{prefix}/{self.cfg.hostname}{path}"

    def body(self, obj: CatalogObject) -> bytes:
        v = self.version(obj.path)
        key = (obj.path, v)
        b = self._bodies.get(key)
        if b is not None:
            self._bodies.move_to_end(key)
            return b
        b = self._html(obj, v) if obj.cls == "html" else self.catalog.body(obj, v)
        cap = self.cfg.body_memo_bytes
        if len(b) <= cap:  # a memory bound, not a count: objects go up to the catalog's max_bytes
            while self._memo_bytes + len(b) > cap:
                self._memo_bytes -= len(self._bodies.popitem(last=False)[1])
            self._bodies[key] = b
            self._memo_bytes += len(b)
        return b

    def _html(self, obj: CatalogObject, version: int) -> bytes:
        lines = [
            "<!doctype html>",
            f"<html><head><title>{obj.path} v{version}</title>",
        ]
        for a in self.catalog.html_assets(obj):
            url = self.cdn_url(a.path)
            if a.cls == "css":
                lines.append(f'<link rel="stylesheet" href="{url}">')
            elif a.cls == "js":
                lines.append(f'<script src="{url}"></script>')
            elif a.cls == "video":
                lines.append(f'<video src="{url}"></video>')
            else:
                lines.append(f'<img src="{url}">')
        lines.append(f"</head><body><p>page {obj.index} version {version}</p></body></html>")
        text = "\n".join(lines) + "\n"
        pad = obj.size - len(text.encode()) - 9
        if pad > 0:
            text += "<!--" + "x" * pad + "-->\n"
        return text.encode()

    def _headers(self, obj: CatalogObject) -> dict[str, str]:
        cc = self.cfg.cache_control.get(obj.cls, DEFAULT_CACHE_CONTROL[obj.cls])
        h = {
            "Content-Type": obj.content_type,
            "Cache-Control": cc,
            "ETag": self.catalog.etag(obj, self.version(obj.path)),
            "Last-Modified": format_http_date(self.mtime(obj)),
            "Date": format_http_date(),
            "Accept-Ranges": "bytes",
        }
        if self.cfg.send_expires and "max-age" in parse_cache_control(cc):
            h["Expires"] = format_http_date(time.time() + freshness_lifetime(h, shared=False))
        if obj.cls in self.cfg.cdn_cache_control:
            h["CDN-Cache-Control"] = self.cfg.cdn_cache_control[obj.cls]
        return h

    # ---- handlers ----------------------------------------------------------------------------------
    def _count(self, path: str, resp: web.Response) -> web.Response:
        self.requests += 1
        # a path that names nothing (404) or is malformed (400) is counted under its status, not by name: a
        # client asking random paths would otherwise grow the counter (and the stats answer) without bound
        self.by_path[UNNAMED.get(resp.status, path)] += 1
        self.by_status[resp.status] += 1
        if resp.body is not None and isinstance(resp.body, bytes | bytearray):
            self.bytes_sent += len(resp.body)
        return resp

    async def _h_content(self, request: web.Request) -> web.Response:
        path = request.path
        if _bad_path(request.raw_path.split("?", 1)[0], path):
            return self._count(path, web.Response(status=400, text="bad path\n"))
        if request.method not in ("GET", "HEAD"):
            return self._count(path, web.Response(status=405, headers={"Allow": "GET, HEAD"}))
        if self.fault_status is not None:
            return self._count(
                path,
                web.Response(
                    status=self.fault_status, text="injected fault\n", headers={"Cache-Control": "no-store"}
                ),
            )
        obj = self.catalog.get(path)
        if obj is not None:
            return self._count(path, self._static(request, obj))
        if path.startswith(VIDEO_PREFIX + "/"):
            vf = self.video.lookup(path)
            if vf is not None:
                return self._count(path, self._video(request, vf))
        handler = _DYNAMIC.get(path)
        if handler is not None:
            return self._count(path, handler(self, request))
        return self._count(
            path, web.Response(status=404, text="not found\n", headers={"Cache-Control": "max-age=10"})
        )

    def _static(self, request: web.Request, obj: CatalogObject) -> web.Response:
        headers = self._headers(obj)
        if not_modified(request.headers, headers["ETag"], self.mtime(obj)):
            return web.Response(status=304, headers=headers)
        return _ranged(request, self.body(obj), headers, (headers["ETag"], headers["Last-Modified"]))

    def _video(self, request: web.Request, vf: Any) -> web.Response:
        """A DASH manifest or segment (:class:`testbed.services.video.VideoFile`) with conditional GET and
        byte ranges as for static objects; a missing live segment is its 404 (``no-store``)."""
        headers = dict(vf.headers, Date=format_http_date())
        if vf.status != 200:
            return web.Response(status=vf.status, body=vf.body, headers=headers)
        headers["Accept-Ranges"] = "bytes"
        if not_modified(request.headers, headers["ETag"], None):
            return web.Response(status=304, headers=headers)
        return _ranged(request, vf.body, headers, (headers["ETag"],))

    def _personal(self, request: web.Request) -> web.Response:
        user = request.cookies.get("user", "anonymous")
        return web.Response(
            text=f"<html><body>Hello, {user}!</body></html>\n",
            content_type="text/html",
            headers={"Cache-Control": "private, max-age=60", "Date": format_http_date()},
        )

    def _search(self, request: web.Request) -> web.Response:
        q = request.query.get("q", "")
        return web.Response(
            text=json.dumps({"q": q, "results": [f"{q}-{i}" for i in range(3)]}) + "\n",
            content_type="application/json",
            headers={"Cache-Control": "no-store", "Date": format_http_date()},
        )

    def _ad(self, request: web.Request) -> web.Response:
        self.ad_counter += 1
        token = f"{self._rng.getrandbits(64):016x}"
        return web.Response(
            text=f"ad impression {self.ad_counter} token {token}\n",
            headers={"Cache-Control": "no-store", "Date": format_http_date()},
        )

    def _stock(self, request: web.Request) -> web.Response:
        v = self.version("/dyn/stock")
        etag = f'"stock-v{v}"'
        headers = {"Cache-Control": "no-cache", "ETag": etag, "Date": format_http_date()}
        if not_modified(request.headers, etag, None):
            return web.Response(status=304, headers=headers)
        return web.Response(text=f"ACME {100 + v}.00 version {v}\n", headers=headers)

    def _lang(self, request: web.Request) -> web.Response:
        lang = request.headers.get("Accept-Language", "en").split(",")[0].strip().lower()[:2] or "en"
        greeting = {"fr": "Bonjour", "de": "Hallo", "es": "Hola"}.get(lang, "Hello")
        return web.Response(
            text=f"{greeting} ({lang})\n",
            headers={
                "Cache-Control": "public, max-age=60",
                "Vary": "Accept-Language",
                "Content-Language": lang,
                "Date": format_http_date(),
            },
        )

    async def _h_catalog(self, request: web.Request) -> web.Response:
        objs = [{"path": o.path, "size": o.size, "class": o.cls} for o in self.catalog.objects]
        return web.json_response(
            {"hostname": self.cfg.hostname, "objects": objs, "dynamic": DYNAMIC_PATHS, "video": self.video.describe()}
        )

    def _count_refused(self) -> None:
        self.control_refused += 1

    async def _h_stats(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "name": self.cfg.name,
                "control_refused": self.control_refused,
                "refused_connections": self.limits["refused_connections"],  # over max_connections: 503
                "refused_headers": self.limits["refused_headers"],  # over the header limits: 431
                "timed_out_headers": self.limits["timed_out_headers"],  # slow header section: 408
                "requests": self.requests,
                "by_path": dict(self.by_path),
                "by_status": {str(k): v for k, v in self.by_status.items()},
                "bytes_sent": self.bytes_sent,
                "ad_impressions": self.ad_counter,
                "fault_status": self.fault_status,
                "ingest": self.ingest.stats() if self.ingest else None,
            }
        )

    async def _h_health(self, request: web.Request) -> web.Response:
        return web.json_response({"name": self.cfg.name, "ok": True})

    async def _h_update(self, request: web.Request) -> web.Response:
        path = "/" + request.match_info["path"].lstrip("/")
        if _bad_path(path, path):
            return web.json_response({"error": "bad path"}, status=400)
        if self.catalog.get(path) is None and path != "/dyn/stock":
            return web.json_response({"error": f"no object {path}"}, status=404)
        return web.json_response(self.update(path))

    async def _h_push(self, request: web.Request) -> web.Response:
        if self.ingest is None:
            return web.json_response(
                {"error": "multicast ingest is not configured (no 'ingest' section)"}, status=409
            )
        try:
            data = await request.json()
            if not isinstance(data, dict) or set(data) - {"paths", "all"}:
                raise ValueError('expected {"paths": [...]} or {"all": true}')
            if data.get("all") is True:
                paths = [o.path for o in self.catalog.objects]
            else:
                paths = data.get("paths")
                if not isinstance(paths, list) or not paths or not all(isinstance(p, str) for p in paths):
                    raise ValueError("'paths' must be a non-empty list of strings (or use {\"all\": true})")
        except ValueError as e:  # json.JSONDecodeError is a ValueError
            return web.json_response({"error": f"bad push request: {e}"}, status=400)
        pushed, unknown = [], []
        for p in paths:
            obj = self.catalog.get(p)
            if obj is None:
                unknown.append(p)
                continue
            pushed.append({"path": p, "object_id": self.push_object(obj), "size": obj.size})
        return web.json_response({"pushed": pushed, "unknown": unknown}, status=200 if pushed else 404)

    async def _h_fault(self, request: web.Request) -> web.Response:
        try:
            data = await request.json()
            status = data.get("status")
            if status is not None and not (isinstance(status, int) and 400 <= status <= 599):
                raise ValueError("status must be an integer 400..599 or null")
        except (ValueError, AttributeError) as e:
            return web.json_response({"error": f"bad fault request: {e}"}, status=400)
        self.fault_status = status
        return web.json_response({"fault_status": status})


#: the dynamic paths and how a cache must treat them (listed by ``GET /_origin/catalog`` under ``dynamic``)
DYNAMIC_PATHS = [
    {"path": "/dyn/personal", "cache_control": "private", "what": "personalised by the user cookie"},
    {"path": "/cgi/search?q=cdn", "cache_control": "no-store", "what": "the result of a query"},
    {"path": "/dyn/ad", "cache_control": "no-store", "what": "random content and a hit counter"},
    {"path": "/dyn/stock", "cache_control": "no-cache (ETag)", "what": "changing data, always revalidated"},
    {"path": "/dyn/lang", "cache_control": "max-age=60, Vary: Accept-Language", "what": "negotiated language"},
]

_DYNAMIC = {
    "/dyn/personal": Origin._personal,
    "/cgi/search": Origin._search,
    "/dyn/ad": Origin._ad,
    "/dyn/stock": Origin._stock,
    "/dyn/lang": Origin._lang,
}


async def serve(cfg: OriginConfig, stop: asyncio.Event) -> None:
    """Run the cdnlab origin server until ``stop`` is set."""
    origin = Origin(cfg)
    await origin.start()
    try:
        await stop.wait()
    finally:
        await origin.close()


#: this service to the launcher (:mod:`testbed.services.daemon`):
#: the origin needs nothing else
DAEMON = Daemon(
    role="origin", module="testbed.services.origin", config=OriginConfig, ready=HttpReady("/_origin/health")
)


def main(argv: list[str] | None = None) -> int:
    return service_main(OriginConfig, serve, argv, prog="python -m testbed.services.origin")


if __name__ == "__main__":
    sys.exit(main())
