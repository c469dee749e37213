"""The origin server: deterministic catalog, caching headers, 304, ranges, dynamic content, rewriting, update."""

from __future__ import annotations

import subprocess
import sys

import pytest
from cdn_helpers import raw_http, start_origin, status_of

from testbed.services.catalog import Catalog, CatalogConfig
from testbed.services.freshness import parse_http_date


@pytest.fixture
async def origin():
    o = await start_origin(cdn_hostnames=["a73.g.cdnlab.test", "a74.g.cdnlab.test"])
    yield o
    await o.close()


def first(o, cls):
    return next(x for x in o.catalog.objects if x.cls == cls)


def test_catalog_is_deterministic_and_seeded():
    a, b = Catalog(CatalogConfig(seed=3, objects=50)), Catalog(CatalogConfig(seed=3, objects=50))
    assert a.objects == b.objects
    assert a.body(a.objects[5]) == b.body(b.objects[5])
    assert a.body(a.objects[5], 1) != a.body(a.objects[5], 0)
    c = Catalog(CatalogConfig(seed=4, objects=50))
    assert [o.size for o in c.objects] != [o.size for o in a.objects]
    assert {o.cls for o in a.objects} == {"html", "image", "js", "css", "video"}
    p = Catalog(
        CatalogConfig(seed=3, objects=300, size_distribution="pareto", min_bytes=500, max_bytes=10_000)
    )
    assert all(500 <= o.size <= 10_000 for o in p.objects)
    f = Catalog(
        CatalogConfig(objects=10, size_distribution="fixed", fixed_bytes=1024, class_weights={"image": 1})
    )
    assert {o.size for o in f.objects} == {1024} and {o.cls for o in f.objects} == {"image"}


async def test_catalog_endpoint_and_static_headers(origin, http):
    async with http.get(origin.url + "/_origin/catalog") as r:
        data = await r.json()
    assert len(data["objects"]) == len(origin.catalog)
    obj = data["objects"][0]
    assert set(obj) == {"path", "size", "class"}
    # the dynamic paths are listed too, and each answers with the Cache-Control the list promises
    assert {d["path"].split("?")[0] for d in data["dynamic"]} == {"/dyn/personal", "/cgi/search", "/dyn/ad",
                                                                  "/dyn/stock", "/dyn/lang"}
    for d in data["dynamic"]:
        async with http.get(origin.url + d["path"], cookies={"user": "ann"}) as r:
            assert r.status == 200, d
            assert d["cache_control"].split(" (")[0].split(",")[0] in r.headers["Cache-Control"], (d, r.headers)
    img = first(origin, "image")
    async with http.get(origin.url + img.path) as r:
        body = await r.read()
        assert r.status == 200 and len(body) == img.size
        assert r.headers["Cache-Control"] == "public, max-age=3600"
        assert r.headers["ETag"].startswith('"') and r.headers["Last-Modified"] and r.headers["Expires"]
        assert r.headers["Content-Type"] == "image/jpeg"


async def test_conditional_get_304(origin, http):
    js = first(origin, "js")
    async with http.get(origin.url + js.path) as r:
        etag, lm = r.headers["ETag"], r.headers["Last-Modified"]
    async with http.get(origin.url + js.path, headers={"If-None-Match": etag}) as r:
        assert r.status == 304 and await r.read() == b""
    async with http.get(origin.url + js.path, headers={"If-Modified-Since": lm}) as r:
        assert r.status == 304
    async with http.get(origin.url + js.path, headers={"If-None-Match": '"other"'}) as r:
        assert r.status == 200


async def test_range_requests_on_video(origin, http):
    v = first(origin, "video")
    full = origin.catalog.body(v)
    async with http.get(origin.url + v.path, headers={"Range": "bytes=10-19"}) as r:
        assert r.status == 206 and await r.read() == full[10:20]
        assert r.headers["Content-Range"] == f"bytes 10-19/{v.size}"
    async with http.get(origin.url + v.path, headers={"Range": "bytes=-5"}) as r:
        assert r.status == 206 and await r.read() == full[-5:]
    async with http.get(origin.url + v.path, headers={"Range": f"bytes={v.size}-"}) as r:
        assert r.status == 416 and r.headers["Content-Range"] == f"bytes */{v.size}"


async def test_dynamic_uncachable_endpoints(origin, http):
    async with http.get(origin.url + "/dyn/personal", headers={"Cookie": "user=alice"}) as r:
        assert "alice" in await r.text() and "private" in r.headers["Cache-Control"]
    async with http.get(origin.url + "/cgi/search?q=cdn") as r:
        assert (await r.json())["q"] == "cdn" and r.headers["Cache-Control"] == "no-store"
    bodies = set()
    for _ in range(3):
        async with http.get(origin.url + "/dyn/ad") as r:
            bodies.add(await r.text())
            assert r.headers["Cache-Control"] == "no-store"
    assert len(bodies) == 3
    async with http.get(origin.url + "/dyn/stock") as r:
        assert r.headers["Cache-Control"] == "no-cache" and r.headers["ETag"]
    async with http.get(origin.url + "/dyn/lang", headers={"Accept-Language": "fr"}) as r:
        assert "Bonjour" in await r.text() and r.headers["Vary"] == "Accept-Language"


async def test_html_assets_rewritten_akamai_style(origin, http):
    page = first(origin, "html")
    async with http.get(origin.url + page.path) as r:
        html = await r.text()
    assets = origin.catalog.html_assets(page)
    assert assets
    for a in assets:
        assert f"/7/23/origin.cdnlab.test{a.path}" in html
    assert (
        "http://a73.g.cdnlab.test/7/23/origin.cdnlab.test/" in html
        or "http://a74.g.cdnlab.test/7/23/" in html
    )
    assert len(html.encode()) >= page.size - 10


async def test_update_changes_version(origin, http):
    img = first(origin, "image")
    async with http.get(origin.url + img.path) as r:
        etag, lm, body = r.headers["ETag"], r.headers["Last-Modified"], await r.read()
    async with http.post(origin.url + "/_origin/update" + img.path) as r:
        assert r.status == 200 and (await r.json())["version"] == 1
    async with http.get(origin.url + img.path, headers={"If-None-Match": etag}) as r:
        assert r.status == 200
        assert r.headers["ETag"] != etag
        assert parse_http_date(r.headers["Last-Modified"]) > parse_http_date(lm)
        assert await r.read() != body
    async with http.post(origin.url + "/_origin/update/no/such/thing") as r:
        assert r.status == 404


async def test_random_paths_do_not_grow_the_per_path_counter(origin, http):
    """A client asking paths that name nothing is counted under "(not found)", not by each name."""
    for i in range(50):
        async with http.get(f"{origin.url}/no/such/object-{i}") as r:
            assert r.status == 404
    async with http.get(origin.url + "/_origin/stats") as r:
        st = await r.json()
    assert st["by_path"] == {"(not found)": 50} and st["by_status"]["404"] == 50


async def test_stats_and_fault_injection(origin, http):
    img = first(origin, "image")
    for _ in range(2):
        async with http.get(origin.url + img.path) as r:
            await r.read()
    async with http.post(origin.url + "/_origin/fault", json={"status": 503}) as r:
        assert r.status == 200
    async with http.get(origin.url + img.path) as r:
        assert r.status == 503
    async with http.post(origin.url + "/_origin/fault", json={"status": "x"}) as r:
        assert r.status == 400
    async with http.post(origin.url + "/_origin/fault", json={"status": None}) as r:
        assert r.status == 200
    async with http.get(origin.url + "/_origin/stats") as r:
        st = await r.json()
    assert st["by_path"][img.path] == 3 and st["requests"] == 3 and st["by_status"]["503"] == 1
    # control requests are not content requests: reading the stats again counts nothing (the selection
    # experiment takes the difference of two stats reads as the origin's load, with nothing to subtract)
    for ep in ("/_origin/stats", "/_origin/catalog", "/_origin/health"):
        async with http.get(origin.url + ep) as r:
            await r.read()
    async with http.get(origin.url + "/_origin/stats") as r:
        assert (await r.json())["requests"] == 3


@pytest.mark.parametrize(
    "target",
    [
        b"/../../etc/passwd",
        b"/%2e%2e/%2e%2e/etc/passwd",
        b"/img/..%2f..%2f..%2fetc%2fpasswd",
        b"/img/%2e%2e/%2e%2e/etc/passwd",
        b"/..\\..\\etc\\passwd",
        b"/etc/passwd%00.jpg",
    ],
)
async def test_path_traversal_rejected(origin, http, target):
    raw = await raw_http(origin.port, b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status_of(raw) in (400, 404), raw[:200]
    assert b"root:" not in raw
    img = first(origin, "image")
    async with http.get(origin.url + img.path) as r:
        assert r.status == 200


def test_origin_bad_config_exits_2(tmp_path):
    cfg = tmp_path / "origin.yaml"
    cfg.write_text("port: 0\ncatalog:\n  objects: -1\n")
    p = subprocess.run(
        [sys.executable, "-m", "testbed.services.origin", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert p.returncode == 2
    assert "catalog.objects" in p.stderr and str(cfg) in p.stderr


def test_the_body_memo_is_bounded_by_bytes_and_keeps_the_recently_used() -> None:
    """Generated bodies are kept up to ``body_memo_bytes`` (a count bound let 1025 bodies of up to
    ``max_bytes`` each pile up: gigabytes), least recently used out first, and are the same bytes either way."""
    from testbed.services.origin import Origin, OriginConfig

    cap = 200_000
    o = Origin(OriginConfig(port=0, body_memo_bytes=cap, catalog=CatalogConfig(objects=300, seed=3)))
    objs = [x for x in o.catalog.objects if x.cls != "html"]
    small = [x for x in objs if x.size <= cap // 4]
    for x in objs:
        assert o.body(x) == o.catalog.body(x, 0)
        assert o._memo_bytes == sum(len(b) for b in o._bodies.values()) <= cap
    keep = small[0]
    for x in small[1:]:  # keep is used between all the others: never the least recently used
        o.body(keep)
        o.body(x)
    assert (keep.path, 0) in o._bodies
    none = Origin(OriginConfig(port=0, body_memo_bytes=0, catalog=CatalogConfig(objects=10, seed=3)))
    assert none.body(none.catalog.objects[1]) and not none._bodies
