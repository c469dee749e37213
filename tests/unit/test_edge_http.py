"""The edge as a standards-conformant HTTP cache, against a scripted origin on loopback.

Forwarding (RFC 9110 §7.6), invalidation (RFC 9111 §4.4), storable statuses and heuristic freshness (§3,
§4.2.2), parsing exactly as specified (§1.2.2, §5.1, §5.3), request directives (§5.2.1), targeted cache
control (RFC 9213), qualified private/no-cache (§5.2.2.4, §5.2.2.7) and 304 updates (§3.2, §4.3.4).
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest
from aiohttp import web
from cdn_helpers import raw_http, start_edge, status_of

from testbed.services.edge import EdgeConfig
from testbed.services.freshness import format_http_date


@pytest.fixture
async def edge(up):
    e = await start_edge(up.url, name="edge-h")
    yield e
    await e.close()


async def get(http, url, **kw):
    async with http.get(url, **kw) as r:
        return r.status, r.headers, await r.read()


def fixed(text="x", status=200, **headers):
    return lambda r: web.Response(text=text, status=status, headers=headers)


# ---- forwarding (RFC 9110 §7.6) -------------------------------------------------------------------------


async def test_end_to_end_request_fields_are_forwarded_hop_by_hop_are_not(up, edge):
    up.routes["/f"] = fixed(**{"Cache-Control": "max-age=60"})
    raw = (
        b"GET /f HTTP/1.1\r\nHost: x\r\nConnection: close, X-Secret\r\nX-Secret: s\r\nKeep-Alive: 5\r\n"
        b"TE: trailers\r\nProxy-Authorization: Basic eA==\r\nX-Custom: c\r\nX-Custom: d\r\n"
        b"Prefer: return=minimal\r\n\r\n"
    )
    assert status_of(await raw_http(edge.port, raw)) == 200
    seen = {k.lower(): v for k, v in up.seen[0].items()}
    assert seen["prefer"] == "return=minimal" and seen["x-custom"] in ("c", "c, d", "c,d")
    for gone in ("x-secret", "keep-alive", "te", "proxy-authorization", "x-cdn-peer"):
        assert gone not in seen, gone
    assert "edge-h (cdnlab)" in seen["via"]


async def test_edge_adds_no_request_fields_the_client_did_not_send(up, edge):
    up.routes["/plain"] = fixed(**{"Cache-Control": "max-age=60"})
    async with aiohttp.ClientSession(skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent")) as s:
        await get(s, edge.url + "/plain")
    seen = {k.lower() for k in up.seen[0]}
    assert not seen & {"accept-encoding", "accept", "user-agent"}


async def test_client_range_and_conditionals_are_answered_here_not_forwarded(up, http):
    edge = await start_edge(up.url, name="whole", range_requests="whole")
    up.routes["/obj"] = fixed("0123456789", **{"Cache-Control": "max-age=60", "ETag": '"v1"'})
    try:
        s, h, b = await get(http, edge.url + "/obj", headers={"Range": "bytes=2-4", "If-None-Match": '"zz"'})
        assert (s, b) == (206, b"234")
        assert not {"range", "if-none-match"} & {k.lower() for k in up.seen[0]}
        s, h, _ = await get(http, edge.url + "/obj", headers={"If-None-Match": '"v1"'})
        assert s == 304 and h["X-Cache"] == "HIT" and up.hits["/obj"] == 1
    finally:
        await edge.close()


# ---- partial content (RFC 9111 §3.3-3.4, RFC 9110 §14) --------------------------------------------------


def ranged(body: bytes, etag: str | None = '"r1"', cc: str = "max-age=600"):
    """An origin that honours single byte ranges of ``body`` (as a real one does)."""

    def handler(r):
        headers = {"Cache-Control": cc}
        if etag:
            headers["ETag"] = etag
        rng = r.headers.get("Range")
        if rng is None:
            return web.Response(body=body, headers=headers)
        first, _, last = rng.removeprefix("bytes=").partition("-")
        if first == "":
            a, b = len(body) - int(last), len(body) - 1
        else:
            a, b = int(first), min(int(last), len(body) - 1) if last else len(body) - 1
        headers["Content-Range"] = f"bytes {a}-{b}/{len(body)}"
        return web.Response(status=206, body=body[a : b + 1], headers=headers)

    return handler


async def test_a_range_miss_is_forwarded_stored_as_a_part_and_reused(up, edge, http):
    body = bytes(range(200)) * 5
    up.routes["/v"] = ranged(body)
    s, h, b = await get(http, edge.url + "/v", headers={"Range": "bytes=100-299"})
    assert (s, h["X-Cache"], b) == (206, "MISS", body[100:300]) and up.seen[0]["Range"] == "bytes=100-299"
    for rng, want in (("bytes=150-199", body[150:200]), ("bytes=100-299", body[100:300])):
        s, h, b = await get(http, edge.url + "/v", headers={"Range": rng})
        assert (s, h["X-Cache"], b) == (206, "HIT", want), rng
        assert h["Content-Range"] == f"bytes {rng[6:]}/1000"
    s, h, _ = await get(http, edge.url + "/v", headers={"Range": "bytes=900-"})  # not held: forwarded
    assert (s, h["X-Cache"]) == (206, "MISS") and up.hits["/v"] == 2


async def test_parts_that_cover_the_object_become_a_complete_response(up, edge, http):
    body = b"abcdefghij" * 10
    up.routes["/c"] = ranged(body)
    for rng in ("bytes=0-49", "bytes=50-"):
        await get(http, edge.url + "/c", headers={"Range": rng})
    s, h, b = await get(http, edge.url + "/c")
    assert (s, h["X-Cache"], b) == (200, "HIT", body) and up.hits["/c"] == 2
    assert edge.stats()["parts_combined"] == 1


async def test_parts_of_another_representation_or_without_strong_validator_do_not_combine(up, edge, http):
    body = b"0123456789" * 10
    up.routes["/w"] = ranged(body, etag='W/"weak"')
    for rng in ("bytes=0-49", "bytes=50-"):
        await get(http, edge.url + "/w", headers={"Range": rng})
    assert (await get(http, edge.url + "/w"))[1]["X-Cache"] == "MISS"  # weak tags never combine
    up.routes["/x"] = ranged(body, etag='"v1"')
    await get(http, edge.url + "/x", headers={"Range": "bytes=0-49"})
    up.routes["/x"] = ranged(body.upper() + b"!", etag='"v2"')  # changed meanwhile
    await get(http, edge.url + "/x", headers={"Range": "bytes=50-"})
    s, h, b = await get(http, edge.url + "/x", headers={"Range": "bytes=0-9"})
    assert h["X-Cache"] == "MISS"  # the v1 part was dropped for the v2 one
    assert edge.stats()["parts_combined"] == 0


async def test_response_hop_by_hop_and_connection_named_fields_are_removed(up, edge, http):
    def resp(r):
        res = web.Response(
            text="y", headers={"Cache-Control": "max-age=60", "X-Internal": "1", "X-Kept": "2"}
        )
        res.headers["Connection"] = "X-Internal"
        return res

    up.routes["/r"] = resp
    for want in ("MISS", "HIT"):
        _, h, _ = await get(http, edge.url + "/r")
        assert h["X-Cache"] == want and h["X-Kept"] == "2" and "X-Internal" not in h


async def test_unsafe_methods_forward_their_conditionals_and_body(up, edge, http):
    up.routes["/doc"] = lambda r: web.Response(status=412 if r.headers.get("If-Match") != '"v2"' else 204)
    async with http.put(edge.url + "/doc", data=b"new", headers={"If-Match": '"v1"'}) as r:
        assert r.status == 412
    async with http.put(edge.url + "/doc", data=b"new", headers={"If-Match": '"v2"'}) as r:
        assert r.status == 204


# ---- invalidation (RFC 9111 §4.4) -----------------------------------------------------------------------


async def _stored(http, edge, *paths):
    for p in paths:
        await get(http, edge.url + p)
        assert (await get(http, edge.url + p))[1]["X-Cache"] == "HIT", p


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "MKCOL"])
async def test_unsafe_method_invalidates_target_location_and_content_location(up, edge, http, method):
    for p in ("/a", "/b", "/c", "/d"):
        up.routes[p] = fixed(p, **{"Cache-Control": "max-age=600"})
    await _stored(http, edge, "/a", "/b", "/c", "/d")

    def changed(r):
        return web.Response(
            status=200 if r.method != "GET" else 200,
            text="done",
            headers={"Location": "/b", "Content-Location": f"http://{r.headers.get('Host', '')}/c"},
        )

    up.routes["/a"] = lambda r: (
        changed(r) if r.method != "GET" else web.Response(text="/a", headers={"Cache-Control": "max-age=600"})
    )
    async with http.request(method, edge.url + "/a", data=b"x") as r:
        assert r.status == 200
    got = {p: (await get(http, edge.url + p))[1]["X-Cache"] for p in ("/a", "/b", "/c", "/d")}
    assert got == {"/a": "MISS", "/b": "MISS", "/c": "MISS", "/d": "HIT"}


async def test_error_answers_safe_methods_and_other_origins_do_not_invalidate(up, edge, http):
    for p in ("/keep", "/x"):
        up.routes[p] = fixed(p, **{"Cache-Control": "max-age=600"})
    await _stored(http, edge, "/keep", "/x")
    up.routes["/keep"] = lambda r: (
        web.Response(status=500, text="no")
        if r.method == "POST"
        else web.Response(
            text="k", headers={"Location": "http://elsewhere.example/x", "Cache-Control": "max-age=600"}
        )
    )
    async with http.post(edge.url + "/keep", data=b"x") as r:
        assert r.status == 500
    async with http.options(edge.url + "/keep") as r:
        pass
    up.routes["/y"] = lambda r: web.Response(text="ok", headers={"Location": "http://elsewhere.example/x"})
    async with http.post(edge.url + "/y", data=b"x") as r:
        assert r.status == 200
    assert (await get(http, edge.url + "/keep"))[1]["X-Cache"] == "HIT"
    assert (await get(http, edge.url + "/x"))[1]["X-Cache"] == "HIT"


# ---- what is stored, and for how long (RFC 9111 §3, §4.2) ------------------------------------------------


@pytest.mark.parametrize("status", [302, 404, 410, 500, 503])
async def test_any_final_status_with_explicit_freshness_is_stored(up, edge, http, status):
    up.routes["/s"] = fixed("s", status=status, **{"Cache-Control": "max-age=600"})
    for want in ("MISS", "HIT"):
        s, h, _ = await get(http, edge.url + "/s", allow_redirects=False)
        assert (s, h["X-Cache"]) == (status, want)
    assert up.hits["/s"] == 1


async def test_heuristic_freshness_from_last_modified_and_config_turns_it_off(up, http):
    now = time.time()
    up.routes["/h"] = fixed(**{"Date": format_http_date(now), "Last-Modified": format_http_date(now - 86400)})
    on = await start_edge(up.url, name="on")
    off = await start_edge(up.url, name="off", heuristic_fraction=0)
    try:
        for e, second in ((on, "HIT"), (off, "REVALIDATED")):
            await get(http, e.url + "/h")
            s, h, _ = await get(http, e.url + "/h")
            assert h["X-Cache"] in ((second,) if second == "HIT" else ("REVALIDATED", "MISS")), e.name
        await get(http, on.url + "/h", headers={"Cache-Control": "no-cache"})
        assert up.hits["/h"] >= 3
    finally:
        await on.close()
        await off.close()


@pytest.mark.parametrize(
    "cc", ["max-age=100a", "max-age=1.5", "max-age = 100", "max-age=-1", "s-maxage=x, max-age=600"]
)
async def test_invalid_freshness_is_stale(up, edge, http, cc):
    up.routes["/i"] = fixed(**{"Cache-Control": cc, "Expires": format_http_date(time.time() + 600)})
    await get(http, edge.url + "/i")
    assert (await get(http, edge.url + "/i"))[1]["X-Cache"] != "HIT"
    assert up.hits["/i"] == 2


@pytest.mark.parametrize("expires", ["0", "Sun, 06 Nov 2094 08:49:37 UTC", "2094-11-06", "tomorrow"])
async def test_expires_that_is_not_an_http_date_means_expired(up, edge, http, expires):
    up.routes["/e"] = fixed(**{"Expires": expires, "Date": format_http_date(time.time())})
    await get(http, edge.url + "/e")
    assert (await get(http, edge.url + "/e"))[1]["X-Cache"] != "HIT"


async def test_invalid_age_is_ignored_and_huge_age_clamped(up, edge, http):
    up.routes["/a1"] = fixed(**{"Cache-Control": "max-age=600", "Age": "abc"})
    up.routes["/a2"] = fixed(**{"Cache-Control": "max-age=600", "Age": "99999999999999"})
    await get(http, edge.url + "/a1")
    _, h, _ = await get(http, edge.url + "/a1")
    assert h["X-Cache"] == "HIT" and int(h["Age"]) < 600
    await get(http, edge.url + "/a2")
    _, h, _ = await get(http, edge.url + "/a2")
    assert h["X-Cache"] != "HIT" and int(h["Age"]) >= 2**31


# ---- request directives (RFC 9111 §5.2.1) ---------------------------------------------------------------


async def test_max_stale_serves_stale_unless_must_revalidate(up, edge, http):
    old = format_http_date(time.time() - 100)
    up.routes["/ms"] = fixed(**{"Cache-Control": "max-age=10", "Date": old})
    up.routes["/mr"] = fixed(**{"Cache-Control": "max-age=10, must-revalidate", "Date": old})
    for p in ("/ms", "/mr"):
        await get(http, edge.url + p)
    assert (await get(http, edge.url + "/ms", headers={"Cache-Control": "max-stale"}))[1]["X-Cache"] == "HIT"
    assert (await get(http, edge.url + "/ms", headers={"Cache-Control": "max-stale=1000"}))[1][
        "X-Cache"
    ] == "HIT"
    assert (await get(http, edge.url + "/ms", headers={"Cache-Control": "max-stale=5"}))[1][
        "X-Cache"
    ] != "HIT"
    assert (await get(http, edge.url + "/mr", headers={"Cache-Control": "max-stale"}))[1]["X-Cache"] != "HIT"


async def test_min_fresh_and_only_if_cached(up, edge, http):
    up.routes["/mf"] = fixed(**{"Cache-Control": "max-age=60"})
    await get(http, edge.url + "/mf")
    assert (await get(http, edge.url + "/mf", headers={"Cache-Control": "min-fresh=10"}))[1][
        "X-Cache"
    ] == "HIT"
    assert (await get(http, edge.url + "/mf", headers={"Cache-Control": "min-fresh=100"}))[1][
        "X-Cache"
    ] != "HIT"
    s, _, _ = await get(http, edge.url + "/never", headers={"Cache-Control": "only-if-cached"})
    assert s == 504 and up.hits["/never"] == 0


# ---- targeted cache control (RFC 9213) ------------------------------------------------------------------


async def test_cdn_cache_control_governs_the_edge_and_is_not_sent_downstream(up, edge, http):
    up.routes["/t"] = fixed(**{"Cache-Control": "no-store", "CDN-Cache-Control": "max-age=600"})
    for want in ("MISS", "HIT"):
        _, h, _ = await get(http, edge.url + "/t")
        assert h["X-Cache"] == want and h["Cache-Control"] == "no-store" and "CDN-Cache-Control" not in h
    # the other way round: browsers may cache, the edge must not
    up.routes["/u"] = fixed(**{"Cache-Control": "max-age=600", "CDN-Cache-Control": "no-store"})
    for _ in range(2):
        _, h, _ = await get(http, edge.url + "/u")
        assert h["X-Cache"] == "MISS" and h["Cache-Control"] == "max-age=600"


async def test_cdnlab_field_wins_over_cdn_cache_control_and_targets_are_configurable(up, http):
    up.routes["/p"] = fixed(
        **{
            "Cache-Control": "max-age=600",
            "CDN-Cache-Control": "max-age=600",
            "Cdnlab-Cache-Control": "no-store",
        }
    )
    default = await start_edge(up.url, name="d")
    plain = await start_edge(up.url, name="p", targeted_fields=[])
    try:
        for _ in range(2):
            _, h, _ = await get(http, default.url + "/p")
            assert h["X-Cache"] == "MISS" and "Cdnlab-Cache-Control" not in h
        await get(http, plain.url + "/p")
        _, h, _ = await get(http, plain.url + "/p")
        assert h["X-Cache"] == "HIT" and h["Cdnlab-Cache-Control"] == "no-store"  # not targeted here: relayed
    finally:
        await default.close()
        await plain.close()


def test_targeted_fields_must_be_field_names():
    with pytest.raises(ValueError, match="targeted_fields"):
        EdgeConfig(origin_url="http://127.0.0.1:1", targeted_fields=["CDN Cache Control"])


# ---- stored fields --------------------------------------------------------------------------------------


async def test_qualified_private_and_no_cache_fields_are_not_stored(up, edge, http):
    up.routes["/q"] = fixed(
        **{
            "Cache-Control": 'max-age=600, private="X-User", no-cache="X-Token"',
            "X-User": "u",
            "X-Token": "t",
        }
    )
    _, h1, _ = await get(http, edge.url + "/q")
    _, h2, _ = await get(http, edge.url + "/q")
    assert h1["X-User"] == "u" and h1["X-Token"] == "t"  # the response that was fetched carries them
    assert h2["X-Cache"] == "HIT" and "X-User" not in h2 and "X-Token" not in h2


async def test_304_updates_stored_headers_relays_but_never_stores_set_cookie(up, edge, http):
    state = {"n": 0}

    def resp(r):
        state["n"] += 1
        if r.headers.get("If-None-Match") == '"v1"':
            return web.Response(
                status=304,
                headers={
                    "ETag": '"v1"',
                    "X-Version": "2",
                    "Set-Cookie": "s=2",
                    "Cache-Control": "max-age=600",
                },
            )
        return web.Response(
            text="body", headers={"ETag": '"v1"', "X-Version": "1", "Cache-Control": "max-age=0"}
        )

    up.routes["/v"] = resp
    await get(http, edge.url + "/v")
    _, h, b = await get(http, edge.url + "/v")
    assert (h["X-Cache"], h["X-Version"], b) == ("REVALIDATED", "2", b"body") and h["Set-Cookie"].startswith(
        "s=2"
    )
    _, h, _ = await get(http, edge.url + "/v")
    assert (h["X-Cache"], h["X-Version"]) == ("HIT", "2") and "Set-Cookie" not in h


async def test_only_well_formed_validators_are_sent_upstream(up, edge, http):
    up.routes["/bad"] = fixed(
        **{"ETag": "unquoted", "Last-Modified": "yesterday", "Cache-Control": "max-age=0"}
    )
    up.routes["/weak"] = fixed(**{"ETag": 'W/"w1"', "Cache-Control": "max-age=0"})
    for p in ("/bad", "/bad", "/weak", "/weak"):
        await get(http, edge.url + p)
    bad, weak = up.seen[1], up.seen[3]
    assert "If-None-Match" not in bad and "If-Modified-Since" not in bad
    assert weak["If-None-Match"] == 'W/"w1"'


async def test_origin_sets_edge_ttl_apart_from_browser_ttl(http):
    """The origin's cdn_cache_control: browsers must revalidate images, edges keep them an hour."""
    from cdn_helpers import start_origin

    origin = await start_origin(
        cache_control={"image": "no-cache"}, cdn_cache_control={"image": "max-age=3600"}
    )
    e = await start_edge(origin.url, name="ttl")
    try:
        img = next(o for o in origin.catalog.objects if o.cls == "image")
        for want in ("MISS", "HIT"):
            _, h, _ = await get(http, e.url + img.path)
            assert h["X-Cache"] == want and h["Cache-Control"] == "no-cache" and "CDN-Cache-Control" not in h
        assert origin.by_path[img.path] == 1
    finally:
        await e.close()
        await origin.close()


def test_origin_rejects_unknown_object_classes():
    from testbed.services.origin import OriginConfig

    with pytest.raises(ValueError, match=r"(?s)cdn_cache_control.*unknown object classes"):
        OriginConfig(cdn_cache_control={"images": "max-age=1"})


# ---- stale content (RFC 5861) ---------------------------------------------------------------------------


async def test_stale_while_revalidate_serves_stale_once_refreshes_in_background(up, edge, http):
    old = format_http_date(time.time() - 20)
    version = {"n": 1}
    up.routes["/swr"] = lambda r: web.Response(
        text=f"v{version['n']}",
        headers={
            "Cache-Control": "max-age=10, stale-while-revalidate=60",
            "Date": old if version["n"] == 1 else format_http_date(),
        },
    )
    up.routes["/mr"] = fixed(
        **{"Cache-Control": "max-age=10, stale-while-revalidate=60, must-revalidate", "Date": old}
    )
    await get(http, edge.url + "/swr")
    version["n"] = 2
    _, h, b = await get(http, edge.url + "/swr")
    assert (h["X-Cache"], b) == ("STALE", b"v1")
    await asyncio.gather(*edge._background)  # the background refresh lands
    _, h, b = await get(http, edge.url + "/swr")
    assert (h["X-Cache"], b) == ("HIT", b"v2")
    assert up.hits["/swr"] == 2 and edge.stats()["background_revalidations"] == 1
    await get(http, edge.url + "/mr")
    assert (await get(http, edge.url + "/mr"))[1]["X-Cache"] != "STALE"  # must-revalidate forbids it


async def test_stale_while_revalidate_outside_the_window_revalidates_now(up, edge, http):
    up.routes["/late"] = fixed(
        **{
            "Cache-Control": "max-age=10, stale-while-revalidate=5",
            "Date": format_http_date(time.time() - 100),
        }
    )
    await get(http, edge.url + "/late")
    _, h, _ = await get(http, edge.url + "/late")
    assert h["X-Cache"] in ("MISS", "REVALIDATED") and up.hits["/late"] == 2


async def test_if_modified_since_on_a_stored_response_without_last_modified_uses_date(up, edge, http):
    date = time.time() - 100
    up.routes["/nolm"] = fixed(**{"Cache-Control": "max-age=600", "Date": format_http_date(date)})
    await get(http, edge.url + "/nolm")
    s, h, _ = await get(http, edge.url + "/nolm", headers={"If-Modified-Since": format_http_date(date + 10)})
    assert (s, h["X-Cache"]) == (304, "HIT")
    s, _, _ = await get(http, edge.url + "/nolm", headers={"If-Modified-Since": format_http_date(date - 10)})
    assert s == 200


async def test_vary_matches_normalised_request_fields(up, edge, http):
    up.routes["/v"] = fixed(**{"Cache-Control": "max-age=600", "Vary": "Accept-Language, Foo"})
    await get(http, edge.url + "/v", headers={"Accept-Language": "en, de", "Foo": "1,2"})
    _, h, _ = await get(http, edge.url + "/v", headers={"Accept-Language": "DE,en", "Foo": " 1, 2 "})
    assert h["X-Cache"] == "HIT"
    _, h, _ = await get(http, edge.url + "/v", headers={"Accept-Language": "fr", "Foo": "1,2"})
    assert h["X-Cache"] == "MISS"


async def test_head_is_answered_from_a_stored_get_and_a_head_miss_fills_the_cache(up, edge, http):
    up.routes["/hd"] = lambda r: web.Response(
        text="body", headers={"Cache-Control": "max-age=600", "ETag": '"h1"'}
    )
    async with http.head(edge.url + "/hd") as r:  # miss: fetched with GET, stored
        assert r.status == 200 and r.headers["X-Cache"] == "MISS" and await r.read() == b""
    async with http.head(edge.url + "/hd") as r:
        assert (
            r.headers["X-Cache"] == "HIT"
            and r.headers["ETag"] == '"h1"'
            and r.headers["Content-Length"] == "4"
        )
    s, h, b = await get(http, edge.url + "/hd")
    assert (s, h["X-Cache"], b) == (200, "HIT", b"body") and up.hits["/hd"] == 1


async def test_if_match_uses_the_strong_comparison_and_if_unmodified_since(up, edge, http):
    lm = format_http_date(time.time() - 1000)
    up.routes["/s"] = fixed(**{"Cache-Control": "max-age=600", "ETag": '"s1"', "Last-Modified": lm})
    up.routes["/w"] = fixed(**{"Cache-Control": "max-age=600", "ETag": 'W/"w1"'})
    await get(http, edge.url + "/s")
    await get(http, edge.url + "/w")
    cases = [
        ("/s", {"If-Match": '"s1"'}, 200),
        ("/s", {"If-Match": '"x", "s1"'}, 200),
        ("/s", {"If-Match": '"x"'}, 412),
        ("/s", {"If-Match": 'W/"s1"'}, 412),  # a weak tag never matches strongly
        ("/s", {"If-Match": "*"}, 200),
        ("/w", {"If-Match": 'W/"w1"'}, 412),
        ("/s", {"If-Unmodified-Since": format_http_date(time.time())}, 200),
        ("/s", {"If-Unmodified-Since": format_http_date(time.time() - 5000)}, 412),
    ]
    for path, headers, want in cases:
        s, h, _ = await get(http, edge.url + path, headers=headers)
        assert (s, h["X-Cache"]) == (want, "HIT"), (path, headers)
    assert up.hits["/s"] == up.hits["/w"] == 1


@pytest.mark.parametrize("failure", ["close", "timeout"])
async def test_stale_if_error_covers_a_closed_connection_and_a_timeout(up, http, failure):
    e = await start_edge(up.url, name="sie", upstream_timeout_s=0.5)
    mode = {"fail": False}

    async def resp(r):
        if mode["fail"]:
            if failure == "close":
                r.transport.close()
            await asyncio.sleep(2)
        return web.Response(
            text="ok",
            headers={
                "Cache-Control": "max-age=1, stale-if-error=600",
                "Date": format_http_date(time.time() - 10),
            },
        )

    up.routes["/f"] = resp
    try:
        await get(http, e.url + "/f")
        mode["fail"] = True
        s, h, b = await get(http, e.url + "/f")
        assert (s, h["X-Cache"], b) == (200, "STALE", b"ok")
    finally:
        await e.close()
