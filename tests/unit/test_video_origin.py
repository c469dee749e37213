"""Video at the origin: DASH manifests and synthetic segments of exact sizes, their headers, live
availability by time, and the config's validation (testbed/services/video.py, Origin._video)."""

from __future__ import annotations

import statistics

import pytest
from cdn_helpers import raw_http, status_of
from pydantic import ValidationError

from testbed.measure.mpd import parse_mpd
from testbed.services.origin import Origin, OriginConfig
from testbed.services.video import VideoConfig, VideoLibrary, VideoTitle

IMMUTABLE = "public, max-age=31536000, immutable"
T0 = 1_700_000_000.0  # a fixed start time for the live tests (a whole number of 2 s segments)


@pytest.fixture
async def origin():
    o = Origin(OriginConfig(name="o-video", host="127.0.0.1", port=0))
    await o.start()
    yield o
    await o.close()


async def get(http, url, **kw):
    async with http.get(url, **kw) as r:
        return r.status, r.headers, await r.read()


async def manifest_of(http, origin, title="testcard"):
    status, headers, body = await get(http, f"{origin.url}/dash/{title}/manifest.mpd")
    assert status == 200, body
    return headers, parse_mpd(body)


# ---- the manifest over HTTP ------------------------------------------------------------------------


async def test_vod_manifest_over_http_parses_with_a_ladder_from_03_to_6_mbits(origin, http):
    headers, m = await manifest_of(http, origin)
    assert headers["Content-Type"].startswith("application/dash+xml")
    assert headers["Cache-Control"] == "public, max-age=60"
    assert headers.get("ETag", "").startswith('"')
    assert not m.live and m.segment_s == 2.0
    assert len(m.representations) >= 5
    bws = [r.bandwidth for r in m.representations]
    assert bws == sorted(bws) and len(set(bws)) == len(bws)
    assert min(bws) == 300_000 and max(bws) == 6_000_000
    assert m.duration_s == 120.0 and m.segments == 60
    assert m.segment_url(m.representations[0], 7) == "v300/seg-7.m4s"
    assert m.init_url(m.representations[-1]) == "v6000/init.mp4"


async def test_live_manifest_over_http_is_dynamic_with_a_short_max_age(origin, http):
    headers, m = await manifest_of(http, origin, "testcard-live")
    assert headers["Content-Type"].startswith("application/dash+xml")
    assert headers["Cache-Control"] == "public, max-age=1"  # half a 2 s segment
    assert m.live and m.availability_start == origin.video.start_times["testcard-live"]
    assert m.window_s == 60.0 and m.duration_s is None


async def test_manifest_etag_gives_304(origin, http):
    url = f"{origin.url}/dash/testcard/manifest.mpd"
    _, headers, _ = await get(http, url)
    status, h304, body = await get(http, url, headers={"If-None-Match": headers["ETag"]})
    assert status == 304 and body == b"" and h304["ETag"] == headers["ETag"]


# ---- segments over HTTP: exact sizes, headers, conditional GET, ranges -----------------------------


async def test_every_representations_segments_are_exactly_the_promised_size(origin, http):
    _, m = await manifest_of(http, origin)
    for rep in m.representations:
        expected = round(rep.bandwidth * m.segment_s / 8)
        assert expected == rep.bandwidth * m.segment_s / 8  # whole bytes for the default ladder
        for n in (1, 2, m.segments):
            status, headers, body = await get(http, f"{origin.url}/dash/testcard/{m.segment_url(rep, n)}")
            assert status == 200, (rep.id, n)
            assert int(headers["Content-Length"]) == expected, (rep.id, n)
            assert len(body) == expected, (rep.id, n)
            assert headers["Content-Type"] == "video/iso.segment"


async def test_segment_and_init_headers(origin, http):
    for path in ("v300/seg-1.m4s", "v6000/seg-60.m4s", "v300/init.mp4", "v1200/init.mp4"):
        status, headers, body = await get(http, f"{origin.url}/dash/testcard/{path}")
        assert status == 200, path
        assert headers["Cache-Control"] == IMMUTABLE, path
        assert headers["ETag"].startswith('"') and headers["ETag"].endswith('"'), path
        assert headers["Accept-Ranges"] == "bytes"
    status, headers, body = await get(http, f"{origin.url}/dash/testcard/v300/init.mp4")
    assert headers["Content-Type"] == "video/mp4" and 0 < len(body) < 4096


async def test_segment_conditional_get_and_ranges(origin, http):
    url = f"{origin.url}/dash/testcard/v300/seg-3.m4s"
    _, headers, full = await get(http, url)
    etag = headers["ETag"]
    status, h, body = await get(http, url, headers={"If-None-Match": etag})
    assert status == 304 and body == b"" and h["ETag"] == etag
    status, _, body = await get(http, url, headers={"If-None-Match": '"something-else"'})
    assert status == 200 and body == full

    status, h, body = await get(http, url, headers={"Range": "bytes=0-99"})
    assert status == 206
    assert body == full[:100] and len(body) == 100
    assert h["Content-Range"] == f"bytes 0-99/{len(full)}"
    status, h, body = await get(http, url, headers={"Range": f"bytes={len(full) - 10}-"})
    assert status == 206 and body == full[-10:]
    assert h["Content-Range"] == f"bytes {len(full) - 10}-{len(full) - 1}/{len(full)}"

    status, h, _ = await get(http, url, headers={"Range": f"bytes={len(full)}-{len(full) + 5}"})
    assert status == 416
    assert h["Content-Range"] == f"bytes */{len(full)}"
    # If-Range with another validator: the whole segment, not a part
    status, _, body = await get(http, url, headers={"Range": "bytes=0-99", "If-Range": '"old"'})
    assert status == 200 and body == full


async def test_segment_bytes_are_deterministic_and_differ_between_segments_and_representations(origin, http):
    base = f"{origin.url}/dash/testcard"
    _, h1, a = await get(http, f"{base}/v750/seg-5.m4s")
    _, h2, b = await get(http, f"{base}/v750/seg-5.m4s")
    assert a == b and h1["ETag"] == h2["ETag"]
    # a second origin (a restart) makes the same bytes
    other = VideoLibrary(VideoConfig())
    assert other.lookup("/dash/testcard/v750/seg-5.m4s").body == a
    _, h3, c = await get(http, f"{base}/v750/seg-6.m4s")
    assert len(c) == len(a) and c != a and h3["ETag"] != h1["ETag"]
    _, _, i1 = await get(http, f"{base}/v300/init.mp4")
    _, _, i2 = await get(http, f"{base}/v750/init.mp4")
    assert i1 != i2
    # same segment number, another representation: other bytes (and another size)
    _, _, d = await get(http, f"{base}/v1200/seg-5.m4s")
    assert d[: len(a)] != a
    # another seed, other bytes
    seeded = VideoLibrary(VideoConfig(seed=2))
    assert seeded.lookup("/dash/testcard/v750/seg-5.m4s").body != a


async def test_missing_and_junk_video_paths_are_404_over_http(origin, http):
    base = f"{origin.url}/dash"
    for path in (
        "testcard/v300/seg-0.m4s",
        "testcard/v300/seg-61.m4s",
        "testcard/v999/seg-1.m4s",
        "testcard/v999/init.mp4",
        "nosuch/manifest.mpd",
        "nosuch/v300/seg-1.m4s",
        "testcard/v300/seg-x.m4s",
        "testcard/v300/seg-1.mp4",
        "testcard/v300/seg-.m4s",
        "testcard/v300/seg--1.m4s",
        "testcard/v300",
        "testcard/v300/seg-1.m4s/more",
        "testcard/manifest.xml",
    ):
        status, _, _ = await get(http, f"{base}/{path}")
        assert status == 404, path
    status, headers, body = await get(http, f"{base}/testcard/v300/seg-61.m4s")
    assert headers["Cache-Control"] == "no-store" and b"no such segment" in body


async def test_dot_dot_in_a_video_path_is_refused(origin):
    raw = await raw_http(
        origin.port,
        b"GET /dash/testcard/../testcard/v300/seg-1.m4s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    assert status_of(raw) == 400, raw[:200]  # the origin refuses traversal before any lookup


async def test_a_segment_name_with_a_non_ascii_digit_is_404_not_500(origin):
    raw = await raw_http(
        origin.port,
        b"GET /dash/testcard/v300/seg-%C2%B2.m4s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    assert status_of(raw) == 404, raw[:200]


async def test_catalog_lists_the_video_titles(origin, http):
    async with http.get(origin.url + "/_origin/catalog") as r:
        assert r.status == 200
        data = await r.json()
    video = {t["name"]: t for t in data["video"]}
    assert set(video) == {"testcard", "testcard-live"}
    vod, live = video["testcard"], video["testcard-live"]
    assert vod["manifest"] == "/dash/testcard/manifest.mpd" and vod["live"] is False
    assert vod["segments"] == 60 and vod["duration_s"] == 120.0 and vod["segment_s"] == 2.0
    assert vod["bitrates_kbps"] == [300, 750, 1200, 2400, 4000, 6000]
    assert live["manifest"] == "/dash/testcard-live/manifest.mpd" and live["live"] is True
    assert "segments" not in live
    for t in data["video"]:  # each listed manifest is served
        async with http.get(origin.url + t["manifest"]) as r:
            assert r.status == 200


async def test_custom_video_config_on_the_origin(http):
    cfg = VideoConfig(
        titles=[VideoTitle(name="short", bitrates_kbps=[1000, 100], segment_s=4, duration_s=10)]
    )
    o = Origin(OriginConfig(host="127.0.0.1", port=0, video=cfg))
    await o.start()
    try:
        status, _, body = await get(http, f"{o.url}/dash/short/manifest.mpd")
        assert status == 200
        m = parse_mpd(body)
        assert m.bitrates_kbps == (100, 1000) and m.segment_s == 4 and m.segments == 3
        status, _, seg = await get(http, f"{o.url}/dash/short/v1000/seg-3.m4s")
        assert status == 200 and len(seg) == 500_000  # the last segment: shorter in time, never in size
        status, _, _ = await get(http, f"{o.url}/dash/short/v1000/seg-4.m4s")
        assert status == 404
        status, _, _ = await get(http, f"{o.url}/dash/testcard/manifest.mpd")
        assert status == 404
    finally:
        await o.close()


# ---- sizes ---------------------------------------------------------------------------------------------


def test_sizes_without_variation_are_exactly_the_promise():
    lib = VideoLibrary(VideoConfig(titles=[VideoTitle(bitrates_kbps=[300, 1234, 6000], segment_s=3)]))
    t = lib.titles["testcard"]
    for kbps in t.bitrates_kbps:
        assert {lib.segment_size(t, kbps, n) for n in range(1, 50)} == {round(kbps * 1000 * 3 / 8)}
        body = lib.lookup(f"/dash/testcard/v{kbps}/seg-9.m4s", now=T0).body
        assert len(body) == round(kbps * 1000 * 3 / 8)


def test_size_variation_varies_per_segment_but_keeps_the_mean():
    lib = VideoLibrary(VideoConfig(size_variation=0.2, titles=[VideoTitle(duration_s=400)]))
    t = lib.titles["testcard"]
    for kbps in t.bitrates_kbps:
        promise = kbps * 1000 * t.segment_s / 8
        sizes = [lib.segment_size(t, kbps, n) for n in range(1, 201)]
        assert len(set(sizes)) > 150, kbps  # they differ
        assert abs(statistics.mean(sizes) - promise) <= 0.03 * promise, kbps
        assert all(0.8 * promise - 1 <= s <= 1.2 * promise + 1 for s in sizes), kbps
        assert min(sizes) < 0.9 * promise and max(sizes) > 1.1 * promise  # really spread
    # the body served is the varied size
    n = 17
    body = lib.lookup(f"/dash/testcard/v2400/seg-{n}.m4s", now=T0).body
    assert len(body) == lib.segment_size(t, 2400, n) != 2400 * 1000 * 2 / 8
    # deterministic for a seed, other sizes for another seed
    again = VideoLibrary(VideoConfig(size_variation=0.2, titles=[VideoTitle(duration_s=400)]))
    assert [again.segment_size(t, 750, n) for n in range(1, 30)] == [
        lib.segment_size(t, 750, n) for n in range(1, 30)
    ]
    other = VideoLibrary(VideoConfig(size_variation=0.2, seed=9, titles=[VideoTitle(duration_s=400)]))
    assert [other.segment_size(t, 750, n) for n in range(1, 30)] != [
        lib.segment_size(t, 750, n) for n in range(1, 30)
    ]


# ---- live availability ---------------------------------------------------------------------------------


def live_library(**kw) -> tuple[VideoLibrary, VideoTitle]:
    """A live title whose first segment started at ``T0`` (an explicit start time: the origin's own start,
    passed as ``started``, does not move it)."""
    t = VideoTitle(name="live", live=True, start_time=T0, **kw)
    lib = VideoLibrary(VideoConfig(titles=[t]), started=T0 + 12_345.6)
    assert lib.start_times["live"] == T0
    return lib, t


def test_live_default_start_is_a_window_before_the_origin_started_on_a_segment_boundary():
    started = T0 + 3.7
    lib = VideoLibrary(VideoConfig(titles=[VideoTitle(name="l", live=True)]), started=started)
    t = lib.titles["l"]
    start = lib.start_times["l"]
    assert start == T0 - 58.0  # started - 60 s = T0 - 56.3, rounded down to a whole 2 s segment
    assert (start - T0) % t.segment_s == 0
    # so a full window of segments is there the moment the origin starts
    there = [n for n in range(1, 100) if lib.lookup(f"/dash/l/v300/seg-{n}.m4s", now=started).status == 200]
    assert there == list(range(1, int(t.window_s / t.segment_s) + 1))
    assert parse_mpd(lib.mpd(t)).availability_start == start


@pytest.mark.parametrize("n", [1, 2, 10, 31])
def test_live_segment_available_exactly_at_its_end(n):
    lib, t = live_library()
    path = f"/dash/live/v300/seg-{n}.m4s"
    at = T0 + n * t.segment_s
    early = lib.lookup(path, now=at - 0.001)
    assert early.status == 404 and early.headers["Cache-Control"] == "no-store"
    assert b"not yet available" in early.body
    on_time = lib.lookup(path, now=at)
    assert on_time.status == 200 and len(on_time.body) == 75_000
    assert on_time.headers["Cache-Control"] == IMMUTABLE
    # the window: still there window_s after it became available, gone just after
    assert lib.lookup(path, now=at + t.window_s).status == 200
    late = lib.lookup(path, now=at + t.window_s + 0.001)
    assert late.status == 404 and late.headers["Cache-Control"] == "no-store"
    assert b"outside the time-shift window" in late.body


def test_live_window_is_configurable():
    lib, t = live_library(window_s=10)
    path = "/dash/live/v300/seg-3.m4s"
    assert lib.lookup(path, now=T0 + 6 + 10).status == 200
    assert lib.lookup(path, now=T0 + 6 + 10.5).status == 404
    lib2, _ = live_library(window_s=600)
    assert lib2.lookup(path, now=T0 + 6 + 300).status == 200


def test_live_segment_zero_and_init():
    lib, _ = live_library()
    zero = lib.lookup("/dash/live/v300/seg-0.m4s", now=T0 + 100)
    assert zero.status == 404 and zero.headers["Cache-Control"] == "no-store"
    init = lib.lookup("/dash/live/v300/init.mp4", now=T0 - 1000)  # the init segment has no availability time
    assert init.status == 200 and init.headers["Cache-Control"] == IMMUTABLE


@pytest.mark.parametrize("segment_s,max_age", [(2.0, 1), (1.0, 1), (0.5, 1), (4.0, 2), (6.0, 3), (7.0, 3)])
def test_live_manifest_max_age_is_half_a_segment_at_least_one_second(segment_s, max_age):
    lib, t = live_library(segment_s=segment_s)
    mf = lib.lookup("/dash/live/manifest.mpd", now=T0)
    assert mf.headers["Cache-Control"] == f"public, max-age={max_age}"
    assert 1 <= max_age <= max(1, int(segment_s / 2))
    m = parse_mpd(mf.body)
    assert m.segment_s == segment_s


def test_live_mpd_is_dynamic_and_its_live_edge_agrees_with_availability():
    lib, t = live_library()
    mf = lib.lookup("/dash/live/manifest.mpd", now=T0 + 50)
    assert mf.status == 200 and mf.headers["Content-Type"] == "application/dash+xml"
    assert b'type="dynamic"' in mf.body
    m = parse_mpd(mf.body)
    assert m.live and m.availability_start == T0
    assert m.window_s == t.window_s and m.presentation_delay_s == 3 * t.segment_s
    assert m.start_number == 1
    rep = m.representations[0]
    for now in (T0 + 2, T0 + 2.5, T0 + 3.999, T0 + 4, T0 + 123.4, T0 + 1000):
        edge = m.live_edge(now)
        assert edge >= 1
        assert m.available_at(edge) <= now < m.available_at(edge + 1)
        newest = lib.lookup(f"/dash/live/{m.segment_url(rep, edge)}", now=now)
        assert newest.status == 200, now
        nxt = lib.lookup(f"/dash/live/{m.segment_url(rep, edge + 1)}", now=now)
        assert nxt.status == 404 and b"not yet available" in nxt.body, now
    assert m.live_edge(T0 + 1.9) == 0  # nothing yet
    assert m.available_at(5) == T0 + 10


def test_live_mpd_with_an_explicit_start_time():
    t = VideoTitle(name="ev", live=True, start_time=T0 + 0.25, segment_s=4)
    lib = VideoLibrary(VideoConfig(titles=[t]), started=T0 + 999)
    m = parse_mpd(lib.mpd(t))
    assert m.availability_start == pytest.approx(T0 + 0.25, abs=1e-6)
    assert lib.lookup("/dash/ev/v300/seg-1.m4s", now=T0 + 4.25).status == 200
    assert lib.lookup("/dash/ev/v300/seg-1.m4s", now=T0 + 4.2).status == 404
    assert m.live_edge(T0 + 4.25) == 1


# ---- VOD lookup ----------------------------------------------------------------------------------------


def test_vod_lookup_of_segments_bounds_and_junk():
    lib = VideoLibrary(VideoConfig(), started=T0)
    t = lib.titles["testcard"]
    assert t.segments == 60
    assert lib.lookup("/dash/testcard/v300/seg-1.m4s", now=0).status == 200  # VOD: no time dependence
    assert lib.lookup(f"/dash/testcard/v300/seg-{t.segments}.m4s", now=0).status == 200
    for n in (0, t.segments + 1):
        vf = lib.lookup(f"/dash/testcard/v300/seg-{n}.m4s", now=T0)
        assert vf is not None and vf.status == 404 and vf.headers["Cache-Control"] == "no-store"
        assert b"no such segment" in vf.body
    for path in (
        "/dash/testcard/v301/seg-1.m4s",
        "/dash/testcard/300/seg-1.m4s",
        "/dash/nosuch/manifest.mpd",
        "/dash/nosuch/v300/seg-1.m4s",
        "/dash/testcard/v300/seg-x.m4s",
        "/dash/testcard/v300/seg-1.mp4",
        "/dash/testcard/v300/seg-1.m4s.bak",
        "/dash/testcard/v300/seg-.m4s",
        "/dash/testcard/v300/seg--1.m4s",
        "/dash/testcard/v300/seg-+1.m4s",
        "/dash/testcard/v300/../v300/seg-1.m4s",
        "/dash/testcard/../manifest.mpd",
        "/dash/../testcard/manifest.mpd",
        "/dash/testcard/v300/",
        "/dash/testcard",
        "/dash/testcard/",
        "/dash/",
        "/testcard/manifest.mpd",
        "/other/testcard/manifest.mpd",
    ):
        assert lib.lookup(path, now=T0) is None, path


def test_lookup_of_a_segment_name_with_a_non_ascii_digit_is_none():
    lib = VideoLibrary(VideoConfig(), started=T0)
    assert lib.lookup("/dash/testcard/v300/seg-\u00b2.m4s", now=T0) is None


def test_vod_manifest_lookup_and_describe():
    lib = VideoLibrary(VideoConfig(), started=T0)
    mf = lib.lookup("/dash/testcard/manifest.mpd", now=T0)
    assert mf.status == 200 and mf.headers["Cache-Control"] == "public, max-age=60"
    assert mf.headers["Content-Type"] == "application/dash+xml" and mf.headers["ETag"].startswith('"')
    assert mf.body == lib.mpd(lib.titles["testcard"]).encode()
    m = parse_mpd(mf.body)
    assert m.min_buffer_s == 4.0
    assert [(r.width, r.height) for r in m.representations][0] == (426, 240)
    assert m.representations[-1].height >= 1080
    names = [d["name"] for d in lib.describe()]
    assert names == ["testcard", "testcard-live"]


# ---- config validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kw,field",
    [
        ({"titles": [{"name": "a"}, {"name": "b"}, {"name": "a"}]}, "titles"),
        ({"titles": [{"bitrates_kbps": [5, 300]}]}, "bitrates_kbps"),
        ({"titles": [{"bitrates_kbps": [300, 300000]}]}, "bitrates_kbps"),
        ({"titles": [{"bitrates_kbps": [300, 750, 300]}]}, "bitrates_kbps"),
        ({"titles": [{"bitrates_kbps": []}]}, "bitrates_kbps"),
        ({"titles": [{"name": "Bad Name"}]}, "name"),
        ({"titles": [{"name": "../x"}]}, "name"),
        ({"titles": [{"name": ""}]}, "name"),
        ({"titles": [{"segment_s": 0}]}, "segment_s"),
        ({"titles": [{"colour": "red"}]}, "colour"),
        ({"size_variation": 1.5}, "size_variation"),
    ],
)
def test_video_config_validation_names_the_field(kw, field):
    with pytest.raises(ValidationError) as e:
        VideoConfig(**kw)
    assert field in str(e.value)


def test_video_config_duplicate_names_are_listed_and_bitrates_sorted():
    with pytest.raises(ValidationError) as e:
        VideoConfig(titles=[{"name": "dup"}, {"name": "dup"}])
    assert "duplicate" in str(e.value) and "dup" in str(e.value)
    t = VideoTitle(bitrates_kbps=[6000, 16, 200000])
    assert t.bitrates_kbps == [16, 6000, 200000]  # the bounds are allowed, the ladder sorted


def test_origin_config_validates_its_video_section():
    with pytest.raises(ValidationError) as e:
        OriginConfig(video={"titles": [{"name": "x", "bitrates_kbps": [300, 300]}]})
    assert "bitrates_kbps" in str(e.value)
